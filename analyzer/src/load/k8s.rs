//! Kubernetes objects → deployments, rollouts (one per ReplicaSet revision), pod
//! containers and events.
//!
//! Objects are read as plain JSON rather than typed API structs: only a handful of fields
//! matter, and a field the analyzer does not know must never fail a whole object.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use polars::prelude::*;
use serde_json::Value;

use super::{column_texts, column_times, parse_time, times_column};

const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";

#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// The metric `service` label this deployment answers to.
    pub(crate) service: String,
}

/// One container of a pod template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerSpec {
    pub(crate) name: String,
    pub(crate) init: bool,
    pub(crate) image: Option<String>,
    pub(crate) limits: BTreeMap<String, String>,
    pub(crate) requests: BTreeMap<String, String>,
    pub(crate) env_names: BTreeSet<String>,
}

/// One revision of a Deployment, as its ReplicaSet records it.
#[derive(Debug, Clone)]
pub(crate) struct Rollout {
    pub(crate) namespace: String,
    pub(crate) deployment: String,
    pub(crate) revision: i64,
    pub(crate) replicaset: String,
    /// First `ScalingReplicaSet` scale-up of this ReplicaSet, else its creation.
    pub(crate) started: Option<DateTime<Utc>>,
    pub(crate) desired_replicas: Option<i64>,
    /// The metric `service` label, from the template's labels.
    pub(crate) service: String,
    pub(crate) containers: Vec<ContainerSpec>,
}

impl Rollout {
    pub(crate) fn main_image(&self) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| !c.init)
            .and_then(|c| c.image.as_deref())
    }
}

/// One container (or init container) of a pod with its last known status.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodContainer {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) container: String,
    pub(crate) init: bool,
    pub(crate) node: Option<String>,
    pub(crate) service: String,
    pub(crate) deployment: Option<String>,
    pub(crate) restarts: Option<i32>,
    pub(crate) ready: Option<bool>,
    pub(crate) memory_limit: Option<String>,
    pub(crate) current: Option<Termination>,
    pub(crate) last: Option<Termination>,
}

/// A `terminated` container state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Termination {
    pub(crate) reason: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) finished: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub(crate) ts: Option<DateTime<Utc>>,
    pub(crate) namespace: String,
    pub(crate) kind: String,
    pub(crate) object: String,
    pub(crate) reason: String,
    /// `Normal` or `Warning`.
    pub(crate) event_type: Option<String>,
    pub(crate) message: String,
    pub(crate) count: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Cluster {
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) rollouts: Vec<Rollout>,
    pub(crate) pods: Vec<PodContainer>,
    pub(crate) events: Vec<EventRow>,
}

impl Cluster {
    pub(crate) fn from_objects(objects: &BTreeMap<String, Vec<Value>>) -> Self {
        let empty = Vec::new();
        let get = |name: &str| objects.get(name).unwrap_or(&empty);

        let events = events(get("events"), get("events.k8s.io"));
        let deployments: Vec<Deployment> =
            get("deployments").iter().filter_map(deployment).collect();
        let mut rollouts: Vec<Rollout> = get("replicasets")
            .iter()
            .filter_map(|rs| rollout(rs, &events))
            .collect();
        rollouts.sort_by(|a, b| {
            (&a.namespace, &a.deployment, a.revision).cmp(&(
                &b.namespace,
                &b.deployment,
                b.revision,
            ))
        });

        let owners: BTreeMap<(String, String), String> = rollouts
            .iter()
            .map(|r| {
                (
                    (r.namespace.clone(), r.replicaset.clone()),
                    r.deployment.clone(),
                )
            })
            .collect();
        let services: BTreeMap<(String, String), String> = deployments
            .iter()
            .map(|d| ((d.namespace.clone(), d.name.clone()), d.service.clone()))
            .collect();
        let mut pods: Vec<PodContainer> = get("pods")
            .iter()
            .flat_map(|p| pod_containers(p, &owners, &services))
            .collect();
        pods.sort_by(|a, b| {
            (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
        });

        Cluster {
            deployments,
            rollouts,
            pods,
            events,
        }
    }
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn time(value: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(parse_time)
}

/// The service name metrics use: the `app` label, then `app.kubernetes.io/name`, then the
/// object's own name.
pub(crate) fn service_name(labels: Option<&Value>, fallback: &str) -> String {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    label("app")
        .or_else(|| label("app.kubernetes.io/name"))
        .unwrap_or(fallback)
        .to_owned()
}

fn deployment(object: &Value) -> Option<Deployment> {
    let name = text(object, "/metadata/name")?;
    let namespace = text(object, "/metadata/namespace").unwrap_or_else(|| "default".into());
    let service = service_name(object.pointer("/spec/template/metadata/labels"), &name);
    Some(Deployment {
        namespace,
        name,
        service,
    })
}

fn owner(object: &Value, kind: &str) -> Option<String> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
        .and_then(|o| o.get("name").and_then(Value::as_str))
        .map(str::to_owned)
}

fn rollout(object: &Value, events: &[EventRow]) -> Option<Rollout> {
    let deployment = owner(object, "Deployment")?;
    let annotations = object.pointer("/metadata/annotations");
    let revision = annotations?
        .get(REVISION_ANNOTATION)?
        .as_str()?
        .parse()
        .ok()?;
    let replicaset = text(object, "/metadata/name")?;
    let namespace = text(object, "/metadata/namespace").unwrap_or_else(|| "default".into());
    let created = time(object, "/metadata/creationTimestamp");
    let scaled_up = format!("Scaled up replica set {replicaset} ");
    let started = events
        .iter()
        .filter(|e| {
            e.reason == "ScalingReplicaSet"
                && e.kind == "Deployment"
                && e.object == deployment
                && e.namespace == namespace
                && e.message.starts_with(&scaled_up)
        })
        .filter_map(|e| e.ts)
        .min()
        .or(created);
    let desired_replicas = annotations
        .and_then(|a| a.get(DESIRED_REPLICAS_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok());
    Some(Rollout {
        service: service_name(
            object.pointer("/spec/template/metadata/labels"),
            &deployment,
        ),
        containers: template_containers(object.pointer("/spec/template/spec")),
        namespace,
        deployment,
        revision,
        replicaset,
        started,
        desired_replicas,
    })
}

fn template_containers(spec: Option<&Value>) -> Vec<ContainerSpec> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (field, init) in [("initContainers", true), ("containers", false)] {
        let list = spec.get(field).and_then(Value::as_array);
        for container in list.into_iter().flatten() {
            let Some(name) = text(container, "/name") else {
                continue;
            };
            out.push(ContainerSpec {
                name,
                init,
                image: text(container, "/image"),
                limits: string_map(container.pointer("/resources/limits")),
                requests: string_map(container.pointer("/resources/requests")),
                env_names: container
                    .get("env")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("name").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect(),
            });
        }
    }
    out
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let rendered = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (k.clone(), rendered)
        })
        .collect()
}

fn termination(state: Option<&Value>) -> Option<Termination> {
    let terminated = state?.get("terminated")?;
    Some(Termination {
        reason: text(terminated, "/reason"),
        exit_code: terminated
            .get("exitCode")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok()),
        finished: time(terminated, "/finishedAt"),
    })
}

fn pod_containers(
    pod: &Value,
    owners: &BTreeMap<(String, String), String>,
    services: &BTreeMap<(String, String), String>,
) -> Vec<PodContainer> {
    let Some(name) = text(pod, "/metadata/name") else {
        return Vec::new();
    };
    let namespace = text(pod, "/metadata/namespace").unwrap_or_else(|| "default".into());
    let replicaset = owner(pod, "ReplicaSet");
    let deployment = replicaset
        .as_ref()
        .and_then(|rs| owners.get(&(namespace.clone(), rs.clone())).cloned());
    let labels = pod.pointer("/metadata/labels");
    let has_app_label =
        labels.is_some_and(|l| l.get("app").is_some() || l.get("app.kubernetes.io/name").is_some());
    let service = if has_app_label {
        service_name(labels, &name)
    } else if let Some(deployment) = &deployment {
        services
            .get(&(namespace.clone(), deployment.clone()))
            .cloned()
            .unwrap_or_else(|| deployment.clone())
    } else {
        name.clone()
    };
    let node = text(pod, "/spec/nodeName");
    let specs = template_containers(pod.get("spec"));

    let mut out = Vec::new();
    for (field, init) in [
        ("initContainerStatuses", true),
        ("containerStatuses", false),
    ] {
        let statuses = pod
            .pointer(&format!("/status/{field}"))
            .and_then(Value::as_array);
        for status in statuses.into_iter().flatten() {
            let Some(container) = text(status, "/name") else {
                continue;
            };
            let memory_limit = specs
                .iter()
                .find(|s| s.name == container && s.init == init)
                .and_then(|s| s.limits.get("memory").cloned());
            out.push(PodContainer {
                namespace: namespace.clone(),
                pod: name.clone(),
                init,
                node: node.clone(),
                service: service.clone(),
                deployment: deployment.clone(),
                restarts: status
                    .get("restartCount")
                    .and_then(Value::as_i64)
                    .and_then(|c| i32::try_from(c).ok()),
                ready: status.get("ready").and_then(Value::as_bool),
                memory_limit,
                current: termination(status.get("state")),
                last: termination(status.get("lastState")),
                container,
            });
        }
    }
    out
}

/// The `events` table, sorted by namespace, kind, object and time; the sort is stable, so
/// events of one object at one time keep their order. Kubernetes renders event times to
/// the microsecond at most, and that is the column's unit.
pub(crate) fn events_frame(mut events: Vec<EventRow>) -> DataFrame {
    events.sort_by(|a, b| {
        (&a.namespace, &a.kind, &a.object, a.ts).cmp(&(&b.namespace, &b.kind, &b.object, b.ts))
    });

    let texts = |field: fn(&EventRow) -> Option<&str>| events.iter().map(field).collect::<Vec<_>>();
    DataFrame::new_infer_height(vec![
        times_column(
            "ts",
            TimeUnit::Microseconds,
            events
                .iter()
                .map(|e| e.ts.map(|t| t.timestamp_micros()))
                .collect(),
        ),
        Column::new("namespace".into(), texts(|e| Some(&e.namespace))),
        Column::new("kind".into(), texts(|e| Some(&e.kind))),
        Column::new("object".into(), texts(|e| Some(&e.object))),
        Column::new("reason".into(), texts(|e| Some(&e.reason))),
        Column::new("type".into(), texts(|e| e.event_type.as_deref())),
        Column::new("message".into(), texts(|e| Some(&e.message))),
        Column::new(
            "count".into(),
            events.iter().map(|e| e.count).collect::<Vec<_>>(),
        ),
    ])
    .expect("columns have equal length")
}

/// Reads rows of a table shaped like `events` back, in its order.
pub(crate) fn event_rows(frame: &DataFrame) -> PolarsResult<Vec<EventRow>> {
    let ts = column_times(frame, "ts")?;
    let text = |name: &str| column_texts(frame, name);
    let (namespace, kind, object) = (text("namespace")?, text("kind")?, text("object")?);
    let (reason, event_type, message) = (text("reason")?, text("type")?, text("message")?);
    let count = frame.column("count")?.i64()?;
    Ok((0..frame.height())
        .map(|i| EventRow {
            ts: ts[i],
            namespace: namespace[i].clone().unwrap_or_default(),
            kind: kind[i].clone().unwrap_or_default(),
            object: object[i].clone().unwrap_or_default(),
            reason: reason[i].clone().unwrap_or_default(),
            event_type: event_type[i].clone(),
            message: message[i].clone().unwrap_or_default(),
            count: count.get(i).unwrap_or_default(),
        })
        .collect())
}

/// Merges core/v1 and events.k8s.io/v1 events. Both APIs serve the same stored objects,
/// so rows are deduplicated by uid; an event without a uid is kept as it is.
fn events(core: &[Value], v1: &[Value]) -> Vec<EventRow> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for object in core {
        if let Some(uid) = text(object, "/metadata/uid") {
            seen.insert(uid);
        }
        out.push(EventRow {
            ts: time(object, "/firstTimestamp")
                .or_else(|| time(object, "/eventTime"))
                .or_else(|| time(object, "/lastTimestamp")),
            namespace: text(object, "/metadata/namespace")
                .or_else(|| text(object, "/involvedObject/namespace"))
                .unwrap_or_default(),
            kind: text(object, "/involvedObject/kind").unwrap_or_default(),
            object: text(object, "/involvedObject/name").unwrap_or_default(),
            reason: text(object, "/reason").unwrap_or_default(),
            event_type: text(object, "/type"),
            message: text(object, "/message").unwrap_or_default(),
            count: object.get("count").and_then(Value::as_i64).unwrap_or(1),
        });
    }
    for object in v1 {
        if text(object, "/metadata/uid").is_some_and(|uid| seen.contains(&uid)) {
            continue;
        }
        out.push(EventRow {
            ts: time(object, "/eventTime")
                .or_else(|| time(object, "/deprecatedFirstTimestamp"))
                .or_else(|| time(object, "/deprecatedLastTimestamp")),
            namespace: text(object, "/metadata/namespace")
                .or_else(|| text(object, "/regarding/namespace"))
                .unwrap_or_default(),
            kind: text(object, "/regarding/kind").unwrap_or_default(),
            object: text(object, "/regarding/name").unwrap_or_default(),
            reason: text(object, "/reason").unwrap_or_default(),
            event_type: text(object, "/type"),
            message: text(object, "/note").unwrap_or_default(),
            count: object
                .pointer("/series/count")
                .and_then(Value::as_i64)
                .or_else(|| object.get("deprecatedCount").and_then(Value::as_i64))
                .unwrap_or(1),
        });
    }
    out.sort_by_key(|e| e.ts);
    out
}

/// What a field the analyzer reads must hold.
#[derive(Debug, Clone, Copy)]
enum Expected {
    Text,
    Integer,
    Bool,
    Time,
    /// A string holding an integer, as annotations hold revisions.
    IntegerText,
}

impl Expected {
    fn holds(self, value: &Value) -> bool {
        match self {
            Expected::Text => value.is_string(),
            Expected::Integer => value.is_i64(),
            Expected::Bool => value.is_boolean(),
            Expected::Time => value.as_str().and_then(parse_time).is_some(),
            Expected::IntegerText => value.as_str().is_some_and(|t| t.parse::<i64>().is_ok()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Expected::Text => "a string",
            Expected::Integer => "an integer",
            Expected::Bool => "a boolean",
            Expected::Time => "an RFC 3339 time",
            Expected::IntegerText => "a string holding an integer",
        }
    }
}

/// The fields of one object that the analyzer reads but that hold the wrong type, as
/// `(field, message)`. Reading skips such a field as if it were absent, which would
/// quietly change a finding (no restart count, a rollout timed by its creation instead
/// of its scale-up); this says so. `null` is absence, never wrong.
pub(crate) fn field_problems(resource: &str, object: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut check = |field: String, value: Option<&Value>, expected: Expected| {
        if let Some(value) = value.filter(|v| !v.is_null())
            && !expected.holds(value)
        {
            let mut found = value.to_string();
            if found.len() > 60 {
                let cut = (0..=60)
                    .rev()
                    .find(|&i| found.is_char_boundary(i))
                    .unwrap_or(0);
                found.truncate(cut);
                found.push('…');
            }
            out.push((
                field,
                format!(
                    "expected {}, found {found}; the field is ignored",
                    expected.name()
                ),
            ));
        }
    };
    check(
        "metadata.name".into(),
        object.pointer("/metadata/name"),
        Expected::Text,
    );
    check(
        "metadata.namespace".into(),
        object.pointer("/metadata/namespace"),
        Expected::Text,
    );
    check(
        "metadata.creationTimestamp".into(),
        object.pointer("/metadata/creationTimestamp"),
        Expected::Time,
    );
    match resource {
        "pods" => {
            check(
                "spec.nodeName".into(),
                object.pointer("/spec/nodeName"),
                Expected::Text,
            );
            for list in ["initContainerStatuses", "containerStatuses"] {
                let statuses = object
                    .pointer(&format!("/status/{list}"))
                    .and_then(Value::as_array);
                for (index, status) in statuses.into_iter().flatten().enumerate() {
                    let at = format!("status.{list}[{index}]");
                    check(format!("{at}.name"), status.get("name"), Expected::Text);
                    check(
                        format!("{at}.restartCount"),
                        status.get("restartCount"),
                        Expected::Integer,
                    );
                    check(format!("{at}.ready"), status.get("ready"), Expected::Bool);
                    for state in ["state", "lastState"] {
                        let Some(terminated) = status.pointer(&format!("/{state}/terminated"))
                        else {
                            continue;
                        };
                        let at = format!("{at}.{state}.terminated");
                        check(
                            format!("{at}.reason"),
                            terminated.get("reason"),
                            Expected::Text,
                        );
                        check(
                            format!("{at}.exitCode"),
                            terminated.get("exitCode"),
                            Expected::Integer,
                        );
                        check(
                            format!("{at}.finishedAt"),
                            terminated.get("finishedAt"),
                            Expected::Time,
                        );
                    }
                }
            }
        }
        "replicasets" => check(
            format!("metadata.annotations.{REVISION_ANNOTATION}"),
            object
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(REVISION_ANNOTATION)),
            Expected::IntegerText,
        ),
        "events" => {
            for field in ["firstTimestamp", "lastTimestamp", "eventTime"] {
                check(field.into(), object.get(field), Expected::Time);
            }
            check("count".into(), object.get("count"), Expected::Integer);
        }
        "events.k8s.io" => {
            for field in [
                "eventTime",
                "deprecatedFirstTimestamp",
                "deprecatedLastTimestamp",
            ] {
                check(field.into(), object.get(field), Expected::Time);
            }
            check(
                "series.count".into(),
                object.pointer("/series/count"),
                Expected::Integer,
            );
            check(
                "deprecatedCount".into(),
                object.get("deprecatedCount"),
                Expected::Integer,
            );
        }
        _ => {}
    }
    out
}

/// Parses a Kubernetes memory quantity (`256Mi`, `1G`, `134217728`, `1.5Gi`) into bytes.
pub(crate) fn quantity_bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "m" => 1e-3,
        _ => return None,
    };
    let bytes = (number * scale).ceil();
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_parse_to_bytes() {
        let cases = [
            ("256Mi", Some(268_435_456)),
            ("512Mi", Some(536_870_912)),
            ("1Gi", Some(1_073_741_824)),
            ("1.5Gi", Some(1_610_612_736)),
            ("128M", Some(128_000_000)),
            ("1000", Some(1000)),
            ("12Qi", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(quantity_bytes(text), want, "{text}");
        }
    }

    #[test]
    fn service_prefers_app_then_kubernetes_name_then_own_name() {
        let both = serde_json::json!({"app": "a", "app.kubernetes.io/name": "b"});
        let only_k8s = serde_json::json!({"app.kubernetes.io/name": "b"});
        assert_eq!(service_name(Some(&both), "x"), "a");
        assert_eq!(service_name(Some(&only_k8s), "x"), "b");
        assert_eq!(service_name(None, "x"), "x");
    }
}
