//! Exit codes of both binaries, documented once.
//!
//! Both follow the same three-way split: nothing to report, something to report, and an
//! error that means the output is incomplete.

/// `sitrep-collect`: every source was collected in full.
pub const COLLECT_OK: i32 = 0;
/// `sitrep-collect`: the bundle was written, but at least one source is not `ok`
/// (failed, forbidden, cut by a budget, interrupted). The manifest says which.
pub const COLLECT_PARTIAL: i32 = 1;
/// `sitrep-collect`: no bundle was written (bad arguments, output not writable, no
/// source configured at all).
pub const COLLECT_FAILED: i32 = 2;

/// `sitrep-analyze`: no finding at warning severity or above.
pub const ANALYZE_CLEAN: i32 = 0;
/// `sitrep-analyze`: at least one finding at warning severity or above.
pub const ANALYZE_FINDINGS: i32 = 1;
/// `sitrep-analyze`: the bundle could not be read in full (corrupt entry, checksum
/// mismatch, unparsable record) or not at all. Whatever could be read is still reported.
pub const ANALYZE_ERROR: i32 = 2;
