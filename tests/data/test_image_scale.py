"""The warning for images upscaled to the default model.image_size
(pipeline/data/image_scale.py)."""

from __future__ import annotations

import logging

from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.train import prepare


def _warnings(data: dict, caplog) -> list[str]:
    cfg = build_config(data)
    with caplog.at_level(logging.WARNING):
        prepare(cfg, load_competition(cfg.competition))
    return [r.getMessage() for r in caplog.records if "'model.image_size'" in r.getMessage()]


def test_images_upscaled_to_the_default_size_are_said(competition_factory, caplog) -> None:
    """24-px images at the default 224 px: ~87x the compute, and nothing said why a run on
    a few hundred small images took minutes."""
    data = competition_factory("image", "binary")
    data["model"].pop("image_size")
    [said] = _warnings(data, caplog)
    assert "every image, at most 24 px, is upscaled to the default 224 px, ~87x" in said
    assert "set model.image_size (e.g. 32)" in said


def test_an_image_size_the_config_gives_is_not_questioned(competition_factory, caplog) -> None:
    data = competition_factory("image", "binary")
    data["model"]["image_size"] = 224  # upscaling on purpose (pretrained weights)
    assert _warnings(data, caplog) == []
