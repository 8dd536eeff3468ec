//! Numbers for people: byte counts, rates and durations.

use std::time::Duration;

/// `n` bytes in binary units with three significant digits: `512 B`,
/// `1.50 KiB`, `12.3 MiB`, `456 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// A count in at most five characters: `9999`, `12.3k`, `4.56M`,
/// `789G`, `18.4E` (decimal steps, three significant digits).
pub fn count(n: u64) -> String {
    const UNITS: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
    if n < 10_000 {
        return n.to_string();
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    // Rounded as printed: 999.96k is `1.00M`, not `1000k`.
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let digits = if v < 9.995 {
        2
    } else if v < 99.95 {
        1
    } else {
        0
    };
    format!("{v:.digits$}{}", UNITS[unit])
}

/// A byte rate: `12.3 MiB/s`.
pub fn byte_rate(per_sec: f64) -> String {
    format!("{}/s", bytes(per_sec.max(0.0) as u64))
}

/// A duration as `m:ss` or `h:mm:ss`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A wall time for the summary: `850ms`, `3.21s`, `1:02:03`.
pub fn wall(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        clock(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(12_900_000), "12.3 MiB");
        assert_eq!(bytes(456 << 30), "456 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn counts() {
        assert_eq!(count(0), "0");
        assert_eq!(count(9999), "9999");
        assert_eq!(count(10_000), "10.0k");
        assert_eq!(count(123_456), "123k");
        assert_eq!(count(999_999), "1.00M");
        assert_eq!(count(4_560_000_000), "4.56G");
        assert_eq!(count(u64::MAX), "18.4E");
    }

    #[test]
    fn durations() {
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(wall(Duration::from_millis(850)), "850ms");
        assert_eq!(wall(Duration::from_millis(3214)), "3.21s");
        assert_eq!(wall(Duration::from_secs(600)), "10:00");
    }
}
