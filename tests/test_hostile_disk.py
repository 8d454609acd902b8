"""Hostile disks and interrupted writes: a pack build on a full disk or with a dying worker ends in one line,
never a SIGBUS or a hang, and leaves no temporary folder; a killed synthetic-data write is redone."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixsweep.cli import main
from mixsweep.data.packed import PackedSet, PackItem
from mixsweep.data.pack_build import build_pack
from mixsweep.errors import MixsweepError
from mixsweep.synth import synth_is_written, write_synth
from mixsweep.synth.output import MARKER, WRITING

TESTS = Path(__file__).resolve().parent
DISK_BYTES = 4 << 20
# A hung pool also hangs the cleanup after a signal-raised timeout (a Pool joins workers that never finish),
# so a hang is ended from a thread, which stops the whole run.
HANG = "thread"

# Module-level state the mask functions below read; forked pack workers inherit it.
_FILLER = ""
_PARENT_PID = 0


def fill_disk_once(mask: np.ndarray) -> np.ndarray:
    """mask_fn that fills the disk holding _FILLER the first time any process calls it, so the disk fills in
    the middle of the build, after the free-space check passed."""
    try:
        fd = os.open(_FILLER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return mask
    block = b"\xff" * 4096
    try:
        while True:
            os.write(fd, block)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return mask


def die_in_a_worker(mask: np.ndarray) -> np.ndarray:
    """mask_fn that kills the worker process calling it (never the test process itself)."""
    if os.getpid() != _PARENT_PID:
        os._exit(9)
    return mask


def die_now(mask: np.ndarray) -> np.ndarray:
    """mask_fn that kills whichever process runs it, mid-build: a stand-in for kill -9 or a SIGBUS."""
    os._exit(9)


def _write_items(root: Path, n: int) -> list[PackItem]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / f"{k}.jpg", quality=90)
        Image.fromarray(rng.integers(0, 4, (24, 32), dtype=np.uint8)).save(root / f"{k}.png")
        items.append(PackItem(f"img{k}", str(root / f"{k}.jpg"), str(root / f"{k}.png")))
    return items


def _tmp_folders(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob(".tmp-*"))


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk that is really full when it is full."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no permission in this container?): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ------------------------------------------------------------------------------------------------- packing

@pytest.mark.timeout(60, method=HANG)
def test_a_pack_larger_than_the_free_space_is_refused_up_front(small_disk, tmp_path):
    items = _write_items(tmp_path / "src", 40)
    cache = small_disk / "cache"
    with pytest.raises(MixsweepError) as e:
        build_pack(items, cache, size=192, workers=2)  # the arrays alone, 40 x 192 x 192 x 4 bytes, are 5.6 MiB
    text = _one_line(e)
    m = re.search(r"needs (\d+) bytes .*, (\d+) bytes .* free", text)
    assert text.startswith(f"{cache}: not enough free space") and m, text
    need, free = int(m.group(1)), int(m.group(2))
    assert need >= 40 * 192 * 192 * 4 and need > free and free <= DISK_BYTES
    assert list(cache.iterdir()) == []  # nothing was started


@pytest.mark.timeout(60, method=HANG)
def test_a_disk_that_fills_mid_build_fails_in_one_line_with_two_workers(small_disk, tmp_path):
    global _FILLER
    items = _write_items(tmp_path / "src", 40)  # two chunks: both decoded in worker processes
    cache = small_disk / "cache"
    _FILLER = str(small_disk / "filler")
    with pytest.raises(MixsweepError) as e:
        build_pack(items, cache, size=64, mask_fn=fill_disk_once, workers=2)
    text = _one_line(e)
    # "disk full", not "a worker died": the workers' rows went to space reserved before the disk filled.
    assert text.startswith(f"{cache}: disk full while building pack") and "bytes" in text, text
    assert Path(_FILLER).stat().st_size > 0  # the disk really did fill during the build
    assert list(cache.iterdir()) == []  # no temporary folder, no half pack


@pytest.mark.timeout(120)
def test_a_disk_that_fills_mid_build_is_not_a_bus_error_with_one_worker(small_disk, tmp_path):
    # In a child process: before space was reserved, a write through the memmap to a full disk was a
    # SIGBUS that would take the test process down with it.
    items = _write_items(tmp_path / "src", 40)
    cache = small_disk / "cache"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import test_hostile_disk as t
        from mixsweep.data.packed import PackItem
        from mixsweep.data.pack_build import build_pack
        from mixsweep.errors import MixsweepError
        t._FILLER = {str(small_disk / "filler")!r}
        items = [PackItem(*it) for it in {[(it.key, it.image_path, it.mask_path) for it in items]!r}]
        try:
            build_pack(items, {str(cache)!r}, size=64, mask_fn=t.fill_disk_once, workers=1)
        except MixsweepError as e:
            print(e)
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])  # -7 would be the SIGBUS
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{cache}: disk full while building pack"), done.stdout
    assert list(cache.iterdir()) == []


@pytest.mark.timeout(60, method=HANG)
def test_a_worker_that_dies_fails_the_build_instead_of_hanging(tmp_path):
    global _PARENT_PID
    _PARENT_PID = os.getpid()
    items = _write_items(tmp_path / "src", 40)
    cache = tmp_path / "cache"
    with pytest.raises(MixsweepError) as e:
        build_pack(items, cache, size=32, mask_fn=die_in_a_worker, workers=2)
    text = _one_line(e)
    assert text.startswith(f"{cache}: a worker process died while building pack"), text
    assert _tmp_folders(cache) == [] and list(cache.iterdir()) == []
    # The same items without the hostile mask function still pack.
    pack = build_pack(items, cache, size=32, workers=2)
    assert len(pack) == 40 and pack.valid_indices.size == 40


@pytest.mark.timeout(120)
def test_orphans_of_dead_builds_on_this_host_are_cleared_and_live_ones_kept(tmp_path):
    items = _write_items(tmp_path / "src", 4)
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import test_hostile_disk as t
        from mixsweep.data.packed import PackItem
        from mixsweep.data.pack_build import build_pack
        items = [PackItem(*it) for it in {[(it.key, it.image_path, it.mask_path) for it in items]!r}]
        build_pack(items, {str(cache)!r}, size=16, mask_fn=t.die_now, workers=1)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert child.returncode == 9, child.stderr[-2000:]
    (orphan,) = _tmp_folders(cache)  # what a killed build really leaves
    dot_tmp, key, pid, host, rand = orphan.split("-")
    assert not (cache / orphan / "meta.json").exists()
    live = f"{dot_tmp}-{key}-{os.getpid()}-{host}-{rand}"  # a build in progress in a live process
    elsewhere = f"{dot_tmp}-{key}-{pid}-{'0' * len(host)}-{rand}"  # another machine's pid means nothing here
    legacy = f"{dot_tmp}-{key}-{pid}-{rand}"  # named before names carried the host
    for name in (live, elsewhere, legacy):
        (cache / name).mkdir()
        (cache / name / "images.u8").write_bytes(b"\0" * 16)

    pack = build_pack(items[:2], cache, size=16, workers=1)  # any build in this cache sweeps it

    assert _tmp_folders(cache) == sorted([live, elsewhere])
    assert (cache / live / "images.u8").is_file()
    assert isinstance(PackedSet.open(pack.path), PackedSet)


def test_a_cache_folder_that_is_a_file_is_one_line(tmp_path):
    items = _write_items(tmp_path / "src", 2)
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(MixsweepError) as e:
        build_pack(items, tmp_path / "cache", size=16, workers=1)
    assert _one_line(e) == f"{tmp_path / 'cache'}: exists and is not a folder; choose a folder for the pack cache"
    with pytest.raises(MixsweepError, match=re.escape(f"{tmp_path / 'cache'}: exists and is not a folder (so ")):
        build_pack(items, tmp_path / "cache" / "sub", size=16, workers=1)
    assert (tmp_path / "cache").read_text() == "not a folder"


# --------------------------------------------------------------------------------------- synthetic data

@pytest.mark.timeout(120)
def test_a_killed_synth_write_is_redone_by_the_next_call(tmp_path):
    out = tmp_path / "synth"
    # A real write, killed a few images into the COCO train split.
    script = textwrap.dedent(f"""
        import time
        import mixsweep.synth.coco as c
        import mixsweep.synth.generate as g
        def stall(fn, jobs, *args, **kwargs):
            for job in jobs[:3]:
                fn(job)
            print("stalled", flush=True)
            time.sleep(300)
        c.run_jobs = stall
        g.write_synth({str(out)!r}, "small", seed=0)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "stalled"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    train = out / "coco" / "train2017"
    assert len(list(train.glob("*.jpg"))) == 3
    (train / "000000999999.jpg").write_bytes(b"torn")  # a half-written image of that write
    assert (out / WRITING).is_file() and not (out / MARKER).exists()
    assert not synth_is_written(out, "small", seed=0)

    paths = write_synth(out, "small", seed=0)

    assert paths.root == out and synth_is_written(out, "small", seed=0)
    assert not (out / WRITING).exists()
    listed = {im["file_name"] for im in json.loads(paths.coco_train_annotations.read_text())["images"]}
    assert {p.name for p in train.iterdir()} == listed  # the torn image is gone, every listed one is there
    assert (paths.pets_root / "annotations" / "list.txt").is_file()


@pytest.mark.timeout(120)
def test_a_synth_write_that_fills_the_disk_is_one_line_and_redone_after_making_room(small_disk):
    out = small_disk / "synth"  # the small set takes ~6 MB, the disk holds 4 MiB
    with pytest.raises(MixsweepError) as e:
        write_synth(out, "small", seed=0)
    assert re.fullmatch(re.escape(f"{out}: disk full while writing synthetic data (") + r"\d+ bytes free\); "
                        "make room and run again, the unfinished set is redone", _one_line(e)), str(e.value)
    assert (out / WRITING).is_file() and not synth_is_written(out, "small", seed=0)
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)

    write_synth(out, "small", seed=0)  # the same process again: its own failed write is not "in progress"

    assert synth_is_written(out, "small", seed=0) and not (out / WRITING).exists()


def test_a_synth_write_in_progress_elsewhere_is_not_touched(tmp_path):
    out = tmp_path / "synth"
    (out / "coco" / "train2017").mkdir(parents=True)
    (out / "coco" / "train2017" / "000000000001.jpg").write_bytes(b"half")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / WRITING).write_text(json.dumps({"generator": "mixsweep.data.synth", "pid": sleeper.pid,
                                               "host": socket.gethostname()}))
        with pytest.raises(MixsweepError) as e:
            write_synth(out, "small")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _one_line(e) == (f"{out}: synthetic data is being written there by process {sleeper.pid}; "
                            "wait for it to finish")
    assert (out / "coco" / "train2017" / "000000000001.jpg").read_bytes() == b"half"


def test_a_folder_with_someone_elses_files_is_still_refused(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "mine.txt").write_text("user data")
    (tmp_path / WRITING).write_text("not ours")  # a file of that name proves nothing
    with pytest.raises(MixsweepError) as e:
        write_synth(tmp_path, "small")
    assert _one_line(e).startswith(f"{tmp_path / 'coco'} exists and was not written by write_synth")
    assert (tmp_path / "coco" / "mine.txt").read_text() == "user data"


def test_synth_out_that_is_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "x"
    target.write_text("keep me")
    assert main(["data", "synth", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mixsweep: error: {target}: exists and is not a folder; choose a folder for the synthetic data"
    with pytest.raises(MixsweepError, match=re.escape(f"{target}: exists and is not a folder (so ")):
        write_synth(target / "sub", "small")
    assert target.read_text() == "keep me"
