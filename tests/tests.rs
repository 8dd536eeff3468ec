//! End-to-end tests of psync: the library and the `psync` binary against
//! real trees, with rsync as the oracle. One binary, topic modules, the
//! harness in `util/`. Build the CLI first: `cargo build --workspace`.

// The broker's test harness: a real redis-server per test (its `skip!`
// is the same as util's, which shadows it).
#[macro_use]
#[path = "../psync-broker/tests/server/mod.rs"]
mod server;

#[macro_use]
mod util;

mod attacks;
mod attacks_parts;
mod attrs;
mod backends;
mod bad_input;
mod basic;
mod bind_mounts;
mod cli;
#[macro_use]
mod cluster;
mod cluster_limits;
mod cluster_review;
mod deep;
mod deletes;
mod durability;
mod failures;
mod fidelity;
mod filters;
mod fsattrs;
mod in_place;
mod interrupt;
mod itemize;
mod large;
mod limits;
mod links;
mod lustre;
mod memory;
mod names;
mod perms;
mod progress;
mod readme;
mod review2_attacks;
mod review3_attacks;
mod review4_attacks;
mod review5_attacks;
mod review6_attacks;
mod review7_attacks;
mod review_attacks;
mod review_wide;
mod rsync_habits;
mod safety;
mod scatter;
mod scripts;
mod seams;
mod shape;
mod spec;
mod storage_faults;
mod target_full;
mod temps;
mod types;
mod updates;
mod verify;
mod wide;
