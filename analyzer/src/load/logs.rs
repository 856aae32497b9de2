//! Container logs → the `log_lines` table and a few example lines per signature.
//!
//! Logs can be large, so each line is read into one reused buffer, classified against the
//! timeout lexicon and dropped; only its time, its source and the matching signature are
//! kept, plus a handful of matching lines as examples.
//!
//! `log_lines` holds only the timestamped lines that match a signature, because the
//! timeout detector is the only reader and a row per plain line would cost far more than
//! the log itself; per file, the other lines are only counted. A detector that needs every
//! line (template mining, error levels) would need categorical columns first.

use std::collections::BTreeMap;
use std::io::BufRead;

use chrono::{DateTime, Utc};
use polars::prelude::*;
use sitrep_schemas::report::Problem;

use super::k8s::PodContainer;
use super::{millis, minute_of, parse_time, read_line_capped};
use crate::bundle::problem;
use crate::detect::timeouts::Lexicon;

/// Matching lines kept per file, signature and minute, so that whichever minutes turn
/// out to be a burst have examples of their own.
const EXAMPLES_PER_MINUTE: usize = 1;
/// Example lines are cut to this many characters.
const EXAMPLE_CHARS: usize = 300;
/// Bytes of a line that are classified; the rest is skipped unread into memory, so a
/// line with no newline in it costs this much, not the entry's size. The kubelet splits
/// lines at 16 KiB, so only a line written around it is ever cut.
const LINE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Example {
    pub(crate) file: String,
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) ts: Option<DateTime<Utc>>,
    pub(crate) signature: &'static str,
    pub(crate) text: String,
}

#[derive(Debug)]
pub(crate) struct LogFile {
    namespace: String,
    pod: String,
    container: String,
    /// `(ms, signature)` of each timestamped line that matched a signature.
    matches: Vec<(i64, &'static str)>,
    /// Every line read, and those of them without a timestamp.
    pub(crate) lines: u64,
    pub(crate) untimed: u64,
    examples: Vec<Example>,
}

impl LogFile {
    /// Reads `logs/<ns>/<pod>/<file>`; `None` when the name is not a container log.
    pub(crate) fn read(
        path: &str,
        namespace: &str,
        pod: &str,
        file: &str,
        reader: &mut dyn BufRead,
        lexicon: &Lexicon,
        problems: &mut Vec<Problem>,
    ) -> Option<LogFile> {
        let container = file
            .strip_suffix(".previous.log")
            .or_else(|| file.strip_suffix(".log"))?;
        let mut log = LogFile {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
            matches: Vec::new(),
            lines: 0,
            untimed: 0,
            examples: Vec::new(),
        };
        let mut kept: BTreeMap<(&'static str, i64), usize> = BTreeMap::new();
        let mut buffer = Vec::new();
        let mut first_untimed = None;
        loop {
            match read_line_capped(reader, &mut buffer, LINE_BYTES) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    problems.push(problem(path, format!("cannot read entry: {error}")));
                    break;
                }
            }
            let line = String::from_utf8_lossy(&buffer);
            let line = line.trim_end_matches(['\n', '\r']);
            let (ts, message) = split_timestamp(line);
            let signature = lexicon.classify(message);
            if let (Some(signature), Some(at)) = (signature, ts) {
                let count = kept.entry((signature, minute_of(millis(at)))).or_default();
                if *count < EXAMPLES_PER_MINUTE {
                    *count += 1;
                    log.examples.push(Example {
                        file: path.to_owned(),
                        namespace: log.namespace.clone(),
                        pod: log.pod.clone(),
                        ts,
                        signature,
                        text: message.chars().take(EXAMPLE_CHARS).collect(),
                    });
                }
            }
            log.lines += 1;
            match (ts, signature) {
                (None, _) => {
                    log.untimed += 1;
                    first_untimed.get_or_insert(log.lines);
                }
                (Some(at), Some(signature)) => log.matches.push((millis(at), signature)),
                (Some(_), None) => {}
            }
        }
        // The collector asks for `timestamps=true`, so every line the API server sends
        // has one; a line without is an altered log, and it counts in no minute.
        if let Some(line) = first_untimed {
            problems.push(Problem {
                file: path.to_owned(),
                line: Some(line),
                field: None,
                message: format!(
                    "{} of {} lines have no RFC 3339 timestamp (the first is this one); they are in no timeout count",
                    log.untimed, log.lines
                ),
            });
        }
        Some(log)
    }
}

/// Splits the API server's `timestamps=true` prefix from the message. A line whose first
/// word is not an RFC 3339 time keeps all its text and has no time.
pub(crate) fn split_timestamp(line: &str) -> (Option<DateTime<Utc>>, &str) {
    let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
    match parse_time(first) {
        Some(ts) => (Some(ts), rest),
        None => (None, line),
    }
}

/// Builds `log_lines` from the matching lines. The service is the pod's `app` label, else
/// its owning deployment, else the pod name (a pod absent from `k8s/pods.ndjson`).
pub(crate) fn frame(files: Vec<LogFile>, pods: &[PodContainer]) -> (DataFrame, Vec<Example>) {
    let services: BTreeMap<(&str, &str), &str> = pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.pod.as_str()), p.service.as_str()))
        .collect();
    let mut ts = Vec::new();
    let mut minute = Vec::new();
    let mut namespace = Vec::new();
    let mut pod = Vec::new();
    let mut container = Vec::new();
    let mut service = Vec::new();
    let mut signature: Vec<&'static str> = Vec::new();
    let mut examples = Vec::new();
    for file in files {
        let svc = services
            .get(&(file.namespace.as_str(), file.pod.as_str()))
            .map_or_else(|| file.pod.clone(), |s| (*s).to_owned());
        tracing::debug!(
            stage = "load",
            namespace = %file.namespace,
            pod = %file.pod,
            container = %file.container,
            lines = file.lines,
            untimed = file.untimed,
            timeouts = file.matches.len(),
            "read container log"
        );
        for (at, sig) in file.matches {
            ts.push(at);
            minute.push(minute_of(at));
            namespace.push(file.namespace.clone());
            pod.push(file.pod.clone());
            container.push(file.container.clone());
            service.push(svc.clone());
            signature.push(sig);
        }
        examples.extend(file.examples);
    }
    let frame = DataFrame::new_infer_height(vec![
        datetime_column("ts", ts),
        datetime_column("minute", minute),
        Column::new("namespace".into(), namespace),
        Column::new("pod".into(), pod),
        Column::new("container".into(), container),
        Column::new("service".into(), service),
        Column::new("signature".into(), signature),
    ])
    .expect("columns have equal length");
    (frame, examples)
}

/// A UTC datetime column in milliseconds.
pub(crate) fn datetime_column(name: &str, ms: Vec<i64>) -> Column {
    Column::new(name.into(), ms)
        .cast(&DataType::Datetime(
            TimeUnit::Milliseconds,
            Some(TimeZone::UTC),
        ))
        .expect("i64 casts to datetime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_split_from_the_message() {
        let (ts, message) = split_timestamp("2026-12-04T13:40:00.123456789Z hello world");
        assert_eq!(
            ts.map(|t| t.timestamp_nanos_opt()),
            Some(Some(1_796_391_600_123_456_789))
        );
        assert_eq!(message, "hello world");

        assert_eq!(split_timestamp("no time here"), (None, "no time here"));
        // An empty line written with `timestamps=true` is its time alone.
        assert!(split_timestamp("2026-12-04T13:40:00Z").0.is_some());
        assert_eq!(split_timestamp("2026-13-99T00:00:00Z x").0, None);
    }
}
