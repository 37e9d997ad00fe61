//! The tar encoding of layer entries: ustar headers with every field set, PAX
//! extension headers only for values ustar cannot hold (docs/layers.md).

use std::io::{self, Write};

pub const BLOCK: usize = 512;

/// Largest value of an 11-digit octal field (size, mtime): 8 GiB - 1.
pub const MAX_OCTAL_11: u64 = 0o777_7777_7777;

/// Name of every PAX extension header entry.
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Dir,
}

impl Kind {
    fn typeflag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Dir => b'5',
        }
    }
}

/// One archive entry's header; uid/gid are always 0 and names empty.
pub struct Header<'a> {
    /// The archive name: relative, directories ending in `/`.
    pub path: &'a [u8],
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (at most 0o7777).
    pub mode: u32,
    /// Content size; 0 for everything but regular files.
    pub size: u64,
    pub mtime: u64,
    /// Symlink target or hard-link target path.
    pub link: &'a [u8],
}

/// Writes the header (preceded by a PAX extension header where needed).
pub fn write_header<W: Write>(w: &mut W, h: &Header<'_>) -> io::Result<()> {
    let split = split_ustar_path(h.path);
    let mut pax = Vec::new();
    if split.is_none() {
        pax_record(&mut pax, b"path", h.path);
    }
    if h.link.len() > 100 {
        pax_record(&mut pax, b"linkpath", h.link);
    }
    if h.size > MAX_OCTAL_11 {
        pax_record(&mut pax, b"size", h.size.to_string().as_bytes());
    }
    if !pax.is_empty() {
        let ext = ustar_block(
            (&[], PAX_HEADER_NAME),
            b'x',
            0o644,
            pax.len() as u64,
            h.mtime,
            &[],
        );
        w.write_all(&ext)?;
        w.write_all(&pax)?;
        write_padding(w, pax.len() as u64)?;
    }
    // Where PAX carries the value, the ustar field holds a deterministic stand-in.
    let (prefix, name) = split.unwrap_or_else(|| (&[], &h.path[..100]));
    let link = &h.link[..h.link.len().min(100)];
    let size = if h.size > MAX_OCTAL_11 { 0 } else { h.size };
    w.write_all(&ustar_block(
        (prefix, name),
        h.kind.typeflag(),
        h.mode,
        size,
        h.mtime,
        link,
    ))
}

/// Zero bytes up to the next 512-byte boundary after `len` bytes of content.
pub fn write_padding<W: Write>(w: &mut W, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// The end-of-archive marker: exactly two zero blocks.
pub fn write_end<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

/// Splits a path into ustar (prefix, name) fields, or None if it cannot fit:
/// name alone when it fits 100 bytes, else at the last `/` that leaves at
/// most 155 bytes of prefix and 1..=100 bytes of name.
fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // A trailing `/` (directories) belongs to the name part.
    let body = path.strip_suffix(b"/").unwrap_or(path);
    let upper = body.len().min(155);
    let cut = body[..=upper.min(body.len() - 1)]
        .iter()
        .rposition(|&b| b == b'/')?;
    let (prefix, name) = (&path[..cut], &path[cut + 1..]);
    if name.len() > 100 || name.is_empty() || prefix.is_empty() {
        return None;
    }
    Some((prefix, name))
}

/// Appends one PAX record: `"<len> <key>=<value>\n"`, len counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn ustar_block(
    (prefix, name): (&[u8], &[u8]),
    typeflag: u8,
    mode: u32,
    size: u64,
    mtime: u64,
    link: &[u8],
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], u64::from(mode));
    octal(&mut b[108..116], 0); // uid
    octal(&mut b[116..124], 0); // gid
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = typeflag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // uname and gname (265..329) stay empty.
    octal(&mut b[329..337], 0); // devmajor
    octal(&mut b[337..345], 0); // devminor
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    // The checksum is computed with its own field as eight spaces.
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
    b[154] = 0;
    b[155] = b' ';
    b
}

/// Zero-padded octal digits filling all but the field's last byte, then NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    debug_assert_eq!(s.len(), digits, "value {value} overflows its field");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        // 91 bytes of value: 98 bytes plus a 2-digit length would be 100,
        // which needs 3 digits, so the length is 101.
        let mut v = Vec::new();
        pax_record(&mut v, b"path", &[b'x'; 91]);
        assert_eq!(v.len(), 101);
        assert!(v.starts_with(b"101 path=x"));
    }

    #[test]
    fn ustar_split() {
        assert_eq!(split_ustar_path(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let dir = [vec![b'd'; 120], b"/".to_vec(), vec![b'n'; 50]].concat();
        assert_eq!(split_ustar_path(&dir), Some((&dir[..120], &dir[121..])));
        let no_slash = vec![b'n'; 101];
        assert_eq!(split_ustar_path(&no_slash), None);
        let long_name = [b"d/".to_vec(), vec![b'n'; 101]].concat();
        assert_eq!(split_ustar_path(&long_name), None);
        let long_prefix = [vec![b'd'; 156], b"/n".to_vec()].concat();
        assert_eq!(split_ustar_path(&long_prefix), None);
        let dir_slash = [vec![b'd'; 100], b"/e/".to_vec()].concat();
        assert_eq!(
            split_ustar_path(&dir_slash),
            Some((&dir_slash[..100], &b"e/"[..]))
        );
    }
}
