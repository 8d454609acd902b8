"""The bad-input matrix (README, "When something is wrong"): each row is one mistake a user makes, met
through the command line as the user meets it. Each is one line naming the file, key or path, exit code 2,
before any training starts; and nothing already finished in the store is lost.

Neighbouring tests cover the same rows at the library level: test_spec (keys, fractions), test_coco (JSON),
test_packed (unreadable images), test_tracking (W&B), test_train / test_models (checkpoints).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import warnings

import pytest
import yaml

from conftest import finetune_config
from mixsweep.cli import main
from mixsweep.data.packed import PackItem, build_pack
from mixsweep.spec import load_spec
from mixsweep.sweep.plan import build_plan
from mixsweep.sweep.store import Store


def spec_file(tmp_path, **changes):
    spec = {"name": "bad", "grid": {"animal_fractions": [0.0, 1.0], "finetune_fractions": [1.0], "seeds": [0]},
            "data": {"synth": {"scale": "small"}}, "preset": "tiny", "mixture": {"pack_size": 64},
            "storage": str(tmp_path / "store"), "wandb": {"mode": "offline"}}
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("mixsweep: error: ")]
    assert len(errors) == 1 and "Traceback" not in "".join(err), err
    return " ".join(errors[0].split())


def test_missing_data_root(tmp_path, capsys):
    path = spec_file(tmp_path, data={"coco_annotations": "/nope/instances_train2017.json",
                                     "coco_images": "/nope/train2017", "pets_root": "/nope/pets"})
    msg = cli_error(capsys, ["plan", str(path)])
    assert "data.coco_annotations: missing data root: /nope/instances_train2017.json does not exist" in msg


def test_malformed_annotation_json(tmp_path, capsys):
    ann = tmp_path / "instances_train2017.json"
    ann.write_text('{"images": [{"id": 1,}]}')
    msg = cli_error(capsys, ["data", "coco-index", "--annotations", str(ann), "--out", str(tmp_path / "i.parquet")])
    assert str(ann) in msg and "line 1" in msg


def test_unreadable_image_is_marked_and_skipped(tmp_path, synth_small):
    """Images are decoded once, into the pack, before training: a bad file never surfaces mid-epoch. It is
    named in a warning, marked ok=False and skipped; only a split with no readable image stops the stage."""
    good = sorted(synth_small.coco_train_images.glob("*.jpg"))[:3]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    items = [PackItem(key=p.stem, image_path=p) for p in good] + [PackItem(key="broken", image_path=bad)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pack = build_pack(items, tmp_path / "cache", size=32, fit="crop", workers=1)
    assert any(str(bad) in str(w.message) and "ok=False" in str(w.message) for w in caught)
    assert list(pack.valid_indices) == [0, 1, 2]
    with pytest.raises(Exception, match="none of its 1 images is usable"):
        pack.require_usable(pack.indices_for(["broken"]), "split")


def test_fraction_outside_unit_interval(tmp_path, capsys):
    msg = cli_error(capsys, ["plan", str(spec_file(tmp_path, **{"grid.animal_fractions": [0.0, 1.5]}))])
    assert "grid.animal_fractions" in msg and "1.5" in msg


def test_unknown_spec_key(tmp_path, capsys):
    msg = cli_error(capsys, ["plan", str(spec_file(tmp_path, **{"pretrain.epocs": 3}))])
    assert f"{tmp_path / 'spec.yaml'}: pretrain.epocs: unknown key" in msg


def test_size_larger_than_the_images_available(tmp_path, capsys):
    msg = cli_error(capsys, ["plan", str(spec_file(tmp_path, **{"mixture.size": 100000}))])
    assert "bad: mixture.size 100000 at animal fraction 0 needs 0 animal and 100000 non-animal images" in msg


def test_storage_not_writable(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    path = spec_file(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["storage"] = str(tmp_path / "a-file" / "store")
    path.write_text(yaml.safe_dump(spec))
    msg = cli_error(capsys, ["run", str(path)])
    assert f"storage: {tmp_path / 'a-file' / 'store'} is not writable" in msg


def test_unreachable_cluster_address_loses_nothing(tmp_path):
    """Refused in seconds (ray.init alone retries for minutes), and a stage already finished stays."""
    path = spec_file(tmp_path)
    store = Store(tmp_path / "store")
    stage = build_plan(load_spec(path), store).stages[0]
    store.record_result(stage.key, {**stage.row(), "val_loss": 0.5}, tmp_path, None)
    before = (store.stage_dir(stage.key) / "result.json").read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    proc = subprocess.run([sys.executable, "-m", "mixsweep.cli", "run", str(path), "--address", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert f"--address 127.0.0.1:{port}: cannot reach a Ray cluster there" in err
    assert (store.stage_dir(stage.key) / "result.json").read_bytes() == before
    assert json.loads(before)["status"] == "done"


def test_truncated_or_foreign_checkpoint(tmp_path, capsys, train_inputs):
    import torch

    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for ckpt, expected in ((truncated, "not a readable checkpoint"), (foreign, "not a mixsweep checkpoint")):
        cfg = finetune_config(train_inputs, tmp_path / "runs", "ft", model="mae", init=ckpt)
        path = tmp_path / "ft.yaml"
        path.write_text(yaml.safe_dump(cfg))
        msg = cli_error(capsys, ["train", "finetune", str(path), "--local"])
        assert f"{ckpt}: {expected}" in msg
    assert not (tmp_path / "runs" / "ft" / "metrics.jsonl").exists(), "training started"
