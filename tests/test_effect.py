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

from scipy import stats

from fixtures import paired_difference
from mixsweep.report.analyze import seed_slopes, t_intervals
from mixsweep.report.effect import EffectDesign, effect, effect_sentence, holm, paired_test
from mixsweep.train.config import WandbSettings
from mixsweep.report.build import write_report

FRACS = (0.0, 0.25, 0.5, 0.75, 1.0)
ENTRY_KEYS = {"role", "metric", "finetune_fraction", "diff", "ci", "p", "declared", "alpha", "slope", "slope_ci",
              "effect", "direction", "n_seeds", "n_diverged"}
UP = EffectDesign(direction="increase")


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

def test_planted_effect_detected_only_in_the_declared_direction():
    results = world(slope=0.08)
    (e,) = effect(results, UP)
    assert ENTRY_KEYS <= set(e) and e["role"] == "primary" and e["metric"] == "test_iou_binary"
    assert e["finetune_fraction"] == 1.0 and e["fractions"] == [0.0, 1.0] and e["declared"] == "increase"
    assert e["effect"] == "detected" and e["direction"] == "higher animal fraction is better"
    v = mae_values(results)
    assert e["diff"] == pytest.approx(float((v[1.0] - v[0.0]).mean()))         # paired, by hand
    assert e["p"] == pytest.approx(stats.ttest_rel(v[1.0], v[0.0], alternative="greater").pvalue)
    assert e["diff"] == pytest.approx(0.08, abs=0.015) and e["ci"][0] > 0
    per_seed = [np.polyfit(FRACS, v.loc[s].to_numpy(), 1)[0] for s in v.index]  # the slope: descriptive
    assert e["slope"] == pytest.approx(float(np.mean(per_seed)))
    # The seed offsets (sd 0.05) dwarf the effect at each fraction alone, but pairing removes them.
    _, low, high = t_intervals(v.to_numpy())
    assert low[-1] < high[0]
    assert re.fullmatch(r"Effect of the animal fraction on test IoU \(binary\) \(primary endpoint, declared increase, "
                        r"alpha 0\.05\): detected at fine-tune size 1: F=1 minus F=0 = \+0\.0\d\d \(95% CI "
                        r"\+0\.\d{3} to \+0\.\d{3}, one-sided p = [0-9.e-]+, 3 seeds\), so higher animal fraction "
                        r"is better\.", effect_sentence([e])), effect_sentence([e])
    # The same numbers under a declared decrease: not detected, and the sentence says why.
    (down,) = effect(results, EffectDesign(direction="decrease"))
    assert down["effect"] == "not detected" and down["direction"] is None and down["p"] > 0.99
    assert "it goes against the declared decrease" in effect_sentence([down])
    (both,) = effect(results, EffectDesign(direction="two-sided"))
    assert both["effect"] == "detected" and both["p"] == pytest.approx(2 * e["p"])


def test_a_decrease_and_the_sense_of_a_loss():
    (e,) = effect(world(slope=-0.06, rng_seed=1), EffectDesign(direction="decrease"))
    assert e["effect"] == "detected" and e["diff"] < 0 and e["direction"] == "higher animal fraction is worse"
    # For a loss, going down with F is the better direction.
    (loss,) = effect(world(slope=-0.06, rng_seed=1, metric="test_loss"),
                     EffectDesign(metric="test_loss", direction="decrease"))
    assert loss["effect"] == "detected" and loss["direction"] == "higher animal fraction is better"
    assert loss["diff"] == pytest.approx(e["diff"])
    assert effect_sentence([loss]).startswith("Effect of the animal fraction on test loss (primary endpoint, "
                                              "declared decrease, alpha 0.05): detected")


def test_flat_world_with_noise_not_detected():
    (e,) = effect(world(slope=0.0, noise=0.02, rng_seed=4), UP)
    assert e["effect"] == "not detected" and e["direction"] is None and e["p"] >= 0.05
    assert e["ci"][0] < 0 < e["ci"][1] and abs(e["diff"]) < 0.05
    sentence = effect_sentence([e])
    assert "not detected at fine-tune size 1: F=1 minus F=0 = " in sentence
    assert "p is not below alpha 0.05" in sentence or "goes against the declared increase" in sentence


def test_missing_seeds_are_dropped_from_the_pairing():
    results = world(slope=0.08, seeds=(0, 1, 2, 3))
    holed = results[~((results["seed"] == 3) & (results["animal_fraction"] == 1.0)
                      & (results["kind"] == "finetune"))]
    holed = pd.concat([holed, pd.DataFrame([{"key": "nan-metric", "kind": "finetune", "method": "mae",
                                             "status": "done", "animal_fraction": 0.0, "finetune_fraction": 1.0,
                                             "seed": 7, "test_iou_binary": np.nan}])])
    (e,) = effect(holed, UP)
    v = mae_values(results)
    assert e["n_seeds"] == 3 and e["n_seeds_slope"] == 4            # seed 3 still has 4 fractions for its slope
    assert e["diff"] == pytest.approx(float((v.loc[[0, 1, 2], 1.0] - v.loc[[0, 1, 2], 0.0]).mean()))
    assert e["effect"] == "detected"


def test_single_seed_or_single_fraction_is_not_judged():
    (e,) = effect(world(slope=0.2, seeds=(5,)), UP)
    assert e["n_seeds"] == 1 and e["diff"] == pytest.approx(0.2, abs=0.02)
    assert all(math.isnan(c) for c in e["ci"]) and math.isnan(e["p"])
    assert e["effect"] == "not detected" and e["direction"] is None
    assert "no test with 1 seed" in effect_sentence([e])
    (one,) = effect(world(slope=0.2, fracs=(0.5,)), UP)
    assert one["effect"] == "not detected" and math.isnan(one["diff"]) and one["fractions"] == [0.5, 0.5]
    assert "nothing to compare" in effect_sentence([one])
    assert effect_sentence([]).endswith("not judged, no finished MAE fine-tunes with test_iou_binary.")


def test_holm_on_hand_made_p_values():
    # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1, held up to 0.06); NaN untested.
    assert holm([0.01, 0.04, 0.03, math.nan, 0.005]) == pytest.approx([0.03, 0.06, 0.06, math.nan, 0.02],
                                                                      nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == [] and holm([0.7]) == [0.7]
    assert holm([0.02, 0.02]) == [0.04, 0.04]


def test_only_the_declared_endpoint_gives_the_verdict_and_the_rest_is_holm_adjusted():
    planted = world(slope=0.1, fts=(1.0,), rng_seed=2)
    flat = world(slope=0.0, fts=(0.25,), noise=0.02, rng_seed=3)
    both = pd.concat([flat, planted], ignore_index=True)
    both["test_miou"] = both["test_iou_binary"] * 0.5
    entries = effect(both, EffectDesign(finetune_fraction=0.25, direction="increase"))
    primary, *secondary = entries
    assert primary["role"] == "primary" and primary["finetune_fraction"] == 0.25
    assert primary["effect"] == "not detected"  # the planted size is secondary here: it decides nothing
    assert {(e["metric"], e["finetune_fraction"]) for e in secondary} == {
        ("test_iou_binary", 1.0), ("test_miou", 1.0), ("test_miou", 0.25)}
    assert all(e["declared"] == "two-sided" for e in secondary)
    assert [e["p_holm"] for e in secondary] == pytest.approx(holm([e["p"] for e in secondary]))
    big = [e for e in secondary if e["finetune_fraction"] == 1.0]
    assert all(e["effect"] == "detected" for e in big)
    sentence = effect_sentence(entries)
    assert sentence.startswith("Effect of the animal fraction on test IoU (binary) (primary endpoint, declared "
                               "increase, alpha 0.05): not detected at fine-tune size 0.25")
    assert "Secondary tests (two-sided, Holm-adjusted): 2 of 3 detected" in sentence


def test_transfer_is_pretrained_minus_scratch_paired_by_seed():
    results = world(slope=0.08)
    v = mae_values(results)
    scratch = pd.DataFrame([{"key": f"sup-{s}", "kind": "finetune", "method": "supervised_mae", "status": "done",
                             "animal_fraction": np.nan, "finetune_fraction": 1.0, "seed": s,
                             "test_iou_binary": v.loc[s, 1.0] - 0.03 - 0.001 * s} for s in (0, 1, 2)])
    entries = effect(pd.concat([results, scratch], ignore_index=True), UP)
    (t,) = [e for e in entries if e["role"] == "transfer"]
    assert t["compared"] == "supervised_mae" and t["fraction"] == 1.0 and t["n_seeds"] == 3
    assert t["diff"] == pytest.approx(0.031) and t["ci"][0] > 0 and t["effect"] == "detected"
    assert t["direction"] == "pre-trained is better than supervised_mae"
    assert "Transfer at fine-tune size 1: pre-trained (F=1) minus supervised_mae = +0.031" in effect_sentence(entries)
    assert not [e for e in effect(results, UP) if e["role"] == "transfer"]  # no scratch runs: no entry


def test_effect_reads_only_the_results_columns():
    results = world(slope=0.08)
    base = effect(results, UP)
    # Another data world or config with the same numbers: the same answer, to the last bit.
    other = results.assign(world="coco", preset="vit_b", data_root="/elsewhere", epochs=150, parent_key="x")
    assert effect(other, UP) == base
    needed = ["method", "kind", "status", "animal_fraction", "finetune_fraction", "seed", "test_iou_binary"]
    assert effect(results[needed], UP) == base


def test_effect_json_written_with_exact_shape(tmp_path):
    results = pd.concat([world(slope=0.08, fts=(1.0,)), world(slope=0.08, seeds=(0,), fts=(0.5,))],
                        ignore_index=True)
    paths = write_report(results, {}, tmp_path / "rep", title="Effect", design=UP)
    assert paths["effect.json"] == tmp_path / "rep" / "effect.json"
    text = paths["effect.json"].read_text()
    assert "NaN" not in text
    entries = json.loads(text)
    assert isinstance(entries, list) and len(entries) == 2
    for e in entries:
        assert ENTRY_KEYS <= set(e) and len(e["ci"]) == 2 and e["effect"] in ("detected", "not detected")
    big, small = entries
    assert big["role"] == "primary" and big["finetune_fraction"] == 1.0 and big["effect"] == "detected"
    assert small["role"] == "secondary" and small["ci"] == [None, None] and small["p_holm"] is None
    # Read back (null as NaN) it gives the same sentence, and results.md opens with it.
    md = paths["results.md"].read_text().splitlines()
    assert md[0] == "# Effect" and md[2] == effect_sentence(entries) == effect_sentence(effect(results, UP))
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


def test_make_report_prints_the_effect_sentence(tmp_path, monkeypatch):
    from rich.console import Console

    from mixsweep.sweep import results as sweep_results

    results = world(slope=0.08)
    from mixsweep.sweep.store import Store

    store = Store(tmp_path)
    monkeypatch.setattr(sweep_results, "spec_results", lambda spec: (results, {}, store, None))
    # The real tracker, W&B switched off: the report must not depend on W&B to be written.
    from mixsweep.spec import EffectSettings

    spec = SimpleNamespace(name="demo", wandb=WandbSettings(mode="disabled"), effect=EffectSettings(), recipe_axes=())
    console = Console(record=True, width=400)
    paths = sweep_results.make_report(spec, console=console)
    assert paths["effect.json"] == tmp_path / "reports" / "demo" / "effect.json"
    assert all(p.is_file() for p in paths.values())
    printed = console.export_text()
    assert effect_sentence(effect(results)) in printed and "detected at fine-tune size 1" in printed


def test_make_report_prints_the_sentence_and_returns_effect_json(tmp_path, monkeypatch):
    from rich.console import Console

    from mixsweep.spec import EffectSettings
    from mixsweep.sweep import results as sweep_results
    from mixsweep.sweep.store import Store

    results = world(slope=0.08)
    store = Store(tmp_path)
    monkeypatch.setattr(sweep_results, "spec_results", lambda spec: (results, {}, store, None))
    # The real tracker, W&B switched off: the report must not depend on W&B to be written.
    spec = SimpleNamespace(name="demo", wandb=WandbSettings(mode="disabled"),
                           effect=EffectSettings(direction="decrease"), recipe_axes=())
    console = Console(record=True, width=400)
    paths = sweep_results.make_report(spec, console=console)
    assert paths["effect.json"] == tmp_path / "reports" / "demo" / "effect.json"
    assert all(p.is_file() for p in paths.values())
    printed = " ".join(console.export_text().split())
    assert "declared decrease" in printed and "goes against the declared decrease" in printed
    assert json.loads(paths["effect.json"].read_text())[0]["declared"] == "decrease"


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
    _, low, high = t_intervals(seed_slopes(x, fr), axis=1)
    cover = ((low <= 0.03) & (0.03 <= high)).mean()
    assert 0.93 <= cover <= 0.97, cover
    np.testing.assert_allclose(seed_slopes(x[:2], fr), [[np.polyfit(fr, x[i, j], 1)[0] for j in range(3)]
                                                        for i in range(2)])


@pytest.mark.parametrize("n_seeds", [3, 8])
def test_the_declared_test_holds_its_alpha_on_null_data(n_seeds):
    """The primary test's false-positive rate is alpha, by simulation (seed offsets shared across fractions, run
    noise on top): one-sided at 0.05 on a null world it detects about 5 % of the time."""
    rng = np.random.default_rng(11 + n_seeds)
    n_exp = 4000
    x = 0.6 + rng.normal(0, 0.05, size=(n_exp, n_seeds, 1)) + rng.normal(0, 0.02, size=(n_exp, n_seeds, 2))
    p = np.array([paired_test(x[e, :, 0], x[e, :, 1], "increase")["p"] for e in range(n_exp)])
    rate = float((p < 0.05).mean())
    assert 0.04 <= rate <= 0.06, rate  # binomial sd at 4000 is 0.0034
    # effect() on a results table decides exactly as the test does: 20 null experiments as 20 fine-tune sizes.
    k = 20
    fts = np.round(np.arange(1, k + 1) / 100.0, 2)
    rows = [{"kind": "finetune", "method": "mae", "status": "done", "animal_fraction": float(f),
             "finetune_fraction": fts[e], "seed": s, "test_iou_binary": x[e, s, j]}
            for e in range(k) for s in range(n_seeds) for j, f in enumerate((0.0, 1.0))]
    for e in range(k):
        (en,) = [en for en in effect(pd.DataFrame(rows), EffectDesign(direction="increase", finetune_fraction=fts[e]))
                 if en["role"] == "primary"]
        assert en["p"] == pytest.approx(p[e]) and (en["effect"] == "detected") == bool(p[e] < 0.05)
