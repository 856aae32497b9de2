//! Where each thing lives inside a bundle.
//!
//! Every entry path is relative, uses `/`, and starts with one of the known top-level
//! names. Names taken from the cluster or a target (namespace, pod, container, target
//! label) pass through [`segment`] so that no value can climb out of its folder.

use std::fmt;

/// First entry of every bundle.
pub const HEADER: &str = "sitrep.json";
/// Last entry of every bundle.
pub const MANIFEST: &str = "manifest.json";
/// What was asked of Prometheus and how each query went.
pub const PROMETHEUS_QUERIES: &str = "prometheus/queries.json";

/// Top-level folders a bundle may hold, besides the header and the manifest.
pub const TOP_LEVEL: &[&str] = &["k8s", "logs", "prometheus", "postgres", "neo4j"];

/// Kubernetes resources the collector lists; each becomes `k8s/<name>.ndjson`.
pub mod k8s {
    pub const DEPLOYMENTS: &str = "deployments";
    pub const REPLICASETS: &str = "replicasets";
    pub const PODS: &str = "pods";
    /// core/v1 Events.
    pub const EVENTS: &str = "events";
    /// events.k8s.io/v1 Events.
    pub const EVENTS_V1: &str = "events.k8s.io";
    pub const NODES: &str = "nodes";
    /// metrics.k8s.io/v1beta1 PodMetrics.
    pub const POD_METRICS: &str = "podmetrics";
}

/// `k8s/<resource>.ndjson`: one object a line, exactly as the API server sent it, with
/// `apiVersion` and `kind` filled in (List items arrive without them).
pub fn k8s(resource: &str) -> String {
    format!("k8s/{resource}.ndjson")
}

/// `logs/<ns>/<pod>/<container>.log`, or `.previous.log` for the previous instance.
/// Every line starts with the API server's RFC 3339 timestamp (`timestamps=true`).
pub fn container_log(namespace: &str, pod: &str, container: &str, previous: bool) -> String {
    let suffix = if previous { ".previous.log" } else { ".log" };
    format!(
        "logs/{}/{}/{}{suffix}",
        segment(namespace),
        segment(pod),
        segment(container)
    )
}

/// `prometheus/<query>.json`, or `prometheus/<query>.<part>.json` when the window had to
/// be split to stay under the points-per-series limit (parts count from 1).
pub fn prometheus_response(query: &str, part: Option<u32>) -> String {
    match part {
        None => format!("prometheus/{}.json", segment(query)),
        Some(n) => format!("prometheus/{}.{n}.json", segment(query)),
    }
}

/// `postgres/<target>/server.json`: version and the settings that matter.
pub fn postgres_server(target: &str) -> String {
    format!("postgres/{}/server.json", segment(target))
}

/// `postgres/<target>/activity.ndjson`: `pg_stat_activity` rows, one a line.
pub fn postgres_activity(target: &str) -> String {
    format!("postgres/{}/activity.ndjson", segment(target))
}

/// `postgres/<target>/locks.ndjson`: `pg_locks` rows of waiting and blocking backends.
pub fn postgres_locks(target: &str) -> String {
    format!("postgres/{}/locks.ndjson", segment(target))
}

/// `neo4j/<target>/server.json`: version, edition and which listing was used.
pub fn neo4j_server(target: &str) -> String {
    format!("neo4j/{}/server.json", segment(target))
}

/// `neo4j/<target>/transactions.ndjson`: one running transaction or query a line.
pub fn neo4j_transactions(target: &str) -> String {
    format!("neo4j/{}/transactions.ndjson", segment(target))
}

/// Makes a name safe as one path segment: keeps `[A-Za-z0-9._-]`, replaces anything else
/// with `_`, and never returns an empty string, `.` or `..`.
pub fn segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}

/// Why an entry path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    Absolute,
    ParentComponent,
    Backslash,
    UnknownTopLevel(String),
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathProblem::Empty => f.write_str("empty entry path"),
            PathProblem::Absolute => f.write_str("absolute entry path"),
            PathProblem::ParentComponent => f.write_str("entry path contains `..`"),
            PathProblem::Backslash => f.write_str("entry path contains `\\`"),
            PathProblem::UnknownTopLevel(top) => {
                write!(f, "entry path starts with unknown folder `{top}`")
            }
        }
    }
}

/// Checks an entry path read from an archive before anything trusts it.
pub fn check_entry_path(path: &str) -> Result<(), PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if path.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if path.contains('\\') {
        return Err(PathProblem::Backslash);
    }
    if path.split('/').any(|part| part == "..") {
        return Err(PathProblem::ParentComponent);
    }
    if path == HEADER || path == MANIFEST {
        return Ok(());
    }
    let top = path.split('/').next().unwrap_or_default();
    if TOP_LEVEL.contains(&top) && path.len() > top.len() + 1 {
        Ok(())
    } else {
        Err(PathProblem::UnknownTopLevel(top.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keeps_safe_names_and_neutralises_the_rest() {
        assert_eq!(
            segment("checkout-7d9f8b6c4-x2x9z"),
            "checkout-7d9f8b6c4-x2x9z"
        );
        assert_eq!(segment("127.0.0.1:5432/shop"), "127.0.0.1_5432_shop");
        assert_eq!(segment(".."), "_..");
        assert_eq!(segment(""), "_");
        assert_eq!(segment("a/../b"), "a_.._b");
    }

    #[test]
    fn log_paths_cannot_escape_their_folder() {
        assert_eq!(
            container_log("shop", "../../etc", "passwd", true),
            "logs/shop/.._.._etc/passwd.previous.log"
        );
        check_entry_path(&container_log("..", "..", "..", false)).unwrap();
    }

    #[test]
    fn entry_paths_are_checked() {
        let cases = [
            ("sitrep.json", Ok(())),
            ("manifest.json", Ok(())),
            ("k8s/pods.ndjson", Ok(())),
            ("logs/shop/p/c.log", Ok(())),
            ("", Err(PathProblem::Empty)),
            ("/etc/passwd", Err(PathProblem::Absolute)),
            ("logs/../../x", Err(PathProblem::ParentComponent)),
            ("logs\\x", Err(PathProblem::Backslash)),
            (
                "secrets/x",
                Err(PathProblem::UnknownTopLevel("secrets".into())),
            ),
            ("k8s", Err(PathProblem::UnknownTopLevel("k8s".into()))),
        ];
        for (path, want) in cases {
            assert_eq!(check_entry_path(path), want, "{path}");
        }
    }
}
