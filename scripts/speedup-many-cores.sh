#!/usr/bin/env bash
# The speedup study on a machine with more cores than this project's own (the
# issue's "past 2 cores" run), in one command that fits a borrowed machine's
# time limit, writing everything under one directory:
#   machine.txt   what the machine is (lscpu, memory, kernel, load)
#   stdout.txt    speedup's table, round-by-round ratios, Amdahl fit, where the time goes
#   speedup.csv   and speedup.svg, as speedup writes them
#
# The borrowed machine may have no Rust toolchain and no network, so this runs a
# `speedup` binary built beforehand (`cargo build --release --bin speedup`)
# that travels with the working tree.
#
# Usage: scripts/speedup-many-cores.sh BINARY OUT_DIR [speedup options...]
#   default options: --max-workers 16 --runs 5 (300 MB of text, n = 2048)
# e.g.   scripts/speedup-many-cores.sh target/release/speedup "$OUT/16-core"
# The study stops after 540 s whatever happens (a device command may run 600 s),
# so that what it wrote comes back; on 16 cores it should take 3 to 4 minutes.
set -euo pipefail

if (( $# < 2 )); then
  echo "usage: $0 BINARY OUT_DIR [speedup options...]" >&2
  exit 2
fi
binary=$1 out=$2
shift 2
(( $# > 0 )) || set -- --max-workers 16 --runs 5
mkdir -p "$out"

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): $binary $* --out $out"
  lscpu
  echo
  free -g
  echo
  uname -a
  echo "load: $(cat /proc/loadavg)"
} >"$out/machine.txt" 2>&1

timeout 540 "$binary" "$@" --out "$out" >"$out/stdout.txt" 2>"$out/stderr.txt" || status=$?
tail -n 40 "$out/stdout.txt"
if [[ -s $out/stderr.txt ]]; then tail -n 20 "$out/stderr.txt" >&2; else rm -f "$out/stderr.txt"; fi
exit "${status:-0}"
