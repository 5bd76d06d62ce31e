"""A table's free-text columns (``competition.text_columns``) read by the tabular members as
TF-IDF features (pipeline/data/text_features.py). Before, a GBDT, a scikit-learn model or an
MLP given text columns read nothing of them: the runs below scored ROC AUC ~0.5 on a table
whose label lives in its text alone."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from pipeline.artifacts import read_json
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data.text_features import TextFeaturesConfig, TfidfColumns
from pipeline.models.gbdt import TreeFeatures
from tests.test_competition import run_cli

GOOD = ["great", "excellent", "love", "perfect", "amazing", "wonderful"]
BAD = ["bad", "awful", "hate", "broken", "poor", "terrible"]
FILLER = ["the", "item", "was", "it", "and", "product", "very", "quite", "delivery", "box"]


def _reviews(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Reviews of seven words, one of them telling the label."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    texts = []
    for label in y:
        words = [*rng.choice(FILLER, 6), rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, y


def _competition(root: Path, n_train: int = 300, n_test: int = 100,
                 numbers: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    texts, y = _reviews(n_train + n_test)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"id": np.arange(len(y)), "review": texts, "target": y})
    if numbers:  # noise: the label is in the text alone
        frame["price"] = rng.normal(size=len(y))
        frame["shop"] = rng.choice(list("abc"), len(y))
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:n_train].to_csv(root / "train.csv", index=False)
    frame.iloc[n_train:].drop(columns="target").to_csv(root / "test.csv", index=False)
    frame.iloc[n_train:][["id"]].assign(target=0.5).to_csv(root / "sample_submission.csv",
                                                           index=False)
    return {
        "name": "reviews", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(root), "id_column": "id", "target_columns": ["target"],
                        "task": "binary", "metric": "roc_auc", "modality": "tabular",
                        "text_columns": ["review"]},
        "folds": {"scheme": "stratified", "n_splits": 3, "seed": 0},
        "model": {"encoders": [{"name": "lightgbm", "params": {"n_estimators": 60}}]},
    }, y[n_train:]


@pytest.mark.parametrize("encoder", [
    {"name": "lightgbm", "params": {"n_estimators": 300, "learning_rate": 0.1}},
    {"name": "sklearn:sklearn.linear_model.LogisticRegression"},  # the sparse TF-IDF itself
    {"name": "mlp", "params": {"hidden": [32]}},
])
def test_tabular_members_read_the_text_columns(tmp_path: Path, capsys, caplog,
                                               encoder: dict[str, Any]) -> None:
    cfg, truth = _competition(tmp_path / "comp")
    cfg["model"]["encoders"] = [encoder]
    cfg["train"] = {"epochs": 6, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 3e-3}}
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "text column(s) ['review'] read as TF-IDF features" in caplog.text
    scores = read_json(tmp_path / "comp" / "runs" / "reviews" / "scores.json")
    assert scores["scores"]["oof"] > 0.9  # 0.51-0.58 when the text was ignored
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "reviews.csv")
    assert roc_auc_score(truth, sub["target"]) > 0.9


def test_a_table_of_ids_text_and_targets_alone_trains(tmp_path: Path, capsys) -> None:
    cfg, truth = _competition(tmp_path / "comp", numbers=False)
    comp = load_competition(build_config(cfg).competition)  # no feature column: not refused
    assert comp.feature_columns == []
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "reviews.csv")
    assert roc_auc_score(truth, sub["target"]) > 0.95


def test_tfidf_columns_dense_sparse_and_small_vocabularies() -> None:
    texts, _ = _reviews(200)
    frame = pd.DataFrame({"a": texts, "b": ["xx yy"] * 100 + [None] * 100})
    dense = TfidfColumns(components=8, seed=0, char_ngrams=0)  # the words alone
    out = dense.fit_transform(frame)
    # 'a' has a large vocabulary: 8 SVD directions; 'b' three terms (two words and their
    # pair): its TF-IDF columns as they are
    assert out.shape == (200, 8 + 3) and isinstance(out, np.ndarray)
    assert dense.names_[:2] == ["a:svd0", "a:svd1"]
    assert dense.names_[8:] == ["b:xx", "b:xx yy", "b:yy"]
    np.testing.assert_allclose(dense.transform(frame), out, atol=1e-5)
    assert (out[100:, 8:] == 0).all()  # a missing text is the empty text
    sparse = TfidfColumns(components=8, dense=False, char_ngrams=0).fit(frame)
    matrix = sparse.transform(frame)
    assert sp.issparse(matrix) and matrix.shape[1] == len(sparse.names_) > 30
    # an unseen word is no column; the known ones keep their columns
    unseen = sparse.transform(pd.DataFrame({"a": ["zebra great"], "b": ["xx"]}))
    assert unseen.nnz == 2


def test_a_column_without_terms_gives_no_feature_and_says_so(caplog) -> None:
    frame = pd.DataFrame({"a": ["one", "two", "three", None], "b": ["xx yy", "xx", "yy", "xx"]})
    with caplog.at_level(logging.WARNING):
        columns = TfidfColumns(min_df=2)
        out = columns.fit_transform(frame)
    assert "text column 'a': no term in 2 or more training rows" in caplog.text
    assert out.shape == (4, len(columns.names_)) and columns.names_[:2] == ["b:word__xx",
                                                                             "b:word__yy"]
    assert all(name.startswith("b:") for name in columns.names_)


def test_tree_features_pickled_before_text_features_still_transform() -> None:
    features = TreeFeatures(["x"], [])
    frame = pd.DataFrame({"x": [1.0, 2.0], "t": ["a b", "b c"]})
    features.fit_transform(frame, None, "lightgbm")
    for name in ("texts", "text"):  # an object unpickled from an older release lacks them
        features.__dict__.pop(name)
    assert features.transform(frame, "lightgbm").shape == (2, 1)
    assert features.columns == ["x"]


def test_a_text_competition_takes_a_tabular_model_as_its_tfidf_baseline(
        tmp_path: Path, capsys) -> None:
    """'modality: text' with a scikit-learn or GBDT model was refused ("needs an 'hf:'
    encoder"): TF-IDF + a linear model is the first baseline of a text competition. A timm
    network beside an MLP still reads no text, and is refused."""
    cfg, truth = _competition(tmp_path / "comp", numbers=False)
    cfg["competition"]["modality"] = "text"
    cfg["model"]["encoders"] = [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "reviews.csv")
    assert roc_auc_score(truth, sub["target"]) > 0.95
    cfg["model"]["encoders"] = [{"name": "timm:resnet18"}, {"name": "mlp"}]
    cfg["name"] = "refused"
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and "needs a 'hf:' encoder for modality 'text'" in err


def test_an_mlp_beside_an_image_encoder_reads_the_text_columns(tmp_path: Path, capsys,
                                                                caplog) -> None:
    """PetFinder-like rows of an image, columns and a description: a network of a `timm:`
    encoder and an MLP read no text column (a warning said so), so a label told by the text
    alone scored ~0.5; its MLP now reads the TF-IDF directions as the MLP-only network does."""
    from PIL import Image

    root = tmp_path / "comp"
    cfg, truth = _competition(root, n_train=240, n_test=80)
    (root / "images").mkdir()
    for split in ("train", "test"):
        frame = pd.read_csv(root / f"{split}.csv")
        for i in frame["id"]:  # one grey: the images tell nothing (noise would be memorised)
            Image.new("RGB", (16, 16), (120, 120, 120)).save(root / "images" / f"{i}.png")
        frame.assign(image=[f"images/{i}.png" for i in frame["id"]]).to_csv(
            root / f"{split}.csv", index=False)
    cfg["competition"].update(modality="image", image_column="image")
    cfg["model"] = {"encoders": [{"name": "timm:test_resnet"},
                                 {"name": "mlp", "params": {"hidden": [32]}}], "image_size": 16}
    cfg["train"] = {"epochs": 6, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 3e-3}}
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "text column(s) ['review'] read as TF-IDF features" in caplog.text
    assert "no encoder reads text" not in caplog.text
    sub = pd.read_csv(root / "submissions" / "reviews.csv")
    assert roc_auc_score(truth, sub["target"]) > 0.9


def test_table_columns_no_encoder_reads_are_named(competition_factory, caplog) -> None:
    """A text network beside numeric metadata (a score column) left it unread without a word:
    only a tabular encoder reads the table's columns."""
    from pipeline.train import prepare

    cfg = competition_factory("text", "binary")
    folder = Path(cfg["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(folder / name)
        frame.assign(score=np.arange(len(frame)) * 0.5).to_csv(folder / name, index=False)

    def warned(**changes: Any) -> bool:
        data = {**cfg, "model": {**cfg["model"], **changes.pop("model", {})},
                "competition": {**cfg["competition"], **changes}}
        config = build_config(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipeline.train"):
            prepare(config, load_competition(config.competition))
        return "no encoder reads column(s) ['score']: add an 'mlp' encoder" in caplog.text

    assert warned()
    assert not warned(feature_columns=[])
    encoders = [*cfg["model"]["encoders"], {"name": "mlp", "params": {"hidden": [8]}}]
    assert not warned(model={"encoders": encoders}, feature_columns=None)


def test_text_without_spaces_between_words_is_read_by_characters(tmp_path: Path, capsys,
                                                                    caplog) -> None:
    """Chinese or Japanese text has no spaces between words: scikit-learn's word tokens were
    whole phrases, nearly each seen once, and a model read almost nothing (a Chinese probe:
    CV accuracy 0.60 by words, 0.90 by characters). Such a column is read as character
    n-grams; text split into words by spaces still reads as words."""
    from pipeline.data.text_features import unspaced

    rng = np.random.default_rng(0)
    pool = list("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年")
    cfg, _ = _competition(tmp_path / "comp", numbers=False)
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(tmp_path / "comp" / name)
        marks = ["好" if t else "坏" for t in (frame["review"].str.contains("|".join(GOOD)))]
        frame["review"] = ["".join([*rng.choice(pool, 8), mark, *rng.choice(pool, 8)])
                           for mark in marks]
        frame.to_csv(tmp_path / "comp" / name, index=False)
    texts = pd.read_csv(tmp_path / "comp" / "train.csv")["review"].tolist()
    assert unspaced(texts) and not unspaced([" ".join(t) for t in texts])  # segmented: words
    assert not unspaced(_reviews(50)[0])
    cfg["competition"]["modality"] = "text"
    cfg["model"]["encoders"] = [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "text column(s) ['review'] are written without spaces between words" in caplog.text
    scores = read_json(tmp_path / "comp" / "runs" / "reviews" / "scores.json")
    assert scores["scores"]["oof"] > 0.9  # ~0.5 read as words


def test_words_and_their_character_ngrams_are_one_tfidf_matrix() -> None:
    """The default reads each word's character 2..5-grams (within words) beside the words: a
    misspelt or inflected word the vocabulary lacks still sets columns (held-out ROC AUC
    +0.025 to +0.033 on Rotten Tomatoes reviews, docs/benchmarks.md "TF-IDF tokens")."""
    texts, _ = _reviews(200)
    frame = pd.DataFrame({"a": texts})
    both = TfidfColumns(dense=False).fit(frame)
    words = TfidfColumns(dense=False, char_ngrams=0).fit(frame)
    assert TfidfColumns().char_ngrams == TextFeaturesConfig().char_ngrams == 5
    chars = [n for n in both.names_ if n.startswith("a:char__")]
    assert [n.removeprefix("a:word__") for n in both.names_ if n.startswith("a:word__")] == \
        [n.removeprefix("a:") for n in words.names_]
    assert "a:char__ gr" in chars and "a:char__great" in chars
    assert all(2 <= len(n.removeprefix("a:char__")) <= 5 for n in chars)
    assert both.transform(frame).shape == (200, len(words.names_) + len(chars))
    misspelt = pd.DataFrame({"a": ["greatt"]})
    assert words.transform(misspelt).nnz == 0 and both.transform(misspelt).nnz > 5
    # the dense members' SVD directions take both
    assert TfidfColumns(components=8).fit_transform(frame).shape == (200, 8)


def test_a_column_past_the_character_budget_keeps_its_words_alone(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Character n-grams took ~10x the words' memory: a table of millions of long texts
    would have taken tens of GB. Past the budget a column keeps its words, and says so."""
    from pipeline.data import text_features

    texts, _ = _reviews(200)
    frame = pd.DataFrame({"a": texts})
    words = TfidfColumns(dense=False, char_ngrams=0).fit(frame)
    size = sum(map(len, texts))
    monkeypatch.setattr(text_features, "CHAR_BUDGET", size)  # at the budget: kept
    assert any(n.startswith("a:char__") for n in TfidfColumns(dense=False).fit(frame).names_)
    monkeypatch.setattr(text_features, "CHAR_BUDGET", size - 1)
    with caplog.at_level(logging.WARNING):
        over = TfidfColumns(dense=False).fit(frame)
    assert over.names_ == words.names_
    assert "character n-grams are left out" in caplog.text
    assert over.transform(frame).shape == (200, len(words.names_))


def test_char_ngrams_of_the_config() -> None:
    cfg = TextFeaturesConfig(char_ngrams=3)
    columns = TfidfColumns.from_config(cfg, dense=False, seed=0)
    assert columns.char_ngrams == 3
    with pytest.raises(ValidationError, match=r"must be 0 \(words alone\) or in \[2, 8\]"):
        TextFeaturesConfig(char_ngrams=1)
    # a column read by characters alone (analyzer char_wb, or a script without spaces)
    # takes no second character matrix
    frame = pd.DataFrame({"a": _reviews(50)[0]})
    alone = TfidfColumns(analyzer="char_wb", dense=False).fit(frame)
    assert not any("__" in n for n in alone.names_)


def _words_only_hash(data: dict[str, Any]) -> str:
    """The train hash a release before character n-grams gave a config with text columns
    (mirrors pipeline/train_hash.py then: its inputs were format 1)."""
    dumped = build_config(copy.deepcopy(data)).model_dump(mode="json", exclude_defaults=True)
    for key in ("predict", "output_dir", "folds_dir", "submissions_dir", "name", "executor"):
        dumped.pop(key, None)
    dumped["competition"].pop("dir", None)
    dumped["tabular_text_inputs"] = 1
    # and the marker of the high-cardinality rule, orthogonal to the text's format
    dumped["gbdt_high_cardinality"] = 1
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def test_runs_trained_on_words_alone_are_not_reused_as_the_new_default(tmp_path: Path) -> None:
    cfg, _ = _competition(tmp_path / "comp")
    old = _words_only_hash(cfg)
    # the default now reads character n-grams too: other weights, another hash
    assert build_config(copy.deepcopy(cfg)).train_hash() != old
    # a config that asks for the words alone trains what it did before: its old hash
    words = copy.deepcopy(cfg)
    words["model"]["tabular"] = {"text": {"char_ngrams": 0}}
    assert build_config(words).train_hash() == old
    kept = copy.deepcopy(words)
    kept["model"]["tabular"]["text"]["min_df"] = 3  # the other keys still count
    assert build_config(kept).train_hash() not in (old, build_config(words).train_hash())
    # characters alone ignore char_ngrams: the hash they had
    chars = copy.deepcopy(cfg)
    chars["model"]["tabular"] = {"text": {"analyzer": "char_wb"}}
    assert build_config(chars).train_hash() == _words_only_hash(chars)
