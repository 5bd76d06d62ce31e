"""The work of one (seed, fold): fit a network or a scikit-learn model on the other folds,
and predict the held-out fold and the test set. The train and predict stages schedule these
jobs; the jobs read and write only their own fold folder (:func:`pipeline.runs.fold_dir`)."""

from __future__ import annotations

from pipeline.jobs.inputs import FoldPrep, fold_prep
from pipeline.jobs.network import train_network_fold
from pipeline.jobs.predict import predict_fold
from pipeline.jobs.sklearn import train_sklearn_fold

__all__ = ["FoldPrep", "fold_prep", "predict_fold", "train_network_fold", "train_sklearn_fold"]
