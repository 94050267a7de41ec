"""Two training runs with the same seed (so the same crops at every step), e.g. --amp off
and --amp bf16: the paired difference of their logged losses per step window.

    python -m benchmarks.amp_pair RUN_A RUN_B      (folders or log.csv files)
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def losses(path: str) -> dict[int, float]:
    p = Path(path)
    p = p / "log.csv" if p.is_dir() else p
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(p))}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = losses(argv[0]), losses(argv[1])
    steps = sorted(set(a) & set(b))
    print(f"# python -m benchmarks.amp_pair {' '.join(argv)}: {len(steps)} common logged steps, "
          f"last {steps[-1]}; B minus A")
    edges = np.linspace(steps[0], steps[-1], 4).round().astype(int)
    for lo, hi in zip(edges[:-1], edges[1:]):
        s = [k for k in steps if lo <= k <= hi]
        d = np.array([b[k] - a[k] for k in s])
        print(f"steps {lo}-{hi}: mean loss A {np.mean([a[k] for k in s]):.4f}, "
              f"B {np.mean([b[k] for k in s]):.4f}, difference {d.mean():+.4f} "
              f"(standard error {d.std(ddof=1) / np.sqrt(len(d)):.4f}, {len(d)} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
