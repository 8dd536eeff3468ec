#!/usr/bin/env bash
# compare.sh: time psync against rsync, cp, xcp and a syscall-floor program
# on a generated tree. See benches/README.md, or run with --help.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=compare.sh

usage() {
    cat <<EOF
Usage: benches/$PROG (--mkfs-ext4 SIZE | --tmpfs SIZE | --dir DIR) [options]

Times an initial copy into an empty target and a no-op re-sync, for psync
and its peers, alternating the order of the tools every round; prints
medians and ratios against psync and writes every run to a CSV file.

Where to run (one is required):
  --mkfs-ext4 SIZE   create a SIZE image (e.g. 40G), mkfs.ext4 it, loop-mount
                     it and work there; unmounted and removed at exit
  --loop-dio         with --mkfs-ext4: switch the loop device to direct I/O
                     on its image (losetup --direct-io=on), so the image's
                     pages are not cached a second time by the host file
                     system and a single loop worker does not memcpy every
                     byte: closer to a real disk (see benches/README.md)
  --tmpfs SIZE       mount a tmpfs of SIZE (e.g. 4G) and work there: the
                     CPU-bound limit, no disk
  --dir DIR          work in DIR (source and targets are created under it)
  There is no default: the root file system of the benchmark machines is
  ext4 without a journal, where creating files right after deleting a large
  tree is pathologically slow (ext4's recently_deleted() inode check; rsync
  took 42-66 s instead of 14 s), so numbers measured there mislead.
  Use --dir on the root fs only if that is what you want to measure.

Workload:
  --files N          small-file tree: N files (default 100000)
  --files-per-dir N  files per leaf directory (default 100); leaf
                     directories are spread over up to 10 top directories
  --min-size SIZE    smallest file (default 1K)
  --max-size SIZE    largest file (default 16K)
  --large            instead: a few large files (see --large-*)
  --mixed            both: the large files beside the small-file tree
                     (e.g. --mixed --large-size 2G for 4 x 2 GiB + 100,000)
  --special          instead: the mixed tree of BENCHMARKING.md's S5, what
                     an exact copy must get right: --files regular files
                     (default 20000) of sizes spread evenly on a log scale
                     from --min-size to --max-size (defaults 1K and 2M:
                     about 5.3 GB for 20,000), --files/40 of them with a
                     second name in another directory (hard-link pairs),
                     as many symlinks, --files/1000 sparse files of 64 MiB
                     (four 256 KiB extents each), user xattrs on 5% of
                     the files, POSIX ACLs on 2% of the files and 2% of
                     the directories (a default ACL, which files made
                     there inherit), --files/100 empty directories.
                     Checked with rsync -aHAX (hard links, ACLs, xattrs);
                     rsync runs as rsync -aHAX. Scale it with --files
                     (e.g. --special --files 2000 for ~530 MB)
  --large-files N    number of large files (default 4)
  --large-size SIZE  size of each large file (default 1G); for the single
                     big-file case use --large-files 1 --large-size 8G
  --seed N           generator seed (default 42): same seed, same tree

Runs:
  --rounds R         rounds (default 3); the tool order rotates each round
  --tools LIST       comma list of tools (default psync,rsync,cp,xcp,floor;
                     also psync-nv = psync --no-verify, and ADR 008's
                     psync-fsync = --fsync (one syncfs per batch),
                     psync-file = an fsync per file, psync-par =
                     concurrent fsyncs per batch,
                     psync-end = one syncfs at the end; psync-broker =
                     psync sync --broker through a redis-server and
                     psync worker processes, see --broker-*); tools not
                     installed are skipped
  --no-noop          skip the no-op re-sync workload
  --cold             drop the page cache before every timed run (root only;
                     meaningless on tmpfs, whose pages cannot be dropped)
  --reset-cache      before every timed run, drop the page cache and read
                     the source back in: every tool starts warm with the
                     same memory (the default with --large and --mixed,
                     whose earlier runs otherwise leave gigabytes of cache
                     and writeback behind for the next tool; root only)
  --no-reset-cache   do not
  --psync PATH       psync binary (default: build target/release/psync, in
                     \$CARGO_TARGET_DIR when set)
  --psync-base PATH  another psync binary (an earlier commit's), run as the
                     tool psync-base: before and after in one run
  --psync-args ARGS  extra arguments for psync sync (e.g. "--threads 8")
  --broker-workers N psync-broker: worker processes (default 2)
  --broker-threads N psync-broker: threads per worker (default 1)
                     psync-broker starts redis-server (no persistence) on a
                     free loopback port and the workers once, before the
                     first round, and stops them at exit; each timed run
                     is one psync sync --broker (submit, follow to the end)
  --no-build         do not run cargo build
  --floor-src DIR    where smallcopy.c/bigcopy.c are
                     (default \$PSYNC_FLOOR_SRC or /work/shared/bench-floor)
  --floor-threads N  threads of the floor program (default 2 for smallcopy
                     and noopstat, 1 for bigcopy: one copy_file_range stream)
                     The no-op floor is this repository's
                     benches/floor/noopstat.c: getdents64 and one fstatat
                     per entry on each side, nothing else.
  --floor-no-xattrs  the no-op floor without -x: by default it also lists
                     every entry's xattrs on both sides (listxattrat), as
                     psync's exact xattr check must
  --out FILE         raw per-run CSV (default
                     target/bench-results/compare-<date>.csv)
  --keep             keep the source tree (in --dir) for the next run
  -h, --help         this help

Example (a small validation run):
  sudo benches/$PROG --tmpfs 2G --files 3000 --rounds 1
EOF
}

die() { echo "$PROG: $*" >&2; exit 2; }
note() { echo "$PROG: $*" >&2; }

# ---------------------------------------------------------------- options
MKFS_SIZE="" TMPFS_SIZE="" WORKDIR="" LOOP_DIO=0
FILES="" PER_DIR=100 MIN_SIZE="" MAX_SIZE=""
RESET="" LARGE=0 LARGE_FILES=4 LARGE_SIZE=1G SEED=42
ROUNDS=3 TOOLS="psync,rsync,cp,xcp,floor" NOOP=1 COLD=0
PSYNC="" PSYNC_BASE="" PSYNC_ARGS="" BUILD=1 FLOOR_THREADS="" FLOOR_XATTRS=1
FLOOR_SRC=${PSYNC_FLOOR_SRC:-/work/shared/bench-floor}
OUT="" KEEP=0 BROKER_WORKERS=2 BROKER_THREADS=1

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --mkfs-ext4) need_arg "$@"; MKFS_SIZE=$2; shift ;;
        --loop-dio) LOOP_DIO=1 ;;
        --tmpfs) need_arg "$@"; TMPFS_SIZE=$2; shift ;;
        --dir) need_arg "$@"; WORKDIR=$2; shift ;;
        --files) need_arg "$@"; FILES=$2; shift ;;
        --files-per-dir) need_arg "$@"; PER_DIR=$2; shift ;;
        --min-size) need_arg "$@"; MIN_SIZE=$2; shift ;;
        --max-size) need_arg "$@"; MAX_SIZE=$2; shift ;;
        --large) LARGE=1 ;;
        --mixed) LARGE=2 ;;
        --special) LARGE=3 ;;
        --reset-cache) RESET=1 ;;
        --no-reset-cache) RESET=0 ;;
        --large-files) need_arg "$@"; LARGE_FILES=$2; shift ;;
        --large-size) need_arg "$@"; LARGE_SIZE=$2; shift ;;
        --seed) need_arg "$@"; SEED=$2; shift ;;
        --rounds) need_arg "$@"; ROUNDS=$2; shift ;;
        --tools) need_arg "$@"; TOOLS=$2; shift ;;
        --no-noop) NOOP=0 ;;
        --cold) COLD=1 ;;
        --psync) need_arg "$@"; PSYNC=$2; shift ;;
        --psync-base) need_arg "$@"; PSYNC_BASE=$2; shift ;;
        --psync-args) need_arg "$@"; PSYNC_ARGS=$2; shift ;;
        --broker-workers) need_arg "$@"; BROKER_WORKERS=$2; shift ;;
        --broker-threads) need_arg "$@"; BROKER_THREADS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --floor-src) need_arg "$@"; FLOOR_SRC=$2; shift ;;
        --floor-threads) need_arg "$@"; FLOOR_THREADS=$2; shift ;;
        --floor-no-xattrs) FLOOR_XATTRS=0 ;;
        --out) need_arg "$@"; OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

# SIZE with an optional K/M/G/T suffix (powers of 1024) -> bytes.
bytes() {
    local n=${1%[KkMmGgTt]} mult=1
    case $1 in
        *[Kk]) mult=1024 ;;
        *[Mm]) mult=$((1024 ** 2)) ;;
        *[Gg]) mult=$((1024 ** 3)) ;;
        *[Tt]) mult=$((1024 ** 4)) ;;
    esac
    [[ $n =~ ^[0-9]+$ ]] || die "not a size: $1"
    echo $((n * mult))
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]] || die "$2 must be a non-negative integer: $1"; }
# --special's own defaults (S5), the small-file tree's otherwise.
if ((LARGE == 3)); then
    FILES=${FILES:-20000} MIN_SIZE=${MIN_SIZE:-1K} MAX_SIZE=${MAX_SIZE:-2M}
else
    FILES=${FILES:-100000} MIN_SIZE=${MIN_SIZE:-1K} MAX_SIZE=${MAX_SIZE:-16K}
fi
is_uint "$FILES" --files; is_uint "$PER_DIR" --files-per-dir; is_uint "$SEED" --seed
is_uint "$ROUNDS" --rounds; is_uint "$LARGE_FILES" --large-files
[[ -z $FLOOR_THREADS ]] || is_uint "$FLOOR_THREADS" --floor-threads
is_uint "$BROKER_WORKERS" --broker-workers; is_uint "$BROKER_THREADS" --broker-threads
((BROKER_WORKERS >= 1 && BROKER_THREADS >= 1)) || die "--broker-workers and --broker-threads must be at least 1"
((ROUNDS >= 1 && PER_DIR >= 1)) || die "--rounds and --files-per-dir must be at least 1"
read -r -a PSYNC_ARGV <<<"$PSYNC_ARGS"
MIN_BYTES=$(bytes "$MIN_SIZE") MAX_BYTES=$(bytes "$MAX_SIZE") LARGE_BYTES=$(bytes "$LARGE_SIZE")
((MIN_BYTES <= MAX_BYTES)) || die "--min-size is larger than --max-size"
[[ -n $RESET ]] || RESET=$((LARGE > 0 ? 1 : 0))
((RESET && COLD)) && RESET=0

where=0
[[ -n $MKFS_SIZE ]] && where=$((where + 1))
[[ -n $TMPFS_SIZE ]] && where=$((where + 1))
[[ -n $WORKDIR ]] && where=$((where + 1))
if ((where != 1)); then
    usage >&2
    die "say where to run: exactly one of --mkfs-ext4 SIZE, --tmpfs SIZE, --dir DIR (see above for why there is no default)"
fi
if [[ -n $MKFS_SIZE || -n $TMPFS_SIZE || $COLD == 1 || $RESET == 1 ]] && [[ $(id -u) != 0 ]]; then
    die "--mkfs-ext4, --tmpfs and --cold need root"
fi
[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash 5 (EPOCHREALTIME)"
command -v python3 >/dev/null || die "needs python3 (tree generator and summary)"

# ------------------------------------------------------- the file system
MNT="" IMG="" FSKIND=""
cleanup() {
    local rc=$?
    cd /
    # Workers hold the target's directories open: gone before the unmount.
    if declare -F stop_broker >/dev/null; then stop_broker; fi
    if [[ -n $MNT ]] && mountpoint -q "$MNT"; then
        umount "$MNT" || umount -l "$MNT" || note "could not unmount $MNT"
    fi
    [[ -n $MNT ]] && rmdir "$MNT" 2>/dev/null
    [[ -n $IMG ]] && rm -f "$IMG"
    if [[ -n $WORKDIR && -z $MNT && -d $WORKDIR ]]; then
        rm -rf "$WORKDIR/dst" "$WORKDIR/noop"
        ((KEEP)) || rm -rf "$WORKDIR/src" "$WORKDIR/src.params"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh, empty mount point under target/bench-tmp.
new_mountpoint() {
    local m="$REPO/target/bench-tmp/compare-$1-$$"
    mkdir -p "$m"
    echo "$m"
}

((LOOP_DIO == 0)) || [[ -n $MKFS_SIZE ]] || die "--loop-dio goes with --mkfs-ext4"
if [[ -n $MKFS_SIZE ]]; then
    command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 not found (apt-get install -y e2fsprogs)"
    mkdir -p "$REPO/target/bench-tmp"
    IMG="$REPO/target/bench-tmp/compare-ext4-$$.img"
    truncate -s "$MKFS_SIZE" "$IMG"
    mkfs.ext4 -q -F "$IMG"
    MNT=$(new_mountpoint ext4)
    # noinit_itable: no background inode-table zeroing (ext4lazyinit)
    # writing to the disk while we measure.
    mount -o loop,noinit_itable "$IMG" "$MNT"
    if ((LOOP_DIO)); then
        losetup --direct-io=on "$(findmnt -n -o SOURCE --target "$MNT")" ||
            die "could not switch the loop device of $MNT to direct I/O"
    fi
    WORKDIR=$MNT FSKIND="ext4-loop($MKFS_SIZE)"
elif [[ -n $TMPFS_SIZE ]]; then
    MNT=$(new_mountpoint tmpfs)
    mount -t tmpfs -o "size=$TMPFS_SIZE" psync-bench "$MNT"
    WORKDIR=$MNT FSKIND="tmpfs($TMPFS_SIZE)"
else
    mkdir -p "$WORKDIR"
    WORKDIR=$(cd "$WORKDIR" && pwd)
    FSKIND="dir:$(stat -f -c %T "$WORKDIR")"
    if [[ $(stat -c %d "$WORKDIR") == $(stat -c %d /) ]]; then
        note "warning: $WORKDIR is on the root file system (no journal here: see --help); numbers may mislead"
    fi
fi
# Say how a loop device under the work dir caches: the figures depend on it.
dev=$(findmnt -n -o SOURCE --target "$WORKDIR" 2>/dev/null || true)
if [[ $dev == /dev/loop* && -r /sys/block/${dev#/dev/}/loop/dio ]]; then
    FSKIND+=" on ${dev#/dev/} (loop direct I/O: $(cat "/sys/block/${dev#/dev/}/loop/dio"))"
fi
SRC=$WORKDIR/src DST=$WORKDIR/dst NOOP_DST=$WORKDIR/noop
[[ -n $OUT ]] || OUT=$REPO/target/bench-results/compare-$(date +%Y%m%d-%H%M%S).csv
mkdir -p "$(dirname "$OUT")"
# Each tool's output, per run, beside the CSV.
LOGDIR=${OUT%.csv}.logs
mkdir -p "$LOGDIR"

# ----------------------------------------------------------- the broker
# psync-broker's redis-server and workers: started once (start_broker),
# stopped at exit (stop_broker, from cleanup).
BROKER_URL="" BROKER_DIR="" BROKER_PIDS=()
stop_broker() {
    local pid
    # Workers first (SIGTERM: they hand back what they hold and leave).
    for pid in "${BROKER_PIDS[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${BROKER_PIDS[@]:1}"; do wait "$pid" 2>/dev/null || true; done
    if ((${#BROKER_PIDS[@]})); then
        kill -TERM "${BROKER_PIDS[0]}" 2>/dev/null || true
        wait "${BROKER_PIDS[0]}" 2>/dev/null || true
    fi
    BROKER_PIDS=()
    [[ -z $BROKER_DIR ]] || rm -rf "$BROKER_DIR"
    BROKER_DIR=""
}

# broker_ping PORT: does a redis-server answer PING on 127.0.0.1:PORT?
broker_ping() {
    python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
PY
}

start_broker() {
    [[ -z $BROKER_URL ]] || return 0
    command -v redis-server >/dev/null || { note "psync-broker needs redis-server (apt-get install -y redis-server)"; return 1; }
    local port i
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$REPO/target/bench-tmp"
    BROKER_DIR=$(mktemp -d "$REPO/target/bench-tmp/compare-redis-XXXXXX")
    redis-server --bind 127.0.0.1 --port "$port" --dir "$BROKER_DIR" --save "" --appendonly no \
        --logfile "$LOGDIR/redis-server.log" &
    BROKER_PIDS=($!)
    for ((i = 0; i < 100; i++)); do broker_ping "$port" && break; sleep 0.1; done
    broker_ping "$port" || { note "redis-server did not answer on port $port"; return 1; }
    BROKER_URL="redis://127.0.0.1:$port/"
    for ((i = 0; i < BROKER_WORKERS; i++)); do
        "$PSYNC" worker --broker "$BROKER_URL" --threads "$BROKER_THREADS" --name "compare-w$i" \
            --allow "$WORKDIR" >"$LOGDIR/worker-$i.log" 2>&1 &
        BROKER_PIDS+=($!)
    done
    # Until every worker heartbeats.
    for ((i = 0; i < 100; i++)); do
        "$PSYNC" status --broker "$BROKER_URL" --json 2>/dev/null | python3 -c '
import json, sys
sys.exit(0 if sum(w["alive"] for w in json.load(sys.stdin)["workers"]) >= int(sys.argv[1]) else 1)' "$BROKER_WORKERS" && break
        sleep 0.1
    done
    note "psync-broker: redis-server $(redis-server --version | grep -o 'v=[^ ]*') on port $port, $BROKER_WORKERS worker(s) x $BROKER_THREADS thread(s)"
}

# ----------------------------------------------------------- the tools
GNU_TIME=/usr/bin/time
if ! "$GNU_TIME" -f %M true >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        note "installing GNU time for peak RSS"
        apt-get install -y -q time >/dev/null 2>&1 || true
    fi
    "$GNU_TIME" -f %M true >/dev/null 2>&1 || { note "no GNU time: peak RSS not recorded"; GNU_TIME=""; }
fi

build_psync() {
    if [[ -z $PSYNC ]]; then
        PSYNC=${CARGO_TARGET_DIR:-$REPO/target}/release/psync
        if ((BUILD)); then
            note "cargo build --release -p psync-cli"
            (cd "$REPO" && cargo build --release -q -p psync-cli) ||
                note "build failed; using the existing binary if there is one"
        fi
    fi
    [[ -x $PSYNC ]]
}

FLOOR_BIN=$REPO/target/bench-floor
# build_floor NAME [DIR]: compiles DIR/NAME.c (DIR: the floor sources).
build_floor() {
    local name=$1 dir=${2:-$FLOOR_SRC}
    command -v gcc >/dev/null || return 1
    [[ -f $dir/$name.c ]] || return 1
    mkdir -p "$FLOOR_BIN"
    if [[ ! -x $FLOOR_BIN/$name || $dir/$name.c -nt $FLOOR_BIN/$name ]]; then
        gcc -O2 -pthread -o "$FLOOR_BIN/$name" "$dir/$name.c" || return 1
    fi
}

# rsync as a peer and as the reference: -a, and for the special tree
# (hard links, ACLs, xattrs) -aHAX, what an exact copy of it takes.
RSYNC_FLAGS=-a
((LARGE == 3)) && RSYNC_FLAGS=-aHAX

# copy_cmd TOOL DST: sets CMD to the tool's initial copy into DST (which
# does not exist yet).
CMD=()
copy_cmd() {
    case $1 in
        psync) CMD=("$PSYNC" sync "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-nv) CMD=("$PSYNC" sync --no-verify "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-base) CMD=("$PSYNC_BASE" sync "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        # ADR 008's durability modes: --fsync (one syncfs per batch of
        # files), an fsync per file, concurrent fsyncs per batch, one
        # syncfs at the end of the run.
        psync-fsync) CMD=("$PSYNC" sync --fsync "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-file) CMD=("$PSYNC" sync --fsync-mode file "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-par) CMD=("$PSYNC" sync --fsync-mode parallel "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-end) CMD=("$PSYNC" sync --fsync-mode end "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-broker) CMD=("$PSYNC" sync --broker "$BROKER_URL" "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        rsync) CMD=(rsync "$RSYNC_FLAGS" "$SRC/" "$2/") ;;
        cp) CMD=(cp -a "$SRC/." "$2") ;;
        # xcp keeps modes and times by default; -o adds the owner, as -a does.
        xcp) CMD=(xcp -r -o --no-progress "$SRC" "$2") ;;
        floor)
            if ((LARGE == 1)); then
                CMD=("$FLOOR_BIN/bigcopy" -q -t "${FLOOR_THREADS:-1}" "$SRC" "$2")
            else
                CMD=("$FLOOR_BIN/smallcopy" -q -t "${FLOOR_THREADS:-2}" "$SRC" "$2")
            fi
            ;;
    esac
}

# noop_cmd TOOL DST: sets CMD to the tool's re-sync of DST; fails for
# tools that cannot re-sync.
noop_cmd() {
    case $1 in
        psync) CMD=("$PSYNC" sync "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-nv) CMD=("$PSYNC" sync --no-verify "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-base) CMD=("$PSYNC_BASE" sync "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        psync-broker) CMD=("$PSYNC" sync --broker "$BROKER_URL" "${PSYNC_ARGV[@]}" "$SRC" "$2") ;;
        rsync) CMD=(rsync "$RSYNC_FLAGS" "$SRC/" "$2/") ;;
        # Our own floor for this case (benches/floor/noopstat.c): list and
        # stat both sides (and list xattrs: -x), nothing else.
        floor)
            [[ -x $FLOOR_BIN/noopstat ]] || return 1
            CMD=("$FLOOR_BIN/noopstat" -q -t "${FLOOR_THREADS:-2}")
            ((FLOOR_XATTRS)) && CMD+=(-x)
            CMD+=("$SRC" "$2")
            ;;
        # cp and xcp have no "skip what is already there" mode.
        *) return 1 ;;
    esac
}

available() {
    case $1 in
        psync | psync-nv | psync-fsync | psync-file | psync-par | psync-end) build_psync ;;
        psync-base) [[ -n ${PSYNC_BASE:-} && -x $PSYNC_BASE ]] ;;
        psync-broker) build_psync && start_broker ;;
        rsync | cp | xcp) command -v "$1" >/dev/null ;;
        floor)
            # Neither floor program copies a mixed or special tree
            # (bigcopy: the files of one directory; smallcopy: small files
            # only, no links, xattrs or ACLs).
            ((LARGE < 2)) || return 1
            build_floor noopstat "$REPO/benches/floor" || note "no no-op floor: cannot build benches/floor/noopstat.c"
            if ((LARGE)); then build_floor bigcopy; else build_floor smallcopy; fi
            ;;
        *) die "unknown tool: $1 (psync, psync-nv, psync-base, psync-fsync, psync-file, psync-par, psync-end, psync-broker, rsync, cp, xcp, floor)" ;;
    esac
}

ALL_TOOLS=()
IFS=, read -r -a wanted <<<"$TOOLS"
for t in "${wanted[@]}"; do
    if available "$t"; then ALL_TOOLS+=("$t"); else note "skipping $t: not available"; fi
done
((${#ALL_TOOLS[@]})) || die "no tool to run"
NOOP_TOOLS=()
for t in "${ALL_TOOLS[@]}"; do
    if noop_cmd "$t" /x; then NOOP_TOOLS+=("$t"); fi
done

# ------------------------------------------------------- the source tree
# Deterministic for a given seed: names, sizes, contents, modes and
# (nanosecond) times. Contents are slices of a seeded 4 MiB pool, which
# keeps generation at file system speed.
generate() {
    python3 - "$@" <<'PY'
import math, os, random, struct, sys

root, large, nfiles, per_dir, min_b, max_b, large_n, large_b, seed = sys.argv[1:]
large, nfiles, per_dir = int(large), int(nfiles), int(per_dir)
min_b, max_b, large_n, large_b, seed = int(min_b), int(max_b), int(large_n), int(large_b), int(seed)
rng = random.Random(seed)
pool = rng.randbytes(4 << 20)
base_ns = 1_600_000_000 * 10**9 + seed * 10**9
tick = [0]

def stamp(path_or_fd):
    tick[0] += 1
    t = base_ns + tick[0] * 1_000_003_217
    os.utime(path_or_fd, ns=(t, t))

def write(path, size, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while size > 0:
            n = min(size, 1 << 20)
            off = rng.randrange(len(pool) - n + 1)
            os.write(fd, pool[off:off + n])
            size -= n
        os.fchmod(fd, mode)
        stamp(fd)
    finally:
        os.close(fd)

def acl(entries):
    # The kernel's xattr form of a POSIX ACL: version 2, then (tag, perm,
    # id) sorted by tag and id; USER_OBJ 1, USER 2, GROUP_OBJ 4, GROUP 8,
    # MASK 0x10, OTHER 0x20; no id: 0xffffffff.
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in sorted(entries))

def some_acl():
    none = 0xFFFFFFFF
    return acl([(1, 6, none), (2, rng.choice((4, 6)), 1000 + rng.randrange(50)),
                (4, 4, none), (8, 4, 2000 + rng.randrange(50)), (0x10, 6, none), (0x20, 4, none)])

def special():
    # S5 (BENCHMARKING.md): what an exact copy must get right.
    nleaf = max(1, -(-nfiles // per_dir))
    ntop = min(10, nleaf)
    tops = [os.path.join(root, f"t{i:02}") for i in range(ntop)]
    for t in tops:
        os.mkdir(t, 0o755)
    leaves = [os.path.join(tops[i % ntop], f"d{i // ntop:04}") for i in range(nleaf)]
    for d in leaves:
        os.mkdir(d, 0o755)
        if rng.random() < 0.02:
            # A default ACL: files made here get an access ACL from it.
            os.setxattr(d, "system.posix_acl_default", some_acl())
    files = []
    lo, hi = math.log(min_b), math.log(max_b)
    for n in range(nfiles):
        d = leaves[n // per_dir]
        p = os.path.join(d, f"f{n % per_dir:04}-{rng.getrandbits(24):06x}")
        write(p, int(math.exp(rng.uniform(lo, hi))), 0o755 if rng.random() < 0.05 else 0o644)
        if rng.random() < 0.05:
            os.setxattr(p, "user.psync.tag", rng.randbytes(rng.randint(1, 64)), follow_symlinks=False)
            if rng.random() < 0.3:
                os.setxattr(p, "user.psync.note", rng.randbytes(rng.randint(100, 1000)), follow_symlinks=False)
        if rng.random() < 0.02:
            os.setxattr(p, "system.posix_acl_access", some_acl())
        files.append(p)
    # Hard-link pairs: a second name in another directory.
    for i, p in enumerate(rng.sample(files, min(len(files), max(1, nfiles // 40)))):
        os.link(p, os.path.join(leaves[rng.randrange(nleaf)], f"l{i:05}"))
    # Symlinks, relative, to files elsewhere in the tree (a few dangling).
    for i in range(max(1, nfiles // 40)):
        d = leaves[rng.randrange(nleaf)]
        to = os.path.relpath(rng.choice(files), d) if rng.random() < 0.95 else f"gone-{i}"
        os.symlink(to, os.path.join(d, f"s{i:05}"))
        os.utime(os.path.join(d, f"s{i:05}"), ns=(base_ns + i, base_ns + i), follow_symlinks=False)
    # Sparse files: 64 MiB with four data extents of 256 KiB.
    for i in range(max(1, nfiles // 1000)):
        p = os.path.join(leaves[rng.randrange(nleaf)], f"sparse{i:03}")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.ftruncate(fd, 64 << 20)
        for off in sorted(rng.sample(range(0, 64 << 20, 1 << 20), 4)):
            os.pwrite(fd, pool[off % (3 << 20):off % (3 << 20) + (256 << 10)], off)
        stamp(fd)
        os.close(fd)
    # Empty directories, some with their own mode.
    for i in range(max(1, nfiles // 100)):
        e = os.path.join(tops[i % ntop], f"empty{i:04}")
        os.mkdir(e, 0o700 if i % 7 == 0 else 0o755)
        stamp(e)
    for d in leaves + tops:
        stamp(d)

os.mkdir(root, 0o755)
if large == 3:
    special()
if large in (1, 2):
    for i in range(large_n):
        write(os.path.join(root, f"big-{i:02}"), large_b, 0o644)
if large in (0, 2):
    nleaf = max(1, -(-nfiles // per_dir))
    ntop = min(10, nleaf)
    tops = [os.path.join(root, f"t{i:02}") for i in range(ntop)]
    for t in tops:
        os.mkdir(t, 0o755)
    left = nfiles
    for leaf in range(nleaf):
        d = os.path.join(tops[leaf % ntop], f"d{leaf // ntop:04}")
        os.mkdir(d, 0o755)
        for f in range(min(per_dir, left)):
            mode = 0o755 if rng.random() < 0.05 else 0o644
            write(os.path.join(d, f"f{f:04}-{rng.getrandbits(24):06x}"), rng.randint(min_b, max_b), mode)
        left -= min(per_dir, left)
        stamp(d)
    for t in tops:
        stamp(t)
stamp(root)
PY
}

if ((LARGE == 1)); then
    PARAMS="large files=$LARGE_FILES size=$LARGE_BYTES seed=$SEED"
    WORKLOAD=large
elif ((LARGE == 3)); then
    PARAMS="special files=$FILES per_dir=$PER_DIR min=$MIN_BYTES max=$MAX_BYTES seed=$SEED"
    WORKLOAD=special
elif ((LARGE == 2)); then
    PARAMS="mixed large files=$LARGE_FILES size=$LARGE_BYTES small files=$FILES per_dir=$PER_DIR min=$MIN_BYTES max=$MAX_BYTES seed=$SEED"
    WORKLOAD=mixed
else
    PARAMS="small files=$FILES per_dir=$PER_DIR min=$MIN_BYTES max=$MAX_BYTES seed=$SEED"
    WORKLOAD=small
fi
rm -rf "$DST" "$NOOP_DST"
if [[ -d $SRC && -f $SRC.params && $(cat "$SRC.params") == "$PARAMS" ]]; then
    note "reusing the source tree in $SRC ($PARAMS)"
else
    rm -rf "$SRC" "$SRC.params"
    note "generating $PARAMS in $SRC"
    t0=${EPOCHREALTIME/./}
    generate "$SRC" "$LARGE" "$FILES" "$PER_DIR" "$MIN_BYTES" "$MAX_BYTES" "$LARGE_FILES" "$LARGE_BYTES" "$SEED"
    echo "$PARAMS" >"$SRC.params"
    sync
    note "generated in $(((${EPOCHREALTIME/./} - t0) / 1000)) ms"
fi
# Entries below the root, and bytes of regular files.
read -r NENTRIES NBYTES < <(find "$SRC" -mindepth 1 -printf '%y %s\n' | awk '{n++} $1 == "f" {b += $2} END {printf "%d %.0f\n", n, b}')

# ------------------------------------------------------------- timing
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# Microseconds -> seconds.
secs() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

echo "round,workload,phase,cache,fs,tool,exit_s,exit_sync_s,peak_rss_kb,status,entries,bytes" >"$OUT"

# run_timed ROUND PHASE TOOL CMD...: one timed run, appended to the CSV.
run_timed() {
    local round=$1 phase=$2 tool=$3
    shift 3
    local log="$LOGDIR/$phase-$tool-r$round.log" rssf="$LOGDIR/.rss"
    local -a wrap=()
    [[ -n $GNU_TIME ]] && wrap=("$GNU_TIME" -f %M -o "$rssf")
    # Twice: on a loop mount the first sync can leave the backing file's
    # pages dirty on the host file system, to be written during our run.
    sync
    sync
    if ((COLD)); then
        drop_caches
    elif ((RESET)); then
        drop_caches
        find "$SRC" -type f -print0 | xargs -0 cat >/dev/null
    fi
    local t0 t1 t2 status=0
    t0=${EPOCHREALTIME/./}
    "${wrap[@]}" "$@" >"$log" 2>&1 || status=$?
    t1=${EPOCHREALTIME/./}
    sync
    t2=${EPOCHREALTIME/./}
    local rss=""
    [[ -n $GNU_TIME && -s $rssf ]] && rss=$(tail -n 1 "$rssf")
    if ((status != 0)); then
        note "$tool $phase (round $round) exited with $status; see $log"
    fi
    echo "$round,$WORKLOAD,$phase,$([[ $COLD == 1 ]] && echo cold || echo warm),$FSKIND,$tool,$(secs $((t1 - t0))),$(secs $((t2 - t0))),$rss,$status,$NENTRIES,$NBYTES" >>"$OUT"
    printf '  %-6s %-5s round %d: %s s (+sync %s s)%s\n' "$tool" "$phase" "$round" \
        "$(secs $((t1 - t0)))" "$(secs $((t2 - t0)))" "${rss:+, peak RSS $((rss / 1024)) MiB}" >&2
}

# verify TOOL DIR: does DIR equal the source, by rsync's itemized dry run?
VERIFY_NOTES=()
verify() {
    local tool=$1 dir=$2 out n
    if ! command -v rsync >/dev/null; then
        VERIFY_NOTES+=("$tool: not verified (no rsync)")
        return
    fi
    out=$(rsync "$RSYNC_FLAGS" -n -i --delete "$SRC/" "$dir/" 2>&1) || true
    if [[ -z $out ]]; then
        VERIFY_NOTES+=("$tool: identical to the source (rsync $RSYNC_FLAGS -n -i --delete printed nothing)")
    else
        n=$(wc -l <<<"$out")
        VERIFY_NOTES+=("$tool: DIFFERS from the source: $n lines from rsync $RSYNC_FLAGS -n -i --delete, first: $(head -n 3 <<<"$out" | tr '\n' ' ')")
    fi
    if ((LARGE == 3)); then
        # Holes: rsync does not compare allocation. The source's and the
        # copy's allocated bytes (du), which a copy that fills holes exceeds.
        local a b
        a=$(du -s --block-size=1M "$SRC" | cut -f1) b=$(du -s --block-size=1M "$dir" | cut -f1)
        VERIFY_NOTES+=("$tool: allocated $b MiB (the source: $a MiB)")
    fi
}

# The tools in round r's order: the list rotated by r.
rotated() {
    local r=$1
    shift
    local -a l=("$@")
    local n=${#l[@]} i
    for ((i = 0; i < n; i++)); do echo "${l[$(((i + r) % n))]}"; done
}

note "work dir $WORKDIR ($FSKIND): $NENTRIES entries, $NBYTES bytes; tools: ${ALL_TOOLS[*]}; rounds: $ROUNDS$([[ $COLD == 1 ]] && echo ', cold cache')"
if ((NOOP)) && ((${#NOOP_TOOLS[@]})); then
    # The no-op target is made once, by rsync (the reference) when present.
    if command -v rsync >/dev/null; then rsync "$RSYNC_FLAGS" "$SRC/" "$NOOP_DST/"; else cp -a "$SRC/." "$NOOP_DST"; fi
fi

for ((r = 0; r < ROUNDS; r++)); do
    round=$((r + 1))
    mapfile -t order < <(rotated "$r" "${ALL_TOOLS[@]}")
    for tool in "${order[@]}"; do
        rm -rf "$DST"
        copy_cmd "$tool" "$DST"
        run_timed "$round" copy "$tool" "${CMD[@]}"
        ((round == 1)) && verify "$tool" "$DST"
    done
    rm -rf "$DST"
    if ((NOOP)) && ((${#NOOP_TOOLS[@]})); then
        mapfile -t order < <(rotated "$r" "${NOOP_TOOLS[@]}")
        for tool in "${order[@]}"; do
            noop_cmd "$tool" "$NOOP_DST"
            run_timed "$round" noop "$tool" "${CMD[@]}"
        done
    fi
done
if ((NOOP)) && ((${#NOOP_TOOLS[@]})); then
    verify "no-op target after all re-syncs" "$NOOP_DST"
fi

# ------------------------------------------------------------- summary
echo
echo "psync compare: $WORKLOAD workload ($PARAMS), $NENTRIES entries, $((NBYTES / 1024 / 1024)) MiB, on $FSKIND, $([[ $COLD == 1 ]] && echo cold || echo warm) cache, $ROUNDS round(s), $(date -u +%Y-%m-%dT%H:%MZ)"
python3 - "$OUT" <<'PY'
import csv, statistics, sys

rows = list(csv.DictReader(open(sys.argv[1])))
groups = {}
for r in rows:
    groups.setdefault((r["phase"], r["tool"]), []).append(r)

def med(rs, key):
    return statistics.median(float(r[key]) for r in rs)

print(f"{'tool':<13} {'workload':<9} {'runs':>4} {'exit s':>8} {'+sync s':>8} {'x psync':>8} {'x psync':>8} {'peak RSS':>9}  notes")
print(f"{'':<13} {'':<9} {'':>4} {'median':>8} {'median':>8} {'(exit)':>8} {'(+sync)':>8} {'MiB':>9}")
for phase in ("copy", "noop"):
    ref = groups.get((phase, "psync"))
    for (ph, tool), rs in groups.items():
        if ph != phase:
            continue
        e, s = med(rs, "exit_s"), med(rs, "exit_sync_s")
        re_ = f"{e / med(ref, 'exit_s'):.2f}" if ref and med(ref, "exit_s") > 0 else "-"
        rs_ = f"{s / med(ref, 'exit_sync_s'):.2f}" if ref and med(ref, "exit_sync_s") > 0 else "-"
        rss = [int(r["peak_rss_kb"]) for r in rs if r["peak_rss_kb"]]
        rss_s = f"{max(rss) / 1024:.1f}" if rss else "-"
        bad = sum(1 for r in rs if r["status"] != "0")
        notes = f"{bad} run(s) failed" if bad else ""
        print(f"{tool:<13} {phase:<9} {len(rs):>4} {e:>8.3f} {s:>8.3f} {re_:>8} {rs_:>8} {rss_s:>9}  {notes}")
print("x psync = this tool's median / psync's median: above 1.00 means psync is faster.")
PY
echo "raw runs: $OUT"
for v in "${VERIFY_NOTES[@]}"; do echo "verify: $v"; done
