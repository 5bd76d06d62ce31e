"""The seed a (seed, fold) job draws every random number from."""

from __future__ import annotations

from pipeline.runs import FULL_FIT

# a full model's fold number in the seed: no fold of fewer than 999 folds shares it, and a
# negative seed (seed 0's -1) is refused by libraries (CatBoost's random_seed)
_FULL_FIT_SEED = 999


def job_seed(seed: int, fold: int) -> int:
    """``seed * 1000 + fold`` (a full model, fold :data:`FULL_FIT`: ``seed * 1000 + 999``).

    >>> job_seed(2, 3), job_seed(0, FULL_FIT)
    (2003, 999)
    """
    return seed * 1000 + (_FULL_FIT_SEED if fold == FULL_FIT else fold)
