//! `sitrep-collect`: snapshots an incident into one bundle.
//!
//! This file owns the run: flags to settings, which sources run, the writer's lifetime,
//! Ctrl-C, the stdout path line, the stderr summary and the exit code.

mod bundle;
mod config;
mod progress;
mod redact;
mod run;
mod sources;

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;
use clap::Parser;
use sitrep_schemas::header::BundleHeader;
use sitrep_schemas::manifest::{Manifest, SourceKind, SourceRecord, SourceStatus};
use sitrep_schemas::{FORMAT_VERSION, ToolInfo, exit};
use tokio::sync::watch;

use crate::bundle::{BundleWriter, Closing};
use crate::config::Cli;
use crate::progress::Progress;
use crate::run::{Classify, Outcome, run_source, status_name};
use crate::sources::kubernetes::{self, Resolution};
use crate::sources::{neo4j, postgres, prometheus};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::COLLECT_FAILED as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let show_progress = std::io::stderr().is_terminal()
        && !cli.no_progress
        && std::env::var_os("SITREP_NO_PROGRESS").is_none()
        && cli.verbose == 0
        && !cli.quiet;
    let progress = Progress::new(show_progress);
    init_logging(&cli, &progress);
    // reqwest is built without a default crypto provider; without one, building a
    // client panics. kube brings ring, so both use it.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(collect(cli, progress)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => fail(&e),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {err}");
    for cause in err.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
    ExitCode::from(exit::COLLECT_FAILED as u8)
}

fn init_logging(cli: &Cli, progress: &Progress) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,sitrep_collect=info",
        (false, 1) => "info,sitrep_collect=debug",
        (false, _) => "debug,sitrep_collect=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress.log_writer())
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A source that will run, with what it needs.
enum Planned {
    Kubernetes(Box<kubernetes::KubeTarget>),
    Prometheus(String),
    Postgres(Box<postgres::PgTarget>),
    Neo4j(neo4j::Neo4jTarget),
}

async fn collect(cli: Cli, progress: Progress) -> anyhow::Result<i32> {
    let created_at = Utc::now();
    let window = cli.window(created_at)?;
    if cli.prometheus.url.is_some() {
        let parts = prometheus::parts_needed(window, cli.prometheus.step);
        if parts > prometheus::MAX_PARTS {
            anyhow::bail!(
                "--step {} is too fine for a window of {}: each query would need {parts} \
                 range requests (at most {}); give --step {} or more",
                humantime::format_duration(cli.prometheus.step),
                humantime::format_duration(
                    (window.end - window.start).to_std().unwrap_or_default()
                ),
                prometheus::MAX_PARTS,
                humantime::format_duration(prometheus::smallest_step(window)),
            );
        }
    }
    let sampling = cli.sampling();

    // Sources that will not run still get a manifest record, so a reader can tell "not
    // asked for" from "asked for and failed".
    let mut settled: Vec<SourceRecord> = Vec::new();
    let mut planned: Vec<(String, Planned)> = Vec::new();

    let (context, cluster, header_namespaces, all_namespaces) = match kubernetes::resolve(
        &cli.kubernetes,
    )
    .await
    {
        Resolution::Ready(target) => {
            let info = (
                Some(target.context.clone()),
                target.cluster.clone(),
                target.namespaces.clone(),
                target.all_namespaces,
            );
            planned.push(("kubernetes".to_owned(), Planned::Kubernetes(target)));
            info
        }
        Resolution::Skipped(reason) => {
            tracing::info!(source = "kubernetes", reason = %reason, "source skipped");
            settled.push(settled_record(
                "kubernetes",
                SourceKind::Kubernetes,
                SourceStatus::Skipped,
                reason,
            ));
            (
                None,
                None,
                cli.kubernetes.namespaces.clone(),
                cli.kubernetes.all_namespaces,
            )
        }
        Resolution::Broken(e) => {
            let failure = e.failure();
            tracing::error!(source = "kubernetes", stage = "config", error_type = status_name(failure.status), error = %failure.error.replace('\n', ": "), "source cannot start");
            settled.push(settled_record(
                "kubernetes",
                SourceKind::Kubernetes,
                failure.status,
                failure.error,
            ));
            (
                cli.kubernetes.context.clone(),
                None,
                cli.kubernetes.namespaces.clone(),
                cli.kubernetes.all_namespaces,
            )
        }
    };

    match &cli.prometheus.url {
        Some(url) => planned.push(("prometheus".to_owned(), Planned::Prometheus(url.clone()))),
        None => settled.push(settled_record(
            "prometheus",
            SourceKind::Prometheus,
            SourceStatus::Skipped,
            "no --prometheus-url or PROMETHEUS_URL".to_owned(),
        )),
    }

    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut pg_targets = Vec::new();
    for text in &cli.postgres.targets {
        match postgres::parse_target(text, &env) {
            Ok(t) => pg_targets.push(t),
            Err(e) => {
                let failure = e.failure();
                settled.push(settled_record(
                    "postgres",
                    SourceKind::Postgres,
                    failure.status,
                    failure.error,
                ));
            }
        }
    }
    if cli.postgres.targets.is_empty() {
        match postgres::target_from_env(&env) {
            Some(t) => pg_targets.push(t),
            None => settled.push(settled_record(
                "postgres",
                SourceKind::Postgres,
                SourceStatus::Skipped,
                "no --postgres target and no PGHOST, PGPORT, PGUSER or PGDATABASE".to_owned(),
            )),
        }
    }
    let mut taken = std::collections::BTreeSet::<String>::new();
    for mut target in pg_targets {
        // Named as its folder is, so the manifest's source names its files and two
        // names that clean to the same folder are told apart; a suffix is taken only
        // when no other target holds it already.
        let base = sitrep_schemas::paths::segment(&target.name);
        let mut name = base.clone();
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{base}-{n}");
        }
        target.name = name;
        planned.push((
            format!("postgres/{}", target.name),
            Planned::Postgres(Box::new(target)),
        ));
    }

    match &cli.neo4j.url {
        Some(url) => match neo4j::Neo4jTarget::from_args(&cli.neo4j, url) {
            Ok(t) => planned.push((format!("neo4j/{}", t.name), Planned::Neo4j(t))),
            Err(e) => {
                let failure = e.failure();
                settled.push(settled_record(
                    "neo4j",
                    SourceKind::Neo4j,
                    failure.status,
                    failure.error,
                ));
            }
        },
        None => settled.push(settled_record(
            "neo4j",
            SourceKind::Neo4j,
            SourceStatus::Skipped,
            "no --neo4j-url or NEO4J_URI".to_owned(),
        )),
    }

    // With nothing configured the bundle would hold only a header and a manifest; far
    // likelier the user forgot a flag, so say so instead of writing an empty bundle.
    if planned.is_empty() && settled.iter().all(|s| s.status == SourceStatus::Skipped) {
        let reasons: Vec<String> = settled
            .iter()
            .map(|s| format!("{}: {}", s.name, s.error.as_deref().unwrap_or("skipped")))
            .collect();
        return Err(anyhow::anyhow!(reasons.join("; ")).context(
            "nothing to collect: give a kubeconfig or --context, --prometheus-url, \
             --postgres or --neo4j-url",
        ));
    }

    let output = cli
        .output
        .clone()
        .unwrap_or_else(|| config::default_output(context.as_deref(), created_at, cli.compression));
    let header = BundleHeader {
        format_version: FORMAT_VERSION,
        tool: ToolInfo {
            name: "sitrep-collect".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        created_at,
        window,
        context,
        cluster,
        namespaces: if all_namespaces {
            Vec::new()
        } else {
            header_namespaces
        },
        all_namespaces,
    };
    let interrupt_rx = watch_interrupts()?;
    let writer = BundleWriter::start(&output, cli.compression, &header)?;
    tracing::info!(output = %output.display(), start = %window.start, end = %window.end, sources = planned.len(), "collection started");

    let prom_namespaces = if cli.kubernetes.all_namespaces {
        Vec::new()
    } else {
        cli.kubernetes.namespaces.clone()
    };
    let mut tasks = Vec::new();
    for (name, plan) in planned {
        let writer = writer.clone();
        let interrupt = interrupt_rx.clone();
        let deadline = cli.source_timeout;
        let spinner = progress.source(&name);
        let task = match plan {
            Planned::Kubernetes(target) => tokio::spawn(run_source(
                name,
                SourceKind::Kubernetes,
                writer,
                deadline,
                interrupt,
                spinner,
                move |ctx| async move { kubernetes::collect(*target, window, ctx).await },
            )),
            Planned::Prometheus(url) => {
                let args = cli.prometheus.clone();
                let namespaces = prom_namespaces.clone();
                tokio::spawn(run_source(
                    name,
                    SourceKind::Prometheus,
                    writer,
                    deadline,
                    interrupt,
                    spinner,
                    move |ctx| prometheus::collect(args, url, window, namespaces, ctx),
                ))
            }
            Planned::Postgres(target) => tokio::spawn(run_source(
                name,
                SourceKind::Postgres,
                writer,
                deadline,
                interrupt,
                spinner,
                move |ctx| postgres::collect(*target, sampling, ctx),
            )),
            Planned::Neo4j(target) => tokio::spawn(run_source(
                name,
                SourceKind::Neo4j,
                writer,
                deadline,
                interrupt,
                spinner,
                move |ctx| neo4j::collect(target, sampling, ctx),
            )),
        };
        tasks.push(task);
    }

    let mut outcomes: Vec<Outcome> = Vec::new();
    for task in futures::future::join_all(tasks).await {
        match task {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                tracing::error!(stage = "run", error_type = "panic", error = %e, "a source task died")
            }
        }
    }

    let mut redactions = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    let mut records = Vec::new();
    for outcome in outcomes {
        for (rule, n) in outcome.redactions {
            *redactions.entry(rule).or_insert(0u64) += n;
        }
        sizes.insert(outcome.record.name.clone(), outcome.bytes);
        records.push(outcome.record);
    }
    records.extend(settled);
    records.sort_by_key(|r| source_order(r.kind));
    let interrupted = *interrupt_rx.borrow();

    progress.clear();
    let manifest = writer
        .finish(Closing {
            sources: records,
            redactions,
            interrupted,
        })
        .await?;
    print_result(&output, &manifest, &sizes);
    let complete = manifest.sources.iter().all(|s| s.status.is_complete()) && !manifest.interrupted;
    Ok(if complete {
        exit::COLLECT_OK
    } else {
        exit::COLLECT_PARTIAL
    })
}

/// Turns SIGINT (Ctrl-C) and SIGTERM into a stop for every source. The handlers are
/// installed before any source starts, so an early signal cannot kill the process
/// with the bundle half written.
fn watch_interrupts() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::warn!(
            signal = name,
            "interrupted; stopping sources and finishing the bundle"
        );
        let _ = tx.send(true);
    });
    Ok(rx)
}

fn source_order(kind: SourceKind) -> u8 {
    match kind {
        SourceKind::Kubernetes => 0,
        SourceKind::Prometheus => 1,
        SourceKind::Postgres => 2,
        SourceKind::Neo4j => 3,
    }
}

fn settled_record(
    name: &str,
    kind: SourceKind,
    status: SourceStatus,
    reason: String,
) -> SourceRecord {
    SourceRecord {
        name: name.to_owned(),
        kind,
        status,
        started_at: Utc::now(),
        duration_ms: 0,
        items: 0,
        error: Some(reason),
        parts: Vec::new(),
    }
}

/// The bundle path on stdout (the one thing scripts read), a per-source table on stderr.
fn print_result(output: &Path, manifest: &Manifest, sizes: &BTreeMap<String, u64>) {
    let mut err = std::io::stderr().lock();
    for s in &manifest.sources {
        let status = status_name(s.status);
        let size = sizes.get(&s.name).copied().unwrap_or(0);
        let _ = writeln!(
            err,
            "  {:<28} {:<12} {:>8} items {:>8.1}s {:>10}",
            s.name,
            status,
            s.items,
            s.duration_ms as f64 / 1000.0,
            human_size(size)
        );
        if !s.status.is_complete()
            && let Some(e) = &s.error
            && let Some(first) = e.lines().next()
        {
            let _ = writeln!(err, "      {first}");
        }
    }
    let _ = writeln!(std::io::stdout(), "{}", output.display());
}

fn human_size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    }
}
