//! A progress bar over the runs of a study, on stderr, shown only when stderr
//! is a terminal (like [`crate::cli::ProgressBar`], which counts tasks).

use std::io::IsTerminal;

/// Counts runs done out of all planned, with what runs now as its message.
#[derive(Debug)]
pub struct RunsBar {
    bar: Option<indicatif::ProgressBar>,
}

impl RunsBar {
    /// A bar over `total` runs; hidden unless stderr is a terminal.
    pub fn new(total: u64) -> RunsBar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} runs  {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        RunsBar { bar }
    }

    /// Says what runs now.
    pub fn message(&self, text: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(text);
        }
    }

    /// Counts one run done.
    pub fn run_done(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Runs `f` (which prints) with the bar hidden, so that the two do not mix.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
