//! The terminal report: one headline per finding with its numbers, confidence and next
//! command; then the timeline, the problems, and the sources that were not complete.
//!
//! Identifiers are in backticks so the report reads the same without colour.

use std::borrow::Cow;
use std::io::{self, Write};

use sitrep_schemas::report::{Detail, Finding, Report, Severity};

/// ANSI styling, or nothing at all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    pub(crate) color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn heading(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn severity(self, severity: Severity) -> String {
        let (code, label) = match severity {
            Severity::Critical => ("1;31", "CRITICAL"),
            Severity::Warning => ("1;33", "WARNING "),
            Severity::Info => ("36", "INFO    "),
        };
        self.paint(code, label)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

const INDENT: &str = "          ";

/// `text` with its control characters escaped (`\u{1b}`), and line breaks and tabs as
/// spaces. Names, labels, queries and log lines come from the bundle: printed as they
/// are, a hostile one could clear the terminal, retitle it or forge report lines.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The report with every string made printable. Going through its JSON form reaches
/// every string field, including those added later, without listing them here.
fn printable_report(report: &Report) -> Report {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let Cow::Owned(clean) = printable(text) {
                    *text = clean;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(report) else {
        return report.clone();
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or_else(|_| report.clone())
}

pub(crate) fn write(out: &mut dyn Write, report: &Report, style: Style) -> io::Result<()> {
    let report = &printable_report(report);
    let bundle = &report.bundle;
    writeln!(
        out,
        "{} `{}` (format {}, written by {} {} at {}; window {} – {}{})",
        style.heading("sitrep analysis of"),
        bundle.path,
        bundle.format_version,
        bundle.collector.name,
        bundle.collector.version,
        bundle.created_at.format("%Y-%m-%d %H:%M:%SZ"),
        bundle.window.start.format("%Y-%m-%d %H:%M:%SZ"),
        bundle.window.end.format("%H:%M:%SZ"),
        bundle
            .context
            .as_deref()
            .map_or_else(String::new, |c| format!("; context `{c}`"))
    )?;
    writeln!(out)?;

    if report.findings.is_empty() {
        writeln!(out, "No findings.")?;
    } else {
        let worth = report
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .count();
        writeln!(
            out,
            "{}",
            style.heading(&format!(
                "Findings ({} total, {worth} at warning or above)",
                report.findings.len()
            ))
        )?;
        for finding in &report.findings {
            writeln!(out)?;
            finding_block(out, finding, style)?;
        }
    }

    if !report.timeline.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", style.heading("Timeline (UTC)"))?;
        for event in &report.timeline {
            writeln!(
                out,
                "  {}  {:<20} {}",
                event.ts.format("%m-%d %H:%M:%S"),
                event.kind,
                event.text
            )?;
        }
    }

    if !report.problems.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{}",
            style.heading(&format!(
                "Problems reading the bundle ({})",
                report.problems.len()
            ))
        )?;
        for problem in &report.problems {
            let mut place = format!("`{}`", problem.file);
            if let Some(line) = problem.line {
                place.push_str(&format!(" line {line}"));
            }
            if let Some(field) = &problem.field {
                place.push_str(&format!(" field `{field}`"));
            }
            writeln!(out, "  {place}: {}", problem.message)?;
        }
    }

    let incomplete: Vec<_> = bundle
        .sources
        .iter()
        .filter(|s| !s.status.is_complete())
        .collect();
    if !incomplete.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", style.heading("Sources not fully collected"))?;
        for source in incomplete {
            let status = serde_json::to_value(source.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            writeln!(
                out,
                "  `{}` {status}{}",
                source.name,
                source
                    .error
                    .as_deref()
                    .map_or_else(String::new, |e| format!(": {e}"))
            )?;
            for part in source.parts.iter().filter(|p| !p.status.is_complete()) {
                writeln!(
                    out,
                    "    part `{}`{}",
                    part.name,
                    part.error
                        .as_deref()
                        .map_or_else(String::new, |e| format!(": {e}"))
                )?;
            }
        }
    }
    Ok(())
}

fn finding_block(out: &mut dyn Write, finding: &Finding, style: Style) -> io::Result<()> {
    writeln!(
        out,
        "{}  {}",
        style.severity(finding.severity),
        finding.title
    )?;
    let level = serde_json::to_value(finding.confidence.level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let when = finding
        .start
        .map_or_else(String::new, |t| format!(", at {}", t.format("%H:%M:%SZ")));
    writeln!(
        out,
        "{INDENT}{}",
        style.dim(&format!(
            "`{}`{when}, confidence {level} ({:.2})",
            finding.id, finding.confidence.score
        ))
    )?;
    for line in detail_lines(&finding.detail) {
        writeln!(out, "{INDENT}{line}")?;
    }
    for reason in &finding.confidence.reasons {
        writeln!(out, "{INDENT}- {reason}")?;
    }
    for step in &finding.next_steps {
        writeln!(out, "{INDENT}next: {step}")?;
    }
    Ok(())
}

fn detail_lines(detail: &Detail) -> Vec<String> {
    match detail {
        Detail::RolloutRegression(r) => {
            let mut lines = vec![if r.from_image == r.to_image {
                format!("image {} (unchanged)", r.to_image.as_deref().unwrap_or("-"))
            } else {
                format!(
                    "image {} → {}",
                    r.from_image.as_deref().unwrap_or("-"),
                    r.to_image.as_deref().unwrap_or("-")
                )
            }];
            if !r.changes.is_empty() {
                lines.push(format!("changed: {}", r.changes.join("; ")));
            }
            lines
        }
        Detail::Oom(o) => {
            let mut lines = Vec::new();
            if let Some(cause) = &o.cause {
                lines.push(format!("cause: {cause}"));
            }
            if let Some(node) = &o.node {
                lines.push(format!("node `{node}`"));
            }
            lines
        }
        Detail::TimeoutBurst(t) => {
            let signatures: Vec<String> = t
                .signatures
                .iter()
                .map(|s| format!("`{}` {}", s.signature, s.count))
                .collect();
            let mut lines = vec![format!(
                "peak {} at {}; signatures: {}",
                t.peak_count,
                t.peak_minute.format("%H:%M"),
                signatures.join(", ")
            )];
            lines.extend(t.examples.iter().take(3).map(|e| format!("e.g. {e}")));
            lines
        }
        Detail::SlowQuery(q) => {
            let mut lines = Vec::new();
            if !q.blocking.is_empty() {
                let pids: Vec<String> = q.blocking.iter().map(i32::to_string).collect();
                lines.push(format!("blocks pids {}", pids.join(", ")));
            }
            let who: Vec<String> = [
                q.user.as_ref().map(|u| format!("user `{u}`")),
                q.database.as_ref().map(|d| format!("database `{d}`")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !who.is_empty() {
                lines.push(who.join(", "));
            }
            lines
        }
    }
}
