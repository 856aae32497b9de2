//! Real servers, a replayed cluster and the incident scenario, for sitrep's tests and demo.
//!
//! Everything listens on 127.0.0.1 only and is torn down when its guard is dropped.

pub mod postgres;
pub mod process;
