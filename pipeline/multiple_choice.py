"""Multiple choice (``model.option_columns``): which config can read a row's options one by
one, and which option is which class. The options' token inputs are made in
:mod:`pipeline.data.option_tokens`; the head scores each option (:mod:`pipeline.models.network`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.errors import DataError

_KEY = "'model.option_columns'"


def options_fit(cfg: Any) -> str | None:
    """Why the experiment config ``cfg`` cannot score ``model.option_columns`` one by one, or
    None (a rule of :mod:`pipeline.config`, which imports this module: ``cfg`` untyped here
    keeps the imports one way)."""
    options, comp = cfg.model.option_columns, cfg.competition
    if not options:
        return None
    outside = [c for c in options if c not in comp.text_columns]
    if outside:
        return (f"{_KEY} {outside} must be among 'competition.text_columns' "
                f"{comp.text_columns}: the options are texts the model reads")
    if len(options) < 2 or len(set(options)) < len(options):
        return f"{_KEY} needs two or more distinct columns. Got {options}."
    if comp.task != "multiclass":
        return (f"{_KEY}: multiple choice is a multiclass task (a class per option); got "
                f"task {comp.task!r} ('competition.task')")
    if [e.kind for e in cfg.model.encoders] != ["hf"]:
        return (f"{_KEY} needs one 'hf:' encoder alone (it reads each option with the "
                f"question); got {[e.name for e in cfg.model.encoders]}")
    mixed = {"'model.multitask'": cfg.model.multitask is not None,
             "'competition.aux_targets'": bool(comp.aux_targets),
             "'train.aux_losses'": bool(cfg.train.aux_losses),
             "'train.consistency'": cfg.train.consistency is not None}
    used = [key for key, on in mixed.items() if on]
    if used:
        return (f"{_KEY}: one head scores each option's features; {used[0]} needs the "
                "features of whole rows")
    return None


def ordered_options(options: list[str], classes: Sequence[Any]) -> list[str]:
    """``options`` in the order of ``classes`` (the prediction columns): by name where the
    classes are the option columns' names (LLM Science Exam's A..E), else by position,
    the i-th class in sorted order being the i-th option listed (SWAG's 0..3 for
    ending0..ending3). Refused where the counts differ or only some names match."""
    if not options:
        return []
    names = [str(c) for c in classes]
    if len(names) != len(options):
        raise DataError(
            f"{_KEY} lists {len(options)} options but the target has {len(names)} classes "
            f"{names[:10]}: each class is one option (the right option's column name, or "
            "its position), and every option must be the answer of some train row")
    if set(names) == set(options):
        return names
    if set(names) & set(options):
        raise DataError(f"{_KEY} {options}: the target's classes {names} name only some of "
                        "them; give the option columns whose names the target holds")
    return list(options)
