"""The pairs stage (pipeline/pairs.py): one config per pair of a config's encoders, each a
valid experiment of its own, and the refusals."""

from __future__ import annotations

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.pairs import expand_pairs


def test_pairs_expand_every_encoder_pair(competition_factory, tmp_path):
    data = competition_factory("image", "multiclass")
    data["model"]["encoders"] = [{"name": "timm:test_resnet"}, {"name": "timm:test_efficientnet"},
                                 {"name": "timm:test_convnext"}]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    written = expand_pairs(path, tmp_path / "pairs")
    assert len(written) == 3
    pairs = [yaml.safe_load(p.read_text()) for p in written]
    assert len({p["name"] for p in pairs}) == 3
    assert all(len(p["model"]["encoders"]) == 2 for p in pairs)
    assert pairs[0]["name"] == "image-multiclass--test_resnet--test_efficientnet"


def test_pairs_keep_the_rest_of_the_config_and_write_beside_it(competition_factory,
                                                               tmp_path) -> None:
    data = competition_factory("image", "binary")
    data["model"]["encoders"] = [{"name": f"timm:{a}", "lr": lr} for a, lr in
                                 (("test_resnet", 1e-3), ("test_efficientnet", 2e-3),
                                  ("test_convnext", 3e-3), ("test_vit", 4e-3))]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    written = expand_pairs(path)
    assert len(written) == 6 and all(p.parent == tmp_path for p in written)  # 4 choose 2
    pairs = [yaml.safe_load(p.read_text()) for p in written]
    seen = {tuple(e["name"] for e in p["model"]["encoders"]) for p in pairs}
    assert len(seen) == 6
    for pair in pairs:
        assert pair["model"]["image_size"] == data["model"]["image_size"]
        assert pair["train"] == data["train"] and pair["competition"] == data["competition"]
        assert {e["lr"] for e in pair["model"]["encoders"]} < {1e-3, 2e-3, 3e-3, 4e-3}


def test_pairs_of_encoders_of_one_kind_get_names_of_their_own(competition_factory,
                                                              tmp_path) -> None:
    """Three ``mlp`` encoders of other widths made three pairs all named ``<name>--mlp--mlp``:
    each file overwrote the last and one config was left. Shared labels get the encoder's
    position; unique ones keep their plain label."""
    data = competition_factory("tabular", "binary")
    data["model"]["encoders"] = [{"name": "mlp", "params": {"hidden": [h]}}
                                 for h in (8, 16, 32)]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    written = expand_pairs(path, tmp_path / "pairs")
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == sorted(
        f"tabular-binary--{a}--{b}.yaml" for a, b in (("mlp-0", "mlp-1"), ("mlp-0", "mlp-2"),
                                                      ("mlp-1", "mlp-2")))
    widths = {tuple(e["params"]["hidden"][0] for e in yaml.safe_load(p.read_text())["model"]
                    ["encoders"]) for p in written}
    assert widths == {(8, 16), (8, 32), (16, 32)}


def test_pairs_refuse_missing_files_and_too_few_encoders(competition_factory,
                                                        tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        expand_pairs(tmp_path / "none.yaml")
    data = competition_factory("image", "binary")
    data["model"]["encoders"] = [{"name": "timm:test_resnet"}, {"name": "timm:test_vit"}]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="3 or more encoders"):
        expand_pairs(path)


def test_pairs_write_nothing_when_a_pair_is_invalid(competition_factory, tmp_path) -> None:
    """A bad input ends in one error and no half-written output, as in every stage."""
    data = competition_factory("image", "binary")
    # a scikit-learn model stands alone: every pair with it is an invalid config
    data["model"]["encoders"] = [{"name": "timm:test_resnet"}, {"name": "timm:test_vit"},
                                 {"name": "sklearn:sklearn.linear_model.Ridge"}]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="stands alone"):
        expand_pairs(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
