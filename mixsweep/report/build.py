"""One sweep's report folder: results.parquet, results.md (the effect sentence, tables, fits, suggestions),
effect.json and the PNG plots."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mixsweep.report import analyze, effect, facets, plots
from mixsweep.files import write_text_atomic
from mixsweep.tables import write_table

# file name -> what draws it (results, histories, path)
# (results, histories, path, effect design) -> path
_PLOTS: dict[str, Callable] = {
    # The declared endpoint (the spec's effect: metric and method) first.
    "primary_vs_fraction.png": lambda r, h, p, d: plots.plot_metric_vs_fraction(
        r, (d or effect.EffectDesign()).metric, p, d, method=(d or effect.EffectDesign()).method),
    "iou_vs_fraction.png": lambda r, h, p, d: plots.plot_metric_vs_fraction(r, "test_iou_binary", p, d),
    "miou_vs_fraction.png": lambda r, h, p, d: plots.plot_metric_vs_fraction(r, "test_miou", p, d),
    "accuracy_vs_fraction.png": lambda r, h, p, d: plots.plot_metric_vs_fraction(r, "test_accuracy", p, d),
    "curves.png": lambda r, h, p, d: plots.plot_curves(r, h, p),
    "pretrain_loss.png": lambda r, h, p, d: plots.plot_pretrain_loss(r, h, p),
}

_KEY_METRICS = ("train_loss", "val_loss", "test_loss", "test_iou_binary", "test_miou", "test_accuracy")


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{v:.4g}"
    # Keep one row per line: pipes and newlines in error text would break the table.
    return str(v).replace("|", "\\|").replace("\n", " ").strip()


def markdown_table(df: pd.DataFrame) -> str:
    """GitHub markdown for a frame (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _fracs(values) -> str:
    vals = sorted({float(v) for v in values if np.isfinite(v)})
    return ", ".join(f"{v:g}" for v in vals) if vals else "none"


def _grid_section(df: pd.DataFrame) -> list[str]:
    pre = df[df["kind"] == "pretrain"]
    ft = df[df["kind"] == "finetune"]
    counts = df.groupby(["kind", "status"]).size()
    return [
        "## Grid covered", "",
        f"- animal fractions (pre-training): {_fracs(pre['animal_fraction'])}",
        f"- animal fractions (fine-tuned): {_fracs(ft.loc[ft['method'] == 'mae', 'animal_fraction'])}",
        f"- fine-tune fractions: {_fracs(ft['finetune_fraction'])}",
        f"- seeds: {', '.join(str(int(s)) for s in sorted(df['seed'].dropna().unique())) or 'none'}",
        f"- methods: {', '.join(sorted(set(df['method']) - {''})) or 'none'}",
        f"- presets: {', '.join(sorted(set(df['preset']) - {''})) or 'none'}",
        "- stages: " + (", ".join(f"{k} {s}: {n}" for (k, s), n in counts.items()) or "none"),
        "",
    ]


def _keys_table(df: pd.DataFrame, axes=()) -> pd.DataFrame:
    cols = ["key", "kind", "method", "animal_fraction", "finetune_fraction", "seed", *axes, "status", "epochs",
            "wall_seconds", *_KEY_METRICS, "error"]
    out = df.sort_values(["kind", "method", "finetune_fraction", "animal_fraction", "seed"],
                         ascending=[False, True, True, True, True], na_position="first")[cols].copy()
    out["seed"] = out["seed"].map(lambda s: "" if pd.isna(s) else str(int(s)))
    out["epochs"] = out["epochs"].map(lambda s: "" if pd.isna(s) else str(int(s)))
    out["error"] = out["error"].map(lambda e: e if len(e) <= 120 else e[:117] + "...")
    return out.rename(columns={"animal_fraction": "F", "finetune_fraction": "fine-tune"})


def _jsonable(v):
    """NaN / inf -> None and numpy scalars -> Python, recursively, so json.dumps(allow_nan=False) accepts it."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def write_effect(entries: list[dict], path: Path | str) -> Path:
    """effect.json: effect.effect's entries as a JSON list, NaN written as null."""
    return write_text_atomic(Path(path), json.dumps(_jsonable(entries), indent=2, allow_nan=False) + "\n")


def _ci_text(mean: float, ci: list[float]) -> str:
    if not np.isfinite(mean):
        return "–"
    if not all(np.isfinite(c) for c in ci):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} ({ci[0]:+.3f} to {ci[1]:+.3f})"


def _p(v) -> str:
    return f"{v:.2g}" if v is not None and np.isfinite(v) else "–"


def _effect_section(entries: list[dict]) -> list[str]:
    rows = []
    for e in entries:
        if e["role"] == "transfer":
            continue
        lo, hi = e["fractions"]
        rows.append({"test": e["role"], "metric": analyze.METRICS.get(e["metric"], e["metric"]),
                     "fine-tune": e["finetune_fraction"], "F": f"{lo:g} → {hi:g}",
                     "high − low (95% CI)": _ci_text(e["diff"], e["ci"]), "p": _p(e["p"]),
                     "p (Holm)": _p(e.get("p_holm")),
                     "slope per unit F (95% CI)": _ci_text(e["slope"], e["slope_ci"]),
                     "seeds": str(e["n_seeds"]), "diverged": str(e.get("n_diverged", 0)),
                     "effect": f"{e['effect']}: {e['direction']}" if e["direction"] else e["effect"]})
    primary = next((e for e in entries if e["role"] == "primary"), None)
    declared = (f"the primary endpoint was declared before the run: {primary['declared']}, alpha "
                f"{primary['alpha']:g}" if primary else "no primary endpoint")
    methods = sorted({e["method"] for e in entries if e["role"] != "transfer"})
    what = " and ".join({"mae": "end-to-end fine-tunes", "probe": "frozen-encoder probes"}.get(m, m) for m in methods)
    lines = ["## Effect of the animal fraction", "",
             f"Over the pre-trained MAEs' {what or 'fine-tunes'}, paired by seed: per seed the metric at the high minus "
             "the low animal fraction, "
             f"then a paired t-test over seeds; {declared}. Only the primary test gives the verdict; the others are "
             "secondary, two-sided, with Holm-adjusted p-values. The slope (per seed over its fractions, then over "
             "seeds) is descriptive. For the loss, lower is better.", ""]
    lines += [markdown_table(pd.DataFrame(rows)) if rows else "No finished stages to compare.", ""]
    for e in entries:
        if e["role"] == "transfer":
            lines += [effect.transfer_sentence(e), ""]
    return lines


def _trivial_answers(results: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """The IoU of predicting every pixel background / pet, where the results carry those metrics."""
    ft = df[(df["kind"] == "finetune") & (df["status"] == "done")]
    parts = []
    for col, what in (("test_iou_all_background", "All-background"), ("test_iou_all_pet", "all-pet")):
        vals = ft[col].to_numpy(dtype=float) if col in results else np.empty(0)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo, hi = float(vals.min()), float(vals.max())
            value = f"{lo:.3f}" if hi - lo < 5e-4 else f"{lo:.3f}–{hi:.3f}"
            parts.append(f"{what} answer: IoU {value}")
    if not parts:
        return []
    parts[0] = parts[0][0].upper() + parts[0][1:]
    return ["; ".join(parts) + " (test set).", ""]


def _schedule(results: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    if "finetune_schedule" not in results:
        return []
    col = df["finetune_schedule"].fillna("").astype(str)
    values = sorted(set(col[df["kind"] == "finetune"]) - {""})
    if not values:
        return []
    return [f"Fine-tune schedule: {', '.join(values)}{' (rows differ)' if len(values) > 1 else ''}.", ""]


def made_with(results: pd.DataFrame) -> list[str]:
    """One line per distinct (versions, device) the finished stages were trained with, most stages first:
    `36 stages: mixsweep 0.1.0 (commit 2ff2fc1), code version 2, torch 2.14.1, ray 2.60.0, timm 1.0.31 on cpu (...)`.
    Stages from before these were recorded count as `versions not recorded`."""
    if results.empty:
        return []
    done = results[results["status"] == "done"] if "status" in results else results
    fields = ["mixsweep_version", "git_commit", "code_version", "torch_version", "ray_version", "timm_version",
              "device"]
    rows = done.reindex(columns=fields).astype(object).where(done.reindex(columns=fields).notna(), None)
    counts: dict[tuple, int] = {}
    for values in rows.itertuples(index=False, name=None):
        counts[values] = counts.get(values, 0) + 1
    lines = []
    for values, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        v = dict(zip(fields, values))
        if v["mixsweep_version"] is None:
            lines.append(f"{n} stage(s): versions not recorded")
            continue
        commit = f" (commit {v['git_commit']})" if v["git_commit"] else ""
        lines.append(f"{n} stage(s): mixsweep {v['mixsweep_version']}{commit}, code version {v['code_version']}, "
                     f"torch {v['torch_version']}, ray {v['ray_version']}, timm {v['timm_version']} on {v['device']}")
    return lines


def write_report(results: pd.DataFrame, histories: dict[str, list[dict]], out_dir: Path | str,
                 title: str, design: effect.EffectDesign | None = None, axes=(), note: str = "",
                 entries: list[dict] | None = None) -> dict[str, Path]:
    """Write results.parquet, results.md, effect.json and the plots under `out_dir`; returns file name -> path.

    results.md opens with one sentence saying whether the animal fraction's effect on test IoU (binary) is
    there (effect.effect_sentence); effect.json holds the numbers behind it. A plot with nothing to draw (say,
    no fine-tunes yet) is left out and results.md says why. With recipe `axes` (result columns such as
    "pretrain.epochs"), the report is per axis value: see write_axes_report. `entries`: the effect entries of
    these results when the caller has them (facets.effect_by_axes'), so that they are worked out once.
    """
    axes = [a for a in axes if a in results.columns]
    if axes:
        return write_axes_report(results, histories, out_dir, title, design, axes, entries)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["results.parquet"] = write_table(pa.Table.from_pandas(results, preserve_index=False),
                                           out_dir / "results.parquet")
    df = analyze.clean(results)
    entries = effect.effect(results, design) if entries is None else entries
    paths["effect.json"] = write_effect(entries, out_dir / "effect.json")

    plot_lines = []
    for name, draw in _PLOTS.items():
        target = out_dir / name
        try:
            paths[name] = draw(results, histories, target, design)
            plot_lines.append(f"![{name}]({name})")
        except plots.NothingToPlot as e:
            target.unlink(missing_ok=True)      # never leave a stale plot from an earlier report
            plot_lines.append(f"- {name}: skipped ({e})")

    md = [f"# {title}", "", effect.effect_sentence(entries), ""] + ([note, ""] if note else [])
    md += _grid_section(df)

    table = analyze.paper_table(results)
    md += ["## Test results (paper Table 2 form)", "",
           "Mean over seeds ± half the 95% Student-t CI over seeds (no ± with a single seed); accuracy in %.", ""]
    md += _schedule(results, df)
    md += _trivial_answers(results, df)
    if table.empty:
        md += ["No finished fine-tunes yet.", ""]
    else:
        shown = table[["method", "finetune_fraction", "n_seeds", "test loss", "IoU (binary)", "accuracy (%)",
                       "mIoU"]].rename(columns={"finetune_fraction": "fine-tune", "n_seeds": "seeds"})
        md += [markdown_table(shown), ""]

    md += _effect_section(entries)

    md += ["## Fits against animal fraction", "",
           "Least squares over every (fraction, seed) point: quadratic with >= 4 fractions, linear with 2-3.", ""]
    fit_lines = []
    for metric, label in analyze.METRICS.items():
        for ft, fit in analyze.fits(results, metric).items():
            fit_lines.append(f"- {label}, fine-tune {ft:g}: {fit.describe()} (rmse {fit.rmse:.3g}, "
                             f"{fit.n_points} points)")
    md += (fit_lines or ["No MAE fine-tunes to fit."]) + [""]

    md += ["## Suggested next animal fractions", ""]
    picks = analyze.suggest_fractions(results)
    md += ([f"- {f:g}: {reason}" for f, reason in picks] or ["Nothing to suggest (fewer than two fractions)."])
    md += ["", "## Plots", "", *plot_lines, ""]

    md += ["## Made with", "", *[f"- {line}" for line in made_with(results) or ["no finished stage"]], ""]
    md += ["## Stages", "", markdown_table(_keys_table(df)) if not df.empty else "No stages.", ""]
    paths["results.md"] = write_text_atomic(out_dir / "results.md", "\n".join(md))
    return paths


def write_axes_report(results: pd.DataFrame, histories: dict[str, list[dict]], out_dir: Path | str, title: str,
                      design: effect.EffectDesign | None, axes: list[str],
                      entries: list[dict] | None = None) -> dict[str, Path]:
    """The report of a sweep with recipe axes: at the top, the declared test once per value of the axes that
    shape it (one Holm-adjusted family: facets.effect_by_axes), by_axis.png (the endpoint and the degradation
    curve, one line per value) and the stages with their axis columns; under facets/<values>/, a whole report
    (tables, fits, plots) of each combination of axis values."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["results.parquet"] = write_table(pa.Table.from_pandas(results, preserve_index=False),
                                           out_dir / "results.parquet")
    entries = facets.effect_by_axes(results, design, axes) if entries is None else entries
    paths["effect.json"] = write_effect(entries, out_dir / "effect.json")
    df = analyze.clean(results)
    md = [f"# {title}", "", facets.family_sentence(entries), ""]
    md += _grid_section(df)
    md += ["## Recipe axes", ""]
    md += [f"- {a}: {', '.join(facets.describe({a: v}).split('=', 1)[1] for v in facets.axis_values(results, a))}"
           for a in axes]
    md += ["", "The declared test runs once per value of the axes that shape its stages; those tests are one family, "
           "judged on Holm-adjusted p-values, as are the secondary and the transfer tests across values.", ""]
    table = facets.axes_table(entries)
    md += [markdown_table(table) if not table.empty else "No finished stage of the declared method yet.", ""]
    try:
        paths["by_axis.png"] = plots.plot_by_axis(results, axes, out_dir / "by_axis.png", design, entries)
        md += ["![by_axis.png](by_axis.png)", ""]
    except plots.NothingToPlot as e:
        (out_dir / "by_axis.png").unlink(missing_ok=True)
        md += [f"- by_axis.png: skipped ({e})", ""]
    md += ["## Per axis value", "", "Each value's whole report (tables, fits, every plot; its own tests are not "
           "adjusted for the other values):", ""]
    root = out_dir / "facets"
    if root.is_dir():  # values dropped from the spec leave no stale report behind
        shutil.rmtree(root)
    for values, rows in facets.facets(results, axes):
        name = facets.slug(values)
        keys = set(rows["key"])
        sub = write_report(rows, {k: h for k, h in histories.items() if k in keys}, root / name,
                           title=f"{title}: {facets.describe(values)}", design=design,
                           note=f"One value of the recipe axes ({facets.describe(values)}): its tests are not adjusted "
                                "for the other values; the verdict across them is in ../../results.md.")
        paths[f"facets/{name}/results.md"] = sub["results.md"]
        md.append(f"- [{facets.describe(values)}](facets/{name}/results.md): {len(rows)} stages")
    md += ["", "## Made with", "", *[f"- {line}" for line in made_with(results) or ["no finished stage"]], ""]
    md += ["## Stages", "", markdown_table(_keys_table(df.assign(**{a: results[a].map(_cell) for a in axes}), axes))
           if not df.empty else "No stages.", ""]
    paths["results.md"] = write_text_atomic(out_dir / "results.md", "\n".join(md))
    return paths
