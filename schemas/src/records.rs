//! Shapes of the records the collector writes and the analyzer relies on.
//!
//! Raw data stays raw: Kubernetes objects and Prometheus responses are stored as the
//! servers sent them and are not modelled here. What is modelled is what sitrep itself
//! adds or assembles: the query log, the sample stamps, the server descriptions. Readers
//! ignore fields they do not know, so the collector may store more than is listed.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Window;
use crate::manifest::SourceStatus;

/// `prometheus/queries.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromQueryLog {
    pub url: String,
    pub window: Window,
    pub queries: Vec<PromQuery>,
}

/// One named PromQL query and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromQuery {
    /// Stable name, e.g. `latency_p99`; the analyzer finds queries by name.
    pub name: String,
    pub promql: String,
    pub step_seconds: u64,
    pub status: SourceStatus,
    pub error: Option<String>,
    /// Response files in time order (more than one when the range was split).
    pub files: Vec<String>,
    pub series: u64,
    pub points: u64,
}

/// `postgres/<target>/server.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PgServer {
    /// The target with any password removed.
    pub target: String,
    /// `server_version_num`, e.g. 150004.
    pub version_num: i32,
    /// `version()`.
    pub version: String,
    /// The settings that shape what `pg_stat_activity` shows, by name, as
    /// `current_setting` returned them (`track_activity_query_size`,
    /// `statement_timeout`, `idle_in_transaction_session_timeout`, `lock_timeout`,
    /// `deadlock_timeout`, `max_connections`, `track_activities`).
    pub settings: std::collections::BTreeMap<String, String>,
    pub samples: u32,
    pub interval_ms: u64,
}

/// One line of `postgres/<target>/activity.ndjson`: every column of `pg_stat_activity`
/// that the server has (as `to_jsonb` renders it), plus the fields below. Only the
/// columns the analyzer uses are named here; the rest are kept in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PgActivityRow {
    /// Which sample round this row belongs to, from 1.
    pub sample: u32,
    /// The server's `clock_timestamp()` when the round was taken.
    pub sample_ts: DateTime<Utc>,
    /// `pg_blocking_pids(pid)`.
    pub blocked_by: Vec<i32>,
    pub pid: i32,
    pub datname: Option<String>,
    pub usename: Option<String>,
    pub application_name: Option<String>,
    pub backend_type: Option<String>,
    pub state: Option<String>,
    pub wait_event_type: Option<String>,
    pub wait_event: Option<String>,
    pub backend_start: Option<DateTime<Utc>>,
    pub xact_start: Option<DateTime<Utc>>,
    pub query_start: Option<DateTime<Utc>>,
    pub state_change: Option<DateTime<Utc>>,
    pub query: Option<String>,
}

/// `neo4j/<target>/server.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Neo4jServer {
    /// The endpoint with any credentials removed.
    pub target: String,
    /// From `dbms.components()`, e.g. `5.26.0`.
    pub version: Option<String>,
    pub edition: Option<String>,
    /// Which listing answered.
    pub listing: Neo4jListing,
    pub samples: u32,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Neo4jListing {
    /// `SHOW TRANSACTIONS YIELD *` (5.x); kill with `TERMINATE TRANSACTION 'id'`.
    ShowTransactions,
    /// `CALL dbms.listQueries()` (4.x); kill with `CALL dbms.killQuery('id')`.
    ListQueries,
}

/// The stamps the collector adds to each line of `neo4j/<target>/transactions.ndjson`.
/// The rest of the line is the row as the server returned it, column name to value
/// (`transactionId`, `currentQuery`, `elapsedTime`, … for `SHOW TRANSACTIONS`;
/// `queryId`, `query`, `elapsedTimeMillis`, … for `dbms.listQueries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Neo4jSampleStamp {
    pub sample: u32,
    /// The collector's clock when the round's answer arrived.
    pub sample_ts: DateTime<Utc>,
}
