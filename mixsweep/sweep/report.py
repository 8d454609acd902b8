"""`mixsweep report` and `mixsweep suggest`: the store's results for one spec → tables, plots, W&B."""

from __future__ import annotations

from pathlib import Path

from mixsweep.sweep.run import spec_results


def make_report(spec) -> dict[str, Path]:
    """Write the report under <storage>/reports/<spec name>/ and log it to W&B as one report run."""
    from mixsweep.report.build import write_report
    from mixsweep.sweep import tracking

    results, histories, store, _ = spec_results(spec)
    out = store.root / "reports" / spec.name
    paths = write_report(results, histories, out, title=f"mixsweep report: {spec.name}")
    tracker = tracking.Tracker(**spec.wandb.model_dump(mode="json"), root=store.root)
    tracking.log_report(tracker, group=spec.name, table=results,
                        plots=[p for p in paths.values() if Path(p).suffix == ".png"])
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
