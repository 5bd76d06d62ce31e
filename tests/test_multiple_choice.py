"""Multiple choice (``model.option_columns``): each option read with the question as a
sequence of its own and scored by one head (pipeline/multiple_choice.py,
pipeline/data/option_tokens.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import build_config
from pipeline.data import CompetitionDataset, ModelInputs, build_loader
from pipeline.errors import ConfigError, DataError
from pipeline.models.network import build_model, build_tokenizer
from pipeline.multiple_choice import ordered_options
from tests.conftest import FILLER, WORDS, write_tokenizer
from tests.test_competition import run_cli

LETTERS = ["A", "B", "C", "D"]


def _questions(n: int, seed: int) -> pd.DataFrame:
    """Questions of filler words and four options, the right one holding a 'good' word and
    the others a 'bad' one, at a random place: an option's own text tells it, its position
    nothing."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        answer = int(rng.integers(0, 4))
        options = {}
        for j, letter in enumerate(LETTERS):
            words = [*rng.choice(FILLER, 2), rng.choice(WORDS[int(j == answer)])]
            rng.shuffle(words)
            options[letter] = " ".join(words)
        rows.append({"id": f"q{i}", "prompt": " ".join(rng.choice(FILLER, 4)), **options,
                     "answer": LETTERS[answer]})
    return pd.DataFrame(rows)


def _competition(root: Path, n_train: int = 160, n_test: int = 40) -> dict[str, Any]:
    folder = root / "exam"
    folder.mkdir(parents=True)
    frame = _questions(n_train + n_test, seed=0)
    frame.iloc[:n_train].to_csv(folder / "train.csv", index=False)
    test = frame.iloc[n_train:]
    test.drop(columns="answer").to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "answer": "A B C"}).to_csv(
        folder / "sample_submission.csv", index=False)
    test[["id", "answer"]].to_csv(root / "answers.csv", index=False)
    return {
        "name": "exam", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(folder), "id_column": "id", "target_columns": ["answer"],
                        "task": "multiclass", "metric": "map@3", "modality": "text",
                        "text_columns": ["prompt", *LETTERS]},
        "folds": {"scheme": "stratified", "n_splits": 2, "seed": 0},
        "model": {"encoders": [{
            "name": "hf", "tokenizer": str(write_tokenizer(root / "tokenizer")),
            "hf_config": {"model_type": "bert", "vocab_size": 40, "hidden_size": 16,
                          "num_hidden_layers": 1, "num_attention_heads": 2,
                          "intermediate_size": 32, "max_position_embeddings": 64}}],
            "max_length": 16, "option_columns": LETTERS},
        "train": {"epochs": 5, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3}},
    }


def _map3(submission: Path, answers: Path) -> float:
    rows = pd.read_csv(submission).merge(pd.read_csv(answers), on="id", suffixes=("", "_true"))
    ranked = rows["answer"].str.split()
    return float(np.mean([1 / (r.index(y) + 1) if y in r else 0.0
                          for r, y in zip(ranked, rows["answer_true"], strict=True)]))


def test_each_option_is_scored_by_its_text_and_submitted_as_the_top_three(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Options joined into one text left a head to learn which place holds the right one (a
    map@3 near chance, 0.46, on these questions); scored one by one, the options' own words
    decide."""
    cfg = _competition(tmp_path)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    oof = pd.read_parquet(tmp_path / "runs" / "exam" / "oof.parquet")
    assert [c for c in oof.columns if c not in ("id", "fold")] == LETTERS  # one per option
    submission = tmp_path / "submissions" / "exam.csv"
    written = pd.read_csv(submission)
    assert written["id"].tolist() == pd.read_csv(tmp_path / "exam" / "test.csv")["id"].tolist()
    assert all(len(set(r.split()) & set(LETTERS)) == 3 for r in written["answer"])
    assert _map3(submission, tmp_path / "answers.csv") > 0.9


def test_held_and_streamed_rows_give_the_same_oof(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Rows x options x tokens held on the device (cut to a batch's longest option) and rows
    collated from items (each padded to its own longest option) are the same inputs."""
    cfg = _competition(tmp_path, n_train=64, n_test=16)
    cfg["train"]["epochs"] = 2
    oofs = []
    for loader in ("memory", "stream"):
        run = copy.deepcopy(cfg)
        run["name"], run["train"]["loader"] = f"exam-{loader}", loader
        code, err, _ = run_cli(run, tmp_path, capsys)
        assert code == 0, err
        oofs.append(pd.read_parquet(tmp_path / "runs" / run["name"] / "oof.parquet"))
    np.testing.assert_allclose(oofs[0][LETTERS].to_numpy(), oofs[1][LETTERS].to_numpy(),
                               atol=1e-5)


def test_options_moved_to_other_columns_move_their_scores(tmp_path: Path) -> None:
    """One head for every option: an option's score depends on its text and the question,
    not on its column, so permuting the options' texts permutes the logits."""
    cfg = build_config(_competition(tmp_path))
    frame = _questions(6, seed=1)
    inputs = ModelInputs(text_columns=["prompt", *LETTERS], tokenizer=build_tokenizer(cfg.model),
                         max_length=16, option_columns=LETTERS)
    torch.manual_seed(0)
    model = build_model(cfg.model, n_outputs=4, tabular=None).eval()
    moved = frame.rename(columns=dict(zip(LETTERS, ["C", "A", "D", "B"], strict=True)))

    def logits(rows: pd.DataFrame) -> torch.Tensor:
        batch = next(iter(build_loader(CompetitionDataset(rows, inputs), 6, False, 0)))
        assert batch["input_ids"].shape[:2] == (6, 4)
        with torch.no_grad():
            return model(batch)

    before, after = logits(frame), logits(moved)
    assert before.shape == (6, 4)
    torch.testing.assert_close(after[:, [2, 0, 3, 1]], before, atol=1e-5, rtol=0)


def test_classes_name_their_options_or_stand_in_their_order() -> None:
    assert ordered_options(["B", "A", "C"], ["A", "B", "C"]) == ["A", "B", "C"]  # by name
    # SWAG: labels 0..3 for ending0..ending3, by position
    endings = [f"ending{i}" for i in range(4)]
    assert ordered_options(endings, [0, 1, 2, 3]) == endings
    with pytest.raises(DataError, match="lists 4 options but the target has 3 classes"):
        ordered_options(LETTERS, ["A", "B", "C"])  # an option never the answer in train
    with pytest.raises(DataError, match="name only some of them"):
        ordered_options(["A", "B", "x"], ["A", "B", "C"])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["model"].update(option_columns=["A", "E"]),
     r"\['E'\] must be among 'competition.text_columns'"),
    (lambda c: c["competition"].update(task="binary", metric="roc_auc"),
     "multiple choice is a multiclass task"),
    (lambda c: c["model"]["encoders"].append({"name": "mlp"}), "needs one 'hf:' encoder alone"),
    (lambda c: c["train"].update(consistency={"method": "uda"}),
     "'train.consistency' needs the features of whole rows"),
])
def test_a_config_that_cannot_score_options_is_refused_at_load(tmp_path: Path, edit: Any,
                                                               message: str) -> None:
    cfg = _competition(tmp_path)
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        build_config(cfg)


def test_a_class_without_its_option_is_refused_before_the_run_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _competition(tmp_path)
    train = Path(cfg["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(train)
    frame.loc[frame["answer"] == "D", "answer"] = "C"  # 'D' never right: three classes
    frame.to_csv(train, index=False)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and "lists 4 options but the target has 3 classes" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs" / "exam").exists()
