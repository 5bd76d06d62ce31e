"""The base of every config section: frozen, and unknown keys refused.

Each section lives beside the part it configures (``CompetitionConfig`` in
:mod:`pipeline.competition`, ``EncoderConfig`` in :mod:`pipeline.models.encoders`, ...);
:mod:`pipeline.config` only composes them into an experiment.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: immutable once validated; a misspelt key is an error, not a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
