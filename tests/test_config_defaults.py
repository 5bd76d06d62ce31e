"""Competition-dependent defaults: the tabular MLP's training recipe, filled in only where the
config leaves a key out."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from pipeline.config import apply_overrides, build_config
from pipeline.config_defaults import TABULAR_MLP_RECIPE, fill_defaults
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
    # not part of the recipe: the schema's
    assert cfg.train.batch_size == 32 and cfg.train.scheduler.warmup_epochs == 0.0


def test_every_key_a_config_sets_keeps_its_value(bare: dict[str, Any]) -> None:
    """The schema's own values included: an explicit ``epochs: 5`` stays 5."""
    data = apply_overrides(copy.deepcopy(bare), ["train.epochs=5", "train.optimizer.lr=0.001"])
    cfg = build_config(data)
    assert (cfg.train.epochs, cfg.train.optimizer.lr) == (5, pytest.approx(1e-3))
    one = build_config(apply_overrides(copy.deepcopy(bare), ["train.epochs=7"]))
    assert one.train.epochs == 7 and one.train.optimizer.lr == pytest.approx(3e-3)


def test_a_config_that_sets_the_recipe_keys_keeps_its_train_hash(bare: dict[str, Any]) -> None:
    explicit = apply_overrides(copy.deepcopy(bare), ["train.epochs=5", "train.optimizer.lr=0.001"])
    # (its old runs recorded the hash of then, the competition folder in it: still its own)
    assert _old_hash(explicit) in train_hashes(build_config(copy.deepcopy(explicit)))
    # one that relied on the old defaults trains other weights now: another hash, so its old
    # folds are not reused as the new recipe's
    assert _old_hash(explicit) not in train_hashes(build_config(copy.deepcopy(bare)))


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
    for data in (sklearn, image):
        assert fill_defaults(data) == data
        assert build_config(copy.deepcopy(data)).train.epochs == 5
    beside = copy.deepcopy(bare)  # an mlp beside another encoder: that one's recipe
    beside["model"]["encoders"].append({"name": "timm:resnet18"})
    assert fill_defaults(beside) == beside
    assert fill_defaults(bare) != bare and "train" not in bare  # a copy; the input unchanged
    assert set(TABULAR_MLP_RECIPE) == {"epochs", "optimizer.lr"}
