"""The effect of the animal fraction, tested as the spec's effect: section declares it: the primary endpoint's
paired t-test over seeds (one-sided in the declared direction), every other metric and fine-tune size as a
secondary test with Holm-adjusted p-values, transfer against the same model from random weights, and the
verdict in words (`effect_sentence`). effect.json holds `effect`'s entries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mixsweep.report.analyze import (METRICS, ROUND_DECIMALS, clean, finetunes, seed_matrix, seed_slopes,
                                     t_intervals)

# The only columns the effect analysis reads: it must not know which data world or config produced a run.
EFFECT_COLUMNS = ("method", "kind", "status", "animal_fraction", "finetune_fraction", "seed")


def higher_is_better(metric: str) -> bool:
    return "loss" not in metric


DIRECTIONS = ("increase", "decrease", "two-sided")


@dataclass(frozen=True)
class EffectDesign:
    """The effect test, declared before the results are looked at (a spec's `effect:` section).

    The primary endpoint is `metric` of `method`'s stages (MAE fine-tunes, or probes) at fine-tune size `finetune_fraction` (None: the
    largest in the results), compared between the animal fractions `fractions` (None: the lowest and the
    highest run) by a paired t-test over seeds, one-sided in `direction` (`increase`: the metric rises with the
    animal fraction) or `two-sided`, at level `alpha`. Only the primary endpoint gives the verdict; every other
    metric and fine-tune size is a secondary test, two-sided, with Holm-adjusted p-values. `scratch` names the
    method the pre-trained model is compared with at the high fraction (transfer): the same model from random
    initialisation."""

    metric: str = "test_iou_binary"
    method: str = "mae"  # whose metric: the end-to-end fine-tunes ("mae") or the frozen-encoder probes ("probe")
    finetune_fraction: float | None = None
    direction: str = "two-sided"
    alpha: float = 0.05
    fractions: tuple[float, float] | None = None
    scratch: str = "supervised_mae"

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r}: one of {', '.join(DIRECTIONS)}")


def paired_test(low: np.ndarray, high: np.ndarray, direction: str = "two-sided", ci: float = 0.95) -> dict:
    """Paired t-test of high - low over the seeds where both are finite.

    Returns diff (mean), ci (two-sided `ci` interval), t, df, p (one-sided in `direction`, or two-sided) and
    n. Fewer than two pairs: NaN statistics and p. A zero spread with a non-zero mean gives p 0 or 1."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    d = (high - low)[np.isfinite(high) & np.isfinite(low)]
    n = int(d.size)
    out = {"diff": float(d.mean()) if n else math.nan, "ci": [math.nan, math.nan], "t": math.nan,
           "df": max(n - 1, 0), "p": math.nan, "n": n}
    if n < 2:
        return out
    se = float(d.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + ci / 2, n - 1)) * se
    out["ci"] = [out["diff"] - half, out["diff"] + half]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = out["diff"] / se if se > 0 else math.copysign(math.inf, out["diff"]) if out["diff"] else 0.0
    out["t"] = float(t)
    if direction == "increase":
        out["p"] = float(stats.t.sf(t, n - 1))
    elif direction == "decrease":
        out["p"] = float(stats.t.cdf(t, n - 1))
    else:
        out["p"] = float(min(1.0, 2 * stats.t.sf(abs(t), n - 1)))
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order; NaN (not tested) stays NaN and is not counted."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    m, out, running = len(finite), [math.nan] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def effect(results: pd.DataFrame, design: EffectDesign | None = None, ci: float = 0.95) -> list[dict]:
    """The effect of the animal fraction, as `design` declares it: the primary entry first, then one secondary
    entry per other (metric, fine-tune size), then the transfer entry (pre-trained minus scratch) when the
    results have the scratch method.

    Over finished MAE fine-tunes only, reading nothing but the columns method, kind, status, animal_fraction,
    finetune_fraction, seed and the metrics (never which data world or config made a run). Each entry:

    - ``role``: primary | secondary | transfer; ``metric``, ``finetune_fraction``, ``fractions`` [low, high];
    - ``diff``, ``ci``: the mean over seeds of (metric at the high fraction - at the low one), paired by seed (a
      seed missing either end is dropped), and its two-sided Student-t interval (``ci_level``);
    - ``p``: the paired t-test's p-value, one-sided in the declared direction for the primary entry, two-sided
      otherwise; ``p_holm`` for secondary entries (Holm over all secondary entries);
    - ``effect``: "detected" when p (primary, transfer) or p_holm (secondary) is below alpha, else "not
      detected" (always with fewer than two paired seeds); ``direction``: "higher animal fraction is better" /
      "... worse" (a loss is better lower) when detected, else None;
    - ``slope``, ``slope_ci``: descriptive: the least-squares slope against the fraction, fitted per seed over
      that seed's fractions, with its interval over seeds;
    - ``n_seeds`` (paired), ``n_seeds_slope``, ``n_fractions``, ``mean_low`` / ``mean_high``;
    - ``n_diverged``, ``diverged``: the (animal fraction, seed) points left out because their run diverged (the
      fine-tune or its pre-training went non-finite, or the metric is not finite).
    """
    design = design or EffectDesign()
    metrics = [design.metric] + [m for m in METRICS if m != design.metric]
    cols = [c for c in (*EFFECT_COLUMNS, *metrics) if c in results]
    finished = finetunes(results[cols])
    method = design.method
    sizes = sorted(set(finished.loc[finished["method"] == method, "finetune_fraction"].dropna()), key=lambda f: -f)
    primary_ft = design.finetune_fraction if design.finetune_fraction is not None else (sizes[0] if sizes else None)
    out = []
    for metric in metrics:
        if metric not in results:
            continue
        lost = diverged_points(results[cols], metric, method)
        ft_sizes = sorted(set(sizes) | {f for f in lost if f is not None}, key=lambda f: -f)
        for ft in ft_sizes:
            role = "primary" if metric == design.metric and _same(ft, primary_ft) else "secondary"
            gone = sorted(lost.get(ft, set()) | lost.get(None, set()))
            out.append({**_fraction_test(finished, metric, ft, design, role, ci),
                        "n_diverged": len(gone), "diverged": [list(p) for p in gone]})
    if primary_ft is not None and not any(e["role"] == "primary" for e in out) and design.metric in results:
        out.append({**_fraction_test(finished, design.metric, primary_ft, design, "primary", ci), "n_diverged": 0,
                    "diverged": []})  # the declared size has no finished run: said, not silently replaced
    secondary = [e for e in out if e["role"] == "secondary"]
    for e, adjusted in zip(secondary, holm([e["p"] for e in secondary])):
        e["p_holm"] = adjusted
        judge(e, adjusted, design.alpha)
    transfer = _transfer(finished, design, primary_ft, ci)
    out.sort(key=lambda e: e["role"] != "primary")
    return out + ([transfer] if transfer else [])


def _same(a, b) -> bool:
    return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9


def judge(entry: dict, p: float, alpha: float) -> None:
    detected = bool(p == p and p < alpha)
    sign = np.sign(entry["diff"]) * (1 if higher_is_better(entry["metric"]) else -1)
    entry["effect"] = "detected" if detected else "not detected"
    entry["direction"] = f"higher animal fraction is {'better' if sign > 0 else 'worse'}" if detected else None


def _fraction_test(finished: pd.DataFrame, metric: str, ft: float, design: EffectDesign, role: str,
                   ci: float) -> dict:
    """One (metric, fine-tune size) entry of `effect`, judged on its own p (the caller re-judges secondaries)."""
    grp = finished[(finished["method"] == design.method) & np.isclose(finished["finetune_fraction"], ft)
                   & np.isfinite(finished[metric])]
    values, fracs = seed_matrix(grp, metric)
    entry = {"role": role, "metric": metric, "method": design.method, "finetune_fraction": float(ft), "ci_level": ci,
             "alpha": design.alpha,
             "declared": design.direction if role == "primary" else "two-sided"}
    if design.fractions is not None:
        lo_f, hi_f = (float(f) for f in design.fractions)
    elif fracs.size:
        lo_f, hi_f = float(fracs.min()), float(fracs.max())
    else:
        lo_f = hi_f = math.nan
    column = {round(float(f), ROUND_DECIMALS): i for i, f in enumerate(fracs)}
    lo, hi = column.get(round(lo_f, ROUND_DECIMALS)), column.get(round(hi_f, ROUND_DECIMALS))
    if lo is None or hi is None or lo == hi:
        test = paired_test(np.empty(0), np.empty(0))
        low = high = np.empty(0)
    else:
        low, high = values[:, lo], values[:, hi]
        test = paired_test(low, high, entry["declared"], ci)
    slopes = seed_slopes(values, fracs) if fracs.size else np.empty(0)
    slope, slope_low, slope_high = (t_intervals(slopes[:, None], ci)[k][0] for k in range(3)) if slopes.size else (
        math.nan, math.nan, math.nan)
    paired = np.isfinite(low) & np.isfinite(high) if len(low) else np.zeros(0, bool)
    entry.update({"fractions": [lo_f, hi_f], "n_fractions": int(fracs.size), "diff": test["diff"], "ci": test["ci"],
                  "t": test["t"], "p": test["p"], "n_seeds": test["n"],
                  "slope": float(slope), "slope_ci": [float(slope_low), float(slope_high)],
                  "n_seeds_slope": int(np.isfinite(slopes).sum()),
                  "mean_low": float(low[paired].mean()) if paired.any() else math.nan,
                  "mean_high": float(high[paired].mean()) if paired.any() else math.nan})
    judge(entry, test["p"], design.alpha)
    return entry


def _transfer(finished: pd.DataFrame, design: EffectDesign, ft: float | None, ci: float) -> dict | None:
    """Pre-trained (MAE at the high fraction) minus `design.scratch` on the primary metric and fine-tune size,
    paired by seed, two-sided; None when either is missing."""
    if ft is None or design.metric not in finished:
        return None
    at = finished[np.isclose(finished["finetune_fraction"], ft) & np.isfinite(finished[design.metric])]
    mae = at[at["method"] == design.method]
    if mae.empty:
        return None
    high = float(design.fractions[1]) if design.fractions is not None else float(mae["animal_fraction"].max())
    pre = mae[np.isclose(mae["animal_fraction"], high)].groupby("seed")[design.metric].mean()
    scratch = at[at["method"] == design.scratch].groupby("seed")[design.metric].mean()
    if pre.empty or scratch.empty:
        return None
    seeds = sorted(set(pre.index) | set(scratch.index))
    test = paired_test(scratch.reindex(seeds).to_numpy(), pre.reindex(seeds).to_numpy(), "two-sided", ci)
    entry = {"role": "transfer", "metric": design.metric, "finetune_fraction": float(ft), "compared": design.scratch,
             "fraction": high, "diff": test["diff"], "ci": test["ci"], "ci_level": ci, "t": test["t"],
             "p": test["p"], "n_seeds": test["n"], "alpha": design.alpha, "declared": "two-sided"}
    detected = bool(test["p"] == test["p"] and test["p"] < design.alpha)
    better = np.sign(test["diff"]) * (1 if higher_is_better(design.metric) else -1) > 0
    entry["effect"] = "detected" if detected else "not detected"
    entry["direction"] = (f"pre-trained is {'better' if better else 'worse'} than {design.scratch}"
                          if detected else None)
    return entry


def diverged_points(results: pd.DataFrame, metric: str = "test_iou_binary",
                    method: str = "mae") -> dict[float | None, set[tuple[float, int]]]:
    """fine-tune fraction -> the (animal fraction, seed) points of `method` lost to divergence: a diverged
    fine-tune, a finished one whose `metric` is not finite, or (under key None: every fine-tune size) a diverged
    pre-training."""
    df = clean(results)
    if metric not in df:
        df[metric] = np.nan
    ft = df[(df["kind"] == "finetune") & (df["method"] == method)]
    bad = ft[(ft["status"] == "diverged") | ((ft["status"] == "done") & ~np.isfinite(ft[metric]))]
    out: dict[float, set] = {}
    for f, a, seed in zip(bad["finetune_fraction"], bad["animal_fraction"], bad["seed"]):
        out.setdefault(float(f), set()).add((float(a), int(seed)))
    pre = df[(df["kind"] == "pretrain") & (df["status"] == "diverged")]
    for a, seed in zip(pre["animal_fraction"], pre["seed"]):
        out.setdefault(None, set()).add((float(a), int(seed)))
    return out


def num(v) -> float:
    return float("nan") if v is None else float(v)


def _signed(v, digits: int = 3) -> str:
    return f"{v:+.{digits}f}" if np.isfinite(v) else "n/a"


def _diverged_clause(e: dict) -> str:
    """' (2 runs diverged and are left out: F=1 seed 3, F=1 seed 4)', or ''."""
    points = e.get("diverged") or []
    if not points:
        return ""
    shown = ", ".join(f"F={num(a):g} seed {int(seed)}" for a, seed in points[:6])
    more = f" and {len(points) - 6} more" if len(points) > 6 else ""
    return (f" ({len(points)} run{'s' if len(points) != 1 else ''} diverged and "
            f"{'are' if len(points) != 1 else 'is'} left out: {shown}{more})")


def effect_clause(e: dict) -> str:
    return _effect_numbers(e) + _diverged_clause(e)


def _p_text(e: dict) -> str:
    p = num(e.get("p"))
    text = f"{'one-sided ' if e.get('declared') in ('increase', 'decrease') else ''}p = {p:.2g}"
    return text + (f", Holm {num(e['p_holm']):.2g}" if "p_holm" in e else "")


def _effect_numbers(e: dict) -> str:
    lo, hi = (num(f) for f in e["fractions"])
    where = f"{e['effect']} at fine-tune size {num(e['finetune_fraction']):g}"
    if e.get("n_fractions", 2) == 0:
        return f"{where}: no finished run"
    if e.get("n_fractions", 2) < 2 or lo == hi or not np.isfinite(num(e["diff"])):
        return f"{where}: no pair of runs at F={lo:g} and F={hi:g}, nothing to compare"
    seeds = f"{e['n_seeds']} seed{'s' if e['n_seeds'] != 1 else ''}"
    diff, (dl, dh) = num(e["diff"]), (num(c) for c in e["ci"])
    level = f"{round(100 * e.get('ci_level', 0.95)):g}%"
    text = f"{where}: F={hi:g} minus F={lo:g} = {_signed(diff)}"
    if not np.isfinite(dl):
        return f"{text} (no test with {seeds})"
    text += f" ({level} CI {_signed(dl)} to {_signed(dh)}, {_p_text(e)}, {seeds})"
    if e["effect"] == "detected":
        return f"{text}, so {e['direction']}" if e.get("direction") else text
    declared = e.get("declared", "two-sided")
    if (declared == "increase" and diff < 0) or (declared == "decrease" and diff > 0):
        return f"{text}; it goes against the declared {declared}"
    return f"{text}; p is not below alpha {num(e.get('alpha', 0.05)):g}"


def transfer_sentence(e: dict) -> str:
    level = f"{round(100 * e.get('ci_level', 0.95)):g}%"
    (dl, dh) = (num(c) for c in e["ci"])
    what = (f"Transfer at fine-tune size {num(e['finetune_fraction']):g}: pre-trained (F={num(e['fraction']):g}) "
            f"minus {e['compared']} = {_signed(num(e['diff']))}")
    if not np.isfinite(dl):
        return f"{what} (no test with {e['n_seeds']} paired seed(s))."
    verdict = e["direction"] if e.get("direction") else "no difference detected"
    return f"{what} ({level} CI {_signed(dl)} to {_signed(dh)}, p = {num(e['p']):.2g}, {e['n_seeds']} seeds): {verdict}."


def effect_sentence(entries: list[dict], metric: str = "test_iou_binary", secondary: bool = True,
                    role: str = "primary endpoint") -> str:
    """The verdict in words: the primary endpoint's test with its numbers, then (with `secondary`) how many
    secondary tests are detected after Holm's correction, and the transfer comparison. `role` names the test
    (a plot of another metric runs the design on it, and says so).

    Takes `effect()`'s entries, or the same entries read back from effect.json (null read as NaN)."""
    primary = [e for e in entries if e.get("role", "primary") == "primary"]
    metric = primary[0]["metric"] if primary else metric
    head = f"Effect of the animal fraction on test {METRICS.get(metric, metric)}"
    if not primary:
        return f"{head}: not judged, no finished MAE fine-tunes with {metric}."
    e = primary[0]
    declared = e.get("declared", "two-sided")
    design = f"{role}, {'declared ' + declared if declared != 'two-sided' else 'two-sided'}, " \
             f"alpha {num(e.get('alpha', 0.05)):g}"
    text = f"{head} ({design}): {effect_clause(e)}."
    if not secondary:
        return text
    others = [x for x in entries if x.get("role") == "secondary" and np.isfinite(num(x.get("p_holm")))]
    if others:
        hits = [f"{METRICS.get(x['metric'], x['metric'])} at {num(x['finetune_fraction']):g}" for x in others
                if x["effect"] == "detected"]
        text += (f" Secondary tests (two-sided, Holm-adjusted): {len(hits)} of {len(others)} detected"
                 + (f" ({', '.join(hits)})." if hits else "."))
    for x in entries:
        if x.get("role") == "transfer":
            text += " " + transfer_sentence(x)
    return text
