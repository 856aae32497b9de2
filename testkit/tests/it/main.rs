//! Integration tests of the test kit against the real servers it starts.

mod e2e;
mod postgres;
mod prometheus;
mod replay;
mod sessions;
