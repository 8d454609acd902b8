"""The compile of a stage whose shapes an earlier stage compiled, with the sweep's shared compile cache.

Two stages of one shape (seeds 0 and 1 of a one-epoch pre-training, compiled) run one after the other, each
in a fresh process, sharing one empty compile-cache folder as the stages of a sweep share <store>/compile-cache
(mixsweep.train.compile_cache). The first compiles into it, the second finds its graphs there. Compile time is
the first optimizer step (the training graph) plus the epoch's evaluation (the eval graph's compile and one
evaluation pass).

    python benchmarks/compile_cache.py                       # CPU: tiny preset (Inductor's C++ backend)
    python benchmarks/compile_cache.py --step finetune --preset base     # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import job_config, measure_in_child, write_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--step", default="pretrain", choices=("pretrain", "finetune", "resnet50"))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--scale", default="small")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mixsweep-ccache-") as tmp:
        tmp = Path(tmp)
        inputs = write_inputs(tmp, args.scale)
        rows = []
        for seed in (0, 1):
            config = job_config(args.step, inputs, tmp / "runs" / f"s{seed}", args.preset, epochs=1,
                                batch=args.batch, compiled=True)
            config["seed"] = seed
            config["run"]["compile_cache"] = str(tmp / "compile-cache")
            rows.append(measure_in_child(config, "packed", env={"TORCHINDUCTOR_CACHE_DIR": None}))
        size = sum(f.stat().st_size for f in (tmp / "compile-cache").rglob("*") if f.is_file())
        first, second = (r.compile_s + r.eval_s for r in rows)
        print(f"{args.step} {args.preset}, batch {args.batch}: compile (first step + first epoch's evaluation) "
              f"{first:.1f} s in the first stage, {second:.1f} s in the second ({second / first:.0%}); shared "
              f"cache {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
