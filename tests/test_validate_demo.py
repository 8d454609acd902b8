"""benchmarks/validate_demo.py: a finished record stays readable after the code moves on; running into it does not."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "validate_demo.py"


def _script():
    spec = importlib.util.spec_from_file_location("validate_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(world: str, seed: int, effect: str, design: dict) -> dict:
    primary = {"diff": -0.02, "ci": [-0.03, -0.01], "p": 0.001 if effect == "detected" else 0.4, "effect": effect}
    return {"world": world, "world_seed": seed, "design": design, "primary": primary, "wall_s": 480.0,
            "finished": "2026-12-07T00:00:00+0000"}


def test_summary_reads_a_record_of_another_design_and_a_run_refuses_it(tmp_path, capsys):
    vd = _script()
    old = {**vd.design(None), "sources": "0000000000000000"}  # a design the code here no longer is
    record = tmp_path / "r.jsonl"
    rows = [_row("planted", 1, "detected", old), _row("planted", 2, "not detected", old),
            _row("null", 1, "not detected", old)]
    record.write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert vd.main(["--summary", "--record", str(record)]) == 0
    out = capsys.readouterr().out
    low, high = vd.clopper_pearson(1, 2)
    assert f"planted: detected 1 of 2 (Clopper-Pearson 95 % {low:.2f} to {high:.2f})" in out
    assert "null: detected 0 of 1" in out and "not the code here" in out

    with pytest.raises(SystemExit, match=r"r\.jsonl:1: recorded for design"):
        vd.main(["--seeds", "3", "--record", str(record), "--dry-run"])


def test_clopper_pearson_matches_the_closed_forms():
    vd = _script()
    # k = 0 and k = n have closed forms: (1 - (a/2)^(1/n)) and (a/2)^(1/n).
    assert vd.clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert vd.clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10)), 1.0)
