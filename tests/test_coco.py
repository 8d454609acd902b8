"""COCO index: the animal rule on awkward images, categories read from the JSON, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from fixtures import CATEGORIES, COCO_CASES, write_coco_fixture
from mixsweep.cli import main
from mixsweep.data.coco import build_coco_index
from mixsweep.errors import MixsweepError


def _classes(table) -> dict[int, str]:
    out = {}
    for image_id, a, n in zip(table.column("image_id").to_pylist(), table.column("is_animal").to_pylist(),
                              table.column("is_non_animal").to_pylist()):
        assert not (a and n), f"image {image_id} is both animal and non-animal"
        out[image_id] = "animal" if a else "non_animal" if n else "neither"
    return out


@pytest.mark.parametrize("rule,col", [("any", 1), ("paper", 2)])
def test_rule_classifies_each_awkward_image(tmp_path, rule, col):
    ann, images = write_coco_fixture(tmp_path)
    table, summary = build_coco_index(ann, images, rule=rule)
    expected = {i: case[col] for i, case in COCO_CASES.items()}
    assert _classes(table) == expected
    assert summary.n_animal == sum(v == "animal" for v in expected.values())
    assert summary.n_neither == sum(v == "neither" for v in expected.values())


def test_unlabelled_flag_counts_empty_images_as_non_animal(tmp_path):
    ann, images = write_coco_fixture(tmp_path)
    table, _ = build_coco_index(ann, images, unlabelled_as_non_animal=True)
    assert _classes(table)[6] == "non_animal"
    assert _classes(table)[1] == "animal"


def test_columns_and_counts_per_image(tmp_path):
    ann, images = write_coco_fixture(tmp_path)
    table, summary = build_coco_index(ann, images)
    assert table.column_names == ["image_id", "file_name", "width", "height", "category_ids", "n_annotations",
                                  "is_animal", "is_non_animal"]
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert rows[2]["category_ids"] == [17, 18]
    assert rows[9]["category_ids"] == [18] and rows[9]["n_annotations"] == 3
    assert rows[4]["n_annotations"] == 2  # the crowd region is counted
    assert rows[6]["n_annotations"] == 0 and rows[6]["category_ids"] == []
    # Per-category counts count image 2 (cat + dog) twice; the per-image animal count does not.
    assert summary.per_category == {"cat": 2, "dog": 3, "zebra": 2}
    assert summary.n_multi_animal == 1
    assert summary.per_category_sum == summary.n_animal + 1


def test_animal_categories_come_from_the_json_not_from_ids(tmp_path):
    # Same images, but the animal categories get ids far from COCO's 16-25.
    remap = {17: 117, 18: 218, 42: 342}
    cats = [dict(c, id=remap.get(c["id"], c["id"])) for c in CATEGORIES]
    cases = {i: ([(remap.get(c, c), crowd) for c, crowd in objs], a, p) for i, (objs, a, p) in COCO_CASES.items()}
    ann, images = write_coco_fixture(tmp_path, cases=cases, categories=cats)
    table, summary = build_coco_index(ann, images)
    assert _classes(table) == {i: case[1] for i, case in COCO_CASES.items()}
    assert set(summary.per_category) == {"cat", "dog", "zebra"}


def test_synthetic_coco_has_every_kind(synth_small):
    table, summary = build_coco_index(synth_small.coco_train_annotations, synth_small.coco_train_images)
    assert summary.n_animal > 20 and summary.n_non_animal > 20 and summary.n_neither >= 1
    assert summary.n_multi_animal >= 1
    assert summary.per_category_sum > summary.n_animal
    rows = table.to_pylist()
    assert any(r["is_animal"] and 1 in r["category_ids"] for r in rows), "no animal + person image"


def test_malformed_json_is_one_line_naming_file_and_position(tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_text('{"images": [1, 2,,]}')
    with pytest.raises(MixsweepError, match=r"instances\.json: malformed JSON at line 1, column 18: Expecting value"):
        build_coco_index(bad)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("categories"), "missing key 'categories'"),
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\] lacks 'file_name'"),
    (lambda d: d["annotations"][0].update(category_id=999), "unknown category_id 999"),
    (lambda d: d["annotations"][0].update(image_id=12345), "unknown image_id 12345"),
])
def test_structurally_wrong_json(tmp_path, mutate, message):
    ann, images = write_coco_fixture(tmp_path)
    data = json.loads(ann.read_text())
    mutate(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(MixsweepError, match=message):
        build_coco_index(ann, images)


def test_missing_files_and_folders(tmp_path):
    ann, images = write_coco_fixture(tmp_path)
    with pytest.raises(MixsweepError, match="annotation file not found"):
        build_coco_index(tmp_path / "nope.json", images)
    with pytest.raises(MixsweepError, match="image folder not found"):
        build_coco_index(ann, tmp_path / "no-images")
    (images / f"{3:012d}.jpg").unlink()
    with pytest.raises(MixsweepError, match=r"000000000003\.jpg: image file missing \(1 of 10"):
        build_coco_index(ann, images)
    table, _ = build_coco_index(ann, images, allow_missing=True)
    assert 3 not in table.column("image_id").to_pylist() and table.num_rows == 9


def test_cli_writes_index_and_prints_counts(tmp_path, capsys):
    ann, images = write_coco_fixture(tmp_path)
    out = tmp_path / "index.parquet"
    assert main(["data", "coco-index", "--annotations", str(ann), "--images", str(images), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sum over categories" in printed and "25,739" in printed
    assert pq.read_table(out).num_rows == len(COCO_CASES)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "mixsweep.cli", "data", "coco-index", "--annotations", str(bad),
                           "--out", str(tmp_path / "x.parquet")], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mixsweep: error: ") and str(bad) in lines[0]
    assert "Traceback" not in proc.stderr
