//! The verification policy (`src/sign/policy.rs`).

use std::fs;

use imgrep::sign::policy::Policy;

use crate::scratch;

pub fn run(data: &[u8]) {
    let path = scratch::fresh("policy").join("policy.toml");
    fs::write(&path, data).unwrap();
    let Ok(policy) = Policy::load(&path) else {
        return;
    };
    assert!(
        policy.threshold >= 1,
        "accepted threshold {}",
        policy.threshold
    );
    policy
        .check("fuzz")
        .expect("a loaded policy passes its own check");
    let text = toml::to_string(&policy).unwrap();
    fs::write(&path, &text).unwrap();
    let again = Policy::load(&path).unwrap_or_else(|e| panic!("{text}\ndoes not load back: {e}"));
    assert_eq!(again, policy);
}
