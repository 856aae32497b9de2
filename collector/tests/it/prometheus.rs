//! Prometheus against a mock HTTP API: normal answers, an API error, a refused port.

use serde_json::json;
use sitrep_schemas::exit;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::records::PromQueryLog;
use sitrep_testkit::http::{MockServer, Response};

use crate::common::{collect, refused_port};

fn matrix() -> serde_json::Value {
    json!({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"service": "checkout"}, "values": [[1.0, "0.2"], [61.0, "0.2"], [121.0, "0.9"]]},
        {"metric": {"service": "search"}, "values": [[1.0, "0.12"], [61.0, "0.12"], [121.0, "0.12"]]}
    ]}})
}

pub(crate) fn healthy() -> MockServer {
    MockServer::start(|req| {
        if req.path == "/api/v1/query_range" {
            Response::json(200, matrix())
        } else {
            Response::text(404, "not found")
        }
    })
}

#[test]
fn every_named_query_is_stored_with_its_counts() {
    let prom = healthy();
    let run = collect(
        &[
            "--no-kubernetes",
            "--prometheus-url",
            &prom.url(),
            "--since",
            "1h",
            "--step",
            "30s",
        ],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), run.bundle.display().to_string());

    let source = run.source("prometheus");
    assert_eq!(source.status, SourceStatus::Ok);
    // 8 queries, 2 series each.
    assert_eq!(source.items, 16);

    let log: PromQueryLog = serde_json::from_value(run.json("prometheus/queries.json")).unwrap();
    assert_eq!(log.url, prom.url());
    assert_eq!(log.queries.len(), 8);
    for q in &log.queries {
        assert_eq!(q.status, SourceStatus::Ok, "{}", q.name);
        assert_eq!(q.step_seconds, 30);
        assert_eq!((q.series, q.points), (2, 6), "{}", q.name);
        assert_eq!(q.files, [format!("prometheus/{}.json", q.name)]);
    }
    // The raw answer is stored as sent.
    assert_eq!(run.json("prometheus/latency_p99.json"), matrix());
    let manifest = run.manifest();
    let file = manifest
        .files
        .iter()
        .find(|f| f.path == "prometheus/latency_p99.json")
        .unwrap();
    assert_eq!(file.records, Some(2));
    assert_eq!(file.source, "prometheus");

    // One hour at 30 s: start and end 3600 s apart, step as sent.
    let requests = prom.requests();
    assert_eq!(requests.len(), 8);
    let first = &requests[0];
    let start: f64 = first.query["start"].parse().unwrap();
    let end: f64 = first.query["end"].parse().unwrap();
    assert!((end - start - 3600.0).abs() < 0.002, "{start} {end}");
    assert_eq!(first.query["step"], "30");
    let promql: Vec<&str> = requests.iter().map(|r| r.query["query"].as_str()).collect();
    assert!(promql.contains(
        &"sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{container!=\"\"}[5m]))"
    ));
}

#[test]
fn an_api_error_body_becomes_the_query_error() {
    let prom = MockServer::start(|req| {
        if req
            .query
            .get("query")
            .is_some_and(|q| q.starts_with("histogram_quantile"))
        {
            Response::json(
                400,
                json!({"status": "error", "errorType": "bad_data", "error": "invalid parameter \"query\": 1:1: parse error"}),
            )
        } else {
            Response::json(200, matrix())
        }
    });
    let run = collect(&["--no-kubernetes", "--prometheus-url", &prom.url()], &[]);
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);

    let source = run.source("prometheus");
    assert_eq!(source.status, SourceStatus::Partial);
    let p99 = source
        .parts
        .iter()
        .find(|p| p.name == "latency_p99")
        .unwrap();
    assert_eq!(p99.status, SourceStatus::Failed);
    let error = p99.error.as_deref().unwrap();
    assert!(
        error.contains("HTTP 400: bad_data: invalid parameter \"query\": 1:1: parse error"),
        "{error}"
    );
    assert!(
        source
            .parts
            .iter()
            .filter(|p| p.status == SourceStatus::Ok)
            .count()
            == 7
    );

    let log: PromQueryLog = serde_json::from_value(run.json("prometheus/queries.json")).unwrap();
    let q = log
        .queries
        .iter()
        .find(|q| q.name == "latency_p99")
        .unwrap();
    assert!(q.files.is_empty());
    assert_eq!(q.error.as_deref(), Some(error));
    assert!(
        !run.entries()
            .iter()
            .any(|(p, _, _)| p == "prometheus/latency_p99.json")
    );
}

#[test]
fn a_refused_port_is_unreachable_and_the_bundle_is_still_written() {
    let port = refused_port();
    let url = format!("http://127.0.0.1:{port}");
    let run = collect(&["--no-kubernetes", "--prometheus-url", &url], &[]);
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run.source("prometheus");
    assert_eq!(source.status, SourceStatus::Unreachable);
    assert!(source.error.unwrap().contains("Connection refused"));
    let log: PromQueryLog = serde_json::from_value(run.json("prometheus/queries.json")).unwrap();
    assert!(
        log.queries
            .iter()
            .all(|q| q.status == SourceStatus::Unreachable)
    );
}

#[test]
fn prometheus_url_comes_from_the_environment_too() {
    let prom = healthy();
    let run = collect(&["--no-kubernetes"], &[("PROMETHEUS_URL", &prom.url())]);
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);
    assert_eq!(run.source("prometheus").status, SourceStatus::Ok);
}

#[test]
fn a_long_window_is_split_into_numbered_files() {
    let prom = healthy();
    // 12 h at 1 s is 43,201 points: four ranges of at most 11,000.
    let run = collect(
        &[
            "--no-kubernetes",
            "--prometheus-url",
            &prom.url(),
            "--since",
            "12h",
            "--step",
            "1s",
        ],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);
    let log: PromQueryLog = serde_json::from_value(run.json("prometheus/queries.json")).unwrap();
    let p99 = &log.queries[0];
    assert_eq!(
        p99.files,
        (1..=4)
            .map(|n| format!("prometheus/latency_p99.{n}.json"))
            .collect::<Vec<_>>()
    );
    // Each stored answer holds the mock's 2 series of 3 points.
    assert_eq!((p99.series, p99.points), (8, 24));

    let ranges: Vec<(f64, f64)> = prom
        .requests()
        .iter()
        .filter(|r| r.query["query"].starts_with("histogram_quantile"))
        .map(|r| {
            (
                r.query["start"].parse().unwrap(),
                r.query["end"].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges.len(), 4);
    let t0 = ranges[0].0;
    let near = |a: f64, b: f64| (a - b).abs() < 0.002;
    // Ranges cover points 0–10,999, 11,000–21,999, 22,000–32,999 and 33,000–43,200.
    for (k, (start, end)) in ranges.iter().enumerate() {
        assert!(
            near(*start, t0 + 11_000.0 * k as f64),
            "range {k} starts at {start}"
        );
        let last = if k == 3 {
            43_200.0
        } else {
            11_000.0 * k as f64 + 10_999.0
        };
        assert!(near(*end, t0 + last), "range {k} ends at {end}");
    }
}

#[test]
fn a_step_too_fine_for_the_window_is_refused_before_collecting() {
    // 20 years at 60 s is 10,519,201 points a series: 957 requests per query.
    let run = collect(
        &[
            "--no-kubernetes",
            "--prometheus-url",
            &format!("http://127.0.0.1:{}", refused_port()),
            "--since",
            "20y",
        ],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_FAILED, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: --step 1m is too fine for a window of 20years: each query would need 957 range requests"),
        "{}",
        run.stderr
    );
    assert!(!run.bundle.exists());
}
