"""Folds that keep copies together (``folds.copies: together``): train rows that repeat
another row's inputs share that row's fold.

Under the scheme's own split the copies of a row fall where the shuffle puts them, and a fold
model validated on a row has trained on its copy (:mod:`pipeline.data.repeated_rows` says so
when the folds are made). Where the test rows do not repeat train rows as the train rows
repeat one another (a rare class padded with copies, a user who posted twice), that CV
overstates the score on new rows, and so does every choice made on it: the epoch or tree
count early stopping keeps, a blend's weights (a member that memorises looks best). Kept
together, a validation row's copies are never in its fold's training rows.

The copies become groups of the scheme's group-aware splitter: ``kfold`` and ``group`` split
with ``GroupKFold``, ``stratified`` and ``stratified_group`` with ``StratifiedGroupKFold``
(shuffled, seeded). A group column's groups and the copies are joined: two groups that share
a copy become one. ``multilabel`` has no group-aware splitter: one row of each set of copies
is split by it, and its copies follow it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import BaseCrossValidator, GroupKFold, StratifiedGroupKFold

from pipeline.competition import Competition
from pipeline.data.repeated_rows import input_keys

COPIES = ("apart", "together")
# the splitter that keeps groups whole, by the scheme it stands in for (multilabel: none)
GROUPED: dict[str, type[BaseCrossValidator]] = {
    "kfold": GroupKFold, "group": GroupKFold,
    "stratified": StratifiedGroupKFold, "stratified_group": StratifiedGroupKFold,
}


def copy_groups(comp: Competition, groups: np.ndarray | None) -> np.ndarray:
    """A group number per train row: rows with equal inputs share one, and so do the rows of
    a group of ``groups`` (a group column's values, or None); groups linked by a copy join."""
    _, by_input = np.unique(input_keys(comp), return_inverse=True)
    if groups is None:
        return by_input
    by_group = pd.factorize(groups, use_na_sentinel=False)[0]  # a missing group: one
    # rows are linked to their input and to their group: the components of that graph
    n_inputs = int(by_input.max()) + 1
    nodes = n_inputs + int(by_group.max()) + 1
    edges = coo_matrix((np.ones(len(by_input)), (by_input, n_inputs + by_group)),
                       shape=(nodes, nodes))
    _, component = connected_components(edges, directed=False)
    return component[by_input]


def representatives(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each group, and each row's position among them (its group's
    representative), for a splitter without groups: split the representatives, each row
    takes its representative's fold."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return first, inverse


def split_copies(comp: Competition, folds: np.ndarray) -> int:
    """How many train rows have a copy (a row of equal inputs) in another fold: checked on
    every stage that reads a kept folds file, so images are compared by path, not by content
    (reading every image file each time costs what the check is not worth)."""
    frame = pd.DataFrame({"key": input_keys(comp, read_images=False), "fold": folds})
    return int((frame.groupby("key")["fold"].transform("nunique") > 1).sum())
