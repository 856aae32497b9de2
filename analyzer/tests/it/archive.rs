//! The archive is distrusted: unsafe paths, odd entry types, checksum mismatches, corrupt
//! lines and unknown versions are reported, and whatever is sound is still analyzed.

use sitrep_schemas::report::{Detail, OomEvidence};

use crate::incident::{find, incident};
use crate::support::{BundleBuilder, Compression, analyze, problem_places, tempdir};

#[test]
fn an_entry_climbing_out_of_the_bundle_is_refused_and_the_rest_analyzed() {
    let dir = tempdir();
    let bundle = incident()
        .unlisted("logs/../../etc/cron.d/x", b"* * * * * root true\n")
        .symlink("logs/shop/orders-7c4d-fghij/link.log")
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2, "a problem makes the exit status 2");
    let report = run.report();
    let refused: Vec<(&str, &str)> = report
        .problems
        .iter()
        .map(|p| (p.file.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (
                "logs/../../etc/cron.d/x",
                "entry path contains `..`; entry skipped"
            ),
            (
                "logs/shop/orders-7c4d-fghij/link.log",
                "entry is not a regular file (Symlink); skipped"
            ),
        ]
    );
    find(&report, "rollout_regression/shop/checkout/4");
    find(&report, "oom/shop/ingest-5d8f-abcde/ingest");
}

#[test]
fn a_checksum_mismatch_drops_that_file_only() {
    let dir = tempdir();
    let bundle = incident()
        .wrong_checksum("k8s/pods.ndjson")
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2);
    let report = run.report();
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(problem.file, "k8s/pods.ndjson");
    assert!(
        problem
            .message
            .starts_with("checksum mismatch: manifest says sha256 0000"),
        "{}",
        problem.message
    );
    // Without the pods no container OOM is left (the node's own event still is); the
    // rollout and the queries are still found.
    assert!(report.findings.iter().all(|f| match &f.detail {
        Detail::Oom(oom) => oom.evidence == OomEvidence::NodeOom,
        _ => true,
    }));
    find(&report, "rollout_regression/shop/checkout/4");
    find(&report, "slow_query/postgres/orders/101/lock_holder");
}

#[test]
fn a_corrupt_line_names_file_and_line_and_the_rest_is_read() {
    let dir = tempdir();
    let bundle = incident()
        .replace_line(
            "k8s/pods.ndjson",
            2,
            "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", ",
        )
        .replace_line(
            "postgres/orders/activity.ndjson",
            3,
            "{\"sample\": 1, \"pid\": \"not a number\"}",
        )
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2);
    let report = run.report();
    assert_eq!(
        problem_places(&report).into_iter().collect::<Vec<_>>(),
        [
            ("k8s/pods.ndjson".to_owned(), Some(2)),
            ("postgres/orders/activity.ndjson".to_owned(), Some(3)),
        ]
    );
    // Line 1 (ingest) and line 3 (orders) of the pods survive; line 2 was batch-xyz.
    find(&report, "oom/shop/ingest-5d8f-abcde/ingest");
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.subject.pod.as_deref() != Some("batch-xyz"))
    );
    // Sample 2 still shows every session.
    find(&report, "slow_query/postgres/orders/103/lock_wait");

    let text = analyze(&bundle, &["--color", "never"]);
    assert!(
        text.stdout
            .contains("`k8s/pods.ndjson` line 2: cannot parse line"),
        "{}",
        text.stdout
    );
}

#[test]
fn an_unknown_format_version_stops_with_a_clear_error() {
    let dir = tempdir();
    let bundle = BundleBuilder::new()
        .format_version(9)
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("error: cannot read bundle"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "Caused by: bundle format version 9 is not supported (this analyzer reads version 1)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn gzip_and_zstd_bundles_read_the_same() {
    let zstd_dir = tempdir();
    let gzip_dir = tempdir();
    let zstd = analyze(
        &incident().write(zstd_dir.path(), Compression::Zstd),
        &["--format", "json"],
    );
    let gzip = analyze(
        &incident().write(gzip_dir.path(), Compression::Gzip),
        &["--format", "json"],
    );
    assert_eq!((zstd.code, gzip.code), (1, 1));
    let (mut a, mut b) = (zstd.report(), gzip.report());
    assert!(a.bundle.path.ends_with("bundle.tar.zst") && b.bundle.path.ends_with("bundle.tar.gz"));
    a.bundle.path.clear();
    b.bundle.path.clear();
    assert_eq!(a, b);
}

#[test]
fn a_file_that_is_not_a_bundle_is_an_error() {
    let dir = tempdir();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "just text").unwrap();
    let run = analyze(&path, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("is neither zstd nor gzip compressed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_manifest_is_a_problem_but_the_data_is_analyzed() {
    let dir = tempdir();
    let run = analyze(
        &incident()
            .without_manifest()
            .write(dir.path(), Compression::Gzip),
        &["--format", "json"],
    );
    assert_eq!(run.code, 2);
    let report = run.report();
    assert_eq!(
        problem_places(&report).into_keys().collect::<Vec<_>>(),
        ["manifest.json"]
    );
    find(&report, "rollout_regression/shop/checkout/4");
}

#[test]
fn a_truncated_bundle_reports_what_it_could_read() {
    let dir = tempdir();
    let path = incident().write_torn(dir.path(), Compression::Zstd);
    let run = analyze(&path, &["--format", "json"]);
    assert_eq!(run.code, 2);
    let report = run.report();
    let files: Vec<&str> = report.problems.iter().map(|p| p.file.as_str()).collect();
    assert!(files.contains(&"manifest.json"), "{files:?}");
    // The header came first, so the report still says what the bundle is.
    assert_eq!(report.bundle.context.as_deref(), Some("sitrep-demo"));
}

#[test]
fn entries_over_the_size_cap_are_skipped() {
    let dir = tempdir();
    let bundle = incident().write(dir.path(), Compression::Zstd);
    // The orders log is about 13 KB; every other entry used here is smaller than 100 KB
    // except the latency buckets.
    let run = analyze(&bundle, &["--format", "json", "--max-entry-bytes", "12000"]);
    assert_eq!(run.code, 2);
    let report = run.report();
    let capped: Vec<&str> = report
        .problems
        .iter()
        .filter(|p| p.message == "entry is larger than the cap of 12000 bytes; skipped")
        .map(|p| p.file.as_str())
        .collect();
    assert!(
        capped.contains(&"logs/shop/orders-7c4d-fghij/orders.log"),
        "{:#?}",
        report.problems
    );
    assert!(
        report
            .findings
            .iter()
            .all(|f| !matches!(f.detail, Detail::TimeoutBurst(_)))
    );
}

#[test]
fn a_sample_time_no_calendar_holds_is_a_problem_not_a_crash() {
    let dir = tempdir();
    let working_set = serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"namespace": "shop", "pod": "ingest-5d8f-abcde", "container": "ingest"},
         "values": [[-1e300, "1"], [1e300, "1"], [f64::MAX, "1"]]}
    ]}});
    let bundle = incident()
        .without("prometheus/memory_working_set.json")
        .json("prometheus/memory_working_set.json", &working_set)
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.report();
    let fields: Vec<(&str, Option<&str>, &str)> = report
        .problems
        .iter()
        .map(|p| (p.file.as_str(), p.field.as_deref(), p.message.as_str()))
        .collect();
    let out_of_range = "time is outside the dates this analyzer can represent";
    assert_eq!(
        fields,
        [
            (
                "prometheus/memory_working_set.json",
                Some("data.result[0].values[0]"),
                out_of_range
            ),
            (
                "prometheus/memory_working_set.json",
                Some("data.result[0].values[1]"),
                out_of_range
            ),
            (
                "prometheus/memory_working_set.json",
                Some("data.result[0].values[2]"),
                out_of_range
            ),
        ]
    );
    find(&report, "rollout_regression/shop/checkout/4");
    find(&report, "oom/shop/ingest-5d8f-abcde/ingest");
}

#[test]
fn a_neo4j_duration_longer_than_any_calendar_is_a_problem_not_a_crash() {
    let dir = tempdir();
    let endless = serde_json::json!({"sample": 1, "sample_ts": "2026-12-04T14:00:01Z",
        "transactionId": "neo4j-transaction-43", "currentQuery": "MATCH (n) RETURN n",
        "elapsedTime": "P9999999999Y", "status": "Running"});
    let bundle = incident()
        .replace_line(
            "neo4j/127.0.0.1-7474/transactions.ndjson",
            2,
            &endless.to_string(),
        )
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.report();
    let places: Vec<(&str, Option<u64>, Option<&str>)> = report
        .problems
        .iter()
        .map(|p| (p.file.as_str(), p.line, p.field.as_deref()))
        .collect();
    assert_eq!(
        places,
        [(
            "neo4j/127.0.0.1-7474/transactions.ndjson",
            Some(2),
            Some("elapsedTime")
        )]
    );
    find(
        &report,
        "slow_query/neo4j/127.0.0.1-7474/neo4j-transaction-42",
    );
}

#[test]
fn a_byte_that_is_not_utf8_costs_its_line_only() {
    let dir = tempdir();
    let bundle = incident()
        .edit_bytes("k8s/pods.ndjson", |data| {
            // Inside the first pod's name, on line 1 of 3.
            let at = data.windows(6).position(|w| w == b"ingest").unwrap();
            data[at] = 0xff;
        })
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.report();
    assert_eq!(
        problem_places(&report).into_iter().collect::<Vec<_>>(),
        [("k8s/pods.ndjson".to_owned(), Some(1))]
    );
    // Lines 2 and 3 are still read: the orders pod names the burst's service.
    find(&report, "timeout_burst/shop/orders/20261204T1352Z");
}

#[test]
fn a_record_line_longer_than_any_object_is_skipped_unread() {
    let dir = tempdir();
    let huge = format!(
        "{{\"kind\": \"Pod\", \"metadata\": {{\"name\": \"{}\"}}}}",
        "p".repeat(17 * 1024 * 1024)
    );
    let bundle = incident()
        .replace_line("k8s/pods.ndjson", 2, &huge)
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(
        (problem.file.as_str(), problem.line),
        ("k8s/pods.ndjson", Some(2))
    );
    assert_eq!(
        problem.message,
        format!(
            "cannot parse line: line is {} bytes, more than the 16777216 a record may have; skipped",
            huge.len() + 1
        )
    );
    find(&report, "oom/shop/ingest-5d8f-abcde/ingest");
    find(&report, "timeout_burst/shop/orders/20261204T1352Z");
}

#[test]
fn a_second_entry_of_the_same_name_cannot_replace_the_first() {
    let dir = tempdir();
    let bundle = incident()
        .unlisted("k8s/pods.ndjson", b"")
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.report();
    let problems: Vec<(&str, &str)> = report
        .problems
        .iter()
        .map(|p| (p.file.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        problems,
        [(
            "k8s/pods.ndjson",
            "a second entry with this name was ignored; the first is kept"
        )]
    );
    find(&report, "oom/shop/ingest-5d8f-abcde/ingest");
}

#[test]
fn a_kubernetes_field_of_the_wrong_type_is_named_and_the_object_still_read() {
    let dir = tempdir();
    let replace = |from: &'static str, to: &'static str| {
        move |data: &mut Vec<u8>| {
            let text = String::from_utf8(data.clone()).unwrap();
            assert!(text.contains(from), "{from}");
            *data = text.replacen(from, to, 1).into_bytes();
        }
    };
    let bundle = incident()
        .edit_bytes(
            "k8s/pods.ndjson",
            replace("\"restartCount\":3", "\"restartCount\":\"3\""),
        )
        .edit_bytes(
            "k8s/events.ndjson",
            replace(
                "\"firstTimestamp\":\"2026-12-04T12:20:00Z\"",
                "\"firstTimestamp\":\"12/04/2026 12:20\"",
            ),
        )
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.report();
    let problems: Vec<(&str, Option<u64>, Option<&str>, &str)> = report
        .problems
        .iter()
        .map(|p| {
            (
                p.file.as_str(),
                p.line,
                p.field.as_deref(),
                p.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            (
                "k8s/pods.ndjson",
                Some(1),
                Some("status.containerStatuses[0].restartCount"),
                "expected an integer, found \"3\"; the field is ignored"
            ),
            (
                "k8s/events.ndjson",
                Some(3),
                Some("firstTimestamp"),
                "expected an RFC 3339 time, found \"12/04/2026 12:20\"; the field is ignored"
            ),
        ]
    );
    // The rest of the pod is still read: its OOM kill is found.
    find(&report, "oom/shop/ingest-5d8f-abcde/ingest");
}

#[test]
fn warnings_on_stderr_are_coloured_only_for_a_terminal() {
    let dir = tempdir();
    let bundle = incident()
        .unlisted("logs/../../etc/x.log", b"x\n")
        .write(dir.path(), Compression::Zstd);
    for args in [&[][..], &["--color", "never"][..]] {
        let run = analyze(&bundle, args);
        assert_eq!(run.code, 2);
        assert!(
            run.stderr.contains("part of the bundle could not be read"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains('\x1b'), "{args:?}: {:?}", run.stderr);
    }
}

#[test]
fn control_characters_from_the_bundle_never_reach_the_terminal() {
    let dir = tempdir();
    // Clears the screen and sets the window title, were it printed as it is.
    let name = "logs/\x1b[2J\x1b]0;owned\x07.log";
    let bundle = incident()
        .unlisted(name, b"x\n")
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--color", "never"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout
            .contains("`logs/\\u{1b}[2J\\u{1b}]0;owned\\u{7}.log`: entry is not listed in the manifest; skipped"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('\x1b') && !run.stdout.contains('\x07'));
    assert!(
        !run.stderr.contains('\x1b') && !run.stderr.contains('\x07'),
        "{:?}",
        run.stderr
    );
    // JSON escapes them by its own rules and keeps the name exact.
    let report = analyze(&bundle, &["--format", "json"]).report();
    assert_eq!(report.problems[0].file, name);
}

#[test]
fn a_bundle_cut_before_its_header_is_named_in_the_error() {
    let dir = tempdir();
    let path = incident().write(dir.path(), Compression::Zstd);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..100]).unwrap();
    let run = analyze(&path, &[]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    let headline = run.stderr.lines().next().unwrap();
    assert_eq!(
        headline,
        format!("error: cannot read bundle `{}`", path.display())
    );
    assert!(
        run.stderr.contains("Caused by: cannot read the archive"),
        "{}",
        run.stderr
    );
}

#[test]
fn directory_entries_of_a_repacked_bundle_are_no_problem() {
    let dir = tempdir();
    // `tar --zstd -cf` of an extracted bundle writes a directory entry per folder.
    let bundle = incident()
        .directory("k8s/")
        .directory("logs/")
        .directory("logs/shop/")
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    let report = run.report();
    assert_eq!(report.problems, []);
    assert_eq!(run.code, 1);
}

#[test]
fn an_entry_over_the_cap_is_one_problem() {
    let dir = tempdir();
    let bundle = incident().write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json", "--max-entry-bytes", "12000"]);
    let report = run.report();
    let about_orders: Vec<&str> = report
        .problems
        .iter()
        .filter(|p| p.file == "logs/shop/orders-7c4d-fghij/orders.log")
        .map(|p| p.message.as_str())
        .collect();
    assert_eq!(
        about_orders,
        ["entry is larger than the cap of 12000 bytes; skipped"]
    );
}

#[test]
fn thresholds_that_would_overflow_or_compare_with_nothing_are_refused() {
    let dir = tempdir();
    let bundle = incident().write(dir.path(), Compression::Zstd);
    for (flag, value) in [
        ("--rollout-window", "9223372036854775807"),
        ("--warmup", "9223372036854775807"),
        ("--rollout-window", "0"),
        ("--p-value", "NaN"),
        ("--p-value", "2"),
        ("--burst-k", "inf"),
        ("--min-latency-ratio", "NaN"),
        ("--slow-query-seconds", "inf"),
    ] {
        let run = analyze(&bundle, &[flag, value]);
        assert_eq!(run.code, 2, "{flag} {value}: {}", run.stderr);
        assert!(
            run.stderr
                .starts_with(&format!("error: invalid value '{value}' for '{flag}")),
            "{flag} {value}: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
}

#[test]
fn a_stream_damaged_past_the_archive_end_is_a_problem() {
    // The gzip trailer (CRC and length) cut off, and bytes appended after a zstd frame:
    // every entry reads, but the file is not what was written.
    let cut_trailer = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap();
        std::fs::write(path, &bytes[..bytes.len() - 4]).unwrap();
    };
    let append_junk = |path: &std::path::Path| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend_from_slice(b"not a zstd frame");
        std::fs::write(path, bytes).unwrap();
    };
    for (compression, damage) in [
        (Compression::Gzip, &cut_trailer as &dyn Fn(&std::path::Path)),
        (Compression::Zstd, &append_junk),
    ] {
        let dir = tempdir();
        let path = incident().write(dir.path(), compression);
        damage(&path);
        let run = analyze(&path, &["--format", "json"]);
        assert_eq!(run.code, 2, "{compression:?}: {}", run.stderr);
        let report = run.report();
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        assert_eq!(report.problems[0].file, "bundle");
        assert!(
            report.problems[0]
                .message
                .starts_with("the compressed stream is damaged after the archive's end: "),
            "{}",
            report.problems[0].message
        );
        find(&report, "rollout_regression/shop/checkout/4");
    }
}

#[test]
fn a_manifest_of_another_format_version_is_not_trusted() {
    let dir = tempdir();
    let bundle = incident()
        .manifest_version(99)
        .write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--format", "json"]);
    assert_eq!(run.code, 2);
    let report = run.report();
    let problems: Vec<(&str, &str)> = report
        .problems
        .iter()
        .map(|p| (p.file.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        problems,
        [
            (
                "manifest.json",
                "manifest format version 99 is not supported (this analyzer reads version 1)"
            ),
            (
                "manifest.json",
                "no readable manifest; no entry could be verified"
            ),
        ]
    );
    find(&report, "rollout_regression/shop/checkout/4");
}

#[test]
fn a_header_or_manifest_over_the_cap_says_so() {
    let dir = tempdir();
    let bundle = incident().write(dir.path(), Compression::Zstd);
    let run = analyze(&bundle, &["--max-entry-bytes", "100"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("Caused by: `sitrep.json` is larger than the cap of 100 bytes"),
        "{}",
        run.stderr
    );

    // The manifest lists every file, so it is the largest of the small entries.
    let run = analyze(&bundle, &["--format", "json", "--max-entry-bytes", "2000"]);
    let report = run.report();
    assert!(
        report.problems.iter().any(|p| p.file == "manifest.json"
            && p.message == "manifest is larger than the cap of 2000 bytes"),
        "{:#?}",
        report.problems
    );
}
