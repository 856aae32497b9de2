//! Kubernetes against a mock API server named in an ordinary kubeconfig.

use serde_json::{Value, json};
use sitrep_schemas::exit;
use sitrep_schemas::header::BundleHeader;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_testkit::http::{MockServer, Request, Response};

use crate::common::{collect, contains};

const TOKEN: &str = "invented-bearer-token-5f1c";

fn list(kind: &str, items: Vec<Value>, next: Option<&str>) -> Value {
    let mut meta = json!({"resourceVersion": "1000"});
    if let Some(token) = next {
        meta["continue"] = json!(token);
    }
    json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": meta, "items": items})
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    Response::json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}),
    )
}

fn pod(name: &str, secret: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "ingest"}},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "ingest:3"}],
            "containers": [{"name": "app", "image": "ingest:3", "env": [
                {"name": "DB_PASSWORD", "value": secret},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
            ]}]
        },
        "status": {"phase": "Running"}
    })
}

fn template(secret: &str) -> Value {
    json!({"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "API_KEY", "value": secret}]}]}}})
}

/// Ten 37-byte lines: a 30-byte timestamp, a space, `msg-N`, a newline.
fn long_log() -> String {
    (0..10)
        .map(|i| format!("2026-12-04T10:00:0{i}.000000000Z msg-{i}\n"))
        .collect()
}

fn api(req: &Request) -> Response {
    if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    match req.path.as_str() {
        "/apis/apps/v1/namespaces/shop/deployments" => Response::json(
            200,
            list(
                "Deployment",
                vec![
                    json!({"metadata": {"name": "ingest", "namespace": "shop"}, "spec": template("dep-secret-value")}),
                ],
                None,
            ),
        ),
        "/apis/apps/v1/namespaces/shop/replicasets" => Response::json(
            200,
            list(
                "ReplicaSet",
                vec![
                    json!({"metadata": {"name": "ingest-7d9", "namespace": "shop",
                "annotations": {"deployment.kubernetes.io/revision": "3"}}, "spec": template("rs-secret-value")}),
                ],
                None,
            ),
        ),
        // Two pages, so the collector has to follow `continue`.
        "/api/v1/namespaces/shop/pods" => match req.query.get("continue").map(String::as_str) {
            None => Response::json(
                200,
                list("Pod", vec![pod("ingest-a", "pod-secret-a")], Some("page-2")),
            ),
            Some("page-2") => Response::json(
                200,
                list("Pod", vec![pod("ingest-b", "pod-secret-b")], None),
            ),
            Some(_) => status(410, "Expired", "the continue token is unknown"),
        },
        "/api/v1/namespaces/shop/events" => Response::json(
            200,
            list(
                "Event",
                vec![
                    json!({"metadata": {"name": "ev1", "namespace": "shop"}, "reason": "OOMKilling"}),
                ],
                None,
            ),
        ),
        "/apis/events.k8s.io/v1/namespaces/shop/events" => Response::json(
            200,
            list(
                "Event",
                vec![
                    json!({"metadata": {"name": "ev2", "namespace": "shop"}, "reason": "ScalingReplicaSet"}),
                ],
                None,
            ),
        ),
        "/api/v1/nodes" => status(
            403,
            "Forbidden",
            "nodes is forbidden: User \"system:serviceaccount:shop:sitrep\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
        ),
        "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods" => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
        path if path.starts_with("/api/v1/namespaces/shop/pods/") && path.ends_with("/log") => {
            let pod = path.split('/').nth(6).unwrap();
            let container = req.query.get("container").map(String::as_str).unwrap_or("");
            let previous = req.query.get("previous").map(String::as_str) == Some("true");
            match (pod, container, previous) {
                ("ingest-a", "app", false) => Response::text(200, long_log()),
                ("ingest-a", "app", true) => Response::text(
                    200,
                    "2026-12-04T09:00:00.000000000Z fatal error: out of memory\n",
                ),
                (_, _, true) => status(
                    400,
                    "BadRequest",
                    &format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                ),
                // An init container that has not run yet.
                ("ingest-b", "migrate", false) => status(
                    400,
                    "BadRequest",
                    "container \"migrate\" in pod \"ingest-b\" is waiting to start: PodInitializing",
                ),
                _ => Response::text(
                    200,
                    format!("2026-12-04T10:00:00.000000000Z hello from {pod}/{container}\n"),
                ),
            }
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn kubeconfig(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mock-cluster\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         contexts:\n- name: mock\n  context:\n    cluster: mock-cluster\n    user: mock-user\n    namespace: shop\n\
         current-context: mock\nusers:\n- name: mock-user\n  user:\n    token: {TOKEN}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn lists_logs_and_redactions_from_a_mock_cluster() {
    let server = MockServer::start(api);
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), server.port);
    let run = collect(
        &["--max-log-bytes", "100B"],
        &[("KUBECONFIG", config.to_str().unwrap())],
    );
    // Nodes are forbidden: the source is partial. PodMetrics not being served is no
    // failure of the collection.
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);

    let header: BundleHeader = serde_json::from_value(run.json("sitrep.json")).unwrap();
    assert_eq!(header.context.as_deref(), Some("mock"));
    assert_eq!(header.cluster.as_deref(), Some("mock-cluster"));
    assert_eq!(header.namespaces, ["shop"]);

    let source = run.source("kubernetes");
    assert_eq!(source.status, SourceStatus::Partial, "{source:?}");
    let part = |name: &str| {
        source
            .parts
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (part("deployments").status, part("deployments").items),
        (SourceStatus::Ok, 1)
    );
    assert_eq!(
        (part("pods").status, part("pods").items),
        (SourceStatus::Ok, 2)
    );
    assert_eq!(part("events").status, SourceStatus::Ok);
    assert_eq!(part("events.k8s.io").status, SourceStatus::Ok);
    assert_eq!(part("nodes").status, SourceStatus::Forbidden);
    let nodes_error = part("nodes").error.unwrap();
    assert!(
        nodes_error.starts_with("cannot list nodes"),
        "{nodes_error}"
    );
    assert!(nodes_error.contains("nodes is forbidden"), "{nodes_error}");
    assert_eq!(part("podmetrics").status, SourceStatus::Skipped);
    assert!(
        part("podmetrics")
            .error
            .unwrap()
            .starts_with("not served by this cluster")
    );
    // ingest-a: migrate, app, app.previous; ingest-b: app (its init container is still
    // waiting to start, which is no failure).
    assert_eq!(
        (part("logs").status, part("logs").items),
        (SourceStatus::Ok, 4)
    );

    let pods = run.ndjson("k8s/pods.ndjson");
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0]["metadata"]["name"], "ingest-a");
    assert_eq!(pods[1]["metadata"]["name"], "ingest-b");
    assert_eq!(pods[0]["apiVersion"], "v1");
    assert_eq!(pods[0]["kind"], "Pod");
    assert_eq!(
        pods[0]["spec"]["containers"][0]["env"][0]["value"],
        "<redacted>"
    );
    assert_eq!(
        pods[0]["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["key"],
        "pw"
    );
    let rs = run.ndjson("k8s/replicasets.ndjson");
    assert_eq!(rs[0]["apiVersion"], "apps/v1");
    assert_eq!(rs[0]["kind"], "ReplicaSet");
    assert_eq!(
        run.ndjson("k8s/events.k8s.io.ndjson")[0]["apiVersion"],
        "events.k8s.io/v1"
    );
    // Two pods, one Deployment, one ReplicaSet, each with one env value.
    assert_eq!(run.manifest().redactions.get("env_value"), Some(&4));

    let all = run.all_bytes();
    for secret in [
        "pod-secret-a",
        "pod-secret-b",
        "dep-secret-value",
        "rs-secret-value",
        TOKEN,
    ] {
        assert!(!contains(&all, secret), "{secret} reached the bundle");
    }

    // The 370-byte log over a 100-byte cap: the last 100 bytes start mid-line 7 (at
    // byte 270), so the cut moves to line 8 (byte 296); lines 8 and 9 stay.
    let kept = String::from_utf8(run.entry("logs/shop/ingest-a/app.log")).unwrap();
    assert_eq!(kept, long_log()[296..]);
    let manifest = run.manifest();
    let file = manifest
        .files
        .iter()
        .find(|f| f.path == "logs/shop/ingest-a/app.log")
        .unwrap();
    assert!(file.truncated);
    let cut = file.truncation.clone().unwrap();
    assert_eq!((cut.original_bytes, cut.dropped_bytes), (370, 296));
    assert_eq!(cut.kept, "tail");
    assert_eq!(cut.reason, "max-log-bytes=100B");
    assert_eq!(file.records, Some(2));
    assert_eq!(
        run.entry("logs/shop/ingest-a/app.previous.log"),
        b"2026-12-04T09:00:00.000000000Z fatal error: out of memory\n"
    );
    assert_eq!(
        run.entry("logs/shop/ingest-a/migrate.log"),
        b"2026-12-04T10:00:00.000000000Z hello from ingest-a/migrate\n"
    );
    for absent in [
        "logs/shop/ingest-b/app.previous.log",
        "logs/shop/ingest-b/migrate.log",
    ] {
        assert!(
            !run.entries().iter().any(|(p, _, _)| p == absent),
            "{absent}"
        );
    }
    assert!(run.entries().iter().all(|(_, _, mode)| *mode == 0o600));

    let requests = server.requests();
    assert!(requests.iter().all(|r| !r.path.contains("secrets")));
    let log_request = requests.iter().find(|r| r.path.ends_with("/log")).unwrap();
    assert_eq!(
        log_request.query.get("timestamps").map(String::as_str),
        Some("true")
    );
    assert!(log_request.query.contains_key("sinceTime"));
    let pages: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/shop/pods")
        .collect();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].query.get("limit").map(String::as_str), Some("500"));
}

#[test]
fn no_kubeconfig_means_skipped_not_failed() {
    let prom = crate::prometheus::healthy();
    let run = collect(&["--prometheus-url", &prom.url()], &[]);
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);
    let source = run.source("kubernetes");
    assert_eq!(source.status, SourceStatus::Skipped);
    assert!(source.error.unwrap().contains("no kubeconfig found"));
    let names: Vec<String> = run.entries().into_iter().map(|(p, _, _)| p).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("k8s/") || n.starts_with("logs/"))
    );
}

#[test]
fn nothing_configured_writes_no_bundle() {
    let run = collect(&[], &[]);
    assert_eq!(run.code, exit::COLLECT_FAILED, "{}", run.stderr);
    assert!(
        run.stderr.contains("error: nothing to collect"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no kubeconfig found"), "{}", run.stderr);
    assert!(!run.bundle.exists());
}

#[test]
fn an_unreachable_api_server_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), crate::common::refused_port());
    let run = collect(&["--kubeconfig", config.to_str().unwrap()], &[]);
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    assert_eq!(run.source("kubernetes").status, SourceStatus::Unreachable);
}

#[test]
fn all_namespaces_lists_cluster_wide() {
    let server = MockServer::start(|req| match req.path.as_str() {
        "/api/v1/pods"
        | "/apis/apps/v1/deployments"
        | "/apis/apps/v1/replicasets"
        | "/api/v1/events"
        | "/apis/events.k8s.io/v1/events"
        | "/api/v1/nodes"
        | "/apis/metrics.k8s.io/v1beta1/pods" => Response::json(200, list("Any", vec![], None)),
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), server.port);
    let run = collect(
        &["--kubeconfig", config.to_str().unwrap(), "--all-namespaces"],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);
    let header: BundleHeader = serde_json::from_value(run.json("sitrep.json")).unwrap();
    assert!(header.all_namespaces);
    assert!(header.namespaces.is_empty());
    let mut paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v1/events",
            "/api/v1/nodes",
            "/api/v1/pods",
            "/apis/apps/v1/deployments",
            "/apis/apps/v1/replicasets",
            "/apis/events.k8s.io/v1/events",
            "/apis/metrics.k8s.io/v1beta1/pods"
        ]
    );
}

#[test]
fn a_hanging_log_keeps_the_lists_and_times_out_the_logs() {
    let server = MockServer::start(|req| {
        if req.path.ends_with("/log") {
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
        api(req)
    });
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), server.port);
    let run = collect(
        &[
            "--kubeconfig",
            config.to_str().unwrap(),
            "--source-timeout",
            "5s",
        ],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run.source("kubernetes");
    assert_eq!(source.status, SourceStatus::Timeout);
    let logs = source
        .parts
        .iter()
        .find(|p| p.name == "logs")
        .expect("logs part recorded");
    assert_eq!(logs.status, SourceStatus::Timeout);
    assert_eq!(logs.items, 0);
    assert_eq!(run.ndjson("k8s/pods.ndjson").len(), 2);
    assert!(!run.entries().iter().any(|(p, _, _)| p.starts_with("logs/")));
}

#[test]
fn a_stop_during_the_lists_records_every_part_not_listed() {
    // ReplicaSets never answer: the deadline falls in the second list.
    let server = MockServer::start(|req| {
        if req.path.ends_with("/replicasets") {
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
        api(req)
    });
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), server.port);
    let run = collect(
        &[
            "--kubeconfig",
            config.to_str().unwrap(),
            "--source-timeout",
            "2s",
        ],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run.source("kubernetes");
    assert_eq!(source.status, SourceStatus::Timeout);
    let parts: Vec<(&str, SourceStatus)> = source
        .parts
        .iter()
        .map(|p| (p.name.as_str(), p.status))
        .collect();
    assert_eq!(
        parts,
        [
            ("deployments", SourceStatus::Ok),
            ("replicasets", SourceStatus::Timeout),
            ("pods", SourceStatus::Timeout),
            ("events", SourceStatus::Timeout),
            ("events.k8s.io", SourceStatus::Timeout),
            ("nodes", SourceStatus::Timeout),
            ("podmetrics", SourceStatus::Timeout),
            ("logs", SourceStatus::Timeout),
        ]
    );
    let pods = source.parts.iter().find(|p| p.name == "pods").unwrap();
    assert_eq!(
        pods.error.as_deref(),
        Some("not tried: the source was stopped first")
    );
}

#[test]
fn a_list_page_over_the_size_cap_is_over_budget_and_the_rest_is_listed() {
    // A page is parsed whole, so an endless or enormous one would otherwise take memory
    // until the process dies, and the whole bundle with it.
    let huge = "x".repeat(65 * 1024 * 1024);
    let server = MockServer::start(move |req| {
        if req.path == "/apis/apps/v1/namespaces/shop/deployments" {
            let item = json!({"metadata": {"name": "big", "namespace": "shop",
                "annotations": {"note": huge}}});
            return Response::json(200, list("Deployment", vec![item], None));
        }
        api(req)
    });
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), server.port);
    let run = collect(&["--kubeconfig", config.to_str().unwrap()], &[]);
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run.source("kubernetes");
    assert_eq!(source.status, SourceStatus::Partial);
    let part = |name: &str| source.parts.iter().find(|p| p.name == name).unwrap();
    let deployments = part("deployments");
    assert_eq!(deployments.status, SourceStatus::OverBudget);
    let error = deployments.error.as_deref().unwrap_or_default();
    assert!(error.contains("larger than 64 MiB"), "{error}");
    assert_eq!(part("pods").status, SourceStatus::Ok);
    assert_eq!(run.ndjson("k8s/pods.ndjson").len(), 2);
}
