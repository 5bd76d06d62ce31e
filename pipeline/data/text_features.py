"""Free-text columns of a table as features of the tabular members: TF-IDF per column
(scikit-learn's ``TfidfVectorizer``), fitted on a fold's training rows only.

A table's text column (a product description, a review, a listing's title:
``competition.text_columns``) is what a grandmaster's first tabular model reads through
TF-IDF: a linear model takes the sparse TF-IDF columns as they are (each word or word pair a
column); trees and the MLP, which need dense columns, take the TF-IDF matrix's first
``components`` directions (``TruncatedSVD``, latent semantic analysis). Members with a text
encoder of their own (``hf:``) read the text there instead.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, field_validator
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion

from pipeline.schema import Section

log = logging.getLogger(__name__)


class TextFeaturesConfig(Section):
    """``model.tabular.text``: how the tabular members read ``competition.text_columns``."""

    max_features: int = Field(20000, ge=1)  # the vocabulary of each column, most frequent first
    ngrams: int = Field(2, ge=1, le=6)  # n-grams of 1..ngrams words (or characters)
    # 'char_wb': character n-grams within words (names, codes, misspelt short texts)
    analyzer: Literal["word", "char_wb"] = "word"
    min_df: int = Field(2, ge=1)  # a term in fewer training rows is no column
    # analyzer 'word': character 2..char_ngrams-grams within words (char_wb, max_features
    # more terms) beside the word n-grams; 0: the words alone (the default before 2026-11-29).
    # Word pieces read a misspelling, an inflection or a rare word a whole-word vocabulary
    # misses: held-out ROC AUC +0.025 (logistic regression, every split seed) and +0.033
    # (LightGBM) on Rotten Tomatoes reviews, log loss -0.07 (logistic regression) on a
    # 3-class set (docs/benchmarks.md, "TF-IDF tokens"); the TF-IDF fit takes ~5x the time
    # and its matrix ~10x the memory
    char_ngrams: int = Field(5, ge=0, le=8)
    # dense columns per text column for the members that need them (trees, the MLP);
    # linear 'sklearn:' members read the sparse TF-IDF columns themselves
    components: int = Field(64, ge=1)

    @field_validator("char_ngrams")
    @classmethod
    def _char_range(cls, value: int) -> int:
        if value == 1:
            raise ValueError("'char_ngrams' must be 0 (words alone) or in [2, 8] (character "
                             "2..char_ngrams-grams beside the words). Got 1.")
        return value


# Chinese and Japanese (kana, CJK ideographs): written without spaces between words, so a
# word analyzer reads whole phrases there
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
_PHRASE_LENGTH = 6  # characters a 'word' averages where the script has no spaces
# characters of a column's training rows past which its character n-grams are left out: their
# TF-IDF matrix took ~10x the words' memory (18M characters: +680 MiB at the fit's peak), so
# a table of millions of long texts would take tens of GB beside the words alone
CHAR_BUDGET = 100_000_000


def unspaced(texts: list[str]) -> bool:
    """Whether ``texts`` are mostly in a script written without spaces (Chinese, Japanese)
    and not split into words: scikit-learn's word tokens are then whole
    phrases, nearly each one seen once (a Chinese probe: CV accuracy 0.60 read by words,
    0.90 by characters). Text split by spaces (segmented Chinese) reads as words."""
    sample = " ".join(texts[:: max(1, len(texts) // 500)])
    letters = sum(ch.isalpha() for ch in sample)
    if not letters or len(_UNSPACED.findall(sample)) < 0.3 * letters:
        return False
    words = _WORD.findall(sample)
    return bool(words) and sum(map(len, words)) / len(words) > _PHRASE_LENGTH


def text_values(column: pd.Series) -> list[str]:
    """A text column's cells as strings, a missing cell as the empty text."""
    return column.fillna("").astype(str).tolist()


_OVER_BUDGET: set[str] = set()  # columns whose character n-grams were left out, said once


class TfidfColumns(TransformerMixin, BaseEstimator):
    """TF-IDF of each text column (sublinear term frequencies), then, when ``dense``, its
    ``components`` SVD directions (a column with a vocabulary that small keeps its TF-IDF
    columns). Under ``analyzer='word'`` with ``char_ngrams``, each column's words and its
    character 2..``char_ngrams``-grams within words are one TF-IDF matrix (terms named
    ``word__...`` and ``char__...``). A column without a single term in the training rows gives
    no column, with a warning. Output: the columns side by side, sparse unless ``dense``."""

    def __init__(self, max_features: int = 20000, ngrams: int = 2, analyzer: str = "word",
                 min_df: int = 2, components: int = 64, dense: bool = True,
                 seed: int = 0, char_ngrams: int = 5) -> None:
        self.max_features = max_features
        self.ngrams = ngrams
        self.analyzer = analyzer
        self.min_df = min_df
        self.components = components
        self.dense = dense
        self.seed = seed
        self.char_ngrams = char_ngrams

    @classmethod
    def from_config(cls, cfg: TextFeaturesConfig, dense: bool, seed: int) -> TfidfColumns:
        return cls(cfg.max_features, cfg.ngrams, cfg.analyzer, cfg.min_df, cfg.components,
                   dense, seed, cfg.char_ngrams)

    def _vectorizer(self, analyzer: str, ngrams: int, rows: int, chars: int = 5) -> Any:
        kw: dict[str, Any] = dict(max_features=self.max_features, min_df=min(self.min_df, rows),
                                  sublinear_tf=True, dtype=np.float32)
        words = TfidfVectorizer(ngram_range=(1, ngrams), analyzer=analyzer, **kw)
        if analyzer != "word" or not chars:
            return words
        return FeatureUnion([("word", words), ("char", TfidfVectorizer(
            ngram_range=(2, chars), analyzer="char_wb", **kw))])

    def fit(self, X: pd.DataFrame, y: Any = None) -> TfidfColumns:
        self.fit_transform(X)
        return self

    def fit_transform(self, X: pd.DataFrame, y: Any = None, **_: Any) -> Any:
        self.columns_ = list(X.columns)
        self.vectorizers_: list[TfidfVectorizer | FeatureUnion | None] = []
        self.svds_: list[TruncatedSVD | None] = []
        self.names_: list[str] = []
        blocks = []
        for col in self.columns_:
            texts = text_values(X[col])
            analyzer, ngrams = self.analyzer, self.ngrams
            if analyzer == "word" and unspaced(texts):
                analyzer, ngrams = "char_wb", max(ngrams, 2)
                # said once by the train stage; each fold's columns say it here
                log.debug("text column %r: character 1..%d-grams", col, ngrams)
            vectorizer = self._vectorizer(analyzer, ngrams, max(len(X), 1),
                                          self._char_ngrams(col, texts))
            try:
                matrix = vectorizer.fit_transform(texts)
            except ValueError:  # no term in any training row (or none in min_df rows)
                log.warning("text column %r: no term in %d or more training rows; it gives "
                            "the tabular members no feature", col, self.min_df)
                self.vectorizers_.append(None)
                self.svds_.append(None)
                continue
            svd = None
            if self.dense and matrix.shape[1] > self.components:
                svd = TruncatedSVD(self.components, random_state=self.seed)
                blocks.append(svd.fit_transform(matrix).astype(np.float32))
                self.names_ += [f"{col}:svd{k}" for k in range(self.components)]
            else:
                blocks.append(matrix.toarray() if self.dense else matrix)
                self.names_ += [f"{col}:{term}" for term in vectorizer.get_feature_names_out()]
            self.vectorizers_.append(vectorizer)
            self.svds_.append(svd)
        return self._joined(blocks, len(X))

    def _char_ngrams(self, col: str, texts: list[str]) -> int:
        """``char_ngrams``, or 0 past :data:`CHAR_BUDGET` characters (said once a column)."""
        chars = getattr(self, "char_ngrams", 0)  # unpickled from a release before: none
        size = sum(map(len, texts))
        if not chars or size <= CHAR_BUDGET:
            return chars
        if col not in _OVER_BUDGET:
            _OVER_BUDGET.add(col)
            log.warning("text column %r: %.0fM characters in a fold's training rows; its "
                        "character n-grams are left out (their TF-IDF would take about 10x "
                        "the words' memory), the words kept", col, size / 1e6)
        return 0

    def transform(self, X: pd.DataFrame) -> Any:
        blocks = []
        for col, vectorizer, svd in zip(self.columns_, self.vectorizers_, self.svds_,
                                        strict=True):
            if vectorizer is None:
                continue
            matrix = vectorizer.transform(text_values(X[col]))
            if svd is not None:
                blocks.append(svd.transform(matrix).astype(np.float32))
            else:
                blocks.append(matrix.toarray() if self.dense else matrix)
        return self._joined(blocks, len(X))

    def _joined(self, blocks: list[Any], n: int) -> Any:
        if not blocks:
            return np.zeros((n, 0), np.float32) if self.dense else sp.csr_matrix((n, 0))
        return np.hstack(blocks) if self.dense else sp.hstack(blocks, format="csr")

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.names_, dtype=object)
