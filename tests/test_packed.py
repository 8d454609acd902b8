"""Packed sets: geometry, determinism, reuse, bad files; loaders: sharding, order, eval coverage."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixsweep.data.augment import AugmentConfig
from mixsweep.data.loader import PackedLoader
from mixsweep.data.packed import PackedSet, PackItem, pack_key
from mixsweep.data.pack_build import build_pack
from mixsweep.errors import MixsweepError

_LUT = np.full(256, 255, dtype=np.uint8)
_LUT[[1, 2, 3]] = [0, 1, 2]


def trimap_labels(raw: np.ndarray) -> np.ndarray:
    """Module-level (picklable) mask_fn: trimap 1/2/3 -> 0/1/2, anything else -> 255."""
    return _LUT[raw]


def _bands(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Left quarter red / middle half green / right quarter blue, and trimap values 1/2/3 to match."""
    img = np.zeros((h, w, 3), np.uint8)
    tri = np.zeros((h, w), np.uint8)
    q = w // 4
    img[:, :q, 0] = 255
    img[:, q:w - q, 1] = 255
    img[:, w - q:, 2] = 255
    tri[:, :q], tri[:, q:w - q], tri[:, w - q:] = 1, 2, 3
    return img, tri


def _write_items(root: Path, n: int, seed: int = 0, masks: bool = True) -> list[PackItem]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for k in range(n):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{k}.jpg", quality=90)
        mp = None
        if masks:
            Image.fromarray(rng.integers(0, 4, (h, w), dtype=np.uint8)).save(root / f"{k}.png")
            mp = str(root / f"{k}.png")
        items.append(PackItem(f"img{k}", str(root / f"{k}.jpg"), mp))
    return items


def _files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def test_pack_shapes_dtypes_and_rows(tmp_path):
    items = _write_items(tmp_path / "src", 5)
    pack = build_pack(items, tmp_path / "cache", size=16, mask_fn=trimap_labels, workers=1)
    assert pack.images.shape == (5, 16, 16, 3) and pack.images.dtype == np.uint8
    assert pack.masks.shape == (5, 16, 16) and pack.masks.dtype == np.uint8
    assert set(np.unique(pack.masks)) <= {0, 1, 2, 255}
    assert pack.rows.column_names == ["key", "ok", "issue", "quirks", "orig_width", "orig_height", "source"]
    assert pack.rows.column("key").to_pylist() == [f"img{k}" for k in range(5)]
    assert pack.rows.column("ok").to_pylist() == [True] * 5
    w0, h0 = Image.open(items[0].image_path).size
    assert (pack.rows.column("orig_width")[0].as_py(), pack.rows.column("orig_height")[0].as_py()) == (w0, h0)
    assert len(pack) == 5 and list(pack.valid_indices) == [0, 1, 2, 3, 4]
    assert pack.path.name == pack_key(items, 16, "crop", trimap_labels)
    assert sorted(os.listdir(pack.path)) == ["images.u8", "masks.u8", "meta.json", "rows.parquet"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")]
    reopened = PackedSet.open(pack.path)
    assert np.array_equal(reopened.images, pack.images) and reopened.meta["fit"] == "crop"
    assert list(pack.indices_for(["img3", "img1"])) == [3, 1]


def test_a_new_pack_copies_rows_an_older_pack_holds_and_decodes_the_rest(tmp_path):
    items = _write_items(tmp_path / "src", 8)
    Path(items[3].image_path).write_bytes(b"not a jpeg")  # a bad row travels as a bad row, not re-decoded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = build_pack(items[:5], tmp_path / "cache", size=16, mask_fn=trimap_labels, workers=1)
        grown = build_pack(items[2:], tmp_path / "cache", size=16, mask_fn=trimap_labels, workers=1)
        fresh = build_pack(items[2:], tmp_path / "fresh", size=16, mask_fn=trimap_labels, workers=1)
    assert old.built == {"decoded": 5, "copied": 0, "reused": False}
    assert grown.built == {"decoded": 3, "copied": 3, "reused": False}  # items 2, 3, 4 came from `old`
    assert grown.meta["donors"] == [old.key] and grown.path.name == fresh.path.name
    # Copied or decoded, every byte and every row's metadata equals a build from nothing.
    assert _files(grown.path).keys() == _files(fresh.path).keys()
    for name in ("images.u8", "masks.u8"):
        assert (grown.path / name).read_bytes() == (fresh.path / name).read_bytes()
    for col in ("key", "ok", "issue", "quirks", "orig_width", "orig_height", "source"):
        assert grown.rows.column(col).to_pylist() == fresh.rows.column(col).to_pylist()
    assert grown.rows.column("ok").to_pylist()[1] is False
    again = build_pack(items[2:], tmp_path / "cache", size=16, mask_fn=trimap_labels, workers=1)
    assert again.built["reused"] and again.path == grown.path


def test_rows_of_another_rule_are_never_copied(tmp_path):
    items = _write_items(tmp_path / "src", 3)
    build_pack(items, tmp_path / "cache", size=16, mask_fn=trimap_labels, workers=1)
    other_size = build_pack(items, tmp_path / "cache", size=12, mask_fn=trimap_labels, workers=1)
    no_masks_fn = build_pack(items, tmp_path / "cache", size=16, workers=1)
    assert other_size.built["copied"] == 0 and no_masks_fn.built["copied"] == 0


def test_the_key_follows_the_mask_functions_body_and_tables_not_its_name(tmp_path, monkeypatch):
    import sys
    import types

    here = sys.modules[trimap_labels.__module__]
    items = _write_items(tmp_path / "src", 2)
    base = pack_key(items, 16, "crop", trimap_labels)
    # Same module and qualified name, another body: a new pack.
    impostor = types.FunctionType((lambda raw: raw).__code__, here.__dict__, "trimap_labels")
    impostor.__qualname__, impostor.__module__ = trimap_labels.__qualname__, trimap_labels.__module__
    assert pack_key(items, 16, "crop", impostor) != base
    # The lookup table it reads changes: a new pack as well.
    lut = _LUT.copy()
    lut[3] = 7
    monkeypatch.setattr(here, "_LUT", lut)
    assert pack_key(items, 16, "crop", trimap_labels) != base
    monkeypatch.undo()
    assert pack_key(items, 16, "crop", trimap_labels) == base
    # Pillow's version and the resize rule are part of the rule too.
    import mixsweep.data.packed as packed

    monkeypatch.setattr(packed, "RESIZE_RULE", "another resampler")
    assert pack_key(items, 16, "crop", trimap_labels) != base


def test_crop_and_squash_geometry(tmp_path):
    img, tri = _bands(100, 200)  # W=200, H=100
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(tri).save(tmp_path / "a_m.png")
    items = [PackItem("a", str(tmp_path / "a.png"), str(tmp_path / "a_m.png"))]
    crop = build_pack(items, tmp_path / "c", size=20, fit="crop", mask_fn=trimap_labels, workers=1)
    squash = build_pack(items, tmp_path / "c", size=20, fit="squash", mask_fn=trimap_labels, workers=1)
    assert crop.path != squash.path
    c, s = np.asarray(crop.images[0], np.int32), np.asarray(squash.images[0], np.int32)
    # crop: the central 100x100 square is all green (edge columns may pick up a little bicubic spill).
    assert (c[:, 1:-1, 1] > 250).all() and (c[:, 1:-1, [0, 2]] < 5).all()
    assert (crop.masks[0] == 1).all()
    # squash: the bands keep their share of the width: 5 red, 10 green, 5 blue columns.
    assert (s[:, :4, 0] > 250).all() and (s[:, 6:14, 1] > 250).all() and (s[:, 16:, 2] > 250).all()
    assert (squash.masks[0][:, :5] == 0).all() and (squash.masks[0][:, 5:15] == 1).all()
    assert (squash.masks[0][:, 15:] == 2).all()


def test_jpeg_draft_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    img = np.stack([x * 255 // 640, y * 255 // 480, (x + y) * 255 // 1120], -1).astype(np.uint8)
    img = np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "p.jpg", quality=95)
    pack = build_pack([PackItem("p", str(tmp_path / "p.jpg"))], tmp_path / "c", size=64, workers=1)
    full = Image.open(tmp_path / "p.jpg").convert("RGB").resize((64, 64), Image.Resampling.BICUBIC,
                                                                 box=(80, 0, 560, 480))
    diff = np.abs(np.asarray(pack.images[0], np.int32) - np.asarray(full, np.int32))
    assert diff.mean() < 3.0


def test_pack_is_byte_deterministic(tmp_path):
    items = _write_items(tmp_path / "src", 70)
    a = build_pack(items, tmp_path / "c1", size=16, mask_fn=trimap_labels, workers=1)
    b = build_pack(items, tmp_path / "c2", size=16, mask_fn=trimap_labels, workers=2)  # parallel path
    assert a.path.name == b.path.name
    assert _files(a.path) == _files(b.path)


def test_existing_pack_is_reused_without_reading_sources(tmp_path):
    items = _write_items(tmp_path / "src", 4)
    first = build_pack(items, tmp_path / "cache", size=16, workers=1)
    before = _files(first.path)
    # Garbage in place of a source, same size and mtime: same key, and decoding it now would fail.
    src = Path(items[2].image_path)
    st = src.stat()
    src.write_bytes(b"\0" * st.st_size)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a re-read would warn about the unreadable file
        again = build_pack(items, tmp_path / "cache", size=16, workers=1)
    assert again.path == first.path
    assert again.rows.column("ok").to_pylist() == [True] * 4
    assert _files(again.path) == before
    # A changed file (new mtime) is a new key, and the new pack sees the garbage.
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning):
        changed = build_pack(items, tmp_path / "cache", size=16, workers=1)
    assert changed.path != first.path
    assert changed.rows.column("ok").to_pylist() == [True, True, False, True]


def test_unreadable_files_are_marked_not_fatal(tmp_path):
    items = _write_items(tmp_path / "src", 3, masks=False)
    (tmp_path / "src" / "bad.jpg").write_bytes(b"this is not a jpeg")
    good = (tmp_path / "src" / "0.jpg").read_bytes()
    (tmp_path / "src" / "trunc.jpg").write_bytes(good[: len(good) // 3])
    items += [PackItem("bad", str(tmp_path / "src" / "bad.jpg")), PackItem("gone", str(tmp_path / "nope.jpg")),
              PackItem("trunc", str(tmp_path / "src" / "trunc.jpg"))]
    with pytest.warns(UserWarning) as rec:
        pack = build_pack(items, tmp_path / "cache", size=16, workers=1)
    msgs = [str(w.message) for w in rec]
    assert sum("marked ok=False" in m for m in msgs) == 3
    assert any("3 of 6 items unusable" in m for m in msgs)
    rows = pack.rows.to_pylist()
    assert [r["ok"] for r in rows] == [True, True, True, False, False, False]
    assert "not an image" in rows[3]["issue"] and rows[4]["issue"] == "file not found"
    assert rows[5]["issue"] != ""
    assert list(pack.valid_indices) == [0, 1, 2]
    assert not pack.images[3:].any()
    assert pack.images[0].any()


def test_bad_masks_are_marked(tmp_path):
    Image.fromarray(np.full((16, 20, 3), 100, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.ones((10, 10), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.array([[1, 2, 3, 0, 7]] * 16, np.uint8).repeat(4, axis=1)).save(tmp_path / "good.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    items = [PackItem("small", str(tmp_path / "a.png"), str(tmp_path / "small.png")),
             PackItem("good", str(tmp_path / "a.png"), str(tmp_path / "good.png")),
             PackItem("junk", str(tmp_path / "a.png"), str(tmp_path / "junk.png")),
             PackItem("nomask", str(tmp_path / "a.png"), None)]
    with pytest.warns(UserWarning):
        pack = build_pack(items, tmp_path / "cache", size=20, fit="squash", mask_fn=trimap_labels, workers=1)
    rows = pack.rows.to_pylist()
    assert [r["ok"] for r in rows] == [False, True, False, False]
    assert rows[0]["issue"] == "mask size 10x10 != image size 20x16"
    assert rows[2]["issue"].startswith("unreadable mask")
    assert not pack.images[0].any() and not pack.masks[0].any()
    assert pack.images[1].any()
    assert np.array_equal(pack.masks[1][0], np.array([0, 1, 2, 255, 255]).repeat(4))


def test_bad_arguments_are_user_errors(tmp_path):
    items = _write_items(tmp_path / "src", 2, masks=False)
    with pytest.raises(MixsweepError, match="fit"):
        build_pack(items, tmp_path / "c", fit="stretch")
    with pytest.raises(MixsweepError, match="duplicate"):
        build_pack(items + items[:1], tmp_path / "c")
    with pytest.raises(MixsweepError, match="picklable"):
        build_pack(items, tmp_path / "c", mask_fn=lambda m: m)
    with pytest.raises(MixsweepError, match="not a complete pack"):
        PackedSet.open(tmp_path / "src")


# ---------------------------------------------------------------------------------------------------------
# Loaders


@pytest.fixture(scope="module")
def loader_pack(tmp_path_factory):
    """27 rows, of which rows 5, 11 and 20 are unreadable: 24 valid."""
    root = tmp_path_factory.mktemp("loader")
    items = _write_items(root / "src", 27)
    for k in (5, 11, 20):
        Path(items[k].image_path).write_bytes(b"broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_pack(items, root / "cache", size=16, mask_fn=trimap_labels, workers=1)


SMALL = AugmentConfig(out_size=12)
INVALID = {5, 11, 20}


def _indices(loader: PackedLoader) -> list[np.ndarray]:
    return [b["index"].numpy() for b in loader]


def test_loader_shards_are_disjoint_and_cover(loader_pack):
    valid = set(loader_pack.valid_indices.tolist())
    assert len(valid) == 24 and not valid & INVALID
    shards = []
    for r in range(3):
        ld = PackedLoader(loader_pack, 4, augment=SMALL, seed=1, rank=r, world_size=3)
        batches = _indices(ld)
        assert len(batches) == len(ld) == 2 and all(len(b) == 4 for b in batches)
        shards.append(set(np.concatenate(batches).tolist()))
    assert not (shards[0] & shards[1]) and not (shards[0] & shards[2]) and not (shards[1] & shards[2])
    assert shards[0] | shards[1] | shards[2] == valid
    # Uneven: 24 rows over 5 ranks, batch 2 -> 4 rows each, still disjoint, same batch count everywhere.
    seen = [np.concatenate(_indices(PackedLoader(loader_pack, 2, augment=SMALL, rank=r, world_size=5)))
            for r in range(5)]
    assert all(len(s) == 4 for s in seen)
    flat = np.concatenate(seen)
    assert len(set(flat.tolist())) == 20 and set(flat.tolist()) <= valid


def test_loader_padding_gives_equal_batch_counts(loader_pack):
    counts = []
    for r in range(5):
        ld = PackedLoader(loader_pack, 2, augment=SMALL, rank=r, world_size=5, drop_last=False)
        batches = _indices(ld)
        counts.append(len(batches))
        assert sum(len(b) for b in batches) == 5 and set(np.concatenate(batches).tolist()) <= set(range(27)) - INVALID
    assert counts == [3] * 5


def test_loader_order_follows_seed_and_epoch(loader_pack):
    def order(seed, epoch):
        ld = PackedLoader(loader_pack, 4, augment=SMALL, seed=seed, resident=False)
        ld.set_epoch(epoch)
        return ld.epoch_batches()

    a, b = np.concatenate(order(0, 0)), np.concatenate(order(0, 0))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.concatenate(order(0, 1)))
    assert not np.array_equal(a, np.concatenate(order(1, 0)))
    assert sorted(a.tolist()) == sorted(np.concatenate(order(0, 1)).tolist())
    # What the iterator yields is that order, batch by batch (rows sorted inside a streamed batch).
    ld = PackedLoader(loader_pack, 4, augment=SMALL, seed=0, resident=False)
    got = _indices(ld)
    assert [sorted(g.tolist()) for g in got] == [sorted(x.tolist()) for x in order(0, 0)]


@pytest.mark.parametrize("world_size,batch", [(1, 5), (2, 5), (3, 4), (4, 7), (7, 3)])
def test_eval_visits_every_valid_row_once(loader_pack, world_size, batch):
    every, counts = [], []
    for r in range(world_size):
        ld = PackedLoader(loader_pack, batch, train=False, augment=SMALL, rank=r, world_size=world_size)
        batches = list(ld)
        counts.append(len(batches))
        assert len(batches) == len(ld)
        for b in batches:
            assert b["images"].shape == (len(b["index"]), 3, 12, 12)
            assert b["masks"].shape == (len(b["index"]), 12, 12)
            every.extend(b["index"].tolist())
    assert len(set(counts)) == 1
    assert sorted(every) == loader_pack.valid_indices.tolist()


def test_indices_subset_and_invalid_rows_excluded(loader_pack):
    ld = PackedLoader(loader_pack, 3, train=False, augment=SMALL, indices=np.array([0, 5, 7, 11, 26, 3]))
    assert np.concatenate(_indices(ld)).tolist() == [0, 3, 7, 26]


def test_resident_and_streaming_paths_agree(loader_pack):
    kw = dict(train=False, augment=SMALL, world_size=2, rank=1)
    res = list(PackedLoader(loader_pack, 5, resident=True, **kw))
    stream = list(PackedLoader(loader_pack, 5, resident=False, prefetch=1, **kw))
    assert len(res) == len(stream) > 0
    for a, b in zip(res, stream):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["masks"], b["masks"])
    # Train mode, same seed: same rows per batch on both paths, augmented images in [-3, 3] after normalise.
    t_res = list(PackedLoader(loader_pack, 4, augment=SMALL, resident=True))
    t_str = list(PackedLoader(loader_pack, 4, augment=SMALL, resident=False))
    for a, b in zip(t_res, t_str):
        assert sorted(a["index"].tolist()) == sorted(b["index"].tolist())
        assert a["images"].dtype == torch.float32 and a["images"].abs().max() < 3
        assert set(a["masks"].unique().tolist()) <= {0, 1, 2, 255}


def test_a_resident_loader_holds_only_its_own_rows(loader_pack):
    rows = np.arange(3, len(loader_pack), 4)
    kw = dict(train=False, augment=SMALL, indices=rows)
    res_loader = PackedLoader(loader_pack, 3, resident=True, **kw)
    res = list(res_loader)
    images, masks = res_loader._resident_arrays()
    assert images.shape[0] == masks.shape[0] == len(res_loader.rows) < len(loader_pack)
    stream = list(PackedLoader(loader_pack, 3, resident=False, **kw))
    assert [b["index"].tolist() for b in res] == [b["index"].tolist() for b in stream]
    assert sorted(sum((b["index"].tolist() for b in res), [])) == res_loader.rows.tolist()
    for a, b in zip(res, stream):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["masks"], b["masks"])


def test_streaming_stops_cleanly_on_break(loader_pack):
    ld = PackedLoader(loader_pack, 2, augment=SMALL, resident=False, prefetch=1)
    for _ in ld:
        break
    import threading

    assert not [t for t in threading.enumerate() if t.name == "packed-loader"]
    assert len(list(ld)) == len(ld) == 12


def test_file_image_dataset_skips_unreadable(tmp_path):
    import importlib.util

    # The benchmarks' reference loader: its throughput is only comparable if one bad file never stops it.
    path = Path(__file__).parents[1] / "benchmarks" / "pil_loader.py"
    spec = importlib.util.spec_from_file_location("pil_loader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    FileImageDataset = module.FileImageDataset
    items = _write_items(tmp_path, 3, masks=False)
    Path(items[1].image_path).write_bytes(b"broken")
    ds = FileImageDataset([it.image_path for it in items], out_size=32)
    with pytest.warns(UserWarning, match="skipping unreadable"):
        x = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    for it in (items[0], items[2]):
        Path(it.image_path).write_bytes(b"broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MixsweepError):
            ds[0]


def test_packed_set_pickles_by_path(loader_pack):
    import pickle

    blob = pickle.dumps(loader_pack)
    assert len(blob) < 2000  # the path, not the arrays
    again = pickle.loads(blob)
    assert again.path == loader_pack.path and np.array_equal(again.images, loader_pack.images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_loader_paths_match_cpu(loader_pack):
    kw = dict(train=False, augment=SMALL)
    cpu = list(PackedLoader(loader_pack, 5, device="cpu", **kw))
    for resident in (True, False):
        gpu = list(PackedLoader(loader_pack, 5, device="cuda", resident=resident, **kw))
        assert len(gpu) == len(cpu)
        for a, b in zip(cpu, gpu):
            assert b["images"].device.type == "cuda" and torch.equal(a["index"], b["index"])
            assert torch.allclose(a["images"], b["images"].cpu(), atol=1e-4)
            assert torch.equal(a["masks"], b["masks"].cpu())
        train = list(PackedLoader(loader_pack, 4, device="cuda", resident=resident, augment=SMALL))
        assert len(train) == 6 and train[0]["images"].shape == (4, 3, 12, 12)


# ---------------------------------------------------------------------------------------------------------
# A fixed number of batches per epoch (the fine-tune's fixed_steps schedule)


@pytest.mark.parametrize("resident", [True, False])
def test_num_batches_cycles_a_small_set(loader_pack, resident):
    # 24 rows, 2 ranks, batch 4, 5 batches: 40 draws, i.e. all rows once and then 16 of a second permutation.
    kw = dict(augment=SMALL, seed=3, world_size=2, num_batches=5, resident=resident)
    per_rank = []
    for r in range(2):
        ld = PackedLoader(loader_pack, 4, rank=r, **kw)
        batches = list(ld)
        assert len(batches) == len(ld) == 5
        assert all(b["images"].shape == (4, 3, 12, 12) and len(b["index"]) == 4 for b in batches)
        per_rank.append([b["index"].numpy() for b in batches])
    draws = np.concatenate([np.concatenate(p) for p in per_rank])
    rows, counts = np.unique(draws, return_counts=True)
    assert rows.tolist() == loader_pack.valid_indices.tolist() and set(counts.tolist()) == {1, 2}
    assert counts.sum() == 40
    # Within one pass the two ranks' shards stay disjoint: the first 12 draws of each rank are one permutation.
    assert not set(np.concatenate(per_rank[0])[:12].tolist()) & set(np.concatenate(per_rank[1])[:12].tolist())


def test_num_batches_keeps_the_plain_epoch_and_is_deterministic(loader_pack):
    plain = PackedLoader(loader_pack, 4, augment=SMALL, seed=1, resident=False)
    same = PackedLoader(loader_pack, 4, augment=SMALL, seed=1, resident=False, num_batches=len(plain))
    more = PackedLoader(loader_pack, 4, augment=SMALL, seed=1, resident=False, num_batches=9)
    for epoch in (0, 1):
        for ld in (plain, same, more):
            ld.set_epoch(epoch)
        a, b, c = plain.epoch_batches(), same.epoch_batches(), more.epoch_batches()
        assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 6
        assert all(np.array_equal(x, y) for x, y in zip(a, c[:6])) and len(c) == 9  # first pass = plain epoch
    # Resume: a fresh loader set to epoch k yields what the running one yielded at epoch k (rows and pixels).
    more.set_epoch(2)
    ran = list(more)
    again = PackedLoader(loader_pack, 4, augment=SMALL, seed=1, resident=False, num_batches=9)
    again.set_epoch(2)
    for x, y in zip(ran, list(again)):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["images"], y["images"])
        assert torch.equal(x["masks"], y["masks"])
    more.set_epoch(3)
    assert not all(np.array_equal(x, y) for x, y in zip(more.epoch_batches(), again.epoch_batches()))


def test_num_batches_fills_a_batch_larger_than_the_set(loader_pack):
    ld = PackedLoader(loader_pack, 8, augment=SMALL, indices=np.array([0, 1, 2]), num_batches=2)
    batches = list(ld)
    assert len(batches) == 2 and all(len(b["index"]) == 8 for b in batches)
    assert set(np.concatenate([b["index"].numpy() for b in batches]).tolist()) == {0, 1, 2}


def test_num_batches_and_padding_arguments(loader_pack):
    with pytest.raises(ValueError, match="num_batches"):
        PackedLoader(loader_pack, 4, train=False, num_batches=3)
    with pytest.raises(ValueError, match="num_batches"):
        PackedLoader(loader_pack, 4, num_batches=0)
    with pytest.raises(ValueError, match="no usable rows"):
        PackedLoader(loader_pack, 4, indices=np.array([5, 11]), num_batches=2)
    with pytest.raises(ValueError, match="pad_to_batch"):
        PackedLoader(loader_pack, 4, train=True, pad_to_batch=True)


# ---------------------------------------------------------------------------------------------------------
# Eval batches padded to the batch size (one static shape for a compiled model)


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("world_size,batch", [(1, 5), (3, 5), (5, 1)])  # (5, 1): a rank's last batch is empty
def test_padded_eval_batches_are_full_and_hold_the_same_rows(loader_pack, world_size, batch, resident):
    sizes = []
    for r in range(world_size):
        kw = dict(train=False, augment=SMALL, rank=r, world_size=world_size, resident=resident)
        plain = list(PackedLoader(loader_pack, batch, **kw))
        padded = list(PackedLoader(loader_pack, batch, pad_to_batch=True, pad_mask_value=255, **kw))
        assert len(plain) == len(padded)
        assert len({b["images"].stride() for b in padded}) == 1  # one layout: no recompile on strides either
        for a, b in zip(plain, padded):
            n = len(a["index"])
            sizes.append(n)
            assert torch.equal(a["index"], b["index"])
            assert b["images"].shape == (batch, 3, 12, 12) and b["masks"].shape == (batch, 12, 12)
            assert torch.equal(b["images"][:n], a["images"]) and torch.equal(b["masks"][:n], a["masks"])
            assert not b["images"][n:].any() and (b["masks"][n:] == 255).all()
    assert (0 in sizes) == (world_size == 5) and sum(sizes) == 24


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_batches_made_ahead_are_the_batches_made_in_line(loader_pack, resident, device):
    """run.augment_ahead: each batch is made one step early (on CUDA, on a side stream); same draws, same
    batches, bit for bit."""
    def batches(ahead):
        ld = PackedLoader(loader_pack, 4, augment=SMALL, seed=3, resident=resident, device=device, ahead=ahead)
        ld.set_epoch(1)
        return [{k: v.cpu() for k, v in b.items()} for b in ld]

    inline, ahead = batches(False), batches(True)
    assert len(inline) == len(ahead) == 6
    for a, b in zip(inline, ahead):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["images"], b["images"])
        assert torch.equal(a["masks"], b["masks"])
