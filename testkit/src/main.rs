//! `sitrep-testkit`: serves the incident scenario from real and replayed parts, for the
//! demo and for trying `sitrep-collect` by hand.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use sitrep_testkit::neo4j::Neo4jMode;
use sitrep_testkit::postgres::Postgres;
use sitrep_testkit::prometheus::{self, Prometheus};
use sitrep_testkit::replay::{Replay, ReplayOptions, write_private};
use sitrep_testkit::scenario::{Scenario, anchor_now};
use sitrep_testkit::sessions::Sessions;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the replayed Kubernetes API and Neo4j endpoint and write a kubeconfig.
    Replay {
        /// The scenario's `T`, RFC 3339; defaults to now.
        #[arg(long)]
        anchor: Option<DateTime<Utc>>,
        /// Where to write the kubeconfig.
        #[arg(long, default_value = "kubeconfig")]
        kubeconfig: PathBuf,
        /// Which Neo4j generation to imitate.
        #[arg(long, value_enum, default_value = "5")]
        neo4j_mode: Neo4jMode,
        /// Refuse Kubernetes requests that lack the kubeconfig's bearer token (kubectl
        /// does not send it over plain HTTP).
        #[arg(long)]
        require_token: bool,
    },
    /// Start everything the scenario needs, anchored at now: PostgreSQL with the
    /// sessions, Prometheus with the backfilled history, and the replay. Runs until
    /// interrupted, then tears everything down.
    Up {
        /// Folder for the kubeconfig and the env file; a temporary one by default.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where to write the shell-sourceable env file, written last, once all is ready.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// Write the scenario's metric history as OpenMetrics text (for promtool).
    Openmetrics {
        #[arg(long)]
        anchor: Option<DateTime<Utc>>,
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let scenario = Scenario::incident();
    match cli.command {
        Command::Replay {
            anchor,
            kubeconfig,
            neo4j_mode,
            require_token,
        } => {
            let mut options = ReplayOptions::new(anchor.unwrap_or_else(anchor_now));
            options.neo4j_mode = neo4j_mode;
            options.require_token = require_token;
            let replay =
                Replay::start(&scenario, &options).context("could not start the replay")?;
            replay
                .write_kubeconfig(&kubeconfig)
                .with_context(|| format!("could not write {}", kubeconfig.display()))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "anchor={}", options.anchor.to_rfc3339())?;
            writeln!(out, "kubernetes={}", replay.kubernetes_url())?;
            writeln!(out, "neo4j={}", replay.neo4j_url())?;
            writeln!(out, "kubeconfig={}", kubeconfig.display())?;
            drop(out);
            wait_for_signal()?;
        }
        Command::Up { dir, env_file } => up(&scenario, dir, env_file)?,
        Command::Openmetrics { anchor, output } => {
            let file = std::fs::File::create(&output)
                .with_context(|| format!("could not create {}", output.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            prometheus::write_openmetrics(
                &scenario,
                anchor.unwrap_or_else(anchor_now),
                &mut writer,
            )?;
            writer.flush()?;
        }
    }
    Ok(())
}

fn up(scenario: &Scenario, dir: Option<PathBuf>, env_file: Option<PathBuf>) -> anyhow::Result<()> {
    let temporary;
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
            dir
        }
        None => {
            temporary = tempfile::Builder::new().prefix("sitrep-demo-").tempdir()?;
            temporary.path().to_owned()
        }
    };
    let anchor = anchor_now();

    let prometheus = Prometheus::start(scenario, anchor).context("could not start Prometheus")?;
    let replay = Replay::start(scenario, &ReplayOptions::new(anchor))
        .context("could not start the replay")?;
    let kubeconfig = dir.join("kubeconfig");
    replay
        .write_kubeconfig(&kubeconfig)
        .context("could not write the kubeconfig")?;
    let postgres = Postgres::start().context("could not start PostgreSQL")?;
    postgres.create_database(&scenario.postgres.database)?;
    let conninfo = postgres.conninfo(&scenario.postgres.database);
    let sessions =
        Sessions::open(&conninfo, &scenario.postgres).context("could not open the sessions")?;

    let mut env: Vec<(String, String)> = [
        ("SITREP_ANCHOR", anchor.to_rfc3339()),
        ("SITREP_KUBECONFIG", kubeconfig.display().to_string()),
        ("SITREP_CONTEXT", scenario.cluster.context.clone()),
        ("SITREP_PROMETHEUS_URL", prometheus.url()),
        (
            "SITREP_POSTGRES",
            format!("{}={conninfo}", scenario.postgres.target),
        ),
        ("SITREP_NEO4J_URL", replay.neo4j_url()),
        ("SITREP_NEO4J_USER", scenario.neo4j.user.clone()),
        ("SITREP_NEO4J_PASSWORD", scenario.neo4j.password.clone()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    for (session, pid) in sessions.pids() {
        env.push((format!("SITREP_PID_{session}"), pid.to_string()));
    }
    let env_path = env_file.unwrap_or_else(|| dir.join("env"));
    write_env(&env_path, &env)
        .with_context(|| format!("could not write {}", env_path.display()))?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "env file: {}", env_path.display())?;
    writeln!(out, "after `. {}`, collect with:", env_path.display())?;
    writeln!(
        out,
        "sitrep-collect --kubeconfig \"$SITREP_KUBECONFIG\" --context \"$SITREP_CONTEXT\" \
         --prometheus-url \"$SITREP_PROMETHEUS_URL\" --postgres \"$SITREP_POSTGRES\" \
         --neo4j-url \"$SITREP_NEO4J_URL\" --neo4j-user \"$SITREP_NEO4J_USER\" \
         --neo4j-password \"$SITREP_NEO4J_PASSWORD\" --since 3h"
    )?;
    drop(out);
    tracing::info!(stage = "up", anchor = %anchor, "scenario ready; stop with Ctrl-C");

    wait_for_signal()?;
    tracing::info!(stage = "down", "stopping");
    let _ = std::fs::remove_file(&env_path);
    drop(sessions);
    drop(postgres);
    drop(replay);
    drop(prometheus);
    Ok(())
}

/// A file `sh` can source: one `NAME='value'` a line. Written under a temporary name
/// and renamed, so a reader that sees it sees all of it.
fn write_env(path: &Path, env: &[(String, String)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (name, value) in env {
        text.push_str(&format!("{name}='{}'\n", value.replace('\'', r"'\''")));
    }
    let partial = path.with_extension("partial");
    write_private(&partial, text.as_bytes())?;
    std::fs::rename(partial, path)
}

fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    })?;
    Ok(())
}
