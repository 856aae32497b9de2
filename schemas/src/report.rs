//! The report `sitrep-analyze --format json` prints: findings, problems, timeline.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::SourceRecord;
use crate::{ToolInfo, Window};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// See [`crate::REPORT_VERSION`].
    pub report_version: u32,
    pub tool: ToolInfo,
    pub bundle: BundleSummary,
    /// Most severe first, then by start time.
    pub findings: Vec<Finding>,
    /// Parts of the bundle that could not be read; each names the file and, where it
    /// applies, the line or field.
    pub problems: Vec<Problem>,
    /// Rollouts, restarts and findings in time order.
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BundleSummary {
    pub path: String,
    pub format_version: u32,
    pub created_at: DateTime<Utc>,
    pub collector: ToolInfo,
    pub context: Option<String>,
    pub window: Window,
    /// The manifest's source records, so a reader sees what was missing.
    pub sources: Vec<SourceRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// Stable within a bundle, e.g. `rollout_regression/shop/checkout/4`.
    pub id: String,
    pub severity: Severity,
    pub confidence: Confidence,
    /// One line a person reads first.
    pub title: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub subject: Subject,
    pub detail: Detail,
    /// Rows that support the finding, newest last.
    pub evidence: Vec<Evidence>,
    /// Commands to run next, most useful first.
    pub next_steps: Vec<String>,
}

impl Finding {
    pub fn kind(&self) -> &'static str {
        self.detail.kind()
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Confidence {
    pub level: ConfidenceLevel,
    /// 0 to 1.
    pub score: f64,
    /// Why the level is what it is, one reason a line.
    pub reasons: Vec<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceLevel {
    Low,
    Medium,
    High,
}

/// What a finding is about. Only the fields that apply are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Subject {
    pub namespace: Option<String>,
    pub deployment: Option<String>,
    pub revision: Option<i64>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub service: Option<String>,
    /// A database target, as named in the bundle (`postgres/<target>`).
    pub target: Option<String>,
    pub pid: Option<i32>,
    pub query_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    pub ts: Option<DateTime<Utc>>,
    /// Bundle entry the row came from.
    pub file: String,
    pub text: String,
}

/// The numbers behind a finding, one shape per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    RolloutRegression(RolloutRegression),
    Oom(Oom),
    TimeoutBurst(TimeoutBurst),
    SlowQuery(SlowQuery),
}

impl Detail {
    pub fn kind(&self) -> &'static str {
        match self {
            Detail::RolloutRegression(_) => "rollout_regression",
            Detail::Oom(_) => "oom",
            Detail::TimeoutBurst(_) => "timeout_burst",
            Detail::SlowQuery(_) => "slow_query",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutRegression {
    pub namespace: String,
    pub deployment: String,
    pub from_revision: Option<i64>,
    pub to_revision: i64,
    pub from_image: Option<String>,
    pub to_image: Option<String>,
    pub rollout_at: DateTime<Utc>,
    /// `regressed`, or `insufficient_data` when either side had fewer points than the
    /// minimum (then nothing is claimed).
    pub verdict: RolloutVerdict,
    pub latency: Option<LatencyComparison>,
    pub errors: Option<ErrorComparison>,
    /// What differs between the two revisions' pod templates, one change a line.
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutVerdict {
    Regressed,
    InsufficientData,
}

/// Per-minute p99 before and after a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencyComparison {
    pub quantile: f64,
    /// Median of the per-minute values on each side, in milliseconds.
    pub before_ms: f64,
    pub after_ms: f64,
    /// `after_ms / before_ms`.
    pub ratio: f64,
    /// Hodges–Lehmann shift (after − before) and its confidence interval, ms.
    pub shift_ms: f64,
    pub shift_ci_ms: (f64, f64),
    /// Two-sided Mann–Whitney p-value.
    pub p_value: f64,
    pub n_before: u32,
    pub n_after: u32,
}

/// 5xx ratio before and after a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorComparison {
    pub before_ratio: f64,
    pub after_ratio: f64,
    pub before_errors: f64,
    pub before_requests: f64,
    pub after_errors: f64,
    pub after_requests: f64,
    /// Two-proportion test p-value (one-sided, after > before).
    pub p_value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Oom {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub init_container: bool,
    /// `oom_killed` (the kubelet said so), `exit_137` (killed by SIGKILL, maybe OOM),
    /// or `node_oom` (the node reported a system OOM).
    pub evidence: OomEvidence,
    pub exit_code: Option<i32>,
    pub memory_limit: Option<String>,
    pub memory_limit_bytes: Option<u64>,
    pub restart_count: Option<i32>,
    pub finished_at: Option<DateTime<Utc>>,
    pub node: Option<String>,
    /// Why, when the bundle shows it, e.g. the limit was lowered by a rollout.
    pub cause: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OomEvidence {
    OomKilled,
    Exit137,
    NodeOom,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimeoutBurst {
    pub namespace: Option<String>,
    pub service: String,
    /// First and last minute of the burst (minute starts).
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub peak_minute: DateTime<Utc>,
    pub peak_count: u64,
    pub total: u64,
    /// The service's own usual count per minute outside the burst.
    pub baseline_per_minute: f64,
    pub signatures: Vec<SignatureCount>,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignatureCount {
    /// Lexicon entry name, e.g. `go_context_deadline`, `postgres_statement_timeout`.
    pub signature: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SlowQuery {
    pub engine: DbEngine,
    pub target: String,
    pub problem: QueryProblem,
    /// PostgreSQL backend pid.
    pub pid: Option<i32>,
    /// Neo4j transaction or query id.
    pub query_id: Option<String>,
    /// How long the query (or, when idle in transaction, the transaction) had run at
    /// the last sample that saw it.
    pub duration_seconds: f64,
    pub state: Option<String>,
    pub wait_event: Option<String>,
    pub blocked_by: Vec<i32>,
    /// Backends waiting on this one.
    pub blocking: Vec<i32>,
    pub user: Option<String>,
    pub application: Option<String>,
    pub database: Option<String>,
    pub query: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DbEngine {
    Postgres,
    Neo4j,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryProblem {
    /// Active longer than the threshold.
    LongRunning,
    /// A transaction open with nothing running.
    IdleInTransaction,
    /// Waiting on a lock held by `blocked_by`.
    LockWait,
    /// Holding a lock that others wait on.
    LockHolder,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// Bundle entry, or the bundle itself when the archive is unreadable.
    pub file: String,
    pub line: Option<u64>,
    pub field: Option<String>,
    /// Headline and causes.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEvent {
    pub ts: DateTime<Utc>,
    /// `rollout`, `restart`, `event`, or a finding kind.
    pub kind: String,
    pub text: String,
    /// The finding this entry belongs to, by id.
    pub finding: Option<String>,
}
