//! The progress bar on stderr, redrawn from the engine's progress
//! snapshots (a few per second), never per file.

use crate::units;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use psync_core::Snapshot;
use std::io::IsTerminal;
use std::time::Duration;

/// Short enough for an 80-column terminal; the bar takes what is left.
const TEMPLATE: &str = "{wide_bar:.cyan/blue} {human_pos}/{human_len} entries  {msg}";

/// Weight of the newest sample in the smoothed rates: with four snapshots
/// a second, rates follow changes within about a second.
const SMOOTHING: f64 = 0.3;

/// For the ETA, one entry weighs as much as this many bytes of data: its
/// create, chmod, chown and utimes cost 0.1-0.3 ms, in which a local disk
/// or a Lustre client streams about 256 KiB. Neither entries alone nor
/// bytes alone predict a tree that mixes small files and large ones.
const ENTRY_COST_BYTES: f64 = 256.0 * 1024.0;

/// A progress bar: entries done of entries scanned (the total grows while
/// the walk discovers the tree), bytes, rate, ETA and errors.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    rate: Rate,
}

impl Progress {
    /// A bar on stderr when `wanted` and stderr is a terminal, else hidden.
    pub fn new(wanted: bool) -> Progress {
        let target = if wanted && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            rate: Rate::default(),
        }
    }

    /// Redraws from a snapshot of the run's counters.
    pub fn update(&mut self, s: &Snapshot) {
        if self.bar.is_hidden() {
            return;
        }
        self.rate.update(s);
        // Message first: the draw that counts is the last one, after both.
        self.bar.set_message(self.message(s));
        self.bar.update(|state| {
            // Counts arrive as tasks complete: a directory's children may
            // complete (done) before the directory's own task (scanned).
            state.set_len(s.scanned.max(s.done));
            state.set_pos(s.done);
        });
    }

    fn message(&self, s: &Snapshot) -> String {
        let eta = self
            .rate
            .eta(s)
            .map_or_else(|| "-".to_string(), units::clock);
        format!(
            "{}/{}  {}  ETA {eta}  {} failed",
            units::bytes(s.bytes_copied),
            // As entries: a copy may complete before the directory task
            // that planned it.
            units::bytes(s.bytes_to_copy.max(s.bytes_copied)),
            units::byte_rate(self.rate.bytes),
            s.failed
        )
    }

    /// Runs `f` (which writes to the terminal) with the bar erased, then
    /// redraws the bar, so lines and bar do not garble each other.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// True when the bar is drawn.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Erases the bar for good.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// Smoothed rates of bytes and of work (entries and bytes in one unit),
/// from the differences between snapshots.
#[derive(Debug, Default)]
struct Rate {
    last: Option<Snapshot>,
    bytes: f64,
    work: f64,
}

impl Rate {
    fn update(&mut self, s: &Snapshot) {
        if let Some(prev) = self.last {
            let dt = s.elapsed_ms.saturating_sub(prev.elapsed_ms) as f64 / 1000.0;
            if dt > 0.0 {
                self.bytes = smooth(
                    self.bytes,
                    s.bytes_copied.saturating_sub(prev.bytes_copied) as f64 / dt,
                );
                self.work = smooth(self.work, (work_done(s) - work_done(&prev)).max(0.0) / dt);
            }
        }
        self.last = Some(*s);
    }

    /// Time left for the work known so far at the current rate: a lower
    /// bound while the walk is still discovering the tree.
    fn eta(&self, s: &Snapshot) -> Option<Duration> {
        let left = (work_total(s) - work_done(s)).max(0.0);
        if left == 0.0 {
            Some(Duration::ZERO)
        } else if self.work > 0.0 {
            // Rounded up: "0:00" only when done.
            Some(Duration::from_secs_f64((left / self.work).ceil()))
        } else {
            None
        }
    }
}

fn work_done(s: &Snapshot) -> f64 {
    s.done as f64 + s.bytes_copied as f64 / ENTRY_COST_BYTES
}

fn work_total(s: &Snapshot) -> f64 {
    s.scanned as f64 + s.bytes_to_copy as f64 / ENTRY_COST_BYTES
}

fn smooth(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        new
    } else {
        SMOOTHING * new + (1.0 - SMOOTHING) * old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ms: u64, scanned: u64, done: u64, to_copy: u64, copied: u64) -> Snapshot {
        let mut s = Snapshot::default();
        (s.elapsed_ms, s.scanned, s.done) = (ms, scanned, done);
        (s.bytes_to_copy, s.bytes_copied) = (to_copy, copied);
        s
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn eta_weighs_entries_and_bytes() {
        let mut r = Rate::default();
        r.update(&snap(0, 100, 0, 100 * MIB, 0));
        assert_eq!(r.eta(&snap(0, 100, 0, 100 * MIB, 0)), None);
        // Small files first: 50 entries in 1 s; 50 entries and 100 MiB
        // (400 entries' worth) left.
        let s = snap(1000, 100, 50, 100 * MIB, 0);
        r.update(&s);
        assert_eq!(r.eta(&s), Some(Duration::from_secs(9)));
        let done = snap(2000, 100, 100, 100 * MIB, 100 * MIB);
        assert_eq!(r.eta(&done), Some(Duration::ZERO));
    }
}
