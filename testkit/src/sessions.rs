//! The scenario's PostgreSQL sessions, opened for real: a transaction holding a row lock
//! while it sleeps, updates waiting on that lock, and a transaction left idle.
//!
//! The sessions live on their own thread and runtime, so they keep their connections
//! while the caller blocks, and end when the guard is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::scenario::{PostgresScenario, SessionState};

const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("could not connect session {session}")]
    Connect {
        session: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("session {session} failed at `{statement}`")]
    Statement {
        session: String,
        statement: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the sessions did not reach their expected states within {seconds} s: {observed}")]
    NotSettled { seconds: u64, observed: String },
    #[error("could not start the sessions' thread")]
    Thread(#[source] std::io::Error),
    #[error("the sessions' thread ended before reporting")]
    Lost,
}

/// Open sessions; dropping the guard closes every connection, which ends the backends
/// and releases the locks.
#[derive(Debug)]
pub struct Sessions {
    pids: BTreeMap<String, i32>,
    /// When every session had reached its expected state. The sessions' ages in
    /// `pg_stat_activity` are at least the time elapsed since.
    pub opened_at: Instant,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sessions {
    /// Creates the schema over `conninfo` and opens every session of the plan, then waits
    /// until each shows its expected state in `pg_stat_activity` (lock waiters blocked
    /// by exactly the session the plan names).
    pub fn open(conninfo: &str, plan: &PostgresScenario) -> Result<Self, SessionsError> {
        let (report, reported) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let conninfo = conninfo.to_owned();
        let plan = plan.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(SessionsError::Thread)?;
        let thread = std::thread::Builder::new()
            .name("pg-sessions".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match open_all(&conninfo, &plan).await {
                        Ok((pids, kept)) => {
                            let _ = report.send(Ok(pids.clone()));
                            let _ = stopped.await;
                            kept.terminate(&pids).await;
                        }
                        Err(error) => {
                            let _ = report.send(Err(error));
                        }
                    }
                });
                // Leaving the runtime aborts the tasks still waiting on their statements.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(SessionsError::Thread)?;
        let pids = reported.recv().map_err(|_| SessionsError::Lost)??;
        tracing::info!(source = "postgres", stage = "sessions", pids = ?pids, "sessions ready");
        Ok(Sessions {
            pids,
            opened_at: Instant::now(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The backend pid of a session by its plan name (`A`, `B`, …).
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.pids.get(name).copied()
    }

    pub fn pids(&self) -> &BTreeMap<String, i32> {
        &self.pids
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What keeps the sessions alive: their clients and the tasks driving them.
struct Kept {
    admin: Option<Arc<Client>>,
    _clients: Vec<Arc<Client>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Kept {
    /// Ends the sessions' backends. Closing a connection is not enough: a backend inside
    /// `pg_sleep` or a lock wait does not notice its client has gone, and would keep
    /// its locks until the sleep ends.
    async fn terminate(self, pids: &BTreeMap<String, i32>) {
        let pids: Vec<i32> = pids.values().copied().collect();
        let statement = "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid";
        if let Some(admin) = &self.admin
            && let Err(error) = admin.execute(statement, &[&pids]).await
        {
            tracing::warn!(source = "postgres", stage = "sessions", error_type = "query",
                error = %error, "could not end the sessions' backends");
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn connect(
    conninfo: &str,
    session: &str,
    application: &str,
    kept: &mut Kept,
) -> Result<Arc<Client>, SessionsError> {
    let conninfo = format!("{conninfo} application_name={application}");
    let (client, connection) =
        tokio_postgres::connect(&conninfo, NoTls)
            .await
            .map_err(|source| SessionsError::Connect {
                session: session.to_owned(),
                source,
            })?;
    kept.tasks.push(tokio::spawn(async move {
        let _ = connection.await;
    }));
    Ok(Arc::new(client))
}

async fn execute(client: &Client, session: &str, statement: &str) -> Result<(), SessionsError> {
    client
        .batch_execute(statement)
        .await
        .map_err(|source| SessionsError::Statement {
            session: session.to_owned(),
            statement: statement.to_owned(),
            source,
        })
}

async fn open_all(
    conninfo: &str,
    plan: &PostgresScenario,
) -> Result<(BTreeMap<String, i32>, Kept), SessionsError> {
    let mut kept = Kept {
        admin: None,
        _clients: Vec::new(),
        tasks: Vec::new(),
    };
    let admin = connect(conninfo, "setup", "sitrep-testkit", &mut kept).await?;
    for statement in &plan.schema {
        execute(&admin, "setup", statement).await?;
    }

    let mut pids = BTreeMap::new();
    for session in &plan.sessions {
        let client = connect(
            conninfo,
            &session.name,
            &session.application_name,
            &mut kept,
        )
        .await?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|source| SessionsError::Statement {
                session: session.name.clone(),
                statement: "SELECT pg_backend_pid()".into(),
                source,
            })?
            .get(0);
        pids.insert(session.name.clone(), pid);
        for statement in &session.setup {
            execute(&client, &session.name, statement).await?;
        }
        if let Some(statement) = session.run.clone() {
            let running = client.clone();
            let name = session.name.clone();
            kept.tasks.push(tokio::spawn(async move {
                // Ends with an error when the guard closes the connection; that is the end
                // of the scenario, not a fault.
                if let Err(error) = running.batch_execute(&statement).await {
                    tracing::debug!(source = "postgres", session = %name, error = %error,
                        "session statement ended");
                }
            }));
            // Each waiter queues behind the previous one, in plan order.
            wait_until_sent(&admin, pid).await;
        }
        kept._clients.push(client);
    }

    settle(&admin, plan, &pids).await?;
    kept.admin = Some(admin);
    Ok((pids, kept))
}

/// Waits until a backend has started its statement, so the next session queues behind.
async fn wait_until_sent(admin: &Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let active = admin
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                &[&pid],
            )
            .await
            .ok()
            .flatten()
            .is_some();
        if active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn settle(
    admin: &Client,
    plan: &PostgresScenario,
    pids: &BTreeMap<String, i32>,
) -> Result<(), SessionsError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut observed = Vec::new();
        let mut settled = true;
        for session in &plan.sessions {
            let pid = pids[&session.name];
            let row = admin
                .query_opt(
                    "SELECT coalesce(state, ''), coalesce(wait_event_type, ''), pg_blocking_pids(pid) \
                     FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await
                .ok()
                .flatten();
            let (state, wait, blockers): (String, String, Vec<i32>) = match row {
                Some(row) => (row.get(0), row.get(1), row.get(2)),
                None => ("gone".into(), String::new(), Vec::new()),
            };
            let ok = match session.expect {
                SessionState::Active => state == "active",
                SessionState::IdleInTransaction => state == "idle in transaction",
                SessionState::LockWait => {
                    let blocker = session.blocked_by.as_ref().map(|name| pids[name]);
                    wait == "Lock" && blocker.is_some_and(|blocker| blockers == [blocker])
                }
            };
            settled &= ok;
            observed.push(format!(
                "{}: pid {pid} state `{state}` wait `{wait}` blocked by {blockers:?}",
                session.name
            ));
        }
        if settled {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SessionsError::NotSettled {
                seconds: SETTLE_TIMEOUT.as_secs(),
                observed: observed.join("; "),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
