//! The broker's keys besides one run's ([`crate::RunKeys`]), and how
//! values are written in them.

use psync_core::{Counts, Event};

/// The set of runs under way (run ids as 16 hex digits).
pub const RUNS: &str = "psync:runs";
/// The set of worker names that have registered.
pub const WORKERS: &str = "psync:workers";
/// Cluster-wide control flags (a hash): `shutdown` = the time (ms since
/// the epoch) of the last `psync shutdown`; workers started before it exit.
pub const CONTROL: &str = "psync:control";
/// The cluster's own log (a capped stream: worker joins and leaves,
/// reclaimed tasks, refused runs, broker outages): entries `l` (level),
/// `w` (worker), `m` (message), and `r` (a run id) when about a run.
pub const LOG: &str = "psync:log";
/// The consumer group of every run's task stream.
pub const GROUP: &str = "w";
/// The consumer that tasks handed back belong to until a worker takes
/// them (never alive: any worker's reclaim takes them at once).
pub const HANDBACK: &str = "-handback";
/// Entries kept in a run's event log and in the cluster log (approximately).
pub const LOG_MAXLEN: u64 = 100_000;

/// A worker's registry entry (a hash: host, pid, threads, want, busy,
/// done, bytes, rate, hb, state, started, t:N for what thread N is on).
pub fn worker(name: &str) -> String {
    format!("psync:w:{name}")
}

/// A worker's heartbeat key: exists (with a TTL) while the worker lives.
pub fn alive(name: &str) -> String {
    format!("psync:w:{name}:alive")
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The level an event is logged with: `error`, `warn` or `info`.
pub fn level_of(ev: &Event) -> &'static str {
    match ev {
        Event::Error { .. } => "error",
        Event::Warning { .. } | Event::Skipped { .. } => "warn",
        _ => "info",
    }
}

/// A task's counts as (field, value) pairs, the nonzero ones.
pub fn count_fields(c: &Counts) -> Vec<(String, u64)> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| v.as_u64().filter(|n| *n != 0).map(|n| (k, n)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Counts from (field, value) pairs (a run's counters hash); unknown
/// fields are ignored, missing ones 0.
pub fn counts_from(fields: &[(String, u64)]) -> Counts {
    let mut m = match serde_json::to_value(Counts::default()) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Counts::default(),
    };
    for (k, v) in fields {
        if let Some(slot) = m.get_mut(k) {
            *slot = (*v).into();
        }
    }
    serde_json::from_value(serde_json::Value::Object(m)).unwrap_or_default()
}

/// What `b` counted more than `a`, field by field (counters only grow).
pub fn counts_delta(a: &Counts, b: &Counts) -> Counts {
    let a: std::collections::HashMap<String, u64> = count_fields(a).into_iter().collect();
    let diff: Vec<(String, u64)> = count_fields(b)
        .into_iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(a.get(&k).copied().unwrap_or(0));
            (k, d)
        })
        .collect();
    counts_from(&diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_through_fields() {
        let c = Counts {
            created: 3,
            bytes_copied: 1 << 40,
            failed: 1,
            ..Counts::default()
        };
        let f = count_fields(&c);
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(counts_from(&f), c);
        let more = Counts { created: 5, ..c };
        let d = counts_delta(&c, &more);
        assert_eq!(count_fields(&d), vec![("created".to_string(), 2)]);
        assert_eq!(counts_from(&[("nonsense".into(), 9)]), Counts::default());
    }
}
