"""Encoder kinds (pipeline/models/encoders.py): every registered kind that builds a network
builds one from a tiny config whose forward on exactly its declared batch keys gives
(batch, out_dim) features; the scikit-learn kind refuses; EncoderConfig's checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pydantic
import pytest
import torch

from pipeline.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from pipeline.data.tabular import TabularEncoder
from pipeline.errors import ConfigError
from pipeline.models.encoders import ENCODERS, EncoderConfig, build_encoder
from tests.conftest import write_tokenizer
from tests.test_competition import cli_config, expect_failure

TINY_BERT = {"model_type": "bert", "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64}
N = 3


def _tabular() -> TabularEncoder:
    frame = pd.DataFrame({"x": [0.0, 1.0, None, 3.0], "y": [1.0, 2.0, 3.0, 4.0],
                          "c": ["a", "b", "a", "c"]})
    return TabularEncoder(["x", "y"], ["c"]).fit(frame)


def _timm(tmp_path: Path) -> tuple[EncoderConfig, TabularEncoder | None, int]:
    return EncoderConfig(name="timm:resnet18", pretrained=False), None, 512


def _hf(tmp_path: Path) -> tuple[EncoderConfig, TabularEncoder | None, int]:
    tok = write_tokenizer(tmp_path / "tok")
    return EncoderConfig(name="hf", hf_config=TINY_BERT, tokenizer=str(tok)), None, 16


def _rows_text(tmp_path: Path) -> tuple[EncoderConfig, TabularEncoder | None, int]:
    tok = write_tokenizer(tmp_path / "tok")
    return EncoderConfig(name="rows_text", hf_config=TINY_BERT, tokenizer=str(tok)), None, 16


def _mlp(tmp_path: Path) -> tuple[EncoderConfig, TabularEncoder | None, int]:
    return EncoderConfig(name="mlp", params={"hidden": [8, 6]}), _tabular(), 6


def _pretrained(tmp_path: Path) -> tuple[EncoderConfig, TabularEncoder | None, int]:
    """An untrained DAE saved as `pipeline pretrain` would, over _tabular()'s columns."""
    from pipeline.artifacts import write_json
    from pipeline.pretrain._tabular import fit_space, save_tabular
    from pipeline.pretrain.tabular_dae import DAEConfig, TabularDAE

    frame = pd.DataFrame({"x": [0.0, 1.0, None, 3.0], "y": [1.0, 2.0, 3.0, 4.0],
                          "c": ["a", "b", "a", "c"]})
    space, cfg = fit_space(frame, ["x", "y"], ["c"], 10), DAEConfig(hidden=[8, 4])
    save_tabular(tmp_path, "dae", space, cfg, TabularDAE(space, cfg))
    write_json(tmp_path / "record.json", {"encoder": "tabular", "objective": "dae"})
    return EncoderConfig(name=f"pretrained:{tmp_path}"), _tabular(), 12


# kind -> (tmp_path -> a tiny config, the fitted tabular encoder it needs, expected out_dim)
TINY: dict[str, Callable[[Path], tuple[EncoderConfig, TabularEncoder | None, int]]] = {
    "timm": _timm, "hf": _hf, "mlp": _mlp, "rows_text": _rows_text, "pretrained": _pretrained}
# a valid name per kind, for the config checks
NAMES = {"timm": "timm:resnet18", "hf": "hf:/models/bert", "mlp": "mlp",
         "rows_text": "rows_text:/models/bert",
         "sklearn": "sklearn:sklearn.linear_model.Ridge", "lightgbm": "lightgbm",
         "xgboost": "xgboost", "catboost": "catboost", "pretrained": "pretrained:not-made-yet"}


def _batch(keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A batch of exactly ``keys``, shaped as the loaders make them."""
    g = torch.Generator().manual_seed(0)
    make = {
        "image": lambda: torch.randn(N, 3, 32, 32, generator=g),
        "input_ids": lambda: torch.randint(5, 40, (N, 6), generator=g),
        "attention_mask": lambda: torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]),
        "num": lambda: torch.randn(N, _tabular().n_numeric, generator=g),
        "cat": lambda: torch.tensor([[0], [1], [3]]),
    }
    return {k: make[k]() for k in keys}


def test_every_kind_is_covered_here() -> None:
    """A new kind must get a tiny config below (or be a whole model, build None)."""
    assert {k for k in ENCODERS if ENCODERS.get(k).build is not None} == set(TINY)
    assert set(ENCODERS) == set(NAMES)


@pytest.mark.parametrize("kind", ENCODERS.list())
def test_every_kind_declares_a_modality_and_its_inputs(kind: str) -> None:
    info = ENCODERS.get(kind)
    assert info.modality in ("image", "text", "tabular")
    assert info.inputs and set(info.inputs) <= {"image", "input_ids", "attention_mask", "num",
                                                 "cat"}
    assert EncoderConfig(name=NAMES[kind]).info is info


@pytest.mark.parametrize("kind", ENCODERS.list())
def test_every_network_kind_builds_and_encodes_its_inputs(tmp_path: Path, kind: str) -> None:
    info = ENCODERS.get(kind)
    if info.build is None:
        with pytest.raises(ConfigError, match="whole model, not a network encoder"):
            build_encoder(EncoderConfig(name=NAMES[kind]), _tabular())
        return
    cfg, tabular, out_dim = TINY[kind](tmp_path)
    module = build_encoder(cfg, tabular).eval()
    assert module.out_dim == out_dim
    with torch.no_grad():
        features = module(_batch(info.inputs))  # exactly its keys: it reads nothing else
    assert features.shape == (N, out_dim) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])  # rows are encoded separately


def test_hf_mean_pooling_ignores_padding(tmp_path: Path) -> None:
    cfg, _, _ = _hf(tmp_path)
    module = build_encoder(cfg, None).eval()
    ids = torch.tensor([[7, 8, 9]])
    padded = {"input_ids": torch.tensor([[7, 8, 9, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])}
    with torch.no_grad():
        plain = module({"input_ids": ids, "attention_mask": torch.ones(1, 3, dtype=torch.long)})
        torch.testing.assert_close(module(padded), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ENCODERS.list())
def test_pretrained_is_refused_where_the_kind_takes_none(kind: str) -> None:
    if ENCODERS.get(kind).takes_pretrained:
        assert EncoderConfig(name=NAMES[kind], pretrained="weights.pt").pretrained == "weights.pt"
    else:
        with pytest.raises(pydantic.ValidationError, match="takes no 'pretrained' weights"):
            EncoderConfig(name=NAMES[kind], pretrained="weights.pt")


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "timn:resnet18"}, "Did you mean 'timm'"),
    ({"name": "timm:"}, "names no model after 'timm'"),
    ({"name": "hf"}, "needs 'hf_config'"),
    ({"name": "hf", "hf_config": {"hidden_size": 8}, "tokenizer": "t"}, "needs 'model_type'"),
    ({"name": "sklearn:sklearn.linear_model.Nope"}, "no class"),
])
def test_encoder_config_refusals(data: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        EncoderConfig(**data)


def test_weights_that_do_not_load_are_one_config_error_line(tmp_path: Path) -> None:
    import timm
    import torch

    other = tmp_path / "resnet18.pth"  # another architecture's weights
    torch.save(timm.create_model("resnet18").state_dict(), other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not weights")
    pickled = tmp_path / "garbage.pth"
    pickled.write_bytes(b"not weights")
    for path in (other, garbage, pickled):
        with pytest.raises(ConfigError, match=r"weights file .* could not be loaded into "
                                              r"'test_resnet'") as err:
            build_encoder(EncoderConfig(name="timm:test_resnet", pretrained=str(path)), None)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_encoder_config_parts() -> None:
    cfg = EncoderConfig(name="hf:/models/bert-base")
    assert (cfg.kind, cfg.target) == ("hf", "/models/bert-base")
    assert (EncoderConfig(name="mlp").kind, EncoderConfig(name="mlp").target) == ("mlp", "")


def test_builders_refuse_what_they_cannot_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="would download weights"):
        build_encoder(EncoderConfig(name="timm:resnet18", pretrained=True), None)
    with pytest.raises(ConfigError, match=r"weights file .* not found"):
        build_encoder(EncoderConfig(name="timm:resnet18", pretrained=str(tmp_path / "w.pt")),
                      None)
    with pytest.raises(ConfigError, match="Unknown model"):
        build_encoder(EncoderConfig.model_construct(name="timm:resnet_nope"), None)
    with pytest.raises(ConfigError, match=r"directory .* not found"):
        build_encoder(EncoderConfig(name=f"hf:{tmp_path / 'none'}"), None)
    with pytest.raises(ConfigError, match=r"unknown params \['width'\]"):
        build_encoder(EncoderConfig.model_construct(name="mlp", params={"width": 3}),
                      _tabular())
    with pytest.raises(ValueError, match="fitted tabular encoder"):
        build_encoder(EncoderConfig(name="mlp"), None)


def test_an_unknown_timm_model_is_refused_at_load_with_close_names() -> None:
    # it was refused when the model was built: after every image was decoded and the run
    # folder made, minutes into a large image set
    with pytest.raises(pydantic.ValidationError,
                       match=r"timm has no model 'resnet181'; close names: resnet18\b"):
        EncoderConfig(name="timm:resnet181")
    assert EncoderConfig(name="timm:convnext_tiny.fb_in22k").target == "convnext_tiny.fb_in22k"


@pytest.mark.parametrize(("params", "says"), [
    ({"width": 3}, r"unknown params \['width'\]"),
    ({"hidden": [0]}, r"'hidden' must be a list of layer widths.*Got \[0\]"),
    ({"hidden": 64}, r"'hidden' must be a list .*Got 64"),
    ({"dropout": 1.5}, r"'dropout' must be a float in \[0, 1\)\. Got 1\.5"),
    ({"embedding_noise": -1}, r"'embedding_noise' must be a float >= 0"),
])
def test_mlp_params_are_refused_at_load(params: dict, says: str) -> None:
    # a bad width or dropout used to pass the config and crash with a traceback in fold 0
    with pytest.raises(pydantic.ValidationError, match=says):
        EncoderConfig(name="mlp", params=params)
    EncoderConfig(name="mlp", params={"hidden": [], "dropout": 0, "embedding_noise": 0.1})


def test_unknown_encoder_kind(competition_factory, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["model"]["encoders"][0]["name"] = "sklarn:sklearn.linear_model.LogisticRegression"
    expect_failure(cfg, tmp_path, capsys, "{config}", "'model.encoders.0.name'",
                   "Did you mean 'sklearn'?",
                   "Known: " + ", ".join(sorted(ENCODERS.list())))



# --- issue 12 items 11 and 12: timm models of other families and other input statistics --------



def _pixels() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _normalised(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
                ) -> torch.Tensor:
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.usefixtures("one_thread")
def test_timm_encoder_renormalises_for_a_model_with_its_own_statistics() -> None:
    """issue 12 item 11: batches arrive ImageNet-normalised; a ViT whose pretrained config says
    mean = std = 0.5 must see the image normalised its own way (it saw ImageNet-normalised
    pixels before: every input off by its own scale and shift)."""
    cfg = EncoderConfig(name="timm:vit_tiny_patch16_224", pretrained=False,
                        params={"img_size": 32, "patch_size": 8})
    encoder = build_encoder(cfg, None).eval()
    assert encoder.renormalise and encoder.out_dim == 192
    pixels = _pixels()
    imagenet = _normalised(pixels, IMAGENET_MEAN, IMAGENET_STD)
    own = _normalised(pixels, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.no_grad():
        features = encoder({"image": imagenet})
        expected = encoder.body(own)
        unchanged = encoder.body(imagenet)
    assert features.shape == (2, 192)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    assert (features - unchanged).abs().max() > 1e-2  # control: the statistics matter here
    # the factors are derived, not learnt or saved: checkpoints keep the body's weights only
    assert not [k for k in encoder.state_dict() if k.startswith("input_")]


@pytest.mark.usefixtures("one_thread")
def test_timm_encoder_with_imagenet_statistics_feeds_its_input_unchanged() -> None:
    """issue 12 item 11: an ImageNet-statistics model (resnet18) gets the batch as it comes."""
    encoder = build_encoder(EncoderConfig(name="timm:resnet18", pretrained=False), None).eval()
    assert encoder.renormalise is False
    image = _normalised(_pixels(), IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        torch.testing.assert_close(encoder({"image": image}), encoder.body(image),
                                   rtol=0, atol=0)


# name -> pooled width; num_features is smaller where a conv head follows the pooling
TIMM_WIDTHS = {"resnet18": 512, "mobilenetv3_small_100": 1024, "efficientnet_b0": 1280,
               "ghostnet_100": 1280, "convnext_atto": 320}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", list(TIMM_WIDTHS))
def test_timm_out_dim_is_the_width_of_the_pooled_features(name: str) -> None:
    """issue 12 item 12: out_dim is the width the encoder really returns (MobileNetV3 and GhostNet
    return 1024 / 1280 pooled features while num_features says 576 / 960), so the head
    built from it fits."""
    encoder = build_encoder(EncoderConfig(name=f"timm:{name}", pretrained=False), None).eval()
    with torch.no_grad():
        features = encoder({"image": _normalised(_pixels(), IMAGENET_MEAN, IMAGENET_STD)})
    assert features.shape == (2, encoder.out_dim)
    assert encoder.out_dim == TIMM_WIDTHS[name]


@pytest.mark.parametrize(("config", "reads_segments"), [
    (TINY_BERT, True),  # type_vocab_size 2, as BERT, ELECTRA, MiniLM
    ({**TINY_BERT, "type_vocab_size": 1}, False),  # RoBERTa-style: one segment row
    ({"model_type": "distilbert", "vocab_size": 40, "dim": 16, "n_layers": 1, "n_heads": 2,
      "hidden_dim": 32, "max_position_embeddings": 64}, False),  # no token_type_ids argument
])
def test_hf_reads_a_pairs_segment_ids_only_where_it_has_segment_embeddings(
        tmp_path: Path, config: dict, reads_segments: bool) -> None:
    tok = write_tokenizer(tmp_path / "tok")
    module = build_encoder(EncoderConfig(name="hf", hf_config=config, tokenizer=str(tok)),
                           None).eval()
    assert module.segments is reads_segments
    ids = torch.tensor([[2, 7, 8, 3, 9, 10, 3]])
    plain = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    first = {**plain, "token_type_ids": torch.tensor([[0, 0, 0, 0, 1, 1, 1]])}
    second = {**plain, "token_type_ids": torch.tensor([[0, 1, 1, 1, 1, 1, 1]])}
    with torch.no_grad():
        out = [module(b) for b in (plain, first, second)]
    # the segment a token is in changes the features, where the model has segments at all
    assert (not torch.allclose(out[1], out[2])) is reads_segments
    if not reads_segments:  # the key is ignored: the same features as without it
        torch.testing.assert_close(out[0], out[1])
