//! Neo4j against a mock transactional endpoint: 5.x, 4.x fallback, refused credentials.

use serde_json::{Value, json};
use sitrep_schemas::exit;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::records::{Neo4jListing, Neo4jServer};
use sitrep_testkit::http::{MockServer, Request, Response};

use crate::common::{collect, contains, refused_port};

const USER: &str = "neo4j";
const PASSWORD: &str = "neo-invented-pw";
/// base64("neo4j:neo-invented-pw").
const AUTH: &str = "Basic bmVvNGo6bmVvLWludmVudGVkLXB3";

fn statement(req: &Request) -> String {
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    body["statements"][0]["statement"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn result(columns: &[&str], rows: Vec<Value>) -> Value {
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"row": r, "meta": []}))
        .collect();
    json!({"results": [{"columns": columns, "data": data}], "errors": []})
}

fn components(version: &str) -> Value {
    result(
        &["name", "versions", "edition"],
        vec![json!(["Neo4j Kernel", [version], "community"])],
    )
}

/// A server of the given major version; 4.x refuses `SHOW TRANSACTIONS` the way Neo4j
/// does, with a syntax error inside an HTTP 200 answer.
fn neo4j(major: u8) -> MockServer {
    MockServer::start(move |req| {
        if req.method != "POST" || req.path != "/db/neo4j/tx/commit" {
            return Response::text(404, "no such endpoint");
        }
        if req.header("authorization") != Some(AUTH) {
            return Response::json(
                401,
                json!({"errors": [{"code": "Neo.ClientError.Security.Unauthorized",
                    "message": "The client is unauthorized due to authentication failure."}]}),
            );
        }
        let stmt = statement(req);
        let body = match (major, stmt.as_str()) {
            (_, s) if s.starts_with("CALL dbms.components()") => {
                components(if major == 5 { "5.26.0" } else { "4.4.30" })
            }
            (5, "SHOW TRANSACTIONS YIELD *") => result(
                &["transactionId", "currentQuery", "elapsedTime", "status"],
                vec![
                    json!([
                        "neo4j-transaction-41",
                        "MATCH (o:Order)-[:CONTAINS]->(p:Product) RETURN p",
                        "PT12S",
                        "Running"
                    ]),
                    json!(["neo4j-transaction-42", "RETURN 1", "PT0.003S", "Running"]),
                ],
            ),
            (4, "SHOW TRANSACTIONS YIELD *") => json!({"results": [], "errors": [{
                "code": "Neo.ClientError.Statement.SyntaxError",
                "message": "Invalid input 'SHOW': expected <init> (line 1, column 1 (offset: 0))"}]}),
            (4, "CALL dbms.listQueries()") => result(
                &["queryId", "query", "elapsedTimeMillis"],
                vec![json!(["query-7", "MATCH (n) RETURN count(n)", 12000])],
            ),
            _ => {
                json!({"results": [], "errors": [{"code": "Neo.ClientError.Statement.SyntaxError", "message": "unexpected"}]})
            }
        };
        Response::json(200, body)
    })
}

fn args<'a>(url: &'a str, password: &'a str) -> Vec<&'a str> {
    vec![
        "--no-kubernetes",
        "--neo4j-url",
        url,
        "--neo4j-user",
        USER,
        "--neo4j-password",
        password,
        "--samples",
        "2",
        "--sample-interval",
        "10ms",
    ]
}

#[test]
fn neo4j_5_transactions_are_sampled() {
    let server = neo4j(5);
    let url = server.url();
    let run = collect(&args(&url, PASSWORD), &[]);
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);

    let name = format!("neo4j/127.0.0.1-{}", server.port);
    let source = run.source(&name);
    assert_eq!(source.status, SourceStatus::Ok);
    // Two rows in each of two rounds.
    assert_eq!(source.items, 4);

    let rows = run.ndjson(&format!("{name}/transactions.ndjson"));
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["transactionId"], "neo4j-transaction-41");
    assert_eq!(rows[0]["elapsedTime"], "PT12S");
    assert_eq!(rows[0]["sample"], 1);
    assert_eq!(rows[3]["sample"], 2);
    assert_eq!(
        rows[0]["sample_ts"], rows[1]["sample_ts"],
        "one stamp per round"
    );
    assert!(
        rows[0]["sample_ts"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .is_ok()
    );

    let server_json: Neo4jServer =
        serde_json::from_value(run.json(&format!("{name}/server.json"))).unwrap();
    assert_eq!(server_json.version.as_deref(), Some("5.26.0"));
    assert_eq!(server_json.edition.as_deref(), Some("community"));
    assert_eq!(server_json.listing, Neo4jListing::ShowTransactions);
    assert_eq!(server_json.samples, 2);
    assert_eq!(server_json.interval_ms, 10);
    assert_eq!(server_json.target, url);
    assert!(!contains(&run.all_bytes(), PASSWORD));
}

#[test]
fn neo4j_4_falls_back_to_list_queries() {
    let server = neo4j(4);
    let url = server.url();
    let run = collect(&args(&url, PASSWORD), &[]);
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);

    let name = format!("neo4j/127.0.0.1-{}", server.port);
    let rows = run.ndjson(&format!("{name}/transactions.ndjson"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["queryId"], "query-7");
    assert_eq!(rows[0]["elapsedTimeMillis"], 12000);
    assert_eq!(rows[1]["sample"], 2);
    let server_json: Neo4jServer =
        serde_json::from_value(run.json(&format!("{name}/server.json"))).unwrap();
    assert_eq!(server_json.listing, Neo4jListing::ListQueries);
    assert_eq!(server_json.version.as_deref(), Some("4.4.30"));

    // Once the fallback is known, the second round asks for listQueries directly:
    // components, SHOW (refused), listQueries, listQueries.
    let asked: Vec<String> = server.requests().iter().map(statement).collect();
    assert_eq!(
        asked,
        [
            "CALL dbms.components() YIELD name, versions, edition",
            "SHOW TRANSACTIONS YIELD *",
            "CALL dbms.listQueries()",
            "CALL dbms.listQueries()"
        ]
    );
}

#[test]
fn refused_credentials_are_forbidden_and_other_sources_go_on() {
    let server = neo4j(5);
    let url = server.url();
    let prom = MockServer::start(|_| {
        Response::json(
            200,
            json!({"status": "success", "data": {"resultType": "matrix", "result": []}}),
        )
    });
    let mut a = args(&url, "not-the-password");
    let prom_url = prom.url();
    a.extend(["--prometheus-url", &prom_url]);
    let run = collect(&a, &[]);
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);

    let source = run.source(&format!("neo4j/127.0.0.1-{}", server.port));
    assert_eq!(source.status, SourceStatus::Forbidden);
    let error = source.error.unwrap();
    assert!(error.contains("HTTP 401"), "{error}");
    assert!(
        error.contains("Neo.ClientError.Security.Unauthorized"),
        "{error}"
    );
    assert_eq!(run.source("prometheus").status, SourceStatus::Ok);
    assert!(!contains(&run.all_bytes(), "not-the-password"));
}

#[test]
fn an_unreachable_neo4j_leaves_the_rest_collected() {
    let url = format!("http://127.0.0.1:{}", refused_port());
    let prom = MockServer::start(|_| {
        Response::json(
            200,
            json!({"status": "success", "data": {"resultType": "matrix", "result": []}}),
        )
    });
    let prom_url = prom.url();
    let run = collect(
        &[
            "--no-kubernetes",
            "--neo4j-url",
            &url,
            "--prometheus-url",
            &prom_url,
        ],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let neo = run
        .manifest()
        .sources
        .into_iter()
        .find(|s| s.name.starts_with("neo4j/"))
        .unwrap();
    assert_eq!(neo.status, SourceStatus::Unreachable);
    assert_eq!(run.source("prometheus").status, SourceStatus::Ok);
}

#[test]
fn an_answer_over_the_size_cap_is_over_budget_not_read_whole() {
    // One round is parsed whole, so an endless or enormous answer would otherwise take
    // memory until the process dies, and the whole bundle with it.
    let huge = "x".repeat(65 * 1024 * 1024);
    let server = MockServer::start(move |req| {
        let stmt = statement(req);
        if stmt.starts_with("CALL dbms.components()") {
            return Response::json(200, components("5.26.0"));
        }
        Response::json(
            200,
            result(
                &["transactionId", "currentQuery"],
                vec![json!(["tx-1", huge])],
            ),
        )
    });
    let url = server.url();
    let run = collect(
        &["--no-kubernetes", "--neo4j-url", &url, "--samples", "1"],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run.source(&format!("neo4j/127.0.0.1-{}", server.port));
    assert_eq!(
        source.status,
        SourceStatus::OverBudget,
        "{:?}",
        source.error
    );
    let error = source.error.unwrap_or_default();
    assert!(error.contains("larger than 64 MiB"), "{error}");
}
