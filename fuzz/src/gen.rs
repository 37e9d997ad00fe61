//! Structured inputs built from fuzz bytes: tar archives, `ar` archives
//! and directory trees. Raw bytes rarely make a tar header with a valid
//! checksum; these generators make well-formed containers whose contents
//! (paths, links, kinds) the fuzzer steers, so the properties behind the
//! parsers are reached.

use arbitrary::{Result, Unstructured};

/// Path components the generators draw from: names that collide, climb,
/// whiteout, or name the links a target plants.
const WORDS: &[&[u8]] = &[
    b"a",
    b"b",
    b"dir",
    b"file",
    b"..",
    b".",
    b"",
    b"lnk",
    b"up",
    b"out",
    b"abs",
    b".wh.a",
    b".wh.out",
    b".wh..wh..opq",
    b"\xff\xfe",
];

/// A path: `/`-joined components from [`WORDS`] (or any bytes), sometimes
/// absolute, `./`-prefixed or with a trailing slash. `extra` words are
/// added to the vocabulary (a target's own absolute paths, for instance).
pub fn path(u: &mut Unstructured, extra: &[&[u8]]) -> Result<Vec<u8>> {
    let n = u.int_in_range(1..=4)?;
    let mut out = Vec::new();
    match u.int_in_range(0..=7)? {
        0 => out.extend_from_slice(b"/"),
        1 => out.extend_from_slice(b"./"),
        _ => {}
    }
    for i in 0..n {
        if i > 0 {
            out.push(b'/');
        }
        let pick = u.int_in_range(0..=WORDS.len() + extra.len())?;
        if pick < WORDS.len() {
            out.extend_from_slice(WORDS[pick]);
        } else if pick < WORDS.len() + extra.len() {
            out.extend_from_slice(extra[pick - WORDS.len()]);
        } else {
            let len = u.int_in_range(1..=300)?;
            out.extend(u.bytes(len)?.iter().map(|&b| if b == 0 { b'x' } else { b }));
        }
    }
    if u.ratio(1, 8)? {
        out.push(b'/');
    }
    if out.is_empty() {
        out.push(b'a');
    }
    Ok(out)
}

/// What a tar member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Fifo,
    CharDevice,
    /// A type flag the reader must refuse or skip (GNU sparse `S`, ...).
    Other(u8),
}

#[derive(Debug, Clone)]
pub struct TarMember {
    pub path: Vec<u8>,
    pub member: Member,
    pub mode: u32,
    pub mtime: u32,
}

/// Members with paths and link targets from [`path`].
pub fn members(u: &mut Unstructured, extra: &[&[u8]]) -> Result<Vec<TarMember>> {
    let n = u.int_in_range(0..=12)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let path = path(u, extra)?;
        let member = match u.int_in_range(0..=9)? {
            0..=2 => {
                let len = u.int_in_range(0..=2000)?;
                Member::File(u.bytes(len)?.to_vec())
            }
            3 | 4 => Member::Dir,
            5 | 6 => Member::Symlink(self::path(u, extra)?),
            7 => Member::HardLink(self::path(u, extra)?),
            8 => {
                if u.arbitrary()? {
                    Member::Fifo
                } else {
                    Member::CharDevice
                }
            }
            _ => Member::Other(*u.choose(b"SVMZ9")?),
        };
        let mode = *u.choose(&[0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o000, 0o500, 0o7777])?;
        out.push(TarMember {
            path,
            member,
            mode,
            mtime: u.arbitrary()?,
        });
    }
    Ok(out)
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn header(name: &[u8], link: &[u8], typeflag: u8, size: u64, mode: u32, mtime: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], u64::from(mtime));
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// One PAX record, `LEN key=value\n`, LEN counting its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// The members as a ustar archive, with a PAX header where a path or link
/// target does not fit its field (or contains a NUL-free name over 100
/// bytes), and the end-of-archive marker if `end`.
pub fn tar(members: &[TarMember], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let (typeflag, link, data): (u8, &[u8], &[u8]) = match &m.member {
            Member::File(d) => (b'0', b"", d),
            Member::Dir => (b'5', b"", b""),
            Member::Symlink(t) => (b'2', t, b""),
            Member::HardLink(t) => (b'1', t, b""),
            Member::Fifo => (b'6', b"", b""),
            Member::CharDevice => (b'3', b"", b""),
            Member::Other(f) => (*f, b"", b""),
        };
        let mut pax = Vec::new();
        let name: &[u8] = if m.path.len() > 100 {
            pax.extend(pax_record("path", &m.path));
            b"pax-path"
        } else {
            &m.path
        };
        let link: &[u8] = if link.len() > 100 {
            pax.extend(pax_record("linkpath", link));
            b"pax-link"
        } else {
            link
        };
        if !pax.is_empty() {
            out.extend_from_slice(&header(b"PaxHeader", b"", b'x', pax.len() as u64, 0o644, 0));
            out.extend_from_slice(&pax);
            pad(&mut out);
        }
        out.extend_from_slice(&header(
            name,
            link,
            typeflag,
            data.len() as u64,
            m.mode,
            m.mtime,
        ));
        out.extend_from_slice(data);
        pad(&mut out);
    }
    if end {
        out.resize(out.len() + 1024, 0);
    }
    out
}

/// Flips or overwrites a few bytes of `data` where the fuzzer says; returns
/// whether anything changed.
pub fn corrupt(u: &mut Unstructured, data: &mut [u8]) -> Result<bool> {
    if data.is_empty() || !u.ratio(1, 4)? {
        return Ok(false);
    }
    let n = u.int_in_range(1..=4)?;
    let mut changed = false;
    for _ in 0..n {
        let at = u.choose_index(data.len())?;
        let new: u8 = u.arbitrary()?;
        changed |= data[at] != new;
        data[at] = new;
    }
    Ok(changed)
}

/// An `ar` archive (the container of a .deb) of `(name, data)` members, in
/// the common (System V / GNU) format dpkg writes.
pub fn ar(members: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let mut h = [b' '; 60];
        h[..name.len().min(16)].copy_from_slice(&name[..name.len().min(16)]);
        h[16..17].copy_from_slice(b"0");
        h[28..29].copy_from_slice(b"0");
        h[34..35].copy_from_slice(b"0");
        h[40..46].copy_from_slice(b"100644");
        let size = data.len().to_string();
        h[48..48 + size.len()].copy_from_slice(size.as_bytes());
        h[58..60].copy_from_slice(b"`\n");
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// A node of a generated directory tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { executable: bool, data: Vec<u8> },
    Symlink(Vec<u8>),
    Dir(Vec<(Vec<u8>, Node)>),
}

/// A file name: one of a few that sort interestingly, or any bytes but `/`
/// and NUL (not `.` or `..`), up to 255 bytes.
fn name(u: &mut Unstructured) -> Result<Vec<u8>> {
    const NAMES: &[&[u8]] = &[
        b"a",
        b"A",
        b"b",
        b"a.b",
        b"a-b",
        b"ab",
        b"_",
        b"~",
        b"\xc3\xa9",
        b"\x7f",
        b" ",
        b"\n",
    ];
    if u.ratio(3, 4)? {
        return Ok(u.choose(NAMES)?.to_vec());
    }
    let len = u.int_in_range(1..=255)?;
    let mut n: Vec<u8> = u
        .bytes(len)?
        .iter()
        .map(|&b| if b == 0 || b == b'/' { b'_' } else { b })
        .collect();
    if n == b"." || n == b".." {
        n.push(b'_');
    }
    Ok(n)
}

/// A directory tree of at most `depth` levels.
pub fn tree(u: &mut Unstructured, depth: u32) -> Result<Node> {
    let n = u.int_in_range(0..=6)?;
    let mut entries: Vec<(Vec<u8>, Node)> = Vec::new();
    for _ in 0..n {
        let name = name(u)?;
        if entries.iter().any(|(e, _)| *e == name) {
            continue;
        }
        let node = match u.int_in_range(0..=3)? {
            0 | 1 => {
                let len = u.int_in_range(0..=3000)?;
                Node::File {
                    executable: u.arbitrary()?,
                    data: u.bytes(len)?.to_vec(),
                }
            }
            2 => {
                let len = u.int_in_range(1..=200)?;
                let t: Vec<u8> = u
                    .bytes(len)?
                    .iter()
                    .map(|&b| if b == 0 { b'.' } else { b })
                    .collect();
                Node::Symlink(if t.is_empty() { b"x".to_vec() } else { t })
            }
            _ if depth > 0 => tree(u, depth - 1)?,
            _ => Node::Dir(Vec::new()),
        };
        entries.push((name, node));
    }
    Ok(Node::Dir(entries))
}

/// Arbitrary bytes of at most `max` from the input (fewer if it runs out).
pub fn bytes<'a>(u: &mut Unstructured<'a>, max: usize) -> Result<&'a [u8]> {
    let len = u.int_in_range(0..=max)?;
    u.bytes(len.min(u.len()))
}
