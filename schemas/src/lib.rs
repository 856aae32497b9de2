//! The bundle contract shared by `sitrep-collect` and `sitrep-analyze`.
//!
//! This crate is pure data: entry paths, the header and manifest, the record shapes the
//! analyzer relies on, the JSON report, and the exit codes of both binaries. It does no
//! I/O. Any change to a serialized type is a change to the bundle or report format and
//! must bump [`FORMAT_VERSION`] or [`REPORT_VERSION`] when a reader would care.

pub mod exit;
pub mod header;
pub mod json_schema;
pub mod manifest;
pub mod paths;
pub mod records;
pub mod report;

/// Version of the bundle layout. A reader refuses a bundle whose version it does not know.
pub const FORMAT_VERSION: u32 = 1;

/// Version of the JSON report printed by `sitrep-analyze --format json`.
pub const REPORT_VERSION: u32 = 1;

/// Name and version of the program that wrote a bundle or a report.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

/// The collection window: everything in the bundle is about `[start, end]`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Window {
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
}
