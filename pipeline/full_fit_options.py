"""Which configs 'train.full_fit' (a model per seed trained on every train row after the
folds, :mod:`pipeline.full_fit`) can train, checked at config load: a combination it cannot
train faithfully is refused in one line rather than half-supported."""

from __future__ import annotations

from typing import Any

from pipeline.data.splits import SPLITTERS

# ``cfg`` below is a pipeline.config.ExperimentConfig, typed Any: the config module runs
# these rules, and an import back would close a circle

# what each refused key does that a model without held-out rows cannot
_REFUSED = {
    "pseudo": "each fold trains on pseudo-labels made for it by the source's other folds; "
              "a model of every row has no such labels of its own",
    "train.consistency": "it trains on the test rows and picks its passes on held-out rows",
    "train.ensemble": "its members are predicted and gathered fold by fold",
    "train.swa": "it averages weights from an epoch on, which the folds' chosen length cuts",
    "train.snapshots": "they average the recipe's restart cycles, which the folds' chosen "
                       "length cuts",
}


def full_fit_problem(cfg: Any) -> str | None:
    """Why ``cfg``'s ``train.full_fit`` cannot be trained, or None. (``full_fit_combine``
    alone is no error: a resolved ``config.yaml`` holds it, and it loads again.)"""
    train = cfg.train
    if not train.full_fit:
        return None
    used = {"pseudo": cfg.pseudo is not None, "train.consistency": train.consistency is not None,
            "train.ensemble": train.ensemble is not None, "train.swa": train.swa is not None,
            "train.snapshots": train.snapshots}
    for key, on in used.items():
        if on:
            return f"'train.full_fit' cannot be combined with '{key}': {_REFUSED[key]}"
    plateau = next((i for i, stage in enumerate(train.resolved_stages)
                    if stage.scheduler.name == "plateau"), None)
    if plateau is not None and not cfg.model.is_sklearn:
        return (f"'train.full_fit' cannot be combined with '{train.stage_key(plateau)}"
                ".scheduler' plateau: its learning rate drops when the held-out score stalls, "
                "and a model of every row has no held-out rows")
    if SPLITTERS.get(cfg.folds.scheme).uses_time:
        return (f"'train.full_fit' cannot be combined with 'folds.scheme: {cfg.folds.scheme}': "
                "its folds train on growing stretches of time, so no length read from them "
                "fits a model of every row")
    return None
