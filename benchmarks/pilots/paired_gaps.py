"""Paired gaps of pilot stores (issue 21's pilot, benchmarks/NOTES.md), per seed, with the project's own test
(mixsweep.report.effect.paired_test): d is the mean over the sd of the per-seed differences.

    python benchmarks/pilots/paired_gaps.py runs/p480-planted-s201 runs/p480-planted-s202
"""

import sys

import numpy as np
import pandas as pd

from mixsweep.report.effect import paired_test

GAPS = (("fine-tune F1 - F0", ("mae", 1.0), ("mae", 0.0)),
        ("probe F1 - F0", ("probe", 1.0), ("probe", 0.0)),
        ("fine-tune F1 - scratch", ("mae", 1.0), ("supervised_mae", None)),
        ("probe F1 - random", ("probe", 1.0), ("random_probe", None)),
        ("probe F0 - random", ("probe", 0.0), ("random_probe", None)))


def by_seed(df: pd.DataFrame, method: str, fraction: float | None) -> pd.Series:
    rows = df[df.method == method]
    if fraction is not None:
        rows = rows[rows.animal_fraction == fraction]
    return rows.set_index("seed").test_iou_binary


for store in sys.argv[1:]:
    df = pd.read_parquet(f"{store}/results.parquet")
    df = df[(df.kind == "finetune") & (df.status == "done")]
    print(store)
    for name, high, low in GAPS:
        a, b = by_seed(df, *high), by_seed(df, *low)
        seeds = a.index.intersection(b.index)
        if len(seeds) < 2:
            continue
        r = paired_test(b[seeds].to_numpy(), a[seeds].to_numpy(), direction="increase")
        sd = float(np.std(a[seeds] - b[seeds], ddof=1))
        print(f"  {name:24} {r['diff']:+.3f} (sd {sd:.3f}, d {r['diff'] / sd:+.2f}) "
              f"CI {r['ci'][0]:+.3f}..{r['ci'][1]:+.3f} one-sided p {r['p']:.3f} n {r['n']}")
