"""Paired gaps of pilot stores (issue 21's pilot, benchmarks/NOTES.md), per seed, with the project's own test
(mixsweep.report.effect.paired_test): d is the mean over the sd of the per-seed differences.

    python benchmarks/pilots/paired_gaps.py runs/p480-planted-s201 runs/p480-planted-s202
    python benchmarks/pilots/paired_gaps.py --metric test_loss --direction decrease --seeds 0-5 runs/demo8-planted-s203

`--seeds` keeps only those training seeds (a smaller design read from a larger store: the stages of seeds
0-5 are the same stages, by key, as a 6-seed spec's).
"""

import argparse

import numpy as np
import pandas as pd

from mixsweep.report.effect import paired_test

GAPS = (("fine-tune F1 - F0", ("mae", 1.0), ("mae", 0.0)),
        ("probe F1 - F0", ("probe", 1.0), ("probe", 0.0)),
        ("fine-tune F1 - scratch", ("mae", 1.0), ("supervised_mae", None)),
        ("probe F1 - random", ("probe", 1.0), ("random_probe", None)),
        ("probe F0 - random", ("probe", 0.0), ("random_probe", None)))


def by_seed(df: pd.DataFrame, method: str, fraction: float | None, metric: str) -> pd.Series:
    rows = df[df.method == method]
    if fraction is not None:
        rows = rows[rows.animal_fraction == fraction]
    return rows.set_index("seed")[metric]


def seed_list(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi) + 1)) if hi else [int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--metric", default="test_iou_binary")
    ap.add_argument("--direction", default="increase", choices=("increase", "decrease", "two-sided"))
    ap.add_argument("--seeds", type=seed_list, default=None, help="e.g. 0-5 or 0,2,4 (default: all)")
    args = ap.parse_args()
    for store in args.stores:
        df = pd.read_parquet(f"{store}/results.parquet")
        df = df[(df.kind == "finetune") & (df.status == "done")]
        if args.seeds is not None:
            df = df[df.seed.isin(args.seeds)]
        print(store)
        for name, high, low in GAPS:
            a, b = by_seed(df, *high, args.metric), by_seed(df, *low, args.metric)
            seeds = a.index.intersection(b.index)
            if len(seeds) < 2:
                continue
            r = paired_test(b[seeds].to_numpy(), a[seeds].to_numpy(), direction=args.direction)
            sd = float(np.std(a[seeds] - b[seeds], ddof=1))
            print(f"  {name:24} {r['diff']:+.4f} (sd {sd:.4f}, d {r['diff'] / sd:+.2f}) "
                  f"CI {r['ci'][0]:+.4f}..{r['ci'][1]:+.4f} {args.direction} p {r['p']:.3g} n {r['n']}")


if __name__ == "__main__":
    main()
