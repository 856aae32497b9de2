//! The scenario's metric history in a real Prometheus: generated as OpenMetrics text,
//! backfilled with `promtool tsdb create-blocks-from openmetrics`, and served by a
//! `prometheus` process on 127.0.0.1 that has no scrape jobs.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tempfile::TempDir;

use crate::http;
use crate::process::{self, CommandError};
use crate::scenario::{PodPlan, Scenario, noise};

/// The bucket bounds of `http_request_duration_seconds`, as the services export them.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("could not write the metric history")]
    Write(#[source] io::Error),
    #[error("promtool could not backfill the history; install the `prometheus` package")]
    Backfill(#[source] CommandError),
    #[error("could not start prometheus; install the `prometheus` package")]
    Spawn(#[source] io::Error),
    #[error("prometheus exited before it was ready ({status}); its output ends with: {output}")]
    Exited {
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("prometheus was not ready on {addr} within {seconds} s")]
    NotReady { addr: SocketAddr, seconds: u64 },
    #[error("the query to prometheus failed")]
    Query(#[source] io::Error),
    #[error("prometheus answered the query with HTTP {status}: {body}")]
    QueryStatus { status: u16, body: String },
}

/// Writes the scenario's history for `[T - span, T]` at the scrape interval as
/// OpenMetrics text: every sample of a family together, each series in time order.
pub fn write_openmetrics(
    scenario: &Scenario,
    anchor: DateTime<Utc>,
    out: &mut impl Write,
) -> io::Result<()> {
    let step = scenario.history.scrape_interval.as_secs() as i64;
    let start = scenario.history_start();
    let offsets: Vec<i64> = (0..=(-start / step)).map(|k| start + k * step).collect();
    let seed = scenario.history.seed;
    let ns = &scenario.cluster.namespace;
    let stamp = |offset: i64| anchor.timestamp() + offset;

    writeln!(
        out,
        "# HELP http_request_duration_seconds Time spent serving HTTP requests."
    )?;
    writeln!(out, "# TYPE http_request_duration_seconds histogram")?;
    let mut requests = Vec::new();
    for deployment in &scenario.deployments {
        let service = &deployment.name;
        let mut buckets = [0.0f64; BUCKETS.len()];
        let (mut total, mut sum, mut errors) = (0.0f64, 0.0f64, 0.0f64);
        let mut totals = Vec::with_capacity(offsets.len());
        for (index, &offset) in offsets.iter().enumerate() {
            let traffic = deployment.traffic_at(offset);
            let arrived = deployment.requests_per_second
                * step as f64
                * (1.0 + 0.08 * noise(seed, service, index as i64));
            let shares = cumulative_shares(&traffic.latency);
            let mut below = 0.0;
            for (bucket, share) in shares.iter().enumerate() {
                buckets[bucket] += arrived * share;
                let lower = if bucket == 0 {
                    0.0
                } else {
                    BUCKETS[bucket - 1]
                };
                sum += arrived * (share - below) * (lower + BUCKETS[bucket]) / 2.0;
                below = *share;
            }
            total += arrived;
            errors += arrived * traffic.error_ratio;
            totals.push((total.floor(), errors.floor()));

            let labels = format!("namespace=\"{ns}\",service=\"{service}\"");
            let mut block = String::new();
            for (bucket, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    block,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {} {}",
                    buckets[bucket].floor(),
                    stamp(offset)
                );
            }
            let _ = writeln!(
                block,
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {} {}",
                total.floor(),
                stamp(offset)
            );
            let _ = writeln!(
                block,
                "http_request_duration_seconds_sum{{{labels}}} {sum:.3} {}",
                stamp(offset)
            );
            let _ = writeln!(
                block,
                "http_request_duration_seconds_count{{{labels}}} {} {}",
                total.floor(),
                stamp(offset)
            );
            out.write_all(block.as_bytes())?;
        }
        requests.push((service, totals));
    }

    writeln!(
        out,
        "# HELP http_requests Total HTTP requests by status code."
    )?;
    writeln!(out, "# TYPE http_requests counter")?;
    for (service, totals) in &requests {
        for (code, pick) in [("200", 0usize), ("500", 1)] {
            for (offset, (total, errors)) in offsets.iter().zip(totals) {
                let value = if pick == 0 { total - errors } else { *errors };
                writeln!(
                    out,
                    "http_requests_total{{namespace=\"{ns}\",service=\"{service}\",code=\"{code}\"}} {value} {}",
                    stamp(*offset)
                )?;
            }
        }
    }

    let pods = scenario.pods();
    let container_series = |pod: &PodPlan| {
        let container = &scenario.deployments[pod.deployment].name;
        format!(
            "namespace=\"{ns}\",pod=\"{}\",container=\"{container}\"",
            pod.name
        )
    };
    let running_at = |pod: &PodPlan, offset: i64| {
        pod.instances.iter().position(|instance| {
            instance.started <= offset && instance.finished.is_none_or(|end| offset < end)
        })
    };

    writeln!(
        out,
        "# HELP container_cpu_usage_seconds Cumulative cpu time consumed in seconds."
    )?;
    writeln!(out, "# TYPE container_cpu_usage_seconds counter")?;
    for pod in &pods {
        let cores = scenario.deployments[pod.deployment].cpu_cores;
        let labels = container_series(pod);
        let mut used = 0.0f64;
        let mut instance_seen = None;
        for &offset in &offsets {
            let Some(instance) = running_at(pod, offset) else {
                continue;
            };
            // A new container starts its counter from zero, as cAdvisor's does.
            if instance_seen != Some(instance) {
                used = 0.0;
                instance_seen = Some(instance);
            }
            used += cores * step as f64 * (1.0 + 0.15 * noise(seed, &pod.name, offset));
            writeln!(
                out,
                "container_cpu_usage_seconds_total{{{labels}}} {used:.3} {}",
                stamp(offset)
            )?;
        }
    }

    writeln!(
        out,
        "# HELP container_memory_working_set_bytes Current working set in bytes."
    )?;
    writeln!(out, "# TYPE container_memory_working_set_bytes gauge")?;
    for pod in &pods {
        let labels = container_series(pod);
        for &offset in &offsets {
            if running_at(pod, offset).is_some() {
                writeln!(
                    out,
                    "container_memory_working_set_bytes{{{labels}}} {} {}",
                    scenario.working_set_at(pod, offset),
                    stamp(offset)
                )?;
            }
        }
    }

    writeln!(
        out,
        "# HELP kube_pod_container_status_restarts The number of container restarts per container."
    )?;
    writeln!(out, "# TYPE kube_pod_container_status_restarts counter")?;
    for pod in &pods {
        let labels = container_series(pod);
        for &offset in &offsets {
            if let Some(instance) = running_at(pod, offset) {
                writeln!(
                    out,
                    "kube_pod_container_status_restarts_total{{{labels}}} {instance} {}",
                    stamp(offset)
                )?;
            }
        }
    }

    writeln!(
        out,
        "# HELP kube_pod_container_status_last_terminated_reason Describes the last reason the container was in terminated state."
    )?;
    writeln!(
        out,
        "# TYPE kube_pod_container_status_last_terminated_reason gauge"
    )?;
    for pod in &pods {
        let labels = container_series(pod);
        for &offset in &offsets {
            let Some(instance) = running_at(pod, offset) else {
                continue;
            };
            if instance > 0 && pod.instances[instance - 1].oom_killed {
                writeln!(
                    out,
                    "kube_pod_container_status_last_terminated_reason{{{labels},reason=\"OOMKilled\"}} 1 {}",
                    stamp(offset)
                )?;
            }
        }
    }
    writeln!(out, "# EOF")
}

/// The share of requests at or below each standard bound, from a profile's listed
/// points: a bound takes the share of the nearest listed bound at or below it.
pub fn cumulative_shares(profile: &[(f64, f64)]) -> [f64; BUCKETS.len()] {
    let mut shares = [1.0; BUCKETS.len()];
    for (bucket, bound) in BUCKETS.iter().enumerate() {
        shares[bucket] = profile
            .iter()
            .rev()
            .find(|(le, _)| *le <= *bound + 1e-12)
            .map(|(_, share)| *share)
            .unwrap_or(0.0);
    }
    shares
}

/// A running Prometheus holding the scenario's history. Stopped on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    /// Generates and backfills the history anchored at `anchor`, then starts the server
    /// and waits for `/-/ready`.
    pub fn start(scenario: &Scenario, anchor: DateTime<Utc>) -> Result<Self, PrometheusError> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("sitrep-prom-")
            .tempdir()
            .map_err(PrometheusError::Write)?;
        let history = dir.path().join("history.om");
        let data = dir.path().join("data");
        let mut file =
            BufWriter::new(std::fs::File::create(&history).map_err(PrometheusError::Write)?);
        write_openmetrics(scenario, anchor, &mut file).map_err(PrometheusError::Write)?;
        file.flush().map_err(PrometheusError::Write)?;
        drop(file);

        let mut promtool = Command::new("promtool");
        promtool
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&history)
            .arg(&data);
        process::run(&mut promtool).map_err(PrometheusError::Backfill)?;
        let _ = std::fs::remove_file(&history);

        let config = dir.path().join("prometheus.yml");
        // No scrape jobs: the backfilled history is all the server holds.
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 15s\nscrape_configs: []\n",
        )
        .map_err(PrometheusError::Write)?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = process::free_port().map_err(PrometheusError::Write)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match launch(&config, &data, &dir, addr) {
                Ok(child) => {
                    tracing::info!(source = "prometheus", stage = "start", %addr,
                        elapsed_ms = started.elapsed().as_millis() as u64, "Prometheus ready");
                    return Ok(Prometheus {
                        child,
                        addr,
                        _dir: dir,
                    });
                }
                Err(PrometheusError::Exited { output, .. })
                    if attempt < START_ATTEMPTS && output.contains("address already in use") =>
                {
                    tracing::warn!(
                        source = "prometheus",
                        stage = "start",
                        error_type = "bind",
                        port,
                        "port taken, retrying"
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An instant query at `time`; returns the response body as JSON.
    pub fn query(
        &self,
        promql: &str,
        time: DateTime<Utc>,
    ) -> Result<serde_json::Value, PrometheusError> {
        let target = format!(
            "/api/v1/query?query={}&time={}",
            http::percent_encode(promql),
            time.timestamp()
        );
        let (status, body) =
            http::request(self.addr, "GET", &target, &[], b"").map_err(PrometheusError::Query)?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            return Err(PrometheusError::QueryStatus { status, body: text });
        }
        serde_json::from_str(&text).map_err(|error| PrometheusError::Query(io::Error::other(error)))
    }
}

fn launch(
    config: &Path,
    data: &Path,
    dir: &TempDir,
    addr: SocketAddr,
) -> Result<Child, PrometheusError> {
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).map_err(PrometheusError::Write)?;
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        // Long enough that the backfilled blocks are never deleted as too old.
        .arg("--storage.tsdb.retention.time=3650d")
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(PrometheusError::Write)?)
        .stderr(log)
        .spawn()
        .map_err(PrometheusError::Spawn)?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = output.lines().rev().take(5).collect();
            return Err(PrometheusError::Exited {
                status,
                output: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
        }
        if let Ok((200, _)) = http::request(addr, "GET", "/-/ready", &[], b"") {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PrometheusError::NotReady {
                addr,
                seconds: READY_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_step_between_listed_bounds() {
        let shares = cumulative_shares(&[(0.01, 0.02), (0.1, 0.97), (0.25, 1.0)]);
        assert_eq!(shares[0], 0.0); // 0.005: nothing listed at or below
        assert_eq!(shares[1], 0.02); // 0.01
        assert_eq!(shares[3], 0.02); // 0.05 keeps the share of 0.01
        assert_eq!(shares[4], 0.97); // 0.1
        assert_eq!(shares[5], 1.0); // 0.25
        assert_eq!(shares[10], 1.0); // 10
    }

    #[test]
    fn history_has_eof_and_monotonic_counters() {
        let scenario = Scenario::incident();
        let anchor = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 4, 14, 0, 0).unwrap();
        let mut text = Vec::new();
        write_openmetrics(&scenario, anchor, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.ends_with("# EOF\n"));
        let last: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.starts_with(
                    "http_request_duration_seconds_count{namespace=\"shop\",service=\"checkout\"}",
                )
            })
            .collect();
        // Three hours at 15 s, both ends included.
        assert_eq!(last.len(), 721);
        let values: Vec<f64> = last
            .iter()
            .map(|line| line.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(values.windows(2).all(|pair| pair[0] <= pair[1]));
        // About 20 requests a second for 3 h.
        let total = values[720];
        assert!((200_000.0..232_000.0).contains(&total), "{total}");
    }
}
