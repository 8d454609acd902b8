"""The effect of the animal fraction, judged from the statistics alone, and the intervals behind it.

Hand-made results tables with a known answer (a planted slope, a flat world, missing and single seeds), and
simulated seeds checking that the Student-t intervals hold 95 % coverage at 3 seeds where the percentile
bootstrap they replaced does not, and that "detected" fires on null data no more than ~5 % of the time.
"""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mixsweep.report.analyze import (
    effect,
    effect_sentence,
    effect_statistics,
    paired_difference,
    seed_slopes,
    t_intervals,
)
from mixsweep.report.build import write_report

FRACS = (0.0, 0.25, 0.5, 0.75, 1.0)
ENTRY_KEYS = {"metric", "finetune_fraction", "diff", "ci", "slope", "slope_ci", "effect"}


def world(slope=0.0, seeds=(0, 1, 2), fracs=FRACS, fts=(1.0,), noise=0.005, offset_sd=0.05, rng_seed=0,
          base=0.5, metric="test_iou_binary"):
    """Finished MAE fine-tunes: metric = base + slope·F + a per-seed offset shared by all fractions + noise.

    Also holds a pre-training row, a baseline, a failed fine-tune and a data-world column, none of which the
    effect may use.
    """
    rng = np.random.default_rng(rng_seed)
    rows = []
    for ft in fts:
        for s in seeds:
            off = rng.normal(0, offset_sd)
            for f in fracs:
                rows.append({"key": f"ft-{f}-{ft}-{s}", "kind": "finetune", "method": "mae", "status": "done",
                             "animal_fraction": f, "finetune_fraction": ft, "seed": s, "world": "synthetic",
                             metric: base + slope * f + off + rng.normal(0, noise)})
                rows.append({"key": f"pre-{f}-{s}", "kind": "pretrain", "method": "mae", "status": "done",
                             "animal_fraction": f, "finetune_fraction": np.nan, "seed": s, "world": "synthetic",
                             metric: np.nan})
            rows.append({"key": f"rn-{ft}-{s}", "kind": "finetune", "method": "resnet50", "status": "done",
                         "animal_fraction": np.nan, "finetune_fraction": ft, "seed": s, "world": "synthetic",
                         metric: 9.0})
        # A failed run at F=1 with an absurd value: must be ignored.
        rows.append({"key": f"bad-{ft}", "kind": "finetune", "method": "mae", "status": "failed",
                     "animal_fraction": max(fracs), "finetune_fraction": ft, "seed": seeds[0], "world": "synthetic",
                     metric: -50.0})
    return pd.DataFrame(rows).drop_duplicates("key")


def mae_values(results, ft=1.0, metric="test_iou_binary"):
    df = results[(results["kind"] == "finetune") & (results["method"] == "mae") & (results["status"] == "done")
                 & (results["finetune_fraction"] == ft)]
    return df.pivot_table(index="seed", columns="animal_fraction", values=metric)


# ------------------------------------------------------------------------------------------- known answers

def test_planted_slope_detected_with_right_sign_and_size():
    results = world(slope=0.08)
    (e,) = effect(results)
    assert ENTRY_KEYS <= set(e) and e["metric"] == "test_iou_binary" and e["finetune_fraction"] == 1.0
    assert e["effect"] == "detected" and e["direction"] == "higher animal fraction is better"
    assert e["n_seeds"] == 3 and e["n_seeds_slope"] == 3 and e["fractions"] == [0.0, 1.0]
    v = mae_values(results)
    assert e["diff"] == pytest.approx(float((v[1.0] - v[0.0]).mean()))         # paired, by hand
    assert e["diff"] == pytest.approx(0.08, abs=0.015)
    assert e["slope"] == pytest.approx(0.08, abs=0.01)
    assert e["ci"][0] > 0 and e["slope_ci"][0] > 0
    assert e["ci"][0] < 0.08 < e["ci"][1] and e["slope_ci"][0] < 0.08 < e["slope_ci"][1]
    # The per-seed slope is each seed's own least-squares line; its mean is the reported slope.
    per_seed = [np.polyfit(FRACS, v.loc[s].to_numpy(), 1)[0] for s in v.index]
    assert e["slope"] == pytest.approx(float(np.mean(per_seed)))
    # The seed offsets (sd 0.05) dwarf the effect at each fraction alone, but pairing removes them.
    _, low, high = t_intervals(v.to_numpy())
    assert low[-1] < high[0]

    sentence = effect_sentence([e])
    assert re.fullmatch(r"Effect of the animal fraction on test IoU \(binary\): detected at fine-tune size 1: "
                        r"F=1 minus F=0 = \+0\.0\d\d \(95% CI \+0\.\d{3} to \+0\.\d{3}, 3 seeds\), slope \+0\.0\d\d "
                        r"per unit F \(95% CI \+0\.\d{3} to \+0\.\d{3}\), so higher animal fraction is better\.",
                        sentence), sentence


def test_negative_slope_and_loss_direction():
    (e,) = effect(world(slope=-0.06, rng_seed=1))
    assert e["effect"] == "detected" and e["diff"] < 0 and e["ci"][1] < 0 and e["slope_ci"][1] < 0
    assert e["direction"] == "higher animal fraction is worse"
    # For a loss, going down with F is the better direction.
    (loss,) = effect(world(slope=-0.06, rng_seed=1, metric="test_loss"), metric="test_loss")
    assert loss["effect"] == "detected" and loss["direction"] == "higher animal fraction is better"
    assert loss["diff"] == pytest.approx(e["diff"])
    assert effect_sentence([loss]).startswith("Effect of the animal fraction on test loss: detected")


def test_flat_world_with_noise_not_detected():
    results = world(slope=0.0, noise=0.02, rng_seed=4)
    (e,) = effect(results)
    assert e["effect"] == "not detected" and e["direction"] is None
    assert e["ci"][0] < 0 < e["ci"][1]
    assert abs(e["diff"]) < 0.05
    sentence = effect_sentence([e])
    assert sentence.startswith("Effect of the animal fraction on test IoU (binary): not detected at fine-tune size 1: "
                               "F=1 minus F=0 = ")
    assert "(95% CI -" in sentence and ("CI includes 0" in sentence or "both CIs include 0" in sentence)


def test_missing_seeds_are_dropped_from_the_pairing():
    results = world(slope=0.08, seeds=(0, 1, 2, 3))
    holed = results[~((results["seed"] == 3) & (results["animal_fraction"] == 1.0)
                      & (results["kind"] == "finetune"))]
    holed = pd.concat([holed, pd.DataFrame([{"key": "nan-metric", "kind": "finetune", "method": "mae",
                                             "status": "done", "animal_fraction": 0.0, "finetune_fraction": 1.0,
                                             "seed": 7, "test_iou_binary": np.nan}])])
    (e,) = effect(holed)
    v = mae_values(results)
    assert e["n_seeds"] == 3 and e["n_seeds_slope"] == 4            # seed 3 still has 4 fractions for its slope
    assert e["diff"] == pytest.approx(float((v.loc[[0, 1, 2], 1.0] - v.loc[[0, 1, 2], 0.0]).mean()))
    per_seed = [np.polyfit(FRACS, v.loc[s].to_numpy(), 1)[0] for s in (0, 1, 2)]
    per_seed.append(np.polyfit(FRACS[:-1], v.loc[3].to_numpy()[:-1], 1)[0])
    assert e["slope"] == pytest.approx(float(np.mean(per_seed)))
    assert e["effect"] == "detected"


def test_single_seed_has_no_interval_and_is_not_detected(tmp_path):
    results = world(slope=0.2, seeds=(5,))
    (e,) = effect(results)
    assert e["n_seeds"] == 1 and e["diff"] == pytest.approx(0.2, abs=0.02)
    assert all(math.isnan(c) for c in e["ci"] + e["slope_ci"])
    assert e["effect"] == "not detected" and e["direction"] is None
    assert "not detected at fine-tune size 1: F=1 minus F=0 = +0.2" in effect_sentence([e])
    assert "no CI with 1 seed" in effect_sentence([e])
    # A single animal fraction: nothing to compare.
    (one,) = effect(world(slope=0.2, fracs=(0.5,)))
    assert one["effect"] == "not detected" and math.isnan(one["diff"]) and one["fractions"] == [0.5, 0.5]
    assert "only one animal fraction (F=0.5)" in effect_sentence([one])


def test_two_finetune_sizes_give_two_entries_largest_first():
    planted = world(slope=0.1, fts=(1.0,), rng_seed=2)
    flat = world(slope=0.0, fts=(0.25,), noise=0.02, rng_seed=3)
    entries = effect(pd.concat([flat, planted], ignore_index=True))
    assert [e["finetune_fraction"] for e in entries] == [1.0, 0.25]
    assert [e["effect"] for e in entries] == ["detected", "not detected"]
    sentence = effect_sentence(entries)
    assert sentence.count("fine-tune size") == 2 and sentence.index("size 1:") < sentence.index("size 0.25:")
    assert effect_sentence([]).endswith("not judged, no finished MAE fine-tunes with test_iou_binary.")


def test_effect_reads_only_the_results_columns():
    results = world(slope=0.08)
    base = effect(results)
    # Another data world or config with the same numbers: the same answer, to the last bit.
    other = results.assign(world="coco", preset="vit_b", data_root="/elsewhere", epochs=150, parent_key="x")
    assert effect(other) == base
    # And it needs nothing beyond those columns.
    needed = ["method", "kind", "status", "animal_fraction", "finetune_fraction", "seed", "test_iou_binary"]
    assert effect(results[needed]) == base


def test_effect_json_written_with_exact_shape(tmp_path):
    results = pd.concat([world(slope=0.08, fts=(1.0,)), world(slope=0.08, seeds=(0,), fts=(0.5,))],
                        ignore_index=True)
    paths = write_report(results, {}, tmp_path / "rep", title="Effect")
    assert paths["effect.json"] == tmp_path / "rep" / "effect.json"
    text = paths["effect.json"].read_text()
    assert "NaN" not in text
    entries = json.loads(text)
    assert isinstance(entries, list) and len(entries) == 2
    for e in entries:
        assert ENTRY_KEYS <= set(e)
        assert len(e["ci"]) == 2 and len(e["slope_ci"]) == 2 and e["effect"] in ("detected", "not detected")
        assert e["metric"] == "test_iou_binary"
    big, small = entries
    assert big["finetune_fraction"] == 1.0 and big["effect"] == "detected" and None not in big["ci"]
    assert small["finetune_fraction"] == 0.5 and small["ci"] == [None, None] and small["slope_ci"] == [None, None]
    # Read back (null as NaN) it gives the same sentence, and results.md opens with it.
    md = paths["results.md"].read_text().splitlines()
    assert md[0] == "# Effect" and md[2] == effect_sentence(entries) == effect_sentence(effect(results))
    assert "## Effect of the animal fraction" in md


def test_report_states_trivial_answers_schedule_and_resnet18(tmp_path):
    results = world(slope=0.08)
    ft = results["kind"] == "finetune"
    results.loc[ft, "test_iou_all_pet"] = 0.3127
    results.loc[ft, "test_iou_all_background"] = 0.0
    results.loc[ft, "finetune_schedule"] = "fixed_steps"
    rn18 = results[results["method"] == "resnet50"].assign(method="resnet18", key=lambda d: d["key"] + "-18")
    md = write_report(pd.concat([results, rn18]), {}, tmp_path / "rep", title="T")["results.md"].read_text()
    assert "All-background answer: IoU 0.000; all-pet answer: IoU 0.313 (test set)." in md
    assert "Fine-tune schedule: fixed_steps." in md
    table = md[md.index("| method | fine-tune |"):]
    assert table.index("| ResNet-18 |") < table.index("| ResNet-50 |") < table.index("| Finetuned F=1.00 |")


def test_make_report_prints_the_sentence_and_returns_effect_json(tmp_path, monkeypatch):
    from rich.console import Console

    from mixsweep.sweep import results as sweep_results

    results = world(slope=0.08)
    from mixsweep.sweep.store import Store

    store = Store(tmp_path)
    monkeypatch.setattr(sweep_results, "spec_results", lambda spec: (results, {}, store, None))
    # The real tracker, W&B switched off: the report must not depend on W&B to be written.
    spec = SimpleNamespace(name="demo", wandb=SimpleNamespace(model_dump=lambda mode: {"mode": "disabled"}))
    console = Console(record=True, width=400)
    paths = sweep_results.make_report(spec, console=console)
    assert paths["effect.json"] == tmp_path / "reports" / "demo" / "effect.json"
    assert all(p.is_file() for p in paths.values())
    printed = console.export_text()
    assert sweep_results.effect_summary(results) in printed and "detected at fine-tune size 1" in printed


# ---------------------------------------------------------------------------------------- simulated seeds

def _percentile_bootstrap(x, n_boot, rng, ci=0.95):
    """The old interval: percentile bootstrap of the mean over seeds, seed indices shared across fractions.

    x: (experiments, seeds, fractions). Each replicate's mean is its multinomial seed counts times the runs.
    """
    n_exp, n = x.shape[:2]
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=(n_exp, n_boot)).astype(float)
    means = np.einsum("ebs,esf->ebf", counts, x) / n
    a = (1.0 - ci) / 2.0
    return np.quantile(means, a, axis=1), np.quantile(means, 1.0 - a, axis=1)


def test_t_intervals_cover_at_three_seeds_and_the_bootstrap_did_not():
    rng = np.random.default_rng(2024)
    n_exp, n_seeds = 4000, 3
    mu = np.array([0.60, 0.65, 0.66])
    # A per-seed offset shared across fractions (nested mixtures, one fine-tune split per seed) plus run noise.
    x = mu + rng.normal(0, 0.05, size=(n_exp, n_seeds, 1)) + rng.normal(0, 0.02, size=(n_exp, n_seeds, mu.size))

    _, low, high = t_intervals(x, axis=1)
    cover = ((low <= mu) & (mu <= high)).mean(axis=0)
    d, dlow, dhigh = paired_difference(x, 0, 1)
    cover_d = ((dlow <= mu[1] - mu[0]) & (mu[1] - mu[0] <= dhigh)).mean()
    assert d.shape == (n_exp,)
    assert (cover >= 0.93).all() and (cover <= 0.97).all(), cover
    assert 0.93 <= cover_d <= 0.97, cover_d
    # Pairing matters: the difference's interval is much narrower than either fraction's own.
    assert np.median(dhigh - dlow) < 0.6 * np.median(high[:, 0] - low[:, 0])

    blow, bhigh = _percentile_bootstrap(x[:, :, :2], 400, rng)
    boot_cover = ((blow <= mu[:2]) & (mu[:2] <= bhigh)).mean(axis=0)
    bd_low, bd_high = _percentile_bootstrap((x[:, :, 1] - x[:, :, 0])[:, :, None], 400, rng)
    boot_cover_d = ((bd_low[:, 0] <= mu[1] - mu[0]) & (mu[1] - mu[0] <= bd_high[:, 0])).mean()
    assert (boot_cover < 0.90).all() and boot_cover_d < 0.90, (boot_cover, boot_cover_d)   # measured ~0.75


def test_slope_interval_covers_the_planted_slope():
    rng = np.random.default_rng(7)
    fr = np.array(FRACS)
    x = 0.5 + 0.03 * fr + rng.normal(0, 0.05, size=(4000, 3, 1)) + rng.normal(0, 0.02, size=(4000, 3, fr.size))
    s = effect_statistics(x, fr)
    cover = ((s["slope_low"] <= 0.03) & (0.03 <= s["slope_high"])).mean()
    assert 0.93 <= cover <= 0.97, cover
    np.testing.assert_allclose(seed_slopes(x[:2], fr), [[np.polyfit(fr, x[i, j], 1)[0] for j in range(3)]
                                                        for i in range(2)])


@pytest.mark.parametrize("n_seeds", [2, 3])
def test_detected_is_rare_on_null_data(n_seeds):
    rng = np.random.default_rng(11 + n_seeds)
    fr = np.array(FRACS)
    n_exp = 4000
    x = 0.6 + rng.normal(0, 0.05, size=(n_exp, n_seeds, 1)) + rng.normal(0, 0.02, size=(n_exp, n_seeds, fr.size))
    rate = effect_statistics(x, fr)["detected"].mean()
    assert rate <= 0.06, rate

    # effect() on a results table decides exactly as the batched statistics do: 40 null experiments packed as
    # 40 fine-tune sizes of one table.
    k = 40
    fts = np.round(np.arange(1, k + 1) / 100.0, 2)
    rows = [{"kind": "finetune", "method": "mae", "status": "done", "animal_fraction": f,
             "finetune_fraction": fts[e], "seed": s, "test_iou_binary": x[e, s, j]}
            for e in range(k) for s in range(n_seeds) for j, f in enumerate(fr)]
    entries = {en["finetune_fraction"]: en for en in effect(pd.DataFrame(rows))}
    stats_k = effect_statistics(x[:k], fr)
    for e in range(k):
        en = entries[fts[e]]
        assert (en["effect"] == "detected") == bool(stats_k["detected"][e])
        assert en["diff"] == pytest.approx(stats_k["diff"][e]) and en["ci"][0] == pytest.approx(stats_k["diff_low"][e])
