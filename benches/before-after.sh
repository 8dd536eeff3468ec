#!/usr/bin/env bash
# Alternating timings of two psync builds (BIN/psync-before, BIN/psync-after)
# copying M/small-src and M/large-src to M/dst, as compare.sh --reset-cache
# does before each run: page cache dropped, source read back in. Root only.
# ROUNDS (default 3), WL ("small large"). Used for the read-back cost in the
# README (issue 12).
set -euo pipefail
M=${M:?set M to a directory holding small-src/ and large-src/ (on the file system to measure)}
BIN=${BIN:?set BIN to a directory holding psync-before and psync-after}
ROUNDS=${ROUNDS:-3}
WL=${WL:-small large}
reset() { # drop caches, read the source back in (as compare.sh --reset-cache)
  sync; echo 3 > /proc/sys/vm/drop_caches
  [ "$1" = large ] && cat $M/large-src/* > /dev/null || find $M/small-src -type f -print0 | xargs -0 cat > /dev/null
}
for r in $(seq $ROUNDS); do
  for wl in $WL; do
    order="before after"; [ $((r % 2)) = 0 ] && order="after before"
    for v in $order; do
      rm -rf $M/dst; sync
      reset $wl
      s=$(date +%s.%N)
      $BIN/psync-$v sync -q $M/$wl-src $M/dst
      e=$(date +%s.%N)
      sync; f=$(date +%s.%N)
      printf "%s round %d %s exit %.2f +sync %.2f\n" $wl $r $v $(echo "$e - $s" | bc) $(echo "$f - $s" | bc)
    done
  done
done
