"""Hit rates of the demo's declared effect test over world seeds nobody tuned on, with Clopper-Pearson intervals.

Runs `mixsweep demo --world W --world-seed N` for each world (planted, null) and seed, one after another (each
has its own store under ./runs/), reads the primary test from each report's effect.json, and prints:
- per world: detected k of n, with the Clopper-Pearson 95 % interval of the hit rate;
- per run: the primary test's difference, its CI and p (the null world's p-values are the point of it).
A run whose report exists is read, not rerun, so an interrupted validation continues where it stopped.

The design is fixed before this runs: tune on world seeds 200-299, validate once on 100-109, change nothing
after the first look. It takes hours on 2 cores (about 6 minutes a demo) and is not part of `make test`.

    python benchmarks/validate_demo.py --seeds 100-109            # both worlds
    python benchmarks/validate_demo.py --seeds 200-204 --worlds planted --spec my-pilot.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from scipy import stats


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial rate: k hits in n."""
    a = (1 - level) / 2
    low = float(stats.beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    high = float(stats.beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0
    return low, high


def seeds(text: str) -> list[int]:
    """'100-109' or '100,103,107'."""
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def primary(report: Path) -> dict:
    entries = json.loads((report / "effect.json").read_text())
    return next(e for e in entries if e.get("role") == "primary")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=seeds, default=seeds("100-109"), help="world seeds (default 100-109)")
    p.add_argument("--worlds", default="planted,null", help="comma-separated (default planted,null)")
    p.add_argument("--spec", type=Path, default=None, help="a demo spec instead of the packaged one")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    name = "demo"
    if args.spec is not None:
        import yaml

        name = yaml.safe_load(args.spec.read_text()).get("name", "demo")
    rows = []
    for world in args.worlds.split(","):
        for seed in args.seeds:
            report = Path("runs") / f"{name}-{world}-s{seed}" / "reports" / f"{name}-{world}-s{seed}"
            cmd = [sys.executable, "-m", "mixsweep.cli", "demo", "--world", world, "--world-seed", str(seed)]
            cmd += ["--spec", str(args.spec)] if args.spec is not None else []
            if args.dry_run:
                print(" ".join(cmd))
                continue
            if not (report / "effect.json").is_file():
                subprocess.run(cmd, check=True)
            rows.append((world, seed, primary(report)))
    if args.dry_run:
        return 0
    print(f"{'world':8} {'seed':>5} {'diff':>8} {'95% CI':>20} {'p':>8}  verdict")
    for world, seed, e in rows:
        ci = "n/a" if e["ci"][0] is None else f"{e['ci'][0]:+.3f} to {e['ci'][1]:+.3f}"
        pv = "n/a" if e["p"] is None else f"{e['p']:.3g}"
        print(f"{world:8} {seed:5d} {e['diff'] if e['diff'] is not None else float('nan'):+8.3f} {ci:>20} {pv:>8}  "
              f"{e['effect']}")
    for world in args.worlds.split(","):
        hits = [e["effect"] == "detected" for w, _, e in rows if w == world]
        low, high = clopper_pearson(sum(hits), len(hits))
        print(f"{world}: detected {sum(hits)} of {len(hits)} (Clopper-Pearson 95 % {low:.2f} to {high:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
