#!/usr/bin/env bash
# Peak RSS and wall time of two psync builds (BIN/psync-before,
# BIN/psync-after) syncing M/<tree> to M/dst at several --threads,
# alternating before/after run by run (the order flips every round).
# Source cached (warm), target removed and `sync`ed before each run.
# Prints one line per run: fs tree threads round build maxrss_kib exit_s.
# TREES (default "small mixed"), THREADS ("4 16 64 256"), ROUNDS (1).
# Used for issue 12 (memory per thread); see benches/README.md.
set -euo pipefail
M=${M:?set M to a directory holding the source trees (on the file system to measure)}
BIN=${BIN:?set BIN to a directory holding psync-before and psync-after}
TREES=${TREES:-small mixed}
THREADS=${THREADS:-4 16 64 256}
ROUNDS=${ROUNDS:-1}
fs=$(stat -f -c %T "$M")
for r in $(seq "$ROUNDS"); do
  for tree in $TREES; do
    for t in $THREADS; do
      order="before after"; [ $((r % 2)) = 0 ] && order="after before"
      for v in $order; do
        rm -rf "$M/dst"; sync
        out=$(/usr/bin/time -f "%M %e" "$BIN/psync-$v" sync -q --threads "$t" "$M/$tree" "$M/dst" 2>&1 >/dev/null | tail -1)
        echo "$fs $tree $t $r $v $out"
      done
    done
  done
done
rm -rf "$M/dst"
