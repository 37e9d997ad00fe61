//! Developer tasks: `cargo xtask ci`, `cargo xtask bench <name>`.

use anyhow::{bail, Result};

mod bench_layers;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        _ => bail!("usage: cargo xtask ci | cargo xtask bench <sandbox|layers|cache|stage0>"),
    }
}

fn ci() -> Result<()> {
    bail!("ci: not assembled yet")
}

fn bench(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("layers") => bench_layers::run(&args[1..]),
        other => bail!("unknown benchmark {other:?}"),
    }
}
