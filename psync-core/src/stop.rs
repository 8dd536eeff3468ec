//! Stopping a run whose target cannot take more writes.
//!
//! A full target file system (`ENOSPC`, `EDQUOT`) or a read-only one
//! (`EROFS`) fails every write that follows, not one entry: going on
//! would report an error per remaining file and chunk and keep writing
//! into a full disk. The first such error of a write to the target stops
//! the run through the quit flag, as an interrupt does: nothing new is
//! started, copies under way are abandoned (their temporaries removed,
//! the old targets kept), the error is reported once, and the report
//! says why the run stopped. The same errno from the source side is an
//! ordinary per-entry failure: only the target's state stops a run.

use crate::engine::Engine;
use crate::entry::{Entry, RelPath};
use crate::error::{Error, Op};
use crate::event::Event;
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::atomic::Ordering;

/// Why the target cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// No space or no quota left (`ENOSPC`, `EDQUOT`).
    TargetFull,
    /// The target file system is mounted read-only (`EROFS`).
    TargetReadOnly,
}

impl StopReason {
    /// The reason an error of a target write gives to stop the run, if any.
    pub fn of(err: &io::Error) -> Option<StopReason> {
        match err.raw_os_error()? {
            libc::ENOSPC | libc::EDQUOT => Some(StopReason::TargetFull),
            libc::EROFS => Some(StopReason::TargetReadOnly),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            StopReason::TargetFull => "target file system full",
            StopReason::TargetReadOnly => "target file system read-only",
        }
    }
}

/// How and where a run was stopped because its target cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stopped {
    /// Full, or read-only.
    pub reason: StopReason,
    /// The target path whose write failed.
    pub path: std::path::PathBuf,
    /// The operation that failed.
    pub op: Op,
    /// The message reported (also sent as the run's one error event).
    pub message: String,
}

impl Engine {
    /// Stops the run when `err`, from a write to the target entry `rel`,
    /// says the target cannot take more. Returns true when it does (the
    /// caller then reports nothing: the first such error is reported here,
    /// once, and the ones that race with it are part of the same stop).
    pub(crate) fn stop_if_unwritable(&self, rel: &RelPath, op: Op, err: &io::Error) -> bool {
        let Some(reason) = StopReason::of(err) else {
            return false;
        };
        // ENOSPC from setxattr says the attribute does not fit (ext4: in
        // one block), not that the file system is full.
        if op == Op::Xattr && err.raw_os_error() == Some(libc::ENOSPC) {
            return false;
        }
        let path = rel.under(&self.dst_path);
        let why = io::Error::new(
            err.kind(),
            format!(
                "{} ({err}): run stopped; no new copy is started, copies under way are \
                 abandoned and the targets they would replace are kept",
                reason.describe()
            ),
        );
        let message = Error::new(op, &path, why).to_string();
        let stopped = Stopped {
            reason,
            path,
            op,
            message: message.clone(),
        };
        if self.stopped.set(stopped).is_ok() {
            self.count(|c| {
                c.failed += 1;
                c.done += 1;
            });
            // Sent now, not with the task's report, and before the quit
            // flag is set: the frontend says why at once, and with the
            // flag set a full event queue would drop it. Never repeated:
            // the run is stopping, the task is not delivered again.
            self.send(Event::Error {
                path: rel.clone(),
                op,
                side: crate::event::Side::Target,
                errno: err.raw_os_error(),
                message,
            });
        }
        self.quit.store(true, Ordering::Relaxed);
        true
    }

    /// Notes a part file this run is filling, so that a stopped run can
    /// remove it (see [`Engine::wind_down`]).
    pub(crate) fn part_started(&self, rel: &RelPath, src: &Entry) {
        self.lock_parts().push((rel.clone(), src.clone()));
    }

    /// The part file of `src` in `rel` was renamed into place or removed.
    pub(crate) fn part_ended(&self, rel: &RelPath, src: &Entry) {
        let key = self.part_key(src);
        self.lock_parts()
            .retain(|(r, e)| !(r == rel && self.part_key(e) == key));
    }

    fn lock_parts(&self) -> std::sync::MutexGuard<'_, Vec<(RelPath, Entry)>> {
        self.open_parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A stopping run whose tasks did not all return within `grace`:
    /// removes this run's temporaries now (what [`Engine::wind_down`]
    /// removes) and says so once.
    pub(crate) fn reap_stuck(&self, grace: std::time::Duration) {
        self.wind_down();
        let msg = format!(
            "tasks still under way {}s after the stop (a read or write that does not \
             return); this run's temporaries were removed without them",
            grace.as_secs_f32()
        );
        self.warn(&RelPath::root(), true, Op::Remove, &msg);
    }

    /// Why this engine stopped its run (a target it could not write), once
    /// it has: its quit flag is set then, and the error was reported.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped.get().cloned()
    }

    /// Whether this engine's quit flag is set (by [`Engine::quit`], its
    /// [`crate::EngineContext::quit`] flag, or a stop): it starts nothing
    /// new, and tasks under way return [`crate::Outcome::Abandoned`].
    pub fn quitting(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }

    /// Sets this engine's quit flag (see [`Engine::quitting`]).
    pub fn quit(&self) {
        self.quit.store(true, Ordering::Relaxed);
    }

    /// For an engine whose run has ended without finishing (cancelled,
    /// or stopped by a target that cannot be written), once its tasks
    /// have returned: removes what it made for copies that will not
    /// finish, as a stopped local run does. Never while the run goes on
    /// on other engines (a worker leaving a run hands its tasks back and
    /// calls nothing). Does nothing unless [`Engine::quitting`].
    pub fn end_unfinished(&self) {
        self.wind_down();
    }

    /// After a run that was stopped (quit flag, or a target that cannot be
    /// written): removes what this process made for copies that will not
    /// finish. Part files too small to resume go (a large one keeps its
    /// finished chunks for the next run, as after a kill), and so does the
    /// hard-link area. What a crash leaves, the next run removes.
    pub(crate) fn wind_down(&self) {
        if !self.quit.load(Ordering::Relaxed) || self.dry_run {
            return;
        }
        let parts = std::mem::take(&mut *self.lock_parts());
        for (rel, src) in parts {
            if src.size < self.resume_threshold
                && let Ok(dir) = self.open_dst(&rel)
            {
                crate::engine::bigfile::discard_part(&dir, self.part_key(&src));
            }
        }
        self.drop_link_area();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_and_read_only_stop() {
        let code = |c| StopReason::of(&io::Error::from_raw_os_error(c));
        assert_eq!(code(libc::ENOSPC), Some(StopReason::TargetFull));
        assert_eq!(code(libc::EDQUOT), Some(StopReason::TargetFull));
        assert_eq!(code(libc::EROFS), Some(StopReason::TargetReadOnly));
        assert_eq!(code(libc::EACCES), None);
        assert_eq!(code(libc::EIO), None);
        assert_eq!(StopReason::of(&io::Error::other("no space")), None);
    }
}
