//! Registry manifests, indexes and image configs (`src/registry/manifest.rs`):
//! what a pull reads from a registry it does not trust.

use imgrep::registry::manifest::{self, Config, Document};

pub fn run(data: &[u8]) {
    // A Content-Type header, then the body.
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    if let Ok(doc) = serde_json::from_slice::<Document>(body) {
        let media_type = manifest::media_type(header, &doc);
        if let Some(h) = header {
            let plain = h.split(';').next().unwrap_or(h).trim();
            if manifest::is_image(plain) || manifest::is_index(plain) {
                assert_eq!(media_type.as_deref(), Some(plain));
            }
        }
        if let Some(d) = manifest::pick_platform(&doc) {
            let p = d.platform.as_ref().expect("picked entries have a platform");
            assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "amd64"));
        }
    }
    let _ = serde_json::from_slice::<Config>(body);
}
