"""Defaults that depend on the competition, filled into a config's data before validation
where the config leaves the key out (an explicit key, the schema's own default value
included, is kept).

- ``model.target_transform`` from the metric (:func:`pipeline.data.target_transform.
  metric_default`);
- the training recipe of a tabular MLP (:data:`TABULAR_MLP_RECIPE`).

A filled value differs from the schema's default, so it joins the train hash: a config that
relies on these defaults trains other weights than it did before they existed, and its old
folds are not reused as if they were the new recipe's.
"""

from __future__ import annotations

from typing import Any

from pipeline.data.target_transform import metric_default

# The recipe of a network whose encoders are all 'mlp' on a tabular competition. The schema's
# defaults (5 epochs at AdamW's 1e-3) suit fine-tuning a pretrained image or text encoder; an
# MLP starts from random weights, and on tables of a few hundred to a few thousand rows it had
# not converged: held-out log loss 0.165 -> 0.073 on breast cancer, 0.230 -> 0.068 on digits,
# Boston RMSE 3.64 -> 3.38, others level, for 2-4x the (seconds-long) training time
# (docs/benchmarks.md, 2026-11-29; a warm-up epoch added nothing there and is not filled).
TABULAR_MLP_RECIPE: dict[str, Any] = {"epochs": 20, "optimizer.lr": 3.0e-3}
# the lr was measured with AdamW: another optimizer keeps the schema's lr
_RECIPE_NAMES = {"optimizer": "adamw"}


def fill_defaults(data: Any) -> Any:
    """``data`` with every competition-dependent default filled in (a new dict; ``data`` is
    not changed)."""
    return mlp_recipe_default(metric_default(data))


def mlp_recipe_default(data: Any) -> Any:
    """Config data with :data:`TABULAR_MLP_RECIPE`'s keys filled in under ``train`` where the
    competition is tabular, every encoder is ``mlp`` and the config leaves the key out."""
    if not _tabular_mlp(data):
        return data
    if not isinstance(data.get("train") or {}, dict):
        return data  # not a mapping: validation says so
    train = dict(data.get("train") or {})
    for dotted, value in TABULAR_MLP_RECIPE.items():
        section, _, key = dotted.rpartition(".")
        if not section:
            train.setdefault(key, value)
            continue
        part = train.get(section, {})
        if not isinstance(part, dict) or part.get("name", _RECIPE_NAMES[section]) != \
                _RECIPE_NAMES[section]:
            continue
        train[section] = {key: value, **part}
    return {**data, "train": train}


def _tabular_mlp(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    comp, model = data.get("competition"), data.get("model")
    if not isinstance(comp, dict) or comp.get("modality") != "tabular":
        return False
    encoders = model.get("encoders") if isinstance(model, dict) else None
    return bool(encoders) and isinstance(encoders, list) and all(
        isinstance(e, dict) and e.get("name") == "mlp" for e in encoders)
