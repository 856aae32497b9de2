//! `--format json`: the `sitrep_schemas::report::Report`, pretty-printed.

use std::io::{self, Write};

use sitrep_schemas::report::Report;

pub(crate) fn write(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}
