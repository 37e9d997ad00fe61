//! The sandbox's file system, built in the new mount namespace before
//! pivot_root. docs/sandbox.md lists every mount and why.

use std::fs::{DirBuilder, OpenOptions};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root};

use crate::copy::{self, Specials};
use crate::error::{Error, Result};
use crate::spec::{MemoryDir, RootFs, Spec};

/// Host device nodes bind-mounted into /dev (mknod is impossible in a user namespace).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// /proc files that leak host state or act on the host, hidden under a
/// read-only /dev/null: runc's and podman's masked paths. Every other file
/// directly in /proc that not everyone may read (0400 and the like: kmsg,
/// kpage*, slabinfo, vmallocinfo, ...) is masked too, whatever the kernel
/// has.
const PROC_MASKED_FILES: [&str; 8] = [
    "kcore",
    "keys",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "sysrq-trigger",
    "interrupts",
];
/// /proc directories hidden under an empty read-only tmpfs.
const PROC_MASKED_DIRS: [&str; 3] = ["acpi", "asound", "scsi"];
/// /proc entries that stay visible but read-only.
const PROC_READONLY: [&str; 4] = ["sys", "bus", "fs", "irq"];

/// `fill`: init's end of the channel the in-memory directories the caller
/// lays out are handed over through, once mounted.
pub(crate) fn build(spec: &Spec, fill: Option<OwnedFd>) -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::setup("make / private", e))?;
    let tmpfs_size = spec.tmpfs_size();
    if spec.scratch_in_memory {
        scratch_tmpfs(&spec.scratch, tmpfs_size)?;
    }
    let root = spec.scratch.join("root");
    assemble_root(spec, &root)?;
    for o in &spec.overlays {
        let target = target(&root, &o.dst, true)?;
        mount_overlay(spec, o, &target)?;
    }
    let mut handed = Vec::new();
    for m in &spec.memory_dirs {
        let target = target(&root, &m.dst, true)?;
        memory_dir(spec, m, &target)?;
        if m.fill {
            let dir = nix::fcntl::open(
                &target,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| Error::setup(format!("open the in-memory {}", m.dst.display()), e))?;
            // SAFETY: open just returned this descriptor.
            handed.push(unsafe { OwnedFd::from_raw_fd(dir) });
        }
    }
    if let Some(sock) = fill {
        crate::fill::hand_over(sock, handed)?;
    }
    for b in &spec.binds {
        let is_dir = b.src.is_dir();
        let target = target(&root, &b.dst, is_dir)?;
        bind(&b.src, &target, b.readonly).map_err(|e| {
            Error::setup(
                format!("bind {} to {}", b.src.display(), b.dst.display()),
                e,
            )
        })?;
    }
    mount_dev(&root, tmpfs_size.min(Spec::SHM_SIZE))?;
    mount_proc(&root)?;
    let data = format!("mode=1777,size={tmpfs_size}");
    for t in &spec.tmpfs {
        let target = target(&root, t, true)?;
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| Error::setup(format!("tmpfs on {}", t.display()), e))?;
    }
    enter(&root)
}

/// A tmpfs on the scratch directory, visible only in this mount namespace,
/// with the layout the root assembly expects.
fn scratch_tmpfs(scratch: &Path, size: u64) -> Result<()> {
    mount(
        Some("tmpfs"),
        scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=0755,size={size}").as_str()),
    )
    .map_err(|e| Error::setup("tmpfs on the scratch directory", e))?;
    for sub in ["upper", "work", "root"] {
        DirBuilder::new()
            .mode(0o755)
            .create(scratch.join(sub))
            .map_err(|e| Error::setup("tmpfs on the scratch directory", e))?;
    }
    Ok(())
}

/// The root: overlayfs of the lowers with `scratch/upper` on top, or, with no
/// lowers or no overlayfs, `scratch/upper` itself (filled by copying).
fn assemble_root(spec: &Spec, root: &Path) -> Result<()> {
    let upper = spec.scratch.join("upper");
    if !spec.lowers.is_empty() && spec.rootfs != RootFs::Copy {
        match overlayfs(&spec.lowers, &upper, &spec.scratch.join("work"), root) {
            Ok(()) => return Ok(()),
            Err(e) if spec.rootfs == RootFs::Overlay => {
                return Err(Error::setup("overlayfs root", e))
            }
            Err(_) => {}
        }
    }
    for lower in &spec.lowers {
        copy::merge_tree(lower, &upper, Specials::Refuse)
            .map_err(|e| Error::setup(format!("copy {} into the root", lower.display()), e))?;
    }
    bind(&upper, root, false).map_err(|e| Error::setup("bind the root", e))
}

/// One of [`Spec::overlays`] on `target`: overlayfs, or with
/// [`RootFs::Copy`] or where overlayfs fails under [`RootFs::Auto`], `upper`
/// completed from the lowers (top first, nothing it has replaced) and bound.
fn mount_overlay(spec: &Spec, o: &crate::spec::Overlay, target: &Path) -> Result<()> {
    let what = || format!("overlay on {}", o.dst.display());
    if spec.rootfs != RootFs::Copy {
        match overlayfs(&o.lowers, &o.upper, &o.work, target) {
            Ok(()) => return Ok(()),
            Err(e) if spec.rootfs == RootFs::Overlay => return Err(Error::setup(what(), e)),
            Err(_) => {}
        }
    }
    for lower in o.lowers.iter().rev() {
        copy::fill_tree(lower, &o.upper).map_err(|e| Error::setup(what(), e))?;
    }
    bind(&o.upper, target, false).map_err(|e| Error::setup(what(), e))
}

/// One of [`Spec::memory_dirs`] on `target`: a tmpfs of the size the spec
/// gives, filled with its sources in order.
fn memory_dir(spec: &Spec, m: &MemoryDir, target: &Path) -> Result<()> {
    let size = m.mounted_size(&spec.limits);
    let what = || format!("in-memory directory {} ({size} bytes)", m.dst.display());
    let data = format!("mode=0755,size={size}");
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| Error::setup(what(), e))?;
    for src in &m.sources {
        copy::merge_tree(src, target, Specials::Refuse)
            .map_err(|e| Error::setup(format!("copy {} into the {}", src.display(), what()), e))?;
    }
    Ok(())
}

/// The first of [`Spec::memory_dirs`] with no space left, seen from inside
/// after pivot_root. A command that ran out of space may still exit 0 (a
/// tool that ignores write errors), so this is checked after every command.
pub(crate) fn full_memory_dir(spec: &Spec) -> Option<usize> {
    spec.memory_dirs
        .iter()
        .position(|m| statvfs(&m.dst).is_ok_and(|s| s.blocks() > 0 && s.blocks_available() == 0))
}

fn overlayfs(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> nix::Result<()> {
    // overlayfs lists lowers top first.
    let lowers: Vec<String> = lowers
        .iter()
        .rev()
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    let base = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    // A volatile overlay refuses to mount again until its work directory is
    // reset: the scratch of an earlier run is reused by the next step.
    let incompat = work.join("work/incompat");
    if incompat.exists() {
        let _ = std::fs::remove_dir_all(&incompat);
    }
    // userxattr (Linux 5.11+) keeps overlay metadata in user.* xattrs, which an
    // unprivileged mounter may write. volatile (5.10+) skips the sync of the
    // upper file system at unmount, which costs tens of milliseconds per run:
    // the scratch layer is disposable, and the host reads it through the same
    // page cache. Older kernels reject the options; try without.
    let mut last = nix::Error::EINVAL;
    for extra in [",userxattr,volatile", ",volatile", ",userxattr", ""] {
        let data = format!("{base}{extra}");
        match mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        ) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Bind `src` on `dst`; read-only binds keep the flags the kernel locked on
/// the source mount (nosuid, nodev, noexec, ...), or the remount fails.
fn bind(src: &Path, dst: &Path, readonly: bool) -> nix::Result<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if readonly {
        let locked = statvfs(src)?.flags();
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if locked.contains(fs) {
                flags |= ms;
            }
        }
        mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)?;
    }
    Ok(())
}

fn mount_proc(root: &Path) -> Result<()> {
    let proc_dir = target(root, Path::new("/proc"), true)?;
    let nsx = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &proc_dir, Some("proc"), nsx, None::<&str>)
        .map_err(|e| Error::setup("mount /proc", e))?;
    let fail = |what: &str, e| Error::setup(format!("protect /proc/{what}"), e);
    // The sandbox's /dev/null is a read-only bind: each bind of it is
    // read-only too, in one mount call (chmod cannot reach the host's node).
    let null = target(root, Path::new("/dev/null"), false)?;
    // Only regular files are looked up (each lookup in a fresh /proc makes
    // an inode): the directory's entry types come with the listing.
    let restricted = std::fs::read_dir(&proc_dir)
        .map_err(|e| Error::setup("list /proc", e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o004 == 0)
        })
        .map(|e| e.file_name());
    let mut masked: Vec<std::ffi::OsString> = PROC_MASKED_FILES.iter().map(|f| f.into()).collect();
    masked.extend(restricted);
    masked.sort();
    masked.dedup();
    for f in &masked {
        let p = proc_dir.join(f);
        if p.is_file() {
            mount(
                Some(&null),
                &p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| fail(&f.to_string_lossy(), e))?;
        }
    }
    for d in PROC_MASKED_DIRS {
        let p = proc_dir.join(d);
        if p.is_dir() {
            mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                nsx | MsFlags::MS_RDONLY,
                Some("size=0"),
            )
            .map_err(|e| fail(d, e))?;
        }
    }
    for d in PROC_READONLY {
        let p = proc_dir.join(d);
        if p.exists() {
            mount(
                Some(&p),
                &p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| fail(d, e))?;
            mount(
                None::<&str>,
                &p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nsx,
                None::<&str>,
            )
            .map_err(|e| fail(d, e))?;
        }
    }
    Ok(())
}

fn mount_dev(root: &Path, shm_size: u64) -> Result<()> {
    let dev = target(root, Path::new("/dev"), true)?;
    let fail = |what: &str, e: nix::Error| Error::setup(format!("populate /dev: {what}"), e);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        flags,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| fail("tmpfs", e))?;
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        if !host.exists() {
            continue;
        }
        let node = dev.join(d);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&node)
            .map_err(|e| {
                fail(
                    d,
                    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
            })?;
        // Read-only: chmod and chown of the node would change the host's.
        bind(&host, &node, true).map_err(|e| fail(d, e))?;
    }
    let mkdir = |name: &str, mode| {
        DirBuilder::new()
            .mode(mode)
            .create(dev.join(name))
            .map_err(|e| {
                fail(
                    name,
                    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
            })
    };
    mkdir("pts", 0o755)?;
    mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| fail("devpts", e))?;
    mkdir("shm", 0o1777)?;
    mount(
        Some("tmpfs"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={shm_size}").as_str()),
    )
    .map_err(|e| fail("shm", e))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).map_err(|e| {
            fail(
                link,
                nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
    }
    // Nothing may add entries to /dev afterwards; its sub-mounts stay writable.
    mount(
        None::<&str>,
        &dev,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| fail("read-only", e))
}

/// pivot_root into `root` and detach the old root.
fn enter(root: &Path) -> Result<()> {
    chdir(root).map_err(|e| Error::setup("chdir to the root", e))?;
    pivot_root(".", ".").map_err(|e| Error::setup("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::setup("detach the old root", e))?;
    chdir("/").map_err(|e| Error::setup("chdir /", e))
}

/// The mount point for the inside path `inside` under `root`, created as a
/// directory (or an empty file) where missing. A symbolic link on the way is
/// refused: it could lead out of the root while we still see the host.
fn target(root: &Path, inside: &Path, dir: bool) -> Result<PathBuf> {
    let fail =
        |reason: &dyn std::fmt::Display| Error::path("mount point inside the root", inside, reason);
    let parts: Vec<_> = inside
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mut path = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let last = i + 1 == parts.len();
        match path.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(fail(&"is a symbolic link in the root"))
            }
            Ok(m) if !last && !m.is_dir() => {
                return Err(fail(&format!("{} is not a directory", path.display())))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let made = if last && !dir {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map(drop)
                } else {
                    DirBuilder::new().mode(0o755).create(&path)
                };
                made.map_err(|e| fail(&e))?;
            }
            Err(e) => return Err(fail(&e)),
        }
    }
    Ok(path)
}
