//! `postgres/<target>/activity.ndjson` → the `pg_activity` rows.
//!
//! Each line is a `pg_stat_activity` row plus the sample stamps. Only the columns the
//! detectors use are read; the many others the server has are ignored.

use std::io::BufRead;

use sitrep_schemas::records::PgActivityRow;
use sitrep_schemas::report::Problem;

use super::ndjson;

#[derive(Debug, Clone)]
pub(crate) struct PgRow {
    pub(crate) target: String,
    pub(crate) file: String,
    pub(crate) row: PgActivityRow,
}

pub(crate) fn read_activity(
    path: &str,
    target: &str,
    reader: &mut dyn BufRead,
    problems: &mut Vec<Problem>,
) -> Vec<PgRow> {
    ndjson::<PgActivityRow>(path, reader, problems)
        .into_iter()
        .map(|(_, row)| PgRow {
            target: target.to_owned(),
            file: path.to_owned(),
            row,
        })
        .collect()
}
