//! `imgrep doctor`: what this host supports, and what imgrep does about
//! each missing part.

use anyhow::Result;

use super::{Global, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(global: &Global, _args: Args) -> Result<Outcome> {
    let store = crate::store::Store::default_root(global.store.as_deref())?;
    let findings = crate::doctor::probe(&store);
    if global.json {
        super::print(&format!("{}\n", serde_json::to_string_pretty(&findings)?))?;
    } else {
        for f in &findings {
            let mark = if f.ok {
                "ok  "
            } else if f.required {
                "FAIL"
            } else {
                "warn"
            };
            println!("{mark} {:<30} {}", f.feature, f.detail);
            if !f.consequence.is_empty() {
                println!("     {:<30} -> {}", "", f.consequence);
            }
        }
    }
    Ok(if findings.iter().any(|f| f.required && !f.ok) {
        Outcome::CheckFailed
    } else {
        Outcome::Success
    })
}
