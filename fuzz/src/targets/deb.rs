//! The .deb reader (`src/deb.rs`): `ar` container, format version,
//! control member, compressed data.tar.

use std::io::{Cursor, Read, Write};

use arbitrary::Unstructured;
use imgrep::deb::Deb;
use imgrep::unpack::UnpackOptions;

use crate::gen;
use crate::targets::unpack::Case;

/// What a decompression bomb may expand to before the target stops reading.
const READ_LIMIT: u64 = 64 << 20;

fn data_tar(deb: &[u8]) -> Option<Vec<u8>> {
    let mut deb = Deb::new(Cursor::new(deb), "fuzz.deb");
    let data = deb.data().ok()?;
    let mut out = Vec::new();
    data.take(READ_LIMIT).read_to_end(&mut out).ok()?;
    Some(out)
}

fn compress(kind: u8, tar: &[u8]) -> (&'static str, Vec<u8>) {
    match kind % 4 {
        0 => ("data.tar", tar.to_vec()),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            ("data.tar.gz", e.finish().unwrap())
        }
        2 => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 0);
            e.write_all(tar).unwrap();
            ("data.tar.xz", e.finish().unwrap())
        }
        _ => ("data.tar.zst", zstd::encode_all(tar, 1).unwrap()),
    }
}

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel % 2 == 0 {
        if let Some(tar) = data_tar(rest) {
            Case::new(UnpackOptions::DEB).unpack(&tar);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(members) = gen::members(&mut u, &[b"/usr", b"bin"]) else {
        return;
    };
    let tar = gen::tar(&members, true);
    let (data_name, compressed) = compress(sel >> 1, &tar);
    // The GNU format ends member names with `/`.
    let gnu = sel & 0x10 != 0;
    let name = |n: &str| {
        let mut n = n.as_bytes().to_vec();
        if gnu {
            n.push(b'/');
        }
        n
    };
    let control = gen::bytes(&mut u, 200).unwrap_or_default();
    let mut parts: Vec<(Vec<u8>, &[u8])> = vec![
        (name("debian-binary"), &b"2.0\n"[..]),
        (name("control.tar.gz"), control),
    ];
    if sel & 0x20 != 0 {
        // An extension member, as dpkg-sig adds: skipped.
        parts.insert(1, (name("_gpgorigin"), &b"signature"[..]));
    }
    parts.push((name(data_name), &compressed));
    let refs: Vec<(&[u8], &[u8])> = parts.iter().map(|(n, d)| (n.as_slice(), *d)).collect();
    let mut deb = gen::ar(&refs);
    let corrupted = gen::corrupt(&mut u, &mut deb).unwrap_or(false);
    let got = data_tar(&deb);
    if !corrupted {
        assert_eq!(
            got.as_deref(),
            Some(tar.as_slice()),
            "a well-formed .deb did not yield its data.tar"
        );
    }
    if let Some(tar) = got {
        Case::new(UnpackOptions::DEB).unpack(&tar);
    }
}
