//! The terminal progress line for `replay`: packets, calls open/finished, rate. Shown only
//! when stderr is a terminal and `--quiet` is not given.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// A progress display that costs nothing when disabled.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// Shows a spinner when stderr is a terminal.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        });
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    /// Updates the line.
    pub fn update(&self, packets: u64, open: usize, finished: u64) {
        if let Some(b) = &self.bar {
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            b.set_message(format!(
                "{packets} packets  {open} calls open  {finished} finished  {:.0} pkt/s",
                packets as f64 / secs
            ));
            b.tick();
        }
    }

    /// Removes the line.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
