"""Rows as text (pipeline/data/rows_text.py and the 'rows_text' encoder kind): each row written
"column: value; ..." and read by a tiny transformers encoder, alone or beside the MLP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import train
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data import text_tokens
from pipeline.data.datasets import CompetitionDataset
from pipeline.data.memory_loader import build_fold_loader
from pipeline.data.rows_text import MISSING, format_value, row_texts
from pipeline.errors import ConfigError
from pipeline.models.network import build_model, build_tokenizer, model_inputs

TINY_BERT = {"model_type": "bert", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 96}


def _row_tokenizer(path: Path) -> Path:
    """A WordPiece vocabulary that spells the test table's rows (names, digits, words)."""
    from transformers import BertTokenizer

    words = ["x1", "x2", "color", "red", "blue", MISSING, ":", ";", ".", "-", "e", "+",
             *"0123456789", *(f"##{d}" for d in "0123456789")]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    return path


def _rows_text_config(raw: dict[str, Any], tmp_path: Path, with_mlp: bool) -> dict[str, Any]:
    tok = _row_tokenizer(tmp_path / "row_tok")
    encoders: list[dict[str, Any]] = [{"name": "rows_text", "tokenizer": str(tok),
                                       "hf_config": TINY_BERT}]
    if with_mlp:
        encoders.append({"name": "mlp", "params": {"hidden": [16]}})
    raw["model"] = {"encoders": encoders, "max_length": 48}
    return raw


def test_cells_are_written_compactly():
    assert [format_value(v) for v in (3, 3.0, 2.5, 1234567.0, 0.000123456, -1.23456e8)] == [
        "3", "3", "2.5", "1234567", "0.0001235", "-123456000"]
    assert [format_value(v) for v in (float("nan"), None, pd.NA, np.nan)] == [MISSING] * 4
    assert [format_value(v) for v in (True, np.bool_(False), " red ", np.int64(7))] == [
        "yes", "no", "red", "7"]
    frame = pd.DataFrame({"age": [31.0, np.nan, 2.25], "city": ["Oslo", None, "Rome"],
                          "n": [1, 2, 3]})
    assert row_texts(frame, ["age", "city", "n"]) == [
        "age: 31; city: Oslo; n: 1", f"age: {MISSING}; city: {MISSING}; n: 2",
        "age: 2.25; city: Rome; n: 3"]
    assert row_texts(frame, ["n", "age"])[0] == "n: 1; age: 31"  # in the given order


def test_rows_text_with_hf_is_refused_and_needs_a_model():
    with pytest.raises(ConfigError, match="both read the batch's token ids"):
        build_config({"name": "x", "competition": {
            "dir": "d", "target_columns": ["y"], "task": "regression", "metric": "rmse",
            "modality": "text", "text_columns": ["t"]},
            "model": {"encoders": [{"name": "hf:/a"}, {"name": "rows_text:/b"}]}})
    with pytest.raises(ConfigError, match="encoder 'rows_text' without a directory needs"):
        build_config({"name": "x", "competition": {
            "dir": "d", "target_columns": ["y"], "task": "regression", "metric": "rmse",
            "modality": "tabular"}, "model": {"encoders": [{"name": "rows_text"}]}})


def test_the_dataset_tokenises_each_row_written_as_text(competition_factory, tmp_path):
    raw = _rows_text_config(competition_factory("tabular", "binary"), tmp_path, True)
    cfg = build_config(raw)
    comp = load_competition(cfg.competition)
    tok = build_tokenizer(cfg.model)
    from pipeline.jobs.inputs import fold_prep

    prep = fold_prep(cfg.run_dir / "prep", comp, np.arange(30))
    inputs = model_inputs(comp, cfg.model, tok, prep.tabular)
    assert inputs.row_columns == ["x1", "x2", "color"] and inputs.tokenizer is tok
    ds = CompetitionDataset(comp.train, inputs, comp.targets.astype(np.float32))
    texts = row_texts(comp.train, ["x1", "x2", "color"])
    for i in (0, 5):
        decoded = tok.decode(ds[i]["input_ids"], skip_special_tokens=True)
        assert decoded.replace(" ", "") == texts[i].replace(" ", "")
        assert "[UNK]" not in tok.decode(ds[i]["input_ids"])
    assert {"input_ids", "attention_mask", "num", "cat", "target"} <= set(ds[0])
    # the encode_texts cache: a second dataset of the same rows tokenises nothing again
    calls = []
    real = text_tokens._encode
    text_tokens._encode = lambda *a: calls.append(1) or real(*a)  # type: ignore[assignment]
    try:
        again = CompetitionDataset(comp.train, inputs, comp.targets.astype(np.float32))
    finally:
        text_tokens._encode = real
    assert not calls and again.ids == ds.ids
    # held rows batch the same as streamed ones (the loader cuts ids to the longest row)
    streamed = next(iter(build_fold_loader(ds, len(ds), False, 0, None, "stream")))
    loader = build_fold_loader(ds, len(ds), False, 0, None, "memory")
    held = next(iter(loader))  # longest rows first
    order = loader.row_order  # type: ignore[union-attr]
    model = build_model(cfg.model, comp.n_outputs, prep.tabular).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(streamed)[order], model(held))


@pytest.mark.parametrize("with_mlp", [False, True])
def test_rows_text_trains_end_to_end_alone_and_beside_the_mlp(
        competition_factory, tmp_path, one_thread, with_mlp):
    raw = _rows_text_config(competition_factory("tabular", "binary"), tmp_path, with_mlp)
    raw["train"]["epochs"] = 3
    cfg = build_config(raw)
    score = train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    assert np.isfinite(oof["target"]).all() and 0 <= score <= 1
    state = torch.load(cfg.run_dir / "seed0" / "fold0" / "best.pt", weights_only=False)
    keys = state["model"].keys()
    assert any(k.startswith("encoders.0.body.") for k in keys)
    assert any(k.startswith("encoders.1.mlp.") for k in keys) == with_mlp
