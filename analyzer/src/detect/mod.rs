//! Detectors: each reads the tables and returns findings of one kind.
//!
//! The helpers here pull metric series out of the `metrics` table with polars, so every
//! detector sees the same per-minute grain.

pub(crate) mod db_queries;
pub(crate) mod oom;
pub(crate) mod rollout_regression;
pub(crate) mod stats;
pub(crate) mod timeouts;

use polars::prelude::*;
use sitrep_schemas::report::Finding;

use crate::load::Tables;

/// Every threshold a detector uses, with the defaults the CLI shows.
#[derive(Debug, Clone)]
pub(crate) struct Thresholds {
    /// Minutes compared on each side of a rollout, at most.
    pub(crate) rollout_window_minutes: i64,
    /// Minutes after a rollout left out while new pods warm up.
    pub(crate) warmup_minutes: i64,
    /// Fewer per-minute points than this on either side: insufficient data.
    pub(crate) min_points: usize,
    /// Significance level of the rank and proportion tests.
    pub(crate) p_value: f64,
    /// Smallest p99 ratio (after / before) that counts as a regression.
    pub(crate) min_latency_ratio: f64,
    /// Smallest rise of the 5xx ratio, in fraction of requests, that counts.
    pub(crate) min_error_rise: f64,
    /// Timeout bursts: MAD multiplier, floor for a hot minute, merge gap in minutes.
    pub(crate) burst_k: f64,
    pub(crate) burst_min_count: f64,
    pub(crate) burst_merge_minutes: usize,
    /// Queries and transactions running longer than this many seconds are reported.
    pub(crate) slow_query_seconds: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            rollout_window_minutes: 30,
            warmup_minutes: 5,
            min_points: 10,
            p_value: 0.01,
            min_latency_ratio: 1.2,
            min_error_rise: 0.01,
            burst_k: 3.0,
            burst_min_count: 5.0,
            burst_merge_minutes: 2,
            slow_query_seconds: 5.0,
        }
    }
}

/// Runs every detector over the tables.
pub(crate) fn run_all(
    tables: &Tables,
    window: (i64, i64),
    thresholds: &Thresholds,
) -> Vec<Finding> {
    let mut findings = rollout_regression::detect(tables, window, thresholds);
    findings.extend(oom::detect(tables));
    findings.extend(timeouts::detect(tables, window, thresholds));
    findings.extend(db_queries::detect(tables, thresholds));
    findings
}

/// A table query failing is a bug, not a finding; it is logged and the detector yields
/// nothing rather than guessing.
pub(crate) fn frame_error(detector: &str, error: &PolarsError) -> Vec<Finding> {
    tracing::error!(detector, stage = "detect", error_type = "table", error = %error, "detector could not query its table");
    Vec::new()
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricPoint {
    pub(crate) ts: i64,
    pub(crate) value: f64,
}

fn label_filter(query: &str, filters: &[(&str, &str)]) -> Expr {
    filters.iter().fold(
        col("query").eq(lit(query.to_owned())),
        |expr, (label, value)| expr.and(col(*label).eq(lit((*value).to_owned()))),
    )
}

/// Raw points of one query whose labels equal `filters`, in time order.
pub(crate) fn metric_points(
    metrics: &DataFrame,
    query: &str,
    filters: &[(&str, &str)],
) -> PolarsResult<Vec<MetricPoint>> {
    let selected = metrics
        .clone()
        .lazy()
        .filter(label_filter(query, filters))
        .select([col("ts"), col("value")])
        .sort(["ts"], SortMultipleOptions::default())
        .collect()?;
    let ts = selected.column("ts")?.datetime()?.physical().clone();
    let value = selected.column("value")?.f64()?;
    Ok(ts
        .iter()
        .zip(value.iter())
        .filter_map(|(ts, value)| {
            Some(MetricPoint {
                ts: ts?,
                value: value?,
            })
        })
        .collect())
}

/// Mean value per minute of one query, optionally per `le` bucket bound; rows are
/// `(minute ms, le, mean)` sorted by minute. NaN samples are left out of the mean.
pub(crate) fn per_minute(
    metrics: &DataFrame,
    query: &str,
    filters: &[(&str, &str)],
    by_le: bool,
) -> PolarsResult<Vec<(i64, Option<String>, f64)>> {
    let keys = if by_le {
        vec![col("minute"), col("le")]
    } else {
        vec![col("minute")]
    };
    let grouped = metrics
        .clone()
        .lazy()
        .filter(label_filter(query, filters).and(col("value").is_not_nan()))
        .group_by(keys)
        .agg([col("value").mean().alias("mean")])
        .sort(["minute"], SortMultipleOptions::default())
        .collect()?;
    let minute = grouped.column("minute")?.datetime()?.physical().clone();
    let mean = grouped.column("mean")?.f64()?;
    let le: Vec<Option<String>> = if by_le {
        grouped
            .column("le")?
            .str()?
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    } else {
        vec![None; grouped.height()]
    };
    Ok(minute
        .iter()
        .zip(le)
        .zip(mean.iter())
        .filter_map(|((minute, le), mean)| Some((minute?, le, mean?)))
        .collect())
}
