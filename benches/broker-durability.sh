#!/usr/bin/env bash
# broker-durability.sh: what durability costs a run through the broker.
# Makes an ext4 image (loop-mounted, under WORK, default /tmp/psync-dur),
# a tree of 30,000 files of 1-16 KiB in 300 directories, starts
# redis-server on a free loopback port and 2 `psync worker --threads 1`,
# then times 3 broker runs and 3 local runs (`--threads 2`) of that tree,
# and prints how many syncfs calls each worker made and their time
# (`psync status --json`: syncs, sync_ms). Root only (loop mount).
# Build first: cargo build --release -p psync-cli
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${PSYNC:-${CARGO_TARGET_DIR:-$REPO/target}/release/psync}
W=${1:-/tmp/psync-dur}
cleanup() {
    [ -n "${PSYNC_BROKER:-}" ] && "$B" shutdown >/dev/null 2>&1 || true
    sleep 1
    [ -n "${P:-}" ] && redis-cli -p "$P" shutdown nosave >/dev/null 2>&1 || true
    umount "$W/mnt" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/mnt"
truncate -s 8G "$W/img"
mkfs.ext4 -q -F "$W/img"
mount -o loop "$W/img" "$W/mnt"
python3 - "$W/mnt/src" <<'PY'
import os, random, sys
random.seed(42)
root = sys.argv[1]
for d in range(300):
    p = f'{root}/d{d // 10}/e{d}'
    os.makedirs(p, exist_ok=True)
    for f in range(100):
        with open(f'{p}/f{f}', 'wb') as out:
            out.write(os.urandom(random.randint(1024, 16384)))
PY
sync
P=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$P" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$W" >/dev/null
sleep 0.3
export PSYNC_BROKER=redis://127.0.0.1:$P
"$B" worker --threads 1 --name a --allow "$W/mnt" >/dev/null 2>&1 &
"$B" worker --threads 1 --name b --allow "$W/mnt" >/dev/null 2>&1 &
sleep 1
timed() {
    rm -rf "$W/mnt/dst"
    sync
    local s e
    s=$(date +%s.%N)
    "$@" 2>/dev/null
    e=$(date +%s.%N)
    python3 -c "print(f'{$e - $s:.2f} s')"
}
for i in 1 2 3; do echo "broker run $i: $(timed "$B" sync -q "$W/mnt/src" "$W/mnt/dst")"; done
"$B" status --json | python3 -c '
import json, sys
for w in json.load(sys.stdin)["workers"]:
    print(w["name"], "syncfs", w["syncs"], "in", w["sync_ms"], "ms;", w["tasks_done"], "tasks")'
for i in 1 2 3; do
    echo "local run $i: $(PSYNC_BROKER= timed env -u PSYNC_BROKER "$B" sync -q --threads 2 "$W/mnt/src" "$W/mnt/dst")"
done
