//! Prometheus `query_range` responses → the tidy `metrics` table.
//!
//! Each response file belongs to a named query, found through `prometheus/queries.json`
//! (or, when that entry is missing, from the file name). Values arrive as strings and may
//! be `NaN` or `±Inf`; both are kept, because a `+Inf` bucket bound is meaningful.

use std::collections::BTreeMap;
use std::io::BufRead;

use polars::prelude::*;
use serde_json::Value;
use sitrep_schemas::records::PromQueryLog;
use sitrep_schemas::report::Problem;

use super::logs::datetime_column;
use super::minute_of;
use crate::bundle::problem;

/// Label columns of the table; other labels are not used by any detector.
pub(crate) const LABELS: [&str; 6] = ["namespace", "service", "pod", "container", "le", "reason"];

#[derive(Debug, Clone)]
pub(crate) struct PromSeries {
    pub(crate) labels: BTreeMap<String, String>,
    /// `(ms, value)`.
    pub(crate) points: Vec<(i64, f64)>,
}

pub(crate) fn read_response(
    path: &str,
    reader: &mut dyn BufRead,
    problems: &mut Vec<Problem>,
) -> Vec<PromSeries> {
    let document: Value = match serde_json::from_reader(reader) {
        Ok(value) => value,
        Err(error) => {
            problems.push(problem(path, format!("cannot parse JSON: {error}")));
            return Vec::new();
        }
    };
    if document.get("status").and_then(Value::as_str) != Some("success") {
        let error = document
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error text");
        problems.push(problem(path, format!("query did not succeed: {error}")));
        return Vec::new();
    }
    let Some(results) = document.pointer("/data/result").and_then(Value::as_array) else {
        problems.push(field_problem(
            path,
            "data.result",
            "missing or not an array",
        ));
        return Vec::new();
    };

    let mut out = Vec::new();
    for (index, result) in results.iter().enumerate() {
        let labels = result
            .get("metric")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect();
        let mut points = Vec::new();
        let values = result.get("values").and_then(Value::as_array);
        for (at, pair) in values.into_iter().flatten().enumerate() {
            match point(pair) {
                Ok(point) => points.push(point),
                Err(why) => problems.push(field_problem(
                    path,
                    &format!("data.result[{index}].values[{at}]"),
                    why,
                )),
            }
        }
        out.push(PromSeries { labels, points });
    }
    out
}

fn field_problem(path: &str, field: &str, message: &str) -> Problem {
    Problem {
        file: path.to_owned(),
        line: None,
        field: Some(field.to_owned()),
        message: message.to_owned(),
    }
}

fn point(pair: &Value) -> Result<(i64, f64), &'static str> {
    const NOT_A_PAIR: &str = "not a [time, \"value\"] pair";
    let pair = pair.as_array().ok_or(NOT_A_PAIR)?;
    let seconds = pair.first().and_then(Value::as_f64).ok_or(NOT_A_PAIR)?;
    let value = pair
        .get(1)
        .and_then(Value::as_str)
        .and_then(parse_sample)
        .ok_or(NOT_A_PAIR)?;
    // A float cast to i64 saturates, and the minute arithmetic on a saturated time
    // overflows; a time no date can hold is refused here instead.
    let ms = (seconds * 1000.0).round();
    let representable = ms.is_finite()
        && ms.abs() < 1e17
        && chrono::DateTime::from_timestamp_millis(ms as i64).is_some();
    if !representable {
        return Err("time is outside the dates this analyzer can represent");
    }
    Ok((ms as i64, value))
}

/// Parses a Prometheus sample value as the API renders it.
pub(crate) fn parse_sample(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// Which query a response file answers: the query log says, else its file name does
/// (`prometheus/<query>.json` or `prometheus/<query>.<part>.json`).
fn query_names(log: Option<&PromQueryLog>, paths: &[&String]) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for path in paths {
        let stem = path
            .trim_start_matches("prometheus/")
            .trim_end_matches(".json");
        let stem = match stem.rsplit_once('.') {
            Some((head, part)) if part.chars().all(|c| c.is_ascii_digit()) => head,
            _ => stem,
        };
        names.insert((*path).clone(), stem.to_owned());
    }
    if let Some(log) = log {
        for query in &log.queries {
            for file in &query.files {
                names.insert(file.clone(), query.name.clone());
            }
        }
    }
    names
}

pub(crate) fn frame(
    log: Option<&PromQueryLog>,
    responses: BTreeMap<String, Vec<PromSeries>>,
    problems: &mut Vec<Problem>,
) -> DataFrame {
    if log.is_none() && !responses.is_empty() {
        problems.push(problem(
            sitrep_schemas::paths::PROMETHEUS_QUERIES,
            "query log is missing; queries were named after their files".into(),
        ));
    }
    let paths: Vec<&String> = responses.keys().collect();
    let names = query_names(log, &paths);

    let mut ts = Vec::new();
    let mut minute = Vec::new();
    let mut query = Vec::new();
    let mut labels: [Vec<Option<String>>; 6] = Default::default();
    let mut value = Vec::new();
    for (path, series) in &responses {
        let name = names.get(path).cloned().unwrap_or_default();
        for one in series {
            for &(at, v) in &one.points {
                ts.push(at);
                minute.push(minute_of(at));
                query.push(name.clone());
                for (column, label) in labels.iter_mut().zip(LABELS) {
                    column.push(one.labels.get(label).cloned());
                }
                value.push(v);
            }
        }
    }
    let mut columns = vec![
        datetime_column("ts", ts),
        datetime_column("minute", minute),
        Column::new("query".into(), query),
    ];
    for (column, label) in labels.into_iter().zip(LABELS) {
        columns.push(Column::new(label.into(), column));
    }
    columns.push(Column::new("value".into(), value));
    DataFrame::new_infer_height(columns).expect("columns have equal length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_values_follow_the_api_rendering() {
        assert_eq!(parse_sample("0.25"), Some(0.25));
        assert_eq!(parse_sample("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_sample("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_sample("NaN").unwrap().is_nan());
        assert_eq!(parse_sample("fast"), None);
    }

    #[test]
    fn split_files_belong_to_their_query() {
        let a = "prometheus/latency_buckets.2.json".to_owned();
        let b = "prometheus/request_rate.json".to_owned();
        let names = query_names(None, &[&a, &b]);
        assert_eq!(names[&a], "latency_buckets");
        assert_eq!(names[&b], "request_rate");
    }
}
