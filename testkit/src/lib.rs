//! Real servers, a replayed cluster and the incident scenario, for sitrep's tests and demo.
//!
//! Everything listens on 127.0.0.1 only and is torn down when its guard is dropped.

pub mod http;
pub mod k8s;
pub mod neo4j;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod replay;
pub mod scenario;
pub mod sessions;
