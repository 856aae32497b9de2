//! Prometheus: the named range queries over the window, stored as the server answered.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use sitrep_schemas::Window;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::paths;
use sitrep_schemas::records::{PromQuery, PromQueryLog};

use crate::bundle::{BundleError, FinishedSpool, Spool};
use crate::run::{
    Classify, Failure, SourceContext, StopReason, one_line, render_chain, status_name,
};

/// Prometheus: the runbook's queries (latency, traffic, errors, CPU, memory, restarts,
/// OOM reasons) as range queries over the window.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PrometheusArgs {
    /// Base URL of the Prometheus HTTP API, e.g. http://127.0.0.1:9090. Prometheus is
    /// skipped when this is not set.
    #[arg(
        id = "prometheus_url",
        long = "prometheus-url",
        env = "PROMETHEUS_URL",
        // A URL may carry a password in its userinfo; --help must not print it.
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) url: Option<String>,
    /// Resolution of every range query. Windows longer than 11,000 steps are split into
    /// several requests, each stored in its own file. Whole seconds, at least 1s.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = crate::config::parse_step)]
    pub(crate) step: Duration,
    /// The label that names a service in the HTTP request metrics.
    #[arg(long, default_value = "service", value_name = "LABEL")]
    pub(crate) service_label: String,
}

/// How much of a non-200 answer is read to find the API's error text.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Prometheus refuses a range query with more points a series than this.
const MAX_POINTS: i64 = 11_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PrometheusError {
    #[error("`{url}` is not a usable Prometheus URL")]
    Url {
        url: String,
        #[source]
        source: url_error::ParseError,
    },
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("query_range request failed")]
    Request(#[source] reqwest::Error),
    #[error("Prometheus answered HTTP {status}: {error_type}: {message}")]
    Api {
        status: u16,
        error_type: String,
        message: String,
    },
    #[error("Prometheus answered HTTP {0} without an API error body")]
    Http(u16),
    #[error("cannot read the response body")]
    Body(#[source] reqwest::Error),
    #[error("cannot spool the response")]
    Spool(#[source] io::Error),
    #[error("the response is not a query_range answer")]
    Parse(#[source] serde_json::Error),
    #[error("cannot store the response")]
    Store(#[source] BundleError),
}

/// reqwest re-exports the URL type but not its parse error's path; name it once here.
mod url_error {
    pub(crate) type ParseError = <reqwest::Url as std::str::FromStr>::Err;
}

impl Classify for PrometheusError {
    fn status(&self) -> SourceStatus {
        match self {
            PrometheusError::Url { .. } | PrometheusError::Client(_) => SourceStatus::Failed,
            PrometheusError::Request(e) | PrometheusError::Body(e) => super::transport_status(e),
            PrometheusError::Api { status, .. } | PrometheusError::Http(status) => {
                super::http_status(*status)
            }
            PrometheusError::Parse(_) => SourceStatus::Malformed,
            PrometheusError::Spool(_) | PrometheusError::Store(_) => SourceStatus::Failed,
        }
    }
}

/// One named query before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedQuery {
    pub(crate) name: &'static str,
    pub(crate) promql: String,
}

/// The named queries; the analyzer finds them by name, so names never change.
pub(crate) fn named_queries(service: &str, namespaces: &[String]) -> Vec<NamedQuery> {
    let ns = match namespaces {
        [] => None,
        [one] => Some(format!("namespace=\"{}\"", escape(one))),
        many => {
            let alts: Vec<String> = many
                .iter()
                .map(|n| regex::escape(n))
                .map(|n| escape(&n))
                .collect();
            Some(format!("namespace=~\"{}\"", alts.join("|")))
        }
    };
    let sel = |metric: &str, extra: &[&str]| {
        let mut matchers: Vec<String> = extra.iter().map(|m| (*m).to_owned()).collect();
        matchers.extend(ns.clone());
        if matchers.is_empty() {
            metric.to_owned()
        } else {
            format!("{metric}{{{}}}", matchers.join(","))
        }
    };
    let q = |name, promql: String| NamedQuery { name, promql };
    vec![
        q(
            "latency_p99",
            format!(
                "histogram_quantile(0.99, sum by (namespace, {service}, le) (rate({}[5m])))",
                sel("http_request_duration_seconds_bucket", &[])
            ),
        ),
        q(
            "latency_buckets",
            format!(
                "sum by (namespace, {service}, le) (rate({}[1m]))",
                sel("http_request_duration_seconds_bucket", &[])
            ),
        ),
        q(
            "request_rate",
            format!(
                "sum by (namespace, {service}) (rate({}[1m]))",
                sel("http_requests_total", &[])
            ),
        ),
        q(
            "error_rate",
            format!(
                "sum by (namespace, {service}) (rate({}[1m]))",
                sel("http_requests_total", &["code=~\"5..\""])
            ),
        ),
        q(
            "cpu_usage",
            format!(
                "sum by (namespace, pod, container) (rate({}[5m]))",
                sel("container_cpu_usage_seconds_total", &["container!=\"\""])
            ),
        ),
        q(
            "memory_working_set",
            format!(
                "sum by (namespace, pod, container) ({})",
                sel("container_memory_working_set_bytes", &["container!=\"\""])
            ),
        ),
        q(
            "container_restarts",
            format!(
                "sum by (namespace, pod, container) ({})",
                sel("kube_pod_container_status_restarts_total", &[])
            ),
        ),
        q(
            "last_terminated_reason",
            format!(
                "max by (namespace, pod, container, reason) ({})",
                sel("kube_pod_container_status_last_terminated_reason", &[])
            ),
        ),
    ]
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// More range requests per query than this means the step is far too fine for the
/// window (a year at 60 s is 48); refused before anything is asked of the server.
pub(crate) const MAX_PARTS: i64 = 100;

/// How many range requests one query needs over `window` at `step`.
pub(crate) fn parts_needed(window: Window, step: Duration) -> i64 {
    let step_ms = (step.as_millis() as i64).max(1);
    let points = (window.end - window.start).num_milliseconds() / step_ms + 1;
    (points + MAX_POINTS - 1) / MAX_POINTS
}

/// The smallest whole-second step that keeps `window` within [`MAX_PARTS`] requests.
pub(crate) fn smallest_step(window: Window) -> Duration {
    let span_s = (window.end - window.start).num_seconds().max(0) as u64;
    let points = (MAX_PARTS * MAX_POINTS) as u64;
    Duration::from_secs(span_s.div_ceil(points - 1).max(1))
}

/// Splits the window into consecutive ranges of at most [`MAX_POINTS`] points each.
/// Points of one range are `start, start + step, …` up to its end, both ends included;
/// the next range starts one step after the previous one's last point.
pub(crate) fn step_plan(window: Window, step: Duration) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step_ms = (step.as_millis() as i64).max(1);
    let span_ms = (window.end - window.start).num_milliseconds();
    let points = span_ms / step_ms + 1;
    if points <= MAX_POINTS {
        return vec![(window.start, window.end)];
    }
    let mut ranges = Vec::new();
    let mut first_point = 0i64;
    while first_point < points {
        let last_point = (first_point + MAX_POINTS - 1).min(points - 1);
        let start = window.start + chrono::Duration::milliseconds(first_point * step_ms);
        let end = if last_point == points - 1 {
            window.end
        } else {
            window.start + chrono::Duration::milliseconds(last_point * step_ms)
        };
        ranges.push((start, end));
        first_point = last_point + 1;
    }
    ranges
}

fn unix_seconds(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// Runs every named query and writes the responses and `prometheus/queries.json`.
pub(crate) async fn collect(
    args: PrometheusArgs,
    url: String,
    window: Window,
    namespaces: Vec<String>,
    ctx: Arc<SourceContext>,
) -> Result<(), Failure> {
    let base: reqwest::Url = url.parse().map_err(|source| {
        PrometheusError::Url {
            url: crate::redact::connection_string(&url).0,
            source,
        }
        .failure()
    })?;
    let client = super::http_client().map_err(|e| PrometheusError::Client(e).failure())?;
    let endpoint = format!("{}/api/v1/query_range", base.as_str().trim_end_matches('/'));
    let plan = step_plan(window, args.step);
    let step_seconds = args.step.as_secs().max(1);
    let step_param = format!("{}", args.step.as_secs_f64());

    let mut log = PromQueryLog {
        url: super::without_userinfo(&base),
        window,
        queries: Vec::new(),
    };
    let mut given_up: Option<(SourceStatus, &'static str)> = None;
    for query in named_queries(&args.service_label, &namespaces) {
        let mut record = PromQuery {
            name: query.name.to_owned(),
            promql: query.promql.clone(),
            step_seconds,
            status: SourceStatus::Ok,
            error: None,
            files: Vec::new(),
            series: 0,
            points: 0,
        };
        if let Some(reason) = ctx.stop().reason() {
            record.status = reason.status();
            ctx.part(query.name, record.status, 0, None);
            log.queries.push(record);
            continue;
        }
        if let Some((status, first)) = &given_up {
            // Asking again after refused connections or credentials only repeats the
            // same error, once per query.
            record.status = *status;
            record.error = Some(format!("not tried: `{first}` already failed the same way"));
            ctx.part(query.name, record.status, 0, record.error.clone());
            log.queries.push(record);
            continue;
        }
        for (i, (start, end)) in plan.iter().enumerate() {
            let part = (plan.len() > 1).then_some(i as u32 + 1);
            let path = paths::prometheus_response(query.name, part);
            let run = run_range(&client, &endpoint, &query.promql, *start, *end, &step_param);
            let outcome = match ctx.until_stopped(run).await {
                Some(outcome) => outcome,
                None => {
                    record.status = ctx
                        .stop()
                        .reason()
                        .unwrap_or(StopReason::Interrupted)
                        .status();
                    break;
                }
            };
            let stored = match outcome {
                Ok((spool, counts)) => ctx
                    .write(path.clone(), spool, Some(counts.series), None)
                    .await
                    .map(|()| counts)
                    .map_err(PrometheusError::Store),
                Err(e) => Err(e),
            };
            match stored {
                Ok(counts) => {
                    record.files.push(path);
                    record.series += counts.series;
                    record.points += counts.points;
                }
                Err(e) => {
                    tracing::warn!(stage = "query", query = query.name, error_type = status_name(e.status()), error = %one_line(&e), "query failed");
                    record.status = e.status();
                    record.error = Some(render_chain(&e));
                    if matches!(
                        record.status,
                        SourceStatus::Unreachable | SourceStatus::Forbidden | SourceStatus::Timeout
                    ) {
                        given_up = Some((record.status, query.name));
                    }
                    break;
                }
            }
        }
        ctx.add_items(record.series);
        ctx.part(
            query.name,
            record.status,
            record.series,
            record.error.clone(),
        );
        tracing::debug!(
            query = query.name,
            series = record.series,
            points = record.points,
            "query done"
        );
        log.queries.push(record);
    }

    let spool = Spool::json_document(&log).map_err(|e| PrometheusError::Spool(e).failure())?;
    ctx.write(
        paths::PROMETHEUS_QUERIES.to_owned(),
        spool,
        Some(log.queries.len() as u64),
        None,
    )
    .await
    .map_err(|e| PrometheusError::Store(e).failure())?;
    Ok(())
}

async fn run_range(
    client: &reqwest::Client,
    endpoint: &str,
    promql: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: &str,
) -> Result<(FinishedSpool, Counts), PrometheusError> {
    let mut response = client
        .get(endpoint)
        .query(&[
            ("query", promql),
            ("start", &unix_seconds(start)),
            ("end", &unix_seconds(end)),
            ("step", step),
        ])
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| PrometheusError::Request(e.without_url()))?;

    let status = response.status().as_u16();
    if status != 200 {
        // The API's error body is a small JSON object; whatever a proxy sends instead is
        // read only as far as that could need.
        let mut head = Vec::new();
        while head.len() < ERROR_BODY_LIMIT
            && let Some(chunk) = response.chunk().await.map_err(PrometheusError::Body)?
        {
            head.extend_from_slice(&chunk);
        }
        return Err(match serde_json::from_slice::<ApiError>(&head) {
            Ok(api) => PrometheusError::Api {
                status,
                error_type: api.error_type.unwrap_or_default(),
                message: api.error.unwrap_or_default(),
            },
            Err(_) => PrometheusError::Http(status),
        });
    }

    let mut spool = Spool::new().map_err(PrometheusError::Spool)?;
    while let Some(chunk) = response.chunk().await.map_err(PrometheusError::Body)? {
        spool.write(&chunk).map_err(PrometheusError::Spool)?;
    }
    let mut spool = spool.finish().map_err(PrometheusError::Spool)?;
    let parsed = spool
        .read_back(|r| serde_json::from_reader::<_, RangeResponse>(r))
        .map_err(PrometheusError::Spool)?
        .map_err(PrometheusError::Parse)?;
    if parsed.status != "success" {
        return Err(PrometheusError::Api {
            status,
            error_type: parsed.error_type.unwrap_or_default(),
            message: parsed.error.unwrap_or_default(),
        });
    }
    Ok((spool, parsed.data.map(|d| d.result).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

/// Just enough of a `query_range` answer to count series and points while reading it
/// from the spool; the values themselves are skipped, never held.
#[derive(Debug, Deserialize)]
struct RangeResponse {
    status: String,
    data: Option<RangeData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RangeData {
    result: Counts,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) series: u64,
    pub(crate) points: u64,
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SeriesList;
        impl<'de> Visitor<'de> for SeriesList {
            type Value = Counts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of series")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counts, A::Error> {
                let mut counts = Counts::default();
                while let Some(series) = seq.next_element::<Series>()? {
                    counts.series += 1;
                    counts.points += series.values.0 + series.histograms.0;
                }
                Ok(counts)
            }
        }
        d.deserialize_seq(SeriesList)
    }
}

#[derive(Debug, Deserialize)]
struct Series {
    #[serde(default)]
    values: Count,
    #[serde(default)]
    histograms: Count,
}

/// Number of elements of a JSON list, each skipped.
#[derive(Debug, Default)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> Visitor<'de> for Counter {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(Counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn short_window_is_one_range() {
        let w = Window {
            start: at("2026-01-01T00:00:00Z"),
            end: at("2026-01-01T03:00:00Z"),
        };
        // 3 h at 60 s is 181 points.
        assert_eq!(
            step_plan(w, Duration::from_secs(60)),
            vec![(w.start, w.end)]
        );
    }

    #[test]
    fn thirty_days_at_a_minute_split_into_four_ranges() {
        // 30 days = 43,200 minutes, so 43,201 points: 11,000 + 11,000 + 11,000 + 10,201.
        // Range k starts at minute 11,000·k and ends 10,999 minutes later; the last one
        // runs to the window's end.
        let w = Window {
            start: at("2026-01-01T00:00:00Z"),
            end: at("2026-01-31T00:00:00Z"),
        };
        let plan = step_plan(w, Duration::from_secs(60));
        let minute = |m: i64| w.start + chrono::Duration::minutes(m);
        assert_eq!(
            plan,
            vec![
                (minute(0), minute(10_999)),
                (minute(11_000), minute(21_999)),
                (minute(22_000), minute(32_999)),
                (minute(33_000), w.end),
            ]
        );
        assert_eq!(w.end, minute(43_200));
    }

    #[test]
    fn exactly_eleven_thousand_points_is_not_split() {
        let start = at("2026-01-01T00:00:00Z");
        let w = Window {
            start,
            end: start + chrono::Duration::minutes(10_999),
        };
        assert_eq!(step_plan(w, Duration::from_secs(60)).len(), 1);
        let w = Window {
            start,
            end: start + chrono::Duration::minutes(11_000),
        };
        assert_eq!(step_plan(w, Duration::from_secs(60)).len(), 2);
    }

    #[test]
    fn a_step_too_fine_for_the_window_is_caught_before_asking() {
        let start = at("2026-01-01T00:00:00Z");
        let year = Window {
            start,
            end: start + chrono::Duration::days(365),
        };
        // 525,600 minutes + 1 points at 60 s: 48 requests of 11,000 points.
        assert_eq!(parts_needed(year, Duration::from_secs(60)), 48);
        assert_eq!(
            parts_needed(year, Duration::from_secs(60)),
            step_plan(year, Duration::from_secs(60)).len() as i64
        );
        // At 1 s the same year needs 31,536,001 points: 2,867 requests.
        assert_eq!(parts_needed(year, Duration::from_secs(1)), 2_867);
        // 31,536,000 s over 1,099,999 intervals rounds up to 29 s, which fits in 100.
        let step = smallest_step(year);
        assert_eq!(step, Duration::from_secs(29));
        assert!(parts_needed(year, step) <= MAX_PARTS);
        assert!(parts_needed(year, step - Duration::from_secs(1)) > MAX_PARTS);
    }

    #[test]
    fn queries_use_the_documented_promql() {
        let q = named_queries("service", &[]);
        assert_eq!(q[0].name, "latency_p99");
        assert_eq!(
            q[0].promql,
            "histogram_quantile(0.99, sum by (namespace, service, le) (rate(http_request_duration_seconds_bucket[5m])))"
        );
        assert_eq!(
            q[3].promql,
            "sum by (namespace, service) (rate(http_requests_total{code=~\"5..\"}[1m]))"
        );
        assert_eq!(
            q[5].promql,
            "sum by (namespace, pod, container) (container_memory_working_set_bytes{container!=\"\"})"
        );
        let names: Vec<_> = q.iter().map(|q| q.name).collect();
        assert_eq!(
            names,
            [
                "latency_p99",
                "latency_buckets",
                "request_rate",
                "error_rate",
                "cpu_usage",
                "memory_working_set",
                "container_restarts",
                "last_terminated_reason"
            ]
        );
    }

    #[test]
    fn namespace_and_service_label_reach_every_selector() {
        let q = named_queries("app", &["shop".to_owned()]);
        assert_eq!(
            q[3].promql,
            "sum by (namespace, app) (rate(http_requests_total{code=~\"5..\",namespace=\"shop\"}[1m]))"
        );
        assert_eq!(
            q[6].promql,
            "sum by (namespace, pod, container) (kube_pod_container_status_restarts_total{namespace=\"shop\"})"
        );
        let two = named_queries("service", &["a.b".to_owned(), "c".to_owned()]);
        assert!(
            two[2].promql.contains("namespace=~\"a\\\\.b|c\""),
            "{}",
            two[2].promql
        );
    }

    #[test]
    fn series_and_points_are_counted_without_keeping_values() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"service":"a"},"values":[[1,"1"],[2,"2"],[3,"3"]]},
            {"metric":{"service":"b"},"values":[[1,"1"]]}]}}"#;
        let r: RangeResponse = serde_json::from_str(body).unwrap();
        assert_eq!(
            r.data.unwrap().result,
            Counts {
                series: 2,
                points: 4
            }
        );
    }
}
