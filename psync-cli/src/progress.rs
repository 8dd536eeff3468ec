//! Progress on stderr, redrawn from the engine's progress snapshots (a
//! few per second), never per file: a line redrawn in place on a
//! terminal; with `--progress` elsewhere (a batch job's log), a plain
//! line every few seconds. Never on stdout.
//!
//! It says what is known: entries and bytes done of those found so far,
//! and while the walk still finds more, `scanning` and no fraction (a
//! fraction of a total that grows reads nearly full all along); once
//! every directory is listed, the totals are final: a percentage, a bar
//! when there is room, and an ETA.

use crate::units;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use psync_core::Snapshot;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Weight of the newest sample in the smoothed rates: with four snapshots
/// a second, rates follow changes within about a second.
const SMOOTHING: f64 = 0.3;

/// For the ETA, one entry weighs as much as this many bytes of data: its
/// create, chmod, chown and utimes cost 0.1-0.3 ms, in which a local disk
/// or a Lustre client streams about 256 KiB. Neither entries alone nor
/// bytes alone predict a tree that mixes small files and large ones.
const ENTRY_COST_BYTES: f64 = 256.0 * 1024.0;

/// Between two plain lines (not on a terminal).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The width of the plain lines.
const LINE_WIDTH: usize = 80;

/// The narrowest bar worth drawing, brackets included.
const MIN_BAR: usize = 12;

/// `--progress`, `--no-progress`, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// On a terminal, unless `-q` or `--json`.
    Auto,
    /// Also with `-q` or `--json`, and elsewhere as plain lines.
    Always,
    /// Never.
    Never,
}

#[derive(Debug)]
enum Mode {
    Off,
    /// Redrawn in place on a terminal; made at the first snapshot.
    Bar(Option<ProgressBar>),
    /// A plain line when the run's time reaches `next`.
    Lines {
        next: Duration,
    },
}

/// The progress display of a run.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    rate: Rate,
}

impl Progress {
    /// Progress as `when` says; `quiet` is `-q` or `--json`.
    pub fn new(when: When, quiet: bool) -> Progress {
        Progress {
            mode: mode(when, quiet, std::io::stderr().is_terminal()),
            rate: Rate::default(),
        }
    }

    /// Redraws from a snapshot of the run's counters (a plain line only
    /// when its time has come).
    pub fn update(&mut self, s: &Snapshot) {
        if matches!(self.mode, Mode::Off) {
            return;
        }
        self.rate.update(s);
        let view = View::of(s, &self.rate);
        match &mut self.mode {
            Mode::Off => {}
            Mode::Bar(bar) => {
                let bar = bar.get_or_insert_with(|| {
                    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    if let Ok(style) = ProgressStyle::with_template("{msg}") {
                        bar.set_style(style);
                    }
                    bar
                });
                // One column spare: some terminals wrap at the last one.
                bar.set_message(render(&view, terminal_width().saturating_sub(1), true));
            }
            Mode::Lines { next } => {
                if s.elapsed() >= *next {
                    *next = s.elapsed() + LINE_EVERY;
                    let line = render(&view, LINE_WIDTH, false);
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                }
            }
        }
    }

    /// Runs `f` (which writes to the terminal) with the bar erased, then
    /// redraws the bar, so lines and bar do not garble each other.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.mode {
            Mode::Bar(Some(bar)) => bar.suspend(f),
            _ => f(),
        }
    }

    /// True when the bar is drawn.
    pub fn is_visible(&self) -> bool {
        matches!(self.mode, Mode::Bar(Some(_)))
    }

    /// Erases the bar for good.
    pub fn clear(&self) {
        if let Mode::Bar(Some(bar)) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

/// How to show progress, `terminal` telling whether stderr is one.
fn mode(when: When, quiet: bool, terminal: bool) -> Mode {
    match when {
        When::Never => Mode::Off,
        When::Auto if quiet || !terminal => Mode::Off,
        _ if terminal => Mode::Bar(None),
        _ => Mode::Lines { next: LINE_EVERY },
    }
}

/// Columns of the terminal on stderr (80 when it cannot tell).
fn terminal_width() -> usize {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(w) if w.ws_col > 0 => usize::from(w.ws_col),
        _ => 80,
    }
}

/// What the progress line shows, taken from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
struct View {
    /// The walk is over: the totals are final.
    walk_done: bool,
    entries: (u64, u64),
    bytes: (u64, u64),
    /// Bytes per second, smoothed.
    rate: f64,
    elapsed: Duration,
    /// Of entries and bytes together; once the walk is over.
    fraction: Option<f64>,
    eta: Option<Duration>,
    failed: u64,
}

impl View {
    fn of(s: &Snapshot, rate: &Rate) -> View {
        let walk_done = s.walk_done();
        View {
            walk_done,
            // Counts arrive as tasks complete: a directory's children may
            // complete (done) before the directory's own task (scanned).
            entries: (s.done, s.scanned.max(s.done)),
            bytes: (s.bytes_copied, s.bytes_to_copy.max(s.bytes_copied)),
            rate: rate.bytes,
            elapsed: s.elapsed(),
            fraction: walk_done.then(|| {
                let total = work_total(s);
                if total > 0.0 {
                    (work_done(s) / total).min(1.0)
                } else {
                    1.0
                }
            }),
            eta: rate.eta(s),
            failed: s.failed,
        }
    }
}

/// The progress line, at most `width` columns: the parts that do not fit
/// left out, least useful first; with `bar`, a bar in the room left.
///
/// `scanning  1234/5678+ entries  1.20 GiB/3.40 GiB+  45.0 MiB/s  0:42`
/// `[====>    ]  37%  1234/5678 entries  1.20 GiB/3.40 GiB  45.0 MiB/s  0:42  ETA 1:10`
fn render(v: &View, width: usize, bar: bool) -> String {
    let more = if v.walk_done { "" } else { "+" };
    let head = match v.fraction {
        Some(f) => format!("{:>3}%", percent(f)),
        None => "scanning".to_string(),
    };
    // (text, rank): the lowest rank is left out first.
    let mut parts: Vec<(String, u8)> = vec![
        (head, u8::MAX),
        (
            format!(
                "{}/{}{more} entries",
                units::count(v.entries.0),
                units::count(v.entries.1)
            ),
            6,
        ),
        (
            format!(
                "{}/{}{more}",
                units::bytes(v.bytes.0),
                units::bytes(v.bytes.1)
            ),
            5,
        ),
        (units::byte_rate(v.rate), 2),
        (units::clock(v.elapsed), 1),
    ];
    if let Some(eta) = v.eta {
        parts.push((format!("ETA {}", eta_clock(eta)), 4));
    }
    if v.failed > 0 {
        parts.push((format!("{} failed", units::count(v.failed)), 3));
    }
    let joined = |parts: &[(String, u8)]| {
        parts
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut line = joined(&parts);
    while line.len() > width {
        let Some(least) = parts
            .iter()
            .enumerate()
            .filter(|(_, (_, rank))| *rank < u8::MAX)
            .min_by_key(|(_, (_, rank))| *rank)
            .map(|(i, _)| i)
        else {
            break;
        };
        parts.remove(least);
        line = joined(&parts);
    }
    // All ASCII: bytes are columns.
    line.truncate(width);
    let room = width.saturating_sub(line.len() + 2);
    if let (true, Some(f)) = (bar, v.fraction)
        && room >= MIN_BAR
    {
        line = format!("{}  {line}", draw_bar(f, room.min(50)));
    }
    line
}

/// Whole percent, rounded down: 100 only when all is done.
fn percent(f: f64) -> u64 {
    (f.clamp(0.0, 1.0) * 100.0).floor() as u64
}

/// `[=====>    ]`, `width` columns.
fn draw_bar(f: f64, width: usize) -> String {
    let inner = width.saturating_sub(2);
    let full = ((f.clamp(0.0, 1.0) * inner as f64).floor() as usize).min(inner);
    let mut s = String::with_capacity(width);
    s.push('[');
    s.extend(std::iter::repeat_n('=', full));
    if full < inner {
        s.push('>');
        s.extend(std::iter::repeat_n(' ', inner - full - 1));
    }
    s.push(']');
    s
}

/// An ETA as `m:ss` or `h:mm:ss`; beyond 99 hours, `>99h`.
fn eta_clock(d: Duration) -> String {
    if d > Duration::from_secs(99 * 3600) {
        ">99h".to_string()
    } else {
        units::clock(d)
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

    /// Time left at the current rate, once the walk is over: before, the
    /// work left is not known (only a lower bound of it).
    fn eta(&self, s: &Snapshot) -> Option<Duration> {
        if !s.walk_done() {
            return None;
        }
        let left = (work_total(s) - work_done(s)).max(0.0);
        if left == 0.0 {
            Some(Duration::ZERO)
        } else if self.work > 0.0 {
            // Rounded up: "0:00" only when done.
            Some(Duration::from_secs_f64((left / self.work).ceil().min(1e12)))
        } else {
            None
        }
    }
}

fn work_done(s: &Snapshot) -> f64 {
    s.done as f64 + s.bytes_copied as f64 / ENTRY_COST_BYTES
}

fn work_total(s: &Snapshot) -> f64 {
    s.scanned.max(s.done) as f64 + s.bytes_to_copy.max(s.bytes_copied) as f64 / ENTRY_COST_BYTES
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

    /// A snapshot; `walked`: every directory listed.
    fn snap(ms: u64, scanned: u64, done: u64, to_copy: u64, copied: u64, walked: bool) -> Snapshot {
        let mut s = Snapshot::default();
        (s.elapsed_ms, s.scanned, s.done) = (ms, scanned, done);
        (s.bytes_to_copy, s.bytes_copied) = (to_copy, copied);
        s.dirs = 1;
        (s.dirs_spawned_ids, s.dirs_run_ids) = (7, if walked { 7 } else { 3 });
        s
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn eta_weighs_entries_and_bytes() {
        let mut r = Rate::default();
        r.update(&snap(0, 100, 0, 100 * MIB, 0, true));
        assert_eq!(r.eta(&snap(0, 100, 0, 100 * MIB, 0, true)), None);
        // Small files first: 50 entries in 1 s; 50 entries and 100 MiB
        // (400 entries' worth) left.
        let s = snap(1000, 100, 50, 100 * MIB, 0, true);
        r.update(&s);
        assert_eq!(r.eta(&s), Some(Duration::from_secs(9)));
        let done = snap(2000, 100, 100, 100 * MIB, 100 * MIB, true);
        assert_eq!(r.eta(&done), Some(Duration::ZERO));
    }

    /// While the walk finds more: no ETA, no percentage, no bar; totals
    /// marked as growing.
    #[test]
    fn no_fraction_while_scanning() {
        let mut r = Rate::default();
        r.update(&snap(0, 100, 0, 100 * MIB, 0, false));
        let s = snap(1000, 100, 99, 100 * MIB, 99 * MIB, false);
        r.update(&s);
        assert_eq!(r.eta(&s), None);
        let v = View::of(&s, &r);
        assert_eq!(v.fraction, None);
        let line = render(&v, 200, true);
        assert!(line.starts_with("scanning  99/100+ entries"), "{line}");
        assert!(line.contains("99.0 MiB/100 MiB+"), "{line}");
        assert!(!line.contains('%') && !line.contains('[') && !line.contains("ETA"));
        // The same counts once the walk is over.
        let s = snap(1000, 100, 99, 100 * MIB, 99 * MIB, true);
        let line = render(&View::of(&s, &r), 200, true);
        assert!(line.contains(" 99%  99/100 entries"), "{line}");
        assert!(line.starts_with("[="), "{line}");
        assert!(line.contains("ETA 0:"), "{line}");
    }

    fn views() -> Vec<View> {
        let small = View {
            walk_done: false,
            entries: (0, 0),
            bytes: (0, 0),
            rate: 0.0,
            elapsed: Duration::ZERO,
            fraction: None,
            eta: None,
            failed: 0,
        };
        let huge = View {
            walk_done: true,
            // Billions of entries, petabytes, days.
            entries: (3_999_999_999, u64::MAX),
            bytes: (5 << 50, u64::MAX),
            rate: 1e15,
            elapsed: Duration::from_secs(1_000_000),
            fraction: Some(0.4),
            eta: Some(Duration::from_secs(u64::MAX / 2)),
            failed: 12_345_678_901,
        };
        let mid = View {
            walk_done: true,
            entries: (1234, 5678),
            bytes: (1_300_000_000, 3_600_000_000),
            rate: 47e6,
            elapsed: Duration::from_secs(42),
            fraction: Some(0.37),
            eta: Some(Duration::from_secs(70)),
            failed: 0,
        };
        vec![
            small,
            huge,
            View {
                walk_done: false,
                fraction: None,
                eta: None,
                ..huge
            },
            mid,
            View {
                eta: Some(Duration::from_secs(100 * 3600)),
                ..mid
            },
        ]
    }

    #[test]
    fn lines_fit_the_width() {
        for v in views() {
            for width in [40, 80, 200] {
                for bar in [false, true] {
                    let line = render(&v, width, bar);
                    assert!(line.len() <= width, "{width}: {line:?} ({v:?})");
                    assert!(line.is_ascii(), "{line:?}");
                    let head = if v.walk_done { "%" } else { "scanning" };
                    assert!(line.contains(head), "{line:?}");
                }
            }
            // At 80 columns, what matters most is all there.
            let line = render(&v, 80, true);
            assert!(line.contains(" entries"), "{line:?}");
            assert!(line.contains("B/"), "{line:?}");
            if v.eta.is_some() {
                assert!(line.contains("ETA "), "{line:?}");
            }
            if v.failed > 0 {
                assert!(line.contains(" failed"), "{line:?}");
            }
        }
    }

    #[test]
    fn a_typical_line_has_it_all_at_80_columns() {
        let line = render(&views()[3], 80, true);
        assert_eq!(
            line,
            " 37%  1234/5678 entries  1.21 GiB/3.35 GiB  44.8 MiB/s  0:42  ETA 1:10"
        );
        let wide = render(&views()[3], 120, true);
        assert!(wide.starts_with("[=================>"), "{wide}");
        assert!(wide.ends_with(&line), "{wide}");
        assert_eq!(
            render(&views()[4], 80, false).split("  ").nth(5),
            Some("ETA >99h")
        );
    }

    #[test]
    fn when_to_show_what() {
        let name = |when, quiet, terminal| match mode(when, quiet, terminal) {
            Mode::Off => "off",
            Mode::Bar(_) => "bar",
            Mode::Lines { .. } => "lines",
        };
        for quiet in [false, true] {
            assert_eq!(name(When::Never, quiet, true), "off");
            assert_eq!(name(When::Always, quiet, true), "bar");
            assert_eq!(name(When::Always, quiet, false), "lines");
            assert_eq!(name(When::Auto, quiet, false), "off");
        }
        assert_eq!(name(When::Auto, false, true), "bar");
        assert_eq!(name(When::Auto, true, true), "off");
    }

    #[test]
    fn bars() {
        assert_eq!(draw_bar(0.0, 12), "[>         ]");
        assert_eq!(draw_bar(0.5, 12), "[=====>    ]");
        assert_eq!(draw_bar(1.0, 12), "[==========]");
        assert_eq!(percent(0.999), 99);
        assert_eq!(percent(1.0), 100);
    }
}
