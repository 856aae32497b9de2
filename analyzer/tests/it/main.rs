//! Runs the real `sitrep-analyze` binary on bundles built by the tests.

mod archive;
mod incident;
mod support;
