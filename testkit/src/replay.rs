//! The replay servers: the scenario's Kubernetes API and Neo4j HTTP endpoint on
//! 127.0.0.1, each an [`http::Server`] on its own port and its own thread.

use std::io;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::http::{self, Request, Response, Server, ServerError};
use crate::k8s::{self, ContainerLog, Rendered};
use crate::neo4j::{Neo4jMode, Neo4jReplay};
use crate::scenario::Scenario;

/// How the replay behaves.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub anchor: DateTime<Utc>,
    pub neo4j_mode: Neo4jMode,
    /// Refuse Kubernetes requests without the scenario's bearer token (401 `Status`).
    /// Off by default: client-go (kubectl) withholds bearer tokens from plain-HTTP
    /// servers, and the replay speaks plain HTTP.
    pub require_token: bool,
}

impl ReplayOptions {
    pub fn new(anchor: DateTime<Utc>) -> Self {
        ReplayOptions {
            anchor,
            neo4j_mode: Neo4jMode::V5,
            require_token: true,
        }
    }
}

/// The replayed Kubernetes API server and Neo4j endpoint of one scenario.
#[derive(Debug)]
pub struct Replay {
    pub kubernetes: Server,
    pub neo4j: Server,
    scenario: Scenario,
}

impl Replay {
    pub fn start(scenario: &Scenario, options: &ReplayOptions) -> Result<Self, ServerError> {
        let rendered = k8s::render(scenario, options.anchor);
        let api = Arc::new(KubeApi {
            scenario: scenario.clone(),
            rendered,
            require_token: options.require_token,
        });
        let kubernetes = Server::start("kubernetes", Arc::new(move |request| api.handle(request)))?;

        // The discovery document names the server's own URL, known only once it listens;
        // until the slot is filled, requests get a 503.
        let neo4j_replay = Arc::new(std::sync::OnceLock::<Neo4jReplay>::new());
        let slot = neo4j_replay.clone();
        let neo4j = Server::start(
            "neo4j",
            Arc::new(move |request| match slot.get() {
                Some(replay) => replay.handle(request),
                None => Response::json(503, json!({ "errors": [] })),
            }),
        )?;
        let _ = neo4j_replay.set(Neo4jReplay {
            scenario: scenario.neo4j.clone(),
            mode: options.neo4j_mode,
            base_url: neo4j.url(),
        });
        Ok(Replay {
            kubernetes,
            neo4j,
            scenario: scenario.clone(),
        })
    }

    pub fn kubernetes_url(&self) -> String {
        self.kubernetes.url()
    }

    pub fn neo4j_url(&self) -> String {
        self.neo4j.url()
    }

    /// Writes a kubeconfig (mode 0600) whose current context points at the replay.
    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        let cluster = &self.scenario.cluster;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n\
             contexts:\n- name: {context}\n  context:\n    cluster: {name}\n    namespace: {namespace}\n    \
             user: {context}-user\ncurrent-context: {context}\npreferences: {{}}\nusers:\n\
             - name: {context}-user\n  user:\n    token: {token}\n",
            name = cluster.name,
            server = self.kubernetes_url(),
            context = cluster.context,
            namespace = cluster.namespace,
            token = cluster.token,
        );
        write_private(path, text.as_bytes())
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

struct KubeApi {
    scenario: Scenario,
    rendered: Rendered,
    require_token: bool,
}

/// A served list: its items, kind, apiVersion and whether it is namespaced.
struct Listing<'a> {
    items: &'a [Value],
    kind: &'static str,
    api_version: &'static str,
    namespaced: bool,
}

impl KubeApi {
    fn listing(&self, group_version: &str, resource: &str) -> Option<Listing<'_>> {
        let r = &self.rendered;
        let (items, kind, api_version, namespaced): (&[Value], _, _, _) =
            match (group_version, resource) {
                ("v1", "pods") => (&r.pods, "PodList", "v1", true),
                ("v1", "events") => (&r.events, "EventList", "v1", true),
                ("v1", "nodes") => (&r.nodes, "NodeList", "v1", false),
                ("apps/v1", "deployments") => (&r.deployments, "DeploymentList", "apps/v1", true),
                ("apps/v1", "replicasets") => (&r.replicasets, "ReplicaSetList", "apps/v1", true),
                ("events.k8s.io/v1", "events") => {
                    (&r.events_v1, "EventList", "events.k8s.io/v1", true)
                }
                ("metrics.k8s.io/v1beta1", "pods") => (
                    &r.pod_metrics,
                    "PodMetricsList",
                    "metrics.k8s.io/v1beta1",
                    true,
                ),
                _ => return None,
            };
        Some(Listing {
            items,
            kind,
            api_version,
            namespaced,
        })
    }

    fn handle(&self, request: &Request) -> Response {
        if self.require_token {
            let expected = format!("Bearer {}", self.scenario.cluster.token);
            if request.header("authorization") != Some(expected.as_str()) {
                return status(401, "Unauthorized", "Unauthorized", None);
            }
        }
        if request.method != "GET" {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            );
        }
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["version"] => Response::json(200, k8s::version(&self.scenario)),
            ["healthz"] | ["readyz"] | ["livez"] => Response::text(200, "ok"),
            ["api"] => {
                let host = request.header("host").unwrap_or("127.0.0.1").to_owned();
                Response::json(200, k8s::api_versions(&host))
            }
            ["apis"] => Response::json(200, k8s::api_groups()),
            ["api", "v1"] => self.resources("v1"),
            ["apis", group, version] => self.resources(&format!("{group}/{version}")),
            ["api", "v1", resource] => self.list(request, "v1", None, resource),
            ["api", "v1", "namespaces", namespace, resource] => {
                self.list(request, "v1", Some(namespace), resource)
            }
            ["api", "v1", "nodes", name] => self.get(request, "v1", None, "nodes", name),
            ["api", "v1", "namespaces", namespace, "pods", name] => {
                self.get(request, "v1", Some(namespace), "pods", name)
            }
            ["api", "v1", "namespaces", namespace, "pods", name, "log"] => {
                self.log(request, namespace, name)
            }
            ["apis", group, version, resource] => {
                self.list(request, &format!("{group}/{version}"), None, resource)
            }
            ["apis", group, version, "namespaces", namespace, resource] => self.list(
                request,
                &format!("{group}/{version}"),
                Some(namespace),
                resource,
            ),
            [
                "apis",
                group,
                version,
                "namespaces",
                namespace,
                resource,
                name,
            ] => self.get(
                request,
                &format!("{group}/{version}"),
                Some(namespace),
                resource,
                name,
            ),
            _ => not_found_path(),
        }
    }

    fn resources(&self, group_version: &str) -> Response {
        match k8s::api_resources(group_version) {
            Some(list) => Response::json(200, &list),
            None => not_found_path(),
        }
    }

    fn list(
        &self,
        request: &Request,
        group_version: &str,
        namespace: Option<&str>,
        resource: &str,
    ) -> Response {
        let Some(listing) = self.listing(group_version, resource) else {
            return not_found_path();
        };
        if namespace.is_some() && !listing.namespaced {
            return not_found_path();
        }
        // Unknown namespaces list empty, as on a real server.
        let selector = label_selector(request.param("labelSelector"));
        let matching: Vec<&Value> = listing
            .items
            .iter()
            .filter(|item| namespace.is_none_or(|ns| item["metadata"]["namespace"] == ns))
            .filter(|item| {
                selector
                    .iter()
                    .all(|(key, value)| item["metadata"]["labels"][key.as_str()] == value.as_str())
            })
            .collect();

        let start = match request.param("continue") {
            None => 0,
            Some(token) => match decode_continue(token, resource) {
                Some(offset) if offset <= matching.len() => offset,
                _ => {
                    return status(
                        400,
                        "BadRequest",
                        "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                        None,
                    );
                }
            },
        };
        let limit = request
            .param("limit")
            .and_then(|limit| limit.parse::<usize>().ok())
            .filter(|limit| *limit > 0);
        let end = limit.map_or(matching.len(), |limit| (start + limit).min(matching.len()));
        let mut metadata = json!({ "resourceVersion": LIST_RESOURCE_VERSION });
        if end < matching.len() {
            metadata["continue"] = json!(encode_continue(end, resource));
            metadata["remainingItemCount"] = json!(matching.len() - end);
        }
        Response::json(
            200,
            json!({
                "kind": listing.kind,
                "apiVersion": listing.api_version,
                "metadata": metadata,
                "items": matching[start..end],
            }),
        )
    }

    fn get(
        &self,
        _request: &Request,
        group_version: &str,
        namespace: Option<&str>,
        resource: &str,
        name: &str,
    ) -> Response {
        let Some(listing) = self.listing(group_version, resource) else {
            return not_found_path();
        };
        let found = listing.items.iter().find(|item| {
            item["metadata"]["name"] == name
                && namespace.is_none_or(|ns| item["metadata"]["namespace"] == ns)
        });
        match found {
            Some(item) => {
                let mut item = item.clone();
                item["kind"] = json!(listing.kind.trim_end_matches("List"));
                item["apiVersion"] = json!(listing.api_version);
                Response::json(200, &item)
            }
            None => not_found(resource, name),
        }
    }

    fn log(&self, request: &Request, namespace: &str, pod_name: &str) -> Response {
        let Some(pod) = self.rendered.pods.iter().find(|pod| {
            pod["metadata"]["name"] == pod_name && pod["metadata"]["namespace"] == namespace
        }) else {
            return not_found("pods", pod_name);
        };
        let containers: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|container| container["name"].as_str())
            .collect();
        let init_containers: Vec<&str> = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|container| container["name"].as_str())
            .collect();
        let container = match request.param("container") {
            Some(container) => container,
            None if containers.len() == 1 => containers[0],
            None => {
                return status(
                    400,
                    "BadRequest",
                    &format!(
                        "a container name must be specified for pod {pod_name}, choose one of: {containers:?}"
                    ),
                    None,
                );
            }
        };
        if !containers.contains(&container) && !init_containers.contains(&container) {
            return status(
                400,
                "BadRequest",
                &format!("container {container} is not valid for pod {pod_name}"),
                None,
            );
        }
        let previous = request.param("previous") == Some("true");
        let Some(log) = self.rendered.logs.iter().find(|log: &&ContainerLog| {
            log.namespace == namespace
                && log.pod == pod_name
                && log.container == container
                && log.previous == previous
        }) else {
            let message = if previous {
                format!(
                    "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
                )
            } else {
                format!(
                    "container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating"
                )
            };
            return status(400, "BadRequest", &message, None);
        };

        let since = match request.param("sinceTime").map(DateTime::parse_from_rfc3339) {
            None => None,
            Some(Ok(since)) => Some(since.with_timezone(&Utc)),
            Some(Err(_)) => {
                return status(
                    400,
                    "BadRequest",
                    "sinceTime: Invalid value: must be RFC 3339",
                    None,
                );
            }
        };
        let since = since.or_else(|| {
            let seconds: i64 = request.param("sinceSeconds")?.parse().ok()?;
            Some(Utc::now() - chrono::Duration::seconds(seconds))
        });
        let timestamps = request.param("timestamps") == Some("true");
        let mut lines: Vec<&(DateTime<Utc>, String)> = log
            .lines
            .iter()
            .filter(|(ts, _)| since.is_none_or(|since| *ts >= since))
            .collect();
        if let Some(tail) = request
            .param("tailLines")
            .and_then(|tail| tail.parse::<usize>().ok())
        {
            lines.drain(..lines.len().saturating_sub(tail));
        }
        let mut body = String::new();
        for (ts, text) in lines {
            if timestamps {
                body.push_str(&k8s::log_timestamp(*ts));
                body.push(' ');
            }
            body.push_str(text);
            body.push('\n');
        }
        if let Some(limit) = request
            .param("limitBytes")
            .and_then(|limit| limit.parse::<usize>().ok())
        {
            let mut cut = limit.min(body.len());
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        Response::text(200, body)
    }
}

/// Equality terms of a label selector (`app=orders,tier==web`). Set-based terms are not
/// understood and select everything, so a caller relying on them sees too much rather
/// than too little.
fn label_selector(selector: Option<&str>) -> Vec<(String, String)> {
    let Some(selector) = selector else {
        return Vec::new();
    };
    let terms: Option<Vec<(String, String)>> = selector
        .split(',')
        .map(|term| {
            let (key, value) = term.split_once("==").or_else(|| term.split_once('='))?;
            (!key.ends_with('!')).then(|| (key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    terms.unwrap_or_default()
}

const LIST_RESOURCE_VERSION: &str = "482113";

fn encode_continue(offset: usize, resource: &str) -> String {
    let raw = format!(
        "{{\"v\":\"meta.k8s.io/v1\",\"rv\":{LIST_RESOURCE_VERSION},\"start\":\"{resource}/{offset}\"}}"
    );
    http::base64(raw.as_bytes())
}

fn decode_continue(token: &str, resource: &str) -> Option<usize> {
    let raw = String::from_utf8(http::base64_decode(token)?).ok()?;
    let start: serde_json::Value = serde_json::from_str(&raw).ok()?;
    let (named, offset) = start["start"].as_str()?.rsplit_once('/')?;
    (named == resource).then(|| offset.parse().ok()).flatten()
}

fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    Response::json(code, k8s::status(code, reason, message, details))
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        Some(json!({ "name": name, "kind": resource })),
    )
}

fn not_found_path() -> Response {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_keep_equality_terms_only() {
        let terms = label_selector(Some("app=orders,tier==web"));
        assert_eq!(
            terms,
            [
                ("app".into(), "orders".into()),
                ("tier".into(), "web".into())
            ]
        );
        assert!(label_selector(Some("app!=orders")).is_empty());
        assert!(label_selector(Some("app in (a,b)")).is_empty());
        assert!(label_selector(None).is_empty());
    }

    #[test]
    fn continue_tokens_round_trip_and_name_their_resource() {
        let token = encode_continue(7, "pods");
        assert_eq!(decode_continue(&token, "pods"), Some(7));
        assert_eq!(decode_continue(&token, "events"), None);
        assert_eq!(decode_continue("bogus", "pods"), None);
    }
}
