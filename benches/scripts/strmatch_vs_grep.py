#!/usr/bin/env python3
"""strmatch against ripgrep and GNU grep, side by side (docs/BENCHMARKS.md).

  strmatch_vs_grep.py STRMATCH FILE ROUNDS PATTERN...

Runs `STRMATCH -e P...` (coop's worker processes, the default engine),
`rg -c -F -e P...` and `grep -c -F -e P...` (LC_ALL=C) on FILE once each
untimed, then ROUNDS rounds of each once, in an order that rotates round by
round; checks that all three count the same lines with any pattern, and
prints the medians and each one's ratio to strmatch's time.
"""
import os
import statistics
import subprocess
import sys
import time


def main():
    strmatch, path, rounds, *patterns = sys.argv[1:]
    flags = [arg for p in patterns for arg in ("-e", p)]
    commands = {
        "strmatch": [strmatch, "--format", "tsv", *flags, path],
        "rg": ["rg", "-c", "-F", *flags, path],
        "grep": ["grep", "-c", "-F", *flags, path],
    }
    env = dict(os.environ, LC_ALL="C")

    def run(name):
        start = time.perf_counter()
        done = subprocess.run(commands[name], capture_output=True, env=env)
        took = time.perf_counter() - start
        if done.returncode not in (0, 1):  # grep and rg: 1 is "no line matched"
            sys.exit(f"{name}: exit {done.returncode}: {done.stderr.decode()}")
        return took, done.stdout.decode()

    counts = {}
    for name in commands:
        _, out = run(name)
        counts[name] = int(out.splitlines()[-1].split("\t")[-1]) if out.strip() else 0
    if len(set(counts.values())) != 1:
        sys.exit(f"the counts differ: {counts}")
    names = list(commands)
    times = {name: [] for name in names}
    for r in range(int(rounds)):
        for name in names[r % 3 :] + names[: r % 3]:
            times[name].append(run(name)[0])
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{len(patterns)} pattern(s), {counts['rg']} lines with any, {rounds} rounds:", end="")
    for name in names:
        print(f"  {name} {med[name]:.3f} s ({med[name] / med['strmatch']:.2f}x)", end="")
    print()


if __name__ == "__main__":
    main()
