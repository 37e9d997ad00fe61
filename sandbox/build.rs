//! Compiles the system-call filter's policy (src/seccomp/policy.rs) to BPF
//! once per build, for each of the 2^6 combinations of relaxed groups, into
//! $OUT_DIR/seccomp-N.bpf, and writes $OUT_DIR/seccomp.rs, which embeds them:
//! a sandbox start only copies its program out of the binary.

use std::fmt::Write as _;
use std::path::Path;

#[path = "src/seccomp/policy.rs"]
mod policy;

fn main() {
    println!("cargo:rerun-if-changed=src/seccomp/policy.rs");
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // The policy adds i386 to the native ABI: the build host's must be the
    // target's, x86_64.
    assert!(
        target == "x86_64" && libseccomp::ScmpArch::native() == libseccomp::ScmpArch::X8664,
        "the seccomp filter is written for x86_64 hosts and targets (target: {target})"
    );
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    let mut table = String::new();
    writeln!(
        table,
        "/// `GROUPS[i]` relaxed in program `PROGRAMS[m]` when bit i of m is set.\n\
         pub(crate) const GROUPS: [&str; {}] = {:?};\n\
         pub(crate) static PROGRAMS: [&[u8]; {}] = [",
        policy::GROUPS.len(),
        policy::GROUPS,
        1 << policy::GROUPS.len()
    )
    .unwrap();
    for mask in 0..1u32 << policy::GROUPS.len() {
        let allow: Vec<&str> = (0..policy::GROUPS.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| policy::GROUPS[i])
            .collect();
        let ctx = policy::policy(&allow)
            .unwrap_or_else(|e| panic!("seccomp policy with {allow:?} relaxed: {e}"));
        let path = out.join(format!("seccomp-{mask}.bpf"));
        let file = std::fs::File::create(&path).expect("create a file in OUT_DIR");
        ctx.export_bpf(&file)
            .unwrap_or_else(|e| panic!("export the seccomp filter: {e}"));
        drop(file);
        let len = std::fs::metadata(&path).expect("exported filter").len();
        // struct sock_filter is 8 bytes; the kernel takes at most 4096 of them.
        assert!(
            len > 0 && len % 8 == 0 && len / 8 <= 4096,
            "libseccomp exported {len} bytes, not a BPF program"
        );
        writeln!(
            table,
            "    include_bytes!({:?}),",
            path.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    std::fs::write(out.join("seccomp.rs"), table).expect("write seccomp.rs");
}
