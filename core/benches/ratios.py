#!/usr/bin/env python3
"""Ratio table for the `throughput` bench of peng3dnet-core.

Reads the JSON the bench writes (target/peng3dnet-bench/throughput.json, or
$CARGO_TARGET_DIR/peng3dnet-bench/throughput.json) after
`cargo bench -p peng3dnet-core --bench throughput`, and prints, per variant,
the median time per iteration and per frame, frames per second, and the
median and spread (min-max) over the blocks of its ratio to the group's
baseline (the first variant, `bare_*`) in the same block, with the issue's
targets. Given several files (one per run), it prints each run's table and
then one line per run with the targeted ratios.

Usage: python3 core/benches/ratios.py [RUN.json ...]
Exit status 1 if a target is missed in any run, 2 if no results were found.
"""

import json
import os
import signal
import sys
from pathlib import Path

# (group, variant) -> the most its median ratio may be.
TARGETS = {
    ("recv_32B", "core_no_decode"): 2.0,
    ("recv_1KiB", "core_no_decode"): 2.0,
    ("recv_32B", "core_postcard_decode"): 4.0,
}


def default_file():
    target = os.environ.get("CARGO_TARGET_DIR")
    root = Path(target) if target else Path(__file__).resolve().parents[2] / "target"
    return root / "peng3dnet-bench" / "throughput.json"


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def table(path, run):
    """Prints one run's table; returns {(group, variant): (median, lo, hi)} of the targets and the miss count."""
    header = (f"{'benchmark':<36} {'us/iter':>9} {'ns/frame':>9} {'Mframes/s':>10} "
              f"{'ratio':>7} {'min-max':>11}  target")
    print(f"{path}:")
    print(header)
    print("-" * len(header))
    missed = 0
    found = {}
    for group in run["groups"]:
        frames = group["frames"]
        base = group["variants"][0]["name"]
        for v in group["variants"]:
            t = median(v["block_ns"])
            r = median(v["ratios"])
            lo, hi = min(v["ratios"]), max(v["ratios"])
            target = TARGETS.get((group["group"], v["name"]))
            verdict = ""
            if v["name"] == base:
                verdict = "(baseline)"
            elif target is not None:
                ok = r <= target
                missed += not ok
                verdict = f"<= {target:g}x {'PASS' if ok else 'MISS'}"
                found[(group["group"], v["name"])] = (r, lo, hi)
            print(f"{group['group'] + '/' + v['name']:<36} {t / 1e3:>9.2f} {t / frames:>9.2f} "
                  f"{frames / t * 1e3:>10.2f} {r:>6.2f}x {lo:>5.2f}-{hi:<5.2f}  {verdict}")
    print()
    return found, missed


def main():
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    paths = [Path(p) for p in sys.argv[1:]] or [default_file()]
    runs = []
    for p in paths:
        if not p.exists():
            print(f"no results at {p}; run `cargo bench -p peng3dnet-core --bench throughput` first")
            return 2
        runs.append((p, json.loads(p.read_text())))
    total_missed = 0
    summary = []
    for p, run in runs:
        found, missed = table(p, run)
        total_missed += missed
        summary.append((p, found))
    if len(runs) > 1:
        keys = sorted(TARGETS)
        print("per run: median ratio (min-max over blocks)")
        for p, found in summary:
            cells = [f"{g}/{v} {found[(g, v)][0]:.2f}x ({found[(g, v)][1]:.2f}-{found[(g, v)][2]:.2f})"
                     for g, v in keys if (g, v) in found]
            print(f"  {p.name}: " + "; ".join(cells))
        print()
    print("all targets met" if not total_missed else f"{total_missed} target(s) missed")
    return 1 if total_missed else 0


if __name__ == "__main__":
    sys.exit(main())
