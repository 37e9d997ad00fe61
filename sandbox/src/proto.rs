//! Messages between the caller, the helper and the sandbox's init, one JSON
//! document per line.

use std::io::{BufRead, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::Error;
use crate::spec::{Report, Status};

/// Helper to caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelperMsg {
    Done(Result<Report, Error>),
}

/// Sandbox init (or the command's process before exec) to helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitMsg {
    /// Command k (0: argv, k: then[k - 1]) is about to start.
    Started(usize),
    Ended(Status),
    Failed(Error),
}

pub(crate) fn send<T: Serialize>(mut w: impl Write, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// The next message, or None at end of stream.
pub(crate) fn recv<T: DeserializeOwned>(mut r: impl BufRead) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(std::io::Error::other)
}
