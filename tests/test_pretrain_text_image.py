"""Text and image pretraining objectives (masked LM, ELECTRA, SimCLR) on tiny models: they
learn, save what the training stage loads, and a run killed between epochs resumes to the
same weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import pipeline.pretrain._base as base
from pipeline.competition import CompetitionConfig, load_competition
from pipeline.errors import ConfigError
from pipeline.models.encoders import EncoderConfig, HFEncoder, TimmEncoder
from pipeline.pretrain import OBJECTIVES, PretrainData
from pipeline.pretrain.electra import ElectraConfig, ReplacedTokenDetection
from pipeline.pretrain.masked_image import MaskedImageConfig
from pipeline.pretrain.masked_lm import SAFE_EPOCHS, MaskedLMConfig, warn_epochs
from pipeline.pretrain.simclr import WEIGHTS_FILE, SimCLRConfig
from tests.conftest import make_competition, write_tokenizer

CPU = torch.device("cpu")


def _data(root: Path, modality: str) -> PretrainData:
    spec = make_competition(root, modality, "binary", n_train=24, n_test=8)
    comp = load_competition(CompetitionConfig(**spec["competition"]))
    frame = pd.concat([comp.train.drop(columns="target"), comp.test], ignore_index=True)
    return PretrainData(frame, comp, {"train": len(comp.train), "test": len(comp.test)})


def _tiny_bert(folder: Path) -> Path:
    """A 2-layer, 16-wide BERT over the test vocabulary, saved with its tokenizer."""
    from transformers import BertConfig, BertModel

    write_tokenizer(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)  # no MLM head, like all-MiniLM-L6-v2
    return folder


@pytest.fixture
def text(tmp_path: Path) -> tuple[PretrainData, Path]:
    return _data(tmp_path, "text"), _tiny_bert(tmp_path / "bert")


def _text_cfg(kind: str, model: Path, **settings: Any) -> Any:
    section = OBJECTIVES.get(kind).config
    return section(kind=kind, model=str(model), batch_size=8, lr=3e-3, max_length=16,
                   **settings)


def _state(folder: Path) -> dict[str, torch.Tensor]:
    """The body's weights as a training config loads them (``hf:<folder>``), without the
    CLS pooler: a masked-LM model has none (a fresh one is drawn) and mean pooling ignores it."""
    enc = HFEncoder(EncoderConfig(name=f"hf:{folder}"))
    return {k: v.clone() for k, v in enc.body.state_dict().items() if not k.startswith("pooler")}


def test_entries_say_what_they_read_and_write() -> None:
    expected = {"masked_lm": ("text", "hf"), "electra": ("text", "hf"),
                "simclr": ("image", "timm"), "masked_image": ("image", "timm")}
    for name, (modality, encoder) in expected.items():
        entry = OBJECTIVES.get(name)
        assert (entry.modality, entry.encoder) == (modality, encoder)
        assert entry.config.model_fields["kind"].annotation.__args__ == (name,)


@pytest.mark.parametrize("kind", ["masked_lm", "electra"])
def test_text_refinement_learns_and_saves_an_hf_folder(text, tmp_path, kind, one_thread):
    data, model = text
    out = tmp_path / kind
    out.mkdir()
    cfg = _text_cfg(kind, model, epochs=3, head_warmup_ratio=0.0, warmup_ratio=0.0)
    record = OBJECTIVES.get(kind).fit(cfg, data, out, CPU, 0)
    assert len(record["losses"]) == 3 and record["rows"] == 32
    assert record["losses"][-1] < record["losses"][0]  # the objective is being learned
    assert (out / "tokenizer_config.json").is_file()
    before, after = _state(model), _state(out)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("encoder.layer" in k for k in changed)  # the body itself was refined


def test_head_warmup_keeps_the_body_frozen(text, tmp_path, monkeypatch, one_thread):
    data, model = text
    out = tmp_path / "warm"
    out.mkdir()
    # 2 epochs of 4 steps, the first 4 head-only: after epoch 1 only the fresh MLM head has
    # moved; after epoch 2 the body has too
    cfg = _text_cfg("masked_lm", model, epochs=2, head_warmup_ratio=0.5)
    fit = OBJECTIVES.get("masked_lm").fit
    with monkeypatch.context() as patch:
        _killed_after_first_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, data, out, CPU, 0)
    saved = torch.load(out / base.RESUME_FILE, weights_only=False)["model"]
    before = _state(model)
    assert all(torch.equal(before[k], saved[f"bert.{k}"]) for k in before)
    head = [k for k in saved if k.startswith("cls.predictions.transform")]
    assert head and saved["cls.predictions.bias"].abs().sum() > 0  # the head did learn
    record = fit(cfg, data, out, CPU, 0)
    assert record["fresh_head"]
    after = _state(out)
    assert not all(torch.equal(before[k], after[k]) for k in before)


def _killed_after_first_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the run die right after its first resume point is written."""
    real = base.save_checkpoint

    def save_then_die(path: Path, state: dict[str, Any]) -> None:
        real(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "save_checkpoint", save_then_die)


IMAGE_CONFIGS = {
    "simclr": lambda **kw: SimCLRConfig(arch="test_resnet", image_size=16, **kw),
    "masked_image": lambda **kw: MaskedImageConfig(arch="test_vit", image_size=32, **kw),
}


@pytest.mark.parametrize("kind", ["masked_lm", "electra", "simclr", "masked_image"])
def test_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, kind, one_thread):
    if kind in IMAGE_CONFIGS:
        data = _data(tmp_path, "image")
        cfg: Any = IMAGE_CONFIGS[kind](epochs=2, batch_size=8)
        weights = WEIGHTS_FILE
    else:
        data, model = _data(tmp_path, "text"), _tiny_bert(tmp_path / "bert")
        cfg = _text_cfg(kind, model, epochs=2)
        weights = "model.safetensors"
    fit = OBJECTIVES.get(kind).fit
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    fit(cfg, data, whole, CPU, 7)
    with monkeypatch.context() as patch:
        _killed_after_first_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, data, cut, CPU, 7)
    assert (cut / base.RESUME_FILE).is_file() and not (cut / weights).exists()
    torch.manual_seed(123)  # the resumed process starts from another random state
    record = fit(cfg, data, cut, CPU, 7)
    assert len(record["losses"]) == 2
    if kind in IMAGE_CONFIGS:
        a = torch.load(whole / weights, weights_only=True)
        b = torch.load(cut / weights, weights_only=True)
    else:
        a, b = _state(whole), _state(cut)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_electra_generator_shares_the_token_embeddings(text):
    _, model = text
    rtd = ReplacedTokenDetection(str(model), generator_layers=None, generator_width=0.25)
    shared = rtd.encoder.get_input_embeddings().weight
    assert rtd.generator.get_input_embeddings().weight is shared
    assert rtd.generator.get_output_embeddings().weight is shared
    assert rtd.generator.config.num_hidden_layers == 1  # a third of 2 layers, at least one
    assert rtd.generator.config.intermediate_size == 8


@pytest.mark.parametrize(("kind", "arch"), [("simclr", "test_resnet"),
                                          ("masked_image", "test_vit")])
def test_image_refinement_learns_and_loads_into_the_timm_encoder(tmp_path, kind, arch,
                                                                 one_thread):
    data = _data(tmp_path, "image")
    out = tmp_path / kind
    out.mkdir()
    cfg = IMAGE_CONFIGS[kind](epochs=4, batch_size=16, lr=2e-3)
    record = OBJECTIVES.get(kind).fit(cfg, data, out, CPU, 0)
    assert record["rows"] == 32 and record["arch"] == arch
    assert record["losses"][-1] < record["losses"][0]  # the objective is being learned
    saved = torch.load(out / record["weights"], weights_only=True)
    enc = TimmEncoder(EncoderConfig(name=f"timm:{arch}", pretrained=str(out / WEIGHTS_FILE)))
    loaded = enc.body.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    torch.manual_seed(0)  # the same draw fit_* started from
    fresh = TimmEncoder(EncoderConfig(name=f"timm:{arch}")).body.state_dict()
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)


def test_more_than_safe_epochs_warns(text, caplog):
    _, model = text
    with caplog.at_level(logging.WARNING):
        warn_epochs(MaskedLMConfig(model=str(model), epochs=SAFE_EPOCHS, max_length=16))
        assert not caplog.records
        warn_epochs(ElectraConfig(model=str(model), epochs=SAFE_EPOCHS + 1,
                                  max_length=16))
    assert "forget" in caplog.text and "4 epochs" in caplog.text


@pytest.mark.parametrize(("section", "settings", "message"), [
    (MaskedLMConfig, {"model": "no/such/dir"}, "not a directory"),
    (ElectraConfig, {"model": "MODEL", "generator_width": 0}, "generator_width"),
    (SimCLRConfig, {"arch": "resnet_nope"}, "timm architecture"),
    (SimCLRConfig, {"arch": "test_resnet", "crop_scale": (0.8, 0.2)}, "crop_scale"),
    (SimCLRConfig, {"arch": "test_resnet", "weights": "missing.pth"}, "not a file"),
    (SimCLRConfig, {"arch": "test_resnet", "batch_size": 1}, "batch_size"),
    (MaskedImageConfig, {"arch": "test_resnet"}, "VisionTransformer"),
    (MaskedImageConfig, {"arch": "test_vit", "image_size": 40}, "multiple of"),
    (MaskedImageConfig, {"arch": "vit_tiny_patch16_224", "image_size": 32}, "img_size"),
])
def test_bad_settings_are_refused_at_load(text, section, settings, message):
    _, model = text
    settings = {k: str(model) if v == "MODEL" else v for k, v in settings.items()}
    with pytest.raises(ValueError, match=message):
        section(**settings)


@pytest.mark.parametrize("kind", ["masked_lm", "electra"])
def test_max_length_past_the_position_table_is_refused_at_load(tmp_path, kind):
    """A max_length past the model's 64 positions used to start the run and stop at the first
    batch of long texts with a tensor-shape traceback from transformers (exit 1)."""
    from pipeline import pretraining

    spec = make_competition(tmp_path, "text", "binary", n_train=24, n_test=8)
    objective = {"kind": kind, "model": str(_tiny_bert(tmp_path / "bert")), "max_length": 65}
    data = {"name": "enc", "pretrained_dir": str(tmp_path / "pretrained"),
            "competition": spec["competition"], "objective": objective}
    with pytest.raises(ConfigError, match=r"'max_length' is 65, but .* reads at most 64 tokens"):
        pretraining.build_pretrain_config(data)
    assert not (tmp_path / "pretrained").exists()
    objective["max_length"] = 64  # the table's own length is fine
    assert pretraining.build_pretrain_config(data).objective.max_length == 64


def test_text_objective_needs_text_columns(tmp_path):
    data = _data(tmp_path, "image")
    model = _tiny_bert(tmp_path / "bert")
    with pytest.raises(ConfigError, match="text_columns"):
        OBJECTIVES.get("masked_lm").fit(_text_cfg("masked_lm", model), data, tmp_path, CPU, 0)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_stage_output_is_an_encoder_the_train_stage_loads(tmp_path, modality, one_thread):
    from pipeline import pretraining, train
    from pipeline.config import build_config

    spec = make_competition(tmp_path, modality, "binary", n_train=24, n_test=8)
    if modality == "text":
        objective = {"kind": "masked_lm", "model": str(_tiny_bert(tmp_path / "bert")),
                     "epochs": 1, "batch_size": 8, "max_length": 16}
    else:
        objective = {"kind": "simclr", "arch": "test_resnet", "image_size": 16, "epochs": 1,
                     "batch_size": 16}
    cfg = pretraining.build_pretrain_config({
        "name": "enc", "pretrained_dir": str(tmp_path / "pretrained"), "device": "cpu",
        "competition": spec["competition"], "objective": objective})
    folder = pretraining.run(cfg)
    record = pretraining.read_record(folder)
    assert record["sources"] == {"train": 24, "test": 8} and len(record["losses"]) == 1
    assert not (folder / base.RESUME_FILE).exists()
    # the encoder as a feature table, for scikit-learn / GBDT members
    pretraining.export_features(cfg, tmp_path / "feats", keep_raw=False)
    feats = pd.read_parquet(tmp_path / "feats" / "features.parquet")
    width = 16 if modality == "text" else TimmEncoder(
        EncoderConfig(name="timm:test_resnet")).out_dim
    assert feats.shape == (32, 2 + width) and feats.iloc[:, 2:].notna().all().all()
    assert len(feats.iloc[:, 2:].drop_duplicates()) == 32  # each row its own features
    # resolved to hf:<folder> / timm:test_resnet + model.pth (the direct forms are tested above)
    spec["model"]["encoders"] = [{"name": f"pretrained:{folder}"}]
    spec["train"]["epochs"] = 1
    score = train.run(build_config(spec))
    assert 0.0 <= score <= 1.0


def test_image_features_export_with_raw_columns_reads_back_as_a_competition(tmp_path,
                                                                           one_thread):
    """The exported folder used to carry the loader's own ``_image_path`` column, relative to
    the old folder: loaded as a table it was checked as images and refused (image files not
    found), and the image column named no file from the new folder."""
    from pipeline import pretraining
    from pipeline.competition import IMAGE_PATH, CompetitionConfig, load_competition

    spec = make_competition(tmp_path, "image", "binary", n_train=24, n_test=8)
    cfg = pretraining.build_pretrain_config({
        "name": "enc", "pretrained_dir": str(tmp_path / "pretrained"), "device": "cpu",
        "competition": spec["competition"],
        "objective": {"kind": "simclr", "arch": "test_resnet", "image_size": 16, "epochs": 1,
                      "batch_size": 16}})
    pretraining.run(cfg)
    out = pretraining.export_features(cfg, tmp_path / "feats", keep_raw=True)
    written = pd.read_csv(out / "train.csv")
    assert IMAGE_PATH not in written.columns
    tabular = {**spec["competition"], "dir": str(out), "modality": "tabular"}
    tabular.pop("image_column")
    comp = load_competition(CompetitionConfig(**tabular))
    assert IMAGE_PATH not in comp.train.columns
    assert {f"enc_f{i}" for i in range(4)} <= set(comp.feature_columns)
    # a folder exported before: the loader's own column is dropped, not read as images
    written.assign(**{IMAGE_PATH: "images/0000.png"}).to_csv(out / "train.csv", index=False)
    assert IMAGE_PATH not in load_competition(CompetitionConfig(**tabular)).train.columns
    # the same folder as an image competition: its image column names the original files
    images = load_competition(CompetitionConfig(**{**spec["competition"], "dir": str(out)}))
    assert all(Path(p).is_file() for p in images.train[IMAGE_PATH])
    original = pd.read_csv(Path(spec["competition"]["dir"]) / "train.csv")
    assert [Path(p).name for p in written["image"]] == [Path(p).name for p in original["image"]]
