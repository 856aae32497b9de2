//! Command-line flags and conventional environment variables, resolved into the settings
//! one collection runs with.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use sitrep_schemas::Window;

use crate::bundle::Compression;

/// Snapshot an incident (metrics, Kubernetes objects and logs, running database queries)
/// into one bundle that `sitrep-analyze` reads offline.
#[derive(Debug, Parser)]
#[command(name = "sitrep-collect", version)]
pub(crate) struct Cli {
    /// How far back the window reaches from now, e.g. 90m or 3h; default 1h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "start")]
    pub(crate) since: Option<Duration>,
    /// Window start (RFC 3339); instead of --since.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) start: Option<DateTime<Utc>>,
    /// Window end (RFC 3339); needs --start; default now.
    #[arg(long, requires = "start", value_name = "RFC3339")]
    pub(crate) end: Option<DateTime<Utc>>,

    /// Bundle path; default ./sitrep-<context or "local">-<UTC time>.tar.zst. An existing
    /// file is never replaced.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub(crate) output: Option<PathBuf>,
    /// How the bundle is compressed; the default name's extension follows it.
    #[arg(long, value_enum, default_value = "zstd")]
    pub(crate) compression: Compression,

    #[command(flatten)]
    pub(crate) kubernetes: crate::sources::kubernetes::KubernetesArgs,

    #[command(flatten)]
    pub(crate) prometheus: crate::sources::prometheus::PrometheusArgs,

    #[command(flatten)]
    pub(crate) postgres: crate::sources::postgres::PostgresArgs,

    #[command(flatten)]
    pub(crate) neo4j: crate::sources::neo4j::Neo4jArgs,

    /// Sample rounds for PostgreSQL and Neo4j.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) samples: u32,
    /// Time between sample rounds.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) sample_interval: Duration,

    /// Each source's own deadline; what it gathered by then is kept.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) source_timeout: Duration,

    /// More log detail on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// No spinners on stderr, only log lines (also SITREP_NO_PROGRESS). Spinners are
    /// shown only when stderr is a terminal and neither -v nor -q is given.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

/// How the sampling sources pace themselves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sampling {
    pub(crate) samples: u32,
    pub(crate) interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("the window is empty: --end {end} is not after --start {start}")]
    EmptyWindow {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("--since {0:?} reaches before the epoch")]
    SinceTooFar(Duration),
}

impl Cli {
    pub(crate) fn window(&self, now: DateTime<Utc>) -> Result<Window, ConfigError> {
        let window = match (self.start, self.since) {
            (Some(start), _) => Window {
                start,
                end: self.end.unwrap_or(now),
            },
            (None, since) => {
                let since = since.unwrap_or(Duration::from_secs(3600));
                let back = chrono::Duration::from_std(since)
                    .ok()
                    .and_then(|d| now.checked_sub_signed(d))
                    .ok_or(ConfigError::SinceTooFar(since))?;
                Window {
                    start: back,
                    end: now,
                }
            }
        };
        if window.end <= window.start {
            return Err(ConfigError::EmptyWindow {
                start: window.start,
                end: window.end,
            });
        }
        Ok(window)
    }

    pub(crate) fn sampling(&self) -> Sampling {
        Sampling {
            samples: self.samples,
            interval: self.sample_interval,
        }
    }
}

/// The default bundle name: `sitrep-<context or local>-<yyyymmddThhmmssZ>.<ext>`.
pub(crate) fn default_output(
    context: Option<&str>,
    created_at: DateTime<Utc>,
    compression: Compression,
) -> PathBuf {
    let who = sitrep_schemas::paths::segment(context.unwrap_or("local"));
    PathBuf::from(format!(
        "sitrep-{who}-{}.{}",
        created_at.format("%Y%m%dT%H%M%SZ"),
        compression.extension()
    ))
}

/// Parses a range-query step: whole seconds, at least one. The query log records steps
/// in seconds, and Prometheus refuses a zero step only after the run has started.
pub(crate) fn parse_step(text: &str) -> Result<Duration, String> {
    let step = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if step < Duration::from_secs(1) || step.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}` is not a whole number of seconds of at least 1s"
        ));
    }
    Ok(step)
}

/// Parses a byte size such as `8MiB`, `512KiB`, `1G` or `4096`; units are powers of 1024
/// for `KiB/MiB/GiB` and the short `K/M/G`, and of 1000 for `KB/MB/GB`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("sitrep-collect").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_bytes("512KiB"), Ok(524_288));
        assert_eq!(parse_bytes("1G"), Ok(1_073_741_824));
        assert_eq!(parse_bytes("2MB"), Ok(2_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("8 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
    }

    #[test]
    fn every_flag_says_what_it_does() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let silent: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(silent.is_empty(), "flags without help: {silent:?}");
    }

    #[test]
    fn steps_are_whole_seconds_of_at_least_one() {
        assert_eq!(parse_step("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_step("1m 30s"), Ok(Duration::from_secs(90)));
        for bad in ["0s", "500ms", "1s 500ms", "soon"] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
        let err = Cli::try_parse_from(["x", "--step", "0s"]).unwrap_err();
        assert!(err.to_string().contains("--step"), "{err}");
    }

    #[test]
    fn window_defaults_to_the_last_hour() {
        let now: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let w = cli(&[]).window(now).unwrap();
        assert_eq!(
            w.start,
            "2026-03-01T11:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(w.end, now);
        let w = cli(&["--since", "3h"]).window(now).unwrap();
        assert_eq!(
            w.start,
            "2026-03-01T09:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn explicit_window_is_checked() {
        let now: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let w = cli(&[
            "--start",
            "2026-03-01T10:00:00Z",
            "--end",
            "2026-03-01T10:30:00Z",
        ])
        .window(now)
        .unwrap();
        assert_eq!(
            w.end,
            "2026-03-01T10:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let empty = cli(&[
            "--start",
            "2026-03-01T10:00:00Z",
            "--end",
            "2026-03-01T10:00:00Z",
        ]);
        assert!(empty.window(now).is_err());
        assert!(
            Cli::try_parse_from(["x", "--since", "1h", "--start", "2026-03-01T10:00:00Z"]).is_err()
        );
        assert!(Cli::try_parse_from(["x", "--end", "2026-03-01T10:00:00Z"]).is_err());
    }

    #[test]
    fn default_output_names_context_and_utc_time() {
        let at: DateTime<Utc> = "2026-03-01T09:08:07Z".parse().unwrap();
        assert_eq!(
            default_output(Some("prod/eu"), at, Compression::Zstd),
            PathBuf::from("sitrep-prod_eu-20260301T090807Z.tar.zst")
        );
        assert_eq!(
            default_output(None, at, Compression::Gzip),
            PathBuf::from("sitrep-local-20260301T090807Z.tar.gz")
        );
    }
}
