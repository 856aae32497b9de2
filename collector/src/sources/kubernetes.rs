//! Kubernetes: workload objects, events, nodes and pod metrics as the API server sent
//! them, and the logs of every container. Secrets are never requested.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{AsyncReadExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, LogParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use sitrep_schemas::Window;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::paths;

use crate::bundle::{BundleError, Spool, TailSpool};
use crate::redact;
use crate::run::{Classify, Failure, SourceContext, one_line, render_chain, status_name};

/// Kubernetes: Deployments, ReplicaSets, Pods, Events, Nodes, PodMetrics and container
/// logs. The kubeconfig and context are found the way kubectl finds them.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KubernetesArgs {
    /// Kubeconfig file. Default: the files in KUBECONFIG, else ~/.kube/config. Without
    /// one, Kubernetes is skipped.
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Kubeconfig context. Default: the current context.
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// Namespace to collect; repeat for several. Default: the context's namespace, or
    /// `default` when it has none.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub(crate) namespaces: Vec<String>,
    /// Collect every namespace.
    #[arg(long, conflicts_with = "namespaces")]
    pub(crate) all_namespaces: bool,
    /// Do not collect Kubernetes at all.
    #[arg(long)]
    pub(crate) no_kubernetes: bool,
    /// Most bytes kept per container log; the newest lines are kept and the cut is
    /// recorded in the manifest.
    #[arg(long, default_value = "8MiB", value_name = "BYTES", value_parser = crate::config::parse_bytes)]
    pub(crate) max_log_bytes: u64,
}

/// How many container logs are fetched at once.
const LOG_CONCURRENCY: usize = 4;
/// Objects per List page.
const PAGE_SIZE: u32 = 500;
/// Most bytes of one List page held in memory: a page is parsed whole, and an endless
/// answer would otherwise grow until the process dies with the whole bundle unwritten.
const PAGE_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubernetesError {
    #[error("cannot read kubeconfig `{}`", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("the kubeconfig has no current context; pass --context")]
    NoContext,
    #[error("cannot use kubeconfig context `{context}`")]
    Context {
        context: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("cannot list {resource}{}", namespace.as_deref().map(|n| format!(" in `{n}`")).unwrap_or_default())]
    List {
        resource: &'static str,
        namespace: Option<String>,
        #[source]
        source: kube::Error,
    },
    #[error("a page of {resource}{} is larger than {} MiB and was not read further", namespace.as_deref().map(|n| format!(" in `{n}`")).unwrap_or_default(), .limit / (1024 * 1024))]
    PageTooLarge {
        resource: &'static str,
        namespace: Option<String>,
        limit: usize,
    },
    #[error("cannot read the log of `{namespace}/{pod}` container `{container}`")]
    Log {
        namespace: String,
        pod: String,
        container: String,
        #[source]
        source: kube::Error,
    },
    #[error("the log stream of `{pod}` container `{container}` broke off")]
    LogRead {
        pod: String,
        container: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot spool `{0}`")]
    Spool(String, #[source] std::io::Error),
    #[error("cannot store `{0}`")]
    Store(String, #[source] BundleError),
}

impl Classify for KubernetesError {
    fn status(&self) -> SourceStatus {
        match self {
            KubernetesError::List { source, .. } | KubernetesError::Log { source, .. } => {
                kube_status(source)
            }
            KubernetesError::LogRead { .. } => SourceStatus::Unreachable,
            KubernetesError::PageTooLarge { .. } => SourceStatus::OverBudget,
            _ => SourceStatus::Failed,
        }
    }
}

impl KubernetesError {
    /// An unreachable server or refused credentials fail every later request the same
    /// way; a 403 does not, since RBAC is granted per resource.
    fn fails_every_request(&self) -> bool {
        match self {
            KubernetesError::List {
                source: kube::Error::Api(status),
                ..
            } => status.code == 401,
            KubernetesError::List { source, .. } => {
                kube_status(source) == SourceStatus::Unreachable
            }
            _ => false,
        }
    }
}

fn kube_status(err: &kube::Error) -> SourceStatus {
    match err {
        kube::Error::Api(status) => match status.code {
            401 | 403 => SourceStatus::Forbidden,
            404 => SourceStatus::Unsupported,
            500..=599 => SourceStatus::Unreachable,
            _ => SourceStatus::Failed,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => SourceStatus::Unreachable,
        kube::Error::SerdeError(_) => SourceStatus::Malformed,
        _ => SourceStatus::Failed,
    }
}

/// Where and what to collect, resolved before the collection starts so that the header
/// can name the context and the cluster.
pub(crate) struct KubeTarget {
    pub(crate) config: kube::Config,
    pub(crate) context: String,
    pub(crate) cluster: Option<String>,
    /// Empty with `all_namespaces`.
    pub(crate) namespaces: Vec<String>,
    pub(crate) all_namespaces: bool,
    pub(crate) max_log_bytes: u64,
}

impl std::fmt::Debug for KubeTarget {
    // The client config holds credentials; only say where it points.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget")
            .field("server", &self.config.cluster_url.to_string())
            .field("context", &self.context)
            .field("cluster", &self.cluster)
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

/// What the kubeconfig search found.
#[derive(Debug)]
pub(crate) enum Resolution {
    Ready(Box<KubeTarget>),
    Skipped(String),
    Broken(KubernetesError),
}

/// Finds the kubeconfig (flag, KUBECONFIG, ~/.kube/config) and the context in it.
pub(crate) async fn resolve(args: &KubernetesArgs) -> Resolution {
    if args.no_kubernetes {
        return Resolution::Skipped("disabled by --no-kubernetes".to_owned());
    }
    let files: Vec<PathBuf> = match (&args.kubeconfig, std::env::var_os("KUBECONFIG")) {
        (Some(path), _) => vec![path.clone()],
        (None, Some(list)) if !list.is_empty() => {
            // kubectl ignores KUBECONFIG entries that do not exist.
            std::env::split_paths(&list)
                .filter(|p| p.is_file())
                .collect()
        }
        _ => std::env::home_dir()
            .map(|h| h.join(".kube").join("config"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect(),
    };
    if files.is_empty() {
        return Resolution::Skipped(
            "no kubeconfig found (no --kubeconfig, no existing file in KUBECONFIG, no ~/.kube/config)"
                .to_owned(),
        );
    }
    let mut merged = Kubeconfig::default();
    for path in &files {
        let read = Kubeconfig::read_from(path).and_then(|next| merged.clone().merge(next));
        match read {
            Ok(m) => merged = m,
            Err(source) => {
                return Resolution::Broken(KubernetesError::Kubeconfig {
                    path: path.clone(),
                    source,
                });
            }
        }
    }

    let Some(context) = args
        .context
        .clone()
        .or_else(|| merged.current_context.clone())
    else {
        return Resolution::Broken(KubernetesError::NoContext);
    };
    let entry = merged
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.clone());
    let cluster = entry.as_ref().map(|c| c.cluster.clone());
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let config = match kube::Config::from_custom_kubeconfig(merged, &options).await {
        Ok(config) => config,
        Err(source) => return Resolution::Broken(KubernetesError::Context { context, source }),
    };
    let namespaces = if args.all_namespaces {
        Vec::new()
    } else if args.namespaces.is_empty() {
        vec![config.default_namespace.clone()]
    } else {
        args.namespaces.clone()
    };
    Resolution::Ready(Box::new(KubeTarget {
        config,
        context,
        cluster,
        namespaces,
        all_namespaces: args.all_namespaces,
        max_log_bytes: args.max_log_bytes,
    }))
}

/// One listed resource.
struct Resource {
    file: &'static str,
    api: ApiResource,
    namespaced: bool,
    /// Holds pod templates whose env values must be redacted.
    redact: bool,
    /// Served only by an add-on (metrics-server): a cluster without it is not a failed
    /// collection, so "not served" is recorded as skipped.
    optional: bool,
}

fn resources() -> Vec<Resource> {
    let metrics = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
    vec![
        Resource {
            file: paths::k8s::DEPLOYMENTS,
            api: ApiResource::erase::<Deployment>(&()),
            namespaced: true,
            redact: true,
            optional: false,
        },
        Resource {
            file: paths::k8s::REPLICASETS,
            api: ApiResource::erase::<ReplicaSet>(&()),
            namespaced: true,
            redact: true,
            optional: false,
        },
        Resource {
            file: paths::k8s::PODS,
            api: ApiResource::erase::<Pod>(&()),
            namespaced: true,
            redact: true,
            optional: false,
        },
        Resource {
            file: paths::k8s::EVENTS,
            api: ApiResource::erase::<Event>(&()),
            namespaced: true,
            redact: false,
            optional: false,
        },
        Resource {
            file: paths::k8s::EVENTS_V1,
            api: ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&()),
            namespaced: true,
            redact: false,
            optional: false,
        },
        Resource {
            file: paths::k8s::NODES,
            api: ApiResource::erase::<Node>(&()),
            namespaced: false,
            redact: false,
            optional: false,
        },
        Resource {
            file: paths::k8s::POD_METRICS,
            api: ApiResource::from_gvk_with_plural(&metrics, "pods"),
            namespaced: true,
            redact: false,
            optional: true,
        },
    ]
}

/// `/api/v1[/namespaces/NS]/pods` or `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL`.
fn list_path(api: &ApiResource, namespace: Option<&str>) -> String {
    let base = if api.group.is_empty() {
        format!("/api/{}", api.version)
    } else {
        format!("/apis/{}/{}", api.group, api.version)
    };
    match namespace {
        Some(ns) => format!("{base}/namespaces/{ns}/{}", api.plural),
        None => format!("{base}/{}", api.plural),
    }
}

/// The error of a part that a stop kept from being asked for.
const STOPPED_FIRST: &str = "not tried: the source was stopped first";

/// One container whose logs are fetched.
#[derive(Debug, Clone)]
struct LogJob {
    namespace: String,
    pod: String,
    container: String,
    previous: bool,
}

/// Lists every resource, then fetches the logs of the pods it found.
pub(crate) async fn collect(
    target: KubeTarget,
    window: Window,
    ctx: Arc<SourceContext>,
) -> Result<(), Failure> {
    let client = kube::Client::try_from(target.config.clone())
        .map_err(|e| KubernetesError::Client(e).failure())?;
    let scopes: Vec<Option<String>> = if target.all_namespaces {
        vec![None]
    } else {
        target.namespaces.iter().cloned().map(Some).collect()
    };

    let mut jobs = Vec::new();
    let mut given_up: Option<(SourceStatus, &'static str)> = None;
    for resource in resources() {
        // Every resource stays in the manifest, so a reader can tell "not listed because
        // of the stop" from "never asked for".
        if let Some(reason) = ctx.stop().reason() {
            ctx.part(
                resource.file,
                reason.status(),
                0,
                Some(STOPPED_FIRST.to_owned()),
            );
            continue;
        }
        if let Some((status, first)) = given_up {
            let why = format!("not tried: listing {first} already failed the same way");
            ctx.part(resource.file, status, 0, Some(why));
            continue;
        }
        let listed = list_resource(&client, &resource, &scopes, &ctx, &mut jobs).await;
        match listed {
            Ok(n) => match ctx.stop().reason() {
                // The pages read so far are stored, but the list is not whole.
                Some(reason) => ctx.part(resource.file, reason.status(), n, None),
                None => ctx.part(resource.file, SourceStatus::Ok, n, None),
            },
            Err(e) if resource.optional && e.status() == SourceStatus::Unsupported => {
                let why = format!("not served by this cluster: {}", one_line(&e));
                tracing::info!(stage = "list", resource = resource.file, "{why}");
                ctx.part(resource.file, SourceStatus::Skipped, 0, Some(why));
            }
            Err(e) => {
                tracing::warn!(stage = "list", resource = resource.file, error_type = status_name(e.status()), error = %one_line(&e), "list failed");
                ctx.part(resource.file, e.status(), 0, Some(render_chain(&e)));
                if e.fails_every_request() {
                    given_up = Some((e.status(), resource.file));
                }
            }
        }
    }
    if let Some(reason) = ctx.stop().reason() {
        ctx.part("logs", reason.status(), 0, Some(STOPPED_FIRST.to_owned()));
        return Ok(());
    }
    if !jobs.is_empty() {
        collect_logs(&client, jobs, window, target.max_log_bytes, &ctx).await;
    }
    Ok(())
}

/// Pages through one resource in every scope into one spool and stores it. Returns the
/// number of objects.
async fn list_resource(
    client: &kube::Client,
    resource: &Resource,
    scopes: &[Option<String>],
    ctx: &SourceContext,
    jobs: &mut Vec<LogJob>,
) -> Result<u64, KubernetesError> {
    let file = paths::k8s(resource.file);
    let spool_err = |e| KubernetesError::Spool(file.clone(), e);
    let mut spool = Spool::new().map_err(spool_err)?;
    let mut count = 0u64;
    let cluster_wide = [None];
    let scopes = if resource.namespaced {
        scopes
    } else {
        &cluster_wide[..]
    };
    for scope in scopes {
        let path = list_path(&resource.api, scope.as_deref());
        let list_err = |source| KubernetesError::List {
            resource: resource.file,
            namespace: scope.clone(),
            source,
        };
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE_SIZE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let request = kube::core::Request::new(&path)
                .list(&params)
                .map_err(|e| list_err(kube::Error::BuildRequest(e)))?;
            let fetch = async { read_page(client.request_stream(request).await?).await };
            let Some(page) = ctx.until_stopped(fetch).await else {
                break;
            };
            let mut page = match page {
                Ok(Some(page)) => page,
                Ok(None) => {
                    return Err(KubernetesError::PageTooLarge {
                        resource: resource.file,
                        namespace: scope.clone(),
                        limit: PAGE_LIMIT,
                    });
                }
                Err(e) => return Err(list_err(e)),
            };
            token = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let items = match page.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            for mut item in items {
                if let Some(obj) = item.as_object_mut() {
                    obj.insert(
                        "apiVersion".into(),
                        Value::String(resource.api.api_version.clone()),
                    );
                    obj.insert("kind".into(), Value::String(resource.api.kind.clone()));
                }
                if resource.redact {
                    ctx.redacted(redact::ENV_VALUE, redact::env_values(&mut item));
                }
                if resource.file == paths::k8s::PODS {
                    jobs.extend(log_jobs(&item));
                }
                spool.write_json_line(&item).map_err(spool_err)?;
                count += 1;
            }
            if token.is_none() {
                break;
            }
        }
    }
    ctx.add_items(count);
    let spool = spool.finish().map_err(spool_err)?;
    ctx.write(file.clone(), spool, None, None)
        .await
        .map_err(|e| KubernetesError::Store(file.clone(), e))?;
    Ok(count)
}

/// Current and previous logs of every init and regular container of a pod.
fn log_jobs(pod: &Value) -> Vec<LogJob> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str);
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str);
    let (Some(name), Some(namespace)) = (name, namespace) else {
        return Vec::new();
    };
    let mut jobs = Vec::new();
    for list in ["/spec/initContainers", "/spec/containers"] {
        let Some(Value::Array(containers)) = pod.pointer(list) else {
            continue;
        };
        for container in containers
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
        {
            for previous in [false, true] {
                jobs.push(LogJob {
                    namespace: namespace.to_owned(),
                    pod: name.to_owned(),
                    container: container.to_owned(),
                    previous,
                });
            }
        }
    }
    jobs
}

async fn collect_logs(
    client: &kube::Client,
    jobs: Vec<LogJob>,
    window: Window,
    cap: u64,
    ctx: &SourceContext,
) {
    let since =
        k8s_openapi::jiff::Timestamp::from_millisecond(window.start.timestamp_millis()).ok();
    let reason = format!("max-log-bytes={}", human_bytes(cap));
    let total = jobs.len();
    let results: Vec<Result<bool, KubernetesError>> = futures::stream::iter(jobs)
        .map(|job| {
            let reason = reason.as_str();
            async move {
                match ctx
                    .until_stopped(fetch_log(client, &job, since, cap, reason, ctx))
                    .await
                {
                    Some(r) => r,
                    None => Ok(false),
                }
            }
        })
        .buffer_unordered(LOG_CONCURRENCY)
        .collect()
        .await;

    let written = results.iter().filter(|r| matches!(r, Ok(true))).count() as u64;
    let failures: Vec<&KubernetesError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let (status, error) = match failures.first() {
        None if ctx.stop().reason().is_some() => {
            let reason = ctx
                .stop()
                .reason()
                .unwrap_or(crate::run::StopReason::Interrupted);
            (
                reason.status(),
                Some(format!(
                    "stopped before every log was fetched; {written} stored"
                )),
            )
        }
        None => (SourceStatus::Ok, None),
        Some(first) => {
            let status = if failures.len() == total {
                first.status()
            } else {
                SourceStatus::Partial
            };
            let text = format!(
                "{} of {total} log requests failed; first: {}",
                failures.len(),
                render_chain(*first)
            );
            (status, Some(text))
        }
    };
    ctx.part("logs", status, written, error);
}

/// Fetches one log into a tail-keeping spool. `Ok(false)` means there is no such log
/// (no previous instance, or a container that has not started).
/// One List page, parsed; `None` when it is longer than `PAGE_LIMIT`.
async fn read_page(stream: impl futures::AsyncRead) -> Result<Option<Value>, kube::Error> {
    let mut stream = std::pin::pin!(stream);
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(kube::Error::ReadEvents)?;
        if n == 0 {
            break;
        }
        if body.len() + n > PAGE_LIMIT {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..n]);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(kube::Error::SerdeError)
}

async fn fetch_log(
    client: &kube::Client,
    job: &LogJob,
    since: Option<k8s_openapi::jiff::Timestamp>,
    cap: u64,
    reason: &str,
    ctx: &SourceContext,
) -> Result<bool, KubernetesError> {
    let params = LogParams {
        container: Some(job.container.clone()),
        previous: job.previous,
        timestamps: true,
        since_time: since,
        ..Default::default()
    };
    let log_err = |source| KubernetesError::Log {
        namespace: job.namespace.clone(),
        pod: job.pod.clone(),
        container: job.container.clone(),
        source,
    };
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", job.namespace))
        .logs(&job.pod, &params)
        .map_err(|e| log_err(kube::Error::BuildRequest(e)))?;
    let mut stream = match client.request_stream(request).await {
        Ok(stream) => stream,
        // The API server answers 400 for "previous terminated container … not found"
        // and for a container that "is waiting to start": there is no log to read. Any
        // other 400 is a real failure.
        Err(kube::Error::Api(status))
            if status.code == 400
                && (job.previous || status.message.contains("is waiting to start")) =>
        {
            tracing::debug!(pod = %job.pod, container = %job.container, previous = job.previous, message = %status.message, "no log");
            return Ok(false);
        }
        Err(e) => return Err(log_err(e)),
    };

    let path = paths::container_log(&job.namespace, &job.pod, &job.container, job.previous);
    let spool_err = |e| KubernetesError::Spool(path.clone(), e);
    let mut tail = TailSpool::new(cap).map_err(spool_err)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|source| KubernetesError::LogRead {
                pod: job.pod.clone(),
                container: job.container.clone(),
                source,
            })?;
        if n == 0 {
            break;
        }
        tail.write(&buf[..n]).map_err(spool_err)?;
    }
    let kept = tail.finish(reason).map_err(spool_err)?;
    if let Some(cut) = &kept.truncation {
        tracing::debug!(path = %path, original_bytes = cut.original_bytes, dropped_bytes = cut.dropped_bytes, "log cut to its tail");
    }
    ctx.add_items(kept.spool.lines);
    ctx.write(path.clone(), kept.spool, None, kept.truncation)
        .await
        .map_err(|e| KubernetesError::Store(path.clone(), e))?;
    Ok(true)
}

/// `8MiB`, `512KiB` or `1000B`: the cap as a user would have typed it.
fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_paths_follow_the_api_layout() {
        let r = resources();
        assert_eq!(
            list_path(&r[0].api, Some("shop")),
            "/apis/apps/v1/namespaces/shop/deployments"
        );
        assert_eq!(
            list_path(&r[2].api, Some("shop")),
            "/api/v1/namespaces/shop/pods"
        );
        assert_eq!(list_path(&r[2].api, None), "/api/v1/pods");
        assert_eq!(
            list_path(&r[4].api, Some("shop")),
            "/apis/events.k8s.io/v1/namespaces/shop/events"
        );
        assert_eq!(list_path(&r[5].api, None), "/api/v1/nodes");
        assert_eq!(
            list_path(&r[6].api, Some("shop")),
            "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods"
        );
        assert_eq!(r[6].api.api_version, "metrics.k8s.io/v1beta1");
        assert_eq!(r[4].api.api_version, "events.k8s.io/v1");
        assert!(!r.iter().any(|r| r.api.kind == "Secret"));
    }

    #[test]
    fn every_container_gets_a_current_and_a_previous_log_job() {
        let pod = json!({
            "metadata": {"name": "ingest-1", "namespace": "shop"},
            "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}]}
        });
        let jobs: Vec<(String, bool)> = log_jobs(&pod)
            .into_iter()
            .map(|j| (j.container, j.previous))
            .collect();
        assert_eq!(
            jobs,
            [
                ("migrate".to_owned(), false),
                ("migrate".to_owned(), true),
                ("app".to_owned(), false),
                ("app".to_owned(), true)
            ]
        );
    }

    fn api_error(code: u16) -> KubernetesError {
        let status: kube::core::Status =
            serde_json::from_value(json!({"kind": "Status", "code": code, "message": "m"}))
                .unwrap();
        KubernetesError::List {
            resource: "nodes",
            namespace: None,
            source: kube::Error::Api(Box::new(status)),
        }
    }

    #[test]
    fn api_errors_map_to_statuses() {
        assert_eq!(api_error(403).status(), SourceStatus::Forbidden);
        assert_eq!(api_error(401).status(), SourceStatus::Forbidden);
        assert_eq!(api_error(404).status(), SourceStatus::Unsupported);
        assert_eq!(api_error(503).status(), SourceStatus::Unreachable);
        assert_eq!(api_error(410).status(), SourceStatus::Failed);
        // A 403 is about one resource; a 401 is about the credentials, for every request.
        assert!(!api_error(403).fails_every_request());
        assert!(api_error(401).fails_every_request());
    }

    #[test]
    fn caps_are_named_as_typed() {
        assert_eq!(human_bytes(8 << 20), "8MiB");
        assert_eq!(human_bytes(512 << 10), "512KiB");
        assert_eq!(human_bytes(1000), "1000B");
    }
}
