//! A terminal of the sandbox's own for an interactive command
//! ([`Spec::terminal`](crate::Spec::terminal)). Init opens a
//! pseudo-terminal in the sandbox's devpts instance, sends its master to
//! the helper over a socket (as runc sends it to a console socket) and gives
//! the slave to each command as stdin, stdout, stderr and controlling
//! terminal. The helper relays between its own stdin/stdout (the caller's)
//! and the master, with the caller's terminal in raw mode and its window
//! size forwarded. The caller's terminal never enters the sandbox: what a
//! command does to its terminal (TIOCSTI, modes, the foreground process
//! group) reaches only the sandbox's pty.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use crate::error::{Error, Result};

/// The caller's standard input and output, as the helper has them.
const fn stdin() -> BorrowedFd<'static> {
    // SAFETY: 0 stays open for the helper's whole life.
    unsafe { BorrowedFd::borrow_raw(0) }
}

const fn stdout() -> BorrowedFd<'static> {
    // SAFETY: as above, 1.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// The helper's side: relays bytes between the caller and the master.
pub(crate) struct Relay {
    /// Until init has sent the master (or gone without).
    sock: Option<OwnedFd>,
    master: Option<OwnedFd>,
    /// Nothing more comes out of the master: every slave is closed.
    output_ended: bool,
    /// Read from stdin, not yet written to the master (whose input queue
    /// may be full while the command reads nothing).
    pending: Vec<u8>,
    input_ended: bool,
    /// The caller's terminal, in raw mode until dropped.
    _raw: Option<RawMode>,
}

/// Init's side: what it opens the pty with.
pub(crate) struct Console {
    sock: OwnedFd,
    /// The caller's terminal modes, given to the pty: the command sees the
    /// caller's erase character, flow control and so on.
    modes: Option<Termios>,
    size: Option<libc::winsize>,
}

/// Which descriptor of the relay a poll entry is.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Sock,
    Master,
    Input,
}

impl Relay {
    /// Before the clone: the socket init sends the master over, and the
    /// caller's terminal (if stdin is one) put in raw mode: keys reach the
    /// command as they are typed, ^C and ^Z included.
    pub(crate) fn new() -> Result<(Relay, Console)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::setup("terminal socket", e))?;
        let modes = tcgetattr(stdin()).ok();
        let size = window_size(stdin()).or_else(|| window_size(stdout()));
        let raw = match &modes {
            Some(saved) => {
                let mut raw = saved.clone();
                cfmakeraw(&mut raw);
                tcsetattr(stdin(), SetArg::TCSANOW, &raw)
                    .map_err(|e| Error::setup("put the terminal in raw mode", e))?;
                Some(RawMode(saved.clone()))
            }
            None => None,
        };
        let relay = Relay {
            sock: Some(ours),
            master: None,
            output_ended: false,
            pending: Vec::new(),
            input_ended: false,
            _raw: raw,
        };
        let console = Console {
            sock: theirs,
            modes,
            size,
        };
        Ok((relay, console))
    }

    /// What to poll, in a fixed order.
    pub(crate) fn poll_fds(&self) -> Vec<(Slot, PollFd<'_>)> {
        let mut fds = Vec::new();
        if let Some(sock) = &self.sock {
            fds.push((Slot::Sock, PollFd::new(sock.as_fd(), PollFlags::POLLIN)));
        }
        if let Some(master) = &self.master {
            let mut events = PollFlags::empty();
            if !self.output_ended {
                events |= PollFlags::POLLIN;
            }
            if !self.pending.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            if !events.is_empty() {
                fds.push((Slot::Master, PollFd::new(master.as_fd(), events)));
            }
            if self.pending.is_empty() && !self.input_ended {
                fds.push((Slot::Input, PollFd::new(stdin(), PollFlags::POLLIN)));
            }
        }
        fds
    }

    /// Act on what poll reported for `slot`.
    pub(crate) fn ready(&mut self, slot: Slot) {
        match slot {
            Slot::Sock => self.receive(MsgFlags::empty()),
            Slot::Master => {
                self.write_pending();
                self.copy_output(16);
            }
            Slot::Input => {
                let mut buf = [0u8; 4096];
                match nix::unistd::read(stdin().as_raw_fd(), &mut buf) {
                    Ok(0) => self.input_ended = true,
                    Ok(n) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        self.write_pending();
                    }
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(_) => self.input_ended = true,
                }
            }
        }
    }

    /// The caller's window changed (SIGWINCH): tell the pty, whose kernel
    /// side signals the command's foreground process group.
    pub(crate) fn resize(&self) {
        if let (Some(master), Some(size)) = (
            &self.master,
            window_size(stdin()).or_else(|| window_size(stdout())),
        ) {
            // SAFETY: TIOCSWINSZ reads a winsize; on a master it sets the slave's.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        }
    }

    /// After the sandbox is gone: take the master if init sent it and the
    /// helper had not polled it yet, and copy out what the command wrote last.
    pub(crate) fn finish(&mut self) {
        if self.sock.is_some() {
            self.receive(MsgFlags::MSG_DONTWAIT);
        }
        // Every slave is closed now: the master reads what is left, then EIO.
        while !self.output_ended {
            if !self.copy_output(16) {
                let Some(master) = &self.master else { break };
                let mut fd = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
                if poll(&mut fd, PollTimeout::from(200u8)).unwrap_or(0) == 0 {
                    break;
                }
            }
        }
    }

    fn receive(&mut self, flags: MsgFlags) {
        let Some(sock) = self.sock.take() else { return };
        let mut byte = [0u8];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let Ok(msg) = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        ) else {
            // Interrupted: keep waiting, unless this was the last look.
            if !flags.contains(MsgFlags::MSG_DONTWAIT) {
                self.sock = Some(sock);
            }
            return;
        };
        let mut received = Vec::new();
        for cmsg in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us.
                received.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        // End of stream (init failed before it opened the pty) leaves
        // nothing to relay.
        let Some(master) = received.into_iter().next() else {
            return;
        };
        let _ = fcntl(master.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        self.master = Some(master);
    }

    /// Copy from the master to stdout, at most `rounds` reads. Whether
    /// anything was read.
    fn copy_output(&mut self, rounds: usize) -> bool {
        let Some(master) = &self.master else {
            self.output_ended = true;
            return false;
        };
        let mut buf = [0u8; 16384];
        let mut any = false;
        for _ in 0..rounds {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    self.output_ended = true;
                    break;
                }
                Ok(n) => {
                    any = true;
                    write_all(stdout(), &buf[..n]);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.output_ended = true;
                    break;
                }
            }
        }
        any
    }

    fn write_pending(&mut self) {
        let Some(master) = &self.master else { return };
        while !self.pending.is_empty() {
            match nix::unistd::write(master, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                // The pty is gone: what was typed has nobody to read it.
                Err(_) => {
                    self.pending.clear();
                    self.input_ended = true;
                }
            }
        }
    }
}

impl Console {
    /// The socket init keeps until it has sent the master.
    pub(crate) fn sock(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// In init, inside the root: open a pty of the sandbox's devpts, give it
    /// the caller's modes and window size, send its master to the helper and
    /// return the slave. Init keeps the slave open until it exits, so the
    /// master sees the end only when the sandbox is gone.
    pub(crate) fn open(self) -> Result<OwnedFd> {
        let fail = |e: Errno| Error::setup("open the sandbox's terminal", e);
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(fail)?;
        nix::pty::unlockpt(&master).map_err(fail)?;
        // The slave from its master, with no path looked up.
        // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
        let slave = unsafe {
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        let slave = Errno::result(slave).map_err(fail)?;
        // SAFETY: the ioctl just returned this descriptor.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        if let Some(modes) = &self.modes {
            tcsetattr(&slave, SetArg::TCSANOW, modes).map_err(fail)?;
        }
        if let Some(size) = &self.size {
            // SAFETY: TIOCSWINSZ reads a winsize.
            Errno::result(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, size) })
                .map_err(fail)?;
        }
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&[master.as_raw_fd()])],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| Error::setup("send the terminal to the helper", e))?;
        Ok(slave)
    }
}

/// In the command's process, right after setsid: the slave on 0-2 and as
/// the controlling terminal of the new session.
pub(crate) fn take(slave: RawFd) -> nix::Result<()> {
    for fd in 0..3 {
        // SAFETY: dup2 onto 0-2 of this process.
        Errno::result(unsafe { libc::dup2(slave, fd) })?;
    }
    // SAFETY: TIOCSCTTY with 0: only if no other session has it.
    Errno::result(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) }).map(drop)
}

/// Puts the caller's terminal back into the modes it had, when dropped:
/// on every way out of the helper's run (errors, a signal it handles).
struct RawMode(Termios);

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(stdin(), SetArg::TCSADRAIN, &self.0);
    }
}

fn window_size(fd: BorrowedFd) -> Option<libc::winsize> {
    // SAFETY: TIOCGWINSZ fills a plain struct.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (r == 0).then_some(size)
}

/// Write everything to `fd`; output nobody can take any more is dropped.
fn write_all(fd: BorrowedFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut pfd = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut pfd, PollTimeout::NONE);
            }
            Err(_) => return,
        }
    }
}
