//! Running one source: its context (writer handle, parts, items, redactions), its
//! deadline and stop signal, and how its outcome becomes a manifest `SourceRecord`.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sitrep_schemas::manifest::{PartRecord, SourceKind, SourceRecord, SourceStatus, Truncation};
use tokio::sync::watch;
use tracing::Instrument;

use crate::bundle::{BundleError, BundleWriter, Entry, FinishedSpool};
use crate::progress::SourceProgress;

/// Why a source was asked to stop before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Deadline,
    Interrupted,
}

impl StopReason {
    /// The status of whatever a stop cut short.
    pub(crate) fn status(self) -> SourceStatus {
        match self {
            StopReason::Deadline => SourceStatus::Timeout,
            StopReason::Interrupted => SourceStatus::Interrupted,
        }
    }
}

/// Lets a source see when it should stop early.
#[derive(Debug, Clone)]
pub(crate) struct StopSignal(watch::Receiver<Option<StopReason>>);

impl StopSignal {
    pub(crate) fn reason(&self) -> Option<StopReason> {
        *self.0.borrow()
    }

    /// Resolves once a stop is asked for (never, if it is not).
    pub(crate) async fn stopped(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|r| r.is_some()).await;
        if rx.borrow().is_none() {
            // The sender is gone without asking for a stop: nobody will ever ask.
            std::future::pending::<()>().await;
        }
    }
}

/// Everything a source's `collect` needs besides its own config.
#[derive(Debug)]
pub(crate) struct SourceContext {
    pub(crate) name: String,
    writer: BundleWriter,
    stop: StopSignal,
    progress: SourceProgress,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    parts: Vec<PartRecord>,
    items: u64,
    bytes: u64,
    redactions: BTreeMap<String, u64>,
}

impl SourceContext {
    /// Hands a finished spool to the archive under `path`.
    pub(crate) async fn write(
        &self,
        path: String,
        spool: FinishedSpool,
        records: Option<u64>,
        truncation: Option<Truncation>,
    ) -> Result<(), BundleError> {
        let size = spool.size;
        self.writer
            .append(Entry {
                path,
                spool,
                records,
                truncation,
                source: self.name.clone(),
            })
            .await?;
        self.lock().bytes += size;
        Ok(())
    }

    pub(crate) fn part(&self, name: &str, status: SourceStatus, items: u64, error: Option<String>) {
        let mut state = self.lock();
        state.parts.push(PartRecord {
            name: name.to_owned(),
            status,
            items,
            error,
        });
        self.progress.update(state.parts.len(), state.items);
    }

    /// Records `name` as cut short by the stop that is in effect, if any.
    pub(crate) fn stopped_part(&self, name: &str) {
        if let Some(reason) = self.stop.reason() {
            self.part(name, reason.status(), 0, None);
        }
    }

    pub(crate) fn add_items(&self, n: u64) {
        let mut state = self.lock();
        state.items += n;
        self.progress.update(state.parts.len(), state.items);
    }

    pub(crate) fn redacted(&self, rule: &str, n: u64) {
        if n > 0 {
            *self.lock().redactions.entry(rule.to_owned()).or_default() += n;
        }
    }

    pub(crate) fn stop(&self) -> &StopSignal {
        &self.stop
    }

    /// Runs `fut` unless a stop comes first; `None` means it was stopped.
    pub(crate) async fn until_stopped<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = fut => Some(out),
            () = self.stop.stopped() => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind; keep using them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A source's failure, classified for the manifest.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: SourceStatus,
    pub(crate) error: String,
}

/// Maps a source's error enum to a manifest status.
pub(crate) trait Classify: StdError {
    fn status(&self) -> SourceStatus;

    fn failure(&self) -> Failure
    where
        Self: Sized,
    {
        Failure {
            status: self.status(),
            error: render_chain(self),
        }
    }
}

/// What the runner hands back for one source.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) record: SourceRecord,
    pub(crate) bytes: u64,
    pub(crate) redactions: BTreeMap<String, u64>,
}

/// How long a source may still flush what it gathered after being told to stop.
const GRACE: Duration = Duration::from_secs(3);

/// Runs one source under its deadline and the shared interrupt signal.
pub(crate) async fn run_source<F, Fut>(
    name: String,
    kind: SourceKind,
    writer: BundleWriter,
    deadline: Duration,
    mut interrupt: watch::Receiver<bool>,
    progress: SourceProgress,
    collect: F,
) -> Outcome
where
    F: FnOnce(Arc<SourceContext>) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let (stop_tx, stop_rx) = watch::channel(None);
    let ctx = Arc::new(SourceContext {
        name: name.clone(),
        writer,
        stop: StopSignal(stop_rx),
        progress: progress.clone(),
        state: Mutex::new(State::default()),
    });
    let started_at = Utc::now();
    let clock = Instant::now();
    let span = tracing::info_span!("source", source = %name);
    tracing::info!(parent: &span, stage = "start", "source started");

    // Boxed so it can be dropped as soon as the source is done or out of grace, which
    // ends any request still in flight before the record is built.
    let mut fut = Box::pin(collect(ctx.clone()).instrument(span.clone()));
    let sleep = tokio::time::sleep(deadline);
    tokio::pin!(sleep);
    let interrupted = async {
        let _ = interrupt.wait_for(|&i| i).await;
        if !*interrupt.borrow() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(interrupted);

    let mut stopped = None;
    let mut result = tokio::select! {
        r = &mut fut => Some(r),
        () = &mut sleep => { stopped = Some(StopReason::Deadline); None }
        () = &mut interrupted => { stopped = Some(StopReason::Interrupted); None }
    };
    if let Some(reason) = stopped {
        let _ = stop_tx.send(Some(reason));
        result = tokio::time::timeout(GRACE, &mut fut).await.ok();
    }
    drop(fut);

    let outcome = finish_record(
        &ctx,
        kind,
        started_at,
        clock.elapsed(),
        result,
        stopped,
        deadline,
    );
    progress.finish(status_name(outcome.record.status), outcome.record.items);
    tracing::info!(
        parent: &span,
        stage = "finish",
        status = status_name(outcome.record.status),
        items = outcome.record.items,
        bytes = outcome.bytes,
        duration_ms = outcome.record.duration_ms,
        "source finished"
    );
    outcome
}

fn finish_record(
    ctx: &SourceContext,
    kind: SourceKind,
    started_at: DateTime<Utc>,
    elapsed: Duration,
    result: Option<Result<(), Failure>>,
    stopped: Option<StopReason>,
    deadline: Duration,
) -> Outcome {
    let state = std::mem::take(&mut *ctx.lock());
    let (status, error) = match (stopped, result) {
        (Some(StopReason::Deadline), _) => (
            SourceStatus::Timeout,
            Some(format!(
                "source deadline of {} passed; what was gathered is kept",
                humantime::format_duration(deadline)
            )),
        ),
        (Some(StopReason::Interrupted), _) => (
            SourceStatus::Interrupted,
            Some("interrupted; what was gathered is kept".to_owned()),
        ),
        (None, Some(Err(failure))) => (failure.status, Some(failure.error)),
        (None, Some(Ok(()))) | (None, None) => status_from_parts(&state.parts),
    };
    Outcome {
        record: SourceRecord {
            name: ctx.name.clone(),
            kind,
            status,
            started_at,
            duration_ms: elapsed.as_millis() as u64,
            items: state.items,
            error,
            parts: state.parts,
        },
        bytes: state.bytes,
        redactions: state.redactions,
    }
}

/// A source that ran to its end is `ok` when every part is complete, takes the parts'
/// common status when all of them failed the same way, and is `partial` otherwise.
pub(crate) fn status_from_parts(parts: &[PartRecord]) -> (SourceStatus, Option<String>) {
    let failed: Vec<&PartRecord> = parts.iter().filter(|p| !p.status.is_complete()).collect();
    if failed.is_empty() {
        return (SourceStatus::Ok, None);
    }
    let first = failed[0];
    let detail = first
        .error
        .as_deref()
        .map(|e| format!("\n{}: {e}", first.name))
        .unwrap_or_default();
    if failed.len() == parts.len() {
        let status = if failed.iter().all(|p| p.status == first.status) {
            first.status
        } else {
            SourceStatus::Failed
        };
        return (
            status,
            Some(format!(
                "every part failed ({} of them){detail}",
                parts.len()
            )),
        );
    }
    let names: Vec<&str> = failed.iter().map(|p| p.name.as_str()).collect();
    (
        SourceStatus::Partial,
        Some(format!(
            "{} of {} parts not collected: {}{detail}",
            failed.len(),
            parts.len(),
            names.join(", ")
        )),
    )
}

/// Renders an error as its headline and one line per cause. A cause whose text the line
/// above already contains is left out, since some libraries repeat their source.
pub(crate) fn render_chain(err: &dyn StdError) -> String {
    let mut lines = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !lines.last().is_some_and(|prev| prev.contains(&text)) {
            lines.push(format!("caused by: {text}"));
        }
        cause = c.source();
    }
    lines.join("\n")
}

/// The manifest's name for a status (`unreachable`, `over_budget`, …), for log fields.
pub(crate) fn status_name(status: SourceStatus) -> &'static str {
    match status {
        SourceStatus::Ok => "ok",
        SourceStatus::Partial => "partial",
        SourceStatus::Forbidden => "forbidden",
        SourceStatus::Timeout => "timeout",
        SourceStatus::Unreachable => "unreachable",
        SourceStatus::Unsupported => "unsupported",
        SourceStatus::Malformed => "malformed",
        SourceStatus::OverBudget => "over_budget",
        SourceStatus::Interrupted => "interrupted",
        SourceStatus::Skipped => "skipped",
        SourceStatus::Failed => "failed",
    }
}

/// The same chain on one line, `: `-separated, for log fields.
pub(crate) fn one_line(err: &dyn StdError) -> String {
    render_chain(err).replace("\ncaused by: ", ": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, status: SourceStatus) -> PartRecord {
        PartRecord {
            name: name.into(),
            status,
            items: 0,
            error: Some(format!("{name} broke")),
        }
    }

    #[test]
    fn all_parts_complete_is_ok() {
        let parts = [
            part("a", SourceStatus::Ok),
            part("b", SourceStatus::Skipped),
        ];
        assert_eq!(status_from_parts(&parts), (SourceStatus::Ok, None));
        assert_eq!(status_from_parts(&[]), (SourceStatus::Ok, None));
    }

    #[test]
    fn some_failed_parts_make_a_partial_source() {
        let parts = [
            part("pods", SourceStatus::Ok),
            part("nodes", SourceStatus::Forbidden),
        ];
        let (status, error) = status_from_parts(&parts);
        assert_eq!(status, SourceStatus::Partial);
        assert_eq!(
            error.unwrap(),
            "1 of 2 parts not collected: nodes\nnodes: nodes broke"
        );
    }

    #[test]
    fn parts_that_all_failed_alike_give_their_status() {
        let parts = [
            part("a", SourceStatus::Unreachable),
            part("b", SourceStatus::Unreachable),
        ];
        assert_eq!(status_from_parts(&parts).0, SourceStatus::Unreachable);
        let mixed = [
            part("a", SourceStatus::Unreachable),
            part("b", SourceStatus::Malformed),
        ];
        assert_eq!(status_from_parts(&mixed).0, SourceStatus::Failed);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot list pods")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("ApiError: forbidden")]
    struct Middle(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("forbidden")]
    struct Inner;

    #[test]
    fn status_names_match_the_manifest() {
        for status in [
            SourceStatus::Ok,
            SourceStatus::Partial,
            SourceStatus::Forbidden,
            SourceStatus::Timeout,
            SourceStatus::Unreachable,
            SourceStatus::Unsupported,
            SourceStatus::Malformed,
            SourceStatus::OverBudget,
            SourceStatus::Interrupted,
            SourceStatus::Skipped,
            SourceStatus::Failed,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status_name(status));
        }
    }

    #[test]
    fn chain_has_headline_then_causes_without_repeats() {
        assert_eq!(
            render_chain(&Outer(Middle(Inner))),
            "cannot list pods\ncaused by: ApiError: forbidden"
        );
    }
}
