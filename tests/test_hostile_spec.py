"""Hostile or nonsensical sweep specs and job configs: each is refused at validation, as one line naming the file,
the key path and the problem (`<file>: <key.path>: <problem>`), and the CLI exits 2 with that line. Cheap: no
data, no Ray, no training."""

from __future__ import annotations

import os
import pwd
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from mixsweep.cli import main
from mixsweep.errors import MixsweepError
from mixsweep.spec import FractionRange, SweepSpec, load_spec
from mixsweep.train.config import SEED_MAX, FinetuneJob, PretrainJob, load_job
from mixsweep.yamlio import read_yaml

# A small valid spec; each case edits one line of it.
VALID = """\
name: t
grid:
  animal_fractions: [0.0, 1.0]
  seeds: [0]
data: {synth: {}}
"""

NO_USER = "mixsweep-no-such-user"


def write(tmp_path: Path, text: str | bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def spec_error(path: Path) -> str:
    with pytest.raises(MixsweepError) as e:
        load_spec(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg[len(f"{path}: "):]


def bad_spec(tmp_path: Path, text: str | bytes) -> str:
    """The problem (after `<file>: `) the spec `text` is refused with."""
    return spec_error(write(tmp_path, text))


def job_dict(**changes) -> dict:
    """A valid pre-training job (its paths need not exist to validate), with dotted keys set to values."""
    job: dict = {"kind": "pretrain", "preset": "tiny", "seed": 0, "data": {"mixture": "mix.parquet", "images": "imgs"},
                 "run": {"name": "r", "storage": "runs"}}
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = job
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return job


def job_error(tmp_path: Path, job: dict) -> str:
    path = write(tmp_path, yaml.safe_dump(job), "job.yaml")
    with pytest.raises(MixsweepError) as e:
        load_job(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg[len(f"{path}: "):]


def cli_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mixsweep: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_the_valid_spec_loads(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    assert spec.name == "t" and spec.grid.seeds == [0]


# --- 1. inf and NaN -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["pretrain", "finetune"])
@pytest.mark.parametrize("field", ["blr", "weight_decay", "min_lr", "clip_grad", "warmup_epochs", "hflip"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_recipe_values(tmp_path, section, field, value):
    msg = bad_spec(tmp_path, VALID + f"{section}: {{{field}: {value}}}\n")
    assert msg == f"{section}.{field}: Input should be a finite number"


@pytest.mark.parametrize("text, where", [
    (VALID.replace("[0.0, 1.0]", "[0.0, .nan]"), "grid.animal_fractions.1"),
    (VALID.replace("[0.0, 1.0]", "{start: 0, stop: .inf, step: 0.5}"), "grid.animal_fractions: range key stop"),
    (VALID.replace("seeds: [0]", "seeds: [0]\n  finetune_fractions: [.nan]"), "grid.finetune_fractions.0"),
    (VALID + "pretrain: {betas: [0.9, .nan]}\n", "pretrain.betas.1"),
    (VALID + "resources: {pretrain: {cpus_per_worker: .inf}}\n", "resources.pretrain.cpus_per_worker"),
    (VALID + "resources: {trial_cpus: .nan}\n", "resources.trial_cpus"),
    (VALID + "resources: {trial_resources: {head: .inf}}\n", "resources.trial_resources.head"),
])
def test_non_finite_values_anywhere_in_a_spec(tmp_path, text, where):
    msg = bad_spec(tmp_path, text)
    assert msg.startswith(f"{where}: ") and "Input should be a finite number" in msg, msg


def test_non_finite_job_values(tmp_path):
    msg = job_error(tmp_path, job_dict(**{"recipe.blr": float("inf")}))
    assert msg == "recipe.blr: Input should be a finite number"
    tracking = {"root": "w", "run_id": "abc", "timeout_s": float("inf")}
    assert job_error(tmp_path, job_dict(tracking=tracking)) == "tracking.timeout_s: Input should be a finite number"


def _models(model: type[BaseModel], seen: set) -> set:
    """`model` and every model class its fields hold (through Optional, list, dict, tuple)."""
    if model in seen:
        return seen
    seen.add(model)
    stack = [f.annotation for f in model.model_fields.values()]
    while stack:
        t = stack.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            _models(t, seen)
        stack.extend(typing.get_args(t))
    return seen


def test_every_config_model_refuses_inf_and_nan():
    # One rule for every float: a model that is not built on the shared base would take `.inf` again.
    models: set = set()
    for root in (SweepSpec, FractionRange, PretrainJob, FinetuneJob):
        _models(root, models)
    assert len(models) >= 15
    lax = sorted(m.__name__ for m in models if m.model_config.get("allow_inf_nan", True))
    assert lax == []


# --- 2. duplicate keys -------------------------------------------------------------------------------------------


def test_a_second_grid_is_an_error_not_a_silent_override(tmp_path):
    msg = bad_spec(tmp_path, VALID + "grid: {animal_fractions: [0.5], seeds: [1]}\n")
    assert msg == "grid: duplicate key at line 6, column 1 (first at line 2, column 1)"


def test_duplicate_nested_keys_name_their_path(tmp_path):
    msg = bad_spec(tmp_path, VALID + "pretrain: {blr: 1.0e-3, epochs: 2, blr: 2.0e-3}\n")
    assert msg == "pretrain.blr: duplicate key at line 6, column 36 (first at line 6, column 12)"
    msg = bad_spec(tmp_path, VALID.replace("  seeds: [0]\n", "  seeds: [0]\n  seeds: [1]\n"))
    assert msg == "grid.seeds: duplicate key at line 5, column 3 (first at line 4, column 3)"


def test_duplicate_keys_in_list_items_and_job_configs(tmp_path):
    with pytest.raises(MixsweepError, match=r"l\.yaml: jobs\.1\.x: duplicate key at line 3"):
        read_yaml(write(tmp_path, "jobs:\n  - {x: 1}\n  - {x: 1, x: 2}\n", "l.yaml"))
    text = yaml.safe_dump(job_dict()) + "seed: 3\n"
    path = write(tmp_path, text, "job.yaml")
    with pytest.raises(MixsweepError, match=r"job\.yaml: seed: duplicate key at line \d+, column 1"):
        load_job(path)


def test_merge_keys_are_not_duplicates_and_loading_stays_safe(tmp_path):
    data = read_yaml(write(tmp_path, "base: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n", "m.yaml"))
    assert data["c"] == {"x": 3, "y": 2}
    msg = bad_spec(tmp_path, VALID + "description: !!python/object/apply:os.getcwd []\n")
    assert msg.startswith("malformed YAML at line 6") and "could not determine a constructor" in msg, msg


# --- 3. name --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, problem", [
    ("'..'", "'..' is not a name: as a folder it is the folder itself or its parent"),
    ("'.'", "'.' is not a name: as a folder it is the folder itself or its parent"),
    ("a/b", "String should match pattern"),
    ("'a\\b'", "String should match pattern"),
    ("../store", "String should match pattern"),
    ("' '", "String should match pattern"),
    ("''", "String should have at least 1 character"),
    ("a" * 129, "name of 129 characters: at most 128"),
])
def test_name_is_a_plain_name(tmp_path, name, problem):
    msg = bad_spec(tmp_path, VALID.replace("name: t", f"name: {name}"))
    assert msg.startswith("name: ") and problem in msg, msg


def test_plain_names_still_load(tmp_path):
    for name in ("smoke.v2", "a_b-c", "...", "x" * 128):
        assert load_spec(write(tmp_path, VALID.replace("name: t", f"name: '{name}'"))).name == name


def test_run_name_of_a_job_is_a_plain_name(tmp_path):
    msg = job_error(tmp_path, job_dict(**{"run.name": ".."}))
    assert msg == "run.name: '..' is not a name: as a folder it is the folder itself or its parent"


# --- 4. seeds -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid_line, problem", [
    ("seeds: [true]", "grid.seeds.0: Input should be a valid integer"),
    ("seeds: [0, '1']", "grid.seeds.1: Input should be a valid integer"),
    ("seeds: [0, 1.5]", "grid.seeds.1: Input should be a valid integer"),
    (f"seeds: [0, {2**64}]", f"grid.seeds: seed {2**64} is too large (at most 2**63 - 1)"),
    (f"seeds: [{SEED_MAX + 1}]", f"grid.seeds: seed {SEED_MAX + 1} is too large (at most 2**63 - 1)"),
    ("seeds: [-1, 0]", "grid.seeds: seed -1 is negative"),
    ("seeds: [0, 1]\n  baseline_seeds: [true]", "grid.baseline_seeds.0: Input should be a valid integer"),
])
def test_grid_seeds(tmp_path, grid_line, problem):
    assert bad_spec(tmp_path, VALID.replace("seeds: [0]", grid_line)) == problem


def test_largest_seed_loads(tmp_path):
    spec = load_spec(write(tmp_path, VALID.replace("seeds: [0]", f"seeds: [{SEED_MAX}, 0]")))
    assert spec.grid.seeds == [0, SEED_MAX]


@pytest.mark.parametrize("synth, problem", [
    ("{seed: true}", "data.synth.seed: Input should be a valid integer"),
    (f"{{seed: {2**64}}}", f"data.synth.seed: seed {2**64} is too large (at most 2**63 - 1)"),
    ("{seed: -3}", "data.synth.seed: seed -3 is negative"),
])
def test_synth_world_seed(tmp_path, synth, problem):
    assert bad_spec(tmp_path, VALID.replace("synth: {}", f"synth: {synth}")) == problem


@pytest.mark.parametrize("key, value, problem", [
    ("seed", True, "seed: Input should be a valid integer"),
    ("seed", "3", "seed: Input should be a valid integer"),
    ("seed", 2**64, f"seed: seed {2**64} is too large (at most 2**63 - 1)"),
    ("seed", -1, "seed: seed -1 is negative"),
])
def test_job_seed(tmp_path, key, value, problem):
    assert job_error(tmp_path, job_dict(**{key: value})) == problem


def test_finetune_subset_seed(tmp_path):
    job = {"kind": "finetune", "model": "scratch", "preset": "tiny", "run": {"name": "r"},
           "data": {"manifest": "pets.parquet", "subset_seed": -1}}
    assert job_error(tmp_path, job) == "data.subset_seed: seed -1 is negative"
    job["data"]["subset_seed"] = False
    assert job_error(tmp_path, job) == "data.subset_seed: Input should be a valid integer"


# --- 5. binary files ----------------------------------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"


@pytest.mark.parametrize("content", [PNG, b"\xff" + os.urandom(512)], ids=["png", "random"])
def test_binary_spec_is_one_line(tmp_path, content):
    assert bad_spec(tmp_path, content) == "not a spec file: binary content (byte 0 is not UTF-8 text)"


def test_control_characters_are_one_line(tmp_path):
    msg = bad_spec(tmp_path, "name: t\x00\n")
    assert msg == "not a spec file: character #x0000 at position 7 is not allowed in YAML"


def test_binary_job_config_is_one_line(tmp_path):
    path = write(tmp_path, PNG, "job.yaml")
    with pytest.raises(MixsweepError, match=r"job\.yaml: not a config file: binary content"):
        load_job(path)


# --- 6. storage and other paths -------------------------------------------------------------------------------


def _no_such_user() -> str:
    with pytest.raises(KeyError):
        pwd.getpwnam(NO_USER)
    return NO_USER


def test_storage_under_an_unknown_users_home(tmp_path):
    user = _no_such_user()
    msg = bad_spec(tmp_path, VALID + f"storage: '~{user}/x'\n")
    assert msg == f"storage: '~{user}/x': no home folder for ~{user} (no such user here)"


@pytest.mark.parametrize("line, problem", [
    ("storage: ' '", "storage: empty path"),
    ("storage: ''", "storage: empty path"),
    ("train_storage: ''", "train_storage: empty path"),
    ("mirror: '  '", "mirror: empty path"),
])
def test_blank_storage(tmp_path, line, problem):
    assert bad_spec(tmp_path, VALID + line + "\n") == problem


def test_home_paths_still_load(tmp_path):
    spec = load_spec(write(tmp_path, VALID + "storage: ~/runs/store\nmirror: s3://bucket/x\n"))
    assert spec.storage == "~/runs/store" and spec.mirror == "s3://bucket/x"


def test_data_roots_empty_or_under_an_unknown_home(tmp_path):
    user = _no_such_user()
    real = "data: {coco_annotations: %s, coco_images: /tmp, pets_root: /tmp}"
    msg = bad_spec(tmp_path, VALID.replace("data: {synth: {}}", real % "''"))
    assert msg == "data.coco_annotations: empty path"  # was the spec's own folder, which exists
    msg = bad_spec(tmp_path, VALID.replace("data: {synth: {}}", real % f"'~{user}/a.json'"))
    assert msg == f"data.coco_annotations: '~{user}/a.json': no home folder for ~{user} (no such user here)"


@pytest.mark.parametrize("key, value", [
    ("run.storage", f"~{NO_USER}/runs"), ("run.storage", " "), ("run.artifacts", ""), ("data.images", ""),
    ("data.mixture", f"~{NO_USER}/m.parquet"), ("init_checkpoint", ""),
])
def test_job_paths(tmp_path, key, value):
    msg = job_error(tmp_path, job_dict(**{key: value}))
    assert msg.startswith(f"{key}: ") and ("empty path" in msg or f"no home folder for ~{NO_USER}" in msg), msg


# --- 7. YAML that crashed the reader ------------------------------------------------------------------------


def test_invalid_dates_and_tags_are_yaml_errors(tmp_path):
    msg = bad_spec(tmp_path, VALID + "description: 2001-13-45\n")
    assert msg == "malformed YAML at line 6, column 14: '2001-13-45' is not a valid timestamp (month must be in 1..12)"
    msg = bad_spec(tmp_path, VALID + "checkpoint_every: !!int many\n")
    assert msg.startswith("malformed YAML at line 6, column 19: 'many' is not a valid int"), msg


def test_deep_nesting_is_one_line(tmp_path):
    assert bad_spec(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n") == "malformed YAML: nested too deeply"


# --- through the command line -------------------------------------------------------------------------------


def test_cli_refuses_hostile_specs_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the specs' relative storage (runs/store) would land here
    cases = {
        "dup.yaml": (VALID + "grid: {animal_fractions: [0.5], seeds: [1]}\n",
                     "grid: duplicate key at line 6, column 1 (first at line 2, column 1)"),
        "inf.yaml": (VALID + "pretrain: {blr: .inf}\n", "pretrain.blr: Input should be a finite number"),
        "name.yaml": (VALID.replace("name: t", "name: '..'"), "name: '..' is not a name"),
        "seed.yaml": (VALID.replace("seeds: [0]", "seeds: [true]"), "grid.seeds.0: Input should be a valid integer"),
        "store.yaml": (VALID + f"storage: '~{NO_USER}/x'\n", f"storage: '~{NO_USER}/x': no home folder"),
        "image.png": (PNG, "not a spec file: binary content"),
    }
    for name, (text, problem) in cases.items():
        path = write(tmp_path, text, name)
        for command in ("plan", "results"):
            line = cli_error(capsys, [command, str(path)])
            assert line.startswith(f"mixsweep: error: {path}: {problem}"), line
    assert not (tmp_path / "runs").exists()


def test_cli_refuses_a_hostile_job_in_one_line(tmp_path, capsys):
    path = write(tmp_path, yaml.safe_dump(job_dict(seed=2**64)), "job.yaml")
    line = cli_error(capsys, ["train", "pretrain", str(path), "--local"])
    assert line == f"mixsweep: error: {path}: seed: seed {2**64} is too large (at most 2**63 - 1)"
