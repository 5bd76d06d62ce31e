"""Kaggle-style competition pipeline: folds, k-fold training, TTA, blending, submission."""
