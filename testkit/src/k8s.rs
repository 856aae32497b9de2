//! The scenario rendered as the Kubernetes API server would answer: objects, events,
//! discovery documents and container logs, with times relative to an anchor.
//!
//! Objects are shaped after what a 1.32 API server returns (kubectl's dry-run output for
//! the spec, plus the status the controllers and the kubelet fill in). List items carry
//! no `apiVersion`/`kind`, as in real list responses.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::scenario::{
    self, Deployment, PodPlan, ROLLOUT_HANDOVER_SECS, Revision, Scenario, at, noise,
    replicaset_name, template_hash,
};

/// Events older than this are gone, as with the API server's default event TTL.
pub const EVENT_TTL_SECS: i64 = 3600;

/// Everything the replay serves, rendered once for one anchor.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub deployments: Vec<Value>,
    pub replicasets: Vec<Value>,
    pub pods: Vec<Value>,
    pub events: Vec<Value>,
    pub events_v1: Vec<Value>,
    pub nodes: Vec<Value>,
    pub pod_metrics: Vec<Value>,
    pub logs: Vec<ContainerLog>,
}

/// One container instance's log, lines in time order.
#[derive(Debug, Clone)]
pub struct ContainerLog {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub previous: bool,
    pub lines: Vec<(DateTime<Utc>, String)>,
}

struct Ctx<'a> {
    scenario: &'a Scenario,
    anchor: DateTime<Utc>,
}

impl Ctx<'_> {
    fn ts(&self, offset: i64) -> String {
        at(self.anchor, offset).to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn ns(&self) -> &str {
        &self.scenario.cluster.namespace
    }
}

/// A stable UUID-shaped id for an object, derived from its kind and name.
pub fn uid(key: &str) -> String {
    let a = scenario::splitmix64(scenario::fnv1a(key.as_bytes()));
    let b = scenario::splitmix64(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn hex64(key: &str) -> String {
    let mut state = scenario::fnv1a(key.as_bytes());
    (0..4)
        .map(|_| {
            state = scenario::splitmix64(state);
            format!("{state:016x}")
        })
        .collect()
}

fn resource_version(key: &str) -> String {
    (scenario::fnv1a(key.as_bytes()) % 900_000 + 100_000).to_string()
}

pub fn render(scenario: &Scenario, anchor: DateTime<Utc>) -> Rendered {
    let ctx = Ctx { scenario, anchor };
    let pods = scenario.pods();
    let running: Vec<&PodPlan> = pods.iter().filter(|pod| pod.is_running()).collect();

    let mut deployments = Vec::new();
    let mut replicasets = Vec::new();
    for deployment in &scenario.deployments {
        deployments.push(deployment_object(&ctx, deployment));
        for revision in &deployment.revisions {
            replicasets.push(replicaset_object(&ctx, deployment, revision));
        }
    }
    let events = event_plans(&ctx, &running);
    Rendered {
        deployments,
        replicasets,
        pods: running.iter().map(|pod| pod_object(&ctx, pod)).collect(),
        events_v1: events.iter().map(|event| event_v1(&ctx, event)).collect(),
        events: events.iter().map(|event| event_core(&ctx, event)).collect(),
        nodes: vec![node_object(&ctx)],
        pod_metrics: running.iter().map(|pod| pod_metrics(&ctx, pod)).collect(),
        logs: running
            .iter()
            .flat_map(|pod| container_logs(&ctx, pod))
            .collect(),
    }
}

fn labels(deployment: &Deployment) -> Value {
    json!({ "app": deployment.name })
}

fn env(revision: &Revision) -> Value {
    revision
        .env
        .iter()
        .map(|var| match (&var.value, &var.secret_ref) {
            (_, Some(reference)) => {
                let (name, key) = reference.split_once('/').unwrap_or((reference, "value"));
                let reference = json!({ "secretKeyRef": { "name": name, "key": key } });
                json!({ "name": var.name, "valueFrom": reference })
            }
            (value, None) => {
                json!({ "name": var.name, "value": value.clone().unwrap_or_default() })
            }
        })
        .collect()
}

fn container_spec(deployment: &Deployment, revision: &Revision) -> Value {
    let resources = &revision.resources;
    json!({
        "name": deployment.name,
        "image": revision.image,
        "ports": [{ "name": "http", "containerPort": deployment.port, "protocol": "TCP" }],
        "env": env(revision),
        "resources": {
            "limits": { "cpu": resources.cpu_limit, "memory": resources.memory_limit.text },
            "requests": { "cpu": resources.cpu_request, "memory": resources.memory_request.text },
        },
        "readinessProbe": {
            "httpGet": { "path": "/healthz", "port": "http", "scheme": "HTTP" },
            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    })
}

fn init_container_spec(deployment: &Deployment, revision: &Revision) -> Option<Value> {
    let init = deployment.init_container.as_ref()?;
    Some(json!({
        "name": init.name,
        "image": revision.image,
        "args": init.args,
        "env": env(revision),
        "resources": {
            "limits": { "cpu": "500m", "memory": "128Mi" },
            "requests": { "cpu": "100m", "memory": "64Mi" },
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }))
}

fn pod_template(deployment: &Deployment, revision: &Revision, hash: Option<&str>) -> Value {
    let mut template_labels = labels(deployment);
    if let Some(hash) = hash {
        template_labels["pod-template-hash"] = json!(hash);
    }
    let mut spec = json!({
        "containers": [container_spec(deployment, revision)],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": deployment.name,
        "securityContext": {},
        "schedulerName": "default-scheduler",
    });
    if let Some(init) = init_container_spec(deployment, revision) {
        spec["initContainers"] = json!([init]);
    }
    json!({ "metadata": { "labels": template_labels }, "spec": spec })
}

fn deployment_object(ctx: &Ctx, deployment: &Deployment) -> Value {
    let current = deployment.current();
    let rs = replicaset_name(deployment, current);
    let generation = deployment.revisions.len() as i64 + 1;
    let replicas = deployment.replicas;
    // Ready once the last pod's container has started and passed its probe.
    let available_since = current.created.0 + scenario::POD_STARTUP_SECS + 12;
    json!({
        "metadata": {
            "name": deployment.name,
            "namespace": ctx.ns(),
            "uid": uid(&format!("deployment/{}", deployment.name)),
            "resourceVersion": resource_version(&format!("deployment/{}", deployment.name)),
            "generation": generation,
            "creationTimestamp": ctx.ts(deployment.created.0),
            "labels": labels(deployment),
            "annotations": { "deployment.kubernetes.io/revision": current.number.to_string() },
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": labels(deployment) },
            "template": pod_template(deployment, current, None),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" },
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {
                    "type": "Available", "status": "True",
                    "lastUpdateTime": ctx.ts(available_since),
                    "lastTransitionTime": ctx.ts(available_since),
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                },
                {
                    "type": "Progressing", "status": "True",
                    "lastUpdateTime": ctx.ts(available_since),
                    "lastTransitionTime": ctx.ts(deployment.created.0),
                    "reason": "NewReplicaSetAvailable",
                    "message": format!("ReplicaSet \"{rs}\" has successfully progressed."),
                },
            ],
        },
    })
}

fn replicaset_object(ctx: &Ctx, deployment: &Deployment, revision: &Revision) -> Value {
    let name = replicaset_name(deployment, revision);
    let hash = template_hash(deployment, revision);
    let is_current = revision.number == deployment.current().number;
    let replicas = if is_current { deployment.replicas } else { 0 };
    let mut selector = labels(deployment);
    selector["pod-template-hash"] = json!(hash);
    let mut status = json!({
        "replicas": replicas,
        "fullyLabeledReplicas": replicas,
        "observedGeneration": 2,
    });
    if is_current {
        status["readyReplicas"] = json!(replicas);
        status["availableReplicas"] = json!(replicas);
    }
    json!({
        "metadata": {
            "name": name,
            "namespace": ctx.ns(),
            "uid": uid(&format!("replicaset/{name}")),
            "resourceVersion": resource_version(&format!("replicaset/{name}")),
            "generation": 2,
            "creationTimestamp": ctx.ts(revision.created.0),
            "labels": selector,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": deployment.replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": (deployment.replicas + 1).to_string(),
                "deployment.kubernetes.io/revision": revision.number.to_string(),
            },
            "ownerReferences": [owner("apps/v1", "Deployment", &deployment.name,
                &uid(&format!("deployment/{}", deployment.name)))],
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector },
            "template": pod_template(deployment, revision, Some(&hash)),
        },
        "status": status,
    })
}

fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true,
    })
}

fn container_id(pod: &str, container: &str, instance: usize) -> String {
    format!(
        "containerd://{}",
        hex64(&format!("{pod}/{container}/{instance}"))
    )
}

fn image_id(image: &str) -> String {
    let repository = image
        .rsplit_once(':')
        .map_or(image, |(repository, _)| repository);
    format!("{repository}@sha256:{}", hex64(image))
}

fn pod_object(ctx: &Ctx, pod: &PodPlan) -> Value {
    let deployment = &ctx.scenario.deployments[pod.deployment];
    let revision = &deployment.revisions[pod.revision];
    let rs = replicaset_name(deployment, revision);
    let hash = template_hash(deployment, revision);
    let current = pod.current();
    let ready_at = current.started + 12;
    let mut template = pod_template(deployment, revision, Some(&hash));
    let mut spec = template["spec"].take();
    spec["nodeName"] = json!(ctx.scenario.cluster.node);
    spec["priority"] = json!(0);
    spec["enableServiceLinks"] = json!(true);
    // The admission plugin adds these two to every pod.
    let toleration = |key: &str| json!({ "key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 });
    spec["tolerations"] = json!([
        toleration("node.kubernetes.io/not-ready"),
        toleration("node.kubernetes.io/unreachable"),
    ]);

    let condition = |kind: &str, since: i64| {
        json!({
            "type": kind, "status": "True", "lastProbeTime": null,
            "lastTransitionTime": ctx.ts(since),
        })
    };
    let state = json!({ "running": { "startedAt": ctx.ts(current.started) } });
    let mut last_state = json!({});
    if let Some(previous) = pod.previous() {
        let finished = previous.finished.expect("a previous instance has ended");
        last_state = json!({ "terminated": {
            "exitCode": if previous.oom_killed { 137 } else { 0 },
            "reason": if previous.oom_killed { "OOMKilled" } else { "Completed" },
            "startedAt": ctx.ts(previous.started),
            "finishedAt": ctx.ts(finished),
            "containerID": container_id(&pod.name, &deployment.name, pod.instances.len() - 2),
        }});
    }
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers", pod.created + 3),
            condition("Initialized", pod.created + 6),
            condition("Ready", ready_at),
            condition("ContainersReady", ready_at),
            condition("PodScheduled", pod.created),
        ],
        "hostIP": "192.0.2.10",
        "hostIPs": [{ "ip": "192.0.2.10" }],
        "podIP": pod_ip(&pod.name),
        "podIPs": [{ "ip": pod_ip(&pod.name) }],
        "startTime": ctx.ts(pod.created),
        "containerStatuses": [{
            "name": deployment.name,
            "state": state,
            "lastState": last_state,
            "ready": true,
            "restartCount": pod.restart_count(),
            "image": revision.image,
            "imageID": image_id(&revision.image),
            "containerID": container_id(&pod.name, &deployment.name, pod.instances.len() - 1),
            "started": true,
        }],
        "qosClass": "Burstable",
    });
    if let Some(init) = &deployment.init_container {
        status["initContainerStatuses"] = json!([{
            "name": init.name,
            "state": { "terminated": {
                "exitCode": 0, "reason": "Completed",
                "startedAt": ctx.ts(pod.created + 3), "finishedAt": ctx.ts(pod.created + 6),
                "containerID": container_id(&pod.name, &init.name, 0),
            }},
            "lastState": {},
            "ready": true,
            "restartCount": 0,
            "image": revision.image,
            "imageID": image_id(&revision.image),
            "containerID": container_id(&pod.name, &init.name, 0),
            "started": false,
        }]);
    }
    let mut labels = labels(deployment);
    labels["pod-template-hash"] = json!(hash);
    json!({
        "metadata": {
            "name": pod.name,
            "generateName": format!("{rs}-"),
            "namespace": ctx.ns(),
            "uid": uid(&format!("pod/{}", pod.name)),
            "resourceVersion": resource_version(&format!("pod/{}", pod.name)),
            "creationTimestamp": ctx.ts(pod.created),
            "labels": labels,
            "ownerReferences": [
                owner("apps/v1", "ReplicaSet", &rs, &uid(&format!("replicaset/{rs}"))),
            ],
        },
        "spec": spec,
        "status": status,
    })
}

fn pod_ip(pod: &str) -> String {
    format!("198.51.100.{}", scenario::fnv1a(pod.as_bytes()) % 200 + 20)
}

fn node_object(ctx: &Ctx) -> Value {
    let node = &ctx.scenario.cluster.node;
    let since = ctx.ts(-40 * 86400);
    let heartbeat = ctx.ts(-20);
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since, "reason": reason, "message": message,
        })
    };
    json!({
        "metadata": {
            "name": node,
            "uid": uid(&format!("node/{node}")),
            "resourceVersion": resource_version(&format!("node/{node}")),
            "creationTimestamp": since,
            "labels": {
                "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": node, "node.kubernetes.io/instance-type": "standard-4",
            },
        },
        "spec": { "podCIDR": "198.51.100.0/24", "podCIDRs": ["198.51.100.0/24"] },
        "status": {
            "capacity": {
                "cpu": "4", "memory": "16374256Ki", "pods": "110",
                "ephemeral-storage": "101430960Ki",
            },
            "allocatable": {
                "cpu": "3920m", "memory": "15223280Ki", "pods": "110",
                "ephemeral-storage": "93478772582",
            },
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                { "type": "InternalIP", "address": "192.0.2.10" },
                { "type": "Hostname", "address": node },
            ],
            "nodeInfo": {
                "kubeletVersion": ctx.scenario.cluster.kubernetes_version,
                "kubeProxyVersion": ctx.scenario.cluster.kubernetes_version,
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "6.1.0-28-cloud-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    })
}

fn pod_metrics(ctx: &Ctx, pod: &PodPlan) -> Value {
    let deployment = &ctx.scenario.deployments[pod.deployment];
    let working_set = ctx.scenario.working_set_at(pod, -15);
    let cores = deployment.cpu_cores * (1.0 + 0.1 * noise(ctx.scenario.history.seed, &pod.name, 1));
    json!({
        "metadata": {
            "name": pod.name,
            "namespace": ctx.ns(),
            "creationTimestamp": ctx.ts(0),
            "labels": {
                "app": deployment.name,
                "pod-template-hash": template_hash(deployment, &deployment.revisions[pod.revision]),
            },
        },
        "timestamp": ctx.ts(-15),
        "window": "15.004s",
        "containers": [{
            "name": deployment.name,
            "usage": {
                "cpu": format!("{}n", (cores * 1e9) as u64),
                "memory": format!("{}Ki", working_set / 1024),
            },
        }],
    })
}

/// An event as the recorder keeps it: one row per object and reason, with a count.
struct EventPlan {
    kind: &'static str,
    api_version: &'static str,
    object: String,
    field_path: Option<String>,
    reason: &'static str,
    message: String,
    warning: bool,
    first: i64,
    last: i64,
    count: usize,
    component: &'static str,
}

fn event_plans(ctx: &Ctx, running: &[&PodPlan]) -> Vec<EventPlan> {
    let mut events = Vec::new();
    for deployment in &ctx.scenario.deployments {
        for pair in deployment.revisions.windows(2) {
            let (old, new) = (&pair[0], &pair[1]);
            let replicas = deployment.replicas;
            let scaled = |reason_offset: i64, message: String| EventPlan {
                kind: "Deployment",
                api_version: "apps/v1",
                object: deployment.name.clone(),
                field_path: None,
                reason: "ScalingReplicaSet",
                message,
                warning: false,
                first: new.created.0 + reason_offset,
                last: new.created.0 + reason_offset,
                count: 1,
                component: "deployment-controller",
            };
            events.push(scaled(
                0,
                format!(
                    "Scaled up replica set {} to {replicas} from 0",
                    replicaset_name(deployment, new)
                ),
            ));
            events.push(scaled(
                ROLLOUT_HANDOVER_SECS,
                format!(
                    "Scaled down replica set {} to 0 from {replicas}",
                    replicaset_name(deployment, old)
                ),
            ));
        }
    }
    for pod in running {
        let deployment = &ctx.scenario.deployments[pod.deployment];
        let revision = &deployment.revisions[pod.revision];
        let kubelet = |reason: &'static str,
                       container: &str,
                       message: String,
                       first: i64,
                       last: i64,
                       count: usize,
                       warning: bool| EventPlan {
            kind: "Pod",
            api_version: "v1",
            object: pod.name.clone(),
            field_path: Some(format!("spec.containers{{{container}}}")),
            reason,
            message,
            warning,
            first,
            last,
            count,
            component: "kubelet",
        };
        events.push(EventPlan {
            kind: "Pod",
            api_version: "v1",
            object: pod.name.clone(),
            field_path: None,
            reason: "Scheduled",
            message: format!(
                "Successfully assigned {}/{} to {}",
                ctx.ns(),
                pod.name,
                ctx.scenario.cluster.node
            ),
            warning: false,
            first: pod.created,
            last: pod.created,
            count: 1,
            component: "default-scheduler",
        });
        if let Some(init) = &deployment.init_container {
            let mut pulled = kubelet(
                "Pulled",
                &init.name,
                format!(
                    "Container image \"{}\" already present on machine",
                    revision.image
                ),
                pod.created + 2,
                pod.created + 2,
                1,
                false,
            );
            pulled.field_path = Some(format!("spec.initContainers{{{}}}", init.name));
            events.push(pulled);
        }
        let name = &deployment.name;
        let first = pod.instances[0].started;
        let last = pod.current().started;
        let count = pod.instances.len();
        events.push(kubelet(
            "Pulled",
            name,
            format!(
                "Container image \"{}\" already present on machine",
                revision.image
            ),
            first - 1,
            last - 1,
            count,
            false,
        ));
        events.push(kubelet(
            "Created",
            name,
            format!("Created container: {name}"),
            first,
            last,
            count,
            false,
        ));
        events.push(kubelet(
            "Started",
            name,
            format!("Started container {name}"),
            first,
            last,
            count,
            false,
        ));
        let kills: Vec<i64> = pod
            .instances
            .iter()
            .filter_map(|instance| instance.finished)
            .collect();
        if let (Some(first_kill), Some(last_kill)) = (kills.first(), kills.last()) {
            events.push(kubelet(
                "BackOff",
                name,
                format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    pod.name,
                    ctx.ns(),
                    uid(&format!("pod/{}", pod.name))
                ),
                first_kill + 1,
                last_kill + 1,
                kills.len(),
                true,
            ));
        }
    }
    events.retain(|event| event.last >= -EVENT_TTL_SECS);
    events.sort_by_key(|event| event.last);
    events
}

fn event_name(event: &EventPlan) -> String {
    let key = format!(
        "{}/{}/{}/{}",
        event.kind, event.object, event.reason, event.first
    );
    format!("{}.{:016x}", event.object, scenario::fnv1a(key.as_bytes()))
}

fn involved(ctx: &Ctx, event: &EventPlan) -> Value {
    let key = format!("{}/{}", event.kind.to_lowercase(), event.object);
    let mut object = json!({
        "kind": event.kind,
        "namespace": ctx.ns(),
        "name": event.object,
        "uid": uid(&key),
        "apiVersion": event.api_version,
        "resourceVersion": resource_version(&key),
    });
    if let Some(path) = &event.field_path {
        object["fieldPath"] = json!(path);
    }
    object
}

/// Only the kubelet names an instance (its node); controllers leave it empty.
fn reporting_instance<'a>(ctx: &'a Ctx, event: &EventPlan) -> &'a str {
    if event.component == "kubelet" {
        &ctx.scenario.cluster.node
    } else {
        ""
    }
}

/// Both event APIs describe one event with the same object metadata.
fn event_metadata(ctx: &Ctx, event: &EventPlan) -> Value {
    let name = event_name(event);
    json!({
        "name": name,
        "namespace": ctx.ns(),
        "uid": uid(&format!("event/{name}")),
        "resourceVersion": resource_version(&format!("event/{name}/{}", event.count)),
        "creationTimestamp": ctx.ts(event.first),
    })
}

/// The reporting component; the kubelet also names its host.
fn event_source(ctx: &Ctx, event: &EventPlan) -> Value {
    let mut source = json!({ "component": event.component });
    if event.component == "kubelet" {
        source["host"] = json!(ctx.scenario.cluster.node);
    }
    source
}

fn event_core(ctx: &Ctx, event: &EventPlan) -> Value {
    json!({
        "metadata": event_metadata(ctx, event),
        "involvedObject": involved(ctx, event),
        "reason": event.reason,
        "message": event.message,
        "source": event_source(ctx, event),
        "firstTimestamp": ctx.ts(event.first),
        "lastTimestamp": ctx.ts(event.last),
        "count": event.count,
        "type": if event.warning { "Warning" } else { "Normal" },
        "eventTime": null,
        "reportingComponent": event.component,
        "reportingInstance": reporting_instance(ctx, event),
    })
}

fn event_v1(ctx: &Ctx, event: &EventPlan) -> Value {
    json!({
        "metadata": event_metadata(ctx, event),
        "eventTime": null,
        "reportingController": event.component,
        "reportingInstance": reporting_instance(ctx, event),
        "reason": event.reason,
        "regarding": involved(ctx, event),
        "note": event.message,
        "type": if event.warning { "Warning" } else { "Normal" },
        "deprecatedSource": event_source(ctx, event),
        "deprecatedFirstTimestamp": ctx.ts(event.first),
        "deprecatedLastTimestamp": ctx.ts(event.last),
        "deprecatedCount": event.count,
    })
}

fn container_logs(ctx: &Ctx, pod: &PodPlan) -> Vec<ContainerLog> {
    let deployment = &ctx.scenario.deployments[pod.deployment];
    let revision = &deployment.revisions[pod.revision];
    let log = |container: &str, previous: bool, lines: Vec<(i64, String)>| ContainerLog {
        namespace: ctx.ns().to_owned(),
        pod: pod.name.clone(),
        container: container.to_owned(),
        previous,
        lines: lines
            .into_iter()
            .map(|(nanos, text)| (ctx.anchor + chrono::Duration::nanoseconds(nanos), text))
            .collect(),
    };
    let mut logs = Vec::new();
    if let Some(init) = &deployment.init_container {
        let lines = init
            .log
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let nanos =
                    (pod.created + 3) * 1_000_000_000 + index as i64 * 700_000_000 + 1_234_567;
                (nanos, format!("{{\"level\":\"info\",\"msg\":\"{text}\"}}"))
            })
            .collect();
        logs.push(log(&init.name, false, lines));
    }
    logs.push(log(
        &deployment.name,
        false,
        instance_lines(ctx, pod, deployment, revision, pod.instances.len() - 1),
    ));
    if pod.previous().is_some() {
        logs.push(log(
            &deployment.name,
            true,
            instance_lines(ctx, pod, deployment, revision, pod.instances.len() - 2),
        ));
    }
    logs
}

/// The lines one container instance wrote, as nanosecond offsets from the anchor.
fn instance_lines(
    ctx: &Ctx,
    pod: &PodPlan,
    deployment: &Deployment,
    revision: &Revision,
    index: usize,
) -> Vec<(i64, String)> {
    let seed = ctx.scenario.history.seed;
    let instance = pod.instances[index];
    let begin = instance.started.max(ctx.scenario.history_start());
    let end = instance.finished.unwrap_or(0);
    let version = revision.image.rsplit_once(':').map_or("", |(_, tag)| tag);
    let mut lines = vec![(
        instance.started * 1_000_000_000 + 512_003_117,
        format!(
            "{{\"level\":\"info\",\"msg\":\"starting\",\"service\":\"{}\",\"version\":\"{version}\",\"port\":{}}}",
            deployment.name, deployment.port
        ),
    )];
    for (stream_index, stream) in deployment.logs.iter().enumerate() {
        let every = stream.every.as_secs() as i64;
        let from = stream
            .from
            .map_or(instance.started, |from| from.0)
            .max(begin);
        let until = stream.until.map_or(end, |until| until.0.min(end));
        let grid = stream.from.map_or(instance.started, |from| from.0);
        let mut slot = grid + ((from - grid) + every - 1).div_euclid(every) * every;
        while slot < until {
            let key = format!("{}/{stream_index}", pod.name);
            let spread = (every * 1_000_000_000 / 2).min(3_000_000_000);
            let jitter = ((noise(seed, &key, slot) + 1.0) / 2.0 * spread as f64) as i64;
            let pick =
                ((noise(seed, &key, slot + 1) + 1.0) / 2.0 * stream.lines.len() as f64) as usize;
            let template = &stream.lines[pick.min(stream.lines.len() - 1)];
            let mut text = template.clone();
            let mut counter = 0;
            while let Some(at) = text.find("{n}") {
                counter += 1;
                let value = ((noise(seed, &key, slot * 7 + counter) + 1.0) * 120.0) as u64 + 3;
                text.replace_range(at..at + 3, &value.to_string());
            }
            lines.push((slot * 1_000_000_000 + jitter, text));
            slot += every;
        }
    }
    if instance.oom_killed
        && let Some(finished) = instance.finished
    {
        let limit = revision.resources.memory_limit.bytes;
        lines.push((
            (finished - 4) * 1_000_000_000 + 88_412_905,
            format!(
                "{{\"level\":\"warn\",\"msg\":\"dedup cache growing\",\"working_set_bytes\":{}}}",
                limit - limit / 100
            ),
        ));
    }
    lines.retain(|(nanos, _)| *nanos < end * 1_000_000_000);
    lines.sort_by_key(|(nanos, _)| *nanos);
    lines
}

/// Formats a log timestamp the way the kubelet does (Go's RFC3339Nano: nanoseconds with
/// trailing zeros dropped).
pub fn log_timestamp(ts: DateTime<Utc>) -> String {
    let text = ts.format("%Y-%m-%dT%H:%M:%S%.9f").to_string();
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    format!("{trimmed}Z")
}

/// `GET /version`.
pub fn version(scenario: &Scenario) -> Value {
    let version = scenario.cluster.kubernetes_version.trim_start_matches('v');
    let mut parts = version.split('.');
    json!({
        "major": parts.next().unwrap_or("1"),
        "minor": parts.next().unwrap_or("32"),
        "gitVersion": scenario.cluster.kubernetes_version,
        "gitCommit": hex64("git")[..40],
        "gitTreeState": "clean",
        "buildDate": "2025-03-11T19:52:49Z",
        "goVersion": "go1.23.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server }],
    })
}

/// `GET /apis`.
pub fn api_groups() -> Value {
    let group = |name: &str, version: &str| {
        let group_version = format!("{name}/{version}");
        json!({
            "name": name,
            "versions": [{ "groupVersion": group_version, "version": version }],
            "preferredVersion": { "groupVersion": group_version, "version": version },
        })
    };
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            group("apps", "v1"),
            group("events.k8s.io", "v1"),
            group("metrics.k8s.io", "v1beta1"),
        ],
    })
}

/// `GET /api/v1`, `/apis/apps/v1`, …: the resources each group version serves here.
pub fn api_resources(group_version: &str) -> Option<Value> {
    let read = json!(["get", "list"]);
    let resource = |name: &str, singular: &str, namespaced: bool, kind: &str, short: &[&str]| {
        let mut resource = json!({
            "name": name, "singularName": singular, "namespaced": namespaced,
            "kind": kind, "verbs": read,
        });
        if !short.is_empty() {
            resource["shortNames"] = json!(short);
        }
        resource
    };
    let resources = match group_version {
        "v1" => vec![
            resource("pods", "pod", true, "Pod", &["po"]),
            json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod",
                "verbs": ["get"],
            }),
            resource("events", "event", true, "Event", &["ev"]),
            resource("nodes", "node", false, "Node", &["no"]),
        ],
        "apps/v1" => vec![
            resource("deployments", "deployment", true, "Deployment", &["deploy"]),
            resource("replicasets", "replicaset", true, "ReplicaSet", &["rs"]),
        ],
        "events.k8s.io/v1" => vec![resource("events", "event", true, "Event", &["ev"])],
        "metrics.k8s.io/v1beta1" => vec![
            resource("pods", "pod", true, "PodMetrics", &[]),
            resource("nodes", "node", false, "NodeMetrics", &[]),
        ],
        _ => return None,
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// A `Status` body, as the API server sends with every error.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn log_timestamps_follow_go_rfc3339_nano() {
        let ts = Utc.with_ymd_and_hms(2026, 12, 4, 13, 40, 0).unwrap();
        assert_eq!(log_timestamp(ts), "2026-12-04T13:40:00Z");
        let ts = ts + chrono::Duration::nanoseconds(123_450_000);
        assert_eq!(log_timestamp(ts), "2026-12-04T13:40:00.12345Z");
        let ts = ts + chrono::Duration::nanoseconds(6_789);
        assert_eq!(log_timestamp(ts), "2026-12-04T13:40:00.123456789Z");
    }

    #[test]
    fn ingest_shows_the_oom_only_in_last_state() {
        let anchor = Utc.with_ymd_and_hms(2026, 12, 4, 14, 0, 0).unwrap();
        let rendered = render(&Scenario::incident(), anchor);
        let ingest = rendered
            .pods
            .iter()
            .find(|pod| pod["metadata"]["labels"]["app"] == "ingest")
            .unwrap();
        let status = &ingest["status"]["containerStatuses"][0];
        assert_eq!(status["restartCount"], 3);
        assert_eq!(status["ready"], true);
        assert!(status["state"]["running"].is_object());
        assert_eq!(status["lastState"]["terminated"]["reason"], "OOMKilled");
        assert_eq!(status["lastState"]["terminated"]["exitCode"], 137);
        assert_eq!(
            status["lastState"]["terminated"]["finishedAt"],
            "2026-12-04T13:30:00Z"
        );
        assert_eq!(
            ingest["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "256Mi"
        );
        assert_eq!(ingest["spec"]["initContainers"][0]["name"], "migrate");
        assert_eq!(
            ingest["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
    }

    #[test]
    fn log_volume_stays_modest() {
        let anchor = Utc.with_ymd_and_hms(2026, 12, 4, 14, 0, 0).unwrap();
        let rendered = render(&Scenario::incident(), anchor);
        let lines: usize = rendered.logs.iter().map(|log| log.lines.len()).sum();
        // The README promises about 1,300 lines.
        assert!((1_100..1_500).contains(&lines), "{lines} log lines");
        for log in &rendered.logs {
            assert!(
                log.lines.windows(2).all(|pair| pair[0].0 <= pair[1].0),
                "{} in order",
                log.pod
            );
            assert!(log.lines.iter().all(|(ts, _)| *ts <= anchor));
        }
    }
}
