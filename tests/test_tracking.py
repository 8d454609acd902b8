"""W&B tracking with the real wandb library, offline (no server is reachable here)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

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
    return tracking.log_stage(
        tracker, key=key, name="finetune F=0.5 seed 0", group="smoke", job_type="finetune",
        config={"animal_fraction": 0.5, "finetune_fraction": 1.0, "seed": 0, "parent_key": "p42",
                "where": Path("/somewhere")},
        history=HISTORY, summary={"test/iou": np.float64(0.78), "test/loss": 0.32}, pictures=list(pictures))


def _files_containing(root: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_offline_stage_round_trip(tmp_path):
    tracker = Tracker(project="mixsweep-test", entity=None, mode="offline", root=tmp_path)
    t0 = time.time()
    run_dir = _log(tracker, pictures=[_png(tmp_path / "epoch0002-seg.png")])
    seconds = time.time() - t0
    assert run_dir is not None and run_dir.parent == tmp_path / "wandb"
    assert run_dir.name.startswith("offline-run-") and run_dir.name.endswith("-k0123456789abcdef")
    assert seconds < 20, seconds

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


def test_bad_key_falls_back_offline_in_bounded_time(monkeypatch, tmp_path):
    """auto + a key the server can't check (no network here) → offline run, one warning, key written nowhere."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    tracker = Tracker(project="mixsweep-test", entity=None, mode="auto", root=tmp_path, timeout_s=3)
    assert tracking.resolve_mode(tracker.mode) == "online"
    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = _log(tracker)
    assert time.time() - t0 < 25
    ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1 and "offline" in str(ours[0].message) and "wandb sync" in str(ours[0].message)
    assert FAKE_KEY not in str(ours[0].message)
    assert run_dir is not None and run_dir.name.startswith("offline-run-")
    assert [r["_step"] for r in tracking.read_offline_history(run_dir)] == [0, 1, 2]
    assert os.environ.get("WANDB_MODE") is None  # set only around wandb.init
    assert _files_containing(tmp_path, FAKE_KEY) == []


def test_online_start_that_times_out_falls_back(monkeypatch, tmp_path):
    """The server check passes (forced) but wandb.init online can't reach it: bounded, then offline."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setattr(tracking, "_online_problem", lambda wandb, tracker: None)
    tracker = Tracker(project="mixsweep-test", entity=None, mode="online", root=tmp_path, timeout_s=3)
    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = _log(tracker, key="ktimeout")
    assert time.time() - t0 < 25
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
