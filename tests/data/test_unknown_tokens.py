"""A model folder without its tokenizer files loads, in transformers 5, a tokenizer with an
empty vocabulary that reads every word as [UNK]: the run trained and submitted at chance
without a word (CV ROC AUC 0.505 on a Rotten Tomatoes probe). Refused now before the run
writes anything; a tokenizer that reads many tokens as unknown is a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.unknown_tokens import check_unknown_tokens, unknown_share
from pipeline.errors import ConfigError
from tests.conftest import write_tokenizer
from tests.test_competition import run_cli


def _weights_only(folder: Path) -> Path:
    """A tiny BERT saved without its tokenizer (model.save_pretrained alone)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(folder)
    return folder


def test_a_model_folder_without_its_tokenizer_is_refused(competition_factory, tmp_path: Path,
                                                         capsys) -> None:
    cfg = competition_factory("text", "binary", n_train=16, n_test=4)
    cfg["model"]["encoders"] = [{"name": f"hf:{_weights_only(tmp_path / 'bert')}", "lr": 1e-4}]
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "reads 100% of the train texts' tokens as unknown ([UNK])" in line
    assert "name its folder as the encoder's 'tokenizer'" in line
    assert not (Path(cfg["output_dir"]) / cfg["name"]).exists()  # nothing half-written
    write_tokenizer(tmp_path / "bert")  # the tokenizer saved beside the weights: it trains
    cfg["train"]["epochs"] = 1
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err


def test_shares_of_unknown_tokens(tmp_path: Path, caplog) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    assert unknown_share(tok, ["the movie was fun"]) == 0
    assert unknown_share(tok, ["the movie zzz qqq"]) == pytest.approx(0.5, abs=0.2)
    assert unknown_share(tok, []) is None
    frame = pd.DataFrame({"a": ["the movie was fun", "zzz qqq xxx", None, ""]})
    with caplog.at_level(logging.WARNING):
        check_unknown_tokens(tok, frame, ["a"], "hf:x", "x")  # ~half unknown: a warning
    assert "reads" in caplog.text and "is it the model's own tokenizer" in caplog.text
    with pytest.raises(ConfigError, match="reads 100% of the train texts' tokens"):
        check_unknown_tokens(tok, frame.iloc[1:], ["a"], "hf:x", "x")
