"""Numbers behind the report: Student-t intervals over seeds, the effect of the animal fraction, curve fits
over the animal fraction, the paper's Table 2, and which animal fractions to run next.

A sweep has few seeds (2-3), so every interval is a Student-t interval over seeds, mean ± t_{0.975, n-1}·sd/√n,
which holds its 95 % coverage at any n >= 2 for roughly normal seed-to-seed noise. (The percentile bootstrap
it replaced covers about 75 % at 3 seeds: 3 seeds give only 10 distinct resampled means.) Fewer than two seeds
give no interval (NaN): one seed has no spread, and a zero-width interval would claim a certainty the sweep
does not have.

Seeds are paired across animal fractions: seed s draws nested subsets and the same fine-tune split at every
fraction, so a difference between fractions, or a slope against the fraction, is computed within each seed
first and the interval is taken over those per-seed numbers. That keeps the seed-to-seed offset shared by
all fractions out of differences and slopes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from mixsweep.methods import FRACTION_METHODS, label as method_name, order as method_order

METRICS = {"test_iou_binary": "IoU (binary)", "test_miou": "mIoU", "test_accuracy": "accuracy", "test_loss": "loss"}


# Fractions are floats that went through JSON; round before grouping so 0.1+0.2 and 0.3 are one group.
ROUND_DECIMALS = 6

_NUMERIC = ("animal_fraction", "finetune_fraction", "seed", "epochs", "wall_seconds", "train_loss", "val_loss",
            "test_loss", "test_accuracy", "test_iou_binary", "test_miou", "test_iou_pet", "test_iou_background",
            "test_iou_border", "val_miou", "test_iou_all_pet", "test_iou_all_background")


def clean(results: pd.DataFrame) -> pd.DataFrame:
    """A copy with every contract column present and numeric columns numeric (None -> NaN, fractions rounded)."""
    df = results.copy()
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    for col in ("key", "kind", "method", "parent_key", "preset", "status", "error"):
        df[col] = df[col].fillna("").astype(str) if col in df else ""
    for col in ("animal_fraction", "finetune_fraction"):
        df[col] = df[col].round(ROUND_DECIMALS)
    return df


def finetunes(results: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Finished fine-tune rows (optionally only those with a finite `metric`)."""
    df = clean(results)
    df = df[(df["kind"] == "finetune") & (df["status"] == "done")]
    if metric is not None:
        df = df[np.isfinite(df[metric])]
    return df


# ------------------------------------------------------------------------------------------- intervals

def t_intervals(values: np.ndarray, ci: float = 0.95,
                axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t CI over seeds (along `axis`) of an array of runs, NaN = missing run.

    Per column: mean ± t_{(1+ci)/2, n-1} · sd / √n over its n finite seeds (sd with ddof=1). A column with
    fewer than two finite seeds gets low = high = NaN. A 1-D array is one column of seeds. Any number of
    other axes is kept, so a batch of simulated sweeps is one call.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v, axis = v[:, None], 0
    v = np.moveaxis(v, axis, 0)
    finite = np.isfinite(v)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(finite, v, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
        dev = np.where(finite, v - mean, 0.0)
        sd = np.sqrt((dev ** 2).sum(axis=0) / np.maximum(n - 1, 1))
        half = stats.t.ppf(0.5 + ci / 2.0, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    low = np.where(n >= 2, mean - half, np.nan)
    high = np.where(n >= 2, mean + half, np.nan)
    return mean, low, high


def seed_slopes(values: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Least-squares slope of each seed's metric against the animal fraction, over that seed's finite runs.

    `values` is (..., seeds, fractions) with NaN = missing run; returns (..., seeds), NaN for a seed with fewer
    than two fractions.
    """
    v = np.asarray(values, dtype=float)
    x = np.broadcast_to(np.asarray(fractions, dtype=float), v.shape)
    ok = np.isfinite(v) & np.isfinite(x)
    cnt = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(ok, x, 0.0).sum(axis=-1) / cnt
        ym = np.where(ok, v, 0.0).sum(axis=-1) / cnt
        dx = np.where(ok, x - xm[..., None], 0.0)
        dy = np.where(ok, v - ym[..., None], 0.0)
        sxx = (dx ** 2).sum(axis=-1)
        slope = (dx * dy).sum(axis=-1) / sxx
    return np.where((cnt >= 2) & (sxx > 0), slope, np.nan)


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
    distinct = np.unique(np.round(x, ROUND_DECIMALS)).size
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


def aggregate(results: pd.DataFrame, metric: str, ci: float = 0.95) -> pd.DataFrame:
    """Per (method, finetune_fraction, animal_fraction): mean, ci_low, ci_high (Student-t over seeds), n_seeds
    over finished fine-tunes.

    Baselines have animal_fraction NaN. Sorted baselines first, then by fine-tune and animal fraction.
    """
    cols = ["method", "finetune_fraction", "animal_fraction", "mean", "ci_low", "ci_high", "n_seeds"]
    df = finetunes(results, metric)
    out = []
    for (method, ft), grp in df.groupby(["method", "finetune_fraction"], dropna=False, sort=False):
        if method not in FRACTION_METHODS:
            grp = grp.assign(animal_fraction=np.nan)
        values, fracs = seed_matrix(grp, metric)
        mean, low, high = t_intervals(values, ci)
        n = np.isfinite(values).sum(axis=0)
        for j, f in enumerate(fracs):
            out.append({"method": method, "finetune_fraction": ft, "animal_fraction": f, "mean": mean[j],
                        "ci_low": low[j], "ci_high": high[j], "n_seeds": int(n[j])})
    agg = pd.DataFrame(out, columns=cols)
    if agg.empty:
        return agg
    agg["_order"] = agg["method"].map(method_order)
    agg = agg.sort_values(["_order", "method", "finetune_fraction", "animal_fraction"], na_position="first")
    return agg.drop(columns="_order").reset_index(drop=True)


def fits(results: pd.DataFrame, metric: str) -> dict[float, CurveFit]:
    """fine-tune fraction -> fit of `metric` against animal fraction over the MAE fine-tunes' seed points."""
    df = finetunes(results, metric)
    df = df[df["method"] == "mae"]
    return {float(ft): fit_curve(g["animal_fraction"], g[metric])
            for ft, g in df.groupby("finetune_fraction", sort=True)}


def curve_lines(results: pd.DataFrame, metric: str = "test_iou_binary", ci: float = 0.95) -> pd.DataFrame:
    """The degradation curve as points of named lines: `metric` (seed mean) against animal fraction.

    One line per fine-tune fraction for the MAE fine-tunes, one point per animal fraction; one flat line per
    baseline and fine-tune fraction, at its seed mean, drawn at both ends of the MAE fractions' range (a
    baseline has no animal fraction). Columns: line, method, finetune_fraction, animal_fraction, `metric`,
    ci_low, ci_high, n_seeds. Empty when no finished fine-tune has `metric`.
    """
    cols = ["line", "method", "finetune_fraction", "animal_fraction", metric, "ci_low", "ci_high", "n_seeds"]
    agg = aggregate(results, metric, ci=ci)
    if agg.empty:
        return pd.DataFrame(columns=cols)
    mae = agg["method"] == "mae"
    span = agg.loc[mae, "animal_fraction"].dropna()
    if span.empty:  # baselines only: span the fractions the sweep has anywhere, else all of [0, 1]
        span = clean(results)["animal_fraction"].dropna()
    ends = (float(span.min()), float(span.max())) if not span.empty else (0.0, 1.0)
    rows = []
    for _, a in agg.iterrows():
        label = method_name(a["method"])
        point = {"line": f"{label}, fine-tune {a['finetune_fraction']:g}", "method": a["method"],
                 "finetune_fraction": a["finetune_fraction"], metric: a["mean"], "ci_low": a["ci_low"],
                 "ci_high": a["ci_high"], "n_seeds": a["n_seeds"]}
        xs = [a["animal_fraction"]] if a["method"] in FRACTION_METHODS else sorted(set(ends))
        rows += [{**point, "animal_fraction": x} for x in xs]
    return pd.DataFrame(rows, columns=cols)


def report_curves(results: pd.DataFrame, metrics=("test_iou_binary", "test_miou")) -> dict[str, pd.DataFrame]:
    """metric -> `curve_lines`, for each of `metrics` that some finished fine-tune has."""
    curves = {m: curve_lines(results, m) for m in metrics}
    return {m: c for m, c in curves.items() if not c.empty}


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
    if method == "probe":
        return f"Probe F={animal_fraction:.2f}"
    return method_name(method)


def paper_table(results: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Table 2: one row per method x fine-tune fraction, "mean ± half-CI" strings and numeric columns.

    Numeric columns are <metric>_mean and <metric>_half_ci (accuracy in percent). Rows: the largest fine-tune
    fraction first, then ResNet-18, ResNet-50, Supervised MAE, Finetuned F=1.00 ... F=0.00 (the paper's order).
    A single seed has no CI, so its cell shows the mean alone.
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
    table["_order"] = table["_method"].map(method_order)
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


def suggest_fractions(results: pd.DataFrame, metric: str = "test_iou_binary", k: int = 3) -> list[tuple[float, str]]:
    """Midpoints of adjacent grid fractions where another point would teach the most, best first.

    Each gap scores (a) the mean CI width of its two neighbours (where the curve is uncertain) plus (b) the mean
    |second difference| of the mean curve at its ends (where a straight line between them is wrong). Both are
    in the metric's units; with several fine-tune fractions the scores are averaged. A fraction already in the
    grid (any pre-train or fine-tune row) is never proposed.
    """
    df = clean(results)
    grid = set(np.round(df["animal_fraction"].dropna().to_numpy(dtype=float), 4))
    agg = aggregate(results, metric)
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
