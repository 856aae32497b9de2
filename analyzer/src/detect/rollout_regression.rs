//! Rollout regressions: per-minute p99 and 5xx ratio in equal windows before and after
//! each rollout in the collection window, compared with a rank test and a count test.
//!
//! A rollout that changed nothing measurable yields no finding at all; one with too few
//! points on a side yields an `insufficient_data` note that claims nothing.

use std::collections::BTreeMap;

use polars::prelude::PolarsResult;
use sitrep_schemas::paths;
use sitrep_schemas::report::{
    Confidence, ConfidenceLevel, Detail, ErrorComparison, Evidence, Finding, LatencyComparison,
    RolloutRegression, RolloutVerdict, Severity, Subject,
};

use super::stats::{Bucket, histogram_quantile, hodges_lehmann, mann_whitney, median};
use super::{Thresholds, frame_error, per_minute};
use crate::load::k8s::Rollout;
use crate::load::metrics::parse_sample;
use crate::load::{Tables, from_millis, millis};

const QUANTILE: f64 = 0.99;
const MINUTE: i64 = 60_000;
/// Two-sided 95 % normal quantile, for the shift's interval.
const Z_95: f64 = 1.959_964;

/// Per-minute values of one service.
#[derive(Debug, Default)]
struct ServiceSeries {
    /// Minute → p99 in seconds.
    latency: BTreeMap<i64, f64>,
    latency_query: &'static str,
    /// Minute → requests and 5xx responses per second.
    requests: BTreeMap<i64, f64>,
    errors: BTreeMap<i64, f64>,
}

fn service_series(tables: &Tables, namespace: &str, service: &str) -> PolarsResult<ServiceSeries> {
    let filters = [("namespace", namespace), ("service", service)];
    let mut series = ServiceSeries {
        latency_query: "latency_buckets",
        ..ServiceSeries::default()
    };

    let mut buckets: BTreeMap<i64, Vec<Bucket>> = BTreeMap::new();
    for (minute, le, rate) in per_minute(&tables.metrics, "latency_buckets", &filters, true)? {
        if let Some(upper) = le.as_deref().and_then(parse_sample) {
            buckets
                .entry(minute)
                .or_default()
                .push(Bucket { upper, count: rate });
        }
    }
    for (minute, minute_buckets) in buckets {
        let p99 = histogram_quantile(QUANTILE, &minute_buckets);
        if p99.is_finite() {
            series.latency.insert(minute, p99);
        }
    }
    if series.latency.is_empty() {
        series.latency_query = "latency_p99";
        for (minute, _, value) in per_minute(&tables.metrics, "latency_p99", &filters, false)? {
            if value.is_finite() {
                series.latency.insert(minute, value);
            }
        }
    }
    for (minute, _, value) in per_minute(&tables.metrics, "request_rate", &filters, false)? {
        series.requests.insert(minute, value);
    }
    for (minute, _, value) in per_minute(&tables.metrics, "error_rate", &filters, false)? {
        series.errors.insert(minute, value);
    }
    Ok(series)
}

/// The before and after ranges `[start, end)` in ms: equal lengths, at most the
/// configured window, shortened to what the data covers, after a warm-up gap.
fn windows(
    rollout_at: i64,
    first_minute: i64,
    last_minute: i64,
    thresholds: &Thresholds,
) -> ((i64, i64), (i64, i64)) {
    let after_start = rollout_at + thresholds.warmup_minutes * MINUTE;
    let before_room = (rollout_at - first_minute).max(0);
    let after_room = (last_minute + MINUTE - after_start).max(0);
    let length = (thresholds.rollout_window_minutes * MINUTE)
        .min(before_room)
        .min(after_room);
    (
        (rollout_at - length, rollout_at),
        (after_start, after_start + length),
    )
}

fn in_range(series: &BTreeMap<i64, f64>, (start, end): (i64, i64)) -> Vec<f64> {
    series.range(start..end).map(|(_, v)| *v).collect()
}

/// Requests and 5xx responses in a range: a rate per second times 60 for each minute
/// that has a request rate; a minute with no 5xx series had no 5xx responses.
fn counts(series: &ServiceSeries, (start, end): (i64, i64)) -> (f64, f64) {
    let mut requests = 0.0;
    let mut errors = 0.0;
    for (minute, rate) in series.requests.range(start..end) {
        if !rate.is_finite() {
            continue;
        }
        requests += rate * 60.0;
        errors += series
            .errors
            .get(minute)
            .filter(|e| e.is_finite())
            .map_or(0.0, |e| e * 60.0);
    }
    (errors, requests)
}

pub(crate) fn detect(tables: &Tables, window: (i64, i64), thresholds: &Thresholds) -> Vec<Finding> {
    let mut findings = Vec::new();
    for rollout in &tables.rollouts {
        let Some(started) = rollout.started.map(millis) else {
            continue;
        };
        if started < window.0 || started > window.1 {
            continue;
        }
        let previous = tables
            .rollouts
            .iter()
            .filter(|r| {
                r.namespace == rollout.namespace
                    && r.deployment == rollout.deployment
                    && r.revision < rollout.revision
            })
            .max_by_key(|r| r.revision);
        let service = tables
            .deployments
            .iter()
            .find(|d| d.namespace == rollout.namespace && d.name == rollout.deployment)
            .map_or(rollout.service.as_str(), |d| d.service.as_str());
        let series = match service_series(tables, &rollout.namespace, service) {
            Ok(series) => series,
            Err(error) => return frame_error("rollout_regression", &error),
        };
        if let Some(finding) = compare(rollout, previous, service, started, &series, thresholds) {
            findings.push(finding);
        }
    }
    findings
}

fn compare(
    rollout: &Rollout,
    previous: Option<&Rollout>,
    service: &str,
    started: i64,
    series: &ServiceSeries,
    thresholds: &Thresholds,
) -> Option<Finding> {
    let minutes: Vec<i64> = series
        .latency
        .keys()
        .chain(series.requests.keys())
        .copied()
        .collect();
    let first = minutes.iter().min().copied().unwrap_or(started);
    let last = minutes.iter().max().copied().unwrap_or(started);
    let (before_range, after_range) = windows(started, first, last, thresholds);
    let before = in_range(&series.latency, before_range);
    let after = in_range(&series.latency, after_range);
    let (before_errors, before_requests) = counts(series, before_range);
    let (after_errors, after_requests) = counts(series, after_range);
    let n_before = before.len().max(
        series
            .requests
            .range(before_range.0..before_range.1)
            .count(),
    );
    let n_after = after
        .len()
        .max(series.requests.range(after_range.0..after_range.1).count());

    let mut base = Base {
        rollout,
        previous,
        service,
        started,
        changes: changes(previous, rollout),
    };
    if n_before < thresholds.min_points || n_after < thresholds.min_points {
        return Some(base.insufficient(n_before, n_after, thresholds));
    }

    // A zero p99 before has no ratio, and JSON has no infinity: such a side is not compared.
    let comparable = median(&before) > 0.0;
    let latency = (comparable
        && before.len() >= thresholds.min_points
        && after.len() >= thresholds.min_points)
        .then(|| {
            let (_, p_value) = mann_whitney(&before, &after);
            let (shift, (low, high)) = hodges_lehmann(&before, &after, Z_95);
            let before_ms = median(&before) * 1000.0;
            let after_ms = median(&after) * 1000.0;
            LatencyComparison {
                quantile: QUANTILE,
                before_ms,
                after_ms,
                ratio: after_ms / before_ms,
                shift_ms: shift * 1000.0,
                shift_ci_ms: (low * 1000.0, high * 1000.0),
                p_value,
                n_before: before.len() as u32,
                n_after: after.len() as u32,
            }
        });
    // 5xx responses are a subset of requests, and JSON has no infinity: counts that
    // overflowed or that contradict each other (bad samples) are not compared.
    let counts_hold = [before_errors, before_requests, after_errors, after_requests]
        .iter()
        .all(|c| c.is_finite() && *c >= 0.0)
        && before_errors <= before_requests
        && after_errors <= after_requests;
    let errors =
        (counts_hold && before_requests > 0.0 && after_requests > 0.0).then(|| ErrorComparison {
            before_ratio: before_errors / before_requests,
            after_ratio: after_errors / after_requests,
            before_errors,
            before_requests,
            after_errors,
            after_requests,
            p_value: super::stats::two_proportion_greater(
                before_errors,
                before_requests,
                after_errors,
                after_requests,
            ),
        });

    let latency_regressed = latency
        .as_ref()
        .is_some_and(|l| l.p_value < thresholds.p_value && l.ratio >= thresholds.min_latency_ratio);
    let errors_regressed = errors.as_ref().is_some_and(|e| {
        e.p_value < thresholds.p_value
            && e.after_ratio - e.before_ratio >= thresholds.min_error_rise
    });
    if !latency_regressed && !errors_regressed {
        return None;
    }
    let minutes_each = (before_range.1 - before_range.0) / MINUTE;
    Some(base.regressed(
        latency,
        errors,
        latency_regressed,
        errors_regressed,
        minutes_each,
        series.latency_query,
        thresholds,
    ))
}

/// The parts of a rollout finding that do not depend on the verdict.
struct Base<'a> {
    rollout: &'a Rollout,
    previous: Option<&'a Rollout>,
    service: &'a str,
    started: i64,
    changes: Vec<String>,
}

impl Base<'_> {
    fn id(&self) -> String {
        format!(
            "rollout_regression/{}/{}/{}",
            self.rollout.namespace, self.rollout.deployment, self.rollout.revision
        )
    }

    fn subject(&self) -> Subject {
        Subject {
            namespace: Some(self.rollout.namespace.clone()),
            deployment: Some(self.rollout.deployment.clone()),
            revision: Some(self.rollout.revision),
            service: Some(self.service.to_owned()),
            ..Subject::default()
        }
    }

    fn detail(
        &mut self,
        verdict: RolloutVerdict,
        latency: Option<LatencyComparison>,
        errors: Option<ErrorComparison>,
    ) -> Detail {
        Detail::RolloutRegression(RolloutRegression {
            namespace: self.rollout.namespace.clone(),
            deployment: self.rollout.deployment.clone(),
            from_revision: self.previous.map(|p| p.revision),
            to_revision: self.rollout.revision,
            from_image: self
                .previous
                .and_then(Rollout::main_image)
                .map(str::to_owned),
            to_image: self.rollout.main_image().map(str::to_owned),
            rollout_at: from_millis(self.started),
            verdict,
            latency,
            errors,
            changes: std::mem::take(&mut self.changes),
        })
    }

    fn revisions(&self) -> String {
        match self.previous {
            Some(previous) => format!("revision {} → {}", previous.revision, self.rollout.revision),
            None => format!("revision {}", self.rollout.revision),
        }
    }

    fn evidence(&self) -> Vec<Evidence> {
        vec![Evidence {
            ts: Some(from_millis(self.started)),
            file: paths::k8s(paths::k8s::REPLICASETS),
            text: format!(
                "ReplicaSet `{}` (revision {}) scaled up",
                self.rollout.replicaset, self.rollout.revision
            ),
        }]
    }

    fn insufficient(
        &mut self,
        n_before: usize,
        n_after: usize,
        thresholds: &Thresholds,
    ) -> Finding {
        let title = format!(
            "`{}/{}` {}: not enough data to judge ({n_before} minutes before, {n_after} after; {} needed on each side)",
            self.rollout.namespace,
            self.rollout.deployment,
            self.revisions(),
            thresholds.min_points
        );
        Finding {
            id: self.id(),
            severity: Severity::Info,
            confidence: Confidence {
                level: ConfidenceLevel::Low,
                score: 0.0,
                reasons: vec![format!(
                    "fewer than {} per-minute points on a side; nothing is claimed",
                    thresholds.min_points
                )],
            },
            title,
            start: Some(from_millis(self.started)),
            end: None,
            subject: self.subject(),
            evidence: self.evidence(),
            detail: self.detail(RolloutVerdict::InsufficientData, None, None),
            next_steps: Vec::new(),
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the verdict's inputs, used once")]
    fn regressed(
        &mut self,
        latency: Option<LatencyComparison>,
        errors: Option<ErrorComparison>,
        latency_regressed: bool,
        errors_regressed: bool,
        minutes_each: i64,
        latency_query: &str,
        thresholds: &Thresholds,
    ) -> Finding {
        let ratio = latency.as_ref().map_or(1.0, |l| l.ratio);
        let after_error_ratio = errors.as_ref().map_or(0.0, |e| e.after_ratio);
        let severity = if (latency_regressed && ratio >= 2.0) || after_error_ratio >= 0.05 {
            Severity::Critical
        } else {
            Severity::Warning
        };

        let mut reasons = Vec::new();
        let mut score: f64 = 0.0;
        let mut headline = Vec::new();
        if let Some(l) = &latency {
            let word = if latency_regressed { "rose" } else { "changed" };
            reasons.push(format!(
                "per-minute p99 {word} from {:.0} ms to {:.0} ms (×{:.2}); Mann–Whitney p = {:.2e} on {} + {} minutes",
                l.before_ms, l.after_ms, l.ratio, l.p_value, l.n_before, l.n_after
            ));
            reasons.push(format!(
                "Hodges–Lehmann shift {:+.0} ms, 95 % interval {:+.0} … {:+.0} ms",
                l.shift_ms, l.shift_ci_ms.0, l.shift_ci_ms.1
            ));
            if latency_regressed {
                headline.push(format!(
                    "p99 {:.0} ms → {:.0} ms (×{:.1})",
                    l.before_ms, l.after_ms, l.ratio
                ));
                score = score.max(strength(
                    l.p_value,
                    l.n_before.min(l.n_after),
                    l.ratio,
                    thresholds,
                ));
            }
        }
        if let Some(e) = &errors {
            reasons.push(format!(
                "5xx ratio {:.2} % → {:.2} % ({:.0} of {:.0} requests → {:.0} of {:.0}); one-sided p = {:.2e}",
                100.0 * e.before_ratio,
                100.0 * e.after_ratio,
                e.before_errors,
                e.before_requests,
                e.after_errors,
                e.after_requests,
                e.p_value
            ));
            if errors_regressed {
                headline.push(format!(
                    "5xx {:.1} % → {:.1} %",
                    100.0 * e.before_ratio,
                    100.0 * e.after_ratio
                ));
                let rise = if e.before_ratio > 0.0 {
                    e.after_ratio / e.before_ratio
                } else {
                    10.0
                };
                score = score.max(strength(
                    e.p_value,
                    thresholds.min_points as u32 * 2,
                    rise,
                    thresholds,
                ));
            }
        }
        reasons.push(format!(
            "{minutes_each} minutes compared on each side, after a {} minute warm-up; latency from `{latency_query}`",
            thresholds.warmup_minutes
        ));
        let level = if score >= 0.8 {
            ConfidenceLevel::High
        } else if score >= 0.5 {
            ConfidenceLevel::Medium
        } else {
            ConfidenceLevel::Low
        };

        let title = format!(
            "rollout of `{}/{}` {} regressed: {}",
            self.rollout.namespace,
            self.rollout.deployment,
            self.revisions(),
            headline.join(", ")
        );
        let next_steps = self
            .previous
            .map(|p| {
                vec![format!(
                    "kubectl rollout undo deployment/{} -n {} --to-revision={}",
                    self.rollout.deployment, self.rollout.namespace, p.revision
                )]
            })
            .unwrap_or_default();
        let mut evidence = self.evidence();
        evidence.push(Evidence {
            ts: Some(from_millis(self.started)),
            file: paths::prometheus_response(latency_query, None),
            text: format!(
                "per-minute p99 from `{latency_query}`, {minutes_each} minutes each side"
            ),
        });
        Finding {
            id: self.id(),
            severity,
            confidence: Confidence {
                level,
                score: (score * 100.0).round() / 100.0,
                reasons,
            },
            title,
            start: Some(from_millis(self.started)),
            end: None,
            subject: self.subject(),
            evidence,
            detail: self.detail(RolloutVerdict::Regressed, latency, errors),
            next_steps,
        }
    }
}

/// Confidence from the p-value, the smaller side's size and the effect, each in [0, 1].
fn strength(p_value: f64, n: u32, effect: f64, thresholds: &Thresholds) -> f64 {
    let significance = if p_value < 1e-6 {
        1.0
    } else if p_value < 1e-3 {
        0.85
    } else {
        0.6
    };
    let size = (f64::from(n) / (3.0 * thresholds.min_points as f64)).min(1.0);
    let magnitude = ((effect - 1.0) / 1.0).clamp(0.0, 1.0);
    significance * (0.6 + 0.2 * size + 0.2 * magnitude)
}

/// What differs between two revisions' pod templates, one change a line.
pub(crate) fn changes(previous: Option<&Rollout>, current: &Rollout) -> Vec<String> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let key = |c: &crate::load::k8s::ContainerSpec| (c.init, c.name.clone());
    let before: BTreeMap<_, _> = previous.containers.iter().map(|c| (key(c), c)).collect();
    let after: BTreeMap<_, _> = current.containers.iter().map(|c| (key(c), c)).collect();
    for (k, old) in &before {
        let label = if k.0 { "init container" } else { "container" };
        let Some(new) = after.get(k) else {
            out.push(format!("{label} `{}` removed", k.1));
            continue;
        };
        if old.image != new.image {
            out.push(format!(
                "{label} `{}` image {} → {}",
                k.1,
                old.image.as_deref().unwrap_or("-"),
                new.image.as_deref().unwrap_or("-")
            ));
        }
        for (what, a, b) in [
            ("limit", &old.limits, &new.limits),
            ("request", &old.requests, &new.requests),
        ] {
            let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                let (x, y) = (a.get(name), b.get(name));
                if x != y {
                    out.push(format!(
                        "{label} `{}` {name} {what} {} → {}",
                        k.1,
                        x.map_or("none", String::as_str),
                        y.map_or("none", String::as_str)
                    ));
                }
            }
        }
        let added: Vec<&str> = new
            .env_names
            .difference(&old.env_names)
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = old
            .env_names
            .difference(&new.env_names)
            .map(String::as_str)
            .collect();
        if !added.is_empty() {
            out.push(format!("{label} `{}` env added: {}", k.1, added.join(", ")));
        }
        if !removed.is_empty() {
            out.push(format!(
                "{label} `{}` env removed: {}",
                k.1,
                removed.join(", ")
            ));
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        let label = if k.0 { "init container" } else { "container" };
        out.push(format!("{label} `{}` added", k.1));
    }
    if previous.desired_replicas != current.desired_replicas
        && let (Some(a), Some(b)) = (previous.desired_replicas, current.desired_replicas)
    {
        out.push(format!("replicas {a} → {b}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::k8s::ContainerSpec;

    fn rollout(revision: i64, image: &str, memory: &str, env: &[&str], replicas: i64) -> Rollout {
        Rollout {
            namespace: "shop".into(),
            deployment: "checkout".into(),
            revision,
            replicaset: format!("checkout-{revision}"),
            started: None,
            desired_replicas: Some(replicas),
            service: "checkout".into(),
            containers: vec![ContainerSpec {
                name: "app".into(),
                init: false,
                image: Some(image.into()),
                limits: [("memory".to_owned(), memory.to_owned())].into(),
                requests: Default::default(),
                env_names: env.iter().map(|e| (*e).to_owned()).collect(),
            }],
        }
    }

    #[test]
    fn template_changes_are_listed_one_per_line() {
        let old = rollout(3, "checkout:1.14.2", "512Mi", &["DB_URL", "OLD_FLAG"], 3);
        let new = rollout(4, "checkout:1.15.0", "256Mi", &["DB_URL", "NEW_FLAG"], 4);
        assert_eq!(
            changes(Some(&old), &new),
            [
                "container `app` image checkout:1.14.2 → checkout:1.15.0",
                "container `app` memory limit 512Mi → 256Mi",
                "container `app` env added: NEW_FLAG",
                "container `app` env removed: OLD_FLAG",
                "replicas 3 → 4",
            ]
        );
        assert!(changes(Some(&old), &old).is_empty());
    }

    #[test]
    fn windows_are_equal_and_shortened_to_the_data() {
        let t = 100 * MINUTE;
        let thresholds = Thresholds::default();
        // Plenty of data: 30 minutes each side, the after side starting 5 minutes late.
        assert_eq!(
            windows(t, 0, 200 * MINUTE, &thresholds),
            ((70 * MINUTE, t), (105 * MINUTE, 135 * MINUTE))
        );
        // Data ends 20 minutes after the rollout: 16 minutes are left after the warm-up
        // (105 … 120 inclusive), so both sides shrink to 16.
        assert_eq!(
            windows(t, 0, 120 * MINUTE, &thresholds),
            ((84 * MINUTE, t), (105 * MINUTE, 121 * MINUTE))
        );
    }

    fn flat(value: f64, from: i64, minutes: i64) -> BTreeMap<i64, f64> {
        (0..minutes).map(|i| ((from + i) * MINUTE, value)).collect()
    }

    #[test]
    fn an_unchanged_service_yields_nothing_and_a_short_one_claims_nothing() {
        let old = rollout(7, "search:2.3.0", "1Gi", &[], 2);
        let new = rollout(8, "search:2.3.1", "1Gi", &[], 2);
        let t = 100 * MINUTE;
        let steady = ServiceSeries {
            latency: flat(0.12, 0, 200),
            latency_query: "latency_buckets",
            requests: flat(50.0, 0, 200),
            errors: flat(0.25, 0, 200),
        };
        assert!(
            compare(
                &new,
                Some(&old),
                "search",
                t,
                &steady,
                &Thresholds::default()
            )
            .is_none()
        );

        let short = ServiceSeries {
            latency: flat(0.12, 95, 20),
            latency_query: "latency_buckets",
            requests: flat(50.0, 95, 20),
            errors: BTreeMap::new(),
        };
        let note = compare(
            &new,
            Some(&old),
            "search",
            t,
            &short,
            &Thresholds::default(),
        )
        .unwrap();
        assert_eq!(note.severity, Severity::Info);
        let Detail::RolloutRegression(detail) = note.detail else {
            panic!("{:?}", note.detail)
        };
        assert_eq!(detail.verdict, RolloutVerdict::InsufficientData);
        assert!(detail.latency.is_none() && detail.errors.is_none());
    }

    #[test]
    fn a_slower_rollout_is_a_critical_regression() {
        let old = rollout(3, "checkout:1.14.2", "512Mi", &[], 3);
        let new = rollout(4, "checkout:1.15.0", "512Mi", &[], 3);
        let t = 100 * MINUTE;
        let mut latency = flat(0.2, 0, 100);
        latency.extend(flat(0.9, 100, 100));
        let mut errors = flat(0.05, 0, 100);
        errors.extend(flat(0.4, 100, 100));
        let series = ServiceSeries {
            latency,
            latency_query: "latency_buckets",
            requests: flat(10.0, 0, 200),
            errors,
        };
        let finding = compare(
            &new,
            Some(&old),
            "checkout",
            t,
            &series,
            &Thresholds::default(),
        )
        .unwrap();
        assert_eq!(finding.severity, Severity::Critical);
        assert_eq!(
            finding.next_steps,
            ["kubectl rollout undo deployment/checkout -n shop --to-revision=3"]
        );
        let Detail::RolloutRegression(detail) = finding.detail else {
            panic!()
        };
        let latency = detail.latency.unwrap();
        assert_eq!(
            (latency.before_ms.round(), latency.after_ms.round()),
            (200.0, 900.0)
        );
        assert!((latency.ratio - 4.5).abs() < 1e-9);
        assert!((latency.shift_ms - 700.0).abs() < 1e-9);
        assert_eq!((latency.n_before, latency.n_after), (30, 30));
        let errors = detail.errors.unwrap();
        // 30 minutes × 10 req/s × 60 s = 18 000 requests a side; 0.05 and 0.4 errors/s.
        assert_eq!(
            (errors.before_requests, errors.after_requests),
            (18_000.0, 18_000.0)
        );
        assert!((errors.before_ratio - 0.005).abs() < 1e-12);
        assert!((errors.after_ratio - 0.04).abs() < 1e-12);
    }
}
