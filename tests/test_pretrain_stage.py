"""The pretrain stage: which rows it reads, the folder and record it publishes, reruns,
refusals, resume after a kill, the CLI, feature export, and training configs that use it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

import pipeline.pretrain._base as base
from pipeline import train
from pipeline.artifacts import read_json, write_json
from pipeline.cli import main
from pipeline.config import build_config
from pipeline.errors import ConfigError, DataError
from pipeline.pretraining import (
    PretrainConfig,
    build_pretrain_config,
    export_features,
    run,
)
from tests.conftest import make_competition


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _pretrain(root: Path, experiment: dict[str, Any], **objective: Any) -> dict[str, Any]:
    return {"name": "dae", "pretrained_dir": str(root / "pretrained"),
            "competition": experiment["competition"],
            "objective": {"kind": "dae", "epochs": 3, "hidden": [16, 8], "batch_size": 16,
                          **objective}}


@pytest.fixture
def experiment(tmp_path: Path) -> dict[str, Any]:
    return make_competition(tmp_path, "tabular", "binary")


def test_pretrain_publishes_folder_and_record(tmp_path: Path, experiment: dict[str, Any]
                                              ) -> None:
    extra = pd.read_csv(Path(experiment["competition"]["dir"]) / "test.csv").head(10)
    extra.drop(columns=["id"]).to_csv(tmp_path / "extra.csv", index=False)
    data = _pretrain(tmp_path, experiment) | {"extra_unlabelled": str(tmp_path / "extra.csv")}
    folder = run(build_pretrain_config(data))
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "encoder.pt",
                                                       "record.json"]
    assert not (folder.parent / ".dae.work").exists()
    record = read_json(folder / "record.json")
    assert record["sources"] == {"train": 48, "test": 16, "extra": 10} and record["rows"] == 74
    assert set(record["inputs"]) == {"train", "test", "extra"} and len(record["losses"]) == 3
    assert record["encoder"] == "tabular" and record["objective"] == "dae"
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert PretrainConfig.model_validate(saved).config_hash() == record["config_hash"]


def test_rerun_is_a_no_op_and_a_changed_config_is_refused(tmp_path: Path,
                                                          experiment: dict[str, Any]) -> None:
    cfg = build_pretrain_config(_pretrain(tmp_path, experiment))
    folder = run(cfg)
    stamp = (folder / "encoder.pt").stat().st_mtime_ns
    assert run(cfg) == folder and (folder / "encoder.pt").stat().st_mtime_ns == stamp
    changed = build_pretrain_config(_pretrain(tmp_path, experiment, swap_p=0.3))
    with pytest.raises(ConfigError, match="--overwrite"):
        run(changed)
    run(changed, overwrite=True)
    assert read_json(folder / "record.json")["config_hash"] == changed.config_hash()
    # changed inputs are a different pretraining too
    test_csv = Path(experiment["competition"]["dir"]) / "test.csv"
    test_csv.write_text(test_csv.read_text().replace("blue", "BLUE").replace("red", "RED"))
    with pytest.raises(ConfigError, match="other inputs"):
        run(changed)


def test_a_deleted_encoder_file_is_pretrained_again(tmp_path: Path,
                                                    experiment: dict[str, Any]) -> None:
    """A pretraining whose encoder file was deleted was 'up to date' on the record alone, and
    the training run that read it failed deep inside with a misleading error."""
    cfg = build_pretrain_config(_pretrain(tmp_path, experiment))
    folder = run(cfg)
    weights = torch.load(folder / "encoder.pt", weights_only=False)
    (folder / "encoder.pt").unlink()
    assert run(cfg) == folder and (folder / "encoder.pt").is_file()
    again = torch.load(folder / "encoder.pt", weights_only=False)
    assert again.keys() == weights.keys()  # the same seed: the same pretraining, remade
    assert "encoder.pt" in read_json(folder / "record.json")["artifacts"]


def test_a_folder_that_is_not_a_pretraining_is_left_alone(tmp_path: Path,
                                                         experiment: dict[str, Any]) -> None:
    cfg = build_pretrain_config(_pretrain(tmp_path, experiment))
    cfg.folder.mkdir(parents=True)
    (cfg.folder / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds no record\.json"):
        run(cfg)
    assert (cfg.folder / "notes.txt").read_text() == "mine"


def test_resumed_pretrain_ends_with_the_same_weights(tmp_path: Path,
                                                     experiment: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run(build_pretrain_config(_pretrain(tmp_path / "a", experiment, epochs=4)))
    cfg = build_pretrain_config(_pretrain(tmp_path / "b", experiment, epochs=4))
    real_save, calls = base.save_checkpoint, []

    def killed_after_two(path: Path, state: dict[str, Any]) -> None:
        real_save(path, state)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(base, "save_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert not cfg.folder.exists()  # nothing half-published
    monkeypatch.setattr(base, "save_checkpoint", real_save)
    resumed = run(cfg)
    a = torch.load(whole / "encoder.pt", weights_only=False)
    b = torch.load(resumed / "encoder.pt", weights_only=False)
    for key, value in a["state"].items():
        assert torch.equal(value, b["state"][key]), key
    assert read_json(whole / "record.json")["losses"] == read_json(resumed / "record.json")[
        "losses"]


def test_config_errors_name_the_key(tmp_path: Path, experiment: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"'objective'.*Unknown pretrain objective 'dea'"):
        build_pretrain_config(_pretrain(tmp_path, experiment) | {"objective": {"kind": "dea"}})
    with pytest.raises(ConfigError, match=r"'objective\.swap_q': unknown key\. Did you mean "
                       r"'swap_p'\? Known here: .*gaussian_std"):
        build_pretrain_config(_pretrain(tmp_path, experiment, swap_q=0.1))
    data = _pretrain(tmp_path, experiment) | {"extra_unlabelled": str(tmp_path / "x.csv")}
    pd.DataFrame({"x1": [1.0]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(DataError, match="lacks columns"):
        run(build_pretrain_config(data))


def test_cli_pretrains_and_exports_features_for_a_gbdt_member(
        tmp_path: Path, experiment: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump(_pretrain(tmp_path, experiment)))
    out = tmp_path / "features"
    assert main(["pretrain", str(path), "--export-features", str(out), "--features-only"]) == 0
    train_csv = pd.read_csv(out / "train.csv")
    assert list(train_csv.columns[:2]) == ["id", "target"] and train_csv.shape == (48, 2 + 24)
    assert len(pd.read_parquet(out / "features.parquet")) == 64
    member = dict(experiment, name="gbdt-on-dae",
                  competition=experiment["competition"] | {"dir": str(out)},
                  model={"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression",
                                       "params": {"max_iter": 200}}]})
    assert train.run(build_config(member)) > 0.5
    assert main(["pretrain", str(path), "--set", "objective.kind=nope"]) == 2
    assert "Unknown pretrain objective" in capsys.readouterr().err


def test_training_config_uses_the_pretrained_encoder(tmp_path: Path,
                                                     experiment: dict[str, Any]) -> None:
    folder = run(build_pretrain_config(_pretrain(tmp_path, experiment)))
    encoders = [{"name": f"pretrained:{folder}", "lr": 1e-4},
                {"name": "mlp", "params": {"hidden": [8]}}]
    cfg = build_config(dict(experiment, model={"encoders": encoders}))
    assert [e.kind for e in cfg.model.encoders] == ["pretrained", "mlp"]
    assert cfg.model.modalities == {"tabular"}
    score = train.run(cfg)
    assert 0.0 <= score <= 1.0
    # a pretraining redone under the same name makes the run another config
    before = cfg.train_hash()
    run(build_pretrain_config(_pretrain(tmp_path, experiment, swap_p=0.3)), overwrite=True)
    again = build_config(dict(experiment, model={"encoders": encoders}))
    assert again.train_hash() != before
    # the refusal names the pretraining (its keys read the same: the diff alone said nothing)
    with pytest.raises(ConfigError, match=rf"another config \(the same keys: the pretraining "
                       rf"'{re.escape(str(folder))}' it reads was made again since\)"):
        train.run(again)
    missing = dict(experiment, model={"encoders": [{"name": "pretrained:nothing-here"}]})
    with pytest.raises(ConfigError, match="run `pipeline pretrain`"):
        build_config(missing)


def test_export_needs_a_finished_pretraining(tmp_path: Path,
                                                      experiment: dict[str, Any]) -> None:
    cfg = build_pretrain_config(_pretrain(tmp_path, experiment))
    with pytest.raises(DataError, match="not a finished pretraining"):
        export_features(cfg, tmp_path / "out")


def test_timm_and_hf_results_resolve_to_those_encoders(tmp_path: Path) -> None:
    import timm

    from pipeline.artifacts import write_json
    from pipeline.models.encoders import EncoderConfig, build_encoder

    folder = tmp_path / "simclr"
    folder.mkdir()
    body = timm.create_model("test_resnet", num_classes=0)
    torch.save(body.state_dict(), folder / "model.pth")
    write_json(folder / "record.json", {"encoder": "timm", "arch": "test_resnet", "params": {}})
    cfg = EncoderConfig(name=f"pretrained:{folder}", lr=1e-4)
    assert (cfg.kind, cfg.target, cfg.info.modality) == ("timm", "test_resnet", "image")
    module = build_encoder(cfg, None)
    for key, value in body.state_dict().items():
        assert torch.equal(module.body.state_dict()[key], value), key
    write_json(folder / "record.json", {"encoder": "hf"})
    hf = EncoderConfig(name=f"pretrained:{folder}")
    assert (hf.kind, hf.target, hf.info.modality) == ("hf", str(folder), "text")


def test_mlp_embedding_table_starts_from_skipgram_vectors(tmp_path: Path,
                                                          experiment: dict[str, Any]) -> None:
    from pipeline.data.tabular import TabularEncoder
    from pipeline.models.encoders import EncoderConfig, build_encoder
    from pipeline.pretrain.skipgram import load_vectors

    edges = pd.DataFrame({"source": ["blue", "red"], "target": ["red", "green"]})
    edges.to_csv(tmp_path / "edges.csv", index=False)
    data = _pretrain(tmp_path, experiment) | {
        "name": "colors", "objective": {"kind": "deepwalk", "edges": str(tmp_path / "edges.csv"),
                                        "node_column": "color", "epochs": 1, "dim": 4}}
    folder = run(build_pretrain_config(data))
    frame = pd.read_csv(Path(experiment["competition"]["dir"]) / "train.csv")
    fold = TabularEncoder(["x1", "x2"], ["color"]).fit(frame)
    enc = build_encoder(EncoderConfig(name="mlp", params={
        "hidden": [8], "pretrained_embeddings": {"color": str(folder)}}), fold)
    saved = load_vectors(folder)
    table = enc.embeddings[0].weight.detach()
    values = sorted(frame["color"].unique())
    assert table.shape == (len(values) + 1, 4) and not table[0].any()
    for code, value in enumerate(values, start=1):
        assert torch.equal(table[code], saved["vectors"][saved["tokens"].index(value)])
    cfg = dict(experiment, model={"encoders": [{"name": "mlp", "params": {
        "pretrained_embeddings": {"color": "no-such-pretraining"}}}]})
    with pytest.raises(ConfigError, match="no-such-pretraining"):
        build_config(cfg)


def test_extra_rows_need_only_what_the_objective_reads(tmp_path: Path) -> None:
    from pipeline.competition import IMAGE_PATH, CompetitionConfig, load_competition
    from pipeline.pretraining import unlabelled_rows

    image = make_competition(tmp_path, "image", "binary")
    pd.DataFrame({"image": ["images/0000.png", "images/0001.png"]}).to_csv(
        tmp_path / "extra.csv", index=False)
    cfg = build_pretrain_config({"name": "x", "competition": image["competition"],
                                 "extra_unlabelled": str(tmp_path / "extra.csv"),
                                 "objective": {"kind": "simclr", "arch": "test_resnet"}})
    comp = load_competition(CompetitionConfig(**image["competition"]))
    data = unlabelled_rows(cfg, comp)
    assert data.sources == {"train": 48, "test": 16, "extra": 2}
    assert data.frame[IMAGE_PATH].tail(2).tolist() == ["images/0000.png", "images/0001.png"]
    assert "target" not in data.frame.columns
    tab = make_competition(tmp_path, "tabular", "binary")
    pd.DataFrame({"pages": ["a b", "b c"]}).to_csv(tmp_path / "pages.csv", index=False)
    seq = build_pretrain_config({"name": "s", "competition": tab["competition"],
                                 "extra_unlabelled": str(tmp_path / "pages.csv"),
                                 "objective": {"kind": "skipgram", "sequence_column": "pages"}})
    rows = unlabelled_rows(seq, load_competition(CompetitionConfig(**tab["competition"])))
    assert rows.frame["pages"].tail(2).tolist() == ["a b", "b c"]


def _bert_folder(folder: Path, seed: int) -> Path:
    from transformers import BertConfig, BertModel

    from tests.conftest import write_tokenizer

    write_tokenizer(folder)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(folder)
    return folder


def test_weights_resaved_under_the_objective_path_are_another_pretraining(tmp_path: Path
                                                                          ) -> None:
    """The config names only the source model's folder: another checkpoint saved there found
    the old pretraining 'up to date', and a training run from it kept its folds."""
    experiment = make_competition(tmp_path, "text", "binary", n_train=24, n_test=8)
    model = _bert_folder(tmp_path / "bert", seed=0)
    cfg = build_pretrain_config({
        "name": "mlm", "pretrained_dir": str(tmp_path / "pretrained"), "device": "cpu",
        "competition": experiment["competition"],
        "objective": {"kind": "masked_lm", "model": str(model), "epochs": 1, "batch_size": 8,
                      "max_length": 16}})
    folder = run(cfg)
    record = read_json(folder / "record.json")
    assert set(record["inputs"]) == {"train", "test", "objective.model"}
    training = dict(experiment, model={"encoders": [{"name": f"pretrained:{folder}"}],
                                       "max_length": 16})
    before = build_config(training).train_hash()
    # the same weights written again (new times, same bytes): still up to date
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert run(cfg) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    _bert_folder(model, seed=1)  # another checkpoint under the same path
    with pytest.raises(ConfigError, match="other inputs"):
        run(cfg)
    run(cfg, overwrite=True)
    assert read_json(folder / "record.json")["inputs"]["objective.model"] != \
        record["inputs"]["objective.model"]
    assert build_config(training).train_hash() != before  # its runs train again
    # a record written before the source was hashed is not refused for lacking its digest
    old = read_json(folder / "record.json")
    del old["inputs"]["objective.model"]
    write_json(folder / "record.json", old)
    assert run(cfg) == folder
