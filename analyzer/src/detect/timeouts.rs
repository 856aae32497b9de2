//! Timeout bursts: log lines matching a lexicon of timeout signatures, counted per
//! service per minute, and runs of minutes well above the service's own baseline.

use std::collections::BTreeMap;

use polars::prelude::*;
use regex::RegexSet;
use sitrep_schemas::report::{
    Confidence, ConfidenceLevel, Detail, Evidence, Finding, Severity, SignatureCount, Subject,
    TimeoutBurst,
};

use super::{Thresholds, frame_error};
use crate::load::{Tables, from_millis, logs::Example};

/// Stable signature names and the patterns that recognise them.
const SIGNATURES: &[(&str, &str)] = &[
    ("go_context_deadline", r"context deadline exceeded"),
    ("go_io_timeout", r"\bi/o timeout\b"),
    (
        "grpc_deadline_exceeded",
        r"\bDEADLINE_EXCEEDED\b|code = DeadlineExceeded",
    ),
    (
        "java_socket_timeout",
        r"\bjava\.net\.SocketTimeoutException\b|\bSocketTimeoutException\b",
    ),
    ("node_etimedout", r"\bETIMEDOUT\b"),
    (
        "python_read_timeout",
        r"\b(?:requests\.exceptions\.|urllib3\.exceptions\.|httpx\.)?ReadTimeout(?:Error)?\b",
    ),
    ("envoy_upstream_timeout", r"\bupstream request timeout\b"),
    ("nginx_upstream_timed_out", r"\bupstream timed out\b"),
    (
        "postgres_statement_timeout",
        r"canceling statement due to statement timeout",
    ),
    (
        "neo4j_transaction_timeout",
        r"Neo\.ClientError\.Transaction\.TransactionTimedOut|(?i:transaction has been terminated.{0,80}tim(?:ed|e) ?out|transaction (?:has )?timed out)",
    ),
];

#[derive(Debug)]
pub(crate) struct Lexicon {
    set: RegexSet,
}

impl Default for Lexicon {
    fn default() -> Self {
        let set = RegexSet::new(SIGNATURES.iter().map(|(_, pattern)| pattern))
            .expect("lexicon patterns are valid");
        Lexicon { set }
    }
}

impl Lexicon {
    /// The first signature a message matches, in lexicon order.
    pub(crate) fn classify(&self, message: &str) -> Option<&'static str> {
        self.set
            .matches(message)
            .iter()
            .next()
            .map(|index| SIGNATURES[index].0)
    }
}

/// A run of hot minutes in one service's per-minute counts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Burst {
    /// Indexes into the per-minute series, inclusive.
    pub(crate) first: usize,
    pub(crate) last: usize,
    pub(crate) peak: usize,
    pub(crate) total: u64,
    /// Mean count per minute outside every burst of the series.
    pub(crate) baseline: f64,
    pub(crate) threshold: f64,
}

/// Finds bursts in a dense per-minute series. The baseline is robust: the median, plus
/// `k` times the median absolute deviation (scaled to a standard deviation, and at least
/// one), and never below `min_count`. Hot minutes closer than `merge_gap` minutes join
/// into one burst.
pub(crate) fn bursts(counts: &[u64], k: f64, min_count: f64, merge_gap: usize) -> Vec<Burst> {
    if counts.is_empty() {
        return Vec::new();
    }
    let values: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
    let median = super::stats::median(&values);
    let deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    let spread = (1.4826 * super::stats::median(&deviations)).max(1.0);
    let threshold = (median + k * spread).max(min_count);

    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (index, &value) in values.iter().enumerate() {
        if value < threshold {
            continue;
        }
        match runs.last_mut() {
            Some((_, last)) if index - *last <= merge_gap => *last = index,
            _ => runs.push((index, index)),
        }
    }

    let inside: usize = runs.iter().map(|(a, b)| b - a + 1).sum();
    let outside_total: u64 = counts.iter().sum::<u64>()
        - runs
            .iter()
            .map(|&(a, b)| counts[a..=b].iter().sum::<u64>())
            .sum::<u64>();
    let outside_minutes = counts.len() - inside;
    let baseline = if outside_minutes == 0 {
        0.0
    } else {
        outside_total as f64 / outside_minutes as f64
    };
    runs.into_iter()
        .map(|(first, last)| {
            let peak = (first..=last)
                .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
                .unwrap_or(first);
            Burst {
                first,
                last,
                peak,
                total: counts[first..=last].iter().sum(),
                baseline,
                threshold,
            }
        })
        .collect()
}

/// Per service: `(namespace, service) → minute ms → signature → count`.
type Counts = BTreeMap<(String, String), BTreeMap<i64, BTreeMap<String, u64>>>;

fn count_by_minute(log_lines: &DataFrame) -> PolarsResult<Counts> {
    let grouped = log_lines
        .clone()
        .lazy()
        .group_by([
            col("namespace"),
            col("service"),
            col("minute"),
            col("signature"),
        ])
        .agg([len().alias("count")])
        .collect()?;
    let namespace = grouped.column("namespace")?.str()?;
    let service = grouped.column("service")?.str()?;
    let minute = grouped.column("minute")?.datetime()?.physical().clone();
    let signature = grouped.column("signature")?.str()?;
    let count = grouped.column("count")?.u32()?;
    let mut out = Counts::new();
    for i in 0..grouped.height() {
        let (Some(ns), Some(svc), Some(at), Some(sig), Some(n)) = (
            namespace.get(i),
            service.get(i),
            minute.get(i),
            signature.get(i),
            count.get(i),
        ) else {
            continue;
        };
        *out.entry((ns.to_owned(), svc.to_owned()))
            .or_default()
            .entry(at)
            .or_default()
            .entry(sig.to_owned())
            .or_default() += u64::from(n);
    }
    Ok(out)
}

pub(crate) fn detect(tables: &Tables, window: (i64, i64), thresholds: &Thresholds) -> Vec<Finding> {
    let counts = match count_by_minute(&tables.log_lines) {
        Ok(counts) => counts,
        Err(error) => return frame_error("timeouts", &error),
    };
    let mut findings = Vec::new();
    for ((namespace, service), by_minute) in counts {
        // The series covers the whole window, so quiet minutes count as zeros.
        let first = crate::load::minute_of(window.0).min(*by_minute.keys().next().unwrap_or(&0));
        let last = crate::load::minute_of(window.1).max(*by_minute.keys().last().unwrap_or(&0));
        let minutes: Vec<i64> = (first..=last).step_by(60_000).collect();
        let series: Vec<u64> = minutes
            .iter()
            .map(|m| by_minute.get(m).map_or(0, |s| s.values().sum()))
            .collect();
        for burst in bursts(
            &series,
            thresholds.burst_k,
            thresholds.burst_min_count,
            thresholds.burst_merge_minutes,
        ) {
            let start = minutes[burst.first];
            let end = minutes[burst.last];
            let mut per_signature: BTreeMap<String, u64> = BTreeMap::new();
            for minute in &minutes[burst.first..=burst.last] {
                for (signature, n) in by_minute.get(minute).into_iter().flatten() {
                    *per_signature.entry(signature.clone()).or_default() += n;
                }
            }
            let mut signatures: Vec<SignatureCount> = per_signature
                .into_iter()
                .map(|(signature, count)| SignatureCount { signature, count })
                .collect();
            signatures.sort_by(|a, b| b.count.cmp(&a.count).then(a.signature.cmp(&b.signature)));
            findings.push(finding(
                tables,
                &namespace,
                &service,
                &burst,
                start,
                end,
                minutes[burst.peak],
                series[burst.peak],
                signatures,
                window.1,
            ));
        }
    }
    findings
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site assembles the finding"
)]
fn finding(
    tables: &Tables,
    namespace: &str,
    service: &str,
    burst: &Burst,
    start: i64,
    end: i64,
    peak_minute: i64,
    peak_count: u64,
    signatures: Vec<SignatureCount>,
    window_end: i64,
) -> Finding {
    let pods: Vec<&str> = tables
        .pods
        .iter()
        .filter(|p| p.namespace == namespace && p.service == service)
        .map(|p| p.pod.as_str())
        .collect();
    let candidates: Vec<&Example> = tables
        .log_examples
        .iter()
        .filter(|e| {
            e.namespace == namespace
                && (pods.contains(&e.pod.as_str()) || e.pod == service)
                && e.ts.is_some_and(|t| {
                    let t = t.timestamp_millis();
                    t >= start && t < end + 60_000
                })
        })
        .collect();
    let examples = pick_examples(&candidates, &signatures, 3);
    let minutes = (end - start) / 60_000 + 1;
    let over = peak_count as f64 / burst.threshold;
    let (level, score) = if minutes >= 3 && over >= 2.0 {
        (ConfidenceLevel::High, 0.9)
    } else if minutes >= 2 || over >= 2.0 {
        (ConfidenceLevel::Medium, 0.6)
    } else {
        (ConfidenceLevel::Low, 0.35)
    };
    let mut reasons = vec![
        format!(
            "{} timeout lines in {minutes} minute(s) against a usual {:.2} a minute",
            burst.total, burst.baseline
        ),
        format!(
            "peak of {peak_count} in one minute, {over:.1}× the burst threshold of {:.1}",
            burst.threshold
        ),
    ];
    let since_minutes = (window_end - start).max(0) / 60_000 + 1;
    let signature_text: Vec<String> = signatures
        .iter()
        .map(|s| format!("{} {}", s.signature, s.count))
        .collect();
    reasons.push(format!("signatures: {}", signature_text.join(", ")));
    Finding {
        id: format!(
            "timeout_burst/{namespace}/{service}/{}",
            from_millis(start).format("%Y%m%dT%H%MZ")
        ),
        severity: Severity::Warning,
        confidence: Confidence {
            level,
            score,
            reasons,
        },
        title: format!(
            "timeout burst in `{namespace}/{service}`: {} timeouts from {} to {} (peak {peak_count}/min, usual {:.2}/min)",
            burst.total,
            from_millis(start).format("%H:%M"),
            from_millis(end + 60_000).format("%H:%M"),
            burst.baseline
        ),
        start: Some(from_millis(start)),
        end: Some(from_millis(end + 60_000)),
        subject: Subject {
            namespace: Some(namespace.to_owned()),
            service: Some(service.to_owned()),
            ..Subject::default()
        },
        evidence: examples
            .iter()
            .map(|e| Evidence {
                ts: e.ts,
                file: e.file.clone(),
                text: format!("[{}] {}", e.signature, e.text),
            })
            .collect(),
        detail: Detail::TimeoutBurst(TimeoutBurst {
            namespace: Some(namespace.to_owned()),
            service: service.to_owned(),
            start: from_millis(start),
            end: from_millis(end),
            peak_minute: from_millis(peak_minute),
            peak_count,
            total: burst.total,
            baseline_per_minute: burst.baseline,
            signatures,
            examples: examples.iter().map(|e| e.text.clone()).collect(),
        }),
        next_steps: vec![format!(
            "kubectl logs deploy/{service} -n {namespace} --since={since_minutes}m"
        )],
    }
}

/// Up to `limit` examples with distinct texts, taking the signatures in turn (most
/// frequent first) so that each kind of timeout is shown.
fn pick_examples<'a>(
    candidates: &[&'a Example],
    signatures: &[SignatureCount],
    limit: usize,
) -> Vec<&'a Example> {
    let mut picked: Vec<&Example> = Vec::new();
    let mut progress = true;
    while picked.len() < limit && progress {
        progress = false;
        for signature in signatures {
            let next = candidates.iter().find(|e| {
                e.signature == signature.signature && picked.iter().all(|p| p.text != e.text)
            });
            if let Some(example) = next
                && picked.len() < limit
            {
                picked.push(example);
                progress = true;
            }
        }
    }
    picked.sort_by_key(|e| e.ts);
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_matches_its_real_line_and_not_its_near_miss() {
        let cases = [
            (
                "go_context_deadline",
                r#"level=error msg="query failed" err="context deadline exceeded""#,
                "deadline for the context was extended",
            ),
            (
                "go_io_timeout",
                "dial tcp 10.0.3.7:5432: i/o timeout",
                "radio timeouts are configured",
            ),
            (
                "grpc_deadline_exceeded",
                "rpc error: code = DeadlineExceeded desc = DEADLINE_EXCEEDED",
                "deadline_exceeded_total metric registered",
            ),
            (
                "java_socket_timeout",
                "java.net.SocketTimeoutException: Read timed out",
                "SocketTimeoutExceptions are retried by the client",
            ),
            (
                "node_etimedout",
                "Error: connect ETIMEDOUT 10.0.0.5:443",
                "NETIMEDOUTS counter reset",
            ),
            (
                "python_read_timeout",
                "requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='api', port=443): Read timed out.",
                "ReadTimeouts are logged at debug",
            ),
            (
                "envoy_upstream_timeout",
                "upstream request timeout",
                "upstream request timeouts set to 15s",
            ),
            (
                "nginx_upstream_timed_out",
                "upstream timed out (110: Connection timed out) while reading response header from upstream",
                "upstream timed-out count",
            ),
            (
                "postgres_statement_timeout",
                "ERROR:  canceling statement due to statement timeout",
                "canceling statement due to user request",
            ),
            (
                "neo4j_transaction_timeout",
                "Neo.ClientError.Transaction.TransactionTimedOut: The transaction has been terminated. Retry your operation in a new transaction, and you should see a successful result. The transaction has not completed within the specified timeout (db.transaction.timeout).",
                "The transaction has been terminated by an administrator.",
            ),
        ];
        let lexicon = Lexicon::default();
        assert_eq!(cases.len(), SIGNATURES.len());
        for (name, hit, miss) in cases {
            assert_eq!(lexicon.classify(hit), Some(name), "{hit}");
            assert_eq!(lexicon.classify(miss), None, "{miss}");
        }
        assert_eq!(
            lexicon.classify("Neo4j: transaction timed out after 30s"),
            Some("neo4j_transaction_timeout")
        );
    }

    #[test]
    fn a_burst_stands_out_from_a_quiet_baseline() {
        // 40 quiet minutes with a timeout at 10 and 30, then 8 busy minutes with one
        // lull (minute 44) that the 2-minute merge bridges.
        let mut series = vec![0u64; 48];
        series[10] = 1;
        series[30] = 1;
        for (minute, count) in [
            (40, 12),
            (41, 30),
            (42, 25),
            (43, 9),
            (44, 2),
            (45, 14),
            (46, 7),
            (47, 6),
        ] {
            series[minute] = count;
        }
        let found = bursts(&series, 3.0, 5.0, 2);
        // Median 0, MAD 0 → spread 1 → threshold max(5, 0 + 3) = 5.
        assert_eq!(
            found,
            [Burst {
                first: 40,
                last: 47,
                peak: 41,
                total: 12 + 30 + 25 + 9 + 2 + 14 + 7 + 6,
                // Two timeouts in the 40 minutes outside the burst.
                baseline: 2.0 / 40.0,
                threshold: 5.0,
            }]
        );
    }

    #[test]
    fn hot_minutes_far_apart_are_separate_bursts() {
        let mut series = vec![0u64; 20];
        series[2] = 6;
        series[10] = 8;
        let found = bursts(&series, 3.0, 5.0, 2);
        assert_eq!(
            found.iter().map(|b| (b.first, b.last)).collect::<Vec<_>>(),
            [(2, 2), (10, 10)]
        );
    }

    #[test]
    fn a_steady_rate_is_no_burst() {
        assert!(bursts(&[4; 30], 3.0, 5.0, 2).is_empty());
        assert!(bursts(&[], 3.0, 5.0, 2).is_empty());
    }
}
