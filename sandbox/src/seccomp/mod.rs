//! The system-call filter every sandboxed command runs under: a deny list
//! modelled on the default profiles of Docker/podman and Flatpak, written as
//! a libseccomp policy for the x86_64 and i386 ABIs (`policy.rs`; the
//! bootstrap runs i386 binaries). The build script compiles it to BPF for
//! every combination of relaxed groups; a run takes its program from the
//! binary and installs it as the last thing before execve.
//! docs/sandbox.md explains each rule.

use crate::error::{Error, Result};
use crate::spec::SeccompGroup;

mod compiled {
    include!(concat!(env!("OUT_DIR"), "/seccomp.rs"));
}

/// The filter of one run, ready to be installed in each command's process
/// with one system call.
pub(crate) struct Program(Vec<libc::sock_filter>);

impl Program {
    /// The policy with the groups in `allow` relaxed.
    pub(crate) fn for_groups(allow: &[SeccompGroup]) -> Program {
        let mask = allow.iter().fold(0, |m, g| m | 1 << index(*g));
        let insns = compiled::PROGRAMS[mask]
            .chunks_exact(std::mem::size_of::<libc::sock_filter>())
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Program(insns)
    }

    /// Install the filter on the calling thread. Call it last before
    /// execve, after PR_SET_NO_NEW_PRIVS: only raw system calls, safe
    /// between fork and exec.
    pub(crate) fn install(&self) -> Result<()> {
        let prog = libc::sock_fprog {
            len: self.0.len() as u16,
            filter: self.0.as_ptr().cast_mut(),
        };
        // SAFETY: prog points to a valid BPF program that outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(Error::setup(
                "install the seccomp filter",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// The bit of `group` in a program's index: its place in the policy's list.
fn index(group: SeccompGroup) -> usize {
    compiled::GROUPS
        .iter()
        .position(|name| *name == group.name())
        .expect("the policy lists every group (test below)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_its_bit_and_every_combination_its_program() {
        let names: Vec<&str> = SeccompGroup::ALL.iter().map(|g| g.name()).collect();
        assert_eq!(names, compiled::GROUPS);
        let mut programs: Vec<&[u8]> = compiled::PROGRAMS.to_vec();
        programs.sort();
        programs.dedup();
        assert_eq!(programs.len(), 1 << SeccompGroup::ALL.len());
    }
}
