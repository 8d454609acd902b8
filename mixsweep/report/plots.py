"""Sweep plots: a metric against the animal fraction, learning curves (paper Figs 3 and 5), pre-training loss.

Drawn on matplotlib's object API with the Agg canvas, never pyplot, so no global state changes. A plot with
nothing to draw raises NothingToPlot, which the report builder turns into a line of text.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mixsweep.methods import FRACTION_METHODS, METHODS, PROBE_METHODS, label
from mixsweep.report.analyze import METRICS, aggregate, clean, finetunes, fits, seed_matrix, t_intervals
from mixsweep.report import facets
from mixsweep.report.effect import EffectDesign, effect, effect_sentence

DPI = 110


class NothingToPlot(ValueError):
    """The results hold nothing this plot can show."""


def _figure(cols: int, width: float = 5.0, height: float = 3.8) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(cols * width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(1, cols))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _label(metric: str) -> str:
    return METRICS.get(metric, metric.replace("_", " "))


def plot_sentence(results: pd.DataFrame, metric: str, method: str, design: EffectDesign | None) -> str:
    """What a plot of `metric` of `method`'s stages says: the declared test when it is the endpoint, else the
    same design run two-sided on this metric and method, named as not the declared endpoint."""
    declared = design or EffectDesign()
    if (declared.metric, declared.method) == (metric, method):
        return effect_sentence(effect(results, declared), metric, secondary=False)
    other = dataclasses.replace(declared, metric=metric, method=method, direction="two-sided")
    return effect_sentence(effect(results, other), metric, secondary=False, role="not the declared endpoint")


def _mean_and_band(ax, agg: pd.DataFrame, color, label: str, alpha: float) -> None:
    """The seed mean against the animal fraction, with its 95 % CI as a band where it has one."""
    ax.plot(agg["animal_fraction"], agg["mean"], "o-", color=color, label=label)
    band = agg.dropna(subset=["ci_low", "ci_high"])
    if not band.empty:
        ax.fill_between(band["animal_fraction"], band["ci_low"], band["ci_high"], color=color, alpha=alpha,
                        linewidth=0)


def plot_metric_vs_fraction(results: pd.DataFrame, metric: str, path: str | Path,
                            design: EffectDesign | None = None, method: str = "mae") -> Path:
    """Test `metric` of `method`'s stages (end-to-end fine-tunes "mae", or frozen-encoder probes "probe") against
    animal fraction: per fine-tune fraction the seed mean with its 95% Student-t CI band over seeds, the fitted
    curve dashed (fine-tunes), and the baselines of that kind at that fine-tune fraction as horizontal lines;
    the effect sentence (effect.effect_sentence) as the subtitle, naming whether it is the declared test."""
    agg = aggregate(results, metric)
    mae = agg[agg["method"] == method] if not agg.empty else agg
    what = "probes" if method == "probe" else "MAE fine-tunes"
    if mae.empty:
        raise NothingToPlot(f"no finished {what} with {metric}")
    curve_fits = fits(results, metric) if method == "mae" else {}
    subtitle = textwrap.fill(plot_sentence(results, metric, method, design), width=110)
    fig, (ax,) = _figure(1, width=6.5, height=4.5 + 0.12 * subtitle.count("\n"))
    cmap = colormaps["tab10"]
    lo_x, hi_x = float(mae["animal_fraction"].min()), float(mae["animal_fraction"].max())
    for i, (ft, g) in enumerate(mae.groupby("finetune_fraction", sort=True)):
        color = cmap(i % 10)
        g = g.sort_values("animal_fraction")
        _mean_and_band(ax, g, color, f"{'probe' if method == 'probe' else 'fine-tune'} {ft:g} "
                                     f"(n={g['n_seeds'].max()})", alpha=0.2)
        fit = curve_fits.get(float(ft))
        if fit is not None and fit.kind != "constant":
            xs = np.linspace(lo_x, hi_x, 101)
            ax.plot(xs, fit.predict(xs), "--", color=color, linewidth=1, label=f"{fit.kind} fit, fine-tune {ft:g}")
        base = agg[~agg["method"].isin(FRACTION_METHODS) & np.isclose(agg["finetune_fraction"], ft)]
        probes = base["method"].isin(PROBE_METHODS)  # a probe's baseline is a probe, a fine-tune's a fine-tune
        base = base[probes if method == "probe" else ~probes]
        for _, b in base.iterrows():
            style = dict(METHODS[b["method"]].style if b["method"] in METHODS else dict(color="0.4", linestyle=":"))
            # Colour ties a baseline to its fine-tune fraction when there are several.
            if mae["finetune_fraction"].nunique() > 1:
                style["color"] = color
            ax.axhline(b["mean"], linewidth=1.5, **style,
                       label=f"{label(b['method'])}, fine-tune {ft:g}")
    ax.set_xlabel("animal fraction of pre-training data F")
    ax.set_ylabel(f"test {_label(metric)}")
    kind = "frozen-encoder probe" if method == "probe" else "end-to-end fine-tune"
    fig.suptitle(f"test {_label(metric)} vs animal fraction, {kind} (mean, 95% t-interval over seeds)",
                 fontsize=10)
    ax.set_title(subtitle, fontsize=6, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _mean_history(keys: list[str], histories: dict[str, list[dict]], field: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and the per-epoch mean of `field` over runs (runs of different length: mean of those present)."""
    frames = []
    for k in keys:
        rows = [r for r in histories.get(k, []) if r.get(field) is not None]
        if rows:
            h = pd.DataFrame(rows)
            if "epoch" not in h:
                h["epoch"] = np.arange(1, len(h) + 1)
            frames.append(h[["epoch", field]].astype(float))
    if not frames:
        return np.empty(0), np.empty(0)
    mean = pd.concat(frames).groupby("epoch")[field].mean()
    return mean.index.to_numpy(dtype=float), mean.to_numpy(dtype=float)


def plot_curves(results: pd.DataFrame, histories: dict[str, list[dict]], path: str | Path,
                finetune_fraction: float | None = None) -> Path:
    """Train loss, val loss and val IoU (binary) per epoch, mean over seeds, one line per animal fraction plus
    the baselines, at one fine-tune fraction (default: the largest)."""
    df = finetunes(results)
    df = df[df["key"].isin([k for k, h in histories.items() if h])]
    if df.empty:
        raise NothingToPlot("no fine-tune histories")
    ft = float(df["finetune_fraction"].max()) if finetune_fraction is None else float(finetune_fraction)
    df = df[np.isclose(df["finetune_fraction"], ft)]
    if df.empty:
        raise NothingToPlot(f"no fine-tune histories at fine-tune fraction {ft:g}")
    panels = (("train_loss", "train loss"), ("val_loss", "val loss"), ("val_iou_binary", "val IoU (binary)"))
    fig, axes = _figure(3, width=4.5)
    mae = df[df["method"] == "mae"]
    fracs = sorted(mae["animal_fraction"].dropna().unique())
    cmap = colormaps["viridis"]
    groups: list[tuple[str, list[str], dict]] = []
    for i, f in enumerate(fracs):
        color = cmap(i / max(len(fracs) - 1, 1))
        groups.append((f"F={f:g}", mae.loc[mae["animal_fraction"] == f, "key"].tolist(), dict(color=color)))
    for method in (m for m in METHODS.values() if m.style):
        keys = df.loc[df["method"] == method.name, "key"].tolist()
        if keys:
            groups.append((method.label, keys, dict(color=method.style["color"], linestyle="--")))
    drawn = False
    for ax, (field, title) in zip(axes, panels):
        for label, keys, style in groups:
            ep, y = _mean_history(keys, histories, field)
            if ep.size:
                ax.plot(ep, y, linewidth=1.3, label=f"{label} (n={len(keys)})", **style)
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if not drawn:
        raise NothingToPlot("fine-tune histories hold no train_loss, val_loss or val_iou_binary")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"fine-tuning at fine-tune fraction {ft:g} (mean over seeds)", fontsize=11)
    return _save(fig, path)


def plot_pretrain_loss(results: pd.DataFrame, histories: dict[str, list[dict]], path: str | Path) -> Path:
    """Left: final pre-training val loss against animal fraction with a 95% CI over seeds. Right: val loss
    curves per animal fraction (mean over seeds)."""
    df = clean(results)
    df = df[(df["kind"] == "pretrain") & (df["status"] == "done") & np.isfinite(df["val_loss"])]
    if df.empty:
        raise NothingToPlot("no finished pre-training runs with val_loss")
    values, fracs = seed_matrix(df, "val_loss")
    mean, low, high = t_intervals(values)
    fig, (left, right) = _figure(2)
    left.plot(fracs, mean, "o-", color="C0", label="mean over seeds")
    ok = np.isfinite(low)
    if ok.any():
        left.fill_between(fracs[ok], low[ok], high[ok], color="C0", alpha=0.2, linewidth=0, label="95% CI")
    left.set_xlabel("animal fraction of pre-training data F")
    left.set_ylabel("final val loss (MAE reconstruction)")
    left.set_title("pre-training val loss", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    cmap = colormaps["viridis"]
    for i, f in enumerate(fracs):
        ep, y = _mean_history(df.loc[df["animal_fraction"] == f, "key"].tolist(), histories, "val_loss")
        if ep.size:
            right.plot(ep, y, color=cmap(i / max(len(fracs) - 1, 1)), linewidth=1.3, label=f"F={f:g}")
    right.set_xlabel("epoch")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("val loss")
    right.set_title("val loss per epoch (mean over seeds)", fontsize=10)
    right.grid(alpha=0.3)
    if right.lines:
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, "no histories", ha="center", va="center", transform=right.transAxes)
    return _save(fig, path)


def plot_by_axis(results: pd.DataFrame, axes, path: str | Path, design: EffectDesign | None = None,
                 entries: list[dict] | None = None) -> Path:
    """The declared endpoint against animal fraction, one line (mean, 95% t-band over seeds) per value of the
    axes that shape it; beside it the end-to-end fine-tunes' test IoU (the paper's degradation curve) per value
    of the axes that shape them, at the largest fine-tune size. Titled with the verdict of `entries`
    (facets.effect_by_axes', worked out here when not given)."""
    design = design or EffectDesign()
    panels = [(design.method, design.metric, design.finetune_fraction)]
    if (design.method, design.metric) != ("mae", "test_iou_binary"):
        panels.append(("mae", "test_iou_binary", None))
    drawn = []
    for method, metric, ft in panels:
        lines = []
        for values, rows in facets.facets(results, facets.shaping(results, axes, method)):
            agg = aggregate(rows, metric)
            agg = agg[agg["method"] == method] if not agg.empty else agg
            if agg.empty:
                continue
            at = ft if ft is not None else float(agg["finetune_fraction"].max())
            agg = agg[np.isclose(agg["finetune_fraction"], at)].sort_values("animal_fraction")
            if not agg.empty:
                lines.append((facets.describe(values), agg, at))
        if lines:
            drawn.append((method, metric, lines))
    if not drawn:
        raise NothingToPlot("no finished fine-tunes or probes at any recipe axis value")
    entries = facets.effect_by_axes(results, design, axes) if entries is None else entries
    sentence = textwrap.fill(facets.family_sentence(entries), width=70 * len(drawn))
    fig, ax_row = _figure(len(drawn), width=6.0, height=4.6 + 0.12 * sentence.count("\n"))
    cmap = colormaps["tab10"]
    for ax, (method, metric, lines) in zip(ax_row, drawn):
        for i, (name, agg, at) in enumerate(lines):
            color = cmap(i % 10)
            _mean_and_band(ax, agg, color, f"{name} (n={int(agg['n_seeds'].max())})", alpha=0.15)
        kind = "frozen-encoder probe" if method == "probe" else "end-to-end fine-tune"
        declared = "declared endpoint" if (method, metric) == (design.method, design.metric) else "not the declared endpoint"
        ax.set_title(f"{kind}, test {_label(metric)} at fine-tune size {lines[0][2]:g} ({declared})", fontsize=8)
        ax.set_xlabel("animal fraction of pre-training data F")
        ax.set_ylabel(f"test {_label(metric)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(sentence, fontsize=6.5)
    return _save(fig, path)
