//! How a collection ends: interrupted, past a source's deadline, or with nowhere to write.

use std::time::Duration;

use serde_json::json;
use sitrep_schemas::exit;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::records::PromQueryLog;
use sitrep_testkit::http::{MockServer, Response};

use crate::common::{Started, collect, refused_port};

fn neo4j_rows() -> MockServer {
    MockServer::start(|req| {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let stmt = body["statements"][0]["statement"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let result = if stmt.starts_with("CALL dbms.components()") {
            json!({"columns": ["name", "versions", "edition"], "data": [{"row": ["Neo4j Kernel", ["5.26.0"], "enterprise"]}]})
        } else {
            json!({"columns": ["transactionId"], "data": [{"row": ["neo4j-transaction-1"]}]})
        };
        Response::json(200, json!({"results": [result], "errors": []}))
    })
}

#[test]
fn sigint_stops_sources_and_still_leaves_a_bundle() {
    let neo = neo4j_rows();
    let url = neo.url();
    // Far more rounds than the test waits for: only the interrupt can end this run.
    let started = Started::new(
        &[
            "--no-kubernetes",
            "--neo4j-url",
            &url,
            "--samples",
            "1000",
            "--sample-interval",
            "200ms",
        ],
        &[],
    );
    // Wait until the first sample round has been asked for (components, then SHOW).
    let mut asked = false;
    for _ in 0..400 {
        if neo.requests().len() >= 2 {
            asked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(asked, "the collector never reached Neo4j");
    let pid = started.child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());

    let run = started.wait();
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let manifest = run.manifest();
    assert!(manifest.interrupted);
    let source = run.source(&format!("neo4j/127.0.0.1-{}", neo.port));
    assert_eq!(source.status, SourceStatus::Interrupted);
    // What was gathered before the stop is kept.
    let rows = run.ndjson(&format!("neo4j/127.0.0.1-{}/transactions.ndjson", neo.port));
    assert!(!rows.is_empty());
    assert_eq!(rows[0]["sample"], 1);
    let names: Vec<String> = run.entries().into_iter().map(|(p, _, _)| p).collect();
    assert_eq!(names.first().map(String::as_str), Some("sitrep.json"));
    assert_eq!(names.last().map(String::as_str), Some("manifest.json"));
}

#[test]
fn a_source_past_its_deadline_times_out_alone() {
    // This Prometheus never answers in time; Neo4j answers at once.
    let prom = MockServer::start(|_| {
        std::thread::sleep(Duration::from_secs(120));
        Response::text(500, "too late")
    });
    let neo = neo4j_rows();
    let (prom_url, neo_url) = (prom.url(), neo.url());
    let run = collect(
        &[
            "--no-kubernetes",
            "--prometheus-url",
            &prom_url,
            "--neo4j-url",
            &neo_url,
            "--samples",
            "1",
            "--source-timeout",
            "3s",
        ],
        &[],
    );
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run.source("prometheus");
    assert_eq!(source.status, SourceStatus::Timeout);
    assert!(
        source
            .error
            .unwrap()
            .contains("source deadline of 3s passed")
    );
    let log: PromQueryLog = serde_json::from_value(run.json("prometheus/queries.json")).unwrap();
    assert!(
        log.queries
            .iter()
            .all(|q| q.status == SourceStatus::Timeout)
    );
    assert_eq!(
        run.source(&format!("neo4j/127.0.0.1-{}", neo.port)).status,
        SourceStatus::Ok
    );
}

#[test]
fn an_unwritable_output_fails_without_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("b.tar.zst");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitrep-collect"))
        .env_clear()
        .env("HOME", dir.path())
        .args(["--no-kubernetes", "--prometheus-url"])
        .arg(format!("http://127.0.0.1:{}", refused_port()))
        .arg("-o")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit::COLLECT_FAILED));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\nerror: cannot create the bundle in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("caused by: No such file or directory"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn gzip_bundles_open_with_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar.gz");
    let prom = crate::prometheus::healthy();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitrep-collect"))
        .env_clear()
        .env("HOME", dir.path())
        .args(["--no-kubernetes", "--prometheus-url", &prom.url()])
        .args(["--compression", "gzip", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit::COLLECT_OK));
    let file = std::fs::File::open(&path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("sitrep.json"));
    assert_eq!(names.last().map(String::as_str), Some("manifest.json"));
    assert!(names.contains(&"prometheus/queries.json".to_owned()));
}

#[test]
fn a_stop_ends_connecting_and_the_first_request_without_the_grace() {
    // Neo4j takes the connection and never answers its first statement; this PostgreSQL
    // accepts TCP and never starts the protocol. Both used to keep running until the
    // grace after the deadline ran out.
    let neo = MockServer::start(|_| {
        std::thread::sleep(Duration::from_secs(120));
        Response::text(500, "too late")
    });
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pg_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let neo_url = neo.url();
    let pg = format!("db=host=127.0.0.1 port={pg_port} user=app dbname=shop");
    let started = std::time::Instant::now();
    let run = collect(
        &[
            "--no-kubernetes",
            "--neo4j-url",
            &neo_url,
            "--postgres",
            &pg,
            "--source-timeout",
            "2s",
        ],
        &[],
    );
    let took = started.elapsed();

    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    for name in [
        format!("neo4j/127.0.0.1-{}", neo.port),
        "postgres/db".to_owned(),
    ] {
        let source = run.source(&name);
        assert_eq!(source.status, SourceStatus::Timeout, "{name}");
        assert!(
            source.duration_ms < 2_500,
            "{name}: {} ms",
            source.duration_ms
        );
        let server = source.parts.iter().find(|p| p.name == "server");
        assert_eq!(
            server.map(|p| p.status),
            Some(SourceStatus::Timeout),
            "{name}: {:?}",
            source.parts
        );
    }
    assert!(took < Duration::from_millis(4_000), "took {took:?}");
}

#[test]
fn an_existing_output_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join("earlier.tar.zst");
    std::fs::write(&taken, b"an earlier bundle").unwrap();
    let run = |output: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sitrep-collect"))
            .env_clear()
            .env("HOME", dir.path())
            .args(["--no-kubernetes", "--prometheus-url"])
            .arg(format!("http://127.0.0.1:{}", refused_port()))
            .arg("-o")
            .arg(output)
            .output()
            .unwrap()
    };

    let out = run(&taken);
    assert_eq!(out.status.code(), Some(exit::COLLECT_FAILED));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("error: `{}` already exists", taken.display())),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&taken).unwrap(), b"an earlier bundle");

    // A directory is refused before anything is collected, not at the final rename.
    let out = run(dir.path());
    assert_eq!(out.status.code(), Some(exit::COLLECT_FAILED));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["earlier.tar.zst"], "no temp file stays behind");
}

#[test]
fn help_never_shows_urls_from_the_environment() {
    // Both URLs may carry a password in their userinfo.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitrep-collect"))
        .env_clear()
        .env("PROMETHEUS_URL", "http://u:invented-prom-pw@127.0.0.1:9")
        .env("NEO4J_URI", "http://u:invented-neo-pw@127.0.0.1:9")
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit::COLLECT_OK));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[env: PROMETHEUS_URL]"), "{help}");
    assert!(help.contains("[env: NEO4J_URI]"), "{help}");
    assert!(!help.contains("invented"), "{help}");
}
