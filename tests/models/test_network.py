"""The network (pipeline/models/network.py): encoders concatenated under one head (trained
end to end for every pairing of modalities), the head's layout and temperature, the model
config's rules, the inputs a dataset makes for it, and embedding noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

from pipeline import train
from pipeline.competition import CompetitionConfig, load_competition
from pipeline.config import build_config
from pipeline.data.tabular import TabularEncoder
from pipeline.models.network import (
    CompetitionModel,
    ModelConfig,
    build_model,
    build_tokenizer,
    embedding_noise,
    model_inputs,
)
from tests.conftest import write_tokenizer

TINY_BERT = {"model_type": "bert", "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64}


def _with_numeric_column(data: dict) -> dict:
    comp_dir = data["competition"]["dir"]
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(f"{comp_dir}/{name}")
        frame["extra"] = np.arange(len(frame)) % 7
        frame.to_csv(f"{comp_dir}/{name}", index=False)
    data["competition"]["feature_columns"] = ["extra"]
    return data


def _pairing(competition_factory, tmp_path, pairing: str) -> dict:
    if pairing == "two timm backbones":
        data = competition_factory("image", "multiclass")
        data["model"]["encoders"] = [{"name": "timm:test_resnet", "lr": 1e-3},
                                     {"name": "timm:test_efficientnet"}]
    elif pairing == "image + tabular columns":
        data = _with_numeric_column(competition_factory("image", "binary"))
        data["model"]["encoders"].append({"name": "mlp", "params": {"hidden": [8]}})
    elif pairing == "text + tabular columns":
        data = _with_numeric_column(competition_factory("text", "regression"))
        data["model"]["encoders"].append({"name": "mlp", "params": {"hidden": [8]}})
    else:
        data = competition_factory("text", "binary")
        tok = str(write_tokenizer(tmp_path / "tokenizer"))
        bert2 = {**TINY_BERT, "hidden_size": 8, "intermediate_size": 16}
        data["model"]["encoders"] = [
            {"name": "hf", "hf_config": TINY_BERT, "tokenizer": tok, "lr": 5e-4},
            {"name": "hf", "hf_config": bert2, "tokenizer": tok},
        ]
    return data


@pytest.mark.parametrize("pairing", ["two timm backbones", "image + tabular columns",
                                     "text + tabular columns", "two transformers"])
def test_concatenated_encoders_train_and_predict(competition_factory, tmp_path, pairing):
    cfg = build_config(_pairing(competition_factory, tmp_path, pairing))
    score = train.run(cfg)
    assert np.isfinite(score)
    state = torch.load(cfg.run_dir / "seed0" / "fold0" / "best.pt", weights_only=False)["model"]
    assert {k.split(".")[1] for k in state if k.startswith("encoders.")} == {"0", "1"}
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert np.isfinite(test.drop(columns="id").to_numpy()).all()


class _Constant(torch.nn.Module):
    """An encoder whose features are fixed numbers, to check the concatenation order."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.tensor(values)
        self.out_dim = len(values)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.values.expand(len(batch["num"]), -1)


def test_model_concatenates_features_in_encoder_order_under_one_head() -> None:
    model = CompetitionModel([_Constant([1.0, 2.0]), _Constant([3.0])], n_outputs=4,
                             dropout=0.0, hidden=0, temperature=2.0).eval()
    batch = {"num": torch.zeros(5, 1)}
    pooled = model.encode(batch)
    torch.testing.assert_close(pooled, torch.tensor([[1.0, 2.0, 3.0]]).expand(5, -1))
    assert model.features is pooled  # kept for auxiliary losses
    linear = model.head[-1]
    assert isinstance(linear, torch.nn.Linear) and linear.in_features == 3
    torch.testing.assert_close(model(batch), linear(pooled) / 2.0)  # divided by temperature
    hidden = CompetitionModel([_Constant([1.0, 2.0])], 3, dropout=0.1, hidden=7)
    assert [type(m).__name__ for m in hidden.head] == ["Dropout", "Linear", "SiLU", "Dropout",
                                                       "Linear"]
    assert hidden.head[1].out_features == 7 and hidden(batch).shape == (5, 3)


def test_a_head_without_dropout_keeps_its_checkpoint_keys_and_divides_by_no_temperature():
    """Dropout 0 is a pass-through in the same place (a checkpoint written with a Dropout
    there still loads) and temperature 1 divides nothing: neither costs a call a step."""
    torch.manual_seed(0)
    bare = CompetitionModel([_Constant([1.0, 2.0])], 3, dropout=0.0, hidden=7)
    dropped = CompetitionModel([_Constant([1.0, 2.0])], 3, dropout=0.2, hidden=7)
    assert not any(isinstance(m, torch.nn.Dropout) for m in bare.head)
    assert list(bare.state_dict()) == list(dropped.state_dict())
    bare.load_state_dict(dropped.state_dict())
    batch = {"num": torch.zeros(5, 1)}
    bare.train()
    pooled = bare.encode(batch)
    torch.testing.assert_close(bare(batch), bare.head(pooled), rtol=0, atol=0)


def test_model_config_modalities_and_the_lone_sklearn_rule() -> None:
    cfg = ModelConfig(encoders=[{"name": "timm:resnet18"}, {"name": "mlp"}])
    assert cfg.modalities == {"image", "tabular"} and not cfg.is_sklearn
    alone = ModelConfig(encoders=[{"name": "sklearn:sklearn.linear_model.Ridge"}])
    assert alone.is_sklearn and alone.modalities == {"tabular"}
    with pytest.raises(pydantic.ValidationError, match="stands alone"):
        ModelConfig(encoders=[{"name": "sklearn:sklearn.linear_model.Ridge"}, {"name": "mlp"}])
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(encoders=[])


def test_model_inputs_follow_the_encoders(competition_factory) -> None:
    data = competition_factory("text", "binary")
    comp = load_competition(CompetitionConfig(**data["competition"]))
    tab = TabularEncoder([], [])
    text_only = ModelConfig(**data["model"])
    tok = build_tokenizer(text_only)
    inputs = model_inputs(comp, text_only, tok, tab)
    assert inputs.tokenizer is tok and inputs.tabular is None and inputs.image_size == 0
    assert inputs.text_columns == ["text"] and inputs.max_length == 16
    both = ModelConfig(**{**data["model"], "encoders": [*data["model"]["encoders"],
                                                        {"name": "mlp"}]})
    assert model_inputs(comp, both, tok, tab).tabular is tab
    assert build_tokenizer(ModelConfig(encoders=[{"name": "mlp"}])) is None


def test_embedding_noise_changes_mlp_features_only_inside_the_block() -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0], "c": ["a", "b", "a"]})
    tab = TabularEncoder(["x"], ["c"]).fit(frame)
    model = build_model(ModelConfig(encoders=[{"name": "mlp", "params": {"hidden": [4]}}]), 1,
                        tab).eval()
    batch = {k: torch.from_numpy(v) for k, v in tab.transform(frame).items()}
    with torch.no_grad():
        clean = model(batch)
        torch.manual_seed(0)
        with embedding_noise(model, 0.5):
            noisy = model(batch)
        with embedding_noise(model, 0.0):
            torch.testing.assert_close(model(batch), clean)
        after = model(batch)
    assert not torch.allclose(noisy, clean)
    torch.testing.assert_close(after, clean)  # the noise is gone after the block



@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("names", [("resnet18", "mobilenetv3_small_100"),
                                   ("ghostnet_100", "convnext_atto"),
                                   ("efficientnet_b0", "ghostnet_100")],
                         ids=lambda names: "+".join(names))
def test_timm_encoders_of_different_families_concatenate_under_one_head(names) -> None:
    """issue 12 item 12: resnet18 + mobilenetv3_small_100 crashed (head built for 512 + 576
    inputs, the pooled features are 512 + 1024); every encoder's out_dim is its pooled width
    and the head takes their sum, forward and backward."""
    cfg = ModelConfig(encoders=[{"name": f"timm:{n}", "pretrained": False} for n in names],
                      image_size=32)
    model = build_model(cfg, 3, None)
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32)}
    model.eval()
    with torch.no_grad():
        widths = [enc(batch).shape[1] for enc in model.encoders]
    assert widths == [enc.out_dim for enc in model.encoders]
    linear = model.head[-1]
    assert isinstance(linear, torch.nn.Linear) and linear.in_features == sum(widths)
    model.train()  # BatchNorm in training mode: batch 2 gives 2 values per channel
    out = model(batch)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert model.features is not None and model.features.shape == (2, sum(widths))
    out.square().mean().backward()
    for i, enc in enumerate(model.encoders):
        grads = [p.grad for p in enc.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), names[i]
    assert linear.weight.grad is not None and linear.weight.grad.shape == (3, sum(widths))


@pytest.mark.usefixtures("one_thread")
def test_a_timm_model_of_a_fixed_input_size_is_built_for_the_runs_image_size(tmp_path) -> None:
    """vit_tiny_patch16_224 is made for 224 px: at model.image_size 32 it refused every batch
    with an AssertionError in fold 0. It is built at 32 px, with pretrained weights resampled
    to it; an img_size the params give, and a model of any size (resnet), are kept as is."""
    from pipeline.models.encoders import EncoderConfig
    from pipeline.models.timm_sizes import sized_for

    weights = tmp_path / "vit.pth"
    vit = "timm:vit_tiny_patch16_224"
    torch.save(build_model(ModelConfig(encoders=[{"name": vit}]), 2,
                           None).encoders[0].body.state_dict(), weights)
    cfg = ModelConfig(encoders=[{"name": vit, "pretrained": str(weights)}], image_size=32)
    model = build_model(cfg, 2, None).eval()
    with torch.no_grad():
        assert model({"image": torch.randn(2, 3, 32, 32)}).shape == (2, 2)
    assert model.encoders[0].body.pos_embed.shape[1] == 1 + (32 // 16) ** 2  # resampled
    given = EncoderConfig(name=vit, params={"img_size": 48})
    assert sized_for(given, 32).params == {"img_size": 48}
    assert sized_for(EncoderConfig(name="timm:test_resnet"), 32).params == {}
    assert sized_for(EncoderConfig(name=vit), 224).params == {}


@pytest.mark.parametrize(("model_type", "extra", "limit"), [
    ("bert", {"max_position_embeddings": 64}, 64),
    # RoBERTa's table counts positions from padding_idx + 1: 66 rows hold 64 tokens
    ("roberta", {"max_position_embeddings": 66}, 64),
    ("deberta-v2", {"position_biased_input": False, "relative_attention": True}, None),
])
def test_token_positions_reads_the_models_own_position_table(model_type, extra, limit) -> None:
    from pipeline.models.encoders import EncoderConfig, token_positions

    hf = {**TINY_BERT, "model_type": model_type, **extra}
    enc = EncoderConfig(name="hf", hf_config=hf, tokenizer="tok")
    assert token_positions(enc) == limit


def test_a_max_length_past_the_position_table_is_refused_before_the_run_folder(
    competition_factory, tmp_path
) -> None:
    from pipeline.errors import ConfigError

    data = competition_factory("text", "binary")
    data["model"]["max_length"] = 128  # the tiny BERT has 64 positions
    cfg = build_config(data)
    with pytest.raises(ConfigError, match=r"'model.max_length' is 128.*at most 64 tokens"):
        train.run(cfg)
    assert not (tmp_path / "runs" / cfg.name).exists()
    data["model"]["max_length"] = 64  # the whole table is usable
    long = pd.read_csv(f"{data['competition']['dir']}/train.csv")
    long["text"] = (long["text"] + " ") * 20  # ~140 tokens a row, cut to 64
    long.to_csv(f"{data['competition']['dir']}/train.csv", index=False)
    data["train"]["epochs"] = 1
    assert np.isfinite(train.run(build_config(data)))


def test_a_tokenizer_past_the_embedding_table_is_refused_before_the_run_folder(
    competition_factory, tmp_path, one_thread
) -> None:
    """An hf_config whose vocab_size is below the tokenizer's ids used to start the run and
    stop at the first batch with an IndexError from torch's embedding (exit 1)."""
    from pipeline.errors import ConfigError

    data = competition_factory("text", "binary", n_train=24, n_test=8)
    data["model"]["encoders"][0]["hf_config"]["vocab_size"] = 20  # the tokenizer makes 25
    cfg = build_config(data)
    with pytest.raises(ConfigError, match=r"embeds 20 token ids, but its tokenizer .* makes 25"):
        train.run(cfg)
    assert not (tmp_path / "runs" / cfg.name).exists()
    data["model"]["encoders"][0]["hf_config"]["vocab_size"] = 25  # every id has a row
    data["train"]["epochs"] = 1
    assert np.isfinite(train.run(build_config(data)))


def test_two_transformers_of_other_tokenizers_are_refused_before_the_run_folder(
    competition_factory, tmp_path, one_thread
) -> None:
    """A batch carries the first transformers encoder's token ids: a second encoder with a
    tokenizer of its own (another vocabulary, another casing) trained on ids that name other
    words to it, without a word said. One tokenizer in two folders still trains."""
    from transformers import BertTokenizer

    from pipeline.errors import ConfigError

    data = competition_factory("text", "binary", n_train=24, n_test=8)
    tok = tmp_path / "tokenizer"  # the competition's own: 25 ids
    vocab = BertTokenizer.from_pretrained(tok).get_vocab()
    words = sorted(vocab, key=vocab.__getitem__)  # by id
    other = tmp_path / "other_tokenizer"  # the same words, in reverse order
    BertTokenizer(vocab={w: i for i, w in enumerate([*words[:5], *words[:4:-1]])}
                  ).save_pretrained(other)
    uncased = tmp_path / "uncased_tokenizer"  # the same ids, but it keeps letter case
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=False
                  ).save_pretrained(uncased)
    copy = tmp_path / "copied_tokenizer"  # the competition's tokenizer, saved again
    BertTokenizer.from_pretrained(tok).save_pretrained(copy)
    first = {"name": "hf", "hf_config": TINY_BERT, "tokenizer": str(tok)}
    for folder in (other, uncased):
        data["model"]["encoders"] = [first, {"name": "hf", "hf_config": TINY_BERT,
                                             "tokenizer": str(folder)}]
        cfg = build_config(data)
        with pytest.raises(ConfigError, match=r"\(model.encoders.0\) and 'hf' "
                           r"\(model.encoders.1\) tokenize texts differently"):
            train.run(cfg)
        assert not (tmp_path / "runs" / cfg.name).exists()
    data["model"]["encoders"] = [first, {"name": "hf", "hf_config": TINY_BERT,
                                         "tokenizer": str(copy)}]
    data["train"]["epochs"] = 1
    assert np.isfinite(train.run(build_config(data)))


@pytest.mark.parametrize("columns", [1, 2])
def test_a_pair_of_texts_reaches_the_model_with_its_segment_ids(
        competition_factory, monkeypatch, one_thread, columns: int) -> None:
    """Two text columns: the transformers body is given the pair's segment ids (1 on the
    second text, 0 on padding), in training and prediction; one text column: none, as before."""
    from pipeline.models.encoders import HFEncoder

    data = competition_factory("text", "binary", n_train=24, n_test=8)
    comp_dir = data["competition"]["dir"]
    if columns == 2:
        for name in ("train.csv", "test.csv"):
            frame = pd.read_csv(f"{comp_dir}/{name}")
            frame["other"] = frame["text"].str.split().str[::-1].str.join(" ")
            frame.to_csv(f"{comp_dir}/{name}", index=False)
        data["competition"]["text_columns"] = ["text", "other"]
    data["train"]["epochs"] = 1
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    real = HFEncoder.forward

    def spy(self, batch):
        def record(module, args, kwargs):
            seen.append((kwargs["input_ids"], kwargs.get("token_type_ids")))

        hook = self.body.register_forward_pre_hook(record, with_kwargs=True)
        try:
            return real(self, batch)
        finally:
            hook.remove()

    monkeypatch.setattr(HFEncoder, "forward", spy)
    train.run(build_config(data))
    assert seen
    if columns == 1:
        assert all(types is None for _, types in seen)
        return
    tok = build_tokenizer(ModelConfig(**data["model"]))
    for ids, types in seen:
        assert types is not None and types.shape == ids.shape
        for row_ids, row_types in zip(ids.tolist(), types.tolist(), strict=True):
            first_sep = row_ids.index(tok.sep_token_id)
            length = len(row_ids) - row_ids.count(tok.pad_token_id)
            assert row_types == ([0] * (first_sep + 1) + [1] * (length - first_sep - 1)
                                 + [0] * (len(row_ids) - length))
