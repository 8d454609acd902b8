"""`mixsweep`: the command line's parser and entry point; what each subcommand does is in mixsweep/commands.py.

Bad input is a `MixsweepError`: printed as one line (`mixsweep: error: ...`), exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from mixsweep import commands
from mixsweep.console import err_console
from mixsweep.errors import MixsweepError

DESCRIPTION = """\
mixsweep: how does the make-up of the pre-training data change what a model can do after fine-tuning?

An MAE (ViT-B/16) is pre-trained on MS COCO subsets with a varying share of animal images and fine-tuned
for pet / background / border segmentation on Oxford-IIIT Pet.

Data steps, in the order you run them:
  mixsweep data synth       write look-alike COCO and Pet data (no download needed)
  mixsweep data coco-index  COCO instances JSON -> one Parquet row per image, animal / non-animal
  mixsweep data mix         one pre-training mixture: N images, exactly round(F*N) animal, nested over F
  mixsweep data pets        Oxford-IIIT Pet manifest with a fixed 70/15/15 split and nested fine-tune subsets
  mixsweep data pack        pre-resized uint8 images (and masks) for the fast loader, built once per manifest
  mixsweep demo --tour      all of the above on synthetic data, then a tiny pre-train + fine-tune

Training, one job from a YAML config (Ray Train, or --local without Ray):
  mixsweep train pretrain cfg.yaml    MAE pre-training on a mixture
  mixsweep train finetune cfg.yaml    segmentation fine-tuning (MAE, scratch MAE or ResNet-50)

Sweeps, from sweeps/*.yaml (Ray Tune; one pre-training feeds every fine-tune; only new keys run; any
recipe field can be a grid axis, e.g. `pretrain.epochs: [75, 150]`: sweeps/recipe-axes.yaml):
  mixsweep plan SPEC        stage graph: keys, done / pending, estimated cost and checkpoint bytes (a dry run)
  mixsweep run SPEC         run the pending stages
  mixsweep report SPEC      Table 2, plots with 95% CIs over seeds, W&B report run (from the store alone)
  mixsweep results SPEC     the store's rows for the spec: a table, --format csv|json, or --out x.parquet
  mixsweep sync SPEC        upload the sweep's W&B offline runs and declare their inputs (idempotent)
  mixsweep suggest SPEC     the next fractions to run, as a snippet to paste
  mixsweep demo             the demo study on a synthetic world (--world planted|null), then its report
"""


COCO_INDEX_DESCRIPTION = """\
Read a COCO instances JSON with pycocotools and write one row per image with its categories and its
class: animal, non-animal or neither.

Required in the JSON (an instances_*.json has them all):
  images[]       id, file_name, width, height
  annotations[]  image_id, category_id
  categories[]   id, name, supercategory; the animal categories are those whose supercategory is "animal"

Classes:
  animal         --rule any: an annotation of an animal category; --rule paper: every annotation is of one
                 and the same animal category
  non-animal     at least one annotation and none of an animal category
  neither        the rest: an image without annotations (unless --unlabelled-as-non-animal), and under
                 --rule paper an image with an animal and any other category. Mixtures never draw these.
"""


def _int_at_least(low: int, words: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be {words}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_nonneg_int = _int_at_least(0, ">= 0")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is outside [0, 1]")
    return value


# --- parser ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixsweep", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="index, mix, split and pack the datasets",
                          description="Data steps: COCO index and mixtures, Pet manifest, packing, synthetic data.")
    dsub = data.add_subparsers(dest="data_command", metavar="STEP", required=True)

    s = dsub.add_parser("coco-index", help="COCO instances JSON -> Parquet index, one row per image",
                        formatter_class=argparse.RawDescriptionHelpFormatter, description=COCO_INDEX_DESCRIPTION)
    s.add_argument("--annotations", required=True, type=Path, help="instances_train2017.json (or val)")
    s.add_argument("--images", type=Path, help="image folder; every listed file is checked to exist")
    s.add_argument("--out", required=True, type=Path, help="output Parquet file")
    s.add_argument("--rule", choices=("any", "paper"), default="any",
                   help="any: an animal annotation makes an image animal (default); paper: only images whose "
                        "one distinct category is an animal")
    s.add_argument("--unlabelled-as-non-animal", action="store_true",
                   help="count images with no annotations as non-animal (default: neither)")
    s.add_argument("--allow-missing", action="store_true", help="drop listed images whose file is missing")
    s.set_defaults(func=commands.cmd_coco_index)

    s = dsub.add_parser("mix", help="one pre-training mixture at animal fraction F",
                        description="Choose N training images of which exactly round(F*N) are animal, plus a "
                                    "validation set at the same fraction. For one seed, mixtures are nested "
                                    "across F: moving along the grid only swaps images.")
    s.add_argument("--index", required=True, type=Path, help="index from `data coco-index`")
    s.add_argument("--animal-fraction", required=True, type=_fraction, help="share of animal images, 0..1")
    s.add_argument("--size", type=_positive_int,
                   help="training images N (default: the largest N feasible at every fraction)")
    s.add_argument("--seed", type=_nonneg_int, default=0, help="draw seed (default 0)")
    s.add_argument("--val-index", type=Path, help="index of val2017; default: hold a slice out of --index")
    s.add_argument("--val-size", type=_nonneg_int, help="validation images (default: all of --val-index's "
                   "feasible size, or 4%% of the smaller class when held out)")
    s.add_argument("--out", required=True, type=Path, help="output Parquet file")
    s.set_defaults(func=commands.cmd_mix)

    s = dsub.add_parser("pets", help="Oxford-IIIT Pet manifest with a fixed split",
                        description="Index the Oxford-IIIT Pet folder (official layout or torchvision's "
                                    "oxford-iiit-pet/), decode every image once, and write a manifest with a "
                                    "seeded, breed-stratified 70/15/15 split and nested fine-tune subsets.")
    s.add_argument("--root", required=True, type=Path, help="folder with images/ and annotations/")
    s.add_argument("--out", required=True, type=Path, help="output Parquet file")
    s.add_argument("--seed", type=_nonneg_int, default=0, help="split seed (default 0)")
    s.add_argument("--split", choices=("stratified", "official"), default="stratified",
                   help="stratified: 70/15/15 over all usable images (default); official: annotations/test.txt "
                        "is test, annotations/trainval.txt is split into train and val (both files required)")
    s.add_argument("--allow-missing", action="store_true", help="exclude listed images whose files are missing")
    s.add_argument("--workers", type=_positive_int, help="decode processes (default: up to 8)")
    s.set_defaults(func=commands.cmd_pets)

    s = dsub.add_parser("synth", help="write synthetic COCO-format and Pet-format data",
                        description="Write look-alike data in the real on-disk formats: a COCO instances JSON "
                                    "with drawn creatures (animal) and man-made scenes, and a Pet folder with "
                                    "trimaps, including the real archive's awkward files.")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--scale", choices=("small", "medium"), default="small", help="size (default small)")
    s.add_argument("--seed", type=_nonneg_int, default=0, help="seed (default 0)")
    s.add_argument("--no-awkward", action="store_true", help="leave out the awkward Pet files")
    s.set_defaults(func=commands.cmd_synth)

    s = dsub.add_parser("pack", help="pre-resize images (and masks) for the fast loader",
                        description="Decode, resize and store images as uint8 arrays once, under a cache folder "
                                    "keyed by the images and the rule that makes the bytes (size, fit, resize "
                                    "rule, Pillow version, mask function); a second call reuses the pack, and "
                                    "a pack of more images copies the rows earlier packs hold.")
    s.add_argument("--mix", type=Path, nargs="+", help="mixtures from `data mix` (or a sweep's "
                   "store/data/union-*.parquet); several give one pack of their union, keyed by its images: "
                   "a grid's mixtures give the very pack its sweep reads (with --cache STORE/cache)")
    s.add_argument("--images", type=Path, help="COCO image folder of the training rows (train2017/)")
    s.add_argument("--val-images", type=Path, help="image folder of the validation rows when they come from "
                   "--val-index (val2017/); default --images")
    s.add_argument("--pets", type=Path, help="a manifest from `data pets`")
    s.add_argument("--pets-root", type=Path, help="Pet folder, if it moved since the manifest was built")
    s.add_argument("--cache", required=True, type=Path, help="cache folder for packs")
    s.add_argument("--size", type=_positive_int, default=256, help="stored side length (default 256)")
    s.add_argument("--workers", type=_positive_int, help="decode processes (default: up to 8)")
    s.set_defaults(func=commands.cmd_pack)

    train = sub.add_parser("train", help="run one training job from a YAML config",
                           description="Run one pre-training or fine-tuning job as a Ray Train TorchTrainer "
                                       "(data-parallel over scaling.num_workers), or in this process with "
                                       "--local. Rerunning the same config resumes from its last checkpoint.")
    train.add_argument("kind", choices=("pretrain", "finetune"), help="job kind (must match the file's `kind`)")
    train.add_argument("config", type=Path, help="job YAML (see README: Training jobs)")
    train.add_argument("--local", action="store_true", help="run in this process without Ray")
    train.add_argument("--address", help="Ray cluster address (default: start or join a local instance)")
    train.set_defaults(func=commands.cmd_train)

    s = sub.add_parser("plan", help="show a sweep's stage graph: keys, status, estimated cost",
                       description="Expand a sweep spec into its stages (pre-trainings, fine-tunes, baselines) with "
                                   "their content keys, whether each is done in the store, and estimated cost: "
                                   "training steps plus fixed costs (start-up, compile, evaluation, checkpoint "
                                   "writes) and the checkpoint bytes written, from the store's finished stages of "
                                   "the same method, preset and device kind when it has them, else from reference "
                                   "rates measured on one NVIDIA H200. Recipe axes under grid: (pretrain.epochs: "
                                   "[75, 150], finetune.blr: [...], preset: [...]) multiply the stages they shape; "
                                   "one line per axis says by how much. "
                                   "A dry run: it reads the data roots (the keys follow the images) and the "
                                   "store, and writes nothing. Synthetic data the store lacks is generated in a "
                                   "temporary folder.")
    s.add_argument("spec", type=Path, help="sweep spec YAML (sweeps/*.yaml)")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(func=commands.cmd_plan)

    s = sub.add_parser("run", help="run a sweep's pending stages with Ray Tune",
                       description="Run every pending stage: pre-trainings first, each fine-tune as soon as its "
                                   "parent is done, as many at once as the cluster fits. Finished keys never run "
                                   "again; rerun after extending the grid to run only the new points.")
    s.add_argument("spec", type=Path)
    s.add_argument("--address", help="Ray cluster address (default: a local instance)")
    s.add_argument("--retry-failed", action="store_true",
                   help="also rerun stages that failed or diverged before")
    s.add_argument("--wait", action="store_true",
                   help="when another `mixsweep run` trains into the same storage, wait for it to end instead of "
                        "refusing (one driver per store at a time; plan, report and results never wait)")
    s.add_argument("--cluster-config", type=Path, metavar="YAML",
                   help="the autoscaler's cluster config (the `ray up` YAML): a request is judged against the node "
                        "types it can start. Default: the config an autoscaler reported to Ray, else "
                        "~/ray_bootstrap_config.yaml (on a `ray up` head), else only the nodes alive now")
    s.set_defaults(func=commands.cmd_run)

    s = sub.add_parser("report", help="tables and plots of a sweep's results",
                       description="Write results.parquet, results.md (the paper's Table 2 form; the effect test "
                                   "the spec's effect: section declares, a paired t-test over seeds, with the other "
                                   "metrics and sizes as Holm-adjusted secondary tests; the versions and devices "
                                   "the stages trained with), effect.json and PNG plots with 95% Student-t "
                                   "CIs over seeds under the store, and log them to W&B. Works from the store "
                                   "alone (a copy on a laptop): `mixsweep run` records the spec's stages there, "
                                   "so the data roots need not exist, and the store may be read-only (the report "
                                   "then goes to ./mixsweep-reports/<spec name>). With recipe axes: the "
                                   "declared test once per axis value, Holm-adjusted across values, by_axis.png, "
                                   "and a whole report per value under facets/.")
    s.add_argument("spec", type=Path)
    s.add_argument("--out", type=Path, metavar="DIR",
                   help="write the report here (default <storage>/reports/<spec name>)")
    s.set_defaults(func=commands.cmd_report)

    s = sub.add_parser("results", help="the store's results for a spec, as a table, CSV, JSON or Parquet",
                       description="One row per finished or failed stage of the spec, read from the store alone "
                                   "(no data roots needed once `mixsweep run` has recorded the spec's stages): "
                                   "grid values, final metrics, the versions and device each stage trained with.")
    s.add_argument("spec", type=Path)
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--out", type=Path, help="write every column to this Parquet file instead")
    s.set_defaults(func=commands.cmd_results)

    s = sub.add_parser("sync", help="upload the sweep's W&B offline runs and declare their inputs",
                       description="Upload every W&B offline run of the spec's store (<storage>/wandb/offline-run-*, "
                                   "and <mirror>/wandb/ when the mirror is a local path; a URI mirror's runs that "
                                   "the store lacks are copied into the store first) with wandb's own `wandb "
                                   "sync`, then declare each uploaded run's input artifacts by resuming it online "
                                   "(offline runs cannot). Idempotent: a run wandb marked as synced "
                                   "(run-<id>.wandb.synced) is not sent again, nor are inputs declared twice "
                                   "(.mixsweep-inputs-declared); with nothing left it prints 'nothing to sync'. "
                                   "Runs without an exit record (still running) are left for later. Needs a W&B "
                                   "API key (WANDB_API_KEY or `wandb login`); without one it says how many runs "
                                   "wait and exits with status 2. Status 1: some run was not uploaded or its "
                                   "inputs not declared (rerun to retry).")
    s.add_argument("spec", type=Path, help="sweep spec YAML (sweeps/*.yaml), loaded as `mixsweep report` does")
    s.add_argument("--timeout", type=_positive_int, default=1800,
                   help="seconds `wandb sync` may take in all before it is stopped (default 1800)")
    s.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    s.set_defaults(func=commands.cmd_sync)

    s = sub.add_parser("suggest", help="propose the next animal fractions to run",
                       description="Where the CI is widest or the curve bends most: a grid snippet to paste.")
    s.add_argument("spec", type=Path)
    s.add_argument("-k", type=_positive_int, default=3, help="how many fractions (default 3)")
    s.set_defaults(func=commands.cmd_suggest)

    s = sub.add_parser("demo", help="the demo study on a synthetic world with a known answer, then its report",
                       description="Run the demo study (animal fractions 0 and 1, paired over seeds; the verdict is the frozen-encoder "
                                   "probe's test loss, declared in the packaged spec's effect: section; "
                                   "random-encoder probe and supervised-MAE baselines; tiny MAE, local Ray on CPU, "
                                   "W&B offline) on a synthetic world "
                                   "and write its report under ./runs/demo-<world>-s<seed>/: the planted world "
                                   "(pre-training on more animals should help) or the null world (it cannot). "
                                   "--tour instead walks the data path step by step.")
    s.add_argument("--world", choices=("planted", "null"), default="planted",
                   help="planted: animal images share the pets' make-up; null: labels say nothing about pixels")
    s.add_argument("--world-seed", type=_nonneg_int, default=0, help="seed of the synthetic world (default 0)")
    s.add_argument("--spec", type=Path, default=None,
                   help="another sweep spec instead of the packaged demo (a synth spec gets --world/--world-seed)")
    s.add_argument("--tour", action="store_true", help="the step-by-step data-path tour instead")
    s.add_argument("--out", type=Path, default=Path("runs/demo"), help="--tour's work folder (default runs/demo)")
    s.add_argument("--scale", choices=("small", "demo", "medium"), default="small", help="--tour's data scale")
    s.set_defaults(func=commands.cmd_demo)
    return p


def _version() -> str:
    from mixsweep import __version__

    return f"mixsweep {__version__}"


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"mixsweep: warning: {message}", markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _one_line_warnings
    try:
        status = args.func(args)  # a command may return its exit status
    except MixsweepError as e:
        err_console.print(f"mixsweep: error: {e}", markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("mixsweep: interrupted", markup=False)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
