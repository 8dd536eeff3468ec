//! What the Lustre copier does with layouts and released files, set once
//! per run and carried to every engine in the run's spec
//! ([`psync_core::Copier::options`]).

use crate::layout::{Layout, LayoutError, PoolName};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which layout a new file gets (`--lustre-layout`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayoutPolicy {
    /// The source file's (and a directory's default layout): `copy`.
    #[default]
    Copy,
    /// None set: the target directory's default (`default`).
    Default,
    /// This plain layout for every file (`count=N,size=S[,pool=P]`); 0 is
    /// the file system's default, a count of -1 every OST.
    Imposed {
        /// Stripes.
        count: u16,
        /// Bytes per stripe.
        size: u32,
        /// An OST pool.
        pool: Option<String>,
    },
}

/// Lustre's stripe sizes are multiples of 64 KiB.
const STRIPE_UNIT: u64 = 64 << 10;

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mul = match s[i..].to_ascii_lowercase().as_str() {
                "k" | "kib" | "kb" => 1 << 10,
                "m" | "mib" | "mb" => 1 << 20,
                "g" | "gib" | "gb" => 1 << 30,
                other => return Err(format!("unknown size unit {other:?}")),
            };
            (&s[..i], mul)
        }
        None => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} too large"))
}

impl FromStr for LayoutPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "copy" => return Ok(LayoutPolicy::Copy),
            "default" => return Ok(LayoutPolicy::Default),
            _ => {}
        }
        let (mut count, mut size, mut pool) = (None, None, None);
        for part in s.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("expected copy, default or count=N,size=S[,pool=P], got {s:?}")
            })?;
            match key {
                "count" if value == "-1" => count = Some(u16::MAX),
                "count" => {
                    let n: u16 = value
                        .parse()
                        .map_err(|_| format!("bad stripe count {value:?}"))?;
                    count = Some(n);
                }
                "size" => {
                    let n = parse_size(value)?;
                    if n % STRIPE_UNIT != 0 || n > u64::from(u32::MAX) {
                        return Err(format!(
                            "stripe size {value:?}: a multiple of 64 KiB under 4 GiB"
                        ));
                    }
                    size = Some(u32::try_from(n).unwrap_or(0));
                }
                "pool" => {
                    PoolName::new(value).map_err(|e| e.to_string())?;
                    pool = Some(value.to_string()).filter(|p| !p.is_empty());
                }
                other => return Err(format!("unknown layout key {other:?} (count, size, pool)")),
            }
        }
        if count.is_none() && size.is_none() {
            return Err(format!("{s:?}: count=N or size=S needed"));
        }
        Ok(LayoutPolicy::Imposed {
            count: count.unwrap_or(0),
            size: size.unwrap_or(0),
            pool,
        })
    }
}

impl fmt::Display for LayoutPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutPolicy::Copy => f.write_str("copy"),
            LayoutPolicy::Default => f.write_str("default"),
            LayoutPolicy::Imposed { count, size, pool } => {
                let count = if *count == u16::MAX {
                    "-1".to_string()
                } else {
                    count.to_string()
                };
                write!(f, "count={count},size={size}")?;
                if let Some(p) = pool {
                    write!(f, ",pool={p}")?;
                }
                Ok(())
            }
        }
    }
}

/// The Lustre copier's options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LustreOptions {
    /// Which layout new files and directories get.
    pub layout: LayoutPolicy,
    /// Keep the source's first OST (`--lustre-keep-ost-indices`); by
    /// default the target's allocator places the stripes.
    pub keep_ost_indices: bool,
    /// OST pools renamed (`--lustre-pool OLD=NEW`), in order; an empty
    /// new name drops the pool.
    pub pool_map: Vec<(String, String)>,
    /// Copy HSM-released files (`--hsm-restore`: reading them restores
    /// their data from the archive); by default they are skipped.
    pub hsm_restore: bool,
}

impl LustreOptions {
    /// Adds a pool rename, `OLD=NEW` (`OLD=` drops the pool).
    ///
    /// # Errors
    /// No `=`, or a name too long for a pool.
    pub fn map_pool(&mut self, spec: &str) -> Result<&mut Self, String> {
        let (old, new) = spec.split_once('=').ok_or_else(|| {
            format!("expected OLD=NEW (an empty NEW drops the pool), got {spec:?}")
        })?;
        for name in [old, new] {
            PoolName::new(name).map_err(|e| e.to_string())?;
        }
        if old.is_empty() {
            return Err(format!("{spec:?}: no pool to rename"));
        }
        self.pool_map.push((old.to_string(), new.to_string()));
        Ok(self)
    }

    /// The options as a string for the run's spec: empty for the
    /// defaults.
    pub fn encode(&self) -> String {
        if *self == LustreOptions::default() {
            return String::new();
        }
        serde_json::to_string(self).expect("options serialize")
    }

    /// The options of [`LustreOptions::encode`].
    ///
    /// # Errors
    /// Not such a string.
    pub fn decode(s: &str) -> Result<LustreOptions, String> {
        if s.is_empty() {
            return Ok(LustreOptions::default());
        }
        serde_json::from_str(s).map_err(|e| format!("bad Lustre options: {e}"))
    }

    /// The pool a layout naming `pool` gets on the target: renamed,
    /// dropped (`None`) or kept.
    fn target_pool(&self, pool: &str) -> Option<String> {
        match self.pool_map.iter().find(|(old, _)| old == pool) {
            Some((_, new)) if new.is_empty() => None,
            Some((_, new)) => Some(new.clone()),
            None => Some(pool.to_string()),
        }
    }

    /// `layout` with its pools renamed or dropped as the map says.
    ///
    /// # Errors
    /// A new name that does not fit (checked by [`LustreOptions::map_pool`]).
    pub fn map_pools(&self, layout: &mut Layout) -> Result<(), LayoutError> {
        let map = |p: &mut crate::layout::PlainLayout| -> Result<(), LayoutError> {
            if let Some(old) = p.pool().map(str::to_string) {
                p.pool = match self.target_pool(&old) {
                    Some(new) => Some(PoolName::new(&new)?),
                    None => None,
                };
            }
            Ok(())
        };
        match layout {
            Layout::Plain(p) => map(p),
            Layout::Composite(c) => c.components.iter_mut().try_for_each(|c| map(&mut c.layout)),
            Layout::Foreign(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_policies_parse_and_print() {
        assert_eq!("copy".parse::<LayoutPolicy>().unwrap(), LayoutPolicy::Copy);
        assert_eq!(
            "default".parse::<LayoutPolicy>().unwrap(),
            LayoutPolicy::Default
        );
        let p: LayoutPolicy = "count=4,size=1M,pool=fast".parse().unwrap();
        assert_eq!(
            p,
            LayoutPolicy::Imposed {
                count: 4,
                size: 1 << 20,
                pool: Some("fast".into())
            }
        );
        assert_eq!(p.to_string(), "count=4,size=1048576,pool=fast");
        assert_eq!(p.to_string().parse::<LayoutPolicy>().unwrap(), p);
        let all: LayoutPolicy = "count=-1,size=64k".parse().unwrap();
        assert_eq!(all.to_string().parse::<LayoutPolicy>().unwrap(), all);
        for bad in [
            "",
            "stripes=2",
            "count=x",
            "size=1000",
            "size=1M,pool=a_pool_name_too_long",
        ] {
            assert!(bad.parse::<LayoutPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn options_round_trip_and_defaults_are_empty() {
        assert_eq!(LustreOptions::default().encode(), "");
        assert_eq!(LustreOptions::decode("").unwrap(), LustreOptions::default());
        let mut o = LustreOptions {
            layout: "count=2,size=4M".parse().unwrap(),
            keep_ost_indices: true,
            hsm_restore: true,
            ..LustreOptions::default()
        };
        o.map_pool("old=new").unwrap().map_pool("gone=").unwrap();
        assert_eq!(LustreOptions::decode(&o.encode()).unwrap(), o);
        assert!(o.map_pool("nothing").is_err());
        assert!(o.map_pool("=x").is_err());
        assert!(LustreOptions::decode("{").is_err());
    }
}
