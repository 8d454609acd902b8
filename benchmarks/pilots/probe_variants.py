"""Probe variants on a finished pilot store (which part of the probe F1-F0 noise is the probe's own). Run from the
folder holding the pilot spec: python probe_variants.py SPEC WORLD_SEED full|long|pseed1|base. Writes var-<name>-<variant>.jsonl."""
import json
import sys
from pathlib import Path
out_root = Path.cwd()
from mixsweep.demo import demo_spec
from mixsweep.sweep.plan import build_plan
from mixsweep.sweep.store import Store
from mixsweep.train.launch import run_local
spec_file, ws, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec, _ = demo_spec("planted", ws, Path(spec_file))
plan = build_plan(spec, Store(spec.storage))
out = out_root / f"var-{spec.name}-{variant}.jsonl"
done = {json.loads(l)["key"] for l in out.open()} if out.exists() else set()
for st in plan.stages:
    if st.method not in ("probe", "random_probe") or st.key in done:
        continue
    job = st.job
    if variant == "full":   # probe trained on all 252 train pets
        job = job.model_copy(update={"data": job.data.model_copy(update={"finetune_fraction": 1.0})})
    elif variant.startswith("pseed"):  # same subset, another probe init / order
        job = job.model_copy(update={"seed": 1000 + int(variant[5:]), "data": job.data.model_copy(update={"subset_seed": st.seed})})
    elif variant == "long":
        job = job.model_copy(update={"recipe": job.recipe.model_copy(update={"epochs": 60})})
    job = job.model_copy(update={"run": job.run.model_copy(update={"name": f"{variant}-{st.key}", "artifacts": str(out_root / "var" / spec.name / f"{variant}-{st.key}"), "storage": str(out_root / "var" / spec.name)}), "tracking": None})
    m = run_local(job).metrics
    with out.open("a") as f:
        f.write(json.dumps({"key": st.key, "method": st.method, "F": st.animal_fraction, "seed": st.seed, "iou": m["test_iou_binary"]}) + "\n")

# The probe's F1 - F0 gap under this variant, paired over seeds.
rows = [json.loads(line) for line in out.open() if json.loads(line)["method"] == "probe"]
iou = {(r["F"], r["seed"]): r["iou"] for r in rows}
seeds = sorted(s for f, s in iou if f == 1.0 and (0.0, s) in iou)
if len(seeds) > 1:
    from mixsweep.report.effect import paired_test
    r = paired_test([iou[0.0, s] for s in seeds], [iou[1.0, s] for s in seeds], direction="increase")
    print(f"{spec.name} {variant}: probe F1 - F0 {r['diff']:+.3f}, CI {r['ci'][0]:+.3f}..{r['ci'][1]:+.3f}, n {r['n']}")
