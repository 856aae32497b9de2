//! Runs the real `sitrep-analyze` binary on bundles built by the tests.

mod archive;
mod demo_bundle;
mod incident;
mod support;
