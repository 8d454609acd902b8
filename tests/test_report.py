"""Report layer on synthetic results with a known effect: IoU = 0.6 + 0.2F - 0.1F² (+ seed offset, noise)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from fixtures import paired_difference
from mixsweep.report.analyze import METRICS, aggregate, fit_curve, paper_table, suggest_fractions, t_intervals
from mixsweep.report.build import write_report

FRACS = (0.0, 0.25, 0.5, 0.75, 1.0)
FTS = (1.0, 0.5)
SEEDS = (0, 1, 2)


def true_iou(f, ft=1.0):
    return 0.6 + 0.2 * f - 0.1 * f ** 2 - 0.05 * (1.0 - ft)


def make_sweep(noise=0.01, seeds=SEEDS, fracs=FRACS, fts=FTS, noisy=(), noisy_sd=0.1, rng_seed=0):
    """Results + histories in the store's contract. `noisy` fractions get `noisy_sd` noise instead."""
    rng = np.random.default_rng(rng_seed)
    rows, hist = [], {}
    base = dict(parent_key="", preset="tiny", status="done", error="", epochs=5, wall_seconds=1.0)
    nan_ft = dict(test_loss=np.nan, test_accuracy=np.nan, test_iou_binary=np.nan, test_miou=np.nan,
                  test_iou_pet=np.nan, test_iou_background=np.nan, test_iou_border=np.nan, val_miou=np.nan)

    def history(key, final, finetune):
        hist[key] = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": final + 0.1 / e, "lr": 1e-3, "img_per_s": 100.0,
                      **({"val_miou": 0.5, "val_accuracy": 0.8, "val_iou_binary": 0.7 - 0.1 / e} if finetune else {})}
                     for e in range(1, 6)]

    def finetune_row(key, method, parent, f, ft, s, iou):
        return {**base, "key": key, "kind": "finetune", "method": method, "parent_key": parent, "animal_fraction": f,
                "finetune_fraction": ft, "seed": s, "train_loss": np.nan, "val_loss": 0.4, "test_loss": 1.0 - iou,
                "test_accuracy": 0.8 + 0.1 * iou, "test_iou_binary": iou, "test_miou": iou - 0.1,
                "test_iou_pet": iou, "test_iou_background": 0.9, "test_iou_border": 0.3, "val_miou": iou - 0.1}

    for s in seeds:
        offset = rng.normal(0, 0.02)
        for f in fracs:
            pk = f"pre-F{f:g}-s{s}"
            vl = 0.6 - 0.05 * f + rng.normal(0, 0.005)
            rows.append({**base, **nan_ft, "key": pk, "kind": "pretrain", "method": "mae", "animal_fraction": f,
                         "finetune_fraction": np.nan, "seed": s, "train_loss": vl - 0.02, "val_loss": vl})
            history(pk, vl, False)
            for ft in fts:
                sd = noisy_sd if any(np.isclose(f, n) for n in noisy) else noise
                iou = true_iou(f, ft) + offset + rng.normal(0, sd)
                key = f"ft-F{f:g}-ft{ft:g}-s{s}"
                rows.append(finetune_row(key, "mae", pk, f, ft, s, iou))
                history(key, 1.0 - iou, True)
        for ft in fts:
            for method, level in (("resnet50", 0.72), ("supervised_mae", 0.65)):
                key = f"{method}-ft{ft:g}-s{s}"
                rows.append(finetune_row(key, method, "", np.nan, ft, s, level + rng.normal(0, noise)))
                history(key, 0.3, True)
    return pd.DataFrame(rows), hist


@pytest.fixture(scope="module")
def sweep():
    return make_sweep()


def test_aggregate_means_match_numpy(sweep):
    results, _ = sweep
    agg = aggregate(results, "test_iou_binary")
    mae = agg[agg["method"] == "mae"]
    assert len(mae) == len(FRACS) * len(FTS) and (agg["n_seeds"] == len(SEEDS)).all()
    for _, row in mae.iterrows():
        sel = results[(results["kind"] == "finetune") & (results["method"] == "mae")
                      & np.isclose(results["animal_fraction"], row["animal_fraction"])
                      & np.isclose(results["finetune_fraction"], row["finetune_fraction"])]
        assert row["mean"] == pytest.approx(np.mean(sel["test_iou_binary"]))
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        # Student-t over the 3 seeds: mean ± t_{0.975, 2} sd / √3, t_{0.975, 2} = 4.303.
        half = 4.302653 * np.std(sel["test_iou_binary"], ddof=1) / np.sqrt(3)
        assert row["ci_high"] - row["mean"] == pytest.approx(half, rel=1e-5)
        assert row["mean"] - row["ci_low"] == pytest.approx(half, rel=1e-5)
    base = agg[agg["method"] != "mae"]
    assert base["animal_fraction"].isna().all() and len(base) == 2 * len(FTS)
    assert list(agg["method"][:2]) == ["resnet50", "resnet50"]      # baselines first


def test_t_interval_contains_mean_and_shrinks():
    rng = np.random.default_rng(1)
    widths = {}
    for sd in (0.1, 0.01):
        values = 0.5 + rng.normal(0, sd, size=(6, 4))
        mean, low, high = t_intervals(values)
        np.testing.assert_allclose(mean, values.mean(axis=0))
        assert (low <= mean).all() and (mean <= high).all()
        widths[sd] = np.mean(high - low)
    assert widths[0.01] < widths[0.1] / 5


def test_t_interval_missing_and_single_seed():
    values = np.array([[0.5, 0.6], [0.7, np.nan], [0.6, np.nan]])
    mean, low, high = t_intervals(values)
    np.testing.assert_allclose(mean, [0.6, 0.6])
    assert np.isnan(low[1]) and np.isnan(high[1])                          # one seed: CI undefined
    np.testing.assert_allclose([low[0], high[0]], 0.6 + np.array([-1, 1]) * 4.302653 * 0.1 / np.sqrt(3), rtol=1e-5)
    two = t_intervals(np.array([[0.5], [0.7]]))                             # 2 seeds: t_{0.975, 1} = 12.706
    np.testing.assert_allclose([two[1][0], two[2][0]], 0.6 + np.array([-1, 1]) * 12.7062 * 0.1, rtol=1e-4)
    mean, low, high = t_intervals(np.array([[0.3, 0.4]]))
    np.testing.assert_allclose(mean, [0.3, 0.4])
    assert np.isnan(low).all() and np.isnan(high).all()


def test_paired_difference_cancels_seed_offsets():
    # Seeds differ a lot (sd 0.1) but each seed gains exactly ~0.01 from fraction 0 to fraction 1.
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 0.1, size=(8, 1))
    values = 0.6 + offsets + np.array([[0.0, 0.01]]) + rng.normal(0, 0.001, size=(8, 2))
    _, low, high = t_intervals(values)
    assert (high - low).min() > 0.05                     # each fraction alone: wide, the CIs overlap
    assert low[1] < high[0]
    d, dlow, dhigh = paired_difference(values, 0, 1)
    assert d == pytest.approx(0.01, abs=0.002)
    assert 0 < dlow < dhigh and dhigh - dlow < 0.005    # paired: the gain is resolved
    # It is the t-interval of the per-seed differences; seeds missing either fraction are dropped.
    assert (d, dlow, dhigh) == pytest.approx(tuple(float(x[0]) for x in t_intervals(values[:, 1] - values[:, 0])))
    holed = values.copy()
    holed[0, 1] = holed[1, 0] = np.nan
    assert paired_difference(holed, 0, 1)[0] == pytest.approx(np.mean(values[2:, 1] - values[2:, 0]))
    # The same difference treating the fractions as independent samples (Welch) is far wider and straddles 0.
    se = np.sqrt(values[:, 0].var(ddof=1) / 8 + values[:, 1].var(ddof=1) / 8)
    ulow, uhigh = d - stats.t.ppf(0.975, 14) * se, d + stats.t.ppf(0.975, 14) * se
    assert ulow < 0 < uhigh and (uhigh - ulow) > 10 * (dhigh - dlow)


def test_fit_curve_recovers_quadratic():
    results, _ = make_sweep(noise=0.002, seeds=(0, 1, 2, 3, 4, 5), rng_seed=5)
    ft = results[(results["kind"] == "finetune") & (results["method"] == "mae") & (results["finetune_fraction"] == 1)]
    # Remove the per-seed offset the way a paired analysis would, so the fit sees only F's effect.
    y = ft["test_iou_binary"] - ft.groupby("seed")["test_iou_binary"].transform("mean")
    y = y + np.mean(true_iou(np.array(FRACS)))
    fit = fit_curve(ft["animal_fraction"], y)
    assert fit.kind == "quadratic"
    np.testing.assert_allclose(fit.coef, [0.6, 0.2, -0.1], atol=0.01)
    assert re.fullmatch(r"quadratic: y = 0\.(59|60)\d \+ 0\.(19|20|21)\dF - 0\.(09|10|11)\dF²", fit.describe())
    np.testing.assert_allclose(fit.predict([0.0, 1.0]), [0.6, 0.7], atol=0.01)
    lin = fit_curve([0.0, 0.5, 1.0, np.nan], [1.0, 2.0, 3.0, 4.0])
    assert lin.kind == "linear" and lin.describe() == "linear: y = 1.000 + 2.000F"
    assert fit_curve([0.5, 0.5], [1.0, 3.0]).kind == "constant"


def test_suggest_fractions_targets_noise_and_skips_grid():
    results, _ = make_sweep(noise=0.002, noisy=(0.5, 0.75), noisy_sd=0.15, rng_seed=7)
    picks = suggest_fractions(results, k=3)
    assert len(picks) == 3 and picks[0][0] == 0.625
    assert all(f not in FRACS for f, _ in picks) and all("CI width" in r for _, r in picks)
    assert all(type(f) is float and f == round(f, 4) for f, _ in picks)
    # Once 0.625 is in the grid (even only as a pre-training run) it is never proposed again.
    extra = results[results["key"] == "pre-F0.5-s0"].assign(key="pre-F0.625", animal_fraction=0.625)
    again = suggest_fractions(pd.concat([results, extra]), k=10)
    assert 0.625 not in [f for f, _ in again]
    assert len(again) == len(FRACS) - 2                  # one per remaining gap of the fine-tuned grid
    # A smooth, noise-free curve: curvature decides, and a third-decimal midpoint is rounded to 4 places.
    quiet, _ = make_sweep(noise=0.0, seeds=(0,), fracs=(0.0, 0.1, 0.3, 1.0), fts=(1.0,))
    q = suggest_fractions(quiet, k=3)
    assert {f for f, _ in q} == {0.05, 0.2, 0.65} and "CI n/a" in q[0][1]
    assert suggest_fractions(quiet[quiet["kind"] == "pretrain"]) == []


def test_paper_table_rows(sweep):
    results, _ = sweep
    table = paper_table(results)
    per_ft = ["ResNet-50", "Supervised MAE"] + [f"Finetuned F={f:.2f}" for f in sorted(FRACS, reverse=True)]
    assert list(table["method"]) == per_ft * len(FTS)
    assert list(table["finetune_fraction"]) == [1.0] * len(per_ft) + [0.5] * len(per_ft)
    for col in ("test loss", "IoU (binary)", "accuracy (%)", "mIoU"):
        assert table[col].str.contains("±").all()
    assert table["test_accuracy_mean"].between(80, 100).all()          # percent, like the paper
    row = table[(table["method"] == "Finetuned F=0.50") & (table["finetune_fraction"] == 1.0)].iloc[0]
    assert row["test_iou_binary_mean"] == pytest.approx(true_iou(0.5), abs=0.05)
    assert row["IoU (binary)"].startswith(f"{row['test_iou_binary_mean']:.3f} ± ")


def _valid_png(path):
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()


def test_write_report(sweep, tmp_path):
    results, hist = sweep
    failed = results.iloc[:1].assign(key="ft-broken", kind="finetune", status="failed",
                                     error="CUDA | out of memory\nat step 3", test_iou_binary=np.nan)
    results = pd.concat([results, failed], ignore_index=True)
    paths = write_report(results, hist, tmp_path / "rep", title="Synthetic sweep")
    pngs = ["primary_vs_fraction.png", "iou_vs_fraction.png", "miou_vs_fraction.png", "accuracy_vs_fraction.png",
            "curves.png", "pretrain_loss.png"]
    assert set(paths) == {"results.parquet", "results.md", "effect.json", *pngs}
    for name in pngs:
        _valid_png(paths[name])
    back = pd.read_parquet(paths["results.parquet"])
    assert len(back) == len(results) and list(back.columns) == list(results.columns)
    md = paths["results.md"].read_text()
    assert md.startswith("# Synthetic sweep\n\nEffect of the animal fraction on test IoU (binary) (primary endpoint, "
                         "two-sided, alpha 0.05): detected at "
                         "fine-tune size 1: F=1 minus F=0 = +0.")
    assert "Student-t CI" in md and "bootstrap" not in md
    assert "All-background answer" not in md and "Fine-tune schedule" not in md    # columns absent: silent
    assert "| method | fine-tune | seeds | test loss | IoU (binary) | accuracy (%) | mIoU |" in md
    lines = md.splitlines()
    for key in results["key"]:
        assert sum(line.startswith(f"| {key} |") for line in lines) == 1
    assert "CUDA \\| out of memory at step 3" in md
    assert "quadratic: y = " in md and "Suggested next animal fractions" in md
    assert all(label in md for label in METRICS.values())


def test_write_report_skips_empty_plots(sweep, tmp_path):
    results, hist = sweep
    pre = results[results["kind"] == "pretrain"]
    paths = write_report(pre, hist, tmp_path / "rep", title="Pre-training only")
    assert set(paths) == {"results.parquet", "results.md", "effect.json", "pretrain_loss.png"}
    _valid_png(paths["pretrain_loss.png"])
    assert not (tmp_path / "rep" / "iou_vs_fraction.png").exists()
    md = paths["results.md"].read_text()
    assert "iou_vs_fraction.png: skipped" in md and "curves.png: skipped" in md
    assert "No finished fine-tunes yet." in md
    assert md.splitlines()[2] == ("Effect of the animal fraction on test IoU (binary): not judged, no finished MAE "
                                  "fine-tunes with test_iou_binary.")
    assert paths["effect.json"].read_text() == "[]\n"


def test_each_plot_says_whether_it_is_the_declared_test(sweep, tmp_path):
    """A probe endpoint gets its own plot; the fine-tunes' IoU plot runs the same design on its own stages and
    says it is not the declared endpoint (it once printed the probes' numbers over the fine-tunes' curve)."""
    from mixsweep.report.effect import EffectDesign, effect
    from mixsweep.report.plots import plot_sentence

    results, hist = sweep
    mae = results[(results["method"] == "mae") & (results["kind"] == "finetune")]
    probes = mae.assign(method="probe", key=mae["key"] + "-probe", test_loss=mae["test_loss"] + 0.3,
                        test_iou_binary=mae["test_iou_binary"] - 0.2 - 0.1 * mae["animal_fraction"])
    both = pd.concat([results, probes], ignore_index=True)
    design = EffectDesign(metric="test_loss", method="probe", direction="decrease")
    primary = plot_sentence(both, "test_loss", "probe", design)
    assert "(primary endpoint, declared decrease, alpha 0.05)" in primary
    iou = plot_sentence(both, "test_iou_binary", "mae", design)
    assert "(not the declared endpoint, two-sided, alpha 0.05)" in iou
    (fine_tunes,) = effect(both, EffectDesign(metric="test_iou_binary", method="mae"))[:1]
    (of_probes,) = effect(both, EffectDesign(metric="test_iou_binary", method="probe"))[:1]
    assert f"{fine_tunes['diff']:+.3f}" in iou and f"{of_probes['diff']:+.3f}" not in iou  # not the probes'
    paths = write_report(both, hist, tmp_path / "rep", title="probe endpoint", design=design)
    _valid_png(paths["primary_vs_fraction.png"])
