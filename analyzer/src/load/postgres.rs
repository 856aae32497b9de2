//! `postgres/<target>/activity.ndjson` → the `pg_activity` table.
//!
//! Each line is a `pg_stat_activity` row plus the sample stamps. Only the columns the
//! detectors use are read; the many others the server has are ignored.

use std::io::BufRead;

use polars::prelude::*;
use sitrep_schemas::records::PgActivityRow;
use sitrep_schemas::report::Problem;

use super::{ndjson, times_column};

/// One parsed line, kept until the entry is verified.
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

/// The `pg_activity` table, sorted by target, pid and sample time. The sort is stable, so
/// rows of one backend with the same `sample_ts` keep their order in the file.
///
/// Times are in microseconds: that is PostgreSQL's own precision, so no age computed from
/// them differs from one computed on the server, and every date the rows can hold fits.
pub(crate) fn frame(mut rows: Vec<PgRow>) -> DataFrame {
    rows.sort_by(|a, b| {
        (&a.target, a.row.pid, a.row.sample_ts).cmp(&(&b.target, b.row.pid, b.row.sample_ts))
    });

    let micros = |time: Option<chrono::DateTime<chrono::Utc>>| time.map(|t| t.timestamp_micros());
    let text = |field: fn(&PgActivityRow) -> &Option<String>| {
        rows.iter()
            .map(|r| field(&r.row).clone())
            .collect::<Vec<_>>()
    };
    let blocked_by: Vec<Series> = rows
        .iter()
        .map(|r| Series::new(PlSmallStr::EMPTY, r.row.blocked_by.as_slice()))
        .collect();
    let blocked_by = Column::new("blocked_by".into(), blocked_by)
        .cast(&DataType::List(Box::new(DataType::Int32)))
        .expect("lists of pids cast to lists of i32");
    DataFrame::new_infer_height(vec![
        times_column(
            "sample_ts",
            TimeUnit::Microseconds,
            rows.iter().map(|r| micros(Some(r.row.sample_ts))).collect(),
        ),
        Column::new(
            "target".into(),
            rows.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "pid".into(),
            rows.iter().map(|r| r.row.pid).collect::<Vec<_>>(),
        ),
        Column::new(
            "sample".into(),
            rows.iter().map(|r| r.row.sample).collect::<Vec<_>>(),
        ),
        Column::new("backend_type".into(), text(|r| &r.backend_type)),
        Column::new("state".into(), text(|r| &r.state)),
        Column::new("wait_event_type".into(), text(|r| &r.wait_event_type)),
        Column::new("wait_event".into(), text(|r| &r.wait_event)),
        times_column(
            "query_start",
            TimeUnit::Microseconds,
            rows.iter().map(|r| micros(r.row.query_start)).collect(),
        ),
        times_column(
            "xact_start",
            TimeUnit::Microseconds,
            rows.iter().map(|r| micros(r.row.xact_start)).collect(),
        ),
        Column::new("application_name".into(), text(|r| &r.application_name)),
        Column::new("usename".into(), text(|r| &r.usename)),
        Column::new("datname".into(), text(|r| &r.datname)),
        blocked_by,
        Column::new("query".into(), text(|r| &r.query)),
        Column::new(
            "file".into(),
            rows.iter().map(|r| r.file.as_str()).collect::<Vec<_>>(),
        ),
    ])
    .expect("columns have equal length")
}
