"""One spec's results, read back from the store, and what is made of them: the report (`mixsweep report`:
results.md, plots, effect.json, a W&B report run) and the next fractions to run (`mixsweep suggest`).

The numbers, plots and files themselves come from `mixsweep.report`, which never reads the store.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mixsweep.errors import MixsweepError
from mixsweep.sweep.plan import build_plan, recorded_rows
from mixsweep.sweep.store import Store


def missing_data_roots(spec) -> list[str]:
    """The spec's real-data roots that do not exist on this machine (`key: path`)."""
    d = spec.data
    if d.synth is not None:
        return []
    keys = ("coco_annotations", "coco_images", "coco_val_annotations", "coco_val_images", "pets_root")
    return [f"data.{k}: {getattr(d, k)}" for k in keys if getattr(d, k) is not None and not getattr(d, k).exists()]


def spec_rows(spec, store: Store) -> list[dict]:
    """The spec's stages (key, grid values, recipe axis values): as `mixsweep run` recorded them in the store (no
    data needed), else planned from the data roots."""
    rows = recorded_rows(spec, store)
    if rows is not None:
        return rows
    missing = missing_data_roots(spec)
    if missing:
        raise MixsweepError(f"{spec.name}: {missing[0]} does not exist, and {store.root} has no record of this "
                            "spec's stages (`mixsweep run` writes it; the grid, data roots and recipes must match)")
    return [s.row() for s in build_plan(spec, store).stages]


def with_axis_columns(frame, rows: list[dict], axes: list[str]):
    """`frame` with one column per recipe axis of this spec, from the spec's own stage rows: a stage another
    spec ran first carries that spec's axes in its result, not necessarily these. None where an axis does not
    shape a stage (a baseline has no pretrain.* value)."""
    frame = frame.drop(columns=[c for c in frame.columns if "." in c])
    values = {r["key"]: r for r in rows}
    for name in axes:
        frame[name] = [values.get(k, {}).get(name) for k in frame["key"]] if len(frame) else []
    return frame


def spec_results(spec):
    """(results frame, histories, store, keys) of this spec's stages, from the store alone when `mixsweep run`
    recorded the spec's stages there; no finished stage is an error."""
    store = Store(spec.storage, spec.mirror)
    if not store.root.is_dir():
        raise MixsweepError(f"storage: {store.root} does not exist (run `mixsweep run` first, or point storage at "
                            "a copy of the store)")
    if store.mirror and store.writable():  # a read-only store reports what it holds
        store.pull()
    rows = spec_rows(spec, store)
    keys = [r["key"] for r in rows]
    frame = with_axis_columns(store.results_frame(keys), rows, [a.name for a in spec.recipe_axes])
    histories = {k: store.history(k) for k in keys if store.is_done(k)}
    if frame.empty:
        raise MixsweepError(f"{spec.name}: no finished stage in {store.root} yet (run `mixsweep run` first)")
    return frame, histories, store, keys


def results_table(spec):
    """The spec's stages as the store has them: one row per finished or failed stage (`mixsweep results`),
    and the number of stages still pending."""
    frame, _, _, keys = spec_results(spec)
    return frame, len(keys) - len(frame)


def report_folder(spec, store: Store, out: Path | str | None = None, console: Console | None = None) -> Path:
    """`out`, else <storage>/reports/<spec name>, else (a read-only store) ./mixsweep-reports/<spec name>."""
    if out is not None:
        return Path(out)
    if store.writable():
        return store.root / "reports" / spec.name
    folder = Path.cwd() / "mixsweep-reports" / spec.name
    (console or Console()).print(f"note: {store.root} is read-only; the report goes to {folder}", markup=False,
                                 highlight=False, soft_wrap=True)
    return folder


def make_report(spec, console: Console | None = None, out: Path | str | None = None) -> dict[str, Path]:
    """Write the report under `out` (default <storage>/reports/<spec name>/, or ./mixsweep-reports/<spec name>
    when the store is read-only) and log it to W&B as one report run (results table, PNGs, the degradation
    curve as W&B line plots, the effect numbers in its summary); its offline W&B run goes under the store, or
    beside the report when the store is read-only.

    Returns file name -> path (results.md, effect.json, results.parquet, the PNGs) and prints the effect
    sentence to the terminal.
    """
    from mixsweep import tracking
    from mixsweep.report.build import made_with, write_report
    from mixsweep.report.facets import facet_curves

    results, histories, store, _ = spec_results(spec)
    console = console or Console()
    out = report_folder(spec, store, out, console)
    axes = [a.name for a in spec.recipe_axes]
    entries = spec_effect(spec, results)
    paths = write_report(results, histories, out, title=f"mixsweep report: {spec.name}", design=spec.effect.design(),
                         axes=axes, entries=entries)
    sentence = effect_sentence_of(entries)
    console.print(sentence, markup=False, highlight=False, soft_wrap=True)
    for line in made_with(results):
        console.print(f"made with: {line}", markup=False, highlight=False, soft_wrap=True)
    tracker = tracking.Tracker.of(spec.wandb, root=store.root if out.is_relative_to(store.root) else out)
    tracking.log_report(tracker, group=spec.name, table=results,
                        plots=[p for p in paths.values() if Path(p).suffix == ".png"],
                        effects=entries, sentence=sentence, curves=facet_curves(results, axes))
    return paths


def spec_effect(spec, results=None) -> list[dict]:
    """The spec's declared effect test with its secondary and transfer tests (effect.json's entries): once per
    recipe axis value, Holm-adjusted across values, when the spec has axes."""
    from mixsweep.report.facets import effect_by_axes

    results = spec_results(spec)[0] if results is None else results
    return effect_by_axes(results, spec.effect.design(), [a.name for a in spec.recipe_axes])


def effect_sentence_of(entries: list[dict]) -> str:
    from mixsweep.report.effect import effect_sentence
    from mixsweep.report.facets import family_sentence

    return family_sentence(entries) if any("axes" in e for e in entries) else effect_sentence(entries)


def suggest_snippet(spec, k: int = 3) -> str:
    """The next fractions to run, with reasons, as a grid snippet to paste into the spec."""
    from mixsweep.report.analyze import suggest_fractions
    from mixsweep.spec import spec_to_yaml_snippet

    results, _, _, _ = spec_results(spec)
    picks = suggest_fractions(results, k=k)
    lines = [f"# {f:g}: {reason}" for f, reason in picks]
    grid = sorted(set(spec.grid.animal_fractions) | {f for f, _ in picks})
    return "\n".join(lines + [spec_to_yaml_snippet(grid)])
