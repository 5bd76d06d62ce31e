"""Tiny competitions of every modality and task, generated on the fly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("PIPELINE_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = {
    0: ["dull", "boring", "bad", "awful", "flat"],
    1: ["great", "fun", "superb", "good", "warm"],
}
FILLER = ["the", "movie", "was", "a", "plot", "and", "very", "film", "it", "story"]


def _labels(rng: np.random.Generator, n: int, task: str) -> dict[str, Any]:
    if task == "binary":
        return {"target": rng.choice(["no", "yes"], size=n)}
    if task == "multiclass":
        return {"target": rng.integers(0, 3, size=n)}
    if task == "multilabel":
        return {"a": rng.integers(0, 2, size=n), "b": rng.integers(0, 2, size=n)}
    return {"y": rng.normal(size=n)}


def _signal(labels: dict[str, Any], task: str) -> np.ndarray:
    """A per-row number the inputs encode, so models can learn something."""
    if task == "binary":
        return (labels["target"] == "yes").astype(float)
    if task == "multiclass":
        return labels["target"].astype(float) / 2
    if task == "multilabel":
        return labels["a"] * 0.6 + labels["b"] * 0.3
    return labels["y"]


def write_tokenizer(path: Path) -> Path:
    """A BERT WordPiece tokenizer over the test vocabulary."""
    from transformers import BertTokenizer

    words = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    return path


def make_competition(
    root: Path, modality: str, task: str, n_train: int = 48, n_test: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Write train/test/sample_submission (+ images) and return a matching config dict."""
    rng = np.random.default_rng(seed)
    comp_dir = root / f"{modality}_{task}"
    comp_dir.mkdir(parents=True, exist_ok=True)
    n = n_train + n_test
    labels = _labels(rng, n, task)
    signal = _signal(labels, task)
    frame = pd.DataFrame({"id": [f"r{i:04d}" for i in range(n)], **labels})
    competition: dict[str, Any] = {
        "dir": str(comp_dir), "id_column": "id", "task": task, "modality": modality,
        "target_columns": [c for c in labels],
        "metric": {"binary": "roc_auc", "multiclass": "accuracy", "multilabel": "roc_auc",
                   "regression": "rmse"}[task],
    }
    model: dict[str, Any] = {}
    if modality == "tabular":
        frame["x1"] = signal + rng.normal(scale=0.3, size=n)
        frame["x2"] = rng.normal(size=n)
        frame.loc[rng.random(n) < 0.1, "x2"] = np.nan
        frame["color"] = np.where(signal > np.median(signal), "red", "blue")
        model = {"encoders": [{"name": "mlp", "params": {"hidden": [16]}}]}
    elif modality == "image":
        from PIL import Image

        (comp_dir / "images").mkdir(exist_ok=True)
        paths = []
        for i in range(n):
            level = int(40 + 170 * (signal[i] - signal.min()) / (np.ptp(signal) + 1e-9))
            pixels = np.clip(rng.normal(level, 20, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            path = f"images/{i:04d}.png"
            Image.fromarray(pixels).save(comp_dir / path)
            paths.append(path)
        frame["image"] = paths
        competition["image_column"] = "image"
        model = {"encoders": [{"name": "timm:test_resnet"}], "image_size": 32}
    else:
        tok = write_tokenizer(root / "tokenizer")
        texts = []
        for s in signal:
            cls = int(s > np.median(signal))
            words = list(rng.choice(FILLER, size=5)) + list(rng.choice(WORDS[cls], size=2))
            rng.shuffle(words)
            texts.append(" ".join(words))
        frame["text"] = texts
        competition["text_columns"] = ["text"]
        model = {"encoders": [{
            "name": "hf", "tokenizer": str(tok),
            "hf_config": {"model_type": "bert", "vocab_size": 40, "hidden_size": 16,
                          "num_hidden_layers": 1, "num_attention_heads": 2,
                          "intermediate_size": 32, "max_position_embeddings": 64},
        }], "max_length": 16}
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]
    train.to_csv(comp_dir / "train.csv", index=False)
    test.drop(columns=competition["target_columns"]).to_csv(comp_dir / "test.csv", index=False)
    sample = test[["id"]].copy()
    for c in competition["target_columns"]:
        sample[c] = 0
    sample.to_csv(comp_dir / "sample_submission.csv", index=False)
    return {
        "name": f"{modality}-{task}",
        "output_dir": str(root / "runs"),
        "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": competition,
        "folds": {"scheme": "multilabel" if task == "multilabel" else "stratified",
                  "n_splits": 2, "seed": 0},
        "model": model,
        "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3}},
    }


@pytest.fixture
def one_thread():
    """Run torch on one intra-op thread for the test. On tiny tensors extra threads only add
    synchronisation, and on a busy machine their spin-waits cost many times the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def competition_factory(tmp_path: Path):
    """``factory(modality, task, **kw) -> config dict`` writing under tmp_path."""

    def factory(modality: str, task: str, **kwargs: Any) -> dict[str, Any]:
        return make_competition(tmp_path, modality, task, **kwargs)

    return factory


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Each test builds its Accelerator from scratch (CPU in one test, bf16 on a GPU in the
    next): Accelerate refuses to change a process-wide state once it is set."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def train_killed_in_epoch(monkeypatch):
    """``kill(cfg, epoch, desc="")``: run the train stage on ``cfg`` and stop it
    (KeyboardInterrupt) as the 1-based ``epoch`` starts in a fit whose label holds ``desc``
    (a full model's: 'full'), as a killed process would, for resume tests."""
    from pipeline import train
    from pipeline.engine.trainer import Trainer

    def kill(cfg: Any, epoch: int, desc: str = "") -> None:
        original = Trainer.train_epoch

        def crash(self: Trainer, *args: Any, **kwargs: Any) -> float:
            if desc in self.desc and self.epoch + 1 == epoch:
                raise KeyboardInterrupt("killed")
            return original(self, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(Trainer, "train_epoch", crash)
            with pytest.raises(KeyboardInterrupt):
                train.run(cfg)

    return kill
