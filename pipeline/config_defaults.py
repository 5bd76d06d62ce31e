"""Defaults that depend on the competition, filled into a config's data before validation
where the config leaves the key out (an explicit key, the schema's own default value
included, is kept).

- ``model.target_transform`` from the metric (:func:`pipeline.data.target_transform.
  metric_default`);
- the training recipe of a tabular MLP (:data:`TABULAR_MLP_RECIPE`), whose batch ``auto`` is
  refused for other networks (:func:`auto_batch_fits`).

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
# The batch 'auto' (pipeline.engine.auto_batch): 32 up to ~6,300 rows a fold, then the largest
# power of two up to 512 leaving 100 updates an epoch, AdamW's lr grown with its square root;
# at 32 a fold of 128,000 rows took 584 CPU s, at 512 and lr 1e-2 136 s, log loss 0.143 ->
# 0.139; diamonds 168 -> 62 s, RMSE level (docs/benchmarks.md, mlp-batch). Chosen per fold
# from its rows, which the config does not know.
TABULAR_MLP_RECIPE: dict[str, Any] = {"epochs": 20, "optimizer.lr": 3.0e-3, "batch_size": "auto"}
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


def auto_batch_fits(cfg: Any) -> str | None:
    """Why ``train.batch_size: auto`` does not fit ``cfg`` (an ExperimentConfig), or None:
    the rule was measured on tabular MLPs only; an image or text encoder's batch is bounded
    by its memory, which the rows say nothing about."""
    if cfg.train.batch_size != "auto":
        return None
    kinds = [e.kind for e in cfg.model.encoders]
    if cfg.competition.modality == "tabular" and all(k == "mlp" for k in kinds):
        return None
    other = next((k for k in kinds if k != "mlp"), None)
    what = f"a {other!r} encoder" if other else f"modality {cfg.competition.modality!r}"
    return (f"'train.batch_size' auto sizes the batch of a tabular MLP (modality tabular, "
            f"every encoder 'mlp'); give a number for {what}")
