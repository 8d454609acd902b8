"""One pack per grid: every pre-training of a sweep reads its mixture as row indices into the pack of
the union of the grid's mixtures, and a grid that grows decodes only images no pack holds yet."""

from __future__ import annotations

import pyarrow.compute as pc
import torch
import pytest

from mixsweep.data.mixture import mixture_pack_items, read_mixture
from mixsweep.data.packed import PackedSet, pack_key
from mixsweep.spec import parse_spec
from mixsweep.sweep.plan import build_grid_pack, build_plan, write_plan_inputs, write_spec_data
from mixsweep.sweep.store import Store
from mixsweep.train.pretrain import _rows, pretrain_pack


def _plan(root, fractions, seeds):
    spec = parse_spec({"name": "g", "grid": {"animal_fractions": fractions, "seeds": seeds,
                                             "finetune_fractions": [1.0]},
                       "data": {"synth": {"scale": "small"}}, "preset": "tiny", "storage": str(root),
                       "mixture": {"size": 24, "pack_size": 16}, "baselines": []})
    write_spec_data(spec, Store(root))  # what `mixsweep run` does before building the grid's pack
    plan = build_plan(spec, Store(root))
    write_plan_inputs(plan, Store(root))
    return plan


def _ids(plan):
    return {i for s in plan.stages if s.kind == "pretrain"
            for i in read_mixture(s.job.data.mixture).column("image_id").to_pylist()}


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """The same store, the grid growing: F in {0, 1} seed 0, then F=0.5 added, then seed 1 added."""
    root = tmp_path_factory.mktemp("store")
    out = {}
    for name, fractions, seeds in (("base", [0.0, 1.0], [0]), ("fraction", [0.0, 0.5, 1.0], [0]),
                                   ("seed", [0.0, 0.5, 1.0], [0, 1])):
        plan = _plan(root, fractions, seeds)
        out[name] = (plan, build_grid_pack(plan))
    return out


def test_the_grid_pack_holds_the_union_of_every_mixture_once(grown):
    plan, pack = grown["base"]
    sizes = [read_mixture(s.job.data.mixture).num_rows for s in plan.stages if s.kind == "pretrain"]
    assert len(pack) == plan.union_size == len(_ids(plan)) == sum(sizes)  # F=0 and F=1 share no image
    assert pack.built == {"decoded": len(pack), "copied": 0, "reused": False}
    for stage in (s for s in plan.stages if s.kind == "pretrain"):
        # Each pre-training finds the one pack and reads its own mixture's rows out of it.
        # Pointed at the driver's pack, or finding it by its key (a job run by hand from the same config).
        data = stage.job_with_pack(pack.path).data
        assert data.pack == pack.path and pretrain_pack(data).path == pack.path
        assert stage.job.data.pack is None and pretrain_pack(stage.job.data).path == pack.path
        mix = read_mixture(data.mixture)
        rows = _rows(pack, mix, "train")
        train_ids = mix.filter(pc.equal(mix.column("split"), "train")).column("image_id").to_pylist()
        assert pack.rows.column("key").take(rows).to_pylist() == [str(i) for i in train_ids]


def test_a_fraction_inside_the_union_decodes_nothing(grown):
    (base, first), (wider, again) = grown["base"], grown["fraction"]
    assert sum(s.kind == "pretrain" for s in wider.stages) == 3 > sum(s.kind == "pretrain" for s in base.stages)
    assert _ids(wider) == _ids(base) and wider.union == base.union  # nested: F=0.5 takes from F=0 and F=1
    assert again.built == {"decoded": 0, "copied": 0, "reused": True} and again.path == first.path


def test_a_new_seed_decodes_only_the_images_no_pack_holds(grown):
    (_, old), (_, new) = grown["fraction"], grown["seed"]
    old_ids = set(old.rows.column("key").to_pylist())
    new_ids = set(new.rows.column("key").to_pylist())
    assert new.path != old.path and old_ids < new_ids
    assert new.built == {"decoded": len(new_ids - old_ids), "copied": len(old_ids), "reused": False}
    assert new.meta["donors"] == [old.key]
    # The copied rows are the old pack's bytes.
    where = {k: i for i, k in enumerate(new.rows.column("key").to_pylist())}
    for j, k in enumerate(old.rows.column("key").to_pylist()):
        assert (new.images[where[k]] == old.images[j]).all()


def test_a_pack_built_by_hand_from_the_grids_mixtures_is_the_sweeps_pack(grown):
    plan, pack = grown["seed"]
    data = [s.job.data for s in plan.stages if s.kind == "pretrain"]
    # What `mixsweep data pack --mix m1 m2 ... --images ...` packs, in any order of the mixtures.
    items = mixture_pack_items([read_mixture(d.mixture) for d in reversed(data)], data[0].images, data[0].val_images)
    assert pack_key(items, 16, "crop") == pack.path.name
    assert PackedSet.open(pack.path).meta["n"] == len(items)


def test_a_mixture_trains_on_the_same_batches_from_the_grid_pack_as_from_its_own(grown, tmp_path):
    """Why the pre-training keys did not change: a mixture's rows keep their order inside the union pack, so
    every epoch's batches (images and augmentation) are the ones its own pack gave."""
    from mixsweep.data.augment import AugmentConfig
    from mixsweep.data.loader import PackedLoader
    from mixsweep.data.pack_build import build_pack

    plan, union = grown["seed"]
    stage = next(s for s in plan.stages if s.kind == "pretrain" and s.animal_fraction == 0.5 and s.seed == 1)
    data = stage.job.data
    mix = read_mixture(data.mixture)
    own = build_pack(mixture_pack_items([mix], data.images, data.val_images), tmp_path, size=16)
    aug = AugmentConfig(out_size=16)
    for resident in (True, False):
        a = PackedLoader(own, 8, indices=_rows(own, mix, "train"), seed=3, augment=aug, resident=resident)
        b = PackedLoader(union, 8, indices=_rows(union, mix, "train"), seed=3, augment=aug, resident=resident)
        for epoch in (0, 1):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            pairs = list(zip(a, b, strict=True))
            assert len(pairs) == 3
            for x, y in pairs:
                assert torch.equal(x["images"], y["images"])
                keys_a = own.rows.column("key").take(x["index"].numpy()).to_pylist()
                assert keys_a == union.rows.column("key").take(y["index"].numpy()).to_pylist()
