//! The replay server answers like a Kubernetes API server and a Neo4j endpoint.

use chrono::{TimeZone, Utc};
use serde_json::Value;
use sitrep_testkit::http;
use sitrep_testkit::neo4j::Neo4jMode;
use sitrep_testkit::replay::{Replay, ReplayOptions};
use sitrep_testkit::scenario::Scenario;

fn start(mode: Neo4jMode) -> (Scenario, Replay) {
    let scenario = Scenario::incident();
    let anchor = Utc.with_ymd_and_hms(2026, 12, 4, 14, 0, 0).unwrap();
    let mut options = ReplayOptions::new(anchor);
    options.neo4j_mode = mode;
    let replay = Replay::start(&scenario, &options).expect("replay starts");
    (scenario, replay)
}

fn kube_get(scenario: &Scenario, replay: &Replay, target: &str) -> (u16, Vec<u8>) {
    let bearer = format!("Bearer {}", scenario.cluster.token);
    http::request(
        replay.kubernetes.addr(),
        "GET",
        target,
        &[("Authorization", &bearer)],
        b"",
    )
    .expect("request answered")
}

fn kube_json(scenario: &Scenario, replay: &Replay, target: &str) -> (u16, Value) {
    let (status, body) = kube_get(scenario, replay, target);
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

#[test]
fn requests_without_the_token_get_a_401_status() {
    let scenario = Scenario::incident();
    let mut options = ReplayOptions::new(Utc.with_ymd_and_hms(2026, 12, 4, 14, 0, 0).unwrap());
    options.require_token = true;
    let replay = Replay::start(&scenario, &options).unwrap();
    let (code, body) = http::request(
        replay.kubernetes.addr(),
        "GET",
        "/api/v1/namespaces/shop/pods",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(code, 401);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let (code, _) = kube_get(&scenario, &replay, "/api/v1/namespaces/shop/pods");
    assert_eq!(code, 200);
}

#[test]
fn lists_page_with_limit_and_continue() {
    let (scenario, replay) = start(Neo4jMode::V5);
    // checkout 2, search 1, ingest 1, orders 1: five running pods.
    let (_, first) = kube_json(&scenario, &replay, "/api/v1/namespaces/shop/pods?limit=2");
    assert_eq!(first["kind"], "PodList");
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let token = first["metadata"]["continue"].as_str().unwrap();

    let (_, second) = kube_json(
        &scenario,
        &replay,
        &format!(
            "/api/v1/namespaces/shop/pods?limit=2&continue={}",
            http::percent_encode(token)
        ),
    );
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    let token = second["metadata"]["continue"].as_str().unwrap();
    let (_, third) = kube_json(
        &scenario,
        &replay,
        &format!(
            "/api/v1/pods?limit=2&continue={}",
            http::percent_encode(token)
        ),
    );
    assert_eq!(third["items"].as_array().unwrap().len(), 1);
    assert!(third["metadata"].get("continue").is_none());

    let (code, bad) = kube_json(&scenario, &replay, "/api/v1/pods?limit=2&continue=bogus");
    assert_eq!((code, bad["reason"].as_str()), (400, Some("BadRequest")));

    // Seven ReplicaSets: two revisions each for checkout, search and ingest, one for orders.
    let (_, replicasets) = kube_json(
        &scenario,
        &replay,
        "/apis/apps/v1/namespaces/shop/replicasets",
    );
    assert_eq!(replicasets["items"].as_array().unwrap().len(), 7);
    let (_, elsewhere) = kube_json(&scenario, &replay, "/api/v1/namespaces/kube-system/pods");
    assert_eq!(elsewhere["items"].as_array().unwrap().len(), 0);
}

#[test]
fn replicasets_carry_revisions_and_owners() {
    let (scenario, replay) = start(Neo4jMode::V5);
    let (_, list) = kube_json(
        &scenario,
        &replay,
        "/apis/apps/v1/namespaces/shop/replicasets",
    );
    let checkout: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == "checkout")
        .collect();
    let revisions: Vec<&str> = checkout
        .iter()
        .map(|rs| {
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(revisions, ["3", "4"]);
    assert_eq!(
        checkout[1]["metadata"]["creationTimestamp"],
        "2026-12-04T13:20:00Z"
    );
    assert_eq!(
        checkout[1]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.shop.test/checkout:1.15.0"
    );
    assert_eq!(checkout[0]["spec"]["replicas"], 0);
}

#[test]
fn logs_honour_timestamps_since_and_previous() {
    let (scenario, replay) = start(Neo4jMode::V5);
    let (_, pods) = kube_json(&scenario, &replay, "/api/v1/namespaces/shop/pods");
    let pod_named = |app: &str| {
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pod| pod["metadata"]["labels"]["app"] == app)
            .map(|pod| pod["metadata"]["name"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let orders = pod_named("orders");
    let since = "2026-12-04T13:52:00Z";
    let (code, body) = kube_get(
        &scenario,
        &replay,
        &format!(
            "/api/v1/namespaces/shop/pods/{orders}/log?container=orders&timestamps=true&sinceTime={}",
            http::percent_encode(since)
        ),
    );
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    let mut timeouts = 0;
    for line in text.lines() {
        let (ts, message) = line.split_once(' ').expect("timestamp then message");
        let ts = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
        assert!(ts >= chrono::DateTime::parse_from_rfc3339(since).unwrap());
        if message.contains("statement timeout") || message.contains("context deadline exceeded") {
            timeouts += 1;
        }
    }
    // From T-8m to T, one timeout line every 6 s.
    assert_eq!(timeouts, 80);

    let (code, body) = kube_json(
        &scenario,
        &replay,
        &format!("/api/v1/namespaces/shop/pods/{orders}/log?container=orders&previous=true"),
    );
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        format!("previous terminated container \"orders\" in pod \"{orders}\" not found")
    );

    let ingest = pod_named("ingest");
    let (code, body) = kube_get(
        &scenario,
        &replay,
        &format!(
            "/api/v1/namespaces/shop/pods/{ingest}/log?container=ingest&previous=true&timestamps=true"
        ),
    );
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("2026-12-04T13:29:56."), "{last}");

    let (code, _) = kube_get(
        &scenario,
        &replay,
        &format!("/api/v1/namespaces/shop/pods/{ingest}/log?container=migrate&tailLines=1"),
    );
    assert_eq!(code, 200);
    let (code, body) = kube_json(&scenario, &replay, "/api/v1/namespaces/shop/pods/nope/log");
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
}

fn neo4j_post(replay: &Replay, auth: Option<(&str, &str)>, statement: &str) -> (u16, Value) {
    let body = serde_json::json!({ "statements": [{ "statement": statement }] }).to_string();
    let header = auth.map(|(user, password)| {
        format!(
            "Basic {}",
            http::base64(format!("{user}:{password}").as_bytes())
        )
    });
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ];
    if let Some(header) = &header {
        headers.push(("Authorization", header));
    }
    let (code, body) = http::request(
        replay.neo4j.addr(),
        "POST",
        "/db/neo4j/tx/commit",
        &headers,
        body.as_bytes(),
    )
    .unwrap();
    (code, serde_json::from_slice(&body).unwrap())
}

fn zip_rows(result: &Value) -> Vec<serde_json::Map<String, Value>> {
    let columns: Vec<&str> = result["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|data| {
            columns
                .iter()
                .zip(data["row"].as_array().unwrap())
                .map(|(column, value)| (column.to_string(), value.clone()))
                .collect()
        })
        .collect()
}

#[test]
fn neo4j_5_lists_transactions_and_checks_credentials() {
    let (scenario, replay) = start(Neo4jMode::V5);
    let neo4j = &scenario.neo4j;
    let (code, body) = neo4j_post(
        &replay,
        Some((&neo4j.user, "wrong")),
        "SHOW TRANSACTIONS YIELD *",
    );
    assert_eq!(code, 401);
    assert_eq!(
        body["errors"][0]["code"],
        "Neo.ClientError.Security.Unauthorized"
    );

    let credentials = Some((neo4j.user.as_str(), neo4j.password.as_str()));
    let (code, body) = neo4j_post(
        &replay,
        credentials,
        "CALL dbms.components() YIELD name, versions, edition",
    );
    assert_eq!(code, 200);
    assert_eq!(body["results"][0]["data"][0]["row"][1][0], "5.26.0");

    let (_, body) = neo4j_post(&replay, credentials, "SHOW TRANSACTIONS YIELD *");
    assert_eq!(body["errors"].as_array().unwrap().len(), 0);
    let rows = zip_rows(&body["results"][0]);
    let long = rows
        .iter()
        .find(|row| row["transactionId"] == "neo4j-transaction-4711")
        .expect("the long transaction is listed");
    assert_eq!(long["elapsedTime"], "PT12S");
    assert!(
        long["currentQuery"]
            .as_str()
            .unwrap()
            .starts_with("MATCH (o:Order)-[:CONTAINS]->(p:Product)")
    );
    assert_eq!(
        body["results"][0]["data"][0]["meta"][23]["type"],
        "duration"
    );
}

#[test]
fn neo4j_4_rejects_show_transactions_inside_http_200_and_answers_list_queries() {
    let (scenario, replay) = start(Neo4jMode::V4);
    let neo4j = &scenario.neo4j;
    let credentials = Some((neo4j.user.as_str(), neo4j.password.as_str()));

    let (code, body) = neo4j_post(&replay, credentials, "SHOW TRANSACTIONS YIELD *");
    assert_eq!(code, 200);
    assert_eq!(
        body["errors"][0]["code"],
        "Neo.ClientError.Statement.SyntaxError"
    );
    assert_eq!(body["results"].as_array().unwrap().len(), 0);

    let (code, body) = neo4j_post(&replay, credentials, "CALL dbms.listQueries()");
    assert_eq!(code, 200);
    assert_eq!(body["errors"].as_array().unwrap().len(), 0);
    let rows = zip_rows(&body["results"][0]);
    let long = rows
        .iter()
        .find(|row| row["queryId"] == "query-9012")
        .unwrap();
    assert_eq!(long["elapsedTimeMillis"], 12_000);
    assert_eq!(long["username"], "reporting");

    let (_, body) = neo4j_post(
        &replay,
        credentials,
        "CALL dbms.components() YIELD name, versions, edition",
    );
    assert_eq!(body["results"][0]["data"][0]["row"][1][0], "4.3.24");
}
