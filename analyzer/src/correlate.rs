//! One timeline of rollouts, restarts and findings, and modest links between findings
//! that overlap in time: same namespace, or a timeout burst during a database finding.

use sitrep_schemas::report::{Detail, Finding, Severity, TimelineEvent};

use crate::load::Tables;

/// Findings this close in time still count as overlapping, in seconds.
const SLACK_SECONDS: i64 = 120;

fn span(finding: &Finding) -> Option<(i64, i64)> {
    let start = finding.start.or(finding.end)?.timestamp();
    let end = finding.end.or(finding.start)?.timestamp();
    Some((start.min(end), start.max(end)))
}

fn is_db(finding: &Finding) -> bool {
    matches!(finding.detail, Detail::SlowQuery(_))
}

fn related(a: &Finding, b: &Finding) -> bool {
    // An info note (a rollout with too little data) claims nothing, so it explains nothing.
    if a.severity == Severity::Info || b.severity == Severity::Info {
        return false;
    }
    let same_namespace =
        a.subject.namespace.is_some() && a.subject.namespace == b.subject.namespace;
    let burst_and_db = matches!(
        (&a.detail, &b.detail),
        (Detail::TimeoutBurst(_), Detail::SlowQuery(_))
            | (Detail::SlowQuery(_), Detail::TimeoutBurst(_))
    );
    if !(same_namespace || burst_and_db) || (is_db(a) && is_db(b)) {
        return false;
    }
    match (span(a), span(b)) {
        (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 + SLACK_SECONDS && b0 <= a1 + SLACK_SECONDS,
        _ => false,
    }
}

/// Adds a reason line to each finding naming the findings it overlaps.
pub(crate) fn link(findings: &mut [Finding]) {
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); findings.len()];
    for i in 0..findings.len() {
        for j in 0..findings.len() {
            if i != j && related(&findings[i], &findings[j]) {
                notes[i].push(format!("overlaps in time with `{}`", findings[j].id));
            }
        }
    }
    for (finding, notes) in findings.iter_mut().zip(notes) {
        finding.confidence.reasons.extend(notes);
    }
}

/// Most severe first, then by start time, then by id for a stable order.
pub(crate) fn order(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.start.cmp(&b.start))
            .then(a.id.cmp(&b.id))
    });
}

pub(crate) fn timeline(
    tables: &Tables,
    findings: &[Finding],
    window: (i64, i64),
) -> Vec<TimelineEvent> {
    let in_window = |ms: i64| ms >= window.0 && ms <= window.1;
    let mut events = Vec::new();
    for rollout in &tables.rollouts {
        let Some(started) = rollout.started else {
            continue;
        };
        if !in_window(started.timestamp_millis()) {
            continue;
        }
        events.push(TimelineEvent {
            ts: started,
            kind: "rollout".into(),
            text: format!(
                "`{}/{}` rolled out revision {} ({})",
                rollout.namespace,
                rollout.deployment,
                rollout.revision,
                rollout.main_image().unwrap_or("-")
            ),
            finding: None,
        });
    }
    for container in &tables.pods {
        for termination in [&container.last, &container.current].into_iter().flatten() {
            let Some(finished) = termination.finished else {
                continue;
            };
            // An init container that ran to completion did its job; it is not a restart.
            if termination.exit_code == Some(0)
                && termination.reason.as_deref() == Some("Completed")
            {
                continue;
            }
            if !in_window(finished.timestamp_millis()) {
                continue;
            }
            events.push(TimelineEvent {
                ts: finished,
                kind: "restart".into(),
                text: format!(
                    "container `{}` of `{}/{}` terminated ({}, exit {})",
                    container.container,
                    container.namespace,
                    container.pod,
                    termination.reason.as_deref().unwrap_or("no reason"),
                    termination
                        .exit_code
                        .map_or_else(|| "?".into(), |c| c.to_string())
                ),
                finding: None,
            });
        }
    }
    for finding in findings {
        let Some(ts) = finding.start.or(finding.end) else {
            continue;
        };
        let related: Vec<&str> = findings
            .iter()
            .filter(|other| other.id != finding.id && related(finding, other))
            .map(|other| other.id.as_str())
            .collect();
        let mut text = finding.title.clone();
        if !related.is_empty() {
            text.push_str(&format!(" (while `{}`)", related.join("`, `")));
        }
        events.push(TimelineEvent {
            ts,
            kind: finding.kind().into(),
            text,
            finding: Some(finding.id.clone()),
        });
    }
    events.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.kind.cmp(&b.kind)));
    events
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use sitrep_schemas::report::{
        Confidence, ConfidenceLevel, DbEngine, QueryProblem, RolloutRegression, RolloutVerdict,
        SlowQuery, Subject, TimeoutBurst,
    };

    use super::*;

    fn minute(m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 14, m, 0).unwrap()
    }

    fn finding(id: &str, severity: Severity, start: u32, end: u32, detail: Detail) -> Finding {
        Finding {
            id: id.into(),
            severity,
            confidence: Confidence {
                level: ConfidenceLevel::High,
                score: 0.9,
                reasons: Vec::new(),
            },
            title: id.into(),
            start: Some(minute(start)),
            end: Some(minute(end)),
            subject: Subject {
                namespace: Some("shop".into()),
                ..Subject::default()
            },
            detail,
            evidence: Vec::new(),
            next_steps: Vec::new(),
        }
    }

    fn burst() -> Detail {
        Detail::TimeoutBurst(TimeoutBurst {
            namespace: Some("shop".into()),
            service: "orders".into(),
            start: minute(10),
            end: minute(18),
            peak_minute: minute(12),
            peak_count: 11,
            total: 80,
            baseline_per_minute: 0.05,
            signatures: Vec::new(),
            examples: Vec::new(),
        })
    }

    fn lock_wait() -> Detail {
        Detail::SlowQuery(SlowQuery {
            engine: DbEngine::Postgres,
            target: "orders".into(),
            problem: QueryProblem::LockWait,
            pid: Some(7),
            query_id: None,
            duration_seconds: 10.0,
            state: Some("active".into()),
            wait_event: Some("tuple".into()),
            blocked_by: vec![6],
            blocking: Vec::new(),
            user: None,
            application: None,
            database: None,
            query: "UPDATE orders SET status = 'paid' WHERE id = 1".into(),
        })
    }

    fn thin_rollout() -> Detail {
        Detail::RolloutRegression(RolloutRegression {
            namespace: "shop".into(),
            deployment: "orders".into(),
            from_revision: Some(1),
            to_revision: 2,
            from_image: None,
            to_image: None,
            rollout_at: minute(12),
            verdict: RolloutVerdict::InsufficientData,
            latency: None,
            errors: None,
            changes: Vec::new(),
        })
    }

    #[test]
    fn overlapping_findings_are_linked_but_info_notes_are_not() {
        let mut findings = vec![
            finding("burst", Severity::Warning, 10, 18, burst()),
            finding("wait", Severity::Warning, 17, 17, lock_wait()),
            finding("note", Severity::Info, 12, 12, thin_rollout()),
        ];
        link(&mut findings);

        assert_eq!(
            findings[0].confidence.reasons,
            ["overlaps in time with `wait`"]
        );
        assert_eq!(
            findings[1].confidence.reasons,
            ["overlaps in time with `burst`"]
        );
        assert!(findings[2].confidence.reasons.is_empty());
    }

    #[test]
    fn findings_apart_in_time_are_not_linked() {
        // The wait is 5 minutes after the burst ends, beyond the 2 minute slack.
        let mut findings = vec![
            finding("burst", Severity::Warning, 10, 18, burst()),
            finding("wait", Severity::Warning, 23, 23, lock_wait()),
        ];
        link(&mut findings);
        assert!(findings.iter().all(|f| f.confidence.reasons.is_empty()));
    }
}
