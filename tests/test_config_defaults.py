"""Competition-dependent defaults: the tabular MLP's training recipe, filled in only where the
config leaves a key out."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from pipeline.config import apply_overrides, build_config, parse_value
from pipeline.config_defaults import TABULAR_MLP_RECIPE, fill_defaults
from pipeline.errors import ConfigError
from pipeline.train_hash import train_hashes


@pytest.fixture
def bare(competition_factory) -> dict[str, Any]:
    """A tabular MLP config with nothing under ``train``: what a competitor who writes only
    ``encoders: [{name: mlp}]`` has."""
    data = competition_factory("tabular", "binary")
    data.pop("train")
    return data


def _old_hash(data: dict[str, Any]) -> str:
    """The train hash as a release without the recipe made it, for a config whose keys the
    recipe does not fill (mirrors ``ExperimentConfig._train_hash``)."""
    dumped = build_config(copy.deepcopy(data)).model_dump(mode="json", exclude_defaults=True)
    for key in ("predict", "output_dir", "folds_dir", "submissions_dir", "name", "executor"):
        dumped.pop(key, None)
    for key in ("num_workers", "resume_every"):
        dumped.get("train", {}).pop(key, None)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def test_a_bare_tabular_mlp_config_gets_the_recipe(bare: dict[str, Any]) -> None:
    cfg = build_config(copy.deepcopy(bare))
    assert cfg.train.epochs == 20
    assert cfg.train.optimizer.name == "adamw" and cfg.train.optimizer.lr == pytest.approx(3e-3)
    # sized per fold from its rows (pipeline.engine.auto_batch)
    assert cfg.train.batch_size == "auto"
    assert cfg.train.scheduler.warmup_epochs == 0.0  # not part of the recipe: the schema's


def test_every_key_a_config_sets_keeps_its_value(bare: dict[str, Any]) -> None:
    """The schema's own values included: an explicit ``epochs: 5`` stays 5."""
    data = apply_overrides(copy.deepcopy(bare), ["train.epochs=5", "train.optimizer.lr=0.001",
                                                 "train.batch_size=32"])
    cfg = build_config(data)
    assert (cfg.train.epochs, cfg.train.optimizer.lr) == (5, pytest.approx(1e-3))
    assert cfg.train.batch_size == 32
    one = build_config(apply_overrides(copy.deepcopy(bare), ["train.epochs=7"]))
    assert one.train.epochs == 7 and one.train.optimizer.lr == pytest.approx(3e-3)


def test_a_config_that_sets_the_recipe_keys_keeps_its_train_hash(bare: dict[str, Any]) -> None:
    explicit = apply_overrides(copy.deepcopy(bare), ["train.epochs=5", "train.optimizer.lr=0.001",
                                                     "train.batch_size=32"])
    # (its old runs recorded the hash of then, the competition folder in it: still its own)
    assert _old_hash(explicit) in train_hashes(build_config(copy.deepcopy(explicit)))
    # one that relied on the old defaults trains other weights now: another hash, so its old
    # folds are not reused as the new recipe's
    assert _old_hash(explicit) not in train_hashes(build_config(copy.deepcopy(bare)))
    # the 20-epoch AdamW 3e-3 recipe at batch 32 (the default before 'auto'): the batch alone
    # moves the hash, so a run of that recipe is not reused as the auto batch's
    before = apply_overrides(copy.deepcopy(bare), ["train.epochs=20", "train.optimizer.lr=0.003",
                                                   "train.batch_size=32"])
    assert _old_hash(before) in train_hashes(build_config(copy.deepcopy(before)))
    assert _old_hash(before) not in train_hashes(build_config(copy.deepcopy(bare)))
    dumped = build_config(copy.deepcopy(bare)).model_dump(mode="json", exclude_defaults=True)
    assert dumped["train"]["batch_size"] == "auto"  # what the hash reads


def test_the_resolved_config_round_trips(bare: dict[str, Any]) -> None:
    cfg = build_config(copy.deepcopy(bare))
    again = build_config(cfg.to_dict())
    assert again == cfg and again.train_hash() == cfg.train_hash()


@pytest.mark.parametrize("name", ["sgd", "lamb", "lookahead_adamw"])
def test_another_optimizer_keeps_the_schemas_lr(bare: dict[str, Any], name: str) -> None:
    """The lr was measured with AdamW."""
    cfg = build_config(apply_overrides(copy.deepcopy(bare), [f"train.optimizer.name={name}"]))
    assert cfg.train.epochs == 20 and cfg.train.optimizer.lr == pytest.approx(1e-3)
    adamw = build_config(apply_overrides(copy.deepcopy(bare), ["train.optimizer.name=adamw"]))
    assert adamw.train.optimizer.lr == pytest.approx(3e-3)


def test_only_networks_of_mlp_encoders_on_tables(bare: dict[str, Any],
                                                 competition_factory) -> None:
    sklearn = copy.deepcopy(bare)
    sklearn["model"] = {"encoders": [
        {"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    image = competition_factory("image", "binary")
    image.pop("train")
    text = competition_factory("text", "binary")
    text.pop("train")
    for data in (sklearn, image, text):
        assert fill_defaults(data) == data
        cfg = build_config(copy.deepcopy(data))
        assert (cfg.train.epochs, cfg.train.batch_size) == (5, 32)
    beside = copy.deepcopy(bare)  # an mlp beside another encoder: that one's recipe
    beside["model"]["encoders"].append({"name": "timm:resnet18"})
    assert fill_defaults(beside) == beside
    assert fill_defaults(bare) != bare and "train" not in bare  # a copy; the input unchanged
    assert set(TABULAR_MLP_RECIPE) == {"epochs", "optimizer.lr", "batch_size"}


def test_an_explicit_auto_batch_is_for_tabular_mlps_only(bare: dict[str, Any],
                                                         competition_factory) -> None:
    """The rule was measured on tabular MLPs; an image or text encoder's batch is bounded by
    its memory, which the rows say nothing about: refused at load, naming the key."""
    given = build_config(apply_overrides(copy.deepcopy(bare), ["train.batch_size=auto"]))
    assert given.train.batch_size == "auto"
    image = competition_factory("image", "binary")
    gbdt = apply_overrides(copy.deepcopy(bare), ["model.encoders=[{name: lightgbm}]"])
    for data, what in ((image, "a 'timm' encoder"), (gbdt, "a 'lightgbm' encoder")):
        data.setdefault("train", {})["batch_size"] = "auto"
        with pytest.raises(ConfigError) as err:
            build_config(data)
        assert str(err.value).splitlines()[1:] == [
            "  '(top level)': 'train.batch_size' auto sizes the batch of a tabular MLP (modality "
            f"tabular, every encoder 'mlp'); give a number for {what}."]
    for bad in ("0", "big", "2.5"):  # one line for both forms, not one per union branch
        with pytest.raises(ConfigError) as err:
            build_config(apply_overrides(copy.deepcopy(bare), [f"train.batch_size={bad}"]))
        assert str(err.value).splitlines()[1:] == [
            f"  'train.batch_size': must be an int >= 1 or 'auto'. Got {parse_value(bad)!r}."]
