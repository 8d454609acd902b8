"""Hit rates of the demo's declared effect test over world seeds nobody tuned on, with Clopper-Pearson intervals.

Runs `mixsweep demo --world W --world-seed N` for each world seed, both worlds (planted, null) in step (each
has its own store under ./runs/), reads the primary test from each report's effect.json, and appends it to a
record file (default benchmarks/validation-2.jsonl, committed) with the design's fingerprint: the sha256 of the
spec and the digest of every result-shaping source file (mixsweep.provenance). Then it prints:
- per world: detected k of n, with the Clopper-Pearson 95 % interval of the hit rate;
- per run: the primary test's difference, its CI and p (the null world's p-values are the point of it).

A world seed already in the record is not rerun, so a validation spread over several machines or sessions
continues where it stopped. Running into a record written for another design is refused (`--summary` reads
any record and says whether its design is the code here): the design is fixed before this
runs (tune on world seeds 200-299, validate once on unseen world seeds, change nothing after the first look).
World seeds 100-109 validated the first design (benchmarks/validation-1.jsonl); the second, the packaged
spec since generator version 4, is validated on 110-119. It takes hours on 2 cores and is not part of `make test`.

    python benchmarks/validate_demo.py                            # 110-119, both worlds
    python benchmarks/validate_demo.py --summary --record benchmarks/validation-1.jsonl   # the first design's
    python benchmarks/validate_demo.py --seeds 200-204 --worlds planted --spec my-pilot.yaml --record /tmp/r.jsonl
    python benchmarks/validate_demo.py --summary                  # the record's table, running nothing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

from scipy import stats

RECORD = Path(__file__).resolve().parent / "validation-2.jsonl"


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


def design(spec: Path | None) -> dict:
    """What the verdict depends on: the spec's bytes and the result-shaping sources."""
    from mixsweep.provenance import guarded_versions, source_digest

    text = Path(str(files("mixsweep") / "specs" / "demo.yaml")).read_bytes() if spec is None else spec.read_bytes()
    return {"spec": "mixsweep/specs/demo.yaml" if spec is None else str(spec),
            "spec_sha256": hashlib.sha256(text).hexdigest()[:16], "sources": source_digest(),
            **guarded_versions()}


def read_record(path: Path, want: dict | None) -> dict[tuple[str, int], dict]:
    """The runs already recorded, by (world, world seed); refuses a record of another design than `want` (None:
    any design, for reading a finished validation after the code has moved on)."""
    done = {}
    if not path.is_file():
        return done
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if want is not None and row["design"] != want:
            raise SystemExit(f"{path}:{n}: recorded for design {row['design']}, not {want}: a validation is run "
                             "once for one frozen design; use another --record for another design")
        done[(row["world"], row["world_seed"])] = row
    return done


def primary(report: Path) -> dict | None:
    """The world's primary endpoint test from its report; None when there is no report or no verdict in it
    (its stages failed: a killed Ray, say)."""
    if not (report / "effect.json").is_file():
        return None
    entries = json.loads((report / "effect.json").read_text())
    return next((e for e in entries if e.get("role") == "primary"), None)


def summary(rows: list[dict], worlds: list[str]) -> None:
    print(f"{'world':8} {'seed':>5} {'diff':>8} {'95% CI':>20} {'p':>8} {'min':>5}  verdict")
    for r in rows:
        e = r["primary"]
        ci = "n/a" if e["ci"][0] is None else f"{e['ci'][0]:+.3f} to {e['ci'][1]:+.3f}"
        pv = "n/a" if e["p"] is None else f"{e['p']:.3g}"
        diff = e["diff"] if e["diff"] is not None else float("nan")
        minutes = "" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f}"
        print(f"{r['world']:8} {r['world_seed']:5d} {diff:+8.3f} {ci:>20} {pv:>8} {minutes:>5}  "
              f"{e['effect']}")
    for world in worlds:
        hits = [r["primary"]["effect"] == "detected" for r in rows if r["world"] == world]
        if hits:
            low, high = clopper_pearson(sum(hits), len(hits))
            print(f"{world}: detected {sum(hits)} of {len(hits)} (Clopper-Pearson 95 % {low:.2f} to {high:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=seeds, default=seeds("110-119"), help="world seeds (default 110-119)")
    p.add_argument("--worlds", default="planted,null", help="comma-separated (default planted,null)")
    p.add_argument("--spec", type=Path, default=None, help="a demo spec instead of the packaged one")
    p.add_argument("--record", type=Path, default=RECORD, help=f"the record file (default {RECORD.name} here)")
    p.add_argument("--summary", action="store_true",
                   help="print the record's table and its design, run nothing (any design: a finished record stays readable)")
    p.add_argument("--dry-run", action="store_true", help="print the commands still to run, run nothing")
    args = p.parse_args(argv)
    worlds = args.worlds.split(",")
    want = design(args.spec)
    done = read_record(args.record, None if args.summary else want)
    name = "demo"
    if args.spec is not None:
        import yaml

        name = yaml.safe_load(args.spec.read_text()).get("name", "demo")
    todo = [(w, s) for s in args.seeds for w in worlds if (w, s) not in done]  # planted and null in step
    for world, seed in ([] if args.summary else todo):
        cmd = [sys.executable, "-m", "mixsweep.cli", "demo", "--world", world, "--world-seed", str(seed)]
        cmd += ["--spec", str(args.spec)] if args.spec is not None else []
        if args.dry_run:
            print(" ".join(cmd))
            continue
        report = Path("runs") / f"{name}-{world}-s{seed}" / "reports" / f"{name}-{world}-s{seed}"
        t0, wall_s = time.perf_counter(), None
        if primary(report) is None:
            subprocess.run(cmd, check=True)
            wall_s = round(time.perf_counter() - t0, 1)
        verdict = primary(report)
        if verdict is None:  # nothing is recorded: a failure of the machine is not a verdict of the design
            store = report.parents[1]
            raise SystemExit(f"{store}: the {world} world {seed} has no primary verdict (its stages failed; "
                             f"see {store / 'stages'}/*/failed.json); remove {store} and run this again")
        row = {"world": world, "world_seed": seed, "design": want, "primary": verdict, "wall_s": wall_s,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with args.record.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[(world, seed)] = row
    if args.dry_run:
        return 0
    summary([done[(w, s)] for w in worlds for s in sorted(s for ww, s in done if ww == w)], worlds)
    for d in {json.dumps(r["design"], sort_keys=True) for r in done.values()}:
        same = "the code here" if json.loads(d) == want else "not the code here (it has changed since)"
        print(f"design {d}: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
