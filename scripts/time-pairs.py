#!/usr/bin/env python3
"""Whole-process times in alternating pairs, medians (docs/BENCHMARKS.md).

  time-pairs.py binaries N OLD NEW -- ARGS...   OLD and NEW on ARGS, N pairs,
                                                the first of each pair flipped
  time-pairs.py engines N BIN ARGS...           BIN --engine processes, threads,
                                                sequential, then ARGS, N rounds
"""
import statistics
import subprocess
import sys
import time


def timed(cmd):
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{cmd} exited {done.returncode}")
    return took


def rounds(cmds, n):
    """Each command once a round (order reversed every other round), after one
    untimed run each."""
    times = {name: [] for name in cmds}
    for cmd in cmds.values():
        timed(cmd)
    for i in range(n):
        for name in list(cmds) if i % 2 == 0 else reversed(cmds):
            times[name].append(timed(cmds[name]))
    return times


def ratio(times, a, b):
    ratios = [y / x for x, y in zip(times[a], times[b])]
    return f"{statistics.median(ratios):.3f} ({min(ratios):.2f} to {max(ratios):.2f})"


def main():
    what, n = sys.argv[1], int(sys.argv[2])
    if what == "binaries":
        old, new, dashes, *args = sys.argv[3:]
        assert dashes == "--", __doc__
        times = rounds({"old": [old, *args], "new": [new, *args]}, n)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"old {med['old']:.3f} s, new {med['new']:.3f} s, new/old {ratio(times, 'old', 'new')}, {n} pairs")
    elif what == "engines":
        binary, *args = sys.argv[3:]
        engines = ["processes", "threads", "sequential"]
        times = rounds({e: [binary, "--engine", e, *args] for e in engines}, n)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"processes {med['processes']:.3f} s, threads {med['threads']:.3f} s, "
            f"sequential {med['sequential']:.3f} s; processes/threads {ratio(times, 'threads', 'processes')}; "
            f"sequential/processes {med['sequential'] / med['processes']:.2f}x, {n} rounds"
        )
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
