//! The one place imgrep prints warnings that libraries return to it (the
//! sandbox's, in `sandbox::Report::warnings`): each distinct one once per
//! process, so that a build of many steps says "no limits" once.

use std::collections::HashSet;
use std::sync::Mutex;

/// Print `warning` on stderr unless this process printed it already.
pub fn once(warning: &str) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(warning.to_owned())
    {
        eprintln!("imgrep: warning: {warning}");
    }
}
