//! Real servers, a replayed cluster and the incident scenario, for sitrep's tests and demo.
//!
//! Everything listens on 127.0.0.1 only and is torn down when its guard is dropped:
//!
//! - [`postgres::Postgres`] starts a private PostgreSQL cluster with password auth;
//!   [`sessions::Sessions`] opens the scenario's lock-holding, waiting and idle sessions
//!   on it.
//! - [`prometheus::Prometheus`] backfills the scenario's metric history and serves it.
//! - [`replay::Replay`] serves the scenario's Kubernetes API and Neo4j endpoint and
//!   writes a kubeconfig for them.
//! - [`http::MockServer`] answers with a test's own handler, on the same HTTP code as
//!   the replay, and records the requests it answered.
//! - [`scenario::Scenario`] is `testdata/scenarios/incident.toml`; every part renders
//!   from it, anchored at a moment `T` of the caller's choosing (usually now).
//!
//! The servers run on threads of their own, so a test may block on a child process
//! (the collector, say) while they answer. A server that cannot start is an error,
//! never a skipped test.

pub mod http;
pub mod k8s;
pub mod neo4j;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod replay;
pub mod scenario;
pub mod sessions;
