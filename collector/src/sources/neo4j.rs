//! Neo4j: running transactions, sampled over the HTTP transactional endpoint.

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value};
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::paths;
use sitrep_schemas::records::{Neo4jListing, Neo4jServer};

use crate::bundle::{BundleError, Spool};
use crate::config::Sampling;
use crate::run::{Classify, Failure, SourceContext, one_line, render_chain, status_name};

/// Neo4j: what is running right now, sampled a few times. Uses the HTTP API
/// (`/db/<database>/tx/commit`); Bolt URLs are not spoken.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Neo4jArgs {
    /// HTTP URL of the Neo4j server, e.g. http://127.0.0.1:7474. Neo4j is skipped when
    /// this is not set.
    #[arg(
        id = "neo4j_url",
        long = "neo4j-url",
        env = "NEO4J_URI",
        // A URL may carry a password in its userinfo; --help must not print it.
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) url: Option<String>,
    /// User for basic authentication.
    #[arg(
        id = "neo4j_user",
        long = "neo4j-user",
        env = "NEO4J_USERNAME",
        value_name = "USER"
    )]
    pub(crate) user: Option<String>,
    /// Password for basic authentication. Prefer the environment variable: a flag shows
    /// up in the process list.
    #[arg(
        id = "neo4j_password",
        long = "neo4j-password",
        env = "NEO4J_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub(crate) password: Option<String>,
    /// Database whose endpoint the statements are sent to.
    #[arg(
        id = "neo4j_database",
        long = "neo4j-database",
        default_value = "neo4j",
        value_name = "DATABASE"
    )]
    pub(crate) database: String,
}

/// Most bytes of one answer held in memory: a round is parsed whole, and an endless
/// answer would otherwise grow until the process dies with the whole bundle unwritten.
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;
/// Most bytes of an error answer read to find its Neo4j error code.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

const COMPONENTS: &str = "CALL dbms.components() YIELD name, versions, edition";
const SHOW_TRANSACTIONS: &str = "SHOW TRANSACTIONS YIELD *";
const LIST_QUERIES: &str = "CALL dbms.listQueries()";

#[derive(Debug, thiserror::Error)]
pub(crate) enum Neo4jError {
    #[error("`{0}` is not an HTTP URL; Neo4j is reached over its HTTP API (e.g. http://HOST:7474)")]
    Scheme(String),
    #[error("`{url}` is not a usable Neo4j URL")]
    Url {
        url: String,
        #[source]
        source: <reqwest::Url as std::str::FromStr>::Err,
    },
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("request to the transactional endpoint failed")]
    Request(#[source] reqwest::Error),
    #[error("Neo4j answered HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http { status: u16, detail: Option<String> },
    #[error("the answer is not a transactional endpoint response")]
    Parse(#[source] serde_json::Error),
    #[error("the answer is larger than {} MiB and was not read further", .0 / (1024 * 1024))]
    TooLarge(usize),
    #[error("Neo4j refused the statement: {code}: {message}")]
    Statement { code: String, message: String },
    #[error("neither `SHOW TRANSACTIONS` nor `dbms.listQueries()` answered")]
    NoListing(#[source] Box<Neo4jError>),
    #[error("cannot spool the rows")]
    Spool(#[source] std::io::Error),
    #[error("cannot store the rows")]
    Store(#[source] BundleError),
}

impl Classify for Neo4jError {
    fn status(&self) -> SourceStatus {
        match self {
            Neo4jError::Scheme(_) => SourceStatus::Unsupported,
            Neo4jError::Url { .. } | Neo4jError::Client(_) => SourceStatus::Failed,
            Neo4jError::Request(e) => super::transport_status(e),
            Neo4jError::Http { status, .. } => super::http_status(*status),
            Neo4jError::Parse(_) => SourceStatus::Malformed,
            Neo4jError::TooLarge(_) => SourceStatus::OverBudget,
            Neo4jError::Statement { code, .. } if code.contains("Security") => {
                SourceStatus::Forbidden
            }
            Neo4jError::Statement { .. } => SourceStatus::Failed,
            Neo4jError::NoListing(inner) => match inner.status() {
                SourceStatus::Failed => SourceStatus::Unsupported,
                other => other,
            },
            Neo4jError::Spool(_) | Neo4jError::Store(_) => SourceStatus::Failed,
        }
    }
}

/// A configured Neo4j endpoint. Its Debug output leaves the password out.
#[derive(Clone)]
pub(crate) struct Neo4jTarget {
    /// `<host>-<port>`, the bundle folder name.
    pub(crate) name: String,
    /// The URL without credentials.
    pub(crate) display: String,
    commit_url: String,
    user: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Neo4jTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jTarget")
            .field("name", &self.name)
            .field("display", &self.display)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Neo4jTarget {
    /// Credentials in the URL's userinfo are used when no user or password flag is given.
    pub(crate) fn from_args(args: &Neo4jArgs, url: &str) -> Result<Self, Neo4jError> {
        let parsed: reqwest::Url = url.parse().map_err(|source| Neo4jError::Url {
            url: redact_url(url),
            source,
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Neo4jError::Scheme(redact_url(url)));
        }
        let host = parsed.host_str().unwrap_or("localhost").to_owned();
        let port = parsed.port_or_known_default().unwrap_or(7474);
        let url_user = (!parsed.username().is_empty()).then(|| parsed.username().to_owned());
        let url_password = parsed.password().map(str::to_owned);
        let display = super::without_userinfo(&parsed);
        Ok(Neo4jTarget {
            name: sitrep_schemas::paths::segment(&format!("{host}-{port}")),
            commit_url: format!("{display}/db/{}/tx/commit", args.database),
            display,
            user: args.user.clone().or(url_user),
            password: args.password.clone().or(url_password),
        })
    }
}

fn redact_url(url: &str) -> String {
    crate::redact::connection_string(url).0
}

/// The transactional endpoint's answer.
#[derive(Debug, Deserialize)]
struct TxResponse {
    #[serde(default)]
    results: Vec<TxResult>,
    #[serde(default)]
    errors: Vec<TxError>,
}

#[derive(Debug, Deserialize)]
struct TxResult {
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    data: Vec<TxRow>,
}

#[derive(Debug, Deserialize)]
struct TxRow {
    #[serde(default)]
    row: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct TxError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Rows of the first result as objects, column name to value; an `errors` entry (which
/// Neo4j sends inside an HTTP 200 answer) becomes an error.
fn rows_of(response: TxResponse) -> Result<Vec<Map<String, Value>>, Neo4jError> {
    if let Some(first) = response.errors.into_iter().next() {
        return Err(Neo4jError::Statement {
            code: first.code,
            message: first.message,
        });
    }
    let Some(result) = response.results.into_iter().next() else {
        return Ok(Vec::new());
    };
    Ok(result
        .data
        .into_iter()
        .map(|r| result.columns.iter().cloned().zip(r.row).collect())
        .collect())
}

async fn run_statement(
    client: &reqwest::Client,
    target: &Neo4jTarget,
    statement: &str,
) -> Result<Vec<Map<String, Value>>, Neo4jError> {
    let mut request = client
        .post(&target.commit_url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&serde_json::json!({ "statements": [{ "statement": statement }] }));
    if let Some(user) = &target.user {
        request = request.basic_auth(user, target.password.as_deref());
    }
    let response = request
        .send()
        .await
        .map_err(|e| Neo4jError::Request(e.without_url()))?;
    let status = response.status().as_u16();
    if status != 200 && status != 201 {
        // The error body of a 401 names the Neo4j error code; keep it, it is no secret.
        let detail = read_capped(response.bytes_stream(), ERROR_BODY_LIMIT)
            .await
            .ok()
            .and_then(|body| serde_json::from_slice::<TxResponse>(&body).ok())
            .and_then(|r| r.errors.into_iter().next())
            .map(|e| format!("{}: {}", e.code, e.message));
        return Err(Neo4jError::Http { status, detail });
    }
    let body = read_capped(response.bytes_stream(), ANSWER_LIMIT).await?;
    rows_of(serde_json::from_slice::<TxResponse>(&body).map_err(Neo4jError::Parse)?)
}

/// Reads a body whole, refusing one longer than `limit` as soon as it grows past it.
async fn read_capped<B: AsRef<[u8]>>(
    chunks: impl futures::Stream<Item = reqwest::Result<B>>,
    limit: usize,
) -> Result<Vec<u8>, Neo4jError> {
    use futures::StreamExt as _;

    let mut chunks = std::pin::pin!(chunks);
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| Neo4jError::Request(e.without_url()))?;
        let chunk = chunk.as_ref();
        if body.len() + chunk.len() > limit {
            return Err(Neo4jError::TooLarge(limit));
        }
        body.extend_from_slice(chunk);
    }
    Ok(body)
}

/// Reads the version, then samples the running transactions.
pub(crate) async fn collect(
    target: Neo4jTarget,
    sampling: Sampling,
    ctx: Arc<SourceContext>,
) -> Result<(), Failure> {
    let client = super::http_client().map_err(|e| Neo4jError::Client(e).failure())?;

    // The first request is bounded by the stop too: a server that takes the connection
    // and never answers would otherwise hold the source until the grace runs out.
    let Some(components) = ctx
        .until_stopped(run_statement(&client, &target, COMPONENTS))
        .await
    else {
        ctx.stopped_part("server");
        return Ok(());
    };
    let (version, edition) = match components {
        Ok(rows) => {
            ctx.part("server", SourceStatus::Ok, rows.len() as u64, None);
            let kernel = rows
                .iter()
                .find(|r| r.get("name").and_then(Value::as_str) == Some("Neo4j Kernel"))
                .or(rows.first());
            let version = kernel
                .and_then(|r| r.get("versions"))
                .and_then(|v| v.get(0))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let edition = kernel
                .and_then(|r| r.get("edition"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (version, edition)
        }
        // Nothing else can work when the server refuses us or cannot be reached.
        Err(e) if e.status() != SourceStatus::Failed => return Err(e.failure()),
        Err(e) => {
            ctx.part("server", e.status(), 0, Some(render_chain(&e)));
            (None, None)
        }
    };

    let mut listing = Neo4jListing::ShowTransactions;
    let mut spool = Spool::new().map_err(|e| Neo4jError::Spool(e).failure())?;
    let mut rows_total = 0u64;
    let mut rounds = 0u32;
    for sample in 1..=sampling.samples {
        if sample > 1
            && ctx
                .until_stopped(tokio::time::sleep(sampling.interval))
                .await
                .is_none()
        {
            break;
        }
        let Some(answer) = ctx
            .until_stopped(sample_once(&client, &target, &mut listing))
            .await
        else {
            break;
        };
        let part = format!("sample-{sample}");
        match answer {
            Ok(rows) => {
                let sample_ts = Utc::now();
                let n = rows.len() as u64;
                for mut row in rows {
                    row.insert("sample".into(), Value::from(sample));
                    row.insert("sample_ts".into(), Value::String(sample_ts.to_rfc3339()));
                    spool
                        .write_json_line(&Value::Object(row))
                        .map_err(|e| Neo4jError::Spool(e).failure())?;
                }
                rows_total += n;
                rounds += 1;
                ctx.add_items(n);
                ctx.part(&part, SourceStatus::Ok, n, None);
            }
            Err(e) if sample == 1 => return Err(e.failure()),
            Err(e) => {
                tracing::warn!(stage = "sample", error_type = status_name(e.status()), error = %one_line(&e), sample, "sample round failed");
                ctx.part(&part, e.status(), 0, Some(render_chain(&e)));
            }
        }
    }
    tracing::debug!(rows = rows_total, rounds, listing = ?listing, "sampling done");

    let server = Neo4jServer {
        target: target.display.clone(),
        version,
        edition,
        listing,
        samples: sampling.samples,
        interval_ms: sampling.interval.as_millis() as u64,
    };
    let rows = spool.finish().map_err(|e| Neo4jError::Spool(e).failure())?;
    ctx.write(paths::neo4j_transactions(&target.name), rows, None, None)
        .await
        .map_err(|e| Neo4jError::Store(e).failure())?;
    let doc = Spool::json_document(&server).map_err(|e| Neo4jError::Spool(e).failure())?;
    ctx.write(paths::neo4j_server(&target.name), doc, Some(1), None)
        .await
        .map_err(|e| Neo4jError::Store(e).failure())?;
    Ok(())
}

/// One round. `SHOW TRANSACTIONS` is a 5.x statement; a 4.x server answers it with a
/// syntax error inside an HTTP 200 body, and from then on `dbms.listQueries()` is used.
async fn sample_once(
    client: &reqwest::Client,
    target: &Neo4jTarget,
    listing: &mut Neo4jListing,
) -> Result<Vec<Map<String, Value>>, Neo4jError> {
    if *listing == Neo4jListing::ListQueries {
        return run_statement(client, target, LIST_QUERIES).await;
    }
    match run_statement(client, target, SHOW_TRANSACTIONS).await {
        Err(Neo4jError::Statement { code, message }) => {
            tracing::debug!(
                code,
                message,
                "SHOW TRANSACTIONS refused; trying dbms.listQueries()"
            );
            let rows = run_statement(client, target, LIST_QUERIES)
                .await
                .map_err(|e| Neo4jError::NoListing(Box::new(e)))?;
            *listing = Neo4jListing::ListQueries;
            Ok(rows)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(user: Option<&str>) -> Neo4jArgs {
        Neo4jArgs {
            url: None,
            user: user.map(str::to_owned),
            password: None,
            database: "neo4j".into(),
        }
    }

    #[test]
    fn rows_are_zipped_with_columns() {
        let body = r#"{"results":[{"columns":["transactionId","elapsedTime"],"data":[
            {"row":["neo4j-transaction-7","PT12S"],"meta":[null,null]},
            {"row":["neo4j-transaction-8","PT0.2S"],"meta":[null,null]}]}],"errors":[]}"#;
        let rows = rows_of(serde_json::from_str(body).unwrap()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["transactionId"], "neo4j-transaction-7");
        assert_eq!(rows[1]["elapsedTime"], "PT0.2S");
    }

    #[test]
    fn errors_inside_a_200_answer_are_errors() {
        let body = r#"{"results":[],"errors":[{"code":"Neo.ClientError.Statement.SyntaxError",
            "message":"Invalid input 'SHOW'"}]}"#;
        match rows_of(serde_json::from_str(body).unwrap()) {
            Err(Neo4jError::Statement { code, .. }) => {
                assert_eq!(code, "Neo.ClientError.Statement.SyntaxError");
            }
            other => panic!("expected a statement error, got {other:?}"),
        }
    }

    #[test]
    fn target_is_named_by_host_and_port_without_credentials() {
        let t = Neo4jTarget::from_args(&args(None), "http://neo:invented@127.0.0.1:7474/").unwrap();
        assert_eq!(t.name, "127.0.0.1-7474");
        assert_eq!(t.display, "http://127.0.0.1:7474");
        assert_eq!(t.commit_url, "http://127.0.0.1:7474/db/neo4j/tx/commit");
        assert_eq!(t.user.as_deref(), Some("neo"));
        assert_eq!(t.password.as_deref(), Some("invented"));
        assert!(!format!("{t:?}").contains("invented"));
        // The name is the bundle folder, so it holds only what a path segment may.
        let v6 = Neo4jTarget::from_args(&args(None), "http://[::1]:7474").unwrap();
        assert_eq!(v6.name, "___1_-7474");
        let flag = Neo4jTarget::from_args(&args(Some("admin")), "http://127.0.0.1").unwrap();
        assert_eq!(flag.name, "127.0.0.1-80");
        assert_eq!(flag.user.as_deref(), Some("admin"));
    }

    #[tokio::test]
    async fn bodies_past_the_cap_are_refused_as_over_budget() {
        let chunks = |n: usize| futures::stream::iter((0..n).map(|_| Ok(vec![b'x'; 10])));
        assert_eq!(read_capped(chunks(3), 30).await.unwrap().len(), 30);
        let e = read_capped(chunks(4), 30).await.unwrap_err();
        assert_eq!(e.status(), SourceStatus::OverBudget);
    }

    #[test]
    fn bolt_urls_are_refused_as_unsupported() {
        let e = Neo4jTarget::from_args(&args(None), "neo4j://u:pw@127.0.0.1:7687").unwrap_err();
        assert_eq!(e.status(), SourceStatus::Unsupported);
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}
