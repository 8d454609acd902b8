"""Numbers behind the report: seed-paired bootstrap CIs, curve fits over the animal fraction, the paper's
Table 2, and which animal fractions to run next.

Seeds are paired across animal fractions: seed s draws nested subsets and the same fine-tune split at every
fraction, so a bootstrap replicate resamples seed *indices* once and applies them to every fraction. That
keeps the seed-to-seed offset shared by all fractions out of differences and fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

METRICS = {"test_iou_binary": "IoU (binary)", "test_miou": "mIoU", "test_accuracy": "accuracy", "test_loss": "loss"}

# Table order and labels; MAE fine-tunes come after the baselines, as in the paper.
METHOD_ORDER = {"resnet50": 0, "supervised_mae": 1, "mae": 2}
METHOD_LABELS = {"resnet50": "ResNet-50", "supervised_mae": "Supervised MAE"}
BASELINES = ("resnet50", "supervised_mae")

# Fractions are floats that went through JSON; round before grouping so 0.1+0.2 and 0.3 are one group.
_ROUND = 6

_NUMERIC = ("animal_fraction", "finetune_fraction", "seed", "epochs", "wall_seconds", "train_loss", "val_loss",
            "test_loss", "test_accuracy", "test_iou_binary", "test_miou", "test_iou_pet", "test_iou_background",
            "test_iou_border", "val_miou")


def clean(results: pd.DataFrame) -> pd.DataFrame:
    """A copy with every contract column present and numeric columns numeric (None -> NaN, fractions rounded)."""
    df = results.copy()
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    for col in ("key", "kind", "method", "parent_key", "preset", "status", "error"):
        df[col] = df[col].fillna("").astype(str) if col in df else ""
    for col in ("animal_fraction", "finetune_fraction"):
        df[col] = df[col].round(_ROUND)
    return df


def finetunes(results: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Finished fine-tune rows (optionally only those with a finite `metric`)."""
    df = clean(results)
    df = df[(df["kind"] == "finetune") & (df["status"] == "done")]
    if metric is not None:
        df = df[np.isfinite(df[metric])]
    return df


# --------------------------------------------------------------------------------------------- bootstrap

def bootstrap_means(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, fractions) replicate means; each replicate draws one set of seed indices for all fractions."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    n = values.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    draws = values[idx]                                  # (n_boot, n_seeds, fractions)
    ok = np.isfinite(draws)
    count = ok.sum(axis=1)
    total = np.where(ok, draws, 0.0).sum(axis=1)
    # A replicate that drew only missing seeds for a fraction says nothing about it: NaN, skipped below.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _interval(reps: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - ci) / 2.0
    low = np.full(reps.shape[1], np.nan)
    high = np.full(reps.shape[1], np.nan)
    for j in range(reps.shape[1]):
        col = reps[:, j][np.isfinite(reps[:, j])]
        if col.size:
            low[j], high[j] = np.quantile(col, [alpha, 1.0 - alpha])
    return low, high


def paired_bootstrap(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     ci: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile CI per fraction of a (seeds x fractions) array, NaN = missing run.

    A fraction with fewer than two finite seeds gets low = high = NaN: one seed has no spread to resample,
    and a zero-width interval would claim a certainty the sweep does not have.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    finite = np.isfinite(values)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(finite, values, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
    if values.shape[0] == 0:
        return mean, mean.copy(), mean.copy()
    low, high = _interval(bootstrap_means(values, n_boot, seed), ci)
    low[n < 2] = np.nan
    high[n < 2] = np.nan
    return mean, low, high


def paired_difference(values: np.ndarray, i: int, j: int, n_boot: int = 2000, seed: int = 0,
                      ci: float = 0.95) -> tuple[float, float, float]:
    """Mean and CI of (fraction j - fraction i) over seeds, resampled as pairs; seeds missing either are dropped."""
    values = np.asarray(values, dtype=float)
    d = values[:, j] - values[:, i]
    mean, low, high = paired_bootstrap(d[:, None], n_boot, seed, ci)
    return float(mean[0]), float(low[0]), float(high[0])


# ------------------------------------------------------------------------------------------------ fits

@dataclass
class CurveFit:
    """Least-squares polynomial in F; coef ascending (a, b, c) so y = a + bF + cF²."""

    kind: str                    # "quadratic" | "linear" | "constant"
    coef: np.ndarray
    n_points: int = 0
    x_range: tuple[float, float] = (np.nan, np.nan)
    rmse: float = np.nan
    extra: dict = field(default_factory=dict)

    def predict(self, xs) -> np.ndarray:
        return np.polynomial.polynomial.polyval(np.asarray(xs, dtype=float), self.coef)

    def describe(self, digits: int = 3) -> str:
        terms = [f"{self.coef[0]:.{digits}f}"]
        for power, c in enumerate(self.coef[1:], start=1):
            sign = "-" if c < 0 else "+"
            terms.append(f"{sign} {abs(c):.{digits}f}F{'²' if power == 2 else ''}")
        return f"{self.kind}: y = {' '.join(terms)}"


def fit_curve(x, y) -> CurveFit:
    """Quadratic in F with >= 4 distinct fractions, linear with 2-3, constant with 1 (non-finite points dropped).

    A quadratic through 3 points is an exact interpolation with no residual to judge it by, so 4 is the
    least that leaves a check. Fit to every (fraction, seed) point, so a fraction with more seeds weighs more.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    distinct = np.unique(np.round(x, _ROUND)).size
    if distinct == 0:
        raise ValueError("fit_curve: no finite points")
    kind, deg = ("quadratic", 2) if distinct >= 4 else ("linear", 1) if distinct >= 2 else ("constant", 0)
    coef = np.polynomial.polynomial.polyfit(x, y, deg)
    fit = CurveFit(kind=kind, coef=np.asarray(coef, dtype=float), n_points=int(x.size),
                   x_range=(float(x.min()), float(x.max())))
    fit.rmse = float(np.sqrt(np.mean((fit.predict(x) - y) ** 2)))
    return fit


# ------------------------------------------------------------------------------------------- aggregate

def seed_matrix(df: pd.DataFrame, metric: str, column: str = "animal_fraction") -> tuple[np.ndarray, np.ndarray]:
    """(seeds x fractions) array of `metric` and the sorted fractions; duplicate (seed, fraction) rows averaged."""
    if df.empty:
        return np.empty((0, 0)), np.empty(0)
    key = df[column].fillna(-1.0)             # baselines have no fraction: one column
    table = df.assign(_col=key).pivot_table(index="seed", columns="_col", values=metric, aggfunc="mean")
    cols = np.asarray(table.columns, dtype=float)
    return table.to_numpy(dtype=float), np.where(cols == -1.0, np.nan, cols)


def aggregate(results: pd.DataFrame, metric: str, n_boot: int = 2000, ci: float = 0.95) -> pd.DataFrame:
    """Per (method, finetune_fraction, animal_fraction): mean, ci_low, ci_high, n_seeds over finished fine-tunes.

    Baselines have animal_fraction NaN. Sorted baselines first, then by fine-tune and animal fraction.
    """
    cols = ["method", "finetune_fraction", "animal_fraction", "mean", "ci_low", "ci_high", "n_seeds"]
    df = finetunes(results, metric)
    out = []
    for (method, ft), grp in df.groupby(["method", "finetune_fraction"], dropna=False, sort=False):
        if method != "mae":
            grp = grp.assign(animal_fraction=np.nan)
        values, fracs = seed_matrix(grp, metric)
        mean, low, high = paired_bootstrap(values, n_boot=n_boot, ci=ci)
        n = np.isfinite(values).sum(axis=0)
        for j, f in enumerate(fracs):
            out.append({"method": method, "finetune_fraction": ft, "animal_fraction": f, "mean": mean[j],
                        "ci_low": low[j], "ci_high": high[j], "n_seeds": int(n[j])})
    agg = pd.DataFrame(out, columns=cols)
    if agg.empty:
        return agg
    agg["_order"] = agg["method"].map(METHOD_ORDER).fillna(len(METHOD_ORDER))
    agg = agg.sort_values(["_order", "method", "finetune_fraction", "animal_fraction"], na_position="first")
    return agg.drop(columns="_order").reset_index(drop=True)


def fits(results: pd.DataFrame, metric: str) -> dict[float, CurveFit]:
    """fine-tune fraction -> fit of `metric` against animal fraction over the MAE fine-tunes' seed points."""
    df = finetunes(results, metric)
    df = df[df["method"] == "mae"]
    return {float(ft): fit_curve(g["animal_fraction"], g[metric])
            for ft, g in df.groupby("finetune_fraction", sort=True)}


# ----------------------------------------------------------------------------------------- paper table

# (metric, column label, numeric prefix, scale): accuracy in percent like the paper.
_TABLE_COLUMNS = (("test_loss", "test loss", 1.0, 2), ("test_iou_binary", "IoU (binary)", 1.0, 3),
                  ("test_accuracy", "accuracy (%)", 100.0, 1), ("test_miou", "mIoU", 1.0, 3))


def _fmt(mean: float, half: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def method_label(method: str, animal_fraction: float) -> str:
    if method == "mae":
        return f"Finetuned F={animal_fraction:.2f}"
    return METHOD_LABELS.get(method, method)


def paper_table(results: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Table 2: one row per method x fine-tune fraction, "mean ± half-CI" strings and numeric columns.

    Numeric columns are <metric>_mean and <metric>_half_ci (accuracy in percent). Rows: the largest fine-tune
    fraction first, then ResNet-50, Supervised MAE, Finetuned F=1.00 ... F=0.00 (the paper's order). A single
    seed has no CI, so its cell shows the mean alone.
    """
    per = {m: aggregate(results, m, ci=ci) for m, *_ in _TABLE_COLUMNS}
    keys = pd.concat([a[["method", "finetune_fraction", "animal_fraction", "n_seeds"]] for a in per.values()])
    if keys.empty:
        cols = ["method", "finetune_fraction", "animal_fraction", "n_seeds"] + [c[1] for c in _TABLE_COLUMNS]
        return pd.DataFrame(columns=cols)
    keys = keys.groupby(["method", "finetune_fraction", "animal_fraction"], dropna=False, as_index=False)[
        "n_seeds"].max()
    table = keys.rename(columns={"method": "_method"})
    for metric, label, scale, digits in _TABLE_COLUMNS:
        a = per[metric].rename(columns={"method": "_method"})
        a = a.assign(**{f"{metric}_mean": a["mean"] * scale,
                        f"{metric}_half_ci": (a["ci_high"] - a["ci_low"]) * scale / 2.0})
        table = table.merge(a[["_method", "finetune_fraction", "animal_fraction", f"{metric}_mean",
                               f"{metric}_half_ci"]], how="left", on=["_method", "finetune_fraction",
                                                                     "animal_fraction"])
        table[label] = [_fmt(m, h, digits) for m, h in zip(table[f"{metric}_mean"], table[f"{metric}_half_ci"])]
    table.insert(0, "method", [method_label(m, f) for m, f in zip(table["_method"], table["animal_fraction"])])
    table["_order"] = table["_method"].map(METHOD_ORDER).fillna(len(METHOD_ORDER))
    table["_f"] = -table["animal_fraction"].fillna(2.0)
    table = table.sort_values(["finetune_fraction", "_order", "_f"], ascending=[False, True, True])
    table = table.rename(columns={"_method": "method_key"}).drop(columns=["_order", "_f"])
    labels = [c[1] for c in _TABLE_COLUMNS]
    numeric = [c for c in table.columns if c.endswith(("_mean", "_half_ci"))]
    front = ["method", "finetune_fraction", "animal_fraction", "n_seeds"]
    return table[front + labels + numeric + ["method_key"]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- suggest

def _second_differences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|second difference| at each interior point; on a uniform grid exactly |y[i-1] - 2y[i] + y[i+1]|.

    Scaled by the mean neighbouring spacing so that on an uneven grid it stays in the metric's units, the
    same units as a CI width, and the two scores can be added.
    """
    d = np.full(x.size, np.nan)
    h = np.diff(x)
    for i in range(1, x.size - 1):
        slope_change = (y[i + 1] - y[i]) / h[i] - (y[i] - y[i - 1]) / h[i - 1]
        d[i] = abs(slope_change) * (h[i - 1] + h[i]) / 2.0
    return d


def suggest_fractions(results: pd.DataFrame, metric: str = "test_iou_binary", k: int = 3,
                      n_boot: int = 2000) -> list[tuple[float, str]]:
    """Midpoints of adjacent grid fractions where another point would teach the most, best first.

    Each gap scores (a) the mean CI width of its two neighbours (where the curve is uncertain) plus (b) the mean
    |second difference| of the mean curve at its ends (where a straight line between them is wrong). Both are
    in the metric's units; with several fine-tune fractions the scores are averaged. A fraction already in the
    grid (any pre-train or fine-tune row) is never proposed.
    """
    df = clean(results)
    grid = set(np.round(df["animal_fraction"].dropna().to_numpy(dtype=float), 4))
    agg = aggregate(results, metric, n_boot=n_boot)
    agg = agg[agg["method"] == "mae"] if not agg.empty else agg
    scores: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for _, g in agg.groupby("finetune_fraction"):
        g = g.sort_values("animal_fraction")
        x = g["animal_fraction"].to_numpy(dtype=float)
        y = g["mean"].to_numpy(dtype=float)
        width = (g["ci_high"] - g["ci_low"]).to_numpy(dtype=float)
        curv = _second_differences(x, y)
        for i in range(x.size - 1):
            w = np.nanmean(width[i:i + 2]) if np.isfinite(width[i:i + 2]).any() else np.nan
            c = np.nanmean(curv[i:i + 2]) if np.isfinite(curv[i:i + 2]).any() else np.nan
            scores.setdefault((x[i], x[i + 1]), []).append((w, c))
    ranked = []
    for (a, b), vals in scores.items():
        mid = round(float(a + b) / 2.0, 4)
        if mid in grid:
            continue
        arr = np.array(vals, dtype=float)
        w = float(np.nanmean(arr[:, 0])) if np.isfinite(arr[:, 0]).any() else np.nan
        c = float(np.nanmean(arr[:, 1])) if np.isfinite(arr[:, 1]).any() else np.nan
        score = np.nan_to_num(w) + np.nan_to_num(c)
        ci_txt = f"CI width {w:.3f}" if np.isfinite(w) else "CI n/a (one seed)"
        c_txt = f"|2nd diff| {c:.3f}" if np.isfinite(c) else "curvature n/a (2 points)"
        reason = f"midpoint of {a:g}–{b:g}: {ci_txt}, {c_txt}"
        # Ties (e.g. one seed on a straight line): prefer the wider gap, then the lower fraction.
        ranked.append((-score, -(b - a), mid, reason))
    ranked.sort()
    return [(mid, reason) for _, _, mid, reason in ranked[:k]]
