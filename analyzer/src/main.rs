//! `sitrep-analyze`: reads a sitrep bundle offline and reports what happened.
//!
//! read (bundle) → load (tables) → detect (findings) → correlate (timeline) → report.
//! The report goes to stdout; logs go to stderr.

mod bundle;
mod correlate;
mod detect;
mod load;
mod report;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use sitrep_schemas::report::{BundleSummary, Problem, Report};
use sitrep_schemas::{ToolInfo, exit};

use crate::bundle::BundleReader;
use crate::detect::Thresholds;
use crate::load::Loader;
use crate::report::text::printable;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Read a sitrep bundle offline and say what happened: rollout regressions, OOM kills,
/// timeout bursts, slow and blocked queries.
///
/// Exit status: 0 no finding at warning or above, 1 findings, 2 the bundle could not be
/// read in full (the report is still printed).
#[derive(Debug, Parser)]
#[command(name = "sitrep-analyze", version)]
struct Cli {
    /// The bundle (`.tar.zst` or `.tar.gz`; the compression is read from its first bytes).
    bundle: PathBuf,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Colour the text report: `auto` colours a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    /// Minutes compared before and after each rollout, at most (shortened to the data).
    #[arg(long, default_value_t = 30, value_name = "MINUTES", value_parser = clap::value_parser!(i64).range(1..=MAX_MINUTES))]
    rollout_window: i64,

    /// Minutes after a rollout left out of the comparison while new pods warm up.
    #[arg(long, default_value_t = 5, value_name = "MINUTES", value_parser = clap::value_parser!(i64).range(0..=MAX_MINUTES))]
    warmup: i64,

    /// Fewest per-minute points on each side of a rollout before anything is claimed.
    #[arg(long, default_value_t = 10, value_name = "N")]
    min_points: usize,

    /// Significance level of the latency and error tests.
    #[arg(long, default_value_t = 0.01, value_name = "P", value_parser = probability)]
    p_value: f64,

    /// Smallest p99 ratio (after / before) that counts as a regression.
    #[arg(long, default_value_t = 1.2, value_name = "RATIO", value_parser = finite_number)]
    min_latency_ratio: f64,

    /// Smallest rise of the 5xx ratio, in percentage points, that counts as a regression.
    #[arg(long, default_value_t = 1.0, value_name = "POINTS", value_parser = finite_number)]
    min_error_rise: f64,

    /// Fewest timeouts in one minute that can make a burst.
    #[arg(long, default_value_t = 5.0, value_name = "N", value_parser = finite_number)]
    burst_min_count: f64,

    /// How many robust deviations above a service's usual rate a burst minute must be.
    #[arg(long, default_value_t = 3.0, value_name = "K", value_parser = finite_number)]
    burst_k: f64,

    /// Queries, idle transactions and Neo4j transactions older than this are reported.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS", value_parser = finite_number)]
    slow_query_seconds: f64,

    /// Largest decompressed size read from one bundle entry (a guard against bombs).
    #[arg(long, default_value_t = bundle::DEFAULT_MAX_ENTRY_BYTES, value_name = "BYTES")]
    max_entry_bytes: u64,
}

/// Largest window or warm-up in minutes: a year, far past any collection window, and
/// small enough that the detectors' millisecond arithmetic cannot overflow.
const MAX_MINUTES: i64 = 366 * 24 * 60;

/// A threshold compared with measured values. NaN or an infinity would compare false
/// (or true) with everything and silently switch a detector off.
fn finite_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        Ok(_) => Err("must be a finite number, zero or more".into()),
        Err(error) => Err(error.to_string()),
    }
}

fn probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= 1.0 => Ok(value),
        Ok(_) => Err("must be above 0 and at most 1".into()),
        Err(error) => Err(error.to_string()),
    }
}

impl Cli {
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            rollout_window_minutes: self.rollout_window,
            warmup_minutes: self.warmup,
            min_points: self.min_points,
            p_value: self.p_value,
            min_latency_ratio: self.min_latency_ratio,
            min_error_rise: self.min_error_rise / 100.0,
            burst_k: self.burst_k,
            burst_min_count: self.burst_min_count,
            slow_query_seconds: self.slow_query_seconds,
            ..Thresholds::default()
        }
    }

    /// Whether to colour what goes to a stream: `--color` first, then NO_COLOR, then
    /// whether that stream is a terminal.
    fn color(&self, terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && terminal
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // The subscriber colours by default even into a pipe or a file.
        .with_ansi(cli.color(std::io::stderr().is_terminal()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    match run(&cli) {
        Ok(code) => exit_code(code),
        Err(error) => {
            let mut stderr = std::io::stderr().lock();
            // Causes quote the bundle's bytes (a tar header field, say), so they are made
            // printable like everything else taken from it.
            let _ = writeln!(stderr, "error: {}", printable(&error.to_string()));
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                let _ = writeln!(stderr, "  Caused by: {}", printable(&inner.to_string()));
                cause = inner.source();
            }
            exit_code(exit::ANALYZE_ERROR)
        }
    }
}

/// One damaged file can hold thousands of bad points; past this many problems the rest
/// of that file's are counted in one closing line instead of listed.
const PROBLEMS_PER_FILE: usize = 5;

/// Keeps the first `limit` problems of each file, in order, and adds one line per file
/// saying how many more there were.
fn cap_problems_per_file(problems: Vec<Problem>, limit: usize) -> Vec<Problem> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept = Vec::with_capacity(problems.len().min(64));
    for problem in problems {
        let count = seen.entry(problem.file.clone()).or_default();
        *count += 1;
        if *count <= limit {
            kept.push(problem);
        }
    }
    for (file, count) in seen {
        if count > limit {
            kept.push(Problem {
                message: format!(
                    "{} more problems in this file were not listed",
                    count - limit
                ),
                file,
                line: None,
                field: None,
            });
        }
    }
    kept
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

/// Why the analyzer stopped without a report.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot read bundle `{}`", path.display())]
    Bundle {
        path: PathBuf,
        #[source]
        source: bundle::BundleError,
    },
    #[error("cannot write the report")]
    Output(#[source] std::io::Error),
}

fn run(cli: &Cli) -> Result<i32, RunError> {
    let mut loader = Loader::new(detect::timeouts::Lexicon::default());
    let contents = BundleReader::new(cli.max_entry_bytes)
        .read(&cli.bundle, &mut loader)
        .map_err(|source| RunError::Bundle {
            path: cli.bundle.clone(),
            source,
        })?;
    let mut problems = contents.problems;
    let tables = loader.finish(&mut problems);
    let problems = cap_problems_per_file(problems, PROBLEMS_PER_FILE);
    for problem in &problems {
        tracing::warn!(stage = "load", error_type = "problem", file = %printable(&problem.file), line = ?problem.line, error = %printable(&problem.message), "part of the bundle could not be read");
    }

    let header = &contents.header;
    let window = (
        header.window.start.timestamp_millis(),
        header.window.end.timestamp_millis(),
    );
    let mut findings = detect::run_all(&tables, window, &cli.thresholds());
    correlate::link(&mut findings);
    correlate::order(&mut findings);
    let timeline = correlate::timeline(&tables, &findings, window);

    let report = Report {
        report_version: sitrep_schemas::REPORT_VERSION,
        tool: ToolInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        bundle: BundleSummary {
            path: cli.bundle.display().to_string(),
            format_version: header.format_version,
            created_at: header.created_at,
            collector: header.tool.clone(),
            context: header.context.clone(),
            window: header.window,
            sources: contents.manifest.map(|m| m.sources).unwrap_or_default(),
        },
        findings,
        problems,
        timeline,
    };

    let mut stdout = std::io::stdout().lock();
    match cli.format {
        Format::Json => report::json::write(&mut stdout, &report),
        Format::Text => report::text::write(
            &mut stdout,
            &report,
            report::text::Style {
                color: cli.color(std::io::stdout().is_terminal()),
            },
        ),
    }
    .and_then(|()| stdout.flush())
    .or_else(|error| {
        // A reader that stopped early (`| head`) has what it wanted.
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(RunError::Output(error))
        }
    })?;
    Ok(report::exit_code(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, line: u64) -> Problem {
        Problem {
            file: file.into(),
            line: Some(line),
            field: None,
            message: "bad".into(),
        }
    }

    #[test]
    fn problems_past_the_limit_are_counted_per_file() {
        let mut problems: Vec<Problem> = (1..=8).map(|n| at("prometheus/a.json", n)).collect();
        problems.push(at("k8s/pods.ndjson", 3));
        let capped = cap_problems_per_file(problems, 5);

        let lines: Vec<(&str, Option<u64>)> =
            capped.iter().map(|p| (p.file.as_str(), p.line)).collect();
        assert_eq!(
            lines,
            [
                ("prometheus/a.json", Some(1)),
                ("prometheus/a.json", Some(2)),
                ("prometheus/a.json", Some(3)),
                ("prometheus/a.json", Some(4)),
                ("prometheus/a.json", Some(5)),
                ("k8s/pods.ndjson", Some(3)),
                ("prometheus/a.json", None),
            ]
        );
        assert_eq!(
            capped[6].message,
            "3 more problems in this file were not listed"
        );
    }
}
