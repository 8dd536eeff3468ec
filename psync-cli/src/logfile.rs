//! `--log-file`: every event of a run, one line each, after a UTC
//! timestamp (RFC 3339), appended to a file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// An open log file. Lines are buffered and written when the output
/// flushes; a failed write is reported once and ends the log.
#[derive(Debug)]
pub struct LogFile {
    out: Option<BufWriter<File>>,
}

impl LogFile {
    /// Opens `path` for appending, creating it (mode 0600: it names other
    /// users' files) when missing. A symlink at `path` is refused
    /// (`O_NOFOLLOW`): run as root in a shared directory, a log must not
    /// be redirected onto another file. So is anything but a regular file
    /// (a FIFO is opened without blocking and then refused).
    ///
    /// # Errors
    /// It cannot be opened, or it is not a regular file.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(flags.bits() as i32)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    io::Error::new(e.kind(), "it is a symlink (refused)")
                } else {
                    e
                }
            })?;
        let ft = file.metadata()?.file_type();
        if !ft.is_file() {
            let what = if ft.is_fifo() {
                "a FIFO"
            } else {
                "not a regular file"
            };
            return Err(io::Error::other(format!("it is {what} (refused)")));
        }
        Ok(LogFile {
            out: Some(BufWriter::new(file)),
        })
    }

    /// Appends `text` after the current time; false when the log failed
    /// now (the caller reports it; later lines are dropped).
    pub fn line(&mut self, text: &str) -> Result<(), io::Error> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let written = writeln!(out, "{} {text}", rfc3339(SystemTime::now()));
        self.check(written)
    }

    /// Writes out the buffered lines.
    pub fn flush(&mut self) -> Result<(), io::Error> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let flushed = out.flush();
        self.check(flushed)
    }

    fn check(&mut self, r: io::Result<()>) -> io::Result<()> {
        if r.is_err() {
            self.out = None;
        }
        r
    }
}

/// `2026-12-01T04:11:47.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29 12:34:56.789 UTC: a leap day.
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000Z");
    }
}
