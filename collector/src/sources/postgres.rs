//! PostgreSQL: server version and settings, then `pg_stat_activity` and the locks of
//! waiting and blocking backends, sampled a few times.
//!
//! Connections are plain TCP or Unix sockets (no TLS yet): a target that demands TLS
//! (`sslmode=require`) fails to connect and says so in the manifest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::paths;
use sitrep_schemas::records::PgServer;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::bundle::{BundleError, Spool};
use crate::config::Sampling;
use crate::redact;
use crate::run::{Classify, Failure, SourceContext, one_line, render_chain, status_name};

/// PostgreSQL: who is running what, who waits on whom.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PostgresArgs {
    /// A database to sample, as a conninfo string (`host=… port=… dbname=… user=…`) or a
    /// URL (`postgresql://user@host:port/db`), optionally named: `orders=postgresql://…`.
    /// Repeat for several. Without any, and when one of PGHOST, PGPORT, PGUSER or
    /// PGDATABASE is set, one target is built from the PG* environment variables.
    /// Passwords never reach the bundle; PGPASSWORD is used when a target has none.
    #[arg(long = "postgres", value_name = "[NAME=]CONNINFO_OR_URL")]
    pub(crate) targets: Vec<String>,
}

/// The settings that shape what `pg_stat_activity` shows and how long things may wait.
const SETTINGS: &[&str] = &[
    "track_activity_query_size",
    "statement_timeout",
    "idle_in_transaction_session_timeout",
    "lock_timeout",
    "deadlock_timeout",
    "max_connections",
    "track_activities",
];

// The round's timestamp is taken once per statement (an uncorrelated scalar subquery is
// evaluated once), so every row of a round carries the same `sample_ts`.
const ACTIVITY: &str = "SELECT to_jsonb(a) || jsonb_build_object(\
    'sample', $1::int, \
    'sample_ts', (SELECT clock_timestamp()), \
    'blocked_by', pg_blocking_pids(a.pid)) \
    FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid()";

const LOCKS: &str = "WITH waiting AS (SELECT DISTINCT pid FROM pg_locks WHERE NOT granted), \
    involved AS (SELECT pid FROM waiting UNION SELECT unnest(pg_blocking_pids(pid)) FROM waiting) \
    SELECT to_jsonb(l) || jsonb_build_object('sample', $1::int, 'sample_ts', (SELECT clock_timestamp())) \
    FROM pg_locks l WHERE l.pid IN (SELECT pid FROM involved) AND l.pid <> pg_backend_pid()";

/// `pg_blocking_pids` arrived in 9.6.
const MIN_VERSION_NUM: i32 = 90_600;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PostgresError {
    #[error("`{target}` is not a usable conninfo string or URL")]
    Parse {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to `{target}`")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no answer from `{target}` within {}", humantime::format_duration(*.after))]
    ConnectTimeout { target: String, after: Duration },
    #[error("cannot read the server version and settings")]
    Server(#[source] tokio_postgres::Error),
    #[error("server version {0} is older than 9.6, which has no pg_blocking_pids")]
    TooOld(i32),
    #[error("sample query failed")]
    Sample(#[source] tokio_postgres::Error),
    #[error("cannot spool the rows")]
    Spool(#[source] std::io::Error),
    #[error("cannot store the rows")]
    Store(#[source] BundleError),
}

impl Classify for PostgresError {
    fn status(&self) -> SourceStatus {
        match self {
            PostgresError::Parse { .. } => SourceStatus::Failed,
            PostgresError::Connect { source, .. } => connect_status(source),
            PostgresError::ConnectTimeout { .. } => SourceStatus::Timeout,
            PostgresError::Server(e) | PostgresError::Sample(e) => match e.code() {
                Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => SourceStatus::Forbidden,
                _ if e.is_closed() => SourceStatus::Unreachable,
                _ => SourceStatus::Failed,
            },
            PostgresError::TooOld(_) => SourceStatus::Unsupported,
            PostgresError::Spool(_) | PostgresError::Store(_) => SourceStatus::Failed,
        }
    }
}

fn connect_status(err: &tokio_postgres::Error) -> SourceStatus {
    if let Some(code) = err.code()
        && (*code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    {
        return SourceStatus::Forbidden;
    }
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => SourceStatus::Timeout,
                _ => SourceStatus::Unreachable,
            };
        }
        cause = c.source();
    }
    if err.to_string().contains("password") {
        // A server asking for a password the target did not give.
        SourceStatus::Forbidden
    } else {
        SourceStatus::Failed
    }
}

/// A database to sample.
#[derive(Debug, Clone)]
pub(crate) struct PgTarget {
    /// `<host>-<port>-<dbname>` or the user's name for it; the bundle folder name.
    pub(crate) name: String,
    /// How it was given, with any password replaced.
    pub(crate) display: String,
    /// Passwords this target's text had removed.
    pub(crate) redactions: u64,
    config: tokio_postgres::Config,
}

/// Reads the user's spelling of a target. A leading `NAME=` counts as a name only when
/// what follows is a URL or itself starts with a conninfo `keyword=`, so that a bare
/// conninfo such as `host=db port=5432` is not mistaken for a target named `host`.
pub(crate) fn parse_target(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PgTarget, PostgresError> {
    let (name, spec) = split_name(text);
    let (display, redactions) = redact::connection_string(spec);
    let mut config: tokio_postgres::Config =
        spec.parse().map_err(|source| PostgresError::Parse {
            target: display.clone(),
            source,
        })?;
    fill_defaults(&mut config, env);
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| default_name(&config));
    Ok(PgTarget {
        name,
        display,
        redactions,
        config,
    })
}

fn split_name(text: &str) -> (Option<&str>, &str) {
    let is_url = |s: &str| s.starts_with("postgres://") || s.starts_with("postgresql://");
    if is_url(text) {
        return (None, text);
    }
    if let Some((name, rest)) = text.split_once('=') {
        let keyword_follows = rest.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        let name_ok = !name.is_empty() && !name.contains(char::is_whitespace);
        if name_ok && (is_url(rest) || keyword_follows) {
            return (Some(name), rest);
        }
    }
    (None, text)
}

/// A target from the PG* variables, when any of the ones that pick a server is set.
pub(crate) fn target_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<PgTarget> {
    if !["PGHOST", "PGDATABASE", "PGUSER", "PGPORT"]
        .iter()
        .any(|v| env(v).is_some())
    {
        return None;
    }
    let mut config = tokio_postgres::Config::new();
    let mut shown = Vec::new();
    if let Some(host) = env("PGHOST") {
        config.host(&host);
        shown.push(format!("host={host}"));
    }
    if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
        config.port(port);
        shown.push(format!("port={port}"));
    }
    if let Some(user) = env("PGUSER") {
        config.user(&user);
        shown.push(format!("user={user}"));
    }
    if let Some(db) = env("PGDATABASE") {
        config.dbname(&db);
        shown.push(format!("dbname={db}"));
    }
    if let Some(app) = env("PGAPPNAME") {
        config.application_name(&app);
    }
    if let Some(secs) = env("PGCONNECT_TIMEOUT").and_then(|s| s.parse().ok()) {
        config.connect_timeout(Duration::from_secs(secs));
    }
    if let Some(mode) = env("PGSSLMODE") {
        config.ssl_mode(match mode.as_str() {
            "disable" => tokio_postgres::config::SslMode::Disable,
            "require" | "verify-ca" | "verify-full" => tokio_postgres::config::SslMode::Require,
            _ => tokio_postgres::config::SslMode::Prefer,
        });
    }
    fill_defaults(&mut config, env);
    Some(PgTarget {
        name: default_name(&config),
        display: shown.join(" "),
        redactions: 0,
        config,
    })
}

/// libpq's fallbacks: localhost, 5432, the OS user, PGPASSWORD.
fn fill_defaults(config: &mut tokio_postgres::Config, env: &dyn Fn(&str) -> Option<String>) {
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").unwrap_or_else(|| "localhost".to_owned()));
    }
    if config.get_user().is_none()
        && let Some(user) = env("PGUSER").or_else(|| env("USER"))
    {
        config.user(user);
    }
    if config.get_password().is_none()
        && let Some(password) = env("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
}

fn default_name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    sitrep_schemas::paths::segment(&format!("{host}-{port}-{db}"))
}

/// Connects, describes the server, then samples activity and locks.
pub(crate) async fn collect(
    target: PgTarget,
    sampling: Sampling,
    ctx: Arc<SourceContext>,
) -> Result<(), Failure> {
    ctx.redacted(redact::CONNECTION_PASSWORD, target.redactions);
    let mut config = target.config.clone();
    config.application_name("sitrep-collect");
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));

    // A server that accepts TCP and never speaks would otherwise hold the source past
    // its deadline until the grace runs out.
    let connect = config.connect(tokio_postgres::NoTls);
    let Some(connected) = ctx
        .until_stopped(tokio::time::timeout(
            limit + Duration::from_secs(1),
            connect,
        ))
        .await
    else {
        ctx.stopped_part("server");
        return Ok(());
    };
    let (client, connection) = connected
        .map_err(|_| {
            PostgresError::ConnectTimeout {
                target: target.display.clone(),
                after: limit,
            }
            .failure()
        })?
        .map_err(|source| {
            PostgresError::Connect {
                target: target.display.clone(),
                source,
            }
            .failure()
        })?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended");
        }
    });

    let result = sample(&client, &target, sampling, &ctx).await;
    drop(client);
    let _ = connection.await;
    result.map_err(|e| e.failure())
}

async fn sample(
    client: &tokio_postgres::Client,
    target: &PgTarget,
    sampling: Sampling,
    ctx: &SourceContext,
) -> Result<(), PostgresError> {
    // Timestamps render in UTC, and a wedged catalog cannot hold a sample forever.
    let setup = async {
        client
            .batch_execute("SET TIME ZONE 'UTC'; SET statement_timeout = '15s'")
            .await
            .map_err(PostgresError::Server)?;
        describe(client, target, sampling).await
    };
    let Some(server) = ctx.until_stopped(setup).await else {
        ctx.stopped_part("server");
        return Ok(());
    };
    let server = server?;
    ctx.part("server", SourceStatus::Ok, 1, None);
    if server.version_num < MIN_VERSION_NUM {
        return Err(PostgresError::TooOld(server.version_num));
    }
    let doc = Spool::json_document(&server).map_err(PostgresError::Spool)?;
    ctx.write(paths::postgres_server(&target.name), doc, Some(1), None)
        .await
        .map_err(PostgresError::Store)?;

    let prepare = async {
        let activity = client.prepare(ACTIVITY).await?;
        let locks = client.prepare(LOCKS).await?;
        Ok((activity, locks))
    };
    let Some(prepared) = ctx.until_stopped(prepare).await else {
        return Ok(());
    };
    let (activity_stmt, locks_stmt) = prepared.map_err(PostgresError::Sample)?;
    let mut activity = Spool::new().map_err(PostgresError::Spool)?;
    let mut locks = Spool::new().map_err(PostgresError::Spool)?;
    for sample in 1..=sampling.samples {
        if sample > 1
            && ctx
                .until_stopped(tokio::time::sleep(sampling.interval))
                .await
                .is_none()
        {
            break;
        }
        let round = async {
            let rows = copy_rows(client, &activity_stmt, sample as i32, &mut activity).await?;
            let held = copy_rows(client, &locks_stmt, sample as i32, &mut locks).await?;
            Ok::<_, PostgresError>((rows, held))
        };
        let Some(answer) = ctx.until_stopped(round).await else {
            break;
        };
        let part = format!("sample-{sample}");
        match answer {
            Ok((rows, held)) => {
                tracing::debug!(sample, rows, locks = held, "sample round done");
                ctx.add_items(rows);
                ctx.part(&part, SourceStatus::Ok, rows, None);
            }
            Err(e @ PostgresError::Spool(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(stage = "sample", error_type = status_name(e.status()), error = %one_line(&e), sample, "sample round failed");
                ctx.part(&part, e.status(), 0, Some(render_chain(&e)));
                if client.is_closed() {
                    // The rounds that will not be taken stay in the manifest, so a
                    // reader sees how many were asked for and why they are missing.
                    let why = format!("not taken: the connection was lost in {part}");
                    for later in sample + 1..=sampling.samples {
                        ctx.part(&format!("sample-{later}"), e.status(), 0, Some(why.clone()));
                    }
                    break;
                }
            }
        }
    }

    let activity = activity.finish().map_err(PostgresError::Spool)?;
    ctx.write(paths::postgres_activity(&target.name), activity, None, None)
        .await
        .map_err(PostgresError::Store)?;
    let locks = locks.finish().map_err(PostgresError::Spool)?;
    ctx.write(paths::postgres_locks(&target.name), locks, None, None)
        .await
        .map_err(PostgresError::Store)?;
    Ok(())
}

async fn describe(
    client: &tokio_postgres::Client,
    target: &PgTarget,
    sampling: Sampling,
) -> Result<PgServer, PostgresError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, version()",
            &[],
        )
        .await
        .map_err(PostgresError::Server)?;
    let names: Vec<String> = SETTINGS.iter().map(|s| (*s).to_owned()).collect();
    let rows = client
        .query(
            "SELECT s.name, current_setting(s.name, true) FROM unnest($1::text[]) AS s(name)",
            &[&names],
        )
        .await
        .map_err(PostgresError::Server)?;
    let settings: BTreeMap<String, String> = rows
        .iter()
        .filter_map(|r| Some((r.get::<_, String>(0), r.get::<_, Option<String>>(1)?)))
        .collect();
    Ok(PgServer {
        target: target.display.clone(),
        version_num: row.get(0),
        version: row.get(1),
        settings,
        samples: sampling.samples,
        interval_ms: sampling.interval.as_millis() as u64,
    })
}

/// Streams one query's rows (each a single jsonb column) into a spool, one a line.
async fn copy_rows(
    client: &tokio_postgres::Client,
    stmt: &tokio_postgres::Statement,
    sample: i32,
    spool: &mut Spool,
) -> Result<u64, PostgresError> {
    let params: [&(dyn ToSql + Sync); 1] = [&sample];
    let rows = client
        .query_raw(stmt, params.iter().map(|p| *p as &dyn ToSql))
        .await
        .map_err(PostgresError::Sample)?;
    let mut rows = std::pin::pin!(rows.map_err(PostgresError::Sample));
    let mut n = 0;
    while let Some(row) = rows.next().await {
        let value: Value = row?.try_get(0).map_err(PostgresError::Sample)?;
        spool
            .write_json_line(&value)
            .map_err(PostgresError::Spool)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn targets_are_named_host_port_db() {
        let t = parse_target("host=127.0.0.1 port=5433 dbname=shop user=app", &no_env).unwrap();
        assert_eq!(t.name, "127.0.0.1-5433-shop");
        let t = parse_target("postgresql://app@db.internal/orders", &no_env).unwrap();
        assert_eq!(t.name, "db.internal-5432-orders");
        // No dbname: libpq uses the user name.
        let t = parse_target("host=db user=app", &no_env).unwrap();
        assert_eq!(t.name, "db-5432-app");
    }

    #[test]
    fn a_leading_name_is_taken_only_before_a_conninfo_or_url() {
        let t = parse_target("orders=host=db port=5432 user=app", &no_env).unwrap();
        assert_eq!(t.name, "orders");
        let t = parse_target("orders=postgresql://app@db/shop", &no_env).unwrap();
        assert_eq!(t.name, "orders");
        let t = parse_target("host=db port=5432 user=app", &no_env).unwrap();
        assert_eq!(t.name, "db-5432-app");
    }

    #[test]
    fn passwords_never_reach_name_or_display() {
        let t = parse_target("host=db user=app password=invented-pw dbname=shop", &no_env).unwrap();
        assert_eq!(
            t.display,
            "host=db user=app password=<redacted> dbname=shop"
        );
        assert_eq!(t.redactions, 1);
        let t = parse_target("postgresql://app:invented-pw@db:6543/shop", &no_env).unwrap();
        assert_eq!(t.display, "postgresql://app:<redacted>@db:6543/shop");
        assert_eq!(t.name, "db-6543-shop");
        // tokio-postgres prints a set password as `_` in Debug output.
        assert!(!format!("{t:?}").contains("invented-pw"));
    }

    #[test]
    fn env_target_only_when_a_server_picking_variable_is_set() {
        assert!(target_from_env(&no_env).is_none());
        let only_password = |k: &str| (k == "PGPASSWORD").then(|| "invented".to_owned());
        assert!(target_from_env(&only_password).is_none());
        let env = |k: &str| match k {
            "PGHOST" => Some("127.0.0.1".to_owned()),
            "PGPORT" => Some("5439".to_owned()),
            "PGUSER" => Some("app".to_owned()),
            "PGPASSWORD" => Some("invented".to_owned()),
            _ => None,
        };
        let t = target_from_env(&env).unwrap();
        assert_eq!(t.name, "127.0.0.1-5439-app");
        assert_eq!(t.display, "host=127.0.0.1 port=5439 user=app");
        assert_eq!(t.config.get_password(), Some(&b"invented"[..]));
    }
}
