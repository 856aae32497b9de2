//! Database sessions that hurt: PostgreSQL backends running long, idle in a transaction,
//! waiting on a lock or holding one others wait on; Neo4j transactions running long.
//!
//! Each backend or transaction is judged by the last sample that saw it, and ages come
//! from the server's own `sample_ts`, so no clock agreement is needed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use polars::prelude::*;
use sitrep_schemas::records::Neo4jListing;
use sitrep_schemas::report::{
    Confidence, ConfidenceLevel, DbEngine, Detail, Evidence, Finding, QueryProblem, Severity,
    SlowQuery, Subject,
};

use super::{Thresholds, frame_error};
use crate::load::neo4j::{self as neo4j_table, Neo4jTx};
use crate::load::{Tables, column_texts, column_times, text_mask};

/// Query text in titles is cut to this many characters; the detail keeps it whole.
const TITLE_QUERY_CHARS: usize = 80;

pub(crate) fn detect(tables: &Tables, thresholds: &Thresholds) -> Vec<Finding> {
    let mut findings = postgres(&tables.pg_activity, thresholds)
        .unwrap_or_else(|error| frame_error("db_queries", &error));
    findings.extend(
        neo4j(tables, thresholds).unwrap_or_else(|error| frame_error("db_queries", &error)),
    );
    findings
}

/// What the last sample of one client backend said, and which backends wait on it then.
#[derive(Debug)]
struct Backend {
    target: String,
    file: String,
    pid: i32,
    sample: u32,
    sample_ts: DateTime<Utc>,
    state: Option<String>,
    wait_event_type: Option<String>,
    wait_event: Option<String>,
    application_name: Option<String>,
    usename: Option<String>,
    datname: Option<String>,
    query: Option<String>,
    blocked_by: Vec<i32>,
    /// Backends whose own last sample names this one in `blocked_by`, ascending.
    blocking: Vec<i32>,
    /// Seconds from `query_start` and `xact_start` to the sample, by the server's clock.
    query_age: Option<f64>,
    xact_age: Option<f64>,
}

/// Seconds from `start` to the sample, cut to whole milliseconds toward zero.
fn age_seconds(start: &str) -> Expr {
    (col("sample_ts") - col(start))
        .dt()
        .total_milliseconds(false)
        .cast(DataType::Float64)
        / lit(1000.0)
}

/// The last sample of every client backend, with its ages and the backends it blocks.
/// Background workers and walsenders are not the user's queries, and sitrep's own
/// sessions are the collector's.
fn backends(activity: &DataFrame) -> PolarsResult<Vec<Backend>> {
    let own = text_mask(activity, "application_name", |app| {
        app.starts_with("sitrep")
    })?;
    // The table is sorted stably by backend and time, so a backend's last row is its
    // latest sample, and of two rows with one `sample_ts` the later line.
    let last = activity
        .filter(&!&own)?
        .lazy()
        .filter(
            col("backend_type")
                .is_null()
                .or(col("backend_type").eq(lit("client backend"))),
        )
        .unique_stable(Some(cols(["target", "pid"])), UniqueKeepStrategy::Last);

    // Who blocks whom is read from the waiters' last samples only: an older sample's
    // wait may long be over.
    let blocking = last
        .clone()
        .select([
            col("target"),
            col("pid").alias("waiter"),
            col("blocked_by").alias("blocker"),
        ])
        .explode(
            cols(["blocker"]),
            ExplodeOptions {
                empty_as_null: false,
                keep_nulls: false,
            },
        )
        .group_by([col("target"), col("blocker")])
        .agg([col("waiter")
            .unique()
            .sort(SortOptions::default())
            .alias("blocking")]);
    let facts = last
        .with_columns([
            age_seconds("query_start").alias("query_age"),
            age_seconds("xact_start").alias("xact_age"),
        ])
        .join(
            blocking,
            [col("target"), col("pid")],
            [col("target"), col("blocker")],
            JoinArgs::new(JoinType::Left),
        )
        .sort(["target", "pid"], SortMultipleOptions::default())
        .collect()?;

    let pid = facts.column("pid")?.i32()?;
    let sample = facts.column("sample")?.u32()?;
    let sample_ts = column_times(&facts, "sample_ts")?;
    let text = |name: &str| column_texts(&facts, name);
    let (target, file, state) = (text("target")?, text("file")?, text("state")?);
    let (wait_event_type, wait_event) = (text("wait_event_type")?, text("wait_event")?);
    let (application_name, usename) = (text("application_name")?, text("usename")?);
    let (datname, query) = (text("datname")?, text("query")?);
    let blocked_by = pid_lists(&facts, "blocked_by")?;
    let blocking = pid_lists(&facts, "blocking")?;
    let query_age = facts.column("query_age")?.f64()?;
    let xact_age = facts.column("xact_age")?.f64()?;
    Ok((0..facts.height())
        .zip(blocked_by.into_iter().zip(blocking))
        .map(|(i, (blocked_by, blocking))| Backend {
            target: target[i].clone().unwrap_or_default(),
            file: file[i].clone().unwrap_or_default(),
            pid: pid.get(i).unwrap_or_default(),
            sample: sample.get(i).unwrap_or_default(),
            sample_ts: sample_ts[i].unwrap_or_default(),
            state: state[i].clone(),
            wait_event_type: wait_event_type[i].clone(),
            wait_event: wait_event[i].clone(),
            application_name: application_name[i].clone(),
            usename: usename[i].clone(),
            datname: datname[i].clone(),
            query: query[i].clone(),
            blocked_by,
            blocking,
            query_age: query_age.get(i),
            xact_age: xact_age.get(i),
        })
        .collect())
}

/// A list-of-pids column; a null list (no waiter joined) is an empty one.
fn pid_lists(frame: &DataFrame, name: &str) -> PolarsResult<Vec<Vec<i32>>> {
    frame
        .column(name)?
        .list()?
        .series_iter()
        .map(|pids| match pids {
            Some(pids) => Ok(pids.i32()?.iter().flatten().collect()),
            None => Ok(Vec::new()),
        })
        .collect()
}

fn postgres(activity: &DataFrame, thresholds: &Thresholds) -> PolarsResult<Vec<Finding>> {
    let backends = backends(activity)?;
    let last: BTreeMap<(&str, i32), &Backend> = backends
        .iter()
        .map(|backend| ((backend.target.as_str(), backend.pid), backend))
        .collect();

    // The decision is an ordered fall-through over one backend's facts, which reads more
    // plainly as a match than as a chain of column expressions.
    let mut findings = Vec::new();
    for backend in &backends {
        let state = backend.state.as_deref().unwrap_or("");
        let query_age = backend.query_age;
        let xact_age = backend.xact_age;
        let waiting =
            backend.wait_event_type.as_deref() == Some("Lock") && !backend.blocked_by.is_empty();

        let (problem, duration) = if waiting {
            // A waiter may block others in turn (a second UPDATE queues behind the first).
            (QueryProblem::LockWait, query_age.unwrap_or(0.0))
        } else if !backend.blocking.is_empty() {
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
        let roots = root_blockers(&last, &backend.target, backend.pid);
        findings.push(pg_finding(backend, problem, duration, &roots));
    }
    Ok(findings)
}

/// The backends at the top of `pid`'s blocker tree: those it waits on, directly or
/// through other waiters, that wait on nobody themselves. A cycle (a deadlock the server
/// has not broken yet) leaves the waiter's direct blockers. The walk has no depth bound,
/// which no table expression expresses, so it runs over the per-backend facts here.
fn root_blockers(last: &BTreeMap<(&str, i32), &Backend>, target: &str, pid: i32) -> Vec<i32> {
    let direct = last
        .get(&(target, pid))
        .map(|b| b.blocked_by.clone())
        .unwrap_or_default();
    let mut roots = BTreeSet::new();
    let mut seen = BTreeSet::from([pid]);
    let mut pending = direct.clone();
    while let Some(next) = pending.pop() {
        if !seen.insert(next) {
            continue;
        }
        match last.get(&(target, next)) {
            Some(backend) if !backend.blocked_by.is_empty() => {
                pending.extend(&backend.blocked_by);
            }
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

fn pg_finding(b: &Backend, problem: QueryProblem, duration: f64, roots: &[i32]) -> Finding {
    let target = b.target.as_str();
    let query = b.query.clone().unwrap_or_default();
    let pid = b.pid;
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
                list(&b.blocked_by),
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
                list(&b.blocking),
                b.state.as_deref().unwrap_or("?"),
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
        b.sample,
        b.sample_ts.format("%H:%M:%S"),
        b.state.as_deref().unwrap_or("?")
    )];
    if let Some(app) = &b.application_name
        && !app.is_empty()
    {
        reasons.push(format!("application `{app}`"));
    }
    let wait_event = match (&b.wait_event_type, &b.wait_event) {
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
        start: Some(b.sample_ts - chrono::Duration::milliseconds((duration * 1000.0) as i64)),
        end: Some(b.sample_ts),
        subject: Subject {
            target: Some(target.to_owned()),
            pid: Some(pid),
            ..Subject::default()
        },
        evidence: vec![Evidence {
            ts: Some(b.sample_ts),
            file: b.file.clone(),
            text: format!(
                "pid={pid} state={} wait={} blocked_by=[{}] query={}",
                b.state.as_deref().unwrap_or("-"),
                wait_event.as_deref().unwrap_or("-"),
                list(&b.blocked_by),
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
            state: b.state.clone(),
            wait_event,
            blocked_by: b.blocked_by.clone(),
            blocking: b.blocking.clone(),
            user: b.usename.clone(),
            application: b.application_name.clone(),
            database: b.datname.clone(),
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

fn neo4j(tables: &Tables, thresholds: &Thresholds) -> PolarsResult<Vec<Finding>> {
    let listing = text_mask(&tables.neo4j_tx, "query", is_listing)?;
    // A transaction is judged by the sample that saw it run longest; of equal ones, the
    // later sample, which the stable sort by time in the table puts last.
    let longest = tables
        .neo4j_tx
        .filter(&!&listing)?
        .lazy()
        .sort(
            ["target", "id", "elapsed"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .unique_stable(Some(cols(["target", "id"])), UniqueKeepStrategy::Last)
        .filter(col("elapsed").gt(lit(thresholds.slow_query_seconds)))
        .collect()?;
    Ok(neo4j_table::rows(&longest)?
        .into_iter()
        .map(|tx| {
            let listing = tables
                .neo4j_servers
                .get(&tx.target)
                .map_or(tx.listing, |s| s.listing);
            let next = match listing {
                Neo4jListing::ShowTransactions => format!("TERMINATE TRANSACTION '{}'", tx.id),
                Neo4jListing::ListQueries => format!("CALL dbms.killQuery('{}')", tx.id),
            };
            neo4j_finding(&tx, next)
        })
        .collect())
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
    use crate::load::postgres::PgRow;
    use sitrep_schemas::records::PgActivityRow;

    /// The detector over a `pg_activity` table built from `rows` the way the loader does.
    fn postgres(rows: &[PgRow], thresholds: &Thresholds) -> Vec<Finding> {
        super::postgres(&crate::load::postgres::frame(rows.to_vec()), thresholds).unwrap()
    }

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
    fn a_bundle_without_postgres_has_no_sessions() {
        assert!(postgres(&[], &Thresholds::default()).is_empty());
    }

    #[test]
    fn a_backend_is_judged_by_its_latest_sample_whatever_the_line_order() {
        // Sample 2 says 10 holds a lock 11 waits on; sample 1, later in the file, is older.
        let mut later = row(10, "active", 10, 5, &[], false);
        later.row.sample = 2;
        let mut waiter = row(11, "active", 94, 94, &[10], true);
        waiter.row.sample = 2;
        let mut earlier = row(10, "idle", 0, 0, &[], false);
        earlier.row.sample_ts = at(50);
        let mut earlier_waiter = row(11, "idle", 0, 0, &[], false);
        earlier_waiter.row.sample_ts = at(50);
        let findings = postgres(
            &[later, waiter, earlier, earlier_waiter],
            &Thresholds::default(),
        );
        let problems: Vec<(Option<i32>, &str)> = findings
            .iter()
            .map(|f| (f.subject.pid, f.id.rsplit('/').next().unwrap()))
            .collect();
        assert_eq!(
            problems,
            [(Some(10), "lock_holder"), (Some(11), "lock_wait")]
        );
    }

    #[test]
    fn the_listing_itself_is_not_a_slow_query() {
        assert!(is_listing("SHOW TRANSACTIONS YIELD *"));
        assert!(is_listing("CALL dbms.listQueries()"));
        assert!(!is_listing("MATCH (o:Order) RETURN o"));
    }
}
