//! A small synthetic incident that yields every finding kind, with the values worked out
//! by hand in the comments.

use chrono::Duration;
use serde_json::{Value, json};
use sitrep_schemas::report::{
    Detail, Finding, OomEvidence, QueryProblem, Report, RolloutVerdict, Severity,
};

use crate::support::{BundleBuilder, Compression, analyze, anchor, before_t, tempdir};

const MIB: f64 = 1024.0 * 1024.0;

/// `(pid, problem, seconds, blocked_by, blocking)` of a PostgreSQL finding.
type SessionRow = (i32, QueryProblem, f64, Vec<i32>, Vec<i32>);

fn container(name: &str, image: &str, memory: &str, env: &[&str]) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|name| json!({"name": name, "value": "<redacted>"}))
        .collect();
    json!({
        "name": name, "image": image, "env": env,
        "resources": {"limits": {"memory": memory, "cpu": "1"}, "requests": {"memory": memory, "cpu": "250m"}}
    })
}

fn deployment(name: &str, image: &str, memory: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("dep-{name}")},
        "spec": {"replicas": 3, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [container(name, image, memory, &["DATABASE_URL"])]}
        }}
    })
}

fn replicaset(
    deployment: &str,
    revision: i64,
    created_min: i64,
    image: &str,
    memory: &str,
    env: &[&str],
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{deployment}-rs{revision}"), "namespace": "shop",
            "creationTimestamp": before_t(created_min),
            "annotations": {
                "deployment.kubernetes.io/revision": revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": "3"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "controller": true}]
        },
        "spec": {"replicas": 3, "template": {
            "metadata": {"labels": {"app": deployment}},
            "spec": {"containers": [container(deployment, image, memory, env)]}
        }}
    })
}

fn scaling_event(uid: &str, deployment: &str, replicaset: &str, minutes: i64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{deployment}.{uid}"), "namespace": "shop", "uid": uid},
        "involvedObject": {"kind": "Deployment", "name": deployment, "namespace": "shop"},
        "reason": "ScalingReplicaSet", "type": "Normal", "count": 1,
        "message": format!("Scaled up replica set {replicaset} to 1"),
        "firstTimestamp": before_t(minutes), "lastTimestamp": before_t(minutes)
    })
}

fn pods() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "ingest-5d8f-abcde", "namespace": "shop", "labels": {"app": "ingest"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "ingest-rs3"}]},
            "spec": {"nodeName": "node-a",
                "initContainers": [container("migrate", "registry.shop.test/ingest-migrate:3", "64Mi", &[])],
                "containers": [container("ingest", "registry.shop.test/ingest:3.1.0", "256Mi", &["QUEUE"])]},
            "status": {"phase": "Running",
                "initContainerStatuses": [{"name": "migrate", "ready": true, "restartCount": 0,
                    "state": {"terminated": {"reason": "Completed", "exitCode": 0, "finishedAt": before_t(54)}}}],
                "containerStatuses": [{"name": "ingest", "ready": true, "restartCount": 3,
                    "state": {"running": {"startedAt": before_t(29)}},
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": before_t(30)}}}]}
        }),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "batch-xyz", "namespace": "shop", "labels": {"app": "batch"}},
            "spec": {"nodeName": "node-a", "containers": [container("worker", "registry.shop.test/batch:1", "1Gi", &[])]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "worker", "ready": true, "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 137, "finishedAt": before_t(20)}}}]}
        }),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "orders-7c4d-fghij", "namespace": "shop", "labels": {"app": "orders"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "orders-rs5"}]},
            "spec": {"nodeName": "node-a", "containers": [container("orders", "registry.shop.test/orders:5", "512Mi", &[])]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "orders", "ready": true, "restartCount": 0,
                "state": {"running": {}}}]}
        }),
    ]
}

/// `query_range` matrix from `(labels, [(minutes before T, value)])`.
fn matrix(series: Vec<(Value, Vec<(i64, f64)>)>) -> Value {
    let result: Vec<Value> = series
        .into_iter()
        .map(|(metric, points)| {
            let values: Vec<Value> = points
                .into_iter()
                .map(|(m, v)| json!([(anchor() - Duration::minutes(m)).timestamp(), v.to_string()]))
                .collect();
            json!({"metric": metric, "values": values})
        })
        .collect();
    json!({"status": "success", "data": {"resultType": "matrix", "result": result}})
}

/// Every minute from T-180m to T, as minutes before T.
fn minutes() -> impl Iterator<Item = i64> {
    (0..=180).rev()
}

fn bucket_series() -> Value {
    let mut series = Vec::new();
    // checkout at 10 req/s. Before T-40m: 97 % ≤ 0.1 s and all ≤ 0.25 s → p99 = 0.2 s.
    // From T-40m: 95 % ≤ 0.5 s, all ≤ 1 s → p99 = 0.5 + 0.5 × 0.04 / 0.05 = 0.9 s.
    for (le, before, after) in [
        ("0.1", 9.7, 0.0),
        ("0.25", 10.0, 2.0),
        ("0.5", 10.0, 9.5),
        ("1", 10.0, 10.0),
        ("+Inf", 10.0, 10.0),
    ] {
        let points = minutes()
            .map(|m| (m, if m > 40 { before } else { after }))
            .collect();
        series.push((
            json!({"namespace": "shop", "service": "checkout", "le": le}),
            points,
        ));
    }
    // search at 20 req/s, unchanged by its rollout at T-70m: 98 % ≤ 0.1 s, all ≤ 0.25 s.
    for (le, rate) in [("0.1", 19.6), ("0.25", 20.0), ("+Inf", 20.0)] {
        let points = minutes().map(|m| (m, rate)).collect();
        series.push((
            json!({"namespace": "shop", "service": "search", "le": le}),
            points,
        ));
    }
    matrix(series)
}

fn rate_series(checkout_before: f64, checkout_after: f64, search: f64) -> Value {
    matrix(vec![
        (
            json!({"namespace": "shop", "service": "checkout"}),
            minutes()
                .map(|m| {
                    (
                        m,
                        if m > 40 {
                            checkout_before
                        } else {
                            checkout_after
                        },
                    )
                })
                .collect(),
        ),
        (
            json!({"namespace": "shop", "service": "search"}),
            minutes().map(|m| (m, search)).collect(),
        ),
    ])
}

fn working_set() -> Value {
    // 120Mi, except a peak of 250Mi the minute before the kill at T-30m.
    let points = (0..=60)
        .rev()
        .map(|m| (m, if m == 31 { 250.0 * MIB } else { 120.0 * MIB }))
        .collect();
    matrix(vec![(
        json!({"namespace": "shop", "pod": "ingest-5d8f-abcde", "container": "ingest"}),
        points,
    )])
}

fn log_line(minutes_before: i64, second: i64, message: &str) -> String {
    let at = anchor() - Duration::minutes(minutes_before) + Duration::seconds(second);
    format!(
        "{} {message}\n",
        at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    )
}

/// orders: a request line every minute; a statement timeout every 20 minutes from T-180m
/// to T-20m (9 in all); then from T-8m to T-1m ten timeouts a minute, fifteen at T-5m,
/// alternating PostgreSQL statement timeouts and Go deadlines, statement timeouts first.
fn orders_log() -> String {
    let mut log = String::new();
    for m in minutes() {
        log.push_str(&log_line(m, 1, "GET /orders 200 12ms"));
        if m % 20 == 0 && m >= 20 {
            log.push_str(&log_line(
                m,
                30,
                "ERROR: pq: canceling statement due to statement timeout",
            ));
        }
        if (1..=8).contains(&m) {
            let count = if m == 5 { 15 } else { 10 };
            for i in 0..count {
                let message = if i % 2 == 0 {
                    "ERROR: pq: canceling statement due to statement timeout"
                } else {
                    r#"level=error msg="reserve stock" err="context deadline exceeded""#
                };
                log.push_str(&log_line(m, 2 + i * 3, message));
            }
        }
    }
    log
}

#[expect(
    clippy::too_many_arguments,
    reason = "one row's columns, named at each call"
)]
fn pg_row(
    sample: u32,
    seconds_after_t: i64,
    pid: i32,
    app: &str,
    state: Option<&str>,
    query_start: i64,
    xact_start: Option<i64>,
    blocked_by: &[i32],
    query: &str,
) -> Value {
    let at = |s: i64| (anchor() + Duration::seconds(s)).to_rfc3339();
    let lock = !blocked_by.is_empty();
    json!({
        "sample": sample, "sample_ts": at(seconds_after_t), "blocked_by": blocked_by,
        "pid": pid, "datid": 16384, "datname": "shop", "usename": "app", "application_name": app,
        "client_addr": "127.0.0.1", "client_port": 40000 + pid, "backend_xid": null,
        "backend_type": "client backend", "state": state,
        "wait_event_type": if lock { json!("Lock") } else { Value::Null },
        "wait_event": if lock { json!("transactionid") } else { Value::Null },
        "backend_start": at(-120), "xact_start": xact_start.map(at), "query_start": at(query_start),
        "state_change": at(query_start), "query": query
    })
}

fn pg_activity() -> Vec<Value> {
    let mut rows = Vec::new();
    for (sample, ts) in [(1, 1), (2, 3)] {
        rows.push(pg_row(
            sample,
            ts,
            101,
            "orders-worker",
            Some("active"),
            -59,
            Some(-60),
            &[],
            "SELECT pg_sleep(600)",
        ));
        rows.push(pg_row(
            sample,
            ts,
            102,
            "orders-api",
            Some("active"),
            -30,
            Some(-30),
            &[101],
            "UPDATE orders SET status = 'paid' WHERE id = 1",
        ));
        rows.push(pg_row(
            sample,
            ts,
            103,
            "orders-api",
            Some("active"),
            -30,
            Some(-30),
            &[101],
            "UPDATE orders SET status = 'shipped' WHERE id = 1",
        ));
        rows.push(pg_row(
            sample,
            ts,
            104,
            "reporting",
            Some("idle in transaction"),
            -39,
            Some(-40),
            &[],
            "SELECT count(*) FROM orders",
        ));
        rows.push(pg_row(
            sample,
            ts,
            105,
            "sitrep-collect",
            Some("active"),
            -100,
            Some(-100),
            &[],
            "SELECT to_jsonb(a) FROM pg_stat_activity a",
        ));
        rows.push(pg_row(
            sample,
            ts,
            106,
            "orders-api",
            Some("idle"),
            -300,
            None,
            &[],
            "COMMIT",
        ));
        let mut launcher = pg_row(sample, ts, 107, "", None, -500, None, &[], "");
        launcher["backend_type"] = json!("autovacuum launcher");
        rows.push(launcher);
    }
    rows
}

fn neo4j_rows() -> Vec<Value> {
    let at = |s: i64| (anchor() + Duration::seconds(s)).to_rfc3339();
    let row = |ts: i64, id: &str, query: &str, elapsed: &str| {
        json!({"sample": if ts == 1 { 1 } else { 2 }, "sample_ts": at(ts), "database": "neo4j",
            "transactionId": id, "currentQuery": query, "elapsedTime": elapsed, "status": "Running", "username": "neo4j"})
    };
    let slow =
        "MATCH (o:Order)-[:CONTAINS]->(p:Product) WHERE o.placed > $since RETURN p.sku, count(*)";
    vec![
        row(1, "neo4j-transaction-42", slow, "PT10.5S"),
        row(
            1,
            "neo4j-transaction-43",
            "MATCH (c:Customer {id: $id}) RETURN c",
            "PT0.2S",
        ),
        row(
            1,
            "neo4j-transaction-44",
            "SHOW TRANSACTIONS YIELD *",
            "PT0.001S",
        ),
        row(3, "neo4j-transaction-42", slow, "PT12.5S"),
        row(
            3,
            "neo4j-transaction-45",
            "SHOW TRANSACTIONS YIELD *",
            "PT0.001S",
        ),
    ]
}

fn query_log() -> Value {
    let names = [
        "latency_buckets",
        "request_rate",
        "error_rate",
        "memory_working_set",
    ];
    let queries: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({"name": name, "promql": "…", "step_seconds": 60, "status": "ok", "error": null,
            "files": [format!("prometheus/{name}.json")], "series": 2, "points": 362})
        })
        .collect();
    json!({"url": "http://127.0.0.1:9090", "window": {"start": anchor() - Duration::hours(3), "end": anchor()}, "queries": queries})
}

/// The whole incident as a bundle.
pub(crate) fn incident() -> BundleBuilder {
    let checkout = |rev, image: &str| {
        replicaset(
            "checkout",
            rev,
            if rev == 4 { 40 } else { 5000 },
            image,
            "512Mi",
            &["DATABASE_URL"],
        )
    };
    let events = vec![
        scaling_event("ev-checkout-4", "checkout", "checkout-rs4", 40),
        scaling_event("ev-ingest-3", "ingest", "ingest-rs3", 55),
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "node-a.oom", "namespace": "default", "uid": "ev-node-oom"},
            "involvedObject": {"kind": "Node", "name": "node-a"},
            "reason": "SystemOOM", "type": "Warning", "count": 2,
            "message": "System OOM encountered, victim process: java, pid: 4242",
            "firstTimestamp": before_t(100), "lastTimestamp": before_t(90)
        }),
    ];
    // The same ingest event as events.k8s.io serves it (deduplicated by uid), and search's
    // rollout only there.
    let events_v1 = vec![
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "ingest.ev", "namespace": "shop", "uid": "ev-ingest-3"},
            "regarding": {"kind": "Deployment", "name": "ingest", "namespace": "shop"},
            "reason": "ScalingReplicaSet", "note": "Scaled up replica set ingest-rs3 to 1",
            "eventTime": null, "deprecatedFirstTimestamp": before_t(55), "type": "Normal"}),
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "search.ev", "namespace": "shop", "uid": "ev-search-8"},
            "regarding": {"kind": "Deployment", "name": "search", "namespace": "shop"},
            "reason": "ScalingReplicaSet", "note": "Scaled up replica set search-rs8 to 1",
            "eventTime": before_t(70), "type": "Normal"}),
    ];
    BundleBuilder::new()
        .ndjson("k8s/deployments.ndjson", &[
            deployment("checkout", "registry.shop.test/checkout:1.15.0", "512Mi"),
            deployment("search", "registry.shop.test/search:2.3.1", "1Gi"),
            deployment("ingest", "registry.shop.test/ingest:3.1.0", "256Mi"),
            deployment("orders", "registry.shop.test/orders:5", "512Mi"),
        ])
        .ndjson("k8s/replicasets.ndjson", &[
            checkout(3, "registry.shop.test/checkout:1.14.2"),
            checkout(4, "registry.shop.test/checkout:1.15.0"),
            replicaset("search", 7, 5000, "registry.shop.test/search:2.3.0", "1Gi", &[]),
            replicaset("search", 8, 70, "registry.shop.test/search:2.3.1", "1Gi", &[]),
            replicaset("ingest", 2, 5000, "registry.shop.test/ingest:3.1.0", "512Mi", &["QUEUE"]),
            replicaset("ingest", 3, 55, "registry.shop.test/ingest:3.1.0", "256Mi", &["QUEUE"]),
            replicaset("orders", 5, 5000, "registry.shop.test/orders:5", "512Mi", &[]),
        ])
        .ndjson("k8s/pods.ndjson", &pods())
        .ndjson("k8s/events.ndjson", &events)
        .ndjson("k8s/events.k8s.io.ndjson", &events_v1)
        .file("logs/shop/orders-7c4d-fghij/orders.log", orders_log())
        .file("logs/shop/ingest-5d8f-abcde/ingest.previous.log", log_line(31, 0, "allocating batch buffer"))
        .json("prometheus/queries.json", &query_log())
        .json("prometheus/latency_buckets.json", &bucket_series())
        // 5xx: checkout 0.05/s of 10/s (0.5 %) before, 0.4/s (4 %) after; search 0.1 of 20.
        .json("prometheus/request_rate.json", &rate_series(10.0, 10.0, 20.0))
        .json("prometheus/error_rate.json", &rate_series(0.05, 0.4, 0.1))
        .json("prometheus/memory_working_set.json", &working_set())
        .json("postgres/orders/server.json", &json!({
            "target": "host=127.0.0.1 port=5432 dbname=shop user=app", "version_num": 150004,
            "version": "PostgreSQL 15.4", "settings": {"statement_timeout": "0"}, "samples": 2, "interval_ms": 2000}))
        .ndjson("postgres/orders/activity.ndjson", &pg_activity())
        .ndjson("postgres/orders/locks.ndjson", &[json!({"sample": 1, "pid": 102, "granted": false})])
        .json("neo4j/127.0.0.1-7474/server.json", &json!({
            "target": "http://127.0.0.1:7474", "version": "5.26.0", "edition": "community",
            "listing": "show_transactions", "samples": 2, "interval_ms": 2000}))
        .ndjson("neo4j/127.0.0.1-7474/transactions.ndjson", &neo4j_rows())
}

pub(crate) fn find<'a>(report: &'a Report, id: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| {
            panic!(
                "no finding `{id}` in {:#?}",
                report.findings.iter().map(|f| &f.id).collect::<Vec<_>>()
            )
        })
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() < 1e-6
}

#[test]
fn every_injected_problem_is_found_with_its_numbers() {
    let dir = tempdir();
    let run = analyze(
        &incident().write(dir.path(), Compression::Zstd),
        &["--format", "json"],
    );
    let report = run.report();
    assert_eq!(report.problems, [], "{}", run.stderr);
    assert_eq!(run.code, 1, "findings at warning or above exit 1");

    let checkout = find(&report, "rollout_regression/shop/checkout/4");
    assert_eq!(checkout.severity, Severity::Critical);
    assert_eq!(
        checkout.next_steps,
        ["kubectl rollout undo deployment/checkout -n shop --to-revision=3"]
    );
    let Detail::RolloutRegression(rollout) = &checkout.detail else {
        panic!()
    };
    assert_eq!(rollout.verdict, RolloutVerdict::Regressed);
    assert_eq!((rollout.from_revision, rollout.to_revision), (Some(3), 4));
    assert_eq!(
        rollout.from_image.as_deref(),
        Some("registry.shop.test/checkout:1.14.2")
    );
    assert_eq!(
        rollout.to_image.as_deref(),
        Some("registry.shop.test/checkout:1.15.0")
    );
    assert_eq!(
        rollout.rollout_at.to_rfc3339(),
        (anchor() - Duration::minutes(40)).to_rfc3339()
    );
    assert_eq!(
        rollout.changes,
        [
            "container `checkout` image registry.shop.test/checkout:1.14.2 → registry.shop.test/checkout:1.15.0"
        ]
    );
    let latency = rollout.latency.as_ref().unwrap();
    // 30 minutes each side: [T-70m, T-40m) and, after 5 minutes' warm-up, [T-35m, T-5m).
    assert_eq!((latency.n_before, latency.n_after), (30, 30));
    assert!(
        close(latency.before_ms, 200.0) && close(latency.after_ms, 900.0),
        "{latency:?}"
    );
    assert!(close(latency.ratio, 4.5) && close(latency.shift_ms, 700.0));
    assert!(latency.p_value < 1e-6);
    let errors = rollout.errors.as_ref().unwrap();
    // 30 minutes × 10 req/s × 60 s = 18 000 requests; 0.05/s → 90 errors, 0.4/s → 720.
    assert!(close(errors.before_requests, 18_000.0) && close(errors.after_requests, 18_000.0));
    assert!(close(errors.before_errors, 90.0) && close(errors.after_errors, 720.0));
    assert!(close(errors.before_ratio, 0.005) && close(errors.after_ratio, 0.04));

    // search rolled out too, and nothing changed: no finding of any severity.
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.subject.service.as_deref() != Some("search")
                && f.subject.deployment.as_deref() != Some("search")),
        "{:#?}",
        report.findings
    );
    // ingest has no HTTP metrics: its rollout is noted and nothing is claimed.
    let ingest_rollout = find(&report, "rollout_regression/shop/ingest/3");
    assert_eq!(ingest_rollout.severity, Severity::Info);

    let oom = find(&report, "oom/shop/ingest-5d8f-abcde/ingest");
    assert_eq!(oom.severity, Severity::Critical);
    let Detail::Oom(detail) = &oom.detail else {
        panic!()
    };
    assert_eq!(detail.evidence, OomEvidence::OomKilled);
    assert_eq!(detail.memory_limit.as_deref(), Some("256Mi"));
    assert_eq!(detail.memory_limit_bytes, Some(268_435_456));
    assert_eq!(detail.restart_count, Some(3));
    assert_eq!(detail.node.as_deref(), Some("node-a"));
    // 250Mi of 256Mi is 97.65625 %, at T-31m = 13:29:00.
    assert_eq!(
        detail.cause.as_deref(),
        Some(
            "memory limit lowered from 512Mi to 256Mi in revision 3; working set peaked at 250.0Mi (97.7 % of the 256Mi limit) at 13:29:00"
        )
    );
    assert_eq!(
        oom.next_steps,
        [
            "kubectl describe pod ingest-5d8f-abcde -n shop",
            "kubectl logs ingest-5d8f-abcde -n shop -c ingest --previous",
        ]
    );
    // The completed init container is not a kill.
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.subject.container.as_deref() != Some("migrate"))
    );

    let maybe = find(&report, "oom/shop/batch-xyz/worker");
    assert_eq!(maybe.severity, Severity::Warning);
    let Detail::Oom(detail) = &maybe.detail else {
        panic!()
    };
    assert_eq!(
        (detail.evidence, detail.exit_code),
        (OomEvidence::Exit137, Some(137))
    );

    let node = find(
        &report,
        &format!(
            "oom/node/node-a/{}",
            (anchor() - Duration::minutes(100)).timestamp()
        ),
    );
    let Detail::Oom(detail) = &node.detail else {
        panic!()
    };
    assert_eq!(detail.evidence, OomEvidence::NodeOom);
    assert_eq!(detail.node.as_deref(), Some("node-a"));
    assert_eq!(node.severity, Severity::Warning);

    let burst = find(&report, "timeout_burst/shop/orders/20261204T1352Z");
    let Detail::TimeoutBurst(detail) = &burst.detail else {
        panic!()
    };
    assert_eq!(detail.start, anchor() - Duration::minutes(8));
    assert_eq!(detail.end, anchor() - Duration::minutes(1));
    assert_eq!(
        (detail.peak_minute, detail.peak_count),
        (anchor() - Duration::minutes(5), 15)
    );
    // 7 minutes × 10 + 15.
    assert_eq!(detail.total, 85);
    // 9 timeouts in the 181 − 8 = 173 minutes outside the burst.
    assert!(
        close(detail.baseline_per_minute, 9.0 / 173.0),
        "{}",
        detail.baseline_per_minute
    );
    let signatures: Vec<(&str, u64)> = detail
        .signatures
        .iter()
        .map(|s| (s.signature.as_str(), s.count))
        .collect();
    // Per 10-line minute 5 and 5; at T-5m 8 statement timeouts and 7 deadlines.
    assert_eq!(
        signatures,
        [
            ("postgres_statement_timeout", 43),
            ("go_context_deadline", 42)
        ]
    );
    assert_eq!(
        burst.next_steps,
        ["kubectl logs deploy/orders -n shop --since=9m"]
    );
    // One distinct line per signature, in time order: the first two lines of T-8m.
    assert_eq!(
        detail.examples,
        [
            "ERROR: pq: canceling statement due to statement timeout",
            r#"level=error msg="reserve stock" err="context deadline exceeded""#,
        ]
    );
    assert_eq!(
        burst
            .evidence
            .iter()
            .map(|e| e.ts.unwrap())
            .collect::<Vec<_>>(),
        [
            anchor() - Duration::minutes(8) + Duration::seconds(2),
            anchor() - Duration::minutes(8) + Duration::seconds(5),
        ]
    );

    let mut db: Vec<SessionRow> = report
        .findings
        .iter()
        .filter_map(|f| match &f.detail {
            Detail::SlowQuery(q) if q.pid.is_some() => Some((
                q.pid.unwrap(),
                q.problem,
                q.duration_seconds,
                q.blocked_by.clone(),
                q.blocking.clone(),
            )),
            _ => None,
        })
        .collect();
    db.sort_by_key(|row| row.0);
    // Judged at the last sample, T+3s: A's transaction began at T-60s, B and C's queries at
    // T-30s, D's transaction at T-40s. The collector's own session and the idle and
    // background backends are left out.
    assert_eq!(
        db,
        [
            (101, QueryProblem::LockHolder, 63.0, vec![], vec![102, 103]),
            (102, QueryProblem::LockWait, 33.0, vec![101], vec![]),
            (103, QueryProblem::LockWait, 33.0, vec![101], vec![]),
            (104, QueryProblem::IdleInTransaction, 43.0, vec![], vec![]),
        ]
    );
    let wait = find(&report, "slow_query/postgres/orders/102/lock_wait");
    assert_eq!(wait.next_steps, ["SELECT pg_terminate_backend(101);"]);

    let neo4j = find(
        &report,
        "slow_query/neo4j/127.0.0.1-7474/neo4j-transaction-42",
    );
    let Detail::SlowQuery(tx) = &neo4j.detail else {
        panic!()
    };
    assert!(close(tx.duration_seconds, 12.5));
    assert_eq!(
        neo4j.next_steps,
        ["TERMINATE TRANSACTION 'neo4j-transaction-42'"]
    );
    assert_eq!(
        report
            .findings
            .iter()
            .filter(|f| f.subject.query_id.is_some())
            .count(),
        1,
        "the short transaction and the listing itself are not findings"
    );

    // Most severe first; the burst links to the lock it overlaps.
    let severities: Vec<Severity> = report.findings.iter().map(|f| f.severity).collect();
    let mut sorted = severities.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(severities, sorted);
    assert!(
        burst
            .confidence
            .reasons
            .iter()
            .any(|r| r.contains("slow_query/postgres/orders/101/lock_holder"))
    );
    let kinds: Vec<&str> = report.timeline.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "rollout",
        "restart",
        "rollout_regression",
        "oom",
        "timeout_burst",
        "slow_query",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(report.timeline.windows(2).all(|w| w[0].ts <= w[1].ts));
}

#[test]
fn the_text_report_reads_without_colour() {
    let dir = tempdir();
    let bundle = incident().write(dir.path(), Compression::Zstd);
    let plain = analyze(&bundle, &["--color", "never"]);
    assert_eq!(plain.code, 1);
    for expected in [
        "CRITICAL  rollout of `shop/checkout` revision 3 → 4 regressed: p99 200 ms → 900 ms (×4.5), 5xx 0.5 % → 4.0 %",
        "next: kubectl rollout undo deployment/checkout -n shop --to-revision=3",
        "cause: memory limit lowered from 512Mi to 256Mi in revision 3",
        "timeout burst in `shop/orders`: 85 timeouts from 13:52 to 14:00",
        "next: SELECT pg_terminate_backend(101);",
        "Timeline (UTC)",
        "Sources not fully collected",
        "`neo4j/127.0.0.1-7474` timeout: no answer within 10s",
    ] {
        assert!(
            plain.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            plain.stdout
        );
    }
    assert!(!plain.stdout.contains('\x1b'));

    let colour = analyze(&bundle, &["--color", "always"]);
    assert!(colour.stdout.contains("\x1b[1;31mCRITICAL\x1b[0m"));
    // Not a terminal: auto means no colour.
    assert!(!analyze(&bundle, &[]).stdout.contains('\x1b'));
}

#[test]
fn without_buckets_the_p99_query_is_used() {
    // latency_p99 as Prometheus would answer it: 0.2 s before the rollout, 0.9 s after.
    let p99 = matrix(vec![(
        json!({"namespace": "shop", "service": "checkout"}),
        minutes()
            .map(|m| (m, if m > 40 { 0.2 } else { 0.9 }))
            .collect(),
    )]);
    let dir = tempdir();
    let bundle = incident()
        .without("prometheus/latency_buckets.json")
        .json("prometheus/latency_p99.json", &p99)
        .write(dir.path(), Compression::Zstd);
    let report = analyze(&bundle, &["--format", "json"]).report();
    let finding = find(&report, "rollout_regression/shop/checkout/4");
    let Detail::RolloutRegression(rollout) = &finding.detail else {
        panic!()
    };
    let latency = rollout.latency.as_ref().unwrap();
    assert!(close(latency.before_ms, 200.0) && close(latency.after_ms, 900.0));
    assert!(
        finding
            .confidence
            .reasons
            .iter()
            .any(|r| r.ends_with("latency from `latency_p99`"))
    );
}

/// 5xx and request rates whose counts no report number can hold, or that contradict each
/// other, leave the error side uncompared; the latency side still stands.
#[test]
fn request_counts_that_overflow_or_disagree_are_not_compared() {
    for (requests, errors) in [
        (
            rate_series(1e306, 1e306, 20.0),
            rate_series(1e304, 1e305, 0.1),
        ),
        // More 5xx responses than requests.
        (rate_series(10.0, 10.0, 20.0), rate_series(0.05, 40.0, 0.1)),
    ] {
        let dir = tempdir();
        let bundle = incident()
            .without("prometheus/request_rate.json")
            .without("prometheus/error_rate.json")
            .json("prometheus/request_rate.json", &requests)
            .json("prometheus/error_rate.json", &errors)
            .write(dir.path(), Compression::Zstd);
        // An infinite count used to be written as `null`, which no report can parse.
        let report = analyze(&bundle, &["--format", "json"]).report();
        let finding = find(&report, "rollout_regression/shop/checkout/4");
        let Detail::RolloutRegression(rollout) = &finding.detail else {
            panic!("{finding:?}");
        };
        assert_eq!(rollout.errors, None);
        assert!(rollout.latency.is_some());
    }
}

/// The collector asks for `timestamps=true`, so a line without one means the log was
/// altered; it is named, left out of every count, and the rest of the log still counts.
#[test]
fn log_lines_without_a_timestamp_are_named_and_not_counted() {
    let dir = tempdir();
    let log = "logs/shop/orders-7c4d-fghij/orders.log";
    let lines = orders_log().lines().count();
    let bundle = incident()
        .edit_bytes(log, |data| {
            data.extend_from_slice(b"goroutine 1 [running]: context deadline exceeded\n");
            data.extend_from_slice(b"2026/12/04 13:58:00 context deadline exceeded\n");
        })
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2);
    let report = run.report();
    let problems: Vec<(&str, Option<u64>, &str)> = report
        .problems
        .iter()
        .map(|p| (p.file.as_str(), p.line, p.message.as_str()))
        .collect();
    let message = format!(
        "2 of {} lines have no RFC 3339 timestamp (the first is this one); they are in no timeout count",
        lines + 2
    );
    assert_eq!(problems, [(log, Some(lines as u64 + 1), message.as_str())]);
    let burst = find(&report, "timeout_burst/shop/orders/20261204T1352Z");
    let Detail::TimeoutBurst(detail) = &burst.detail else {
        panic!()
    };
    assert_eq!(detail.total, 85);
}
