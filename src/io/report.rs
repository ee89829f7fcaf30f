//! Progress of a command-line job (a migration, a backup, a restore): a bar on a terminal,
//! plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often plain-line progress is printed.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// Progress of one job, counted in `unit`s (points, bytes).
pub(crate) struct ProgressReport {
    name: String,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressReport {
    /// Starts reporting for `name`, which has about `total` `unit`s.
    pub(crate) fn new(name: &str, total: u64, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
                "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{per_sec}}, {{eta}} left"
            )) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name.to_string());
            bar
        });
        ProgressReport {
            name: name.to_string(),
            unit,
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            bar,
        }
    }

    /// `n` more done.
    pub(crate) fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    /// Units per second so far.
    fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// One plain progress line.
    fn line(&self) -> String {
        let rate = self.rate();
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        let left = if rate > 0.0 {
            format!(
                "{:.0} s left",
                (self.total.saturating_sub(self.done)) as f64 / rate
            )
        } else {
            "time left unknown".to_string()
        };
        format!(
            "{}: {}/{} {unit} ({pct:.1}%), {rate:.0} {unit}/s, {left}",
            self.name,
            self.done,
            self.total,
            unit = self.unit
        )
    }

    /// Ends the bar or prints the last line.
    pub(crate) fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish(),
            None => eprintln!("{}", self.line()),
        }
    }
}
