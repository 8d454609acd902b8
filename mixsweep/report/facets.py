"""A sweep with recipe axes (`pretrain.epochs: [75, 150]`), reported per axis value.

Each combination of axis values is a facet: the stages at those values, plus the stages no axis shapes (a
pre-training under a fine-tune axis, a random-weights baseline under a pre-training axis). The declared effect
test runs once per facet of the axes that shape its method; those tests are one family, Holm-adjusted (the
rule the effect section uses for its secondary tests), and so are the secondary and transfer tests across
facets. Reads only the results' columns, as the rest of mixsweep.report does.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd

from mixsweep.report import analyze, effect as fx


def _hashable(v):
    return tuple(v) if isinstance(v, (list, np.ndarray)) else v


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def axis_values(results: pd.DataFrame, axis: str) -> list:
    """The values an axis takes in the results, in order of first appearance."""
    out = []
    for v in results[axis] if axis in results else []:
        v = _hashable(v)
        if not _missing(v) and v not in out:
            out.append(v)
    return out


def shaping(results: pd.DataFrame, axes, method: str) -> list[str]:
    """The axes that shape `method`'s stages: those with a value in its rows."""
    rows = results[results["method"] == method] if "method" in results else results.iloc[:0]
    return [a for a in axes if a in results and any(not _missing(v) for v in rows[a])]


def facets(results: pd.DataFrame, axes) -> list[tuple[dict, pd.DataFrame]]:
    """(axis values, the rows of that facet) for every combination of the axes' values; a row with no value for
    an axis (it does not shape that row) belongs to every facet of it."""
    axes = [a for a in axes if a in results]
    if not axes:
        return [({}, results)]
    out = []
    for combo in itertools.product(*(axis_values(results, a) for a in axes)):
        keep = np.ones(len(results), bool)
        for a, v in zip(axes, combo):
            col = [_hashable(x) for x in results[a]]
            keep &= np.array([_missing(x) or x == v for x in col], bool)
        out.append((dict(zip(axes, combo)), results[keep]))
    return out


def describe(values: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "all"


def slug(values: dict) -> str:
    """A folder name for a facet: `pretrain.epochs=75_finetune.blr=0.001`."""
    return re.sub(r"[^A-Za-z0-9.=_,-]+", "_", describe(values).replace(" ", "_"))


def effect_by_axes(results: pd.DataFrame, design: fx.EffectDesign | None, axes) -> list[dict]:
    """`effect.effect` once per facet of the axes that shape the declared method, each entry with its `axes`.
    The primary tests form one family: `p_holm` (Holm over the facets) decides each facet's verdict; the
    secondary tests are Holm-adjusted over every facet, and so are the transfer tests. Without axes, the
    plain `effect.effect`."""
    design = design or fx.EffectDesign()
    axes = shaping(results, axes, design.method)
    if not axes:
        return fx.effect(results, design)
    out = []
    for values, rows in facets(results, axes):
        for e in fx.effect(rows, design):
            out.append({**e, "axes": values})
    for role in ("primary", "secondary", "transfer"):
        family = [e for e in out if e["role"] == role]
        for e, adjusted in zip(family, fx.holm([e["p"] for e in family])):
            e["p_holm"] = adjusted
            if role == "transfer":
                detected = adjusted == adjusted and adjusted < design.alpha
                e["effect"] = "detected" if detected else "not detected"
                e["direction"] = e["direction"] if detected else None
            else:
                fx.judge(e, adjusted, design.alpha)
    return out


def family_sentence(entries: list[dict]) -> str:
    """The verdict per axis value: one clause per facet's primary test, judged on its Holm-adjusted p."""
    primary = [e for e in entries if e["role"] == "primary"]
    if not primary:
        return fx.effect_sentence(entries)
    e = primary[0]
    declared = e.get("declared", "two-sided")
    head = (f"Effect of the animal fraction on test {analyze.METRICS.get(e['metric'], e['metric'])} (primary endpoint, "
            f"{'declared ' + declared if declared != 'two-sided' else 'two-sided'}, alpha {fx.num(e['alpha']):g}; "
            f"one test per recipe axis value, {len(primary)} in all, Holm-adjusted)")
    clauses = [f"{describe(x.get('axes', {}))}: {fx.effect_clause(x)}" for x in primary]
    hits = sum(x["effect"] == "detected" for x in primary)
    return f"{head}: {hits} of {len(primary)} detected. " + " ".join(f"{c}." for c in clauses)


def axes_table(entries: list[dict]) -> pd.DataFrame:
    """One row per facet's primary test: the axis values, the difference with its CI, p and Holm's p."""
    rows = []
    for e in entries:
        if e["role"] != "primary":
            continue
        rows.append({**{k: v for k, v in e.get("axes", {}).items()},
                     "high − low": e["diff"], "ci_low": e["ci"][0], "ci_high": e["ci"][1], "p": e["p"],
                     "p (Holm)": e.get("p_holm"), "seeds": e["n_seeds"], "effect": e["effect"]})
    return pd.DataFrame(rows)


def facet_curves(results: pd.DataFrame, axes, metrics=("test_iou_binary", "test_miou")) -> dict[str, pd.DataFrame]:
    """`analyze.report_curves` per facet, each line named with its axis values (for the W&B report run)."""
    out: dict[str, list[pd.DataFrame]] = {}
    for values, rows in facets(results, axes):
        for metric, curve in analyze.report_curves(rows, metrics).items():
            out.setdefault(metric, []).append(curve.assign(line=[f"{describe(values)}: {x}" for x in curve["line"]]))
    return {m: pd.concat(c, ignore_index=True) for m, c in out.items()}
