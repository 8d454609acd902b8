"""Hostile annotation files and folders: each is one line naming the file and what is wrong, raised while
indexing (before any training), never a silently changed label and never a file read outside its folder.

Small hand-made COCO JSON and Pet folders, read by the real pycocotools; no Ray.
"""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pytest

from fixtures import write_coco_fixture, write_pets_fixture
from mixsweep.cli import main
from mixsweep.data.coco import build_coco_index
from mixsweep.data.mixture import mixture_pack_items
from mixsweep.data.pets import build_pets_manifest, pets_pack_items
from mixsweep.errors import MixsweepError

CAT_FILE = f"{1:012d}.jpg"  # image 1 of the fixture: one cat


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one stderr line and no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mixsweep: error: "), err
    return " ".join(err[0].split())  # rich may soft-wrap a long line; compare with single spaces


def coco_cli(ann, images, out) -> list[str]:
    argv = ["data", "coco-index", "--annotations", str(ann), "--out", str(out)]
    return argv + (["--images", str(images)] if images is not None else [])


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def image(data: dict, image_id: int) -> dict:
    return next(im for im in data["images"] if im["id"] == image_id)


# --- duplicate ids: one record would replace the other and relabel its images -------------------------

def test_duplicate_image_id_names_the_id_and_both_files(tmp_path, capsys):
    ann, images = write_coco_fixture(tmp_path)
    shutil.copy(images / f"{7:012d}.jpg", images / "other.jpg")  # both files exist: no missing-file error first
    edit_json(ann, lambda d: d["images"].append({"id": 1, "file_name": "other.jpg", "width": 64, "height": 48}))
    out = tmp_path / "index.parquet"
    msg = cli_error(capsys, coco_cli(ann, images, out))
    assert msg.startswith(f"mixsweep: error: {ann}: images: id 1 (\"{CAT_FILE}\", \"other.jpg\") is used more "
                          f"than once; each image needs its own id")
    assert not out.exists()


def test_many_duplicate_image_ids_show_the_first_few_and_the_count(tmp_path):
    ann, images = write_coco_fixture(tmp_path)
    edit_json(ann, lambda d: d["images"].extend(dict(image(d, i), file_name=f"copy{i}.jpg") for i in (9, 2, 5, 7)))
    with pytest.raises(MixsweepError) as e:
        build_coco_index(ann)
    msg = str(e.value)
    assert msg.startswith(f"{ann}: images: 4 ids are used more than once: 2 (")
    assert '5 ("000000000005.jpg", "copy5.jpg"), 7 (' in msg and ", ...;" in msg
    assert "9 (" not in msg  # only the first three, in id order
    assert "\n" not in msg


def test_duplicate_category_id_would_turn_people_into_animals(tmp_path, capsys):
    ann, images = write_coco_fixture(tmp_path)
    edit_json(ann, lambda d: d["categories"].append({"id": 1, "name": "beast", "supercategory": "animal"}))
    msg = cli_error(capsys, coco_cli(ann, images, tmp_path / "index.parquet"))
    assert msg.startswith(f"mixsweep: error: {ann}: categories: id 1 (\"person\" in \"person\", \"beast\" in "
                          f"\"animal\") is used more than once; each category needs its own id")


# --- file names that leave the image folder ----------------------------------------------------------

@pytest.mark.parametrize("name,problem", [
    ("/etc/hostname", "is an absolute path"),
    ("../instances.json", "climbs out with '..'"),
    ("sub/../../instances.json", "climbs out with '..'"),
])
@pytest.mark.parametrize("with_images", [True, False])
def test_file_name_outside_the_image_folder(tmp_path, capsys, name, problem, with_images):
    ann, images = write_coco_fixture(tmp_path)
    edit_json(ann, lambda d: image(d, 1).update(file_name=name))
    msg = cli_error(capsys, coco_cli(ann, images if with_images else None, tmp_path / "index.parquet"))
    assert msg == (f"mixsweep: error: {ann}: images[0] (id 1): file_name {json.dumps(name)} {problem}; it must be "
                   f"a path relative to the image folder")


def test_symlink_leading_out_of_the_image_folder(tmp_path, capsys):
    ann, images = write_coco_fixture(tmp_path)
    outside = tmp_path / "outside.jpg"
    (images / CAT_FILE).rename(outside)
    (images / CAT_FILE).symlink_to(outside)
    msg = cli_error(capsys, coco_cli(ann, images, tmp_path / "index.parquet"))
    assert msg == (f"mixsweep: error: {images / CAT_FILE}: image 1's file_name leads outside {images} through a "
                   f"symlink (to '{outside}'); pass the folder the links lead into as --images")


def test_symlinks_that_stay_inside_are_fine(tmp_path):
    """A symlinked image folder, and a link to another file inside it, are the user's layout, not an escape."""
    ann, images = write_coco_fixture(tmp_path / "real")
    (images / "sub").mkdir()
    (images / CAT_FILE).rename(images / "sub" / CAT_FILE)
    (images / CAT_FILE).symlink_to(images / "sub" / CAT_FILE)
    linked = tmp_path / "linked-images"
    linked.symlink_to(images)
    table, _ = build_coco_index(ann, linked)
    assert table.num_rows == 10 and table.column("file_name")[0].as_py() == CAT_FILE


# --- values that used to end in a traceback ----------------------------------------------------------

@pytest.mark.parametrize("field,value,shown,problem", [
    ("width", 1e12, "1000000000000.0", "is not a whole number of pixels in 1..2147483647"),
    ("width", -5, "-5", "is not a whole number of pixels in 1..2147483647"),
    ("width", "64", '"64"', "is not a whole number of pixels in 1..2147483647"),
    ("width", 64.5, "64.5", "is not a whole number of pixels in 1..2147483647"),
    ("height", True, "true", "is not a whole number of pixels in 1..2147483647"),
    ("height", 0, "0", "is not a whole number of pixels in 1..2147483647"),
    ("file_name", None, "null", "is not a string; it must be a path relative to the image folder"),
    ("file_name", "\udcff.jpg", '"\\udcff.jpg"', "is not valid UTF-8; it must be a path relative to the image folder"),
    ("file_name", "a\nb.jpg", '"a\\nb.jpg"', "holds a control character; it must be a path relative to the image "
                                             "folder"),
    ("file_name", "", '""', "names no file; it must be a path relative to the image folder"),
])
def test_bad_image_record_value(tmp_path, field, value, shown, problem):
    ann, images = write_coco_fixture(tmp_path)
    edit_json(ann, lambda d: image(d, 3).update({field: value}))
    with pytest.raises(MixsweepError) as e:
        build_coco_index(ann, images, allow_missing=True)
    assert str(e.value) == f"{ann}: images[2] (id 3): {field} {shown} {problem}"


def test_nan_width_is_one_line(tmp_path, capsys):
    ann, images = write_coco_fixture(tmp_path)
    text = ann.read_text()
    ann.write_text(text.replace('"width": 64', '"width": NaN', 1))  # json reads NaN; it is not valid JSON
    msg = cli_error(capsys, coco_cli(ann, images, tmp_path / "index.parquet"))
    assert msg == (f"mixsweep: error: {ann}: images[0] (id 1): width NaN is not a whole number of pixels in "
                   f"1..2147483647")


def test_whole_float_width_still_indexes_as_before(tmp_path):
    ann, images = write_coco_fixture(tmp_path)
    edit_json(ann, lambda d: image(d, 1).update(width=64.0))
    table, _ = build_coco_index(ann, images)
    assert table.column("width").to_pylist() == [64] * 10


@pytest.mark.parametrize("where,change,expected", [
    ("image id", lambda d: image(d, 1).update(id="1"), 'images[0]: id "1" is not a 64-bit integer'),
    ("image id", lambda d: image(d, 1).update(id=True), "images[0]: id true is not a 64-bit integer"),
    ("image id", lambda d: image(d, 1).update(id=2**70), "images[0]: id 1180591620717411303424 is not a 64-bit "
                                                         "integer"),
    ("category id", lambda d: d["categories"][0].update(id=[1]), "categories[0]: id [...] is not a 32-bit integer"),
    ("category name", lambda d: d["categories"][2].update(name=None), "categories[2] (id 17): name null is not a "
                                                                      "string"),
    ("annotation", lambda d: d["annotations"][0].update(category_id={}), "annotations[0] refers to unknown "
                                                                         "category_id {...}"),
    ("annotation", lambda d: d["annotations"][0].update(image_id=True), "annotations[0] refers to unknown image_id "
                                                                        "true"),
])
def test_bad_ids_and_category_fields(tmp_path, where, change, expected):
    ann, images = write_coco_fixture(tmp_path)
    edit_json(ann, change)
    with pytest.raises(MixsweepError) as e:
        build_coco_index(ann, images)
    assert str(e.value) == f"{ann}: {expected}", where


def test_json_nested_100000_deep_is_one_line(tmp_path, capsys):
    ann, images = write_coco_fixture(tmp_path)
    ann.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    msg = cli_error(capsys, coco_cli(ann, images, tmp_path / "index.parquet"))
    assert msg == f"mixsweep: error: {ann}: JSON nested too deeply to read (a COCO instances file is 4 levels deep)"


def test_invalid_utf8_bytes_in_a_file_name_name_the_byte(tmp_path):
    ann, images = write_coco_fixture(tmp_path)
    raw = ann.read_bytes()
    at = raw.index(CAT_FILE.encode())
    ann.write_bytes(raw[:at] + b"\xff" + raw[at + 1:])
    with pytest.raises(MixsweepError) as e:
        build_coco_index(ann, images)
    assert str(e.value) == f"{ann}: not a UTF-8 JSON file (invalid start byte at byte {at})"


def test_number_too_long_to_convert_is_one_line(tmp_path):
    ann, images = write_coco_fixture(tmp_path)
    edit_json(ann, lambda d: image(d, 1).update(width=0))
    ann.write_text(ann.read_text().replace('"width": 0', '"width": ' + "9" * 5000, 1))
    with pytest.raises(MixsweepError) as e:
        build_coco_index(ann, images)
    assert str(e.value).startswith(f"{ann}: unreadable JSON (Exceeds the limit (4300 digits)") and "\n" not in str(e.value)


# --- the Pet folder ----------------------------------------------------------------------------------

def pets_root(tmp_path):
    return write_pets_fixture(tmp_path / "pets", per_breed=2, awkward=False)


@pytest.mark.parametrize("listing", ["list.txt", "trainval.txt"])
@pytest.mark.parametrize("name,problem", [("../secret", "climbs out with '..'"), ("/etc/hostname", "is an absolute "
                                                                                                   "path")])
def test_pet_list_name_outside_the_folders(tmp_path, capsys, listing, name, problem):
    root = pets_root(tmp_path)
    (root / "secret.jpg").write_bytes((root / "images" / "beagle_1.jpg").read_bytes())  # would be readable
    path = root / "annotations" / listing
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [f"{name} 5 2 4"]) + "\n")
    msg = cli_error(capsys, ["data", "pets", "--root", str(root), "--out", str(tmp_path / "m.parquet")])
    assert msg == (f"mixsweep: error: {path}:{len(lines) + 1}: image name '{name}' {problem}; it must name a file "
                   f"under images/ and annotations/trimaps/")


def test_pet_image_file_name_not_utf8(tmp_path, capsys):
    root = pets_root(tmp_path)
    bad = os.path.join(os.fsencode(root / "images"), b"bad\xff.jpg")
    with open(bad, "wb") as f:
        f.write((root / "images" / "beagle_1.jpg").read_bytes())
    out = tmp_path / "m.parquet"
    msg = cli_error(capsys, ["data", "pets", "--root", str(root), "--out", str(out), "--workers", "1"])
    assert msg == f"mixsweep: error: {root / 'images'}: file name b'bad\\xff.jpg' is not valid UTF-8; rename or remove it"
    assert not out.exists()


def test_pet_trimap_symlink_leading_out(tmp_path):
    root = pets_root(tmp_path)
    trimap = root / "annotations" / "trimaps" / "beagle_2.png"
    outside = tmp_path / "outside.png"
    trimap.rename(outside)
    trimap.symlink_to(outside)
    with pytest.raises(MixsweepError) as e:
        build_pets_manifest(root, workers=1)
    assert str(e.value) == (f"{trimap}: the trimap of beagle_2 leads outside {trimap.parent} through a symlink "
                            f"(to '{outside}')")


# --- tables written before these checks: a store may still hold one -----------------------------------

def test_pack_items_refuse_names_from_an_old_mixture_or_manifest(tmp_path):
    mixture = pa.table({"image_id": [1, 2], "file_name": ["a.jpg", "/etc/hostname"], "split": ["train", "val"]})
    with pytest.raises(MixsweepError) as e:
        mixture_pack_items([mixture], tmp_path)
    assert str(e.value) == ("mixture: image_id 2: file_name '/etc/hostname' is an absolute path; rebuild the index "
                            "with `mixsweep data coco-index`")
    manifest = pa.table({"name": ["x"], "image_path": ["images/../../x.jpg"], "trimap_path": ["annotations/x.png"],
                         "usable": [True]})
    with pytest.raises(MixsweepError) as e:
        pets_pack_items(manifest, tmp_path)
    assert str(e.value) == ("Pets manifest: x: path 'images/../../x.jpg' climbs out with '..'; rebuild it with "
                            "`mixsweep data pets`")
