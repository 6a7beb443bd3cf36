#!/usr/bin/env python3
"""Ratio table for the `throughput` bench of peng3dnet-core.

Reads criterion's estimates (target/criterion/<group>/<bench>/new/) written by
`cargo bench -p peng3dnet-core --bench throughput` and prints, per benchmark,
the median time per frame, frames per second, and the ratio of its median to
the `bare_*` baseline of the same group, with the issue's targets.

Usage: python3 core/benches/ratios.py [CRITERION_DIR]
CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion or <workspace>/target/criterion.
Exit status 1 if a target is missed, 2 if no estimates were found.
"""

import json
import os
import signal
import sys
from pathlib import Path

# (group, bench) -> the most the median may be of the baseline's median.
TARGETS = {
    ("recv_32B", "core_no_decode"): 2.0,
    ("recv_1KiB", "core_no_decode"): 2.0,
    ("recv_32B", "core_postcard_decode"): 4.0,
}
GROUP_ORDER = ["recv_32B", "recv_1KiB", "send_32B", "send_1KiB"]


def default_dir():
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "criterion"
    return Path(__file__).resolve().parents[2] / "target" / "criterion"


def load(root):
    """{group: {bench: (median_ns_per_iter, frames_per_iter)}}"""
    groups = {}
    for est in sorted(root.glob("*/*/new/estimates.json")):
        new = est.parent
        meta = json.loads((new / "benchmark.json").read_text())
        median = json.loads(est.read_text())["median"]["point_estimate"]
        frames = (meta.get("throughput") or {}).get("Elements") or 1
        group = meta.get("group_id") or new.parent.parent.name
        bench = meta.get("function_id") or new.parent.name
        groups.setdefault(group, {})[bench] = (median, frames)
    return groups


def main():
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default_dir()
    groups = load(root)
    if not groups:
        print(f"no criterion estimates under {root}; run "
              "`cargo bench -p peng3dnet-core --bench throughput` first")
        return 2
    order = [g for g in GROUP_ORDER if g in groups] + sorted(set(groups) - set(GROUP_ORDER))
    header = f"{'benchmark':<32} {'median/iter':>12} {'ns/frame':>9} {'Mframes/s':>10} {'ratio':>6}  target"
    print(header)
    print("-" * len(header))
    missed = 0
    for group in order:
        benches = groups[group]
        base = next((b for b in sorted(benches) if b.startswith("bare_")), None)
        base_median = benches[base][0] if base else None
        for bench in sorted(benches, key=lambda b: (b != base, b)):
            median, frames = benches[bench]
            per_frame = median / frames
            mfps = frames / median * 1e3  # frames per ns * 1e9 / 1e6
            ratio = median / base_median if base_median else float("nan")
            target = TARGETS.get((group, bench))
            verdict = ""
            if target is not None:
                ok = ratio <= target
                missed += not ok
                verdict = f"<= {target:g}x {'PASS' if ok else 'MISS'}"
            elif bench == base:
                verdict = "(baseline)"
            print(f"{group + '/' + bench:<32} {median / 1e3:>9.2f} us {per_frame:>9.2f} "
                  f"{mfps:>10.2f} {ratio:>5.2f}x  {verdict}")
    print(f"\n{root}: {'all targets met' if not missed else f'{missed} target(s) missed'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
