//! Renders the analysis: a terminal text report or the versioned JSON report.

pub(crate) mod json;
pub(crate) mod text;

use sitrep_schemas::exit;
use sitrep_schemas::report::{Report, Severity};

/// The exit code a report calls for: an error when anything could not be read (the
/// report is still printed), else whether any finding is at warning or above.
pub(crate) fn exit_code(report: &Report) -> i32 {
    if !report.problems.is_empty() {
        exit::ANALYZE_ERROR
    } else if report
        .findings
        .iter()
        .any(|f| f.severity >= Severity::Warning)
    {
        exit::ANALYZE_FINDINGS
    } else {
        exit::ANALYZE_CLEAN
    }
}
