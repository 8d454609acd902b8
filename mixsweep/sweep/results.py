"""One spec's results, read back from the store, and what is made of them: the report (`mixsweep report`:
results.md, plots, effect.json, a W&B report run) and the next fractions to run (`mixsweep suggest`).

The numbers, plots and files themselves come from `mixsweep.report`, which never reads the store.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mixsweep.errors import MixsweepError
from mixsweep.sweep.plan import build_plan
from mixsweep.sweep.store import Store


def spec_results(spec):
    """(results frame, histories, store, plan) of this spec's stages; no finished stage is an error."""
    store = Store(spec.storage, spec.mirror)
    store.pull()
    plan = build_plan(spec, store, write_mixtures=False)
    keys = [s.key for s in plan.stages]
    frame = store.results_frame(keys)
    histories = {k: store.history(k) for k in keys if store.is_done(k)}
    if frame.empty:
        raise MixsweepError(f"{spec.name}: no finished stage in {store.root} yet (run `mixsweep run` first)")
    return frame, histories, store, plan


def effect_summary(results) -> str:
    """The report's first sentence: is the animal fraction's effect on test IoU (binary) there, from the
    statistics alone (the same sentence results.md opens with; the numbers are in effect.json)."""
    from mixsweep.report.analyze import effect, effect_sentence

    return effect_sentence(effect(results))


def make_report(spec, console: Console | None = None) -> dict[str, Path]:
    """Write the report under <storage>/reports/<spec name>/ and log it to W&B as one report run (results
    table, PNGs, the degradation curve as W&B line plots, the effect numbers in its summary).

    Returns file name -> path (results.md, effect.json, results.parquet, the PNGs) and prints the effect
    sentence to the terminal.
    """
    from mixsweep import tracking
    from mixsweep.report.analyze import effect, effect_sentence, report_curves
    from mixsweep.report.build import write_report

    results, histories, store, _ = spec_results(spec)
    out = store.root / "reports" / spec.name
    paths = write_report(results, histories, out, title=f"mixsweep report: {spec.name}")
    entries = effect(results)
    sentence = effect_sentence(entries)
    (console or Console()).print(sentence, markup=False, highlight=False)
    tracker = tracking.Tracker(**spec.wandb.model_dump(mode="json"), root=store.root)
    tracking.log_report(tracker, group=spec.name, table=results,
                        plots=[p for p in paths.values() if Path(p).suffix == ".png"],
                        effects=entries, sentence=sentence, curves=report_curves(results))
    return paths


def suggest_snippet(spec, k: int = 3) -> str:
    """The next fractions to run, with reasons, as a grid snippet to paste into the spec."""
    from mixsweep.report.analyze import suggest_fractions
    from mixsweep.spec import spec_to_yaml_snippet

    results, _, _, _ = spec_results(spec)
    picks = suggest_fractions(results, k=k)
    lines = [f"# {f:g}: {reason}" for f, reason in picks]
    grid = sorted(set(spec.grid.animal_fractions) | {f for f, _ in picks})
    return "\n".join(lines + [spec_to_yaml_snippet(grid)])
