"""A later training stage's ``optimizer``, ``scheduler`` and ``loss``: the keys it names over
the stage before's.

A stage replaced the section whole: ``stages: [{epochs: 2, optimizer: {lr: 1.0e-4}}]`` after
an SGD recipe with momentum 0.9 fine-tuned with AdamW at the schema's weight decay, and a
stage's ``scheduler: {warmup_epochs: 0}`` dropped the recipe's ``min_lr_ratio``, without a
word; the stage's docstring said that keys left out carry over. They do now, key by key (a
``params`` mapping key by key too), while the stage names the same optimizer, schedule or
loss as the stage before (or none); naming another starts from that one's defaults, since
the old one's keys need not fit it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pipeline.schema import Section

S = TypeVar("S", bound=Section)

SECTIONS = ("optimizer", "scheduler", "loss")


def carried_over(previous: S, given: S | None) -> S:
    """The section a stage trains with: ``given``'s keys over ``previous``'s (``previous``
    itself where the stage names no such section)."""
    if given is None:
        return previous
    named, before = given.model_dump(exclude_unset=True), previous.model_dump()["name"]
    if named.get("name", before) != before:
        return given  # another optimizer, schedule or loss: none of the old one's keys fit
    merged: dict[str, Any] = previous.model_dump(exclude_unset=True)
    for key, value in named.items():
        old = merged.get(key)
        merged[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) \
            else value
    return type(previous).model_validate(merged)


def carries_keys(train: Any) -> bool:
    """Whether a stage of ``train`` (a TrainConfig, whose module imports this one) takes
    keys it leaves out from the stage before: such a recipe trains other weights than
    releases that replaced the section whole, so its train hash says so
    (:mod:`pipeline.train_hash`)."""
    previous = {name: getattr(train, name) for name in SECTIONS}
    for stage in train.stages:
        for name in SECTIONS:
            given = getattr(stage, name)
            section = carried_over(previous[name], given)
            if given is not None and section.model_dump() != given.model_dump():
                return True
            previous[name] = section
    return False
