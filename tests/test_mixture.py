"""Mixtures: exact counts, nesting along the grid, byte-identical output, clear infeasibility errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mixsweep.cli import main
from mixsweep.data.mixture import build_mixture, n_animal_for, plan_pools
from mixsweep.errors import MixsweepError
from mixsweep.tables import write_table

N_ANIMAL, N_NON = 230, 410


def make_index(n_animal=N_ANIMAL, n_non=N_NON, n_neither=15, start=1, stride=7) -> pa.Table:
    """A COCO-index-shaped table with sparse, non-sequential image ids."""
    n = n_animal + n_non + n_neither
    ids = start + stride * np.arange(n)
    kind = np.array(["a"] * n_animal + ["n"] * n_non + ["x"] * n_neither)
    np.random.default_rng(3).shuffle(kind)
    return pa.table({
        "image_id": pa.array(ids, pa.int64()),
        "file_name": [f"{i:012d}.jpg" for i in ids],
        "width": pa.array([640] * n, pa.int32()),
        "height": pa.array([480] * n, pa.int32()),
        "is_animal": pa.array(kind == "a"),
        "is_non_animal": pa.array(kind == "n"),
    })


def ids_of(table, split="train", animal=None) -> set[int]:
    mask = pc.equal(table.column("split"), split)
    if animal is not None:
        mask = pc.and_(mask, pc.equal(table.column("is_animal"), animal))
    return set(table.filter(mask).column("image_id").to_pylist())


FRACTIONS = [0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.95, 1.0]


@pytest.mark.parametrize("size", [None, 101, 37])
def test_exact_counts_no_duplicates(size):
    index = make_index()
    truth = dict(zip(index.column("image_id").to_pylist(), index.column("is_animal").to_pylist()))
    for f in FRACTIONS:
        mix = build_mixture(index, f, size=size, seed=1)
        train = mix.filter(pc.equal(mix.column("split"), "train"))
        n = size if size is not None else plan_pools(index, 1).train.max_size
        assert train.num_rows == n
        assert len(ids_of(mix, "train", True)) == n_animal_for(f, n)
        ids = mix.column("image_id").to_pylist()
        assert len(ids) == len(set(ids)), "duplicate image, or train and val overlap"
        # The is_animal column tells the truth of the index, and non-animal means truly non-animal.
        for i, a in zip(ids, mix.column("is_animal").to_pylist()):
            assert truth[i] == a


def test_round_half_up():
    assert n_animal_for(0.5, 5) == 3 and n_animal_for(0.25, 10) == 3 and n_animal_for(0.1, 30) == 3
    assert n_animal_for(0.0, 7) == 0 and n_animal_for(1.0, 7) == 7


def test_nested_along_the_grid():
    index = make_index()
    mixes = {f: build_mixture(index, f, size=150, seed=4) for f in FRACTIONS}
    for f1, f2 in zip(FRACTIONS, FRACTIONS[1:]):
        assert ids_of(mixes[f1], animal=True) <= ids_of(mixes[f2], animal=True)
        assert ids_of(mixes[f2], animal=False) <= ids_of(mixes[f1], animal=False)
        # Validation is built the same way, at the same fraction.
        assert ids_of(mixes[f1], "val", True) <= ids_of(mixes[f2], "val", True)
        assert ids_of(mixes[f2], "val", False) <= ids_of(mixes[f1], "val", False)
    # The validation set never changes with the seed and never meets the training pool.
    other_seed = build_mixture(index, 0.5, size=150, seed=5)
    assert ids_of(other_seed, "val") == ids_of(mixes[0.5], "val")
    assert ids_of(other_seed, "train") != ids_of(mixes[0.5], "train")
    all_train = set().union(*(ids_of(m) for m in mixes.values()))
    assert not all_train & ids_of(mixes[0.5], "val")


def test_independent_of_row_order_and_index_growth():
    index = make_index()
    shuffled = index.take(np.random.default_rng(0).permutation(index.num_rows))
    a = build_mixture(index, 0.3, size=120, seed=2)
    b = build_mixture(shuffled, 0.3, size=120, seed=2)
    assert a.equals(b)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_byte_identical_across_processes(tmp_path):
    index_path = write_table(make_index(), tmp_path / "index.parquet")
    digests = []
    for run, hashseed in enumerate(("1", "987")):
        out = tmp_path / f"mix{run}.parquet"
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        proc = subprocess.run([sys.executable, "-m", "mixsweep.cli", "data", "mix", "--index", str(index_path),
                               "--animal-fraction", "0.3", "--size", "200", "--seed", "7", "--out", str(out)],
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        digests.append(_sha(out))
    assert digests[0] == digests[1]
    # ... and the in-process writer agrees with the CLI.
    write_table(build_mixture(make_index(), 0.3, size=200, seed=7), tmp_path / "inproc.parquet")
    assert _sha(tmp_path / "inproc.parquet") == digests[0]


def test_default_size_is_largest_feasible_at_every_fraction():
    index = make_index()
    plan = plan_pools(index, 0)
    held = plan.val_size
    assert plan.train.max_size == N_ANIMAL - held
    for f in (0.0, 1.0):
        mix = build_mixture(index, f, seed=0)
        assert len(ids_of(mix)) == N_ANIMAL - held


def test_infeasible_size_names_the_counts():
    index = make_index()
    with pytest.raises(MixsweepError) as e:
        build_mixture(index, 0.9, size=300, seed=0)
    msg = str(e.value)
    assert "--size 300 at animal fraction 0.9 needs 270 animal and 30 non-animal" in msg
    assert "the index has 221 animal and 401 non-animal" in msg and "largest size valid at every fraction: 221" in msg
    assert "\n" not in msg
    # Feasible at a low fraction with the same size.
    assert build_mixture(index, 0.1, size=300, seed=0).num_rows > 300


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_fraction_outside_unit_interval(fraction):
    with pytest.raises(MixsweepError, match="outside \\[0, 1\\]"):
        build_mixture(make_index(), fraction, size=10)


def test_validation_from_a_separate_index():
    train = make_index()
    val = make_index(n_animal=40, n_non=60, n_neither=2, start=10_000_000)
    for f in (0.0, 0.5, 1.0):
        mix = build_mixture(train, f, size=100, seed=0, val_index=val)
        assert len(ids_of(mix, "val")) == 40
        assert len(ids_of(mix, "val", True)) == n_animal_for(f, 40)
        assert min(ids_of(mix, "val")) >= 10_000_000
        assert len(ids_of(mix)) == 100
    with pytest.raises(MixsweepError, match="shares .* image ids"):
        build_mixture(train, 0.5, size=100, val_index=train)


def test_cli_mix_prints_counts(tmp_path, capsys):
    index_path = write_table(make_index(), tmp_path / "index.parquet")
    out = tmp_path / "mix.parquet"
    assert main(["data", "mix", "--index", str(index_path), "--animal-fraction", "0.25", "--size", "40",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and " 10 " in printed and " 30 " in printed
    assert main(["data", "mix", "--index", str(tmp_path / "none.parquet"), "--animal-fraction", "0.25",
                 "--out", str(out)]) == 2
    assert "none.parquet: COCO index not found" in capsys.readouterr().err
