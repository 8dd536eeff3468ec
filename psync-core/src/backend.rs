//! Which copier a run uses: the one the registry has for the roots' file
//! systems ([`Backend::Auto`]) or one forced by name, why, and the notes a
//! run gives once, at its start, when its pair of file systems loses
//! something on the way (Lustre layouts).

use crate::copy::{Copier, Registry};
use crate::probe::{fs_label, magic};
use std::sync::Arc;

/// How a run picks its copier ([`crate::SyncBuilder::backend`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// The registry's copier for the roots' file systems (`statfs`
    /// magics), else its default.
    #[default]
    Auto,
    /// The copier of this name ([`Copier::name`]), which must be
    /// registered for the roots' pair of file systems (or be the default):
    /// a copier registered only for Lustre cannot copy onto ext4.
    Named(String),
}

impl std::str::FromStr for Backend {
    type Err = std::convert::Infallible;

    /// `auto`, or a copier's name.
    fn from_str(s: &str) -> Result<Backend, Self::Err> {
        Ok(match s {
            "auto" => Backend::Auto,
            name => Backend::Named(name.to_string()),
        })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Auto => f.write_str("auto"),
            Backend::Named(n) => f.write_str(n),
        }
    }
}

/// The copier chosen for a pair of file systems, and why.
#[derive(Clone)]
#[non_exhaustive]
pub struct Choice {
    /// The copier.
    pub copier: Arc<dyn Copier>,
    /// Why it was chosen, for people (`registered for lustre (0x0bd00bd0)
    /// -> any`, `the default: nothing registered for ...`).
    pub reason: String,
}

impl std::fmt::Debug for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Choice")
            .field("copier", &self.copier.name())
            .field("reason", &self.reason)
            .finish()
    }
}

/// What a sync between two paths would use: the copier's name, why, the
/// two file systems, and the notes the run would give at its start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Selection {
    /// The copier's name.
    pub copier: String,
    /// Why it was chosen.
    pub reason: String,
    /// The source's file system magic.
    pub src_magic: u64,
    /// The target's file system magic (its nearest existing ancestor's
    /// when it does not exist yet).
    pub dst_magic: u64,
    /// Notes the run prints once at its start ([`notes`]).
    pub notes: Vec<String>,
}

/// The copier `backend` picks from `reg` for a source on the file system
/// of magic `src` and a target on `dst`.
///
/// # Errors
/// A message for people: no copier at all, a named copier that is not
/// registered, or one registered only for other file systems.
pub fn choose(reg: &Registry, backend: &Backend, src: u64, dst: u64) -> Result<Choice, String> {
    let pair = format!("{} -> {}", fs_label(src), fs_label(dst));
    match backend {
        Backend::Auto => {
            let (copier, why) = reg
                .lookup_pair(src, dst)
                .ok_or_else(|| format!("no copier for {pair}"))?;
            let reason = match why {
                Some((s, d)) => format!("registered for {}", pair_text(s, d)),
                None => format!("the default: no copier is registered for {pair}"),
            };
            Ok(Choice { copier, reason })
        }
        Backend::Named(name) => {
            let Some(copier) = reg.by_name(name) else {
                return Err(format!(
                    "backend {name:?} is not available in this build (available: auto, {})",
                    reg.names().join(", ")
                ));
            };
            let pairs = reg.pairs_of(name);
            let serves = |(s, d): &(Option<u64>, Option<u64>)| {
                s.is_none_or(|m| m == src) && d.is_none_or(|m| m == dst)
            };
            if !pairs.iter().any(serves) {
                let is_for: Vec<String> = pairs.iter().map(|(s, d)| pair_text(*s, *d)).collect();
                return Err(format!(
                    "backend {name:?} is for {}, not for {pair}",
                    is_for.join(", ")
                ));
            }
            let reason = format!("forced by name (backend {name:?}) for {pair}");
            Ok(Choice { copier, reason })
        }
    }
}

/// The notes a run between these file systems gives once at its start,
/// with `copier` chosen: what it cannot keep, said once rather than per
/// file.
pub fn notes(src: u64, dst: u64, copier: &str) -> Vec<String> {
    let mut v: Vec<String> = cross_fs_notice(src, dst).into_iter().collect();
    if src == magic::LUSTRE && dst == magic::LUSTRE && copier != "lustre" {
        v.push(format!(
            "Lustre to Lustre with the {copier:?} copier: file layouts (striping, pools) are \
             not copied; new files get the target directories' default layouts"
        ));
    }
    v
}

/// The one line a run from Lustre to another file system (or the
/// reverse) gives at its start: layouts cannot cross, and saying so per
/// file would bury everything else. `None` for any other pair.
pub fn cross_fs_notice(src: u64, dst: u64) -> Option<String> {
    match (src == magic::LUSTRE, dst == magic::LUSTRE) {
        (true, false) => Some(format!(
            "source on Lustre, target on {}: file and directory layouts (striping, pools) \
             are dropped; the target's files get its file system's defaults",
            fs_label(dst)
        )),
        (false, true) => Some(format!(
            "source on {}, target on Lustre: there are no layouts to copy; files and \
             directories get the target directories' default layouts",
            fs_label(src)
        )),
        _ => None,
    }
}

/// `lustre (0x0bd00bd0) -> any`.
fn pair_text(s: Option<u64>, d: Option<u64>) -> String {
    let side = |m: Option<u64>| m.map_or_else(|| "any".to_string(), fs_label);
    format!("{} -> {}", side(s), side(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_is_for_lustre_on_one_side_only() {
        let (l, e, x) = (magic::LUSTRE, magic::EXT4, magic::XFS);
        let to_ext4 = cross_fs_notice(l, e).unwrap();
        assert!(to_ext4.contains("dropped"), "{to_ext4}");
        assert!(to_ext4.contains("ext2/ext3/ext4"), "{to_ext4}");
        let from_xfs = cross_fs_notice(x, l).unwrap();
        assert!(from_xfs.contains("default layouts"), "{from_xfs}");
        assert!(from_xfs.contains("xfs (0x58465342)"), "{from_xfs}");
        assert_eq!(cross_fs_notice(l, l), None);
        assert_eq!(cross_fs_notice(e, x), None);
        assert_eq!(cross_fs_notice(0, 0), None);
    }

    #[test]
    fn notes_say_when_a_forced_copier_drops_layouts() {
        let (l, e) = (magic::LUSTRE, magic::EXT4);
        assert!(notes(l, l, "lustre").is_empty());
        let forced = notes(l, l, "generic");
        assert_eq!(forced.len(), 1);
        assert!(forced[0].contains("\"generic\""), "{forced:?}");
        assert_eq!(notes(l, e, "generic").len(), 1);
        assert!(notes(e, e, "generic").is_empty());
    }

    #[test]
    fn backends_parse_from_their_names() {
        assert_eq!("auto".parse::<Backend>().unwrap(), Backend::Auto);
        assert_eq!(
            "lustre".parse::<Backend>().unwrap(),
            Backend::Named("lustre".into())
        );
        assert_eq!(Backend::Named("x".into()).to_string(), "x");
    }
}
