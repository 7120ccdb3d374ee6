//! Progress for long command-line work (backup, compact, export, import).
//! On a terminal a bar or a spinner is drawn on stderr;
//! otherwise (a pipe, a log file, cron) nothing is drawn and only the
//! summary line is printed, so logs get one plain line and no escape codes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    /// `None` when stderr is not a terminal.
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A spinner saying `message` until the work is done or, for a
    /// download, until its size is known ([`Progress::expect_bytes`]).
    pub fn spinner(message: impl Into<String>) -> Self {
        Self::with_bar(std::io::stderr().is_terminal(), message.into())
    }

    fn with_bar(on_terminal: bool, message: String) -> Self {
        let bar = on_terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(spinner_style());
            bar.set_message(message);
            // Ticks from a thread of indicatif's: the work itself may block
            // (redb's compaction) and could not tick it.
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            started: Instant::now(),
        }
    }

    /// Turns the spinner into a byte bar of `total` bytes (or a byte
    /// counter when the size is unknown).
    pub fn expect_bytes(&self, message: impl Into<String>, total: Option<u64>) {
        let Some(bar) = &self.bar else { return };
        bar.set_message(message.into());
        if let Some(total) = total {
            bar.set_length(total);
            bar.set_style(bytes_style());
        } else {
            bar.set_style(counter_style());
        }
    }

    /// Turns the spinner into a bar of `total` rows.
    pub fn expect_rows(&self, message: impl Into<String>, total: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_message(message.into());
        bar.set_length(total);
        bar.set_position(0);
        bar.set_style(rows_style());
    }

    /// Something another thread can advance the bar with (by bytes or
    /// rows, whichever it counts).
    pub fn advancer(&self) -> impl Fn(u64) + Send + 'static {
        let bar = self.bar.clone();
        move |amount| {
            if let Some(bar) = &bar {
                bar.inc(amount);
            }
        }
    }

    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Clears the bar and prints the summary on stdout: the same single
    /// line on a terminal or not.
    pub fn finish(self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        println!("{summary}");
    }
}

/// A failure clears the bar, so the error is not printed after a half line.
impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.finish_and_clear();
        }
    }
}

/// `0.4 s`, `12.3 s`, `3 min 05 s` for summary lines.
pub fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let whole = duration.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

const SPINNER_TEMPLATE: &str = "{spinner} {msg} ({elapsed})";
const BYTES_TEMPLATE: &str =
    "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})";
const ROWS_TEMPLATE: &str = "{msg} [{wide_bar}] {human_pos}/{human_len} rows ({per_sec}, {eta})";
const COUNTER_TEMPLATE: &str = "{spinner} {msg} {binary_bytes} ({binary_bytes_per_sec})";

// The templates are constants, checked by a unit test: the fallbacks are
// never reached, but a progress bar is no reason to fail a backup.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(SPINNER_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(BYTES_TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn rows_style() -> ProgressStyle {
    ProgressStyle::with_template(ROWS_TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn counter_style() -> ProgressStyle {
    ProgressStyle::with_template(COUNTER_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_parse() {
        for template in [
            SPINNER_TEMPLATE,
            BYTES_TEMPLATE,
            ROWS_TEMPLATE,
            COUNTER_TEMPLATE,
        ] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn off_a_terminal_nothing_is_drawn() {
        let progress = Progress::with_bar(false, "working".into());
        progress.expect_bytes("downloading", Some(10));
        progress.advance(5);
        assert!(progress.bar.is_none());
    }

    #[test]
    fn durations_read_in_seconds_then_minutes() {
        for (millis, text) in [(400, "0.4 s"), (12_340, "12.3 s"), (185_000, "3 min 05 s")] {
            assert_eq!(duration_text(Duration::from_millis(millis)), text);
        }
    }
}
