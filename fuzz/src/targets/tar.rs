//! The strict tar reader (`src/unpack/tarstream.rs`).

use arbitrary::Unstructured;
use imgrep::digest::Digest;
use imgrep::unpack::tarstream::{Header, Kind, TarError, TarStream};

use crate::gen::{self, Member};

/// Every member's header and data, and checks that the stream's digest
/// covers exactly the bytes consumed.
pub fn read_all(bytes: &[u8]) -> Result<Vec<(Header, Vec<u8>)>, TarError> {
    let mut tar = TarStream::new(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(h) = tar.next_header()? {
        let mut data = Vec::new();
        loop {
            let n = tar.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        out.push((h, data));
    }
    let (digest, len) = tar.finish()?;
    let len = usize::try_from(len).expect("length fits");
    assert!(len <= bytes.len(), "read {len} bytes of {}", bytes.len());
    assert_eq!(
        digest,
        Digest::of(&bytes[..len]),
        "digest is not the sha256 of the bytes read"
    );
    Ok(out)
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = read_all(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(members) = gen::members(&mut u, &[]) else {
        return;
    };
    let end = mode & 2 == 0;
    let mut bytes = gen::tar(&members, end);
    if gen::corrupt(&mut u, &mut bytes).unwrap_or(false) {
        let _ = read_all(&bytes);
        return;
    }
    let read = read_all(&bytes).expect("a well-formed generated archive reads");
    assert_eq!(read.len(), members.len(), "member count");
    for (m, (h, data)) in members.iter().zip(&read) {
        assert_eq!(h.path, m.path, "path of {m:?}");
        assert_eq!(h.mode, m.mode & 0o7777, "mode of {m:?}");
        assert_eq!(h.mtime, i64::from(m.mtime), "mtime of {m:?}");
        let (kind, link, body): (Kind, &[u8], &[u8]) = match &m.member {
            Member::File(d) => (Kind::Regular, b"", d),
            Member::Dir => (Kind::Directory, b"", b""),
            Member::Symlink(t) => (Kind::Symlink, t, b""),
            Member::HardLink(t) => (Kind::HardLink, t, b""),
            Member::Fifo => (Kind::Fifo, b"", b""),
            Member::CharDevice => (Kind::CharDevice, b"", b""),
            Member::Other(f) => (Kind::Other(*f), b"", b""),
        };
        assert_eq!(h.kind, kind, "kind of {m:?}");
        assert_eq!(h.link, link, "link of {m:?}");
        assert_eq!(data.as_slice(), body, "data of {m:?}");
    }
}
