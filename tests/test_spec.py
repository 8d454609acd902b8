"""Sweep specs: the shipped files load and expand to their documented grids; bad specs are one line each."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mixsweep.errors import MixsweepError
from mixsweep.spec import FractionRange, load_spec, parse_spec, spec_to_yaml_snippet

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
DEGRADATION = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def shipped_as_synth(name: str):
    """A shipped spec with its data roots swapped for synthetic data, so every check runs."""
    data = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    data["data"] = {"synth": {"scale": "small"}}
    return parse_spec(data, f"{name}.yaml")


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """\
name: t
grid: {animal_fractions: [0.0, 1.0], seeds: [0]}
data: {synth: {}}
"""


def error_of(path: Path, **kw) -> str:
    with pytest.raises(MixsweepError) as e:
        load_spec(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    return msg


# --- the shipped specs -------------------------------------------------------------------------------


def test_smoke_spec():
    spec = load_spec(SWEEPS / "smoke.yaml")  # synthetic: loads with every check on
    assert spec.data.synth is not None and spec.preset == "tiny"
    assert spec.grid.animal_fractions == [0.0, 0.5, 1.0]
    assert spec.grid.finetune_fractions == [0.5, 1.0] and spec.grid.seeds == [0, 1]
    assert spec.baselines == ["supervised_mae"]
    assert (spec.pretrain.epochs, spec.pretrain.batch_size, spec.pretrain.warmup_epochs) == (3, 16, 1)
    assert spec.pretrain.blr == 1.5e-3 and spec.finetune.blr == 1e-2 and spec.finetune.epochs == 4
    assert spec.pretrain.mask_ratio == 0.75  # unspecified fields keep the recipe defaults
    assert spec.mixture.pack_size == 64 and spec.wandb.mode == "offline" and spec.storage == "runs/smoke"
    assert not spec.resources.pretrain.use_gpu and spec.checkpoint_every == 1


@pytest.mark.parametrize("name", ["paper", "degradation", "finer", "recipe-axes"])
def test_real_data_specs_load(name):
    spec = load_spec(SWEEPS / f"{name}.yaml", check_paths=False)
    assert spec.name == name and spec.preset == "base" and spec.storage == "runs/store"
    assert spec.data.synth is None and spec.data.pets_root == Path("/data/oxford-iiit-pet")
    assert spec.baselines == ["supervised_mae", "resnet50"]
    assert spec.resources.pretrain.use_gpu and spec.resources.pretrain.gpus_per_worker == 1
    assert shipped_as_synth(name).grid == spec.grid


def test_real_data_specs_need_their_roots():
    msg = error_of(SWEEPS / "paper.yaml")
    assert "data.coco_annotations: missing data root: /data/coco" in msg


def test_paper_grid():
    spec = shipped_as_synth("paper")
    assert spec.grid.animal_fractions == [0.0, 0.5, 1.0] and spec.grid.finetune_fractions == [0.5, 1.0]
    assert spec.grid.seeds == [0] and spec.pretrain.epochs == 150 and spec.finetune.epochs == 100


def test_degradation_grid_is_exact():
    spec = shipped_as_synth("degradation")
    assert spec.grid.animal_fractions == DEGRADATION  # exact floats: 0.3, not 0.30000000000000004
    assert [repr(f) for f in spec.grid.animal_fractions][3] == "0.3"
    assert spec.grid.finetune_fractions == [0.1, 0.25, 0.5, 1.0] and spec.grid.seeds == [0, 1, 2]


def test_finer_extends_degradation():
    finer = shipped_as_synth("finer").grid.animal_fractions
    assert len(finer) == 16 and set(DEGRADATION) <= set(finer)
    assert set(finer) - set(DEGRADATION) == {0.05, 0.15, 0.25, 0.35, 0.45}
    assert sorted(set(DEGRADATION) | set(FractionRange(start=0, stop=0.5, step=0.05).values())) == finer


# --- grids ---------------------------------------------------------------------------------------------


def test_ranges_and_lists_normalise(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL.replace(
        "grid: {animal_fractions: [0.0, 1.0], seeds: [0]}",
        "grid: {animal_fractions: {start: 0.2, stop: 0.8, step: 0.3}, finetune_fractions: [1, 0.5, 0.5],"
        " seeds: [2, 0, 2]}")))
    assert spec.grid.animal_fractions == [0.2, 0.5, 0.8]  # stop included despite float error
    assert spec.grid.finetune_fractions == [0.5, 1.0] and spec.grid.seeds == [0, 2]
    assert FractionRange(start=0, stop=1, step=0.3).values() == [0.0, 0.3, 0.6, 0.9]
    assert load_spec(write(tmp_path, MINIMAL, "d.yaml")).grid.finetune_fractions == [1.0]


def test_snippet_round_trips():
    snippet = spec_to_yaml_snippet([0.5, 0.1 * 3, 0, 0.3, 1])
    assert "animal_fractions: [0.0, 0.3, 0.5, 1.0]" in snippet
    assert yaml.safe_load(snippet)["grid"]["animal_fractions"] == [0.0, 0.3, 0.5, 1.0]


def test_relative_data_paths_resolve_against_the_spec(tmp_path):
    for d in ("coco/train2017", "pets"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "coco" / "train.json").write_text("{}")
    path = write(tmp_path, MINIMAL.replace(
        "data: {synth: {}}", "data: {coco_annotations: coco/train.json, coco_images: coco/train2017, pets_root: pets}"))
    spec = load_spec(path)
    assert spec.data.pets_root == tmp_path.resolve() / "pets" and spec.data.coco_val_images is None


# --- errors: one line, file and key path ------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (MINIMAL + "colour: red\n", "colour: unknown key"),
    (MINIMAL + "pretrain: {epoch: 3}\n", "pretrain.epoch: unknown key"),
    (MINIMAL + "finetune: {epochs: 0}\n", "finetune.epochs: Input should be greater than 0"),
    (MINIMAL.replace("[0.0, 1.0]", "[0.0, 1.5]"), "grid.animal_fractions: fraction 1.5 is outside [0, 1]"),
    (MINIMAL.replace("[0.0, 1.0]", "{start: 0, stop: 1.5, step: 0.5}"),
     "grid.animal_fractions: fraction 1.5 is outside [0, 1]"),
    (MINIMAL.replace("[0.0, 1.0]", "{start: 0, stop: 1, stpe: 0.5}"),
     "grid.animal_fractions: range key stpe: unknown key"),
    (MINIMAL.replace("seeds: [0]", "seeds: [0], finetune_fractions: [0]"),
     "grid.finetune_fractions: fraction 0 is outside (0, 1]"),
    (MINIMAL.replace("seeds: [0]", "seeds: []"), "grid.seeds: empty grid"),
    (MINIMAL.replace("[0.0, 1.0]", "[]"), "grid.animal_fractions: empty grid"),
    (MINIMAL.replace("seeds: [0]", "seeds: [-1]"), "grid.seeds: seed -1 is negative"),
    (MINIMAL.replace("seeds: [0]", "seeds: [0], baseline_seeds: [0, 3]"),
     "grid: Value error, baseline_seeds must be a non-empty subset of seeds [0]; [3] is not in it"),
    (MINIMAL.replace("seeds: [0]", "seeds: [0], finetune_seeds: [1]"),
     "grid: Value error, finetune_seeds must be a non-empty subset of seeds [0]; [1] is not in it"),
    (MINIMAL.replace("seeds: [0]", "seeds: [0, 1], finetune_seeds: [1]"),
     "grid.finetune_seeds: without a probe: section the pre-trainings of seeds [0] would feed nothing"),
    (MINIMAL + "preset: huge\n", "preset: unknown preset 'huge' (choose from base, small, tiny)"),
    (MINIMAL + "baselines: [resnet101]\n", "baselines.0:"),
    (MINIMAL.replace("name: t", "name: a b"), "name: String should match pattern"),
    (MINIMAL.replace("data: {synth: {}}", "data: {synth: {}, pets_root: /tmp}"),
     "data: give either synth or the real data roots, not both"),
    (MINIMAL.replace("data: {synth: {}}", "data: {pets_root: /tmp}"),
     "data: missing data root: coco_annotations, coco_images"),
    (MINIMAL.replace("name: t\n", ""), "name: Field required"),
    (MINIMAL + "storage: s3://b/x\n", "storage: 's3://b/x' is a URI; the store must be a path every node sees"),
    (MINIMAL + "train_storage: ftp://b/x\n", "train_storage: 'ftp://b/x': unsupported scheme"),
    (MINIMAL + "mirror: ftp://b/x\n", "mirror: 'ftp://b/x': unsupported scheme"),
    (MINIMAL + "resources: {trial_resources: {CPU: 1}}\n", "resources.trial_resources: 'CPU'"),
    (MINIMAL + "resources: {pretrain: {resources: {GPU: 1}}}\n", "resources.pretrain.resources: 'GPU' has its own key"),
])
def test_bad_spec_is_one_line(tmp_path, text, expected):
    msg = error_of(write(tmp_path, text))
    assert expected in msg, msg


def test_missing_data_root_names_key_and_path(tmp_path):
    (tmp_path / "train2017").mkdir()
    (tmp_path / "ann.json").write_text("{}")
    path = write(tmp_path, MINIMAL.replace(
        "data: {synth: {}}", "data: {coco_annotations: ann.json, coco_images: train2017, pets_root: no-pets}"))
    msg = error_of(path)
    assert f"data.pets_root: missing data root: {tmp_path.resolve() / 'no-pets'} does not exist" in msg
    assert load_spec(path, check_paths=False).data.pets_root == tmp_path.resolve() / "no-pets"


def test_file_problems(tmp_path):
    assert "spec file not found" in error_of(tmp_path / "nope.yaml")
    msg = error_of(write(tmp_path, "name: t\ngrid: {animal_fractions: [0.0\nseeds: [0]\n"))
    assert "malformed YAML at line" in msg and "column" in msg
    assert "expected a mapping" in error_of(write(tmp_path, "- a\n- b\n", "l.yaml"))
    assert "got an empty file" in error_of(write(tmp_path, "", "e.yaml"))
