//! The SBOM: an SPDX 2.3 JSON document naming every package whose layer the
//! image holds, each with its version, declared license, purl, download
//! location and the pins of the sources it was built from.
//!
//! Deterministic by construction: the only time in it is the image's
//! SOURCE_DATE_EPOCH, the namespace is derived from the image's manifest
//! digest, and every list is in a fixed order.

use serde_json::{json, Value};

use super::{deb_purl, spdx_download_location, Part, Subject};
use crate::recipe::{Kind, Pin};

const NOASSERTION: &str = "NOASSERTION";

/// The SPDX document of `subject`, whose layers are those of `parts` (in
/// layer order), as canonical JSON bytes.
pub fn document(subject: &Subject, parts: &[Part], source_date_epoch: i64) -> Vec<u8> {
    let image_id = "SPDXRef-Image".to_owned();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": subject.name,
        "versionInfo": subject.version,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [purl(&format!(
            "pkg:oci/{}@sha256%3A{}?tag={}",
            subject.name,
            subject.manifest.hex(),
            subject.version
        ))],
    })];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", &image_id)];
    for part in parts {
        let r = part.recipe;
        let id = spdx_id("Package", &r.name, None);
        let mut pkg = json!({
            "SPDXID": id,
            "name": r.name,
            "versionInfo": r.version,
            "downloadLocation": r.sources.iter().find_map(spdx_download_location).unwrap_or(NOASSERTION),
            "filesAnalyzed": false,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": license(r.license.as_deref()),
            "copyrightText": NOASSERTION,
            // The uncompressed layer (its diff_id) is this package's file.
            "checksums": part.diff_ids.iter().map(|d| json!({
                "algorithm": "SHA256", "checksumValue": d.hex(),
            })).collect::<Vec<_>>(),
            "externalRefs": [purl(&format!("pkg:generic/{}@{}", r.name, r.version))],
            "comment": format!(
                "Built by imgrep from the recipe {}; input digest {}; image {}",
                r.name, part.input, part.manifest
            ),
        });
        if let Some(home) = &r.homepage {
            pkg["homepage"] = json!(home);
        }
        if let Some(desc) = &r.description {
            pkg["summary"] = json!(desc);
        }
        if r.license.is_some() && license(r.license.as_deref()) == NOASSERTION {
            pkg["licenseComments"] = json!(format!(
                "The recipe's license field is not an SPDX expression: {}",
                r.license.as_deref().unwrap_or_default()
            ));
        }
        packages.push(pkg);
        relationships.push(relationship(&image_id, "CONTAINS", &id));
        for (i, s) in r.sources.iter().enumerate() {
            let sid = spdx_id("Source", &r.name, Some(i));
            let file = s.file_name();
            let mut src = json!({
                "SPDXID": sid,
                "name": file,
                "versionInfo": r.version,
                "downloadLocation": spdx_download_location(s).unwrap_or(NOASSERTION),
                "filesAnalyzed": false,
                "licenseConcluded": NOASSERTION,
                "licenseDeclared": NOASSERTION,
                "copyrightText": NOASSERTION,
                "primaryPackagePurpose": "SOURCE",
            });
            match &s.pin {
                Pin::Sha256(d) => {
                    src["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": d.hex() }]);
                }
                Pin::Tree(_) => {
                    src["sourceInfo"] = json!(format!(
                        "pinned by the Nix NAR sha256 of its unpacked tree: {}",
                        s.pin.to_recipe_string()
                    ));
                }
            }
            let deb = (r.kind == Kind::Debs).then(|| deb_purl(file)).flatten();
            if let Some(p) = deb {
                src["externalRefs"] = json!([purl(&p)]);
            }
            if let Some(path) = &s.path {
                src["comment"] = json!(format!("a file of the recipe tree: {path}"));
            }
            packages.push(src);
            relationships.push(relationship(&id, "GENERATED_FROM", &sid));
        }
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", subject.name, subject.version),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/imgrep/{}-{}-{}",
            subject.name, subject.version, subject.manifest.hex()
        ),
        "creationInfo": {
            "created": crate::oci::rfc3339(source_date_epoch),
            "creators": ["Tool: imgrep"],
        },
        "packages": packages,
        "relationships": relationships,
    });
    crate::canonical::to_vec(&doc).expect("an SPDX document serializes")
}

fn purl(locator: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    })
}

fn relationship(a: &str, kind: &str, b: &str) -> Value {
    json!({ "spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b })
}

/// `SPDXRef-<kind>-<name>[-<i>]` with every character SPDX ids do not allow
/// (`[A-Za-z0-9.-]` only) written as `-`.
fn spdx_id(kind: &str, name: &str, index: Option<usize>) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    match index {
        Some(i) => format!("SPDXRef-{kind}-{clean}-{i}"),
        None => format!("SPDXRef-{kind}-{clean}"),
    }
}

/// The recipe's license if it is an SPDX license expression by its grammar
/// (ids, `LicenseRef-`, AND, OR, WITH, parentheses), else NOASSERTION.
/// Whether each id is on the SPDX list is checked by the validator in the
/// tests (tests/attest.rs), over every recipe of the tree.
fn license(text: Option<&str>) -> &str {
    let Some(text) = text else { return NOASSERTION };
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let is_id = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
            && !matches!(t, "AND" | "OR" | "WITH")
    };
    // expr := term (AND|OR term)*; term := id [WITH id] | ( expr )
    fn expr<'a>(t: &[&'a str], i: &mut usize, is_id: &dyn Fn(&str) -> bool) -> bool {
        loop {
            match t.get(*i) {
                Some(&"(") => {
                    *i += 1;
                    if !expr(t, i, is_id) || t.get(*i) != Some(&")") {
                        return false;
                    }
                    *i += 1;
                }
                Some(id) if is_id(id) => {
                    *i += 1;
                    if t.get(*i) == Some(&"WITH") {
                        *i += 1;
                        if !t.get(*i).is_some_and(|x| is_id(x)) {
                            return false;
                        }
                        *i += 1;
                    }
                }
                _ => return false,
            }
            match t.get(*i) {
                Some(&"AND") | Some(&"OR") => *i += 1,
                _ => return true,
            }
        }
    }
    let mut i = 0;
    if !tokens.is_empty() && expr(&tokens, &mut i, &is_id) && i == tokens.len() {
        text
    } else {
        NOASSERTION
    }
}

#[cfg(test)]
mod tests {
    use super::license;

    #[test]
    fn license_expressions() {
        for ok in [
            "MIT",
            "GPL-3.0-or-later",
            "(MIT OR Apache-2.0) AND bzip2-1.0.6",
            "GPL-2.0-only WITH Linux-syscall-note",
            "LicenseRef-x",
        ] {
            assert_eq!(license(Some(ok)), ok);
        }
        for bad in ["various: see usr/share/doc", "MIT OR", "(MIT", "AND", ""] {
            assert_eq!(license(Some(bad)), "NOASSERTION", "{bad}");
        }
    }
}
