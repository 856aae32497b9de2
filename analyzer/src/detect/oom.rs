//! OOM kills: the kubelet's `OOMKilled` reason on containers and init containers (in
//! `state` or `lastState`, so a Running and Ready pod still shows its last kill), exit
//! code 137 as weaker evidence, and node-level OOM events; with the likely cause.

use polars::prelude::*;
use sitrep_schemas::report::{
    Confidence, ConfidenceLevel, Detail, Evidence, Finding, Oom, OomEvidence, Severity, Subject,
};

use super::{frame_error, metric_points};
use crate::load::Tables;
use crate::load::k8s::{PodContainer, Termination, event_rows, quantity_bytes};

/// A working set at or above this share of the limit counts as "approached the limit".
const NEAR_LIMIT: f64 = 0.9;

/// How strongly a container's termination says "out of memory".
pub(crate) fn classify(termination: &Termination) -> Option<OomEvidence> {
    if termination.reason.as_deref() == Some("OOMKilled") {
        Some(OomEvidence::OomKilled)
    } else if termination.exit_code == Some(137) {
        Some(OomEvidence::Exit137)
    } else {
        None
    }
}

pub(crate) fn detect(tables: &Tables) -> Vec<Finding> {
    let mut findings = Vec::new();
    for container in &tables.pods {
        // `state` is the newer fact; `lastState` is the one that survives a restart.
        let candidates = [
            ("state", &container.current),
            ("lastState", &container.last),
        ];
        let best = candidates
            .iter()
            .filter_map(|(field, t)| t.as_ref().map(|t| (*field, t)))
            .filter_map(|(field, t)| classify(t).map(|e| (field, t, e)))
            .min_by_key(|(_, _, e)| match e {
                OomEvidence::OomKilled => 0,
                _ => 1,
            });
        if let Some((field, termination, evidence)) = best {
            match container_finding(tables, container, field, termination, evidence) {
                Ok(finding) => findings.push(finding),
                Err(error) => findings.extend(frame_error("oom", &error)),
            }
        }
    }
    findings.extend(node_findings(tables).unwrap_or_else(|error| frame_error("oom", &error)));
    findings
}

fn container_finding(
    tables: &Tables,
    container: &PodContainer,
    field: &str,
    termination: &Termination,
    evidence: OomEvidence,
) -> polars::prelude::PolarsResult<Finding> {
    let limit_bytes = container.memory_limit.as_deref().and_then(quantity_bytes);
    let mut causes = Vec::new();
    if let Some(lowered) = limit_lowered(tables, container) {
        causes.push(lowered);
    }
    let points = metric_points(
        &tables.metrics,
        "memory_working_set",
        &[
            ("namespace", &container.namespace),
            ("pod", &container.pod),
            ("container", &container.container),
        ],
    )?;
    let peak = points
        .iter()
        .filter(|p| p.value.is_finite())
        .max_by(|a, b| a.value.total_cmp(&b.value));
    if let (Some(peak), Some(limit)) = (peak, limit_bytes)
        && peak.value >= NEAR_LIMIT * limit as f64
    {
        causes.push(format!(
            "working set peaked at {} ({:.1} % of the {} limit) at {}",
            mebibytes(peak.value),
            100.0 * peak.value / limit as f64,
            container.memory_limit.as_deref().unwrap_or("?"),
            crate::load::from_millis(peak.ts).format("%H:%M:%S")
        ));
    }

    let (severity, level, score, mut reasons) = match evidence {
        OomEvidence::OomKilled => (
            Severity::Critical,
            ConfidenceLevel::High,
            0.95,
            vec![format!(
                "the kubelet recorded reason `OOMKilled` in `{field}.terminated`"
            )],
        ),
        _ => (
            Severity::Warning,
            ConfidenceLevel::Low,
            0.4,
            vec![format!(
                "exit code 137 (SIGKILL) in `{field}.terminated` without reason `OOMKilled`: an OOM kill or a kill by the runtime"
            )],
        ),
    };
    if let Some(restarts) = container.restarts {
        reasons.push(format!("restart count {restarts}"));
    }
    if container.ready == Some(true) {
        reasons.push("the container is ready again, so only its last state shows the kill".into());
    }

    let kind = if container.init {
        "init container"
    } else {
        "container"
    };
    let what = match evidence {
        OomEvidence::OomKilled => "OOM-killed",
        _ => "killed with exit code 137 (possible OOM)",
    };
    let limit_text = container
        .memory_limit
        .as_deref()
        .map_or_else(|| "no memory limit".to_owned(), |l| format!("limit {l}"));
    let file = sitrep_schemas::paths::k8s(sitrep_schemas::paths::k8s::PODS);
    Ok(Finding {
        id: format!(
            "oom/{}/{}/{}",
            container.namespace, container.pod, container.container
        ),
        severity,
        confidence: Confidence {
            level,
            score,
            reasons,
        },
        title: format!(
            "{kind} `{}` of `{}/{}` {what} ({limit_text}, {} restarts)",
            container.container,
            container.namespace,
            container.pod,
            container
                .restarts
                .map_or_else(|| "?".into(), |r| r.to_string())
        ),
        start: termination.finished,
        end: termination.finished,
        subject: Subject {
            namespace: Some(container.namespace.clone()),
            deployment: container.deployment.clone(),
            pod: Some(container.pod.clone()),
            container: Some(container.container.clone()),
            service: Some(container.service.clone()),
            ..Subject::default()
        },
        evidence: vec![Evidence {
            ts: termination.finished,
            file,
            text: format!(
                "{field}.terminated: reason={} exitCode={}",
                termination.reason.as_deref().unwrap_or("-"),
                termination
                    .exit_code
                    .map_or_else(|| "-".into(), |c| c.to_string())
            ),
        }],
        detail: Detail::Oom(Oom {
            namespace: container.namespace.clone(),
            pod: container.pod.clone(),
            container: container.container.clone(),
            init_container: container.init,
            evidence,
            exit_code: termination.exit_code,
            memory_limit: container.memory_limit.clone(),
            memory_limit_bytes: limit_bytes,
            restart_count: container.restarts,
            finished_at: termination.finished,
            node: container.node.clone(),
            cause: (!causes.is_empty()).then(|| causes.join("; ")),
        }),
        next_steps: vec![
            format!(
                "kubectl describe pod {} -n {}",
                container.pod, container.namespace
            ),
            format!(
                "kubectl logs {} -n {} -c {} --previous",
                container.pod, container.namespace, container.container
            ),
        ],
    })
}

/// "memory limit lowered from 512Mi to 256Mi in revision 3", when the owning
/// Deployment's latest revision lowered this container's limit against the one before.
fn limit_lowered(tables: &Tables, container: &PodContainer) -> Option<String> {
    let deployment = container.deployment.as_deref()?;
    let mut revisions: Vec<_> = tables
        .rollouts
        .iter()
        .filter(|r| r.namespace == container.namespace && r.deployment == deployment)
        .collect();
    revisions.sort_by_key(|r| r.revision);
    let [.., previous, latest] = revisions.as_slice() else {
        return None;
    };
    let limit = |rollout: &crate::load::k8s::Rollout| {
        rollout
            .containers
            .iter()
            .find(|c| c.name == container.container && c.init == container.init)
            .and_then(|c| c.limits.get("memory").cloned())
    };
    let (before, after) = (limit(previous)?, limit(latest)?);
    (quantity_bytes(&after)? < quantity_bytes(&before)?).then(|| {
        format!(
            "memory limit lowered from {before} to {after} in revision {}",
            latest.revision
        )
    })
}

fn mebibytes(bytes: f64) -> String {
    format!("{:.1}Mi", bytes / (1024.0 * 1024.0))
}

fn node_findings(tables: &Tables) -> PolarsResult<Vec<Finding>> {
    let node_oom = tables
        .events
        .clone()
        .lazy()
        .filter(
            col("reason")
                .eq(lit("SystemOOM"))
                .or(col("reason").eq(lit("OOMKilling"))),
        )
        .collect()?;
    Ok(event_rows(&node_oom)?
        .iter()
        .map(|event| {
            let node = (event.kind == "Node").then(|| event.object.clone());
            Finding {
                id: format!(
                    "oom/node/{}/{}",
                    event.object,
                    event.ts.map_or(0, |t| t.timestamp())
                ),
                severity: Severity::Warning,
                confidence: Confidence {
                    level: ConfidenceLevel::Medium,
                    score: 0.6,
                    reasons: vec![format!(
                        "the node reported `{}` ({} time(s)); the kernel chose the victim, which may not be a pod's main container",
                        event.reason, event.count
                    )],
                },
                title: format!("node `{}` ran out of memory: {}", event.object, event.message),
                start: event.ts,
                end: event.ts,
                subject: Subject {
                    namespace: (!event.namespace.is_empty()).then(|| event.namespace.clone()),
                    ..Subject::default()
                },
                evidence: vec![Evidence {
                    ts: event.ts,
                    file: sitrep_schemas::paths::k8s(sitrep_schemas::paths::k8s::EVENTS),
                    text: format!("{} {}: {}", event.reason, event.object, event.message),
                }],
                detail: Detail::Oom(Oom {
                    namespace: event.namespace.clone(),
                    pod: String::new(),
                    container: String::new(),
                    init_container: false,
                    evidence: OomEvidence::NodeOom,
                    exit_code: None,
                    memory_limit: None,
                    memory_limit_bytes: None,
                    restart_count: None,
                    finished_at: event.ts,
                    node: node.clone(),
                    cause: None,
                }),
                next_steps: vec![format!(
                    "kubectl describe node {}",
                    node.as_deref().unwrap_or(&event.object)
                )],
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminated(reason: Option<&str>, exit_code: Option<i32>) -> Termination {
        Termination {
            reason: reason.map(str::to_owned),
            exit_code,
            finished: None,
        }
    }

    #[test]
    fn oom_killed_is_certain_and_exit_137_only_possible() {
        let cases = [
            (
                terminated(Some("OOMKilled"), Some(137)),
                Some(OomEvidence::OomKilled),
            ),
            (
                terminated(Some("OOMKilled"), None),
                Some(OomEvidence::OomKilled),
            ),
            (
                terminated(Some("Error"), Some(137)),
                Some(OomEvidence::Exit137),
            ),
            (terminated(None, Some(137)), Some(OomEvidence::Exit137)),
            (terminated(Some("Error"), Some(1)), None),
            (terminated(Some("Completed"), Some(0)), None),
        ];
        for (termination, want) in cases {
            assert_eq!(classify(&termination), want, "{termination:?}");
        }
    }
}
