//! Canonical JSON: object keys sorted byte-wise, no insignificant whitespace.
//!
//! Every JSON document imgrep digests (OCI configs, manifests, indexes,
//! statements) goes through here, so a digest never depends on a
//! serializer's field or hash-map order. serde_json's `Value` keeps objects in
//! a `BTreeMap` (the `preserve_order` feature must stay off), which sorts keys.

use serde::Serialize;

/// Serializes `value` canonically.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn keys_sorted_without_whitespace() {
        let mut m = HashMap::new();
        for k in ["zeta", "alpha", "Mid", "beta"] {
            m.insert(k, vec![1, 2]);
        }
        let out = String::from_utf8(super::to_vec(&m).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"Mid":[1,2],"alpha":[1,2],"beta":[1,2],"zeta":[1,2]}"#
        );
    }
}
