//! Turns bundle entries into the analyzer's tables.
//!
//! [`Loader`] is the bundle reader's sink: it parses each entry as it streams by and keeps
//! the result under the entry's path, so an entry that later fails verification can be
//! dropped whole. [`Loader::finish`] assembles the tables the detectors read. Bad input
//! never aborts loading: each unparsable line becomes a problem naming file and line.

pub(crate) mod k8s;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod neo4j;
pub(crate) mod postgres;

use std::collections::BTreeMap;
use std::io::{self, BufRead};

use chrono::{DateTime, Utc};
use polars::prelude::*;
use sitrep_schemas::paths;
use sitrep_schemas::records::PromQueryLog;
use sitrep_schemas::report::Problem;

use crate::bundle::{EntrySink, problem};
use crate::detect::timeouts::Lexicon;

/// Everything the detectors read, assembled from the entries that passed verification.
#[derive(Debug)]
pub(crate) struct Tables {
    /// `ts, minute, query, namespace, service, pod, container, le, reason, value`.
    pub(crate) metrics: DataFrame,
    pub(crate) deployments: Vec<k8s::Deployment>,
    pub(crate) rollouts: Vec<k8s::Rollout>,
    pub(crate) pods: Vec<k8s::PodContainer>,
    /// `ts, namespace, kind, object, reason, type, message, count`, sorted by namespace,
    /// kind, object and time; times in microseconds.
    pub(crate) events: DataFrame,
    /// `ts, minute, namespace, pod, container, service, signature`: timestamped lines that
    /// match a timeout signature.
    pub(crate) log_lines: DataFrame,
    pub(crate) log_examples: Vec<logs::Example>,
    /// `sample_ts, target, pid, sample, backend_type, state, wait_event_type, wait_event,
    /// query_start, xact_start, application_name, usename, datname, blocked_by, query,
    /// file`, sorted by target, pid and sample time; times in microseconds.
    pub(crate) pg_activity: DataFrame,
    /// `sample_ts, target, id, listing, status, elapsed, wait, query, user, database,
    /// file`, sorted by target, id and sample time; `sample_ts` in nanoseconds, `elapsed`
    /// and `wait` in seconds.
    pub(crate) neo4j_tx: DataFrame,
    pub(crate) neo4j_servers: BTreeMap<String, sitrep_schemas::records::Neo4jServer>,
}

/// What one entry held, kept until the manifest confirms it.
#[derive(Debug)]
enum Parsed {
    K8s(String, Vec<serde_json::Value>),
    Log(logs::LogFile),
    PromQueries(PromQueryLog),
    PromResponse(Vec<metrics::PromSeries>),
    PgActivity(Vec<postgres::PgRow>),
    Neo4jServer(String, sitrep_schemas::records::Neo4jServer),
    Neo4jTx(Vec<neo4j::Neo4jTx>),
    Other,
}

#[derive(Debug)]
pub(crate) struct Loader {
    lexicon: Lexicon,
    parsed: BTreeMap<String, Parsed>,
}

impl Loader {
    pub(crate) fn new(lexicon: Lexicon) -> Self {
        Loader {
            lexicon,
            parsed: BTreeMap::new(),
        }
    }

    pub(crate) fn finish(self, problems: &mut Vec<Problem>) -> Tables {
        let mut objects: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        let mut log_files = Vec::new();
        let mut query_log = None;
        let mut responses = BTreeMap::new();
        let mut pg_activity = Vec::new();
        let mut neo4j_tx = Vec::new();
        let mut neo4j_servers = BTreeMap::new();
        for (path, parsed) in self.parsed {
            match parsed {
                Parsed::K8s(resource, items) => objects.entry(resource).or_default().extend(items),
                Parsed::Log(file) => log_files.push(file),
                Parsed::PromQueries(log) => query_log = Some(log),
                Parsed::PromResponse(series) => {
                    responses.insert(path, series);
                }
                Parsed::PgActivity(rows) => pg_activity.extend(rows),
                Parsed::Neo4jServer(target, server) => {
                    neo4j_servers.insert(target, server);
                }
                Parsed::Neo4jTx(rows) => neo4j_tx.extend(rows),
                Parsed::Other => {}
            }
        }

        let cluster = k8s::Cluster::from_objects(&objects);
        let metrics = metrics::frame(query_log.as_ref(), responses, problems);
        let (log_lines, log_examples) = logs::frame(log_files, &cluster.pods);
        Tables {
            metrics,
            deployments: cluster.deployments,
            rollouts: cluster.rollouts,
            pods: cluster.pods,
            events: k8s::events_frame(cluster.events),
            log_lines,
            log_examples,
            pg_activity: postgres::frame(pg_activity),
            neo4j_tx: neo4j::frame(neo4j_tx),
            neo4j_servers,
        }
    }
}

impl EntrySink for Loader {
    fn entry(&mut self, path: &str, reader: &mut dyn BufRead) -> Vec<Problem> {
        let mut problems = Vec::new();
        let parsed = parse_entry(path, reader, &self.lexicon, &mut problems);
        self.parsed.insert(path.to_owned(), parsed);
        problems
    }

    fn discard(&mut self, path: &str) {
        self.parsed.remove(path);
    }
}

fn parse_entry(
    path: &str,
    reader: &mut dyn BufRead,
    lexicon: &Lexicon,
    problems: &mut Vec<Problem>,
) -> Parsed {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["k8s", file] => match file.strip_suffix(".ndjson") {
            Some(resource) => {
                let items = ndjson::<serde_json::Value>(path, reader, problems)
                    .into_iter()
                    .map(|(number, item)| {
                        for (field, message) in k8s::field_problems(resource, &item) {
                            problems.push(field_problem(path, number, &field, message));
                        }
                        item
                    })
                    .collect();
                Parsed::K8s(resource.to_owned(), items)
            }
            None => Parsed::Other,
        },
        ["logs", namespace, pod, file] => {
            match logs::LogFile::read(path, namespace, pod, file, reader, lexicon, problems) {
                Some(log) => Parsed::Log(log),
                None => Parsed::Other,
            }
        }
        ["prometheus", _] if path == paths::PROMETHEUS_QUERIES => {
            match json_document::<PromQueryLog>(path, reader, problems) {
                Some(log) => Parsed::PromQueries(log),
                None => Parsed::Other,
            }
        }
        ["prometheus", file] if file.ends_with(".json") => {
            Parsed::PromResponse(metrics::read_response(path, reader, problems))
        }
        ["postgres", target, "activity.ndjson"] => {
            Parsed::PgActivity(postgres::read_activity(path, target, reader, problems))
        }
        ["neo4j", target, "server.json"] => {
            match json_document::<sitrep_schemas::records::Neo4jServer>(path, reader, problems) {
                Some(server) => Parsed::Neo4jServer((*target).to_owned(), server),
                None => Parsed::Other,
            }
        }
        ["neo4j", target, "transactions.ndjson"] => {
            Parsed::Neo4jTx(neo4j::read_transactions(path, target, reader, problems))
        }
        _ => Parsed::Other,
    }
}

/// Longest NDJSON line parsed. A Kubernetes object is bounded by etcd's request size
/// (1.5 MiB by default) and a `pg_stat_activity` query text by `track_activity_query_size`
/// (at most 1 MiB), so a longer line is damage; reading it whole would let a single line
/// cost as much memory as the entry cap allows.
pub(crate) const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Reads one JSON value a line, each with its line number; each bad line is a problem
/// with its number.
pub(crate) fn ndjson<T: serde::de::DeserializeOwned>(
    path: &str,
    reader: &mut dyn BufRead,
    problems: &mut Vec<Problem>,
) -> Vec<(u64, T)> {
    let mut rows = Vec::new();
    // Bytes, not a `String`: one byte that is not UTF-8 must cost its line, not the rest
    // of the entry, and `from_slice` names where in the line it is.
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        let length = match read_line_capped(reader, &mut line, MAX_RECORD_BYTES) {
            Ok(0) => break,
            Ok(length) => length,
            Err(error) => {
                problems.push(problem(path, format!("cannot read entry: {error}")));
                break;
            }
        };
        number += 1;
        if length > line.len() {
            problems.push(line_problem(
                path,
                number,
                None,
                format!("line is {length} bytes, more than the {MAX_RECORD_BYTES} a record may have; skipped"),
            ));
            continue;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<T>(&line) {
            Ok(row) => rows.push((number, row)),
            Err(error) => problems.push(line_problem(path, number, None, error.to_string())),
        }
    }
    rows
}

/// Reads one line, `\n` included, into `line`, keeping at most its first `cap` bytes and
/// skipping the rest. Returns the line's whole length, 0 at the end of the input.
pub(crate) fn read_line_capped(
    reader: &mut dyn BufRead,
    line: &mut Vec<u8>,
    cap: usize,
) -> io::Result<usize> {
    line.clear();
    let mut length = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(length);
        }
        let (used, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&available[..used.min(room)]);
        reader.consume(used);
        length += used;
        if ends {
            return Ok(length);
        }
    }
}

pub(crate) fn json_document<T: serde::de::DeserializeOwned>(
    path: &str,
    reader: &mut dyn BufRead,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_json::from_reader(reader) {
        Ok(value) => Some(value),
        Err(error) => {
            problems.push(problem(path, format!("cannot parse JSON: {error}")));
            None
        }
    }
}

pub(crate) fn line_problem(path: &str, line: u64, field: Option<&str>, message: String) -> Problem {
    Problem {
        file: path.to_owned(),
        line: Some(line),
        field: field.map(str::to_owned),
        message: format!("cannot parse line: {message}"),
    }
}

/// A field of a line that parsed but holds something unusable.
fn field_problem(path: &str, line: u64, field: &str, message: String) -> Problem {
    Problem {
        file: path.to_owned(),
        line: Some(line),
        field: Some(field.to_owned()),
        message,
    }
}

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// Milliseconds since the epoch, the unit of every datetime column.
pub(crate) fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A nullable UTC datetime column counted in `unit`.
pub(crate) fn times_column(name: &str, unit: TimeUnit, ticks: Vec<Option<i64>>) -> Column {
    Column::new(name.into(), ticks)
        .cast(&DataType::Datetime(unit, Some(TimeZone::UTC)))
        .expect("i64 casts to datetime")
}

/// A string column read back as owned values.
pub(crate) fn column_texts(frame: &DataFrame, name: &str) -> PolarsResult<Vec<Option<String>>> {
    Ok(frame
        .column(name)?
        .str()?
        .iter()
        .map(|text| text.map(str::to_owned))
        .collect())
}

/// A datetime column read back as times, whatever its unit.
pub(crate) fn column_times(
    frame: &DataFrame,
    name: &str,
) -> PolarsResult<Vec<Option<DateTime<Utc>>>> {
    let times = frame.column(name)?.datetime()?;
    let from_ticks: fn(i64) -> Option<DateTime<Utc>> = match times.time_unit() {
        TimeUnit::Milliseconds => DateTime::from_timestamp_millis,
        TimeUnit::Microseconds => DateTime::from_timestamp_micros,
        TimeUnit::Nanoseconds => |ns| Some(DateTime::from_timestamp_nanos(ns)),
    };
    Ok(times
        .physical()
        .iter()
        .map(|ticks| ticks.and_then(from_ticks))
        .collect())
}

/// Which rows of a string column satisfy `keep`; a null satisfies nothing. The analyzer's
/// polars is built without its string functions, which would cost a rebuild of most of
/// polars for two prefix and substring tests.
pub(crate) fn text_mask(
    frame: &DataFrame,
    name: &str,
    keep: impl Fn(&str) -> bool,
) -> PolarsResult<BooleanChunked> {
    Ok(frame
        .column(name)?
        .str()?
        .iter()
        .map(|text| text.is_some_and(&keep))
        .collect::<BooleanChunked>()
        .with_name(name.into()))
}

/// Start of the minute holding `ms`.
pub(crate) fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000) * 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_line_keeps_its_start_and_reports_its_whole_length() {
        let mut input = io::BufReader::with_capacity(4, &b"abcdefgh\nij\nk"[..]);
        let mut line = Vec::new();
        let lengths: Vec<(usize, Vec<u8>)> = std::iter::from_fn(|| {
            let length = read_line_capped(&mut input, &mut line, 3).unwrap();
            (length > 0).then(|| (length, line.clone()))
        })
        .collect();
        assert_eq!(
            lengths,
            [
                (9, b"abc".to_vec()),
                (3, b"ij\n".to_vec()),
                (1, b"k".to_vec())
            ]
        );
    }
}
