//! `psync probe PATH...`: each path's file system and what it can do
//! (`psync_core::probe`), and for SRC DST the copier a sync would use.

use crate::Fatal;
use crate::args::ProbeArgs;
use psync_core::backend::Selection;
use psync_core::probe::{FsProbe, ProbeOptions, fs_label};
use serde_json::{Value, json};
use std::process::ExitCode;

/// Probes every path, prints the results (text or one JSON document).
/// Exit status 1 when a path could not be probed or no copier fits.
pub fn probe(args: &ProbeArgs) -> Result<ExitCode, Fatal> {
    let opts = ProbeOptions::write_test(args.write_test);
    let probes: Vec<(String, Result<FsProbe, String>)> = args
        .paths
        .iter()
        .map(|p| {
            let shown = psync_core::entry::escape(p.as_os_str().as_encoded_bytes());
            (shown, FsProbe::probe(p, opts).map_err(|e| e.to_string()))
        })
        .collect();
    let selection = match args.paths.as_slice() {
        [src, dst] => Some(match args.sync_builder(src, dst) {
            Some(b) => b.selection().map_err(|e| e.to_string()),
            None => Err("these paths cannot be given to sync".to_string()),
        }),
        _ => None,
    };
    let failed =
        probes.iter().any(|(_, r)| r.is_err()) || selection.as_ref().is_some_and(|s| s.is_err());
    if args.json {
        println!("{}", document(&probes, selection.as_ref()));
    } else {
        print!("{}", text(&probes, selection.as_ref()));
    }
    Ok(ExitCode::from(u8::from(failed)))
}

/// `{"paths": [probe or {"path", "error"}], "copier": {"name", "reason",
/// ...} or {"error"} or null}`.
fn document(
    probes: &[(String, Result<FsProbe, String>)],
    selection: Option<&Result<Selection, String>>,
) -> Value {
    let paths: Vec<Value> = probes
        .iter()
        .map(|(p, r)| match r {
            Ok(probe) => serde_json::to_value(probe).unwrap_or(Value::Null),
            Err(e) => json!({ "path": p, "error": e }),
        })
        .collect();
    let copier = match selection {
        None => Value::Null,
        Some(Ok(s)) => json!({
            "name": s.copier,
            "reason": s.reason,
            "src_magic": s.src_magic,
            "src_fs": fs_label(s.src_magic),
            "dst_magic": s.dst_magic,
            "dst_fs": fs_label(s.dst_magic),
            "notes": s.notes,
        }),
        Some(Err(e)) => json!({ "error": e }),
    };
    json!({ "paths": paths, "copier": copier })
}

/// The report for people: a block per path, then the copier.
fn text(
    probes: &[(String, Result<FsProbe, String>)],
    selection: Option<&Result<Selection, String>>,
) -> String {
    let mut out = String::new();
    for (shown, r) in probes {
        out += &format!("{shown}\n");
        let p = match r {
            Ok(p) => p,
            Err(e) => {
                out += &format!("  error           {e}\n");
                continue;
            }
        };
        let named = p.magic_name.as_deref().unwrap_or("not a known magic");
        out += &format!(
            "  type            {} (magic {:#010x}: {named})\n",
            p.fs_type, p.magic
        );
        match &p.mount {
            Some(m) => {
                let point = psync_core::entry::escape(m.mount_point.as_os_str().as_encoded_bytes());
                out += &format!("  mount           {point} from {}\n", m.source);
                out += &format!(
                    "  options         {} (file system: {})\n",
                    m.mount_options, m.super_options
                );
            }
            None => out += "  mount           not found in /proc/self/mountinfo\n",
        }
        for (name, c) in p.capabilities.list() {
            out += &format!("  {name:<15} {:<8}{}\n", c.state.to_string(), c.reason);
        }
    }
    if let Some(sel) = selection {
        match sel {
            Ok(s) => {
                out += &format!(
                    "copier            {} ({} -> {}): {}\n",
                    s.copier,
                    fs_label(s.src_magic),
                    fs_label(s.dst_magic),
                    s.reason
                );
                for n in &s.notes {
                    out += &format!("note              {n}\n");
                }
            }
            Err(e) => out += &format!("copier            none: {e}\n"),
        }
    }
    out
}
