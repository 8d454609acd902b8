"""benchmarks/throughput.py measures what a stage runs: its rows train through `fit` and its `train_step`."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

from mixsweep.train import loop


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).parents[1] / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("data", ["packed", "synthetic"])
def test_benchmark_rows_run_the_stage_step_and_report_its_own_log(bench, train_inputs, tmp_path, monkeypatch, data):
    calls = []
    real_step = loop.train_step

    def counting_step(task, *args, **kwargs):
        calls.append(task)
        return real_step(task, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", counting_step)
    inputs = {k: str(v) for k, v in train_inputs.items()}
    config = bench.job_config("pretrain", inputs, tmp_path, "tiny", epochs=3, batch=8, compiled=False)
    row = bench.measure(config, data)
    (task,) = set(calls)  # one task, the stage's own: every micro-step went through loop.train_step
    assert type(task).__name__ == "PretrainTask" and len(calls) == 3 * len(task.train_loader)
    logged = loop.read_metrics(tmp_path / "pretrain")
    assert [m["epoch"] for m in logged] == [0, 1, 2]
    assert row.img_s == statistics.median(m["img_per_s"] for m in logged[1:])  # epoch 0 holds the compile
    assert row.batch == 8 and row.gflop_img > 0 and 0 < row.compile_s < row.loop_s
    assert 0 < row.eval_s < row.loop_s and 0 < row.checkpoint_s < row.loop_s
