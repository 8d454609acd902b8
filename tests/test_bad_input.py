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

from conftest import finetune_config, synth_data_section
from fixtures import COCO_CASES, write_coco_fixture, write_torchvision_pets
from mixsweep.cli import main
from mixsweep.data.packed import PackItem
from mixsweep.data.pack_build import build_pack
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


def test_unreachable_cluster_address_loses_nothing(tmp_path, synth_small):
    """Refused in seconds (ray.init alone retries for minutes), and a stage already finished stays."""
    path = spec_file(tmp_path, data=synth_data_section(synth_small))  # the subprocess renders no world
    store = Store(tmp_path / "store")
    stage = build_plan(load_spec(path), store).stages[0]
    (tmp_path / "state.pt").write_bytes(b"weights")  # a done pre-training has its checkpoint (else run reruns it)
    store.record_result(stage.key, {**stage.row(), "val_loss": 0.5}, tmp_path, tmp_path / "state.pt")
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


# --- real-data inputs a torchvision user has: a Pet folder laid out like torchvision's own test fixtures

def pets_cli(capsys, root, out, *extra):
    capsys.readouterr()
    status = main(["data", "pets", "--root", str(root), "--out", str(out), "--workers", "1", *extra])
    return status, capsys.readouterr().err


def test_pets_breed_id_minus_one_names_the_field(tmp_path, capsys):
    root = write_torchvision_pets(tmp_path, breed_id="-1", noise_trimaps=False)
    listing = root / "oxford-iiit-pet" / "annotations" / "list.txt"
    msg = cli_error(capsys, ["data", "pets", "--root", str(root), "--out", str(tmp_path / "m.parquet")])
    assert msg == (f"mixsweep: error: {listing}:1: field 4 (BREED-ID) of Abyssinian_1 is '-1'; expected a positive "
                   f"integer (the breed's number within its species: 1-12 for cats, 1-25 for dogs)")


def test_pets_every_trimap_bad_is_an_error_naming_the_folder(tmp_path, capsys):
    root = write_torchvision_pets(tmp_path, breed_id="3", noise_trimaps=True)
    out = tmp_path / "m.parquet"
    status, err = pets_cli(capsys, root, out)
    assert status == 2 and not out.exists()
    errors = [line for line in err.splitlines() if line.startswith("mixsweep: error: ")]
    assert len(errors) == 1
    pets = root / "oxford-iiit-pet"
    assert errors[0].startswith(f"mixsweep: error: {pets}: the train split would be empty: none of the 9 images "
                                f"in annotations/list.txt is usable (9 trimap values outside 1/2/3; first: "
                                f"{pets / 'annotations' / 'trimaps' / 'Abyssinian_1.png'}: trimap values [")


def test_pets_bad_trimap_warning_names_the_trimap_file(tmp_path, capsys):
    root = write_torchvision_pets(tmp_path, breed_id="3", noise_trimaps=True)
    _, err = pets_cli(capsys, root, tmp_path / "m.parquet")
    warned = [line for line in err.splitlines() if line.startswith("mixsweep: warning: ")]
    trimaps = root / "oxford-iiit-pet" / "annotations" / "trimaps"
    assert len(warned) == 9
    for line in warned:
        path, _, rest = line.removeprefix("mixsweep: warning: ").partition(": ")
        assert path.startswith(f"{trimaps}/") and path.endswith(".png"), line
        assert "outside 1/2/3" in rest and f"{path.rsplit('/', 1)[1].removesuffix('.png')} is excluded" in rest


@pytest.mark.parametrize("scheme,empty", [("stratified", ["val", "test"]), ("official", ["val"])])
def test_pets_empty_val_or_test_split_is_a_warning_naming_it(tmp_path, capsys, scheme, empty):
    root = write_torchvision_pets(tmp_path, breed_id="3", noise_trimaps=False)  # 3 images a breed: < 15% each
    out = tmp_path / "m.parquet"
    status, err = pets_cli(capsys, root, out, "--split", scheme)
    assert status == 0 and out.is_file()
    warned = {line.split(": the ", 1)[1].split(" split is empty")[0] for line in err.splitlines()
              if line.startswith(f"mixsweep: warning: {root / 'oxford-iiit-pet'}: the ") and "split is empty" in line}
    assert warned == set(empty)


@pytest.mark.parametrize("missing", ["trainval.txt", "test.txt"])
def test_pets_official_split_needs_both_split_files(tmp_path, capsys, missing):
    root = write_torchvision_pets(tmp_path, breed_id="3", noise_trimaps=False)
    path = root / "oxford-iiit-pet" / "annotations" / missing
    path.unlink()
    out = tmp_path / "m.parquet"
    msg = cli_error(capsys, ["data", "pets", "--root", str(root), "--out", str(out), "--split", "official"])
    assert msg.startswith(f"mixsweep: error: {path}: not found; --split official takes test from")
    assert not out.exists()


def test_coco_index_help_names_the_required_fields_and_neither(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "coco-index", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Required in the JSON" in text and "images[] id, file_name, width, height" in text
    assert "categories[] id, name, supercategory" in text
    assert "neither the rest: an image without annotations (unless --unlabelled-as-non-animal)" in text
    assert "Mixtures never draw these" in text


def test_mix_default_val_size_says_it_is_the_default(tmp_path, capsys):
    ann, _ = write_coco_fixture(tmp_path, {k: COCO_CASES[k] for k in (1, 2, 7)})  # 2 animal, 1 non-animal
    index = tmp_path / "index.parquet"
    assert main(["data", "coco-index", "--annotations", str(ann), "--out", str(index)]) == 0
    argv = ["data", "mix", "--index", str(index), "--animal-fraction", "0.5", "--out", str(tmp_path / "mix.parquet")]
    msg = cli_error(capsys, argv)
    assert msg.startswith("mixsweep: error: the default --val-size 1 (1/25 of the smaller class, at least 1): "
                          "validation needs 1 animal and 1 non-animal images, at most 0 of each are available")
    msg = cli_error(capsys, argv + ["--val-size", "1"])
    assert msg.startswith("mixsweep: error: --val-size 1: validation needs")
