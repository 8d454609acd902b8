"""The command line end to end on synthetic data: help, the data steps in order, the demo."""

from __future__ import annotations

import re

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mixsweep.cli import build_parser, main


def test_help_names_every_step(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for step in ("data synth", "data coco-index", "data mix", "data pets", "data pack", "demo", "train pretrain",
                 "plan SPEC", "run SPEC", "report SPEC", "suggest SPEC", "sync SPEC"):
        assert step in text
    data = build_parser()._subparsers._group_actions[0].choices["data"]
    assert set(data._subparsers._group_actions[0].choices) == {"coco-index", "mix", "pets", "synth", "pack"}


def test_bad_fraction_is_rejected_by_the_parser(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["data", "mix", "--index", "x.parquet", "--animal-fraction", "1.5", "--out", str(tmp_path / "m")])
    assert e.value.code == 2
    assert "1.5 is outside [0, 1]" in capsys.readouterr().err


def test_data_steps_in_order(synth_small, tmp_path, capsys):
    index, val_index = tmp_path / "index.parquet", tmp_path / "val_index.parquet"
    assert main(["data", "coco-index", "--annotations", str(synth_small.coco_train_annotations),
                 "--images", str(synth_small.coco_train_images), "--out", str(index)]) == 0
    assert main(["data", "coco-index", "--annotations", str(synth_small.coco_val_annotations),
                 "--images", str(synth_small.coco_val_images), "--out", str(val_index)]) == 0
    mixes = []
    for f in ("0", "0.5", "1"):
        mixes.append(tmp_path / f"mix_{f}.parquet")
        assert main(["data", "mix", "--index", str(index), "--val-index", str(val_index), "--animal-fraction", f,
                     "--out", str(mixes[-1])]) == 0
    cache = tmp_path / "cache"
    argv = ["data", "pack", "--mix", *map(str, mixes), "--images", str(synth_small.coco_train_images),
            "--val-images", str(synth_small.coco_val_images), "--cache", str(cache), "--size", "64"]
    capsys.readouterr()
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "(0 unreadable)" in first.out
    # The union of the three grid points: F=0 and F=1 together hold every image of F=0.5.
    ids = set()
    for m in mixes:
        ids |= set(pq.read_table(m).column("image_id").to_pylist())
    packs = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(packs) == 1
    assert pq.read_table(packs[0] / "rows.parquet").num_rows == len(ids)
    mid = pq.read_table(mixes[1])
    ends = set(pq.read_table(mixes[0]).column("image_id").to_pylist()) | set(
        pq.read_table(mixes[2]).column("image_id").to_pylist())
    assert set(mid.column("image_id").to_pylist()) <= ends
    # Second call: same key, reused, no new pack folder.
    assert main(argv) == 0
    second = capsys.readouterr().out
    key = re.search(r"pack (\w+): ", first.out).group(1)
    assert f"pack {key}: " in second and "packing" not in second and "(found, nothing decoded)" in second
    assert f"({len(ids)} decoded, 0 copied from earlier packs)" in first.out
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1

    pets = tmp_path / "pets.parquet"
    assert main(["data", "pets", "--root", str(synth_small.pets_root), "--out", str(pets)]) == 0
    assert main(["data", "pack", "--pets", str(pets), "--cache", str(cache), "--size", "64"]) == 0
    table = pq.read_table(pets)
    usable = table.filter(pc.equal(table.column("usable"), True)).num_rows
    assert f"{usable} images (0 unreadable)" in capsys.readouterr().out


def test_demo_writes_its_outputs(synth_small, tmp_path):
    import shutil

    # Reuse the session's synthetic data: the demo's synth step finds it and returns at once.
    shutil.copytree(synth_small.root, tmp_path / "data")
    assert main(["demo", "--tour", "--out", str(tmp_path)]) == 0
    png = tmp_path / "augment_preview.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mixes = sorted((tmp_path / "mixes").glob("*.parquet"))
    assert len(mixes) == 5
    for m in mixes:
        t = pq.read_table(m)
        assert t.filter(pc.equal(t.column("split"), "train")).num_rows == pq.read_table(mixes[0]).filter(
            pc.equal(pq.read_table(mixes[0]).column("split"), "train")).num_rows


def test_packaged_demo_spec_from_any_folder(tmp_path, monkeypatch):
    """`mixsweep demo` needs no checkout: its spec ships in the package; world and seed pick the store."""
    from mixsweep.demo import demo_spec
    from mixsweep.sweep.plan import _synth_tag

    monkeypatch.chdir(tmp_path)
    planted, where = demo_spec("planted", 0)
    null, _ = demo_spec("null", 3)
    assert where == "mixsweep/specs/demo.yaml"
    assert (null.name, null.storage) == ("demo-null-s3", "runs/demo-null-s3")
    assert (null.data.synth.world, null.data.synth.seed, planted.data.synth.world) == ("null", 3, "planted")
    assert {0.0, 1.0} <= set(planted.grid.animal_fractions)
    # the verdict is declared in the spec, and a probe recipe backs the probe endpoint
    assert (planted.effect.method, planted.effect.direction) == ("probe", "decrease") and planted.probe is not None
    assert len(planted.grid.seeds) >= 3 and set(planted.baselines) == {"supervised_mae", "random_probe"}
    # Worlds share image ids, so their stage keys must differ by the world itself.
    assert _synth_tag(planted.data.synth) != _synth_tag(demo_spec("null", 0)[0].data.synth)
