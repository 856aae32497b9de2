//! `manifest.json`, the last entry: what is in the bundle, what failed, what was cut.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    pub format_version: u32,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// True when the collection was stopped (Ctrl-C, deadline) before every source ended.
    pub interrupted: bool,
    /// Every entry of the archive except the header and this manifest, in archive order.
    pub files: Vec<FileRecord>,
    /// One record per source that was asked for, including the ones that failed.
    pub sources: Vec<SourceRecord>,
    /// How many values each redaction rule replaced, by rule name.
    pub redactions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileRecord {
    pub path: String,
    /// Size in bytes as stored in the archive (after any cut).
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// Number of records (lines for `.ndjson` and `.log`, series for Prometheus
    /// responses, items for JSON documents), when the writer counted them.
    pub records: Option<u64>,
    /// True when the content was cut to a budget; `truncation` says how.
    pub truncated: bool,
    pub truncation: Option<Truncation>,
    /// Name of the source that wrote this file (see [`SourceRecord::name`]).
    pub source: String,
}

/// How a file was cut. Logs keep their tail: the newest lines matter most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Truncation {
    /// Bytes the source produced before the cut.
    pub original_bytes: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
    /// Which end was kept: `tail` or `head`.
    pub kept: String,
    /// The budget that caused the cut, e.g. `max-log-bytes=8MiB`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SourceRecord {
    /// `kubernetes`, `prometheus`, `postgres/<target>` or `neo4j/<target>`.
    pub name: String,
    pub kind: SourceKind,
    pub status: SourceStatus,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Objects, series, rows or lines collected, whatever the source's unit is.
    pub items: u64,
    /// Headline and causes, one line each, when the status is not `ok`.
    pub error: Option<String>,
    /// Parts of a source that can fail alone (one Kubernetes resource, one PromQL query,
    /// one sample round), so that a partial source says exactly what is missing.
    pub parts: Vec<PartRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PartRecord {
    pub name: String,
    pub status: SourceStatus,
    pub items: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Kubernetes,
    Prometheus,
    Postgres,
    Neo4j,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// Everything asked for was collected.
    Ok,
    /// Some parts were collected and some failed; see `parts`.
    Partial,
    /// Authentication or authorization refused (HTTP 401/403, PostgreSQL auth failure).
    Forbidden,
    /// The source did not answer within its deadline.
    Timeout,
    /// Connection refused, DNS failure, TLS failure.
    Unreachable,
    /// The server answered but does not offer what was asked (API not served, old
    /// version).
    Unsupported,
    /// The server answered with something that could not be parsed.
    Malformed,
    /// Stopped because a byte or time budget ran out; what was gathered is kept.
    OverBudget,
    /// Stopped by Ctrl-C or a signal; what was gathered is kept.
    Interrupted,
    /// Not asked for, or nothing to collect from (no target configured).
    Skipped,
    /// Any other failure; the error text says what.
    Failed,
}

impl SourceStatus {
    /// Whether this status means nothing is missing.
    pub fn is_complete(self) -> bool {
        matches!(self, SourceStatus::Ok | SourceStatus::Skipped)
    }
}
