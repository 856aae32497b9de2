//! The demo bundle shipped in `testdata/bundles/` was written by `sitrep-collect` from the
//! incident scenario. It must keep reading, and keep naming every problem the scenario
//! injects (testdata/scenarios/README.md), as the analyzer changes.

use std::path::PathBuf;

use sitrep_schemas::exit;
use sitrep_schemas::report::{Detail, Finding, OomEvidence, QueryProblem, RolloutVerdict};

use crate::support::analyze;

fn demo_bundle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/bundles/demo.tar.zst")
}

fn slow_queries(
    findings: &[Finding],
    problem: QueryProblem,
) -> Vec<&sitrep_schemas::report::SlowQuery> {
    findings
        .iter()
        .filter_map(|f| match &f.detail {
            Detail::SlowQuery(q) if q.problem == problem => Some(q),
            _ => None,
        })
        .collect()
}

#[test]
fn the_shipped_demo_bundle_names_every_injected_problem() {
    let run = analyze(&demo_bundle(), &["--format", "json"]);
    assert_eq!(run.code, exit::ANALYZE_FINDINGS, "{}", run.stderr);
    let report = run.report();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.bundle.sources.iter().all(|s| s.status.is_complete()));

    // The control rolled out too, and nothing about it may be reported.
    let about_search = report.findings.iter().filter(|f| {
        f.subject.deployment.as_deref() == Some("search")
            || f.subject.service.as_deref() == Some("search")
    });
    assert_eq!(about_search.count(), 0);

    // p99 200 ms before and 900 ms after by construction of the bucket counts.
    let rollout = report
        .findings
        .iter()
        .find_map(|f| match &f.detail {
            Detail::RolloutRegression(r) if r.deployment == "checkout" => Some((f, r)),
            _ => None,
        })
        .expect("a checkout rollout finding");
    let (finding, regression) = rollout;
    assert_eq!(regression.verdict, RolloutVerdict::Regressed);
    assert_eq!(
        (regression.from_revision, regression.to_revision),
        (Some(3), 4)
    );
    let latency = regression.latency.as_ref().unwrap();
    assert!((4.0..=5.0).contains(&latency.ratio), "{latency:?}");
    assert!((latency.before_ms - 200.0).abs() < 15.0, "{latency:?}");
    assert!((latency.after_ms - 900.0).abs() < 50.0, "{latency:?}");
    let errors = regression.errors.as_ref().unwrap();
    assert!(errors.after_ratio > errors.before_ratio, "{errors:?}");
    assert!(
        finding.next_steps.contains(
            &"kubectl rollout undo deployment/checkout -n shop --to-revision=3".to_owned()
        ),
        "{:?}",
        finding.next_steps
    );

    let oom = report
        .findings
        .iter()
        .find_map(|f| match &f.detail {
            Detail::Oom(o) if o.container == "ingest" => Some(o),
            _ => None,
        })
        .expect("an ingest OOM finding");
    assert_eq!(oom.evidence, OomEvidence::OomKilled);
    assert_eq!(oom.memory_limit.as_deref(), Some("256Mi"));
    assert_eq!(oom.memory_limit_bytes, Some(256 * 1024 * 1024));
    assert_eq!(oom.restart_count, Some(3));

    let burst = report
        .findings
        .iter()
        .find_map(|f| match &f.detail {
            Detail::TimeoutBurst(b) if b.service == "orders" => Some(b),
            _ => None,
        })
        .expect("an orders timeout burst");
    // The scenario logs 80 timeouts between T-8m and T, T being the collection's end.
    assert_eq!(burst.total, 80);
    let t = report.bundle.window.end;
    let start_offset = (t - burst.start).num_seconds();
    assert!((7 * 60..=9 * 60).contains(&start_offset), "{start_offset}");

    let holders = slow_queries(&report.findings, QueryProblem::LockHolder);
    assert_eq!(holders.len(), 1, "{holders:?}");
    let holder = holders[0];
    let holder_pid = holder.pid.unwrap();
    assert_eq!(holder.blocking.len(), 2);
    let waits = slow_queries(&report.findings, QueryProblem::LockWait);
    assert_eq!(waits.len(), 2);
    for wait in &waits {
        assert_eq!(wait.blocked_by, [holder_pid]);
        assert!(holder.blocking.contains(&wait.pid.unwrap()));
    }
    let idle = slow_queries(&report.findings, QueryProblem::IdleInTransaction);
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].application.as_deref(), Some("reporting"));

    let neo4j = slow_queries(&report.findings, QueryProblem::LongRunning)
        .into_iter()
        .find(|q| q.query_id.is_some())
        .expect("the long Neo4j query");
    assert!((neo4j.duration_seconds - 12.0).abs() < 0.5, "{neo4j:?}");
}

#[test]
fn the_shipped_demo_bundle_reads_as_a_terminal_report() {
    let run = analyze(&demo_bundle(), &["--color", "never"]);
    assert_eq!(run.code, exit::ANALYZE_FINDINGS, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("kubectl rollout undo deployment/checkout -n shop --to-revision=3")
    );
    assert!(
        run.stdout
            .contains("TERMINATE TRANSACTION 'neo4j-transaction-4711'")
    );
}

fn checked_in_schema(file: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/json")
        .join(file);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Validates `instance` against one of the checked-in schemas, listing every violation.
fn assert_matches_schema(schema_file: &str, instance: &serde_json::Value) {
    let validator = jsonschema::validator_for(&checked_in_schema(schema_file)).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_file}: {errors:#?}");
}

#[test]
fn the_report_header_and_manifest_match_their_checked_in_schemas() {
    let run = analyze(&demo_bundle(), &["--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_matches_schema("report.schema.json", &report);
    // The schema has teeth: a severity outside its enum is refused.
    let mut bent = report.clone();
    bent["findings"][0]["severity"] = "dire".into();
    let schema = checked_in_schema("report.schema.json");
    assert!(!jsonschema::validator_for(&schema).unwrap().is_valid(&bent));

    let file = std::fs::File::open(demo_bundle()).unwrap();
    let mut archive = tar::Archive::new(zstd::Decoder::new(file).unwrap());
    let mut checked = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let schema = match path.as_str() {
            "sitrep.json" => "header.schema.json",
            "manifest.json" => "manifest.schema.json",
            _ => continue,
        };
        let value: serde_json::Value = serde_json::from_reader(&mut entry).unwrap();
        assert_matches_schema(schema, &value);
        checked.push(path);
    }
    assert_eq!(checked, ["sitrep.json", "manifest.json"]);
}
