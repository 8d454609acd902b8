"""The two synthetic worlds: same formats and labels, and the planted property measured on the pixels.

planted: animal-annotated images carry the Pets' fur grain; non-animal images do not. null: whether an
image shows a creature is a coin flip independent of its label, so the two labels look alike.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from mixsweep.data.coco import build_coco_index
from mixsweep.errors import MixsweepError
from mixsweep.synth import write_synth
from mixsweep.synth.scenes import render_coco_scene


def grain_energy(img: Image.Image, mask: np.ndarray) -> float:
    """Mean |Laplacian| inside `mask` at the 64-px scale the demo trains at: the fur grain's band energy."""
    h = 64
    g = np.asarray(img.convert("L").resize((img.width * h // img.height, h), Image.BILINEAR), np.float32)
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((g.shape[1], h), Image.NEAREST)) > 0
    lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    m = m[1:-1, 1:-1]
    return float(lap[m].mean()) if m.sum() > 20 else float("nan")


def energies(paths) -> dict[bool, list[float]]:
    """Per image with annotations: grain energy over its annotated pixels, keyed by 'has an animal label'."""
    coco = COCO(str(paths.coco_train_annotations))
    animal = set(coco.getCatIds(supNms=["animal"]))
    out: dict[bool, list[float]] = {True: [], False: []}
    for iid in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=iid))
        if not anns:
            continue
        info = coco.imgs[iid]
        mask = np.zeros((info["height"], info["width"]), bool)
        for a in anns:
            mask |= coco.annToMask(a) > 0
        with Image.open(paths.coco_train_images / info["file_name"]) as img:
            out[any(a["category_id"] in animal for a in anns)].append(grain_energy(img, mask))
    return out


@pytest.fixture(scope="module")
def null_small(tmp_path_factory):
    return write_synth(tmp_path_factory.mktemp("null"), scale="small", seed=0, world="null")


def test_worlds_share_formats_labels_and_pets(synth_small, null_small):
    planted_index, _ = build_coco_index(synth_small.coco_train_annotations, synth_small.coco_train_images)
    null_index, _ = build_coco_index(null_small.coco_train_annotations, null_small.coco_train_images)
    # Same image ids with the same animal / non-animal labels: only the pixels behind the labels differ.
    cols = ["image_id", "is_animal", "is_non_animal"]
    assert planted_index.select(cols).to_pylist() == null_index.select(cols).to_pylist()
    assert sum(planted_index.column("is_animal").to_pylist()) > 50
    # The Pets are the fine-tuning task: byte-identical in both worlds.
    for name in ("Bengal_1.jpg", "beagle_3.jpg"):
        assert (synth_small.pets_root / "images" / name).read_bytes() == \
            (null_small.pets_root / "images" / name).read_bytes()
    pixels = [np.asarray(Image.open(p / "coco" / "train2017" / f"{int(i):012d}.jpg"))
              for p in (synth_small.root, null_small.root) for i in planted_index.column("image_id").to_pylist()[:40]]
    assert sum(not np.array_equal(a, b) for a, b in zip(pixels[:40], pixels[40:])) > 5


def test_planted_world_puts_the_pets_grain_on_animal_images_only(synth_small):
    e = energies(synth_small)
    animal, other = np.nanmean(e[True]), np.nanmean(e[False])
    assert animal > 1.8 * other, (animal, other)
    # The pets carry the same grain as the planted animals.
    pets = []
    for name in ("Bengal_1", "beagle_2", "pug_3", "Persian_4"):
        with Image.open(synth_small.pets_root / "images" / f"{name}.jpg") as img:
            tri = np.asarray(Image.open(synth_small.pets_root / "annotations" / "trimaps" / f"{name}.png"))
            pets.append(grain_energy(img, tri == 1))
    assert np.mean(pets) > 1.5 * other


def test_planted_world_plants_its_declared_strength(synth_small):
    """The planted effect's two knobs (mixsweep.synth.scenes): cats and dogs are most of the animals (COCO's own
    weights make them a third), read back from the written annotations; and a plain animal image is a close-up
    (one subject at least 0.4 of the frame high) more often than a plain non-animal image."""
    coco = COCO(str(synth_small.coco_train_annotations))
    animal = set(coco.getCatIds(supNms=["animal"]))
    cats = [a["category_id"] for a in coco.loadAnns(coco.getAnnIds()) if a["category_id"] in animal and not a["iscrowd"]]
    assert np.isin(cats, [17, 18]).mean() > 0.6, len(cats)

    def close_up_share(kind: str) -> float:
        shares = []
        for i in range(60):
            scene = render_coco_scene(0, 1, i, kind)
            tall = [np.any(o.mask, axis=1).sum() / scene.image.height for o in scene.objects]
            shares.append(len(tall) == 1 and tall[0] >= 0.4)
        return float(np.mean(shares))

    animal_share, other_share = close_up_share("animal"), close_up_share("non_animal")
    assert animal_share > other_share + 0.15, (animal_share, other_share)


def test_null_world_labels_say_nothing_about_pixels(null_small):
    e = energies(null_small)
    animal, other = np.nanmean(e[True]), np.nanmean(e[False])
    assert abs(animal - other) < 0.2 * max(animal, other), (animal, other)


def test_unknown_world_is_one_line(tmp_path):
    with pytest.raises(MixsweepError, match="unknown synth world 'planet'"):
        write_synth(tmp_path, world="planet")


def test_plan_warns_when_seeds_do_not_resample_pretraining_images(tmp_path):
    """The confounder the null world exposed: a mixture as large as a pool gives every seed the same images."""
    import warnings

    from mixsweep.spec import parse_spec
    from mixsweep.sweep.plan import build_plan
    from mixsweep.sweep.store import Store

    def plan(size):
        spec = parse_spec({"name": "w", "grid": {"animal_fractions": [0.0, 1.0], "seeds": [0, 1]},
                           "data": {"synth": {"scale": "small"}}, "preset": "tiny", "storage": str(tmp_path),
                           "mixture": {"size": size} if size else {}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build_plan(spec, Store(tmp_path))
        return [str(w.message) for w in caught if "every seed pre-trains on the same" in str(w.message)]

    full = plan(None)
    assert full and "animal fraction 0" in full[0]
    assert plan(20) == []


def test_plan_cost_counts_fixed_step_epochs(tmp_path):
    """Under fixed_steps a 0.25 fine-tune trains as many images per epoch as a full one: the cost says so."""
    from mixsweep.spec import parse_spec
    from mixsweep.sweep.cost import reference_cost
    from mixsweep.sweep.plan import build_plan
    from mixsweep.sweep.store import Store

    def costs(schedule):
        spec = parse_spec({"name": "c", "grid": {"animal_fractions": [1.0], "finetune_fractions": [0.25, 1.0],
                                                 "seeds": [0]},
                           "data": {"synth": {"scale": "small"}}, "preset": "tiny", "storage": str(tmp_path),
                           "mixture": {"size": 20}, "finetune": {"batch_size": 8, "schedule": schedule}})
        ft = [s for s in build_plan(spec, Store(tmp_path)).stages if s.kind == "finetune"]
        return {s.finetune_fraction: reference_cost(s).step_s for s in ft}

    fixed, by_epoch = costs("fixed_steps"), costs("fixed_epochs")
    assert fixed[0.25] == pytest.approx(fixed[1.0], rel=0.15)
    assert by_epoch[0.25] < 0.35 * by_epoch[1.0]


def test_plan_cost_scales_only_vit_methods_by_preset(tmp_path):
    """A smaller ViT preset makes MAE-family stages cheaper; a ResNet baseline builds no ViT, so its cost stays."""
    from mixsweep.spec import parse_spec
    from mixsweep.sweep.cost import reference_cost
    from mixsweep.sweep.plan import build_plan
    from mixsweep.sweep.store import Store

    def costs(preset):
        spec = parse_spec({"name": "c", "grid": {"animal_fractions": [1.0], "seeds": [0]},
                           "baselines": ["resnet50", "supervised_mae"], "data": {"synth": {"scale": "small"}},
                           "preset": preset, "storage": str(tmp_path), "mixture": {"size": 20}})
        return {s.method: reference_cost(s).step_s for s in build_plan(spec, Store(tmp_path)).stages}

    tiny, base = costs("tiny"), costs("base")
    assert tiny["resnet50"] == pytest.approx(base["resnet50"])
    for method in ("mae", "supervised_mae"):
        assert tiny[method] < 0.01 * base[method]


def test_baseline_seeds_thin_only_the_baselines(tmp_path):
    """grid.baseline_seeds runs the costly baselines on fewer seeds; the MAE stages keep every seed."""
    from mixsweep.spec import parse_spec
    from mixsweep.sweep.plan import build_plan
    from mixsweep.sweep.store import Store

    spec = parse_spec({"name": "b", "grid": {"animal_fractions": [0.0, 1.0], "seeds": [0, 1, 2],
                                             "baseline_seeds": [2, 0]},
                       "baselines": ["resnet18"], "data": {"synth": {"scale": "small"}}, "preset": "tiny",
                       "storage": str(tmp_path), "mixture": {"size": 20}})
    stages = build_plan(spec, Store(tmp_path)).stages
    assert sorted(s.seed for s in stages if s.method == "resnet18") == [0, 2]
    assert sorted({s.seed for s in stages if s.method == "mae"}) == [0, 1, 2]


def test_finetune_seeds_thin_only_the_end_to_end_fine_tunes(tmp_path):
    """grid.finetune_seeds: every pre-training is probed; only those seeds' pre-trainings are also fine-tuned."""
    from mixsweep.spec import parse_spec
    from mixsweep.sweep.plan import build_plan
    from mixsweep.sweep.store import Store

    probe = {"epochs": 1, "batch_size": 8, "warmup_epochs": 0, "blr": 0.1}
    spec = parse_spec({"name": "f", "grid": {"animal_fractions": [0.0, 1.0], "seeds": [0, 1, 2],
                                             "finetune_seeds": [1]},
                       "baselines": ["supervised_mae", "random_probe"], "probe": probe,
                       "data": {"synth": {"scale": "small"}}, "preset": "tiny", "storage": str(tmp_path),
                       "mixture": {"size": 20}})
    stages = build_plan(spec, Store(tmp_path)).stages
    by_method = {m: sorted((s.seed, s.animal_fraction) for s in stages if s.method == m and s.kind == "finetune")
                 for m in ("mae", "probe", "supervised_mae", "random_probe")}
    assert by_method["mae"] == [(1, 0.0), (1, 1.0)]
    assert by_method["probe"] == [(seed, f) for seed in (0, 1, 2) for f in (0.0, 1.0)]
    assert [seed for seed, _ in by_method["supervised_mae"]] == [0, 1, 2]  # baselines follow baseline_seeds
    assert sum(s.kind == "pretrain" for s in stages) == 6
