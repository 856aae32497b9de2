//! `neo4j/<target>/transactions.ndjson` → the `neo4j_tx` table.
//!
//! Neo4j 5.x (`SHOW TRANSACTIONS`) and 4.x (`dbms.listQueries`) name their columns
//! differently; both are read into one shape here. Over the HTTP API a 5.x duration is
//! rendered as an ISO-8601 string such as `PT12.5S`.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use polars::prelude::*;
use serde_json::Value;
use sitrep_schemas::records::Neo4jListing;
use sitrep_schemas::report::Problem;

use super::{column_texts, column_times, line_problem, ndjson, parse_time, times_column};

/// One transaction as one sample saw it: a parsed line, and a row of the table read back.
#[derive(Debug, Clone)]
pub(crate) struct Neo4jTx {
    pub(crate) target: String,
    pub(crate) file: String,
    pub(crate) sample_ts: DateTime<Utc>,
    pub(crate) id: String,
    /// Which listing the row's column names say it came from.
    pub(crate) listing: Neo4jListing,
    pub(crate) status: Option<String>,
    pub(crate) elapsed_seconds: f64,
    /// Time spent waiting on locks, when the listing says and says it legibly.
    pub(crate) wait_seconds: Option<f64>,
    pub(crate) query: String,
    pub(crate) user: Option<String>,
    pub(crate) database: Option<String>,
}

pub(crate) fn read_transactions(
    path: &str,
    target: &str,
    reader: &mut dyn BufRead,
    problems: &mut Vec<Problem>,
) -> Vec<Neo4jTx> {
    let mut out = Vec::new();
    for (number, row) in ndjson::<Value>(path, reader, problems) {
        match transaction(path, target, &row) {
            Ok(tx) => out.push(tx),
            Err(field) => problems.push(line_problem(
                path,
                number,
                Some(field),
                format!("`{field}` is missing or malformed"),
            )),
        }
    }
    out
}

fn transaction(path: &str, target: &str, row: &Value) -> Result<Neo4jTx, &'static str> {
    let text = |key: &str| row.get(key).and_then(Value::as_str).map(str::to_owned);
    let sample_ts = text("sample_ts")
        .as_deref()
        .and_then(parse_time)
        // The table keeps the collector's nanoseconds, which reach from 1677 to 2262.
        .filter(|time| time.timestamp_nanos_opt().is_some())
        .ok_or("sample_ts")?;
    let (listing, id, query, elapsed_seconds) = if let Some(id) = text("transactionId") {
        let elapsed = row.get("elapsedTime").ok_or("elapsedTime")?;
        let seconds = duration_value_seconds(elapsed).ok_or("elapsedTime")?;
        let query = text("currentQuery").unwrap_or_default();
        (Neo4jListing::ShowTransactions, id, query, seconds)
    } else if let Some(id) = text("queryId") {
        let millis = row
            .get("elapsedTimeMillis")
            .and_then(Value::as_f64)
            .ok_or("elapsedTimeMillis")?;
        let query = text("query").unwrap_or_default();
        (Neo4jListing::ListQueries, id, query, millis / 1000.0)
    } else {
        return Err("transactionId");
    };
    // Only shown, never judged: an unreadable wait time costs the row nothing.
    let wait_seconds = match listing {
        Neo4jListing::ShowTransactions => row.get("waitTime").and_then(duration_value_seconds),
        Neo4jListing::ListQueries => row
            .get("waitTimeMillis")
            .and_then(Value::as_f64)
            .map(|ms| ms / 1000.0),
    };
    let duration_field = match listing {
        Neo4jListing::ShowTransactions => "elapsedTime",
        Neo4jListing::ListQueries => "elapsedTimeMillis",
    };
    // The detectors place a transaction at `sample_ts - elapsed`; a duration longer than
    // any date can go back (or NaN) has no start, so the row is refused here.
    if start_of(sample_ts, elapsed_seconds).is_none() {
        return Err(duration_field);
    }
    Ok(Neo4jTx {
        target: target.to_owned(),
        file: path.to_owned(),
        sample_ts,
        id,
        listing,
        status: text("status"),
        elapsed_seconds,
        wait_seconds,
        query,
        user: text("username"),
        database: text("database").or_else(|| text("currentQueryDatabase")),
    })
}

impl Neo4jTx {
    /// When the transaction started, by the clock of the sample that saw it.
    pub(crate) fn started(&self) -> DateTime<Utc> {
        start_of(self.sample_ts, self.elapsed_seconds).unwrap_or(self.sample_ts)
    }
}

const SHOW_TRANSACTIONS: &str = "show_transactions";
const LIST_QUERIES: &str = "list_queries";

/// The `neo4j_tx` table, sorted by target, id and sample time; the sort is stable, so
/// rows of one sample keep their order in the file.
pub(crate) fn frame(mut rows: Vec<Neo4jTx>) -> DataFrame {
    rows.sort_by(|a, b| (&a.target, &a.id, a.sample_ts).cmp(&(&b.target, &b.id, b.sample_ts)));

    let texts = |field: fn(&Neo4jTx) -> Option<&str>| rows.iter().map(field).collect::<Vec<_>>();
    DataFrame::new_infer_height(vec![
        times_column(
            "sample_ts",
            TimeUnit::Nanoseconds,
            rows.iter()
                .map(|tx| tx.sample_ts.timestamp_nanos_opt())
                .collect(),
        ),
        Column::new("target".into(), texts(|tx| Some(&tx.target))),
        Column::new("id".into(), texts(|tx| Some(&tx.id))),
        Column::new(
            "listing".into(),
            texts(|tx| {
                Some(match tx.listing {
                    Neo4jListing::ShowTransactions => SHOW_TRANSACTIONS,
                    Neo4jListing::ListQueries => LIST_QUERIES,
                })
            }),
        ),
        Column::new("status".into(), texts(|tx| tx.status.as_deref())),
        Column::new(
            "elapsed".into(),
            rows.iter().map(|tx| tx.elapsed_seconds).collect::<Vec<_>>(),
        ),
        Column::new(
            "wait".into(),
            rows.iter().map(|tx| tx.wait_seconds).collect::<Vec<_>>(),
        ),
        Column::new("query".into(), texts(|tx| Some(&tx.query))),
        Column::new("user".into(), texts(|tx| tx.user.as_deref())),
        Column::new("database".into(), texts(|tx| tx.database.as_deref())),
        Column::new("file".into(), texts(|tx| Some(&tx.file))),
    ])
    .expect("columns have equal length")
}

/// Reads rows of a table shaped like `neo4j_tx` back, in its order.
pub(crate) fn rows(frame: &DataFrame) -> PolarsResult<Vec<Neo4jTx>> {
    let sample_ts = column_times(frame, "sample_ts")?;
    let target = column_texts(frame, "target")?;
    let id = column_texts(frame, "id")?;
    let listing = column_texts(frame, "listing")?;
    let status = column_texts(frame, "status")?;
    let elapsed = frame.column("elapsed")?.f64()?;
    let wait = frame.column("wait")?.f64()?;
    let query = column_texts(frame, "query")?;
    let user = column_texts(frame, "user")?;
    let database = column_texts(frame, "database")?;
    let file = column_texts(frame, "file")?;
    Ok((0..frame.height())
        .map(|i| Neo4jTx {
            target: target[i].clone().unwrap_or_default(),
            file: file[i].clone().unwrap_or_default(),
            sample_ts: sample_ts[i].unwrap_or_default(),
            id: id[i].clone().unwrap_or_default(),
            listing: match listing[i].as_deref() {
                Some(LIST_QUERIES) => Neo4jListing::ListQueries,
                _ => Neo4jListing::ShowTransactions,
            },
            status: status[i].clone(),
            elapsed_seconds: elapsed.get(i).unwrap_or_default(),
            wait_seconds: wait.get(i),
            query: query[i].clone().unwrap_or_default(),
            user: user[i].clone(),
            database: database[i].clone(),
        })
        .collect())
}

fn start_of(sample_ts: DateTime<Utc>, elapsed_seconds: f64) -> Option<DateTime<Utc>> {
    let ms = (elapsed_seconds * 1000.0).round();
    if !ms.is_finite() || ms.abs() >= 1e17 {
        return None;
    }
    sample_ts.checked_sub_signed(chrono::TimeDelta::try_milliseconds(ms as i64)?)
}

/// A duration as Neo4j may hand it over: an ISO-8601 string, a number of milliseconds,
/// or a map with `seconds` and `nanoseconds`.
fn duration_value_seconds(value: &Value) -> Option<f64> {
    match value {
        Value::String(text) => parse_iso_duration(text),
        Value::Number(n) => n.as_f64().map(|ms| ms / 1000.0),
        Value::Object(map) => {
            let seconds = map.get("seconds").and_then(Value::as_f64)?;
            let nanos = map
                .get("nanoseconds")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            Some(seconds + nanos / 1e9)
        }
        _ => None,
    }
}

/// Parses an ISO-8601 duration (`PT12.5S`, `P1DT2H`, `P0M0DT0.012000000S`) into seconds.
/// Years and months have no fixed length; they count as Neo4j's average lengths
/// (365.2425 days, a twelfth of that).
pub(crate) fn parse_iso_duration(text: &str) -> Option<f64> {
    const DAY: f64 = 86_400.0;
    const YEAR: f64 = 365.2425 * DAY;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let body = text.strip_prefix('P')?;
    let (date, time) = match body.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (body, None),
    };
    let mut total = 0.0;
    let mut any = false;
    for (part, units) in [
        (
            date,
            &[
                ('Y', YEAR),
                ('M', YEAR / 12.0),
                ('W', 7.0 * DAY),
                ('D', DAY),
            ][..],
        ),
        (
            time.unwrap_or(""),
            &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..],
        ),
    ] {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == '-' {
                number.push(c);
                continue;
            }
            let position = units[next_unit..].iter().position(|(u, _)| *u == c)?;
            let (_, scale) = units[next_unit + position];
            next_unit += position + 1;
            total += number.parse::<f64>().ok()? * scale;
            number.clear();
            any = true;
        }
        if !number.is_empty() {
            return None;
        }
    }
    if time == Some("") || !any {
        return None;
    }
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations_parse_to_seconds() {
        let cases = [
            ("PT12.5S", Some(12.5)),
            ("PT12S", Some(12.0)),
            ("PT0.012S", Some(0.012)),
            ("PT1M30S", Some(90.0)),
            ("PT2H", Some(7200.0)),
            ("P1DT1S", Some(86_401.0)),
            ("P0M0DT12.500000000S", Some(12.5)),
            ("-PT3S", Some(-3.0)),
            ("PT", None),
            ("P", None),
            ("12S", None),
            ("PT5X", None),
            ("PTS", None),
            ("PT1S2M", None),
        ];
        for (text, want) in cases {
            let got = parse_iso_duration(text);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{text}: {g} != {w}"),
                _ => assert_eq!(got, want, "{text}"),
            }
        }
    }

    #[test]
    fn both_listings_read_into_one_shape() {
        let five = serde_json::json!({
            "sample": 1, "sample_ts": "2026-12-04T14:00:00Z", "transactionId": "neo4j-transaction-42",
            "currentQuery": "MATCH (n) RETURN n", "elapsedTime": "PT12S", "status": "Running"
        });
        let four = serde_json::json!({
            "sample": 1, "sample_ts": "2026-12-04T14:00:00Z", "queryId": "query-7",
            "query": "MATCH (n) RETURN n", "elapsedTimeMillis": 6500
        });
        let tx = transaction("f", "t", &five).unwrap();
        assert_eq!(
            (tx.listing, tx.id.as_str(), tx.elapsed_seconds),
            (Neo4jListing::ShowTransactions, "neo4j-transaction-42", 12.0)
        );
        let q = transaction("f", "t", &four).unwrap();
        assert_eq!(
            (q.listing, q.id.as_str(), q.elapsed_seconds),
            (Neo4jListing::ListQueries, "query-7", 6.5)
        );
        let broken = serde_json::json!({"sample_ts": "2026-12-04T14:00:00Z", "transactionId": "x", "elapsedTime": "soon"});
        assert_eq!(transaction("f", "t", &broken).unwrap_err(), "elapsedTime");
    }
}
