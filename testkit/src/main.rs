//! `sitrep-testkit`: serves the incident scenario from real and replayed parts.

fn main() {}
