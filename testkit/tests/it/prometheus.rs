//! The backfilled history in a real Prometheus gives the quantiles the scenario states.

use chrono::Duration;
use sitrep_testkit::prometheus::Prometheus;
use sitrep_testkit::scenario::{Scenario, anchor_now};

fn p99(prometheus: &Prometheus, service: &str, at: chrono::DateTime<chrono::Utc>) -> f64 {
    let promql = format!(
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{service=\"{service}\"}}[5m])))"
    );
    let answer = prometheus.query(&promql, at).expect("query answered");
    assert_eq!(answer["status"], "success", "{answer}");
    let value = &answer["data"]["result"][0]["value"][1];
    value.as_str().expect("one sample").parse().unwrap()
}

#[test]
fn backfilled_p99_matches_the_latency_profiles() {
    let scenario = Scenario::incident();
    let anchor = anchor_now();
    let prometheus = Prometheus::start(&scenario, anchor).expect("Prometheus starts");

    // checkout before its rollout: 97 % <= 0.1 s, the rest <= 0.25 s, so
    // p99 = 0.1 + 0.15 * (0.99 - 0.97) / 0.03 = 0.2 s.
    let before = p99(&prometheus, "checkout", anchor - Duration::minutes(60));
    assert!((before - 0.2).abs() < 0.01, "p99 before = {before}");
    // After: 95 % <= 0.5 s, the rest <= 1 s: p99 = 0.5 + 0.5 * 0.04 / 0.05 = 0.9 s.
    let after = p99(&prometheus, "checkout", anchor - Duration::minutes(10));
    assert!((after - 0.9).abs() < 0.02, "p99 after = {after}");
    // search: 0.1 + 0.15 * 0.0015 / 0.0115 = 0.1196 s throughout.
    let search = p99(&prometheus, "search", anchor - Duration::minutes(30));
    assert!((search - 0.1196).abs() < 0.005, "search p99 = {search}");

    // The 5xx ratio of checkout after the rollout is 4 %.
    let ratio = prometheus
        .query(
            "sum(rate(http_requests_total{service=\"checkout\",code=~\"5..\"}[10m])) / sum(rate(http_requests_total{service=\"checkout\"}[10m]))",
            anchor - Duration::minutes(5),
        )
        .unwrap();
    let ratio: f64 = ratio["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((ratio - 0.04).abs() < 0.003, "error ratio = {ratio}");

    // ingest restarted three times, the last one an OOM kill.
    let restarts = prometheus
        .query(
            "max(kube_pod_container_status_restarts_total{container=\"ingest\"})",
            anchor,
        )
        .unwrap();
    assert_eq!(restarts["data"]["result"][0]["value"][1], "3");
    let reason = prometheus
        .query(
            "max by (reason) (kube_pod_container_status_last_terminated_reason)",
            anchor,
        )
        .unwrap();
    assert_eq!(reason["data"]["result"][0]["metric"]["reason"], "OOMKilled");
}
