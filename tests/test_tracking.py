"""W&B tracking with the real wandb library, offline (no server is reachable here)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fixtures
from mixsweep import tracking
from mixsweep.tracking import Tracker, TrackingWarning

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key, valid nowhere


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch, tmp_path):
    """No key, no netrc and no WANDB_MODE from the machine running the tests."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(tracking, "_ONLINE_PROBLEM", {})


def _png(path: Path) -> Path:
    Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)).save(path)
    return path


HISTORY = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val/iou": 0.1 * e} for e in range(3)]


def _log(tracker: Tracker, pictures: tuple[Path, ...] | list[Path] = (), key: str = "k0123456789abcdef") -> Path | None:
    return fixtures.log_stage(
        tracker, key=key, name="finetune F=0.5 seed 0", group="smoke", job_type="finetune",
        config={"animal_fraction": 0.5, "finetune_fraction": 1.0, "seed": 0, "parent_key": "p42",
                "where": Path("/somewhere")},
        history=HISTORY, summary={"test/iou": np.float64(0.78), "test/loss": 0.32}, pictures=list(pictures))


def _files_containing(root: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_offline_stage_round_trip(tmp_path):
    tracker = Tracker(project="mixsweep-test", entity=None, mode="offline", root=tmp_path)
    run_dir = _log(tracker, pictures=[_png(tmp_path / "epoch0002-seg.png")])
    assert run_dir is not None and run_dir.parent == tmp_path / "wandb"
    assert run_dir.name.startswith("offline-run-") and run_dir.name.endswith("-k0123456789abcdef")

    run = tracking.read_offline_run(run_dir)
    assert run["run_id"] == "k0123456789abcdef" and run["exit_code"] == 0
    assert (run["group"], run["job_type"], run["name"], run["project"]) == (
        "smoke", "finetune", "finetune F=0.5 seed 0", "mixsweep-test")
    assert run["config"] == {"animal_fraction": 0.5, "finetune_fraction": 1.0, "seed": 0, "parent_key": "p42",
                             "where": "/somewhere", "stage_key": "k0123456789abcdef"}
    assert run["summary"]["test/iou"] == pytest.approx(0.78) and run["summary"]["test/loss"] == pytest.approx(0.32)

    rows = tracking.read_offline_history(run_dir)
    assert [r["_step"] for r in rows] == [0, 1, 2]
    for row, logged in zip(rows, HISTORY):
        assert row["epoch"] == logged["epoch"]
        assert row["train_loss"] == pytest.approx(logged["train_loss"])
        assert row["val/iou"] == pytest.approx(logged["val/iou"])
    # the picture rides with the last epoch, as a wandb image file inside the run folder
    assert rows[-1]["pictures/epoch0002-seg._type"] == "image-file"
    assert (run_dir / "files" / rows[-1]["pictures/epoch0002-seg.path"]).is_file()

    # same key, same run id; offline gives it a new folder
    again = _log(tracker)
    assert again is not None and again != run_dir
    assert tracking.read_offline_run(again)["run_id"] == "k0123456789abcdef"


def test_report_run(tmp_path):
    tracker = Tracker(project="mixsweep-test", entity=None, mode="offline", root=tmp_path)
    table = pd.DataFrame({"animal_fraction": [0.0, 0.5], "test_iou": [0.7, 0.8], "odd": [[1], None]})
    run_dir = tracking.log_report(tracker, group="smoke", table=table, plots=[_png(tmp_path / "iou.png")])
    assert run_dir is not None
    run = tracking.read_offline_run(run_dir)
    assert (run["job_type"], run["group"], run["name"]) == ("report", "smoke", "report")
    (row,) = run["history"]
    assert row["results._type"] == "table-file" and row["results.nrows"] == 2
    assert row["plots/iou._type"] == "image-file"


def test_disabled_writes_nothing(tmp_path):
    root = tmp_path / "store"
    tracker = Tracker(project="mixsweep-test", entity=None, mode="disabled", root=root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _log(tracker) is None
        assert tracking.log_report(tracker, group="g", table=pd.DataFrame({"a": [1]}), plots=[]) is None
    assert not root.exists()


def test_resolve_mode(monkeypatch, tmp_path):
    assert [tracking.resolve_mode(m) for m in ("online", "offline", "disabled")] == ["online", "offline", "disabled"]
    assert tracking.resolve_mode("auto") == "offline"
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert tracking.resolve_mode("auto") == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert tracking.resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode("auto") == "disabled"
    with pytest.raises(ValueError):
        tracking.resolve_mode("sometimes")


def test_sync_command():
    assert tracking.sync_command("/data/store") == "wandb sync /data/store/wandb/offline-run-*"
    assert tracking.sync_command("/a b") == "wandb sync '/a b/wandb'/offline-run-*"


def test_run_id_is_stable_and_valid():
    assert tracking.run_id("abc123") == "abc123"
    odd = tracking.run_id("sweep/a:b?c")
    assert odd == tracking.run_id("sweep/a:b?c") and not set("/\\#?%:") & set(odd)
    assert odd != tracking.run_id("sweep/a:b?d")


@pytest.mark.timeout(180)  # a hang, not a slow machine: the checks below are bounded by timeout_s
def test_bad_key_falls_back_offline_in_bounded_time(monkeypatch, tmp_path):
    """auto + a key the server can't check (no network here) → offline run, one warning, key written nowhere."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    tracker = Tracker(project="mixsweep-test", entity=None, mode="auto", root=tmp_path, timeout_s=3)
    assert tracking.resolve_mode(tracker.mode) == "online"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = _log(tracker)
    ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1 and "offline" in str(ours[0].message) and "wandb sync" in str(ours[0].message)
    assert FAKE_KEY not in str(ours[0].message)
    assert run_dir is not None and run_dir.name.startswith("offline-run-")
    assert [r["_step"] for r in tracking.read_offline_history(run_dir)] == [0, 1, 2]
    assert os.environ.get("WANDB_MODE") is None  # set only around wandb.init
    assert _files_containing(tmp_path, FAKE_KEY) == []


@pytest.mark.timeout(180)  # a hang, not a slow machine
def test_online_start_that_times_out_falls_back(monkeypatch, tmp_path):
    """The server check passes (forced) but wandb.init online can't reach it: bounded, then offline."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setattr(tracking, "_online_problem", lambda wandb, tracker: None)
    tracker = Tracker(project="mixsweep-test", entity=None, mode="online", root=tmp_path, timeout_s=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = _log(tracker, key="ktimeout")
    assert len([w for w in caught if issubclass(w.category, TrackingWarning)]) == 1
    assert run_dir is not None and run_dir.name.endswith("-ktimeout-offline")
    assert len(tracking.read_offline_history(run_dir)) == 3
    assert _files_containing(tmp_path, FAKE_KEY) == []


def test_unwritable_root_is_a_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a root under a file can't be created, even as root
    tracker = Tracker(project="mixsweep-test", entity=None, mode="offline", root=blocker / "store")
    with pytest.warns(TrackingWarning, match="not logged"):
        assert _log(tracker) is None


def test_missing_or_broken_picture_is_skipped(tmp_path):
    tracker = Tracker(project="mixsweep-test", entity=None, mode="offline", root=tmp_path / "store")
    broken = tmp_path / "broken.png"
    broken.write_text("not a png")
    good = _png(tmp_path / "good.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = _log(tracker, pictures=[tmp_path / "missing.png", broken, good])
    ours = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 2 and "missing.png" in ours[0] and "broken.png" in ours[1]
    assert run_dir is not None
    last = tracking.read_offline_history(run_dir)[-1]
    assert "pictures/good._type" in last and not any(k.startswith(("pictures/missing", "pictures/broken"))
                                                     for k in last)


# --- the report run: results table, degradation curve as W&B line plots, effect numbers -----------------------

SEEDS = (0, 1, 2)
FRACS = (0.0, 0.5, 1.0)
# Per-seed offsets and small per-run wobbles, fixed by hand so the answer is known: at fine-tune 1 IoU
# rises 0.2 per unit F (detected); at fine-tune 0.25 it is flat (not detected); fine-tune 0.1 has one seed.
OFFSET = {0: 0.00, 1: 0.03, 2: -0.02}
WOBBLE = {(0, 0.0): 0.004, (0, 0.5): -0.003, (0, 1.0): 0.002, (1, 0.0): -0.002, (1, 0.5): 0.001,
          (1, 1.0): 0.004, (2, 0.0): 0.003, (2, 0.5): 0.0, (2, 1.0): 0.002}
SLOPE = {1.0: 0.2, 0.25: 0.0, 0.1: 0.1}
BASELINE = {"supervised_mae": 0.55, "resnet18": 0.45}


def _results() -> pd.DataFrame:
    rows = []
    for s in SEEDS:
        for f in FRACS:
            rows.append({"key": f"pre-{f}-{s}", "kind": "pretrain", "method": "mae", "status": "done",
                         "animal_fraction": f, "finetune_fraction": np.nan, "seed": s, "test_iou_binary": np.nan,
                         "test_miou": np.nan, "notes": None})
            for ft, slope in SLOPE.items():
                if ft == 0.1 and s != 0:
                    continue
                iou = 0.5 + slope * f + OFFSET[s] + WOBBLE[(s, f)]
                rows.append({"key": f"ft-{f}-{ft}-{s}", "kind": "finetune", "method": "mae", "status": "done",
                             "animal_fraction": f, "finetune_fraction": ft, "seed": s, "test_iou_binary": iou,
                             "test_miou": iou - 0.1, "notes": ["a list", s]})  # a list cell must not break it
        for method, level in BASELINE.items():
            for ft in (1.0, 0.25):
                rows.append({"key": f"{method}-{ft}-{s}", "kind": "finetune", "method": method, "status": "done",
                             "animal_fraction": np.nan, "finetune_fraction": ft, "seed": s,
                             "test_iou_binary": level + OFFSET[s], "test_miou": level - 0.1, "notes": "text"})
    rows.append({"key": "bad", "kind": "finetune", "method": "mae", "status": "failed", "animal_fraction": 1.0,
                 "finetune_fraction": 1.0, "seed": 0, "test_iou_binary": -50.0, "test_miou": -50.0, "notes": None})
    return pd.DataFrame(rows)


def _by_hand(ft: float) -> dict:
    """The effect numbers at one fine-tune fraction, straight from the formulas (not from analyze)."""
    from scipy import stats

    seeds = SEEDS if ft != 0.1 else (0,)
    y = {s: [0.5 + SLOPE[ft] * f + OFFSET[s] + WOBBLE[(s, f)] for f in FRACS] for s in seeds}
    diffs = np.array([y[s][-1] - y[s][0] for s in seeds])
    slopes = np.array([np.polyfit(FRACS, y[s], 1)[0] for s in seeds])

    def interval(v):
        if v.size < 2:
            return None, None
        half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
        return v.mean() - half, v.mean() + half

    (dl, dh), (sl, sh) = interval(diffs), interval(slopes)
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue) if diffs.size >= 2 else None  # the default: two-sided
    return {"diff": diffs.mean(), "ci_low": dl, "ci_high": dh, "slope": slopes.mean(), "slope_ci_low": sl,
            "slope_ci_high": sh, "p": p}


def test_report_run_holds_effect_curve_and_table(tmp_path):
    from mixsweep.report.analyze import report_curves
    from mixsweep.report.effect import effect, effect_sentence

    results = _results()
    entries = effect(results)  # what make_report passes
    tracker = Tracker(project="mixsweep-test", entity=None, mode="offline", root=tmp_path)
    run_dir = tracking.log_report(tracker, group="study", table=results, plots=[_png(tmp_path / "iou.png")],
                                  effects=entries, sentence=effect_sentence(entries), curves=report_curves(results))
    assert run_dir is not None
    run = tracking.read_offline_run(run_dir)
    summary = run["summary"]
    assert run["job_type"] == "report" and run["run_id"] == tracking.run_id("report-study")
    assert run["config"] == {"sweep": "study"}  # wandb's chart bookkeeping is not in the config

    # the effect numbers: the primary test (the largest fine-tune size), then the secondary ones
    for ft, tag in ((1.0, "primary"), (0.25, "test_iou_binary/ft0_25"), (0.1, "test_iou_binary/ft0_1")):
        want = _by_hand(ft)
        for name, value in want.items():
            got = summary.get(f"effect/{tag}/{name}")
            if value is None:
                assert got is None, (tag, name)  # one seed: no interval, written as null
            else:
                assert got == pytest.approx(value, abs=1e-9), (tag, name)
    assert summary["effect/primary/finetune_fraction"] == 1.0 and summary["effect/primary/declared"] == "two-sided"
    assert summary["effect/primary/detected"] is True and summary["effect/test_iou_binary/ft0_25/detected"] is False
    assert summary["effect/primary/direction"] == "higher animal fraction is better"
    assert summary["effect/test_iou_binary/ft0_25/p_holm"] >= summary["effect/test_iou_binary/ft0_25/p"]
    assert summary["effect/sentence"].startswith("Effect of the animal fraction on test IoU (binary) (primary "
                                                 "endpoint, two-sided, alpha 0.05): detected")

    # the curve: a native line plot (Vega panel wandb/line/v0) over a table of the results' seed means
    for metric in ("test_iou_binary", "test_miou"):
        panel = run["visualize"][f"curve/{metric}"]
        assert panel["panel_type"] == "Vega2"
        assert panel["panel_config"]["panelDefId"] == "wandb/line/v0"
        assert panel["panel_config"]["fieldSettings"] == {"x": "animal_fraction", "y": metric, "stroke": "line"}
        table_key = panel["panel_config"]["userQuery"]["queryFields"][0]["fields"][-1]["args"][0]["value"]
        assert table_key == f"curve/{metric}_table" and summary[f"{table_key}._type"] == "table-file"
    curve = fixtures.read_offline_table(run_dir, "curve/test_iou_binary_table", run)
    lines = dict(tuple(curve.groupby("line")))
    assert sorted(lines) == ["MAE, fine-tune 0.1", "MAE, fine-tune 0.25", "MAE, fine-tune 1",
                             "ResNet-18, fine-tune 0.25", "ResNet-18, fine-tune 1",
                             "Supervised MAE, fine-tune 0.25", "Supervised MAE, fine-tune 1"]
    mae = lines["MAE, fine-tune 1"].set_index("animal_fraction")["test_iou_binary"]
    for f in FRACS:  # seed mean of the finished runs (the failed F=1 run's -50 is not in it)
        assert mae[f] == pytest.approx(np.mean([0.5 + 0.2 * f + OFFSET[s] + WOBBLE[(s, f)] for s in SEEDS]))
    flat = lines["ResNet-18, fine-tune 1"]
    assert flat["animal_fraction"].tolist() == [0.0, 1.0]  # across the fraction range, at the seed mean
    assert flat["test_iou_binary"].tolist() == pytest.approx([0.45 + np.mean(list(OFFSET.values()))] * 2)
    assert flat["ci_low"].notna().all() and lines["MAE, fine-tune 0.1"]["ci_low"].isna().all()

    # the results table: every row and column, plain cells
    (row,) = run["history"]
    assert row["results._type"] == "table-file" and row["results.nrows"] == len(results)
    back = fixtures.read_offline_table(run_dir, "results", run)
    assert list(back.columns) == list(results.columns)
    assert pd.isna(back["test_iou_binary"][0]) and back["test_iou_binary"][1] == pytest.approx(0.504)
    assert back["notes"][1] == '["a list", 0]' and pd.isna(back["notes"][0])
    assert row["plots/iou._type"] == "image-file"


def test_table_cells_are_plain():
    """A column mixing numbers and text (wandb would refuse the row) becomes text; NaN and inf become None."""
    import wandb

    frame = pd.DataFrame({"x": [1, "two", None], "y": [0.5, np.nan, np.inf], "z": [Path("/a"), {"k": 1}, (1, 2)]})
    table = tracking._table(wandb, frame)
    assert table.data == [["1", 0.5, "/a"], ["two", None, '{"k": 1}'], [None, None, "[1, 2]"]]


def test_run_folders_finds_every_attempt_of_one_id(tmp_path):
    """A resumed attempt that starts within the same second as the one before gets wandb's `-1` suffix; it is the
    same run (seen in CI: a crashed then resumed job on a fast machine)."""
    names = ["offline-run-20261204_191950-pt-a", "offline-run-20261204_191950-pt-a-1",
             "run-20261204_191951-pt-a-offline", "offline-run-20261204_191950-pt-ab", "latest-run"]
    for name in names:
        (tmp_path / "wandb" / name).mkdir(parents=True)
    assert [p.name for p in tracking.run_folders(tmp_path, "pt-a")] == names[:3]
    assert [p.name for p in tracking.run_folders(tmp_path, "pt-ab")] == names[3:4]
