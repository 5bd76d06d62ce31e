"""Config validation: dotted paths, close matches, known names, overrides, train hash."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import ExperimentConfig, apply_overrides, build_config, load_config
from pipeline.errors import ConfigError
from tests.test_competition import cli_config, expect_failure

SKLEARN_LOGREG = {"name": "sklearn:sklearn.linear_model.LogisticRegression"}


@pytest.fixture
def base(competition_factory) -> dict[str, Any]:
    """A valid tabular binary config (data written under tmp_path)."""
    return competition_factory("tabular", "binary")


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(data)
    return str(info.value)


def _with(data: dict[str, Any], section: str, **values: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with ``values`` set in ``data[section]``."""
    out = copy.deepcopy(data)
    out.setdefault(section, {}).update(values)
    return out


def _write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_config_is_valid(base: dict[str, Any]) -> None:
    cfg = build_config(base)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train.epochs == 2 and cfg.train.optimizer.lr == pytest.approx(3e-3)
    assert cfg.folds_file.name == "tabular_binary_stratified_k2_s0.csv"


@pytest.mark.parametrize(
    ("section", "key", "path", "suggestion"),
    [
        ("train", "epocs", "train.epocs", "epochs"),
        ("train", "batchsize", "train.batch_size", None),
        ("competition", "target_column", "competition.target_column", "target_columns"),
        ("folds", "nsplits", "folds.nsplits", "n_splits"),
    ],
)
def test_unknown_key_names_dotted_path_and_close_match(
    base: dict[str, Any], section: str, key: str, path: str, suggestion: str | None
) -> None:
    data = _with(base, section, **{key: 3})
    msg = _error(data)
    assert f"'{section}.{key}': unknown key" in msg
    if suggestion:
        assert f"Did you mean {suggestion!r}?" in msg
    assert "Known here:" in msg


def test_unknown_nested_key_in_list_item(base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["model"]["encoders"][0]["nme"] = "mlp"
    msg = _error(data)
    assert "'model.encoders.0.nme': unknown key" in msg
    assert "Did you mean 'name'?" in msg


def test_unknown_top_level_key(base: dict[str, Any]) -> None:
    data = {**base, "trian": {"epochs": 1}}
    msg = _error(data)
    assert "'trian': unknown key" in msg and "Did you mean 'train'?" in msg


def test_unknown_metric_lists_known_names(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "competition", metric="acuracy"))
    assert "'acuracy'" in msg and "Did you mean 'accuracy'" in msg
    assert "Known:" in msg and "roc_auc" in msg and "log_loss" in msg


def test_unknown_optimizer_lists_known_names(base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["train"]["optimizer"]["name"] = "adamx"
    msg = _error(data)
    assert "'train.optimizer.name'" in msg and "unknown optimizer 'adamx'" in msg
    assert "'adamax'" in msg  # close match
    assert "Known:" in msg and "sgd" in msg and "adamw" in msg


def test_unknown_loss_lists_known_names(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "train", loss={"name": "focl"}))
    assert "'train.loss.name'" in msg and "'focl'" in msg
    assert "Known:" in msg and "bce" in msg and "cross_entropy" in msg


def test_unknown_tta_lists_known_names(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "predict", tta=["hflp"]))
    assert "'predict.tta'" in msg and "'hflp'" in msg and "Did you mean 'hflip'" in msg
    assert "rot90" in msg and "vflip" in msg


def test_unknown_encoder_kind_lists_known_kinds(base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["model"]["encoders"][0]["name"] = "tim:resnet18"
    msg = _error(data)
    assert "'model.encoders.0.name'" in msg and "unknown encoder kind 'tim'" in msg
    assert "Did you mean 'timm'?" in msg
    for kind in ("timm", "hf", "mlp", "sklearn"):
        assert kind in msg


def test_encoder_kind_without_target_is_refused(base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["model"]["encoders"] = [{"name": "sklearn:"}]
    assert "names no model after 'sklearn'" in _error(data)


def test_metric_not_fitting_task_names_both(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "competition", metric="rmse"))
    assert "'rmse'" in msg and "'binary'" in msg and "regression" in msg
    assert "Metrics for binary:" in msg and "roc_auc" in msg


def test_loss_not_fitting_task_names_both(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "train", loss={"name": "mse"}))
    assert "'train.loss.name' 'mse'" in msg and "'binary'" in msg


def test_tta_not_fitting_modality(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "predict", tta=["hflip"]))
    assert "'hflip' does not apply to tabular" in msg


# --- overrides ---------------------------------------------------------------------------


def test_overrides_apply_nested_keys_and_list_indices(base: dict[str, Any]) -> None:
    data = apply_overrides(copy.deepcopy(base), [
        "train.epochs=7",
        "train.optimizer.lr=1e-4",
        "train.seeds=[0, 1, 2]",
        "model.encoders.0.name=sklearn:sklearn.linear_model.LogisticRegression",
        "model.encoders.0.params={}",
        "competition.metric=accuracy",
        "predict.batch_size=64",
    ])
    cfg = build_config(data)
    assert cfg.train.epochs == 7
    assert cfg.train.optimizer.lr == pytest.approx(1e-4)
    assert cfg.train.seeds == [0, 1, 2]
    assert cfg.model.encoders[0].name == "sklearn:sklearn.linear_model.LogisticRegression"
    assert cfg.model.is_sklearn and cfg.model.encoders[0].params == {}
    assert cfg.competition.metric == "accuracy"
    assert cfg.predict.batch_size == 64


def test_override_values_are_parsed_as_yaml() -> None:
    data = apply_overrides({}, ["a.b=3", "a.c=0.5", "a.d=true", "a.e=text", "a.f=[1, 2]",
                                "a.g=x=y"])
    assert data == {"a": {"b": 3, "c": 0.5, "d": True, "e": "text", "f": [1, 2], "g": "x=y"}}


def test_override_values_yaml_cannot_parse_are_text(base: dict[str, Any]) -> None:
    # an image path template is not a YAML value: it was a yaml.ParserError traceback
    template = "{split}_images/{image_id}.jpg"
    data = apply_overrides(copy.deepcopy(base), [f"competition.image_path={template}"])
    assert data["competition"]["image_path"] == template


def test_override_results_are_validated(base: dict[str, Any]) -> None:
    data = apply_overrides(copy.deepcopy(base), ["train.epochs=0"])
    assert "'train.epochs'" in _error(data)
    data = apply_overrides(copy.deepcopy(base), ["model.encoders.0.name=resnet"])
    assert "unknown encoder kind 'resnet'" in _error(data)
    data = apply_overrides(copy.deepcopy(base), ["train.epocs=3"])
    assert "'train.epocs': unknown key" in _error(data)


def test_malformed_overrides_raise_config_error(base: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"must look like key\.path=value"):
        apply_overrides(copy.deepcopy(base), ["train.epochs"])
    with pytest.raises(ConfigError, match="'epochs' is not a section"):
        apply_overrides(copy.deepcopy(base), ["train.epochs.max=3"])


@pytest.mark.parametrize("override", ["=3", "folds..n_splits=3", "folds.=3"])
def test_an_override_key_with_an_empty_part_is_named(base: dict[str, Any], override: str) -> None:
    """'=3' was refused as an unknown key '(top level)', 'folds..n_splits=3' as 'folds.', and
    without '(from --set)': the message named no key the user wrote."""
    with pytest.raises(ConfigError, match="has an empty part") as info:
        apply_overrides(copy.deepcopy(base), [override])
    assert repr(override) in str(info.value)


@pytest.mark.parametrize("override", ["model.encoders.5.name=mlp", "model.encoders.name=mlp"])
def test_override_bad_list_index_is_a_config_error(base: dict[str, Any], override: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.encoders"):
        apply_overrides(copy.deepcopy(base), [override])


def test_load_config_applies_overrides_and_names_file(base: dict[str, Any],
                                                      tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "exp.yaml", base)
    cfg = load_config(path, ["train.epochs=4", "folds.n_splits=3"])
    assert cfg.train.epochs == 4 and cfg.folds.n_splits == 3
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epocs=4"])
    msg = str(info.value)
    assert str(path) in msg and "'train.epocs'" in msg and "'epochs'" in msg


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain: {epochs: 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_non_mapping_yaml_names_file(tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "list.yaml", [1, 2])
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


# --- train hash ---------------------------------------------------------------------------


def _hash(data: dict[str, Any], *overrides: str) -> str:
    return build_config(apply_overrides(copy.deepcopy(data), list(overrides))).train_hash()


def test_train_hash_is_stable(base: dict[str, Any]) -> None:
    h = _hash(base)
    assert h == _hash(base) == build_config(copy.deepcopy(base)).train_hash()
    assert len(h) == 16 and int(h, 16) >= 0


def test_train_hash_follows_what_decides_weights(base: dict[str, Any]) -> None:
    h = _hash(base)
    for override in ("train.optimizer.lr=0.01", "train.epochs=3", "folds.seed=1",
                     "train.seeds=[1]", "model.encoders.0.params.hidden=[8]"):
        assert _hash(base, override) != h, override


def test_train_hash_ignores_prediction_and_output_settings(base: dict[str, Any],
                                                           tmp_path: Path) -> None:
    h = _hash(base)
    for override in (f"name={base['name']}-copy", f"output_dir={tmp_path / 'elsewhere'}",
                     f"submissions_dir={tmp_path / 'subs'}", f"folds_dir={tmp_path / 'f2'}",
                     "predict.batch_size=7", "train.num_workers=3", "train.resume_every=5"):
        assert _hash(base, override) == h, override


def test_train_hash_ignores_tta(competition_factory) -> None:
    image = competition_factory("image", "binary")
    assert _hash(image) == _hash(image, "predict.tta=[hflip, vflip]")
    assert _hash(image) != _hash(image, "model.image_size=64")


def test_a_text_pair_run_from_before_segment_ids_is_another_config(competition_factory) -> None:
    """Folds of a pair of texts trained before the pair's segment ids reached the model must
    not be reused (predicted with inputs they never saw); other runs keep their hash."""
    import hashlib
    import json

    def before(data: dict[str, Any]) -> str:  # the hash as the previous release made it
        dumped = build_config(copy.deepcopy(data)).model_dump(mode="json", exclude_defaults=True)
        for key in ("predict", "output_dir", "folds_dir", "submissions_dir", "name", "executor"):
            dumped.pop(key, None)
        dumped.get("train", {}).pop("num_workers", None)
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]

    text = competition_factory("text", "binary")
    pair = apply_overrides(copy.deepcopy(text), ["competition.text_columns=[text, other]"])
    three = apply_overrides(copy.deepcopy(text), ["competition.text_columns=[text, a, b]"])
    def legacy(data: dict[str, Any]) -> str:  # the competition folder hashed, as then
        return build_config(copy.deepcopy(data)).legacy_train_hash()

    assert legacy(pair) != before(pair)
    for same in (text, three, competition_factory("tabular", "binary")):
        assert legacy(same) == before(same)


# --- cross-field rules --------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["group", "stratified_group"])
def test_group_scheme_needs_group_column(base: dict[str, Any], scheme: str) -> None:
    msg = _error(_with(base, "folds", scheme=scheme))
    assert f"'folds.scheme' {scheme!r} needs 'competition.group_column'" in msg
    data = _with(base, "folds", scheme=scheme)
    data["competition"]["group_column"] = "color"
    assert build_config(data).folds.scheme == scheme


def test_multilabel_scheme_needs_multilabel_task(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "folds", scheme="multilabel"))
    assert "'folds.scheme' 'multilabel' does not split a 'binary' task" in msg


def test_multilabel_task_refuses_stratified_scheme(competition_factory) -> None:
    data = competition_factory("tabular", "multilabel")
    data["folds"]["scheme"] = "stratified"
    msg = _error(data)
    assert "'folds.scheme' 'stratified' does not split a 'multilabel' task" in msg
    assert "schemes for it: group, kfold, multilabel" in msg
    data["folds"]["scheme"] = "kfold"
    assert build_config(data).competition.task == "multilabel"


def test_single_target_column_for_binary(base: dict[str, Any]) -> None:
    msg = _error(_with(base, "competition", target_columns=["target", "x1"]))
    assert "'target_columns' must hold one column for task 'binary'" in msg


def test_image_modality_needs_timm_encoder(competition_factory) -> None:
    data = competition_factory("image", "binary")
    assert build_config(data).competition.modality == "image"
    data["model"]["encoders"] = [{"name": "mlp"}]
    assert "needs a 'timm:' encoder for modality 'image'" in _error(data)
    data["model"]["encoders"] = [SKLEARN_LOGREG]
    assert "'timm:' encoder" in _error(data)


def test_image_modality_needs_image_column(competition_factory) -> None:
    data = competition_factory("image", "binary")
    del data["competition"]["image_column"]
    assert "'image_column', 'image_path' or 'pixels' is required" in _error(data)


def test_sklearn_model_stands_alone(base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["model"]["encoders"] = [SKLEARN_LOGREG, {"name": "mlp"}]
    assert "stands alone" in _error(data)


def test_unknown_config_key(competition_factory, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["train"]["epocs"] = 3
    expect_failure(cfg, tmp_path, capsys, "{config}", "'train.epocs': unknown key",
                   "Did you mean 'epochs'?", "Known here: seeds, epochs")


@pytest.mark.parametrize(("task", "estimator", "kind"), [
    ("binary", "sklearn.linear_model.Ridge", "regressor"),
    ("multiclass", "sklearn.ensemble.HistGradientBoostingRegressor", "regressor"),
    ("regression", "sklearn.linear_model.LogisticRegression", "classifier"),
])
def test_a_scikit_learn_model_of_the_wrong_kind_is_refused_at_load(
        competition_factory, task: str, estimator: str, kind: str) -> None:
    """Issue 15 item 3: a regressor named for a classification task failed after fold 0's
    fit; now the config is refused at load, naming the model and the task."""
    data = competition_factory("tabular", task)
    data["model"] = {"encoders": [{"name": f"sklearn:{estimator}"}]}
    msg = _error(data)
    assert f"is a {kind}" in msg and f"task {task!r}" in msg
    right = {"regression": "sklearn.linear_model.Ridge"}.get(
        task, "sklearn.linear_model.LogisticRegression")
    data["model"] = {"encoders": [{"name": f"sklearn:{right}"}]}
    assert build_config(data).model.is_sklearn


def test_a_bad_set_value_says_it_came_from_the_command_line(competition_factory,
                                                            tmp_path: Path) -> None:
    """Issue 15 item 10: a bad --set value was reported as the YAML file's."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(competition_factory("tabular", "binary")))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=-1"])
    line = next(x for x in str(info.value).splitlines() if "'train.epochs'" in x)
    assert line.endswith("(from --set)")
