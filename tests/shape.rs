//! Tree shapes that stress the walk: very deep, very wide.

use crate::util::tree::{Node, build, dir, file};
use crate::util::{Config, Front, Opts, TestDir, each_config, rsync_oracle};

#[test]
fn deep_tree_of_200_levels() {
    each_config("deep_tree_of_200_levels", |cfg, t| {
        let mut nodes = Vec::new();
        let mut path = String::new();
        for level in 0..200 {
            if level > 0 {
                path.push('/');
            }
            path.push_str(&format!("d{level:03}"));
            nodes.push(Node::at(
                format!("{path}/f"),
                file(format!("level {level}")),
            ));
            nodes.push(Node::at(&path, dir()).mtime(1_600_000_000 + level, 7));
        }
        build(&t.src(), nodes);
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_eq!(
            out.itemized.len(),
            1 + 200 * 2,
            "root, and a dir and a file per level"
        );
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        let again = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
        again.assert_ok();
        assert!(again.itemized.is_empty(), "{:?}", again.itemized);
    });
}

#[test]
fn wide_directory_of_50_000_entries() {
    // Library with 8 threads only: the point is the one huge directory
    // (listing, batching, a parallel finish), not the frontends.
    let cfg = Config {
        front: Front::Lib,
        threads: 8,
    };
    let t = TestDir::new("wide_directory_of_50_000_entries");
    let src = t.src();
    for i in 0..50_000u32 {
        // Mostly empty files; every 10th holds a few bytes.
        let content = if i % 10 == 0 {
            format!("{i}")
        } else {
            String::new()
        };
        std::fs::write(src.join(format!("f{i:05}")), content).unwrap();
    }
    let out = cfg.sync(&src, &t.dst());
    out.assert_ok();
    assert_eq!(out.stat("created"), 50_000);
    assert_eq!(out.itemized.len(), 50_001);
    assert_synced!(src, t.dst());
    rsync_oracle(&src, &t.dst());
    // Delete a few on the source: the next run removes exactly those.
    for i in (0..50_000u32).step_by(5_000) {
        std::fs::remove_file(src.join(format!("f{i:05}"))).unwrap();
    }
    let out = cfg.sync_with(&src, &t.dst(), &Opts::delete());
    out.assert_ok();
    let deleted: Vec<_> = out
        .itemized
        .iter()
        .filter(|l| l.starts_with("*deleting"))
        .collect();
    assert_eq!(deleted.len(), 10, "{deleted:?}");
    assert_synced!(src, t.dst());
}
