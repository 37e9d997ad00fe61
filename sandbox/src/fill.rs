//! In-memory directories the caller lays out itself ([`MemoryDir::fill`]):
//! init hands each mounted tmpfs over as a descriptor, the caller writes
//! beneath it with inside root's ids, and no command starts before the
//! caller says it is done. A tree that would otherwise be written to the
//! host's disk and then copied into the tmpfs is written once.
//!
//! [`MemoryDir::fill`]: crate::MemoryDir::fill

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use nix::unistd::{getegid, geteuid};

use crate::beneath::Dir;
use crate::error::{Error, Result};
use crate::spec::Spec;

/// What the caller of [`crate::run_filling`] writes into its in-memory
/// directories: it gets one open directory per [`crate::MemoryDir`] with
/// `fill`, in the spec's order, and returns why it could not lay them
/// out, if it could not.
pub type Fill<'a> = dyn FnMut(Vec<Dir>) -> std::result::Result<(), String> + 'a;

/// The channel between init and the caller: (the caller's end, init's end).
pub(crate) fn channel() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::setup("in-memory directory socket", e))
}

/// In init, once the in-memory directories are mounted: send them to the
/// caller and wait until it has laid them out.
pub(crate) fn hand_over(sock: OwnedFd, dirs: Vec<OwnedFd>) -> Result<()> {
    let raw: Vec<RawFd> = dirs.iter().map(AsRawFd::as_raw_fd).collect();
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&[0])],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| Error::setup("hand the in-memory directories to the caller", e))?;
    // Nothing of the host may stay open in init once commands run.
    drop(dirs);
    let mut done = [0u8];
    let got = loop {
        match nix::unistd::read(sock.as_raw_fd(), &mut done) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match got {
        Ok(1) if done[0] == 1 => Ok(()),
        _ => Err(Error::setup(
            "lay out the in-memory directories",
            "the caller did not finish",
        )),
    }
}

/// The caller's side: wait for init's directories, lay them out with
/// `fill` as inside root, and answer. Init that ended before it sent them
/// (a failed mount) leaves nothing to do: its report says why.
pub(crate) fn serve(sock: OwnedFd, spec: &Spec, fill: &mut Fill) -> Result<()> {
    let count = spec.memory_dirs.iter().filter(|m| m.fill).count();
    let mut byte = [0u8];
    let mut iov = [IoSliceMut::new(&mut byte)];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((count * std::mem::size_of::<RawFd>()) as u32) };
    let mut space = vec![0u8; space as usize];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    }
    .map_err(|e| Error::setup("receive the in-memory directories", e))?;
    let mut dirs = Vec::new();
    for cmsg in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            dirs.extend(
                fds.into_iter()
                    .map(|fd| Dir::from(unsafe { OwnedFd::from_raw_fd(fd) })),
            );
        }
    }
    if msg.bytes == 0 {
        return Ok(());
    }
    let laid = if dirs.len() == count {
        as_inside_root(spec, || fill(dirs))?.map_err(Error::Fill)
    } else {
        Err(Error::setup(
            "receive the in-memory directories",
            format!("{} descriptors for {count} directories", dirs.len()),
        ))
    };
    // Init gone meanwhile (a timeout) hears nothing: its report says why.
    let _ = send(
        sock.as_raw_fd(),
        &[u8::from(laid.is_ok())],
        MsgFlags::MSG_NOSIGNAL,
    );
    laid
}

/// Runs `f` with inside root's file-system ids, so that what it creates in
/// the sandbox's tmpfs is inside root's, as if init had made it. As real
/// root, this thread's fsuid and fsgid become the range's for the call (the
/// kernel takes the file capabilities away with them; they are raised again:
/// root lays out as root, only under other ids), and back afterwards. An
/// unprivileged caller must be inside root itself: the kernel refuses to
/// create files whose owner the sandbox's namespace does not map.
fn as_inside_root<T>(spec: &Spec, f: impl FnOnce() -> T) -> Result<T> {
    let (uid, gid) = spec.host_root()?;
    if !geteuid().is_root() {
        if (uid, gid) != (geteuid().as_raw(), getegid().as_raw()) {
            return Err(Error::InvalidSpec(
                "an in-memory directory the caller fills needs root inside to be the caller \
                 (or the caller to be root)"
                    .into(),
            ));
        }
        return Ok(f());
    }
    let _back = FsIds::take(uid, gid)?;
    Ok(f())
}

/// This thread's fsuid and fsgid switched to a range's ids until dropped.
struct FsIds;

impl FsIds {
    fn take(uid: u32, gid: u32) -> Result<FsIds> {
        // SAFETY: setfsuid/setfsgid change this thread's ids only; -1 (an
        // invalid id) changes nothing and returns the current one.
        let now = unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
            (
                libc::setfsuid(u32::MAX) as u32,
                libc::setfsgid(u32::MAX) as u32,
            )
        };
        let back = FsIds;
        if now != (uid, gid) {
            return Err(Error::setup(
                "take inside root's file-system ids",
                format!("{}:{} instead of {uid}:{gid}", now.0, now.1),
            ));
        }
        for cap in [
            caps::Capability::CAP_DAC_OVERRIDE,
            caps::Capability::CAP_DAC_READ_SEARCH,
            caps::Capability::CAP_FOWNER,
        ] {
            caps::raise(None, caps::CapSet::Effective, cap)
                .map_err(|e| Error::setup("keep root's file capabilities", e))?;
        }
        Ok(back)
    }
}

impl Drop for FsIds {
    fn drop(&mut self) {
        // Back to 0: the kernel restores the file capabilities from the
        // permitted set.
        // SAFETY: as in take.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
    }
}
