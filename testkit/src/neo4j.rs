//! The Neo4j HTTP transactional endpoint (`POST /db/{db}/tx/commit`), answering the
//! statements sitrep sends with the scenario's transactions.
//!
//! Two server generations are replayed: 5.x answers `SHOW TRANSACTIONS YIELD *`; 4.x
//! rejects it with a syntax error inside an HTTP 200 body, as Neo4j does, and answers
//! `CALL dbms.listQueries()` instead. Durations render as ISO-8601 strings and datetimes
//! as ISO strings, as Neo4j's JSON format does.
//!
//! A replay repeats one recorded moment: every answer shows each transaction at its
//! recorded elapsed time, with its start time placed that long before the request.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::http::{self, Request, Response};
use crate::scenario::Neo4jScenario;

/// Which Neo4j generation to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Neo4jMode {
    /// 5.x: `SHOW TRANSACTIONS`.
    #[value(name = "5")]
    V5,
    /// 4.x before `SHOW TRANSACTIONS` existed: `dbms.listQueries()`.
    #[value(name = "4")]
    V4,
}

#[derive(Debug, Clone)]
pub(crate) struct Neo4jReplay {
    pub(crate) scenario: Neo4jScenario,
    pub(crate) mode: Neo4jMode,
    pub(crate) base_url: String,
}

/// `PT12S`, `PT0.042S`: the ISO-8601 form Neo4j gives a Duration.
pub fn iso_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        return format!("PT{seconds}S");
    }
    let fraction = format!("{nanos:09}");
    format!("PT{seconds}.{}S", fraction.trim_end_matches('0'))
}

fn iso_datetime(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error(code: &str, message: &str) -> Value {
    json!({ "code": code, "message": message })
}

impl Neo4jReplay {
    fn version(&self) -> &str {
        match self.mode {
            Neo4jMode::V5 => &self.scenario.version,
            Neo4jMode::V4 => &self.scenario.legacy_version,
        }
    }

    fn authorized(&self, request: &Request) -> bool {
        let credentials = format!("{}:{}", self.scenario.user, self.scenario.password);
        let expected = format!("Basic {}", http::base64(credentials.as_bytes()));
        request.header("authorization") == Some(expected.as_str())
    }

    pub(crate) fn handle(&self, request: &Request) -> Response {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        if request.path == "/" {
            return Response::json(
                200,
                json!({
                    "bolt_routing": "neo4j://127.0.0.1:7687",
                    "transaction": format!("{}/db/{{databaseName}}/tx", self.base_url),
                    "bolt_direct": "bolt://127.0.0.1:7687",
                    "neo4j_version": self.version(),
                    "neo4j_edition": self.scenario.edition,
                }),
            );
        }
        let ["db", database, "tx", "commit"] = segments.as_slice() else {
            return Response::json(
                404,
                json!({ "errors": [error(
                "Neo.ClientError.Request.Invalid", "Not found")] }),
            );
        };
        if request.method != "POST" {
            let mut response = Response::json(405, json!({ "errors": [] }));
            response.headers.push(("Allow", "POST".into()));
            return response;
        }
        if !self.authorized(request) {
            let message = if request.header("authorization").is_some() {
                "Invalid credential."
            } else {
                "No authentication header supplied."
            };
            let mut response = Response::json(
                401,
                json!({ "errors": [error(
                "Neo.ClientError.Security.Unauthorized", message)] }),
            );
            response
                .headers
                .push(("WWW-Authenticate", "Basic realm=\"Neo4j\"".into()));
            return response;
        }
        if *database != self.scenario.database && *database != "system" {
            return Response::json(
                404,
                json!({ "errors": [error(
                "Neo.ClientError.Database.DatabaseNotFound",
                &format!("Database does not exist. Database name: '{database}'."))] }),
            );
        }
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(parse) => {
                return Response::json(
                    400,
                    json!({ "errors": [error(
                    "Neo.ClientError.Request.InvalidFormat",
                    &format!("Unable to deserialize request: {parse}"))] }),
                );
            }
        };
        let statements = body["statements"].as_array().cloned().unwrap_or_default();

        let now = Utc::now();
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for statement in &statements {
            let text = statement["statement"].as_str().unwrap_or_default();
            match self.answer(text, database, now) {
                Ok(result) => results.push(result),
                Err(failure) => {
                    // Neo4j stops at the first failing statement and rolls back.
                    errors.push(failure);
                    break;
                }
            }
        }
        let mut answer = json!({ "results": results, "errors": errors });
        if self.mode == Neo4jMode::V5 && errors.is_empty() {
            answer["lastBookmarks"] = json!(["FB:kcwQx4mT1ZVqQgW5lYHCTrjEUgGQ"]);
        }
        Response::json(200, &answer)
    }

    fn answer(&self, statement: &str, database: &str, now: DateTime<Utc>) -> Result<Value, Value> {
        let normalized = statement.trim().to_ascii_lowercase();
        if normalized.contains("dbms.components") {
            return Ok(result(
                &["name", "versions", "edition"],
                vec![vec![
                    json!("Neo4j Kernel"),
                    json!([self.version()]),
                    json!(self.scenario.edition),
                ]],
                false,
            ));
        }
        if normalized.starts_with("show transactions") {
            return match self.mode {
                Neo4jMode::V5 => Ok(self.show_transactions(statement, database, now)),
                Neo4jMode::V4 => Err(error(
                    "Neo.ClientError.Statement.SyntaxError",
                    "Invalid input 'TRANSACTIONS': expected\n  \"CONSTRAINT\"\n  \"CONSTRAINTS\"\n  \
                     \"DATABASE\"\n  \"DATABASES\"\n  \"DEFAULT\"\n  \"INDEX\"\n  \"INDEXES\"\n  \
                     \"ROLES\"\n  \"USERS\" (line 1, column 6 (offset: 5))",
                )),
            };
        }
        if normalized.contains("dbms.listqueries") {
            return match self.mode {
                Neo4jMode::V4 => Ok(self.list_queries(statement, now)),
                Neo4jMode::V5 => Err(error(
                    "Neo.ClientError.Procedure.ProcedureNotFound",
                    "There is no procedure with the name `dbms.listQueries` registered for this \
                     database instance. Please ensure you've spelled the procedure name correctly \
                     and that the procedure is properly deployed.",
                )),
            };
        }
        Err(error(
            "Neo.ClientError.Statement.SyntaxError",
            &format!(
                "Invalid input '{}': this replayed server answers only dbms.components(), \
                      SHOW TRANSACTIONS and dbms.listQueries() (line 1, column 1 (offset: 0))",
                statement.split_whitespace().next().unwrap_or_default()
            ),
        ))
    }

    /// The scenario's transactions, plus the one running the listing itself, as a real
    /// server would show it.
    fn listed(
        &self,
        own_statement: &str,
    ) -> Vec<(String, String, String, String, String, String, Duration)> {
        let mut listed: Vec<_> = self
            .scenario
            .transactions
            .iter()
            .map(|tx| {
                (
                    tx.transaction_id.clone(),
                    tx.query_id.clone(),
                    tx.connection_id.clone(),
                    tx.username.clone(),
                    tx.client_address.clone(),
                    tx.query.clone(),
                    tx.elapsed,
                )
            })
            .collect();
        listed.push((
            "neo4j-transaction-4720".into(),
            "query-9021".into(),
            "http-17".into(),
            self.scenario.user.clone(),
            "127.0.0.1:0".into(),
            own_statement.to_owned(),
            Duration::from_millis(1),
        ));
        listed
    }

    fn show_transactions(&self, statement: &str, database: &str, now: DateTime<Utc>) -> Value {
        const COLUMNS: &[&str] = &[
            "database",
            "transactionId",
            "currentQueryId",
            "outerTransactionId",
            "connectionId",
            "clientAddress",
            "username",
            "metaData",
            "currentQuery",
            "parameters",
            "planner",
            "runtime",
            "indexes",
            "startTime",
            "currentQueryStartTime",
            "protocol",
            "requestUri",
            "status",
            "currentQueryStatus",
            "statusDetails",
            "resourceInformation",
            "activeLockCount",
            "currentQueryActiveLockCount",
            "elapsedTime",
            "cpuTime",
            "waitTime",
            "idleTime",
            "currentQueryElapsedTime",
            "currentQueryCpuTime",
            "currentQueryWaitTime",
            "currentQueryIdleTime",
            "currentQueryAllocatedBytes",
            "allocatedDirectBytes",
            "estimatedUsedHeapMemory",
            "pageHits",
            "pageFaults",
            "currentQueryPageHits",
            "currentQueryPageFaults",
            "initializationStackTrace",
        ];
        let rows = self
            .listed(statement)
            .into_iter()
            .map(|(tx, query_id, connection, user, client, query, elapsed)| {
                let started =
                    iso_datetime(now - chrono::Duration::from_std(elapsed).unwrap_or_default());
                let cpu = iso_duration(elapsed * 9 / 10);
                vec![
                    json!(database),
                    json!(tx),
                    json!(query_id),
                    json!(""),
                    json!(connection),
                    json!(client),
                    json!(user),
                    json!({}),
                    json!(query),
                    json!({}),
                    json!("cost"),
                    json!("pipelined"),
                    json!([]),
                    json!(started),
                    json!(started),
                    json!("bolt"),
                    json!(null),
                    json!("Running"),
                    json!("running"),
                    json!(""),
                    json!({}),
                    json!(3),
                    json!(3),
                    json!(iso_duration(elapsed)),
                    json!(cpu),
                    json!("PT0S"),
                    json!("PT0S"),
                    json!(iso_duration(elapsed)),
                    json!(cpu),
                    json!("PT0S"),
                    json!("PT0S"),
                    json!(4_194_304),
                    json!(0),
                    json!(2_097_152),
                    json!(18_230),
                    json!(12),
                    json!(18_230),
                    json!(12),
                    json!(""),
                ]
            })
            .collect();
        result(COLUMNS, rows, true)
    }

    fn list_queries(&self, statement: &str, now: DateTime<Utc>) -> Value {
        const COLUMNS: &[&str] = &[
            "queryId",
            "username",
            "metaData",
            "query",
            "parameters",
            "planner",
            "runtime",
            "indexes",
            "startTime",
            "protocol",
            "clientAddress",
            "requestUri",
            "status",
            "resourceInformation",
            "activeLockCount",
            "elapsedTimeMillis",
            "cpuTimeMillis",
            "waitTimeMillis",
            "idleTimeMillis",
            "allocatedBytes",
            "pageHits",
            "pageFaults",
            "connectionId",
            "database",
        ];
        let rows = self
            .listed(statement)
            .into_iter()
            .map(|(_, query_id, connection, user, client, query, elapsed)| {
                let millis = elapsed.as_millis() as u64;
                // 4.x renders the start time as a plain string.
                let started =
                    iso_datetime(now - chrono::Duration::from_std(elapsed).unwrap_or_default());
                vec![
                    json!(query_id),
                    json!(user),
                    json!({}),
                    json!(query),
                    json!({}),
                    json!("cost"),
                    json!("pipelined"),
                    json!([]),
                    json!(started),
                    json!("bolt"),
                    json!(client),
                    json!("bolt://127.0.0.1:7687"),
                    json!("running"),
                    json!({}),
                    json!(3),
                    json!(millis),
                    json!(millis * 9 / 10),
                    json!(0),
                    json!(0),
                    json!(4_194_304),
                    json!(18_230),
                    json!(12),
                    json!(connection),
                    json!(self.scenario.database),
                ]
            })
            .collect();
        result(COLUMNS, rows, false)
    }
}

fn result(columns: &[&str], rows: Vec<Vec<Value>>, typed: bool) -> Value {
    let data: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let meta: Vec<Value> = row
                .iter()
                .map(|value| match value.as_str().filter(|_| typed) {
                    Some(text) if text.starts_with("PT") => json!({ "type": "duration" }),
                    Some(text)
                        if text.len() > 20
                            && text.ends_with('Z')
                            && text.as_bytes()[10] == b'T' =>
                    {
                        json!({ "type": "datetime" })
                    }
                    _ => Value::Null,
                })
                .collect();
            json!({ "row": row, "meta": meta })
        })
        .collect();
    json!({ "columns": columns, "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_like_neo4j() {
        assert_eq!(iso_duration(Duration::from_secs(12)), "PT12S");
        assert_eq!(iso_duration(Duration::from_millis(42)), "PT0.042S");
        assert_eq!(iso_duration(Duration::from_millis(12_500)), "PT12.5S");
    }
}
