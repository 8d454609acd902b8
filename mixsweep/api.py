"""mixsweep from Python (a notebook): one sweep spec, its plan, run, results, effect and report.

    from mixsweep import Sweep
    sweep = Sweep.load("sweeps/smoke.yaml")
    sweep.plan()      # a DataFrame: one row per stage, its status and estimated cost
    sweep.run()       # the pending stages, on local Ray (address="auto" joins a cluster)
    sweep.results()   # the store's rows for this spec, a DataFrame
    sweep.effect()    # the declared effect test, the secondary tests and transfer: effect.json's entries
    sweep.report()    # results.md, effect.json and the PNG plots; file name -> path

Every method does what the command of the same name does (`mixsweep plan | run | results | report`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class Sweep:
    """A sweep spec and its store."""

    def __init__(self, spec, path: Path | str | None = None):
        self.spec = spec
        self.path = None if path is None else Path(path)

    @classmethod
    def load(cls, path: Path | str, check_paths: bool = True) -> Sweep:
        """Read and validate a spec file (bad input is one MixsweepError naming the file and key). With
        `check_paths` False, data roots need not exist: results, effect and report read the store alone."""
        from mixsweep.spec import load_spec

        return cls(load_spec(path, check_paths=check_paths), path)

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Sweep({self.name!r}, storage={self.spec.storage!r})"

    def plan(self) -> pd.DataFrame:
        """Every stage: kind, method, grid values, key, parent, status, images, estimated seconds by part,
        GPU-hours and checkpoint bytes. A dry run: it writes nothing."""
        from mixsweep.sweep.cost import estimate
        from mixsweep.sweep.plan import build_plan, plan_rows
        from mixsweep.sweep.store import Store

        store = Store(self.spec.storage)
        plan = build_plan(self.spec, store)
        return pd.DataFrame(plan_rows(plan, estimate(plan, self.spec, store)))

    def run(self, address: str | None = None, retry_failed: bool = False) -> pd.DataFrame:
        """Run the pending stages (Ray Tune; local Ray unless `address`); returns the plan afterwards."""
        from mixsweep.sweep.run import run_sweep

        run_sweep(self.spec, str(self.path or self.name), address=address, retry_failed=retry_failed)
        return self.plan()

    def results(self) -> pd.DataFrame:
        """One row per finished or failed stage of this spec, from the store alone."""
        from mixsweep.sweep.results import results_table

        return results_table(self.spec)[0]

    def effect(self) -> list[dict]:
        """The spec's declared effect test (role primary), the secondary tests with Holm-adjusted p-values and
        the transfer comparison, as effect.json holds them; with recipe axes, once per axis value (each entry's
        `axes`), Holm-adjusted across values."""
        from mixsweep.sweep.results import spec_effect

        return spec_effect(self.spec, self.results())

    def report(self, out: Path | str | None = None) -> dict[str, Path]:
        """Write the report (default <storage>/reports/<name>/) and log it to W&B; file name -> path."""
        from mixsweep.sweep.results import make_report

        return make_report(self.spec, out=out)
