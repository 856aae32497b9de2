//! Database sessions that hurt: PostgreSQL backends running long, idle in a transaction,
//! waiting on a lock or holding one others wait on; Neo4j transactions running long.
//!
//! Each backend or transaction is judged by the last sample that saw it, and ages come
//! from the server's own `sample_ts`, so no clock agreement is needed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sitrep_schemas::records::Neo4jListing;
use sitrep_schemas::report::{
    Confidence, ConfidenceLevel, DbEngine, Detail, Evidence, Finding, QueryProblem, Severity,
    SlowQuery, Subject,
};

use super::Thresholds;
use crate::load::Tables;
use crate::load::neo4j::Neo4jTx;
use crate::load::postgres::PgRow;

/// Query text in titles is cut to this many characters; the detail keeps it whole.
const TITLE_QUERY_CHARS: usize = 80;

pub(crate) fn detect(tables: &Tables, thresholds: &Thresholds) -> Vec<Finding> {
    let mut findings = postgres(&tables.pg_activity, thresholds);
    findings.extend(neo4j(tables, thresholds));
    findings
}

fn age_seconds(now: DateTime<Utc>, then: Option<DateTime<Utc>>) -> Option<f64> {
    then.map(|then| (now - then).num_milliseconds() as f64 / 1000.0)
}

/// Client sessions only: background workers and walsenders are not the user's queries.
fn is_client(row: &PgRow) -> bool {
    let client = row
        .row
        .backend_type
        .as_deref()
        .is_none_or(|t| t == "client backend");
    let own = row
        .row
        .application_name
        .as_deref()
        .is_some_and(|a| a.starts_with("sitrep"));
    client && !own
}

fn postgres(rows: &[PgRow], thresholds: &Thresholds) -> Vec<Finding> {
    let mut last: BTreeMap<(&str, i32), &PgRow> = BTreeMap::new();
    for row in rows.iter().filter(|r| is_client(r)) {
        let key = (row.target.as_str(), row.row.pid);
        if last
            .get(&key)
            .is_none_or(|seen| seen.row.sample_ts <= row.row.sample_ts)
        {
            last.insert(key, row);
        }
    }
    let mut blocking: BTreeMap<(&str, i32), BTreeSet<i32>> = BTreeMap::new();
    for (&(target, pid), row) in &last {
        for &blocker in &row.row.blocked_by {
            blocking.entry((target, blocker)).or_default().insert(pid);
        }
    }

    let mut findings = Vec::new();
    for (&(target, pid), row) in &last {
        let r = &row.row;
        let state = r.state.as_deref().unwrap_or("");
        let query_age = age_seconds(r.sample_ts, r.query_start);
        let xact_age = age_seconds(r.sample_ts, r.xact_start);
        let blocked = blocking.get(&(target, pid)).cloned().unwrap_or_default();
        let waiting = r.wait_event_type.as_deref() == Some("Lock") && !r.blocked_by.is_empty();

        let (problem, duration) = if waiting {
            // A waiter may block others in turn (a second UPDATE queues behind the first).
            (QueryProblem::LockWait, query_age.unwrap_or(0.0))
        } else if !blocked.is_empty() {
            let held = if state == "active" {
                query_age
            } else {
                xact_age
            };
            (QueryProblem::LockHolder, xact_age.or(held).unwrap_or(0.0))
        } else if state == "active" && query_age.is_some_and(|a| a > thresholds.slow_query_seconds)
        {
            (QueryProblem::LongRunning, query_age.unwrap_or(0.0))
        } else if state.starts_with("idle in transaction")
            && xact_age.is_some_and(|a| a > thresholds.slow_query_seconds)
        {
            (QueryProblem::IdleInTransaction, xact_age.unwrap_or(0.0))
        } else {
            continue;
        };
        let roots = root_blockers(&last, target, pid);
        findings.push(pg_finding(
            row,
            target,
            problem,
            duration,
            blocked.into_iter().collect(),
            &roots,
        ));
    }
    findings
}

/// The backends at the top of `pid`'s blocker tree: those it waits on, directly or
/// through other waiters, that wait on nobody themselves. A cycle (a deadlock the server
/// has not broken yet) leaves the waiter's direct blockers.
fn root_blockers(last: &BTreeMap<(&str, i32), &PgRow>, target: &str, pid: i32) -> Vec<i32> {
    let direct = last
        .get(&(target, pid))
        .map(|r| r.row.blocked_by.clone())
        .unwrap_or_default();
    let mut roots = BTreeSet::new();
    let mut seen = BTreeSet::from([pid]);
    let mut pending = direct.clone();
    while let Some(next) = pending.pop() {
        if !seen.insert(next) {
            continue;
        }
        match last.get(&(target, next)) {
            Some(row) if !row.row.blocked_by.is_empty() => pending.extend(&row.row.blocked_by),
            _ => {
                roots.insert(next);
            }
        }
    }
    if roots.is_empty() {
        direct
    } else {
        roots.into_iter().collect()
    }
}

fn short(query: &str) -> String {
    let flat = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > TITLE_QUERY_CHARS {
        format!(
            "{}…",
            flat.chars().take(TITLE_QUERY_CHARS).collect::<String>()
        )
    } else {
        flat
    }
}

fn pg_finding(
    row: &PgRow,
    target: &str,
    problem: QueryProblem,
    duration: f64,
    blocking: Vec<i32>,
    roots: &[i32],
) -> Finding {
    let r = &row.row;
    let query = r.query.clone().unwrap_or_default();
    let pid = r.pid;
    let list = |pids: &[i32]| {
        pids.iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (severity, title, next, problem_name) = match problem {
        QueryProblem::LockWait => (
            Severity::Warning,
            format!(
                "backend {pid} on `{target}` waits {duration:.1} s for a lock held by {}: `{}`",
                list(&r.blocked_by),
                short(&query)
            ),
            roots
                .iter()
                .map(|b| format!("SELECT pg_terminate_backend({b});"))
                .collect(),
            "lock_wait",
        ),
        QueryProblem::LockHolder => (
            Severity::Critical,
            format!(
                "backend {pid} on `{target}` holds a lock that {} wait on ({} open {duration:.1} s): `{}`",
                list(&blocking),
                r.state.as_deref().unwrap_or("?"),
                short(&query)
            ),
            vec![format!("SELECT pg_terminate_backend({pid});")],
            "lock_holder",
        ),
        QueryProblem::LongRunning => (
            Severity::Warning,
            format!(
                "query of backend {pid} on `{target}` has run {duration:.1} s: `{}`",
                short(&query)
            ),
            vec![format!("SELECT pg_terminate_backend({pid});")],
            "long_running",
        ),
        QueryProblem::IdleInTransaction => (
            Severity::Warning,
            format!(
                "backend {pid} on `{target}` is idle in a transaction open {duration:.1} s; last query `{}`",
                short(&query)
            ),
            vec![format!("SELECT pg_terminate_backend({pid});")],
            "idle_in_transaction",
        ),
    };
    let mut reasons = vec![format!(
        "seen in sample {} at {} with state `{}`",
        r.sample,
        r.sample_ts.format("%H:%M:%S"),
        r.state.as_deref().unwrap_or("?")
    )];
    if let Some(app) = &r.application_name
        && !app.is_empty()
    {
        reasons.push(format!("application `{app}`"));
    }
    let wait_event = match (&r.wait_event_type, &r.wait_event) {
        (Some(t), Some(e)) => Some(format!("{t}:{e}")),
        (Some(t), None) => Some(t.clone()),
        _ => None,
    };
    Finding {
        id: format!("slow_query/postgres/{target}/{pid}/{problem_name}"),
        severity,
        confidence: Confidence {
            level: ConfidenceLevel::High,
            score: 0.9,
            reasons,
        },
        title,
        start: Some(r.sample_ts - chrono::Duration::milliseconds((duration * 1000.0) as i64)),
        end: Some(r.sample_ts),
        subject: Subject {
            target: Some(target.to_owned()),
            pid: Some(pid),
            ..Subject::default()
        },
        evidence: vec![Evidence {
            ts: Some(r.sample_ts),
            file: row.file.clone(),
            text: format!(
                "pid={pid} state={} wait={} blocked_by=[{}] query={}",
                r.state.as_deref().unwrap_or("-"),
                wait_event.as_deref().unwrap_or("-"),
                list(&r.blocked_by),
                short(&query)
            ),
        }],
        detail: Detail::SlowQuery(SlowQuery {
            engine: DbEngine::Postgres,
            target: target.to_owned(),
            problem,
            pid: Some(pid),
            query_id: None,
            duration_seconds: duration,
            state: r.state.clone(),
            wait_event,
            blocked_by: r.blocked_by.clone(),
            blocking,
            user: r.usename.clone(),
            application: r.application_name.clone(),
            database: r.datname.clone(),
            query,
        }),
        next_steps: next,
    }
}

/// The listing's own query shows up in its answer; it is not the user's.
fn is_listing(query: &str) -> bool {
    let lower = query.to_ascii_lowercase();
    lower.contains("show transactions") || lower.contains("dbms.listqueries")
}

fn neo4j(tables: &Tables, thresholds: &Thresholds) -> Vec<Finding> {
    let mut longest: BTreeMap<(&str, &str), &Neo4jTx> = BTreeMap::new();
    for tx in tables.neo4j_tx.iter().filter(|tx| !is_listing(&tx.query)) {
        let key = (tx.target.as_str(), tx.id.as_str());
        if longest
            .get(&key)
            .is_none_or(|seen| seen.elapsed_seconds <= tx.elapsed_seconds)
        {
            longest.insert(key, tx);
        }
    }
    longest
        .into_values()
        .filter(|tx| tx.elapsed_seconds > thresholds.slow_query_seconds)
        .map(|tx| {
            let listing = tables
                .neo4j_servers
                .get(&tx.target)
                .map_or(tx.listing, |s| s.listing);
            let next = match listing {
                Neo4jListing::ShowTransactions => format!("TERMINATE TRANSACTION '{}'", tx.id),
                Neo4jListing::ListQueries => format!("CALL dbms.killQuery('{}')", tx.id),
            };
            neo4j_finding(tx, next)
        })
        .collect()
}

fn neo4j_finding(tx: &Neo4jTx, next: String) -> Finding {
    Finding {
        id: format!("slow_query/neo4j/{}/{}", tx.target, tx.id),
        severity: Severity::Warning,
        confidence: Confidence {
            level: ConfidenceLevel::High,
            score: 0.85,
            reasons: vec![format!(
                "reported running {:.1} s at {} (status `{}`)",
                tx.elapsed_seconds,
                tx.sample_ts.format("%H:%M:%S"),
                tx.status.as_deref().unwrap_or("?")
            )],
        },
        title: format!(
            "Neo4j transaction `{}` on `{}` has run {:.1} s: `{}`",
            tx.id,
            tx.target,
            tx.elapsed_seconds,
            short(&tx.query)
        ),
        start: Some(tx.started()),
        end: Some(tx.sample_ts),
        subject: Subject {
            target: Some(tx.target.clone()),
            query_id: Some(tx.id.clone()),
            ..Subject::default()
        },
        evidence: vec![Evidence {
            ts: Some(tx.sample_ts),
            file: tx.file.clone(),
            text: format!(
                "id={} elapsed={:.3}s query={}",
                tx.id,
                tx.elapsed_seconds,
                short(&tx.query)
            ),
        }],
        detail: Detail::SlowQuery(SlowQuery {
            engine: DbEngine::Neo4j,
            target: tx.target.clone(),
            problem: QueryProblem::LongRunning,
            pid: None,
            query_id: Some(tx.id.clone()),
            duration_seconds: tx.elapsed_seconds,
            state: tx.status.clone(),
            wait_event: None,
            blocked_by: Vec::new(),
            blocking: Vec::new(),
            user: tx.user.clone(),
            application: None,
            database: tx.database.clone(),
            query: tx.query.clone(),
        }),
        next_steps: vec![next],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitrep_schemas::records::PgActivityRow;

    /// `(pid, problem, seconds, blocked_by, blocking)`.
    type SessionRow = (i32, QueryProblem, f64, Vec<i32>, Vec<i32>);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_400_000 + seconds, 0).unwrap()
    }

    fn row(
        pid: i32,
        state: &str,
        query_start: i64,
        xact_start: i64,
        blocked_by: &[i32],
        lock: bool,
    ) -> PgRow {
        PgRow {
            target: "orders".into(),
            file: "postgres/orders/activity.ndjson".into(),
            row: PgActivityRow {
                sample: 1,
                sample_ts: at(100),
                blocked_by: blocked_by.to_vec(),
                pid,
                datname: Some("shop".into()),
                usename: Some("app".into()),
                application_name: Some("orders-api".into()),
                backend_type: Some("client backend".into()),
                state: Some(state.into()),
                wait_event_type: lock.then(|| "Lock".to_owned()),
                wait_event: lock.then(|| "transactionid".to_owned()),
                backend_start: Some(at(0)),
                xact_start: Some(at(xact_start)),
                query_start: Some(at(query_start)),
                state_change: Some(at(query_start)),
                query: Some("UPDATE orders SET status = 'x' WHERE id = 1".into()),
            },
        }
    }

    #[test]
    fn sessions_are_sorted_into_their_problems() {
        let mut walsender = row(50, "active", 0, 0, &[], false);
        walsender.row.backend_type = Some("walsender".into());
        let rows = vec![
            // A: holds the row lock while sleeping for 90 s.
            row(10, "active", 10, 5, &[], false),
            // B, C: wait on A.
            row(11, "active", 94, 94, &[10], true),
            row(12, "active", 97, 97, &[10], true),
            // D: idle in a transaction opened 20 s ago.
            row(13, "idle in transaction", 81, 80, &[], false),
            // E: a quick query, and a long idle session without a transaction.
            row(14, "active", 98, 98, &[], false),
            row(15, "idle", 0, 0, &[], false),
            walsender,
        ];
        let found: Vec<SessionRow> = postgres(&rows, &Thresholds::default())
            .into_iter()
            .map(|f| match f.detail {
                Detail::SlowQuery(q) => (
                    q.pid.unwrap(),
                    q.problem,
                    q.duration_seconds,
                    q.blocked_by,
                    q.blocking,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            found,
            [
                (10, QueryProblem::LockHolder, 95.0, vec![], vec![11, 12]),
                (11, QueryProblem::LockWait, 6.0, vec![10], vec![]),
                (12, QueryProblem::LockWait, 3.0, vec![10], vec![]),
                (13, QueryProblem::IdleInTransaction, 20.0, vec![], vec![]),
            ]
        );
    }

    #[test]
    fn a_waiter_behind_a_waiter_is_pointed_at_the_root_blocker() {
        // 10 holds the lock; 11 waits on 10; 12 queues behind 11's tuple lock.
        let rows = vec![
            row(10, "active", 10, 5, &[], false),
            row(11, "active", 94, 94, &[10], true),
            row(12, "active", 97, 97, &[11], true),
        ];
        let findings = postgres(&rows, &Thresholds::default());
        let by_pid = |pid: i32| {
            findings
                .iter()
                .find(|f| f.subject.pid == Some(pid))
                .unwrap()
        };
        assert_eq!(by_pid(12).next_steps, ["SELECT pg_terminate_backend(10);"]);
        let Detail::SlowQuery(middle) = &by_pid(11).detail else {
            panic!()
        };
        assert_eq!(
            (middle.problem, middle.blocking.as_slice()),
            (QueryProblem::LockWait, &[12][..])
        );
    }

    #[test]
    fn the_listing_itself_is_not_a_slow_query() {
        assert!(is_listing("SHOW TRANSACTIONS YIELD *"));
        assert!(is_listing("CALL dbms.listQueries()"));
        assert!(!is_listing("MATCH (o:Order) RETURN o"));
    }
}
