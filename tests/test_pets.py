"""Oxford-IIIT Pet: labels, a fixed disjoint split, nested fine-tune subsets, awkward files, errors."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from fixtures import AWKWARD, PET_BREEDS, write_pets_fixture
from mixsweep.cli import main
from mixsweep.data.imread import read_label_png
from mixsweep.data.pets import build_pets_manifest, finetune_subset, trimap_to_labels
from mixsweep.errors import MixsweepError


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory):
    return write_pets_fixture(tmp_path_factory.mktemp("pets"), per_breed=20)


@pytest.fixture(scope="module")
def manifest(pets_root):
    with pytest.warns(UserWarning, match="chihuahua_121"):
        return build_pets_manifest(pets_root, seed=0, workers=1)


def rows(table) -> dict[str, dict]:
    return {r["name"]: r for r in table.to_pylist()}


def test_label_mapping_on_a_known_trimap(tmp_path):
    trimap = np.array([[1, 2, 3], [3, 2, 1], [0, 4, 2]], dtype=np.uint8)
    Image.fromarray(trimap, mode="L").save(tmp_path / "t.png")
    labels = trimap_to_labels(read_label_png(tmp_path / "t.png"))
    np.testing.assert_array_equal(labels, [[0, 1, 2], [2, 1, 0], [255, 255, 1]])
    # A palette-mode trimap keeps its indices, even with a palette that maps them to other grey levels.
    pal = Image.fromarray(trimap, mode="P")
    pal.putpalette([255, 255, 255, 0, 0, 0, 128, 128, 128, 7, 7, 7, 9, 9, 9] + [0] * (256 * 3 - 15))
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "p.png"), trimap)


def test_split_is_disjoint_and_covers_every_usable_image(manifest):
    r = rows(manifest)
    usable = {n for n, x in r.items() if x["usable"]}
    by_split = {s: {n for n, x in r.items() if x["split"] == s} for s in ("train", "val", "test", "excluded")}
    assert by_split["train"] | by_split["val"] | by_split["test"] == usable
    assert sum(len(v) for v in by_split.values()) == len(r)
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    # Stratified by breed: each breed's share of test and val is 15% up to rounding.
    for breed, *_ in PET_BREEDS:
        members = [x for x in r.values() if x["usable"] and x["breed"] == breed]
        counts = Counter(x["split"] for x in members)
        assert abs(counts["test"] - 0.15 * len(members)) <= 0.5 + 1e-9
        assert abs(counts["val"] - 0.15 * len(members)) <= 0.5 + 1e-9


def test_split_is_deterministic_and_seeded(pets_root, manifest):
    with pytest.warns(UserWarning, match="chihuahua_121"):
        again = build_pets_manifest(pets_root, seed=0, workers=2)
        other = build_pets_manifest(pets_root, seed=1, workers=1)
    assert again.column("split").to_pylist() == manifest.column("split").to_pylist()
    assert other.column("split").to_pylist() != manifest.column("split").to_pylist()


def test_finetune_subsets_are_nested_and_keep_the_breed_mix(manifest):
    n_train = len([1 for s in manifest.column("split").to_pylist() if s == "train"])
    subsets = {f: set(finetune_subset(manifest, f).column("name").to_pylist()) for f in (0.1, 0.25, 0.5, 1.0)}
    assert len(subsets[1.0]) == n_train
    assert subsets[0.1] <= subsets[0.25] <= subsets[0.5] <= subsets[1.0]
    assert len(subsets[0.5]) == int(np.floor(0.5 * n_train + 0.5))
    half = Counter(n.rsplit("_", 1)[0] for n in subsets[0.5])
    full = Counter(n.rsplit("_", 1)[0] for n in subsets[1.0])
    for breed in full:
        assert abs(half[breed] - full[breed] / 2) <= 1, (breed, half[breed], full[breed])
    # Another seed: another nested order over the same train set.
    other = {f: set(finetune_subset(manifest, f, seed=9).column("name").to_pylist()) for f in (0.25, 0.5)}
    assert other[0.25] <= other[0.5] and other[0.5] != subsets[0.5]


def test_awkward_files_are_handled_once_at_indexing(manifest):
    r = rows(manifest)
    assert "mode P->RGB" in r["Egyptian_Mau_139"]["quirks"] and "png saved as .jpg" in r["Egyptian_Mau_139"]["quirks"]
    assert r["Egyptian_Mau_129"]["quirks"] == "mode L->RGB"
    assert "mode RGBA->RGB" in r["Abyssinian_5"]["quirks"]
    assert r["Egyptian_Mau_156"]["quirks"] == "png saved as .jpg"
    for name in AWKWARD:
        if name != "chihuahua_121":
            assert r[name]["usable"] and r[name]["split"] in ("train", "val", "test"), name
    bad = r["chihuahua_121"]
    assert not bad["usable"] and bad["split"] == "excluded" and bad["issue"].startswith("unreadable image")
    # Stray .mat and AppleDouble files are not images and never reach the manifest.
    assert not any(n.startswith("._") or n.endswith(".mat") for n in r)


def test_unlisted_image_is_recorded_as_excluded(tmp_path):
    root = write_pets_fixture(tmp_path, per_breed=4, awkward=False)
    shutil.copy(root / "images" / "beagle_1.jpg", root / "images" / "beagle_99.jpg")
    r = rows(build_pets_manifest(root, workers=1))
    assert r["beagle_99"]["split"] == "excluded" and "not in annotations/list.txt" in r["beagle_99"]["issue"]


def test_trimap_problems_exclude_the_image(tmp_path):
    root = write_pets_fixture(tmp_path, per_breed=4, awkward=False)
    Image.new("L", (10, 10), 1).save(root / "annotations" / "trimaps" / "beagle_1.png")
    Image.fromarray(np.full((44, 60), 7, np.uint8), mode="L").save(root / "annotations" / "trimaps" / "beagle_2.png")
    with pytest.warns(UserWarning) as caught:
        r = rows(build_pets_manifest(root, workers=1))
    # The warning names the file at fault, the trimap, not the image beside it.
    warned = {str(w.message).split(": ", 1)[0] for w in caught}
    assert warned == {str(root / "annotations" / "trimaps" / f"beagle_{i}.png") for i in (1, 2)}
    assert "trimap size 10x10 != image size 60x44" in r["beagle_1"]["issue"]
    assert "trimap values [7] outside 1/2/3" in r["beagle_2"]["issue"]
    assert r["beagle_1"]["split"] == r["beagle_2"]["split"] == "excluded"


def test_torchvision_layout_is_accepted(tmp_path):
    write_pets_fixture(tmp_path / "oxford-iiit-pet", per_breed=4, awkward=False)
    table = build_pets_manifest(tmp_path, workers=1)
    assert table.num_rows == 4 * len(PET_BREEDS)


def test_official_scheme_keeps_test_txt_as_test(pets_root):
    with pytest.warns(UserWarning):
        table = build_pets_manifest(pets_root, scheme="official", workers=1)
    r = rows(table)
    for x in r.values():
        if x["usable"]:
            assert (x["split"] == "test") == (x["official_split"] == "test")
    assert {x["split"] for x in r.values() if x["official_split"] == "trainval" and x["usable"]} == {"train", "val"}


def test_official_scheme_warns_of_images_in_neither_split_file(tmp_path):
    root = write_pets_fixture(tmp_path, per_breed=8, awkward=False)
    tv = root / "annotations" / "trainval.txt"
    tv.write_text("\n".join(line for line in tv.read_text().splitlines() if not line.startswith("beagle_1 ")) + "\n")
    with pytest.warns(UserWarning, match=r"list\.txt: 1 usable images are in neither trainval\.txt nor test\.txt "
                                         r"\(first: beagle_1\)"):
        r = rows(build_pets_manifest(root, scheme="official", workers=1))
    assert r["beagle_1"]["split"] in ("train", "val")


def test_official_scheme_with_every_usable_image_in_test_is_an_error(tmp_path):
    root = write_pets_fixture(tmp_path, per_breed=4, awkward=False)
    ann = root / "annotations"
    (ann / "test.txt").write_text((ann / "list.txt").read_text())
    (ann / "trainval.txt").write_text("")
    with pytest.raises(MixsweepError, match=rf"^{root}: the train split would be empty: all 20 usable images are in "
                                            r"annotations/test\.txt \(--split official\)$"):
        build_pets_manifest(root, scheme="official", workers=1)


@pytest.mark.parametrize("breakage,message", [
    (lambda root: shutil.rmtree(root), "Oxford-IIIT Pet root not found"),
    (lambda root: shutil.rmtree(root / "annotations"), "not an Oxford-IIIT Pet folder"),
    (lambda root: (root / "annotations" / "trimaps" / "beagle_3.png").unlink(),
     r"trimaps/beagle_3\.png: trimap file missing \(listed in .*list\.txt\)"),
    (lambda root: (root / "images" / "beagle_2.jpg").unlink(),
     r"images/beagle_2\.jpg: image file missing"),
    (lambda root: (root / "annotations" / "list.txt").write_text("#hdr\nbeagle_1 5 2\n"),
     r"list\.txt:2: expected 'Image CLASS-ID SPECIES BREED-ID' \(4 fields\), got 3: 'beagle_1 5 2'"),
    (lambda root: (root / "annotations" / "list.txt").write_text("beagle_1 five 2 4\n"),
     r"list\.txt:1: field 2 \(CLASS-ID\) of beagle_1 is 'five'; expected a positive integer"),
    (lambda root: (root / "annotations" / "list.txt").write_text("beagle_1 5 3 4\n"),
     r"list\.txt:1: field 3 \(SPECIES\) of beagle_1 is '3'; expected 1 \(cat\) or 2 \(dog\)"),
    (lambda root: (root / "annotations" / "list.txt").write_text("beagle_1 5 2 0\n"),
     r"list\.txt:1: field 4 \(BREED-ID\) of beagle_1 is '0'; expected a positive integer \(the breed's number"),
    (lambda root: (root / "annotations" / "list.txt").write_text("beagle_1 5 2 4\nbeagle_1 5 2 4\n"),
     r"list\.txt:2: beagle_1 is listed twice \(first on line 1\)"),
])
def test_bad_input_is_one_clear_line(tmp_path, breakage, message):
    root = write_pets_fixture(tmp_path / "pets", per_breed=4, awkward=False)
    breakage(root)
    with pytest.raises(MixsweepError, match=message) as e:
        build_pets_manifest(root, workers=1)
    assert "\n" not in str(e.value)


def test_allow_missing_excludes_instead(tmp_path):
    root = write_pets_fixture(tmp_path, per_breed=4, awkward=False)
    (root / "images" / "beagle_2.jpg").unlink()
    with pytest.warns(UserWarning, match="beagle_2"):
        r = rows(build_pets_manifest(root, allow_missing=True, workers=1))
    assert r["beagle_2"]["split"] == "excluded"


def test_synthetic_pets_run_through_the_real_loader(synth_small, tmp_path, capsys):
    out = tmp_path / "pets.parquet"
    assert main(["data", "pets", "--root", str(synth_small.pets_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "excluded" in printed
    from mixsweep.data.pets import read_manifest

    table = read_manifest(out)
    train = table.filter(pc.equal(table.column("split"), "train"))
    assert train.num_rows > 40
    assert set(table.column("species").to_pylist()) >= {"cat", "dog"}
