"""Recipe axes (`pretrain.epochs: [2, 3]` under grid:): checked against the recipe's schema, multiplied into
the plan with content keys that reuse what ran, and reported per value with one Holm-adjusted family. No Ray
here; tests/test_sweep.py runs and extends an axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mixsweep.errors import MixsweepError
from mixsweep.report.effect import EffectDesign, effect, holm
from mixsweep.report.facets import effect_by_axes, facets
from mixsweep.spec import load_spec, parse_spec
from mixsweep.sweep.plan import build_plan, spec_digest
from mixsweep.sweep.store import Store
from test_effect import world
from test_sweep import write_spec


def demo_with(**grid):
    data = yaml.safe_load(open("mixsweep/specs/demo.yaml"))
    data["grid"].update(grid)
    return parse_spec(data, "demo.yaml", check_paths=False)


# --- the spec -------------------------------------------------------------------------------------------------

def test_axes_are_read_with_the_recipes_schema():
    base_epochs = yaml.safe_load(open("mixsweep/specs/demo.yaml"))["pretrain"]["epochs"]
    spec = demo_with(**{"pretrain.epochs": [60, "90", 60], "finetune.blr": [1e-3], "preset": ["tiny", "small"],
                        "probe.weight_decay": [0, 0.01], "pretrain.crop_scale": [[0.2, 1.0]]})
    # Coerced as the recipe reads them, de-duplicated, in the spec's order.
    assert spec.grid.axes["pretrain.epochs"] == [60, 90]
    assert spec.grid.axes["probe.weight_decay"] == [0.0, 0.01]
    assert spec.grid.axes["pretrain.crop_scale"] == [(0.2, 1.0)]
    levels = {a.name: a.level for a in spec.recipe_axes}
    assert levels == {"pretrain.epochs": "pretrain", "finetune.blr": "finetune", "preset": "pretrain",
                      "probe.weight_decay": "finetune", "pretrain.crop_scale": "pretrain"}
    point = spec.at({"pretrain.epochs": 60, "probe.weight_decay": 0.01, "preset": "small"})
    assert (point.pretrain.epochs, point.probe.weight_decay, point.preset) == (60, 0.01, "small")
    assert point.pretrain.blr == spec.pretrain.blr and spec.pretrain.epochs == base_epochs  # the rest kept


@pytest.mark.parametrize("grid, expected", [
    ({"pretrain.epoch": [1]}, "demo.yaml: grid.pretrain.epoch: unknown field of the pretrain recipe (its fields: "),
    ({"pretrain.epochs": [240, -1]}, "demo.yaml: grid.pretrain.epochs: value -1: Input should be greater than 0"),
    ({"pretrain.epochs": 3}, "demo.yaml: grid.pretrain.epochs: an axis is a non-empty list of values, got 3"),
    ({"finetune.blr": []}, "demo.yaml: grid.finetune.blr: an axis is a non-empty list of values, got []"),
    ({"model.depth": [2]}, "demo.yaml: grid.model.depth: unknown section 'model'"),
    ({"preset": ["huge"]}, "demo.yaml: grid.preset: value 'huge': unknown preset 'huge'"),
    ({"head": ["conv"]}, "demo.yaml: grid.head: value 'conv': Input should be 'decoder' or 'linear'"),
    # Each value is fine alone; together the warm-up outlasts the run.
    ({"pretrain.epochs": [4, 240], "pretrain.warmup_epochs": [3, 5]},
     "demo.yaml: grid: pretrain.epochs=4 with pretrain.warmup_epochs=5.0: warmup_epochs (5.0) exceeds epochs (4)"),
])
def test_a_bad_axis_is_one_line_naming_it(grid, expected):
    with pytest.raises(MixsweepError) as err:
        demo_with(**grid)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_a_probe_axis_needs_a_probe(tmp_path):
    path = write_spec(tmp_path / "s.yaml", tmp_path / "store")
    data = yaml.safe_load(path.read_text())
    data["grid"]["probe.blr"] = [0.1]
    with pytest.raises(MixsweepError, match=r"grid.probe.blr: the spec has no probe: section to vary"):
        parse_spec(data, "s.yaml", check_paths=False)


# --- the plan -------------------------------------------------------------------------------------------------

def test_axes_multiply_stages_and_keep_the_keys_that_ran(tmp_path):
    base = write_spec(tmp_path / "a.yaml", tmp_path / "store", finetune=(1.0,), baselines=["supervised_mae"])
    data = yaml.safe_load(base.read_text())
    plain = load_spec(base)
    data["grid"]["pretrain.epochs"] = [2, 3]  # 2 is the section's own value
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))
    data["grid"]["finetune.blr"] = [1e-2, 2e-2]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    store = Store(plain.storage)
    plans = [build_plan(load_spec(tmp_path / f"{n}.yaml"), store) for n in "abc"]
    keys = [{s.key for s in p.stages} for p in plans]
    # A spec without axes keeps its digest (its recorded plan is still found).
    assert spec_digest(plain) == spec_digest(plain.model_copy(update={"grid": plain.grid.model_copy()}))
    # Adding a pre-training value: the section's value keeps every stage; the new one adds its pre-trainings and
    # their fine-tunes, and no baseline (random weights do not read pretrain.*).
    assert keys[0] < keys[1] and len(keys[1]) - len(keys[0]) == 4
    new = [s for s in plans[1].stages if s.key not in keys[0]]
    assert sorted((s.kind, s.method) for s in new) == [("finetune", "mae")] * 2 + [("pretrain", "mae")] * 2
    assert all(s.axes == {"pretrain.epochs": 3} and s.job.recipe.epochs == 3 for s in new if s.kind == "pretrain")
    # A fine-tune axis: every pre-training reused, each fine-tune (and the baseline) once more per new value.
    assert keys[1] < keys[2]
    added = [s for s in plans[2].stages if s.key not in keys[1]]
    assert not [s for s in added if s.kind == "pretrain"]
    assert len(added) == 4 + 1 and {s.job.recipe.blr for s in added} == {2e-2}
    mae = [s for s in plans[2].stages if s.method == "mae" and s.kind == "finetune"]
    assert {s.parent for s in mae} == {s.key for s in plans[2].stages if s.kind == "pretrain"}
    assert len({(s.parent, s.job.recipe.blr) for s in mae}) == len(mae) == 8
    base_ft = [s for s in plans[2].stages if s.method == "supervised_mae"]
    assert sorted(s.axes["finetune.blr"] for s in base_ft) == [1e-2, 2e-2] and all(
        "pretrain.epochs" not in s.axes for s in base_ft)
    # The values ride along as columns, W&B tags and names.
    s = next(s for s in added if s.method == "mae")
    assert s.row()["finetune.blr"] == 2e-2 and "finetune.blr=0.02" in s.tags
    assert s.run_name.endswith(f"pretrain.epochs={s.axes['pretrain.epochs']} finetune.blr=0.02")
    assert s.job.tracking.config["finetune.blr"] == 2e-2


def test_the_shipped_axes_spec_reuses_degradations_stages(tmp_path):
    """sweeps/recipe-axes.yaml's comment: at the recipes' own values its stages are degradation.yaml's."""
    from test_spec import shipped_as_synth

    axes = shipped_as_synth("recipe-axes").model_copy(update={"storage": str(tmp_path)})
    deg = shipped_as_synth("degradation")
    deg = deg.model_copy(update={"storage": str(tmp_path), "grid": deg.grid.model_copy(
        update={"animal_fractions": [0.0, 1.0], "finetune_fractions": [1.0]})})
    plans = [build_plan(s, Store(tmp_path)) for s in (axes, deg)]
    assert [len(p.stages) for p in plans] == [84, 18]
    assert {s.key for s in plans[1].stages} < {s.key for s in plans[0].stages}


# --- the report -----------------------------------------------------------------------------------------------

def two_values(slopes=(0.08, 0.0)) -> pd.DataFrame:
    """The fraction's effect at two values of pretrain.epochs, with one baseline no pretrain.* axis shapes."""
    frames = []
    for i, (value, slope) in enumerate(zip((75, 150), slopes)):
        w = world(slope=slope, seeds=(0, 1, 2, 3), rng_seed=i)
        w["key"] = w["key"] + f"-{value}"
        w["pretrain.epochs"] = [None if m == "resnet50" else value for m in w["method"]]
        frames.append(w if i == 0 else w[w["method"] != "resnet50"])
    return pd.concat(frames, ignore_index=True)


def test_facets_share_the_stages_no_axis_shapes():
    results = two_values()
    (a, rows_a), (b, rows_b) = facets(results, ["pretrain.epochs"])
    assert (a, b) == ({"pretrain.epochs": 75}, {"pretrain.epochs": 150})
    resnet = set(results.loc[results["method"] == "resnet50", "key"])
    assert resnet <= set(rows_a["key"]) and resnet <= set(rows_b["key"])
    assert set(rows_a["key"]) & set(rows_b["key"]) == resnet


def test_one_verdict_per_value_holm_adjusted_across_values():
    results = two_values()
    design = EffectDesign(direction="increase")
    entries = effect_by_axes(results, design, ["pretrain.epochs"])
    primary = [e for e in entries if e["role"] == "primary"]
    assert [e["axes"] for e in primary] == [{"pretrain.epochs": 75}, {"pretrain.epochs": 150}]
    # Each value's test is the plain test on its own stages; the family is Holm over them.
    alone = [effect(results[results["pretrain.epochs"] == v], design)[0]["p"] for v in (75, 150)]
    assert [e["p"] for e in primary] == pytest.approx(alone)
    assert [e["p_holm"] for e in primary] == pytest.approx(holm(alone))
    assert [e["effect"] for e in primary] == ["detected", "not detected"]
    # Holm, not the raw p, decides: a p just under alpha is not enough when a second test rides along.
    near = [e for e in effect_by_axes(two_values((0.004, 0.004)), design, ["pretrain.epochs"])
            if e["role"] == "primary"]
    for e in near:
        assert e["p_holm"] >= e["p"] and (e["effect"] == "detected") == (e["p_holm"] < 0.05)
    # An axis that does not shape the declared method makes no second test.
    assert len([e for e in effect_by_axes(results, EffectDesign(method="probe"), ["pretrain.epochs"])
                if e["role"] == "primary"]) <= 1


def test_the_report_has_the_curve_and_the_verdict_per_value(tmp_path):
    from mixsweep.report.build import write_report

    results = two_values()
    paths = write_report(results, {}, tmp_path, "axes", EffectDesign(direction="increase"),
                         axes=["pretrain.epochs"])
    md = (tmp_path / "results.md").read_text()
    assert "1 of 2 detected" in md and "pretrain.epochs=75: detected" in md
    assert "pretrain.epochs=150: not detected" in md
    assert paths["by_axis.png"].stat().st_size > 10_000
    for value in (75, 150):  # a whole report per value, with its own degradation curve
        sub = tmp_path / "facets" / f"pretrain.epochs={value}"
        assert (sub / "iou_vs_fraction.png").is_file() and "not adjusted" in (sub / "results.md").read_text()
    table = pd.read_parquet(paths["results.parquet"])
    assert "pretrain.epochs" in table and table["pretrain.epochs"].isna().sum() == 4  # the baseline's rows
    # A value dropped from the spec leaves no report behind.
    write_report(results[results["pretrain.epochs"] != 150], {}, tmp_path, "axes",
                 EffectDesign(direction="increase"), axes=["pretrain.epochs"])
    assert not (tmp_path / "facets" / "pretrain.epochs=150").exists()
    assert np.isfinite(pd.read_json(tmp_path / "effect.json")["p"].iloc[0])
