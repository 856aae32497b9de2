//! The progress display: one spinner per source on stderr while a collection runs.
//!
//! It is shown only when stderr is a terminal and nothing asked for plain output
//! (`--no-progress`, `SITREP_NO_PROGRESS`, `-v`, `-q`), so pipes, CI logs and tests only
//! ever see log lines. Log lines are written through [`Progress::log_writer`], which lifts
//! the spinners out of the way for each line so the two never interleave.

use std::io::{self, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

const SPINNER: &str = "{spinner} {prefix:<28} {wide_msg}";

/// The display for the whole collection; hidden when `multi` is `None`.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub(crate) fn new(show: bool) -> Self {
        Progress {
            multi: show.then(MultiProgress::new),
        }
    }

    /// A spinner for one source.
    pub(crate) fn source(&self, name: &str) -> SourceProgress {
        let Some(multi) = &self.multi else {
            return SourceProgress(None);
        };
        let bar = multi.add(ProgressBar::new_spinner());
        // The template is a constant; a mistake in it is caught by the unit test below.
        if let Ok(style) = ProgressStyle::with_template(SPINNER) {
            bar.set_style(style);
        }
        bar.set_prefix(name.to_owned());
        bar.set_message("starting");
        bar.enable_steady_tick(Duration::from_millis(120));
        SourceProgress(Some(bar))
    }

    /// Removes the spinners before the final summary is printed.
    pub(crate) fn clear(&self) {
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }

    /// Where log lines go: stderr, around the spinners when they are shown.
    pub(crate) fn log_writer(&self) -> LogWriter {
        LogWriter {
            multi: self.multi.clone(),
        }
    }
}

/// One source's spinner; does nothing when the display is hidden.
#[derive(Debug, Clone)]
pub(crate) struct SourceProgress(Option<ProgressBar>);

impl SourceProgress {
    pub(crate) fn update(&self, parts: usize, items: u64) {
        if let Some(bar) = &self.0 {
            bar.set_message(format!("{parts} parts done, {items} items"));
        }
    }

    pub(crate) fn finish(&self, status: &str, items: u64) {
        if let Some(bar) = &self.0 {
            bar.finish_with_message(format!("{status}, {items} items"));
        }
    }
}

/// A `MakeWriter` for tracing that writes each event to stderr in one piece.
#[derive(Debug, Clone)]
pub(crate) struct LogWriter {
    multi: Option<MultiProgress>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.multi {
            Some(multi) => multi
                .suspend(|| io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinner_template_is_valid() {
        assert!(ProgressStyle::with_template(SPINNER).is_ok());
    }

    #[test]
    fn hidden_progress_ignores_updates() {
        let progress = Progress::new(false);
        let source = progress.source("prometheus");
        assert!(source.0.is_none());
        source.update(1, 2);
        source.finish("ok", 2);
    }
}
