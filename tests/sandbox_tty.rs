//! A terminal of the sandbox's own (`imgrep run -t`, `imgrep shell`): the
//! test opens a pty pair, runs the real imgrep with the slave as its stdin,
//! stdout, stderr and controlling terminal, and talks to it through the
//! master as a terminal emulator would. Checked: the command's terminal is
//! a pty of the sandbox's own devpts and its controlling terminal, with the
//! window size the test set (also after a change), job control works, the
//! exit status comes back, and the test's terminal is in raw mode during
//! the run and has its modes back afterwards, also after an error and a
//! signal. Without -t, or without a terminal on stdin, the command gets no
//! controlling terminal, as before.

mod build_support;
mod sandbox_support;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags, Termios};
use sandbox_support::*;

/// The test's terminal: the master it reads and types on, the slave imgrep
/// gets, and everything read so far.
struct Term {
    master: OwnedFd,
    slave: OwnedFd,
    out: Vec<u8>,
}

const LIMIT: Duration = Duration::from_secs(60);

impl Term {
    fn new(rows: u16, cols: u16) -> Term {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).unwrap();
        Term {
            master: pty.master,
            slave: pty.slave,
            out: Vec::new(),
        }
    }

    fn modes(&self) -> Termios {
        tcgetattr(self.slave.as_fd()).unwrap()
    }

    /// The host's name of the slave, e.g. /dev/pts/3.
    fn slave_name(&self) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", self.slave.as_raw_fd()))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize; the kernel signals the
        // terminal's foreground process group (imgrep) with SIGWINCH.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// `cmd` with the slave as stdin, stdout, stderr and controlling
    /// terminal, as a shell starts a foreground job.
    fn spawn(&self, mut cmd: Command) -> Child {
        cmd.stdin(Stdio::from(self.slave.try_clone().unwrap()))
            .stdout(Stdio::from(self.slave.try_clone().unwrap()))
            .stderr(Stdio::from(self.slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    }

    fn send(&self, text: &str) {
        nix::unistd::write(&self.master, text.as_bytes()).unwrap();
    }

    /// Read what the master has, waiting at most `wait` for the first byte.
    fn pump(&mut self, wait: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(wait.as_millis() as i32).unwrap();
        if poll(&mut fds, ms).unwrap_or(0) == 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        if let Ok(n) = nix::unistd::read(self.master.as_raw_fd(), &mut buf) {
            self.out.extend_from_slice(&buf[..n]);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Wait until the output holds `needle`.
    fn expect(&mut self, needle: &str, child: &mut Child) {
        let start = Instant::now();
        while !self.text().contains(needle) {
            assert!(
                start.elapsed() < LIMIT,
                "no {needle:?} on the terminal; it shows:\n{}",
                self.text()
            );
            if let Some(status) = child.try_wait().unwrap() {
                self.pump(Duration::from_millis(200));
                assert!(
                    self.text().contains(needle),
                    "imgrep ended ({status}) without {needle:?} on the terminal:\n{}",
                    self.text()
                );
            }
            self.pump(Duration::from_millis(100));
        }
    }

    /// Wait for `child` to end, reading its output meanwhile (a full pty
    /// would block it).
    fn wait(&mut self, child: &mut Child) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.pump(Duration::from_millis(100));
                return status;
            }
            assert!(
                start.elapsed() < LIMIT,
                "imgrep did not end; the terminal shows:\n{}",
                self.text()
            );
            self.pump(Duration::from_millis(100));
        }
    }
}

fn assert_raw(term: &Term, modes_before: &Termios, label: &str) {
    let now = term.modes();
    assert!(
        modes_before.local_flags.contains(LocalFlags::ICANON),
        "{label}: the test's terminal starts in canonical mode"
    );
    assert!(
        !now.local_flags
            .intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG),
        "{label}: imgrep's terminal is in raw mode while the command runs: {now:?}"
    );
}

#[test]
fn run_t_gives_a_terminal_of_the_sandboxs_own() {
    if !ready("run_t_gives_a_terminal_of_the_sandboxs_own") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("tty") {
        let label = who.label();
        let mut term = Term::new(37, 101);
        let before = term.modes();
        let script = "tty; stty size; echo /dev/pts/*; \
                      (: </dev/tty) && echo ctty-yes; \
                      echo term-$TERM; read line; echo got-$line; exit 3";
        let mut cmd = fx.command(&who, &["-t", "--", "sh", "-c", script]);
        cmd.env("TERM", "xterm-test");
        let mut child = term.spawn(cmd);
        term.expect("ctty-", &mut child);
        assert_raw(&term, &before, &label);
        let host_name = term.slave_name();
        term.send("typed\r");
        let status = term.wait(&mut child);
        let out = term.text();
        assert_eq!(status.code(), Some(3), "{label}: {out}");
        let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert_eq!(
            lines[..4],
            [
                "/dev/pts/0",
                "37 101",
                "/dev/pts/0 /dev/pts/ptmx",
                "ctty-yes"
            ],
            "{label}: the command's terminal is the first pty of a devpts of its own \
             (the test's is {host_name}), its controlling terminal, with the test's size:\n{out}"
        );
        assert!(
            out.contains("got-typed"),
            "{label}: input reaches it: {out}"
        );
        assert!(
            out.contains("term-xterm-test"),
            "{label}: TERM passed on: {out}"
        );
        assert_eq!(
            term.modes(),
            before,
            "{label}: the terminal's modes are back after the run"
        );
    }
}

#[test]
fn an_interactive_shell_has_job_control_and_follows_the_window() {
    if !ready("an_interactive_shell_has_job_control_and_follows_the_window") {
        return;
    }
    let fx = Fixture::new();
    let who = Who::Me;
    let mut term = Term::new(24, 80);
    let before = term.modes();
    let mut child = term.spawn(fx.command(&who, &["-t", "--", "sh", "-i"]));
    term.send("echo m$((40+2))\r");
    term.expect("m42", &mut child);
    assert_raw(&term, &before, "sh -i");
    // ^Z stops the foreground job and the shell takes the terminal back.
    term.send("sleep 97\r");
    std::thread::sleep(Duration::from_millis(500));
    term.send("\x1a");
    term.expect("Stopped", &mut child);
    term.send("jobs; kill -9 %1; echo j$((1+1))\r");
    term.expect("j2", &mut child);
    // ^C interrupts the foreground job, not the shell (nor imgrep).
    term.send("sleep 98\r");
    std::thread::sleep(Duration::from_millis(500));
    term.send("\x03");
    term.send("echo c$((3+4))\r");
    term.expect("c7", &mut child);
    // A new window size reaches the shell's terminal (SIGWINCH forwarded).
    term.resize(50, 120);
    std::thread::sleep(Duration::from_millis(200));
    term.send("stty size\r");
    term.expect("50 120", &mut child);
    term.send("exit 7\r");
    let status = term.wait(&mut child);
    let out = term.text();
    assert_eq!(status.code(), Some(7), "{out}");
    for bad in [
        "job control turned off",
        "can't access tty",
        "no job control",
    ] {
        assert!(!out.contains(bad), "{bad:?}:\n{out}");
    }
    assert_eq!(term.modes(), before, "the terminal's modes are back");
}

#[test]
fn the_terminal_is_restored_after_an_error_and_a_signal() {
    if !ready("the_terminal_is_restored_after_an_error_and_a_signal") {
        return;
    }
    let fx = Fixture::new();
    let who = Who::Me;

    // A command missing inside the root: found out by init, after raw mode.
    let mut term = Term::new(24, 80);
    let before = term.modes();
    let mut child = term.spawn(fx.command(&who, &["-t", "--", "/no/such/command"]));
    let status = term.wait(&mut child);
    assert_eq!(status.code(), Some(2), "{}", term.text());
    assert!(term.text().contains("/no/such/command"), "{}", term.text());
    assert_eq!(term.modes(), before, "modes back after an error");

    // SIGTERM to imgrep while the command waits for input.
    let mut term = Term::new(24, 80);
    let before = term.modes();
    let mut child = term.spawn(fx.command(&who, &["-t", "--", "sh", "-c", "echo ready; read x"]));
    term.expect("ready", &mut child);
    assert_raw(&term, &before, "before SIGTERM");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = term.wait(&mut child);
    assert_eq!(status.code(), Some(128 + 15), "{}", term.text());
    assert!(
        term.text().contains("interrupted by signal 15"),
        "{}",
        term.text()
    );
    assert_eq!(term.modes(), before, "modes back after SIGTERM");
}

#[test]
fn without_t_or_without_a_terminal_there_is_no_controlling_terminal() {
    if !ready("without_t_or_without_a_terminal_there_is_no_controlling_terminal") {
        return;
    }
    let fx = Fixture::new();
    let who = Who::Me;
    // A subshell: a failed redirection of `:` ends a non-interactive shell.
    let script = "if (: </dev/tty) 2>/dev/null; then echo ctty-yes; else echo ctty-no; fi";

    // A terminal on stdin, no -t: the command runs as before, in a session
    // of its own without a controlling terminal; imgrep leaves the mode alone.
    let mut term = Term::new(24, 80);
    let before = term.modes();
    let mut child = term.spawn(fx.command(&who, &["--", "sh", "-c", script]));
    let status = term.wait(&mut child);
    assert_eq!(status.code(), Some(0), "{}", term.text());
    assert!(term.text().contains("ctty-no"), "{}", term.text());
    assert_eq!(term.modes(), before);

    // -t without a terminal on stdin: said once, then as without -t.
    let o = fx
        .command(&who, &["-t", "--", "sh", "-c", &format!("{script}; tty")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert_eq!(stdout(&o), "ctty-no\nnot a tty\n", "{}", describe(&o));
    assert!(
        stderr(&o).contains("-t: stdin is not a terminal"),
        "{}",
        describe(&o)
    );
}

#[test]
fn imgrep_shell_enters_a_failed_build_on_a_terminal() {
    let Some(fx) = build_support::Fixture::new(&[]) else {
        return;
    };
    let out = fx.run(&["build", "fail"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut term = Term::new(41, 133);
    let before = term.modes();
    let mut child = term.spawn(fx.command(&["shell", "fail"]));
    term.send("tty; stty size; cat prepared.txt; echo s$((2+3))\r");
    term.expect("s5", &mut child);
    assert_raw(&term, &before, "imgrep shell");
    term.send("exit 5\r");
    let status = term.wait(&mut child);
    let out = term.text();
    assert_eq!(status.code(), Some(5), "{out}");
    for want in ["/dev/pts/0", "41 133", "prepared"] {
        assert!(out.contains(want), "{want:?}:\n{out}");
    }
    for bad in ["job control turned off", "can't access tty"] {
        assert!(!out.contains(bad), "{bad:?}:\n{out}");
    }
    assert_eq!(term.modes(), before, "the terminal's modes are back");

    // -T: no terminal, the shell reads the test's terminal as a plain file.
    let mut term = Term::new(41, 133);
    let mut child = term.spawn(fx.command(&["shell", "-T", "fail", "--", "/bin/sh", "-c", "tty"]));
    let status = term.wait(&mut child);
    assert_eq!(status.code(), Some(1), "{}", term.text());
    assert!(term.text().contains("not a tty"), "{}", term.text());
}
