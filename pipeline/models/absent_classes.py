"""A class the fold's training rows lack, in a whole model's (scikit-learn, GBDT) class
probabilities.

Such a model knows only the classes it was fitted on, so its predictions hold 0 for the
others: a class of one train row is absent from the training rows of exactly the fold that
validates that row. Under log loss a 0 for the true class costs the clip constant (about 34.5
for one row: +0.017 on a 2,000-row OOF, +0.086 on that fold's 400 rows, as a probe of
generated listings measured), so the CV and every blend tuned on the OOF read one row's
clip. The absent class gets instead what a model that saw it in none of ``rows`` rows can
claim, Laplace's rule of succession, 1 / (rows + classes), the present ones the rest.
"""

from __future__ import annotations

import numpy as np


def floor_absent(full: np.ndarray, present: np.ndarray, rows: int) -> np.ndarray:
    """``full`` (rows x classes, probabilities of the ``present`` class columns, 0 elsewhere)
    with each absent class at ``1 / (rows + classes)`` and the present ones scaled to the
    rest, so each row still sums to 1. Unchanged where every class is present.

    >>> floor_absent(np.array([[0.25, 0.75, 0.0]]), np.array([0, 1]), rows=7)
    array([[0.225, 0.675, 0.1  ]])
    """
    n_classes = full.shape[1]
    absent = np.setdiff1d(np.arange(n_classes), present)
    if not len(absent):
        return full
    floor = 1.0 / (max(rows, 0) + n_classes)
    out = full * (1.0 - floor * len(absent))
    out[:, absent] = floor
    return out
