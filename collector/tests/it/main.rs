//! Integration tests: the real `sitrep-collect` binary against mock HTTP servers on
//! 127.0.0.1 and a real PostgreSQL.

mod common;
mod kubernetes;
mod lifecycle;
mod neo4j;
mod postgres;
mod prometheus;
