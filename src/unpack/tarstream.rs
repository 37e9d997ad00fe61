//! A strict reader of tar streams (ustar, GNU long names, PAX), written for
//! the unpacker: every header is checked (checksum, numeric fields, sizes
//! against the stream, PAX record syntax) and anything doubtful is an error
//! naming the header's offset, never a guess.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

const BLOCK: usize = 512;
/// Extended headers (PAX, GNU long names) larger than this are refused:
/// no legitimate path or record set comes near it.
const MAX_EXTENDED: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("malformed tar archive at byte {offset}{}: {reason}", entry_suffix(.entry))]
    Malformed {
        offset: u64,
        entry: Option<String>,
        reason: String,
    },
    #[error("reading the archive at byte {offset}: {error}")]
    Read { offset: u64, error: io::Error },
}

fn entry_suffix(entry: &Option<String>) -> String {
    entry
        .as_ref()
        .map(|e| format!(" (entry {e:?})"))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
    Other(u8),
}

/// One member's header, with PAX and GNU extensions applied.
#[derive(Debug)]
pub struct Header {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub mtime: i64,
}

/// Reads members one by one; hashes every byte it consumes, so that
/// `finish` yields the stream's digest (a layer's diff_id).
pub struct TarStream<R> {
    inner: R,
    hasher: Sha256,
    offset: u64,
    /// Bytes of the current member's data (and padding) not yet consumed.
    pending: u64,
    pending_pad: u64,
    /// The current member's path, header offset and size, for messages.
    current: (Vec<u8>, u64, u64),
    done: bool,
}

#[derive(Default)]
struct Extensions {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
}

impl<R: Read> TarStream<R> {
    pub fn new(inner: R) -> Self {
        TarStream {
            inner,
            hasher: Sha256::new(),
            offset: 0,
            pending: 0,
            pending_pad: 0,
            current: (Vec::new(), 0, 0),
            done: false,
        }
    }

    fn malformed(&self, offset: u64, entry: Option<&[u8]>, reason: impl Into<String>) -> TarError {
        TarError::Malformed {
            offset,
            entry: entry.map(|e| String::from_utf8_lossy(e).into_owned()),
            reason: reason.into(),
        }
    }

    /// Reads exactly `buf.len()` bytes; Ok(false) on a clean EOF before the
    /// first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool, TarError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(TarError::Malformed {
                        offset: self.offset,
                        entry: None,
                        reason: format!(
                            "stream ends after {got} bytes, in the middle of a {}-byte block",
                            buf.len()
                        ),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TarError::Read {
                        offset: self.offset + got as u64,
                        error: source,
                    })
                }
            }
        }
        self.hasher.update(&buf[..]);
        self.offset += buf.len() as u64;
        Ok(true)
    }

    /// Next member, or None after the end-of-archive marker.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        self.skip_data()?;
        let mut ext = Extensions::default();
        loop {
            let offset = self.offset;
            let mut block = [0u8; BLOCK];
            if !self.read_full(&mut block)? {
                // No end-of-archive marker: GNU tar accepts this with a
                // warning; so do we, since every member before was whole.
                self.done = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                self.drain()?;
                return Ok(None);
            }
            let name = field_str(&block[0..100]);
            check_checksum(&block).map_err(|r| self.malformed(offset, Some(name), r))?;
            let typeflag = block[156];
            let size = parse_num(&block[124..136])
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| self.malformed(offset, Some(name), "size field is not a number"))?;
            match typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > MAX_EXTENDED {
                        return Err(self.malformed(
                            offset,
                            Some(name),
                            format!("extended header of {size} bytes (limit {MAX_EXTENDED})"),
                        ));
                    }
                    let data = self.read_member(offset, name, size)?;
                    match typeflag {
                        b'x' => parse_pax(&data, &mut ext)
                            .map_err(|r| self.malformed(offset, Some(name), r))?,
                        // Global headers (git archive puts the commit id in
                        // one) are checked for syntax and otherwise ignored.
                        b'g' => parse_pax(&data, &mut Extensions::default())
                            .map_err(|r| self.malformed(offset, Some(name), r))?,
                        b'L' => ext.path = Some(trim_nul(&data).to_vec()),
                        _ => ext.link = Some(trim_nul(&data).to_vec()),
                    }
                    continue;
                }
                _ => {}
            }
            let ustar = &block[257..263] == b"ustar\0";
            let mut path = match (ustar, field_str(&block[345..500])) {
                (true, prefix) if !prefix.is_empty() => [prefix, b"/", name].concat(),
                _ => name.to_vec(),
            };
            if let Some(p) = ext.path.take() {
                path = p;
            }
            let link = ext
                .link
                .take()
                .unwrap_or_else(|| field_str(&block[157..257]).to_vec());
            if path.is_empty() {
                return Err(self.malformed(offset, None, "empty path"));
            }
            let mode = parse_num(&block[100..108])
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.malformed(offset, Some(&path), "mode field is not a number"))?;
            let mtime = match ext.mtime {
                Some(t) => t,
                None => parse_num(&block[136..148])
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| {
                        self.malformed(offset, Some(&path), "mtime field is not a number")
                    })?,
            };
            let size = ext.size.unwrap_or(size);
            let kind = match typeflag {
                // Pre-POSIX archives mark directories by a trailing slash.
                0 if path.ends_with(b"/") => Kind::Directory,
                b'0' | 0 | b'7' => Kind::Regular,
                b'1' => Kind::HardLink,
                b'2' => Kind::Symlink,
                b'3' => Kind::CharDevice,
                b'4' => Kind::BlockDevice,
                b'5' => Kind::Directory,
                b'6' => Kind::Fifo,
                other => Kind::Other(other),
            };
            self.pending = size;
            self.pending_pad = padding(size);
            self.current = (path.clone(), offset, size);
            return Ok(Some(Header {
                path,
                link,
                kind,
                mode: mode & 0o7777,
                mtime,
            }));
        }
    }

    /// Reads a whole extended header's data and its padding.
    fn read_member(&mut self, offset: u64, name: &[u8], size: u64) -> Result<Vec<u8>, TarError> {
        let mut data = vec![0u8; size as usize];
        let mut pad = vec![0u8; padding(size) as usize];
        let whole = self.read_full(&mut data)? && self.read_full(&mut pad)?;
        if !whole && size > 0 {
            return Err(self.malformed(
                offset,
                Some(name),
                "stream ends inside an extended header",
            ));
        }
        Ok(data)
    }

    /// Reads the current member's data. Returns 0 at its end; an early end
    /// of the stream is an error (the header promised more).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.pending == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.pending as usize);
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TarError::Read {
                        offset: self.offset,
                        error: source,
                    })
                }
                Ok(n) => break n,
            }
        };
        if n == 0 {
            let (path, offset, size) = &self.current;
            return Err(self.malformed(
                *offset,
                Some(path),
                format!(
                    "stream ends with {} of the member's {size} data bytes missing",
                    self.pending
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        self.pending -= n as u64;
        Ok(n)
    }

    fn skip_data(&mut self) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while self.read_data(&mut buf)? > 0 {}
        if self.pending_pad > 0 {
            let mut pad = vec![0u8; self.pending_pad as usize];
            if !self.read_full(&mut pad)? {
                return Err(TarError::Read {
                    offset: self.offset,
                    error: io::ErrorKind::UnexpectedEof.into(),
                });
            }
            self.pending_pad = 0;
        }
        Ok(())
    }

    /// Consumes the rest of the stream (the second zero block and any
    /// padding) so that the digest covers all of it.
    fn drain(&mut self) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TarError::Read {
                        offset: self.offset,
                        error: source,
                    })
                }
            }
        }
    }

    /// The sha256 and length of everything read. Reads to the end first.
    pub fn finish(mut self) -> Result<(Digest, u64), TarError> {
        if !self.done {
            while self.next_header()?.is_some() {}
        }
        Ok((
            Digest::from_bytes(self.hasher.finalize().into()),
            self.offset,
        ))
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A NUL-terminated (or full-width) string field.
fn field_str(f: &[u8]) -> &[u8] {
    trim_nul(f)
}

fn trim_nul(f: &[u8]) -> &[u8] {
    match f.iter().position(|&b| b == 0) {
        Some(i) => &f[..i],
        None => f,
    }
}

/// Octal (space/NUL padded) or GNU base-256 numbers. None if malformed.
fn parse_num(f: &[u8]) -> Option<i128> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        if f[0] != 0x80 {
            return None; // negative base-256: no field of ours may be negative
        }
        let mut n: i128 = 0;
        for &b in &f[1..] {
            n = n.checked_mul(256)?.checked_add(b as i128)?;
        }
        return Some(n);
    }
    let s = trim_nul(f);
    let s = std::str::from_utf8(s).ok()?.trim_matches(' ');
    if s.is_empty() {
        return Some(0);
    }
    i128::from_str_radix(s, 8).ok().filter(|n| *n >= 0)
}

fn check_checksum(block: &[u8; BLOCK]) -> Result<(), String> {
    let stored = parse_num(&block[148..156]).ok_or("checksum field is not a number")?;
    let mut unsigned: i128 = 0;
    let mut signed: i128 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i128;
        signed += b as i8 as i128;
    }
    if stored == unsigned || stored == signed {
        Ok(())
    } else {
        Err(format!(
            "checksum mismatch: header says {stored:o}, computed {unsigned:o}"
        ))
    }
}

/// Parses PAX records `"<len> <key>=<value>\n"`, where len counts the whole
/// record, and applies the keys the unpacker uses.
fn parse_pax(mut data: &[u8], ext: &mut Extensions) -> Result<(), String> {
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length is not a decimal number")?;
        if len <= sp + 1 || len > data.len() {
            return Err(format!(
                "PAX record length {len} does not fit the {} bytes left",
                data.len()
            ));
        }
        let record = &data[sp + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or("PAX record does not end with a newline")?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without `=`")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let number = |what: &str| -> Result<String, String> {
            std::str::from_utf8(value)
                .map(str::to_owned)
                .map_err(|_| format!("PAX {what} is not text"))
        };
        match key {
            b"path" => ext.path = Some(value.to_vec()),
            b"linkpath" => ext.link = Some(value.to_vec()),
            b"size" => {
                let s = number("size")?;
                ext.size = Some(
                    s.parse()
                        .map_err(|_| format!("PAX size {s:?} is not a number"))?,
                );
            }
            b"mtime" => {
                let s = number("mtime")?;
                let whole = s.split('.').next().unwrap_or("");
                ext.mtime = Some(
                    whole
                        .parse()
                        .map_err(|_| format!("PAX mtime {s:?} is not a number"))?,
                );
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err("GNU sparse files are not supported".into())
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records() {
        let mut ext = Extensions::default();
        parse_pax(b"12 path=a/b\n12 size=100\n", &mut ext).unwrap();
        assert_eq!(ext.path.as_deref(), Some(&b"a/b"[..]));
        assert_eq!(ext.size, Some(100));
        for bad in [
            &b"99 path=a\n"[..],
            b"x path=a\n",
            b"8 path=a\n",
            b"10 patha\n\n",
            b"13 size=1x0\n",
        ] {
            assert!(
                parse_pax(bad, &mut Extensions::default()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_num(b"0000644\0"), Some(0o644));
        assert_eq!(parse_num(b"  17 \0"), Some(0o17));
        assert_eq!(parse_num(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_num(b"0008\0"), None);
        assert_eq!(parse_num(&[0xff, 0xff]), None);
    }
}
