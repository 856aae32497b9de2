//! JSON Schema documents for the manifest and the report, generated from the types.
//!
//! The generated files are checked in under `schemas/json/` so that people and other
//! tools can validate bundles without Rust. A test keeps them in step with the types;
//! run it with `SITREP_BLESS=1` to rewrite them after a deliberate change.

use schemars::schema_for;

use crate::header::BundleHeader;
use crate::manifest::Manifest;
use crate::report::Report;

/// `(file name, pretty JSON)` for every checked-in schema.
pub fn documents() -> Vec<(&'static str, String)> {
    let render = |schema: schemars::Schema| {
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
        text.push('\n');
        text
    };
    vec![
        ("header.schema.json", render(schema_for!(BundleHeader))),
        ("manifest.schema.json", render(schema_for!(Manifest))),
        ("report.schema.json", render(schema_for!(Report))),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn checked_in_schemas_match_the_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
        let bless = std::env::var_os("SITREP_BLESS").is_some();
        for (name, text) in super::documents() {
            let path = dir.join(name);
            if bless {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == text,
                "{} is out of date; rerun with SITREP_BLESS=1",
                path.display()
            );
        }
    }
}
