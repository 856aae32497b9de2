//! The whole incident, end to end: the real `sitrep-collect` against real PostgreSQL and
//! Prometheus servers and the replayed cluster, then the real `sitrep-analyze` on the
//! bundle it wrote, whose findings must name every injected problem.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sitrep_schemas::exit;
use sitrep_schemas::manifest::{Manifest, SourceStatus};
use sitrep_schemas::report::{
    DbEngine, Detail, Finding, OomEvidence, QueryProblem, Report, SlowQuery,
};
use sitrep_testkit::postgres::{self, Postgres};
use sitrep_testkit::prometheus::Prometheus;
use sitrep_testkit::replay::{Replay, ReplayOptions};
use sitrep_testkit::scenario::{Scenario, anchor_now};
use sitrep_testkit::sessions::Sessions;

/// The analyzer's thresholds for long-running and idle transactions are 5 s.
const SESSION_AGE: Duration = Duration::from_secs(6);

/// A binary of another workspace package, built into the same target directory.
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // The test binary lives in `target/<profile>/deps/`; binaries one level up.
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps layout");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "`{name}` is not built next to the tests ({}); run `cargo build --workspace --bins` first",
        dir.display()
    );
    path
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every entry of a `.tar.zst` bundle, in archive order.
fn bundle_entries(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).expect("bundle exists");
    let mut archive = tar::Archive::new(zstd::Decoder::new(file).expect("zstd stream"));
    archive
        .entries()
        .expect("tar stream")
        .map(|entry| {
            let mut entry = entry.expect("readable entry");
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn slow_queries(report: &Report) -> Vec<&SlowQuery> {
    report
        .findings
        .iter()
        .filter_map(|finding| match &finding.detail {
            Detail::SlowQuery(query) => Some(query),
            _ => None,
        })
        .collect()
}

fn within(actual: DateTime<Utc>, expected: DateTime<Utc>, slack: chrono::Duration) -> bool {
    (actual - expected).abs() <= slack
}

#[test]
fn collect_then_analyze_names_every_injected_problem() {
    let collect = workspace_bin("sitrep-collect");
    let analyze = workspace_bin("sitrep-analyze");

    let scenario = Scenario::incident();
    let anchor = anchor_now();
    let prometheus = Prometheus::start(&scenario, anchor).expect("Prometheus starts");
    let replay = Replay::start(&scenario, &ReplayOptions::new(anchor)).expect("replay starts");
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    replay.write_kubeconfig(&kubeconfig).unwrap();
    let server = Postgres::start().expect("PostgreSQL starts");
    server.create_database(&scenario.postgres.database).unwrap();
    let conninfo = server.conninfo(&scenario.postgres.database);
    let sessions = Sessions::open(&conninfo, &scenario.postgres).expect("sessions settle");
    let pid = |name: &str| sessions.pid(name).unwrap();

    // Not an assertion on time: the sessions must be older than the detectors' 5 s.
    if let Some(rest) = SESSION_AGE.checked_sub(sessions.opened_at.elapsed()) {
        std::thread::sleep(rest);
    }

    let bundle = work.path().join("incident.tar.zst");
    let collected = Command::new(&collect)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--context", &scenario.cluster.context])
        .args(["--prometheus-url", &prometheus.url()])
        .args([
            "--postgres",
            &format!("{}={conninfo}", scenario.postgres.target),
        ])
        .args(["--neo4j-url", &replay.neo4j_url()])
        .args(["--neo4j-user", &scenario.neo4j.user])
        .args(["--neo4j-password", &scenario.neo4j.password])
        .args([
            "--since",
            "3h",
            "--samples",
            "3",
            "--sample-interval",
            "2s",
            "--no-progress",
        ])
        .arg("-o")
        .arg(&bundle)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(
        collected.status.code(),
        Some(exit::COLLECT_OK),
        "{}",
        describe(&collected)
    );
    assert_eq!(
        String::from_utf8_lossy(&collected.stdout).trim(),
        bundle.display().to_string()
    );

    // The bundle: header first, manifest last, every source complete, no secret inside.
    let entries = bundle_entries(&bundle);
    assert_eq!(
        entries.first().map(|(name, _)| name.as_str()),
        Some("sitrep.json")
    );
    let (last, manifest) = entries.last().unwrap();
    assert_eq!(last, "manifest.json");
    let manifest: Manifest = serde_json::from_slice(manifest).expect("manifest parses");
    let mut names: Vec<&str> = manifest
        .sources
        .iter()
        .map(|source| source.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names.contains(&"kubernetes") && names.contains(&"prometheus"),
        "{names:?}"
    );
    assert!(names.contains(&"postgres/orders"), "{names:?}");
    assert!(
        names.iter().any(|name| name.starts_with("neo4j/")),
        "{names:?}"
    );
    for source in &manifest.sources {
        assert_eq!(
            source.status,
            SourceStatus::Ok,
            "{}: {:?}",
            source.name,
            source.error
        );
    }
    let mut secrets: Vec<String> = scenario
        .deployments
        .iter()
        .flat_map(|deployment| &deployment.revisions)
        .flat_map(|revision| &revision.env)
        .filter(|var| var.secret)
        .filter_map(|var| var.value.clone())
        .collect();
    secrets.extend([
        postgres::PASSWORD.to_owned(),
        scenario.neo4j.password.clone(),
        scenario.cluster.token.clone(),
    ]);
    for (name, bytes) in &entries {
        let text = String::from_utf8_lossy(bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "`{name}` contains a secret in clear"
            );
        }
    }
    assert!(
        manifest
            .redactions
            .get("env_value")
            .is_some_and(|count| *count > 0)
    );
    // Nor in what the collector printed or logged.
    for stream in [&collected.stdout, &collected.stderr] {
        let text = String::from_utf8_lossy(stream);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "sitrep-collect printed a secret in clear"
            );
        }
    }

    let analyzed = Command::new(&analyze)
        .arg(&bundle)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        analyzed.status.code(),
        Some(exit::ANALYZE_FINDINGS),
        "{}",
        describe(&analyzed)
    );
    let report: Report = serde_json::from_slice(&analyzed.stdout).expect("report parses");
    let summary: Vec<String> = report
        .findings
        .iter()
        .map(|finding| finding.id.clone())
        .collect();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.bundle.context.as_deref(),
        Some(scenario.cluster.context.as_str())
    );

    // checkout regressed with revision 4: per-minute p99 0.2 s before, 0.9 s after.
    let regression = report
        .findings
        .iter()
        .find_map(|finding| match &finding.detail {
            Detail::RolloutRegression(rollout) if rollout.deployment == "checkout" => {
                Some((finding, rollout))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no checkout regression in {summary:?}"));
    let (finding, rollout) = regression;
    assert_eq!(rollout.namespace, "shop");
    assert_eq!(rollout.to_revision, 4);
    assert_eq!(rollout.from_revision, Some(3));
    assert_eq!(
        rollout.to_image.as_deref(),
        Some("registry.shop.test/checkout:1.15.0")
    );
    assert!(within(
        rollout.rollout_at,
        anchor - chrono::Duration::minutes(40),
        chrono::Duration::seconds(60)
    ));
    let latency = rollout.latency.as_ref().expect("latency compared");
    assert!(
        (4.0..=5.0).contains(&latency.ratio),
        "ratio {}",
        latency.ratio
    );
    assert!(
        (latency.before_ms - 200.0).abs() <= 20.0,
        "before {} ms",
        latency.before_ms
    );
    assert!(
        (latency.after_ms - 900.0).abs() <= 50.0,
        "after {} ms",
        latency.after_ms
    );
    assert!(
        finding.next_steps.iter().any(|step| step
            .contains("kubectl rollout undo deployment/checkout")
            && step.contains("-n shop")
            && step.contains("--to-revision=3")),
        "{:?}",
        finding.next_steps
    );

    // search rolled out too, and nothing changed: no finding at all.
    let about_search = |finding: &&Finding| {
        finding.subject.deployment.as_deref() == Some("search")
            || finding.subject.service.as_deref() == Some("search")
    };
    assert!(
        !report.findings.iter().any(|f| about_search(&f)),
        "{summary:?}"
    );

    // ingest was OOM-killed under the 256Mi limit of revision 3.
    let oom = report
        .findings
        .iter()
        .find_map(|finding| match &finding.detail {
            Detail::Oom(oom) if oom.container == "ingest" => Some(oom),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ingest OOM in {summary:?}"));
    assert_eq!(oom.evidence, OomEvidence::OomKilled);
    assert_eq!(oom.memory_limit.as_deref(), Some("256Mi"));
    assert_eq!(oom.memory_limit_bytes, Some(256 * 1024 * 1024));
    assert_eq!(oom.restart_count, Some(3));
    assert!(!oom.init_container);

    // orders' timeouts burst from T-8m.
    let burst = report
        .findings
        .iter()
        .find_map(|finding| match &finding.detail {
            Detail::TimeoutBurst(burst) if burst.service == "orders" => Some(burst),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no orders timeout burst in {summary:?}"));
    assert!(
        within(
            burst.start,
            anchor - chrono::Duration::minutes(8),
            chrono::Duration::seconds(60)
        ),
        "burst starts {} for T = {anchor}",
        burst.start
    );

    // PostgreSQL: B and C wait on A, which holds the lock; D idles in its transaction.
    let postgres: Vec<&SlowQuery> = slow_queries(&report)
        .into_iter()
        .filter(|query| query.engine == DbEngine::Postgres)
        .collect();
    for waiter in ["B", "C"] {
        assert!(
            postgres
                .iter()
                .any(|query| query.problem == QueryProblem::LockWait
                    && query.pid == Some(pid(waiter))
                    && query.blocked_by == [pid("A")]),
            "no lock wait of {waiter} on A in {summary:?}"
        );
    }
    let holder = postgres
        .iter()
        .find(|query| query.problem == QueryProblem::LockHolder && query.pid == Some(pid("A")))
        .unwrap_or_else(|| panic!("no lock holder A in {summary:?}"));
    let mut blocking = holder.blocking.clone();
    blocking.sort();
    let mut waiters = vec![pid("B"), pid("C")];
    waiters.sort();
    assert_eq!(blocking, waiters);
    assert!(
        postgres
            .iter()
            .any(|query| query.problem == QueryProblem::IdleInTransaction
                && query.pid == Some(pid("D"))),
        "no idle-in-transaction D in {summary:?}"
    );

    // Neo4j: the recorded 12 s query.
    let neo4j = slow_queries(&report)
        .into_iter()
        .find(|query| query.engine == DbEngine::Neo4j && query.query.starts_with("MATCH (o:Order)"))
        .unwrap_or_else(|| panic!("no Neo4j query finding in {summary:?}"));
    assert!(
        (neo4j.duration_seconds - 12.0).abs() <= 0.5,
        "{}",
        neo4j.duration_seconds
    );

    drop(sessions);
}
