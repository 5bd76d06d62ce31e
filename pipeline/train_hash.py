"""The train hash: the identity of what decides a run's trained weights, which a fold's
``metrics.json``, the run's ``run.json`` and the predictions record, and every later stage
compares with the config's.

Where the competition's files lie (``competition.dir``) is left out, and the files an encoder
loads count by their own name, not their folder: the files themselves are recorded by content
(:mod:`pipeline.data_files`), so the same data and weights read from another folder train the
same model. A run trained on one machine is predicted in a code competition's
notebook, whose data lies under ``/kaggle/input``; with the folder in the hash that notebook
had to retrain every fold. Runs recorded before (the folders hashed) keep counting as this
config's (:func:`train_hashes`), so an upgrade orphans none of them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePath
from typing import Any

from pipeline.engine.stage_sections import carries_keys
from pipeline.models.encoders import pretrained_record
from pipeline.models.gbdt import LIBRARIES as GBDT_LIBRARIES
from pipeline.models.sklearn import scales_numbers
from pipeline.models.tree_features import ENCODES_HIGH

# ``cfg`` below is a pipeline.config.ExperimentConfig, typed Any: the config module derives its
# hash here, and an import back (for types alone) would close a circle

# how, where and what is written, not what is trained: never hashed
_NOT_HASHED = ("predict", "output_dir", "folds_dir", "submissions_dir", "name", "executor")
# how a fold runs, not what it computes: a resumed fold is the same
_NOT_HASHED_TRAIN = ("num_workers", "resume_every",
                     # what trains beside the folds: a full model records its own length
                     "full_fit", "full_fit_combine")


def compute_train_hash(cfg: Any, legacy: bool = False, source_path: bool = False,
                       folds_name: bool = True) -> str:
    """The train hash of ``cfg``; ``legacy``: as releases before recorded it (the
    competition folder and the encoders' weights paths hashed whole); ``source_path``: with
    the pseudo-label source's path whole, as the release before this one recorded it;
    ``folds_name``: with ``folds.name`` (without: as the default folds name)."""
    data = cfg.model_dump(mode="json", exclude_defaults=True)
    for key in _NOT_HASHED:
        data.pop(key, None)
    for key in _NOT_HASHED_TRAIN:
        data.get("train", {}).pop(key, None)
    if not legacy:
        data.get("competition", {}).pop("dir", None)
        if carries_keys(cfg.train):  # trained otherwise than by releases before
            data["stage_keys_carried"] = 1
        for encoder in data.get("model", {}).get("encoders", []):
            _weights_by_name(encoder)
        # the source run by its own name, as weights are: a pseudo-label round moved with
        # its source (a notebook's /kaggle/working/runs) was another config's, refused by
        # predict. Its labels are recorded by content with each fold (data_files 'pseudo')
        pseudo = data.get("pseudo", {})
        if isinstance(pseudo.get("source"), str) and not source_path:
            pseudo["source"] = PurePath(pseudo["source"]).name
    if not folds_name:
        data.get("folds", {}).pop("name", None)
    # a pretrained encoder's weights shape the run: its identity joins the hash, so a
    # pretraining redone under the same name (--overwrite) is a changed config
    pretrained = {n: {k: pretrained_record(n).get(k) for k in ("config_hash", "inputs")}
                  for n in pretrained_names(cfg)}
    if pretrained:
        data["pretrained"] = pretrained
    # a pair of texts reaches a transformers encoder with its segment ids since format 2
    # of its inputs: a pair run trained before read none, so its folds are not reused
    if len(cfg.competition.text_columns) == 2 and any(
            e.kind == "hf" for e in cfg.model.encoders):
        data["text_pair_inputs"] = 2
    # text columns reach a tabular member as TF-IDF features since format 1 of its
    # inputs: one trained before ignored them, so its folds are not reused
    if cfg.competition.text_columns and cfg.model.reads_tfidf:
        data["tabular_text_inputs"] = _tabular_text_format(cfg, data)
    # an 'sklearn:' member other than trees reads standardised numbers since format 1 of
    # its inputs: one trained before read them raw, so its folds are not reused
    member = cfg.model.encoders[0]
    if member.kind == "sklearn" and scales_numbers(member.target, dict(member.params)):
        data["sklearn_scaled_numbers"] = 1
    # a multiclass whole model gives a class its fold's training rows lack a floor since
    # format 1 of its predictions (pipeline.models.absent_classes): one trained before gave
    # 0, so its folds are not reused
    # (a multilabel one likewise, for a label of one value in the fold's training rows)
    if cfg.competition.task in ("multiclass", "multilabel") and member.kind in (
            "sklearn", *GBDT_LIBRARIES):
        data["absent_class_floor"] = 1
    if member.kind in ENCODES_HIGH:
        _high_cardinality_format(cfg, data)
    return _digest(data)


def _high_cardinality_format(cfg: Any, data: dict[str, Any]) -> None:
    """A LightGBM or XGBoost member gives columns over ``model.tabular.high_cardinality``
    levels as target + count encodings since format 1 of its inputs (the default since
    2026-11-29): one trained on native codes alone is not this one. ``high_cardinality:
    native`` trains what it did before, and keeps its hash (the key left out of ``data``)."""
    if cfg.model.tabular.high_cardinality != "native":
        data["gbdt_high_cardinality"] = 1
        return
    tabular = data.get("model", {}).get("tabular", {})
    tabular.pop("high_cardinality", None)
    if tabular == {}:
        data.get("model", {}).pop("tabular", None)


def _tabular_text_format(cfg: Any, data: dict[str, Any]) -> int:
    """Format 2: the TF-IDF holds character n-grams beside the words (``char_ngrams``, the
    default since 2026-11-29): a run trained on words alone is not this one. A config that
    sets ``char_ngrams: 0`` trains what it did before, and keeps its hash (the key is left
    out of ``data``, as the default it was)."""
    text = cfg.model.tabular.text
    if text.analyzer == "word" and text.char_ngrams:
        return 2
    tabular = data.get("model", {}).get("tabular", {})
    tabular.get("text", {}).pop("char_ngrams", None)
    if tabular.get("text") == {}:
        tabular.pop("text")
    if tabular == {}:
        data["model"].pop("tabular", None)
    return 1


def pretrained_names(cfg: Any) -> list[str]:
    """The pretrainings the model uses: 'pretrained:<name>' encoders and the values of 'mlp'
    encoders' pretrained_embeddings."""
    names = []
    for enc in cfg.model.encoders:
        if enc.name.startswith("pretrained:"):
            names.append(enc.name.split(":", 1)[1])
        if enc.kind == "mlp":
            names += map(str, dict(enc.params.get("pretrained_embeddings") or {}).values())
    return names


def _weights_by_name(encoder: dict[str, Any]) -> None:
    """The files an encoder loads named by their own name, not their folder: weights
    attached to a notebook as a dataset lie under /kaggle/input, trained elsewhere under
    another folder. Their contents are recorded with each fold (``train_weights``, see
    :mod:`pipeline.data_files`): other weights under the name train the folds again."""
    kind, colon, target = str(encoder.get("name", "")).partition(":")
    if colon and kind in ("hf", "rows_text") and target:
        encoder["name"] = f"{kind}:{PurePath(target).name}"
    for key in ("pretrained", "tokenizer"):
        if isinstance(encoder.get(key), str):
            encoder[key] = PurePath(encoder[key]).name


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def train_hashes(cfg: Any, strict: bool = False) -> frozenset[str]:
    """The hashes under which a recorded fold or run is this config's: the train hash, and
    those releases before recorded (the folders hashed; a pseudo-label source's path).
    Unless ``strict`` (the train stage claiming a run folder), a config naming its folds file
    (``folds.name``) also holds the run trained under the default folds name: a notebook's
    competition folder has another name, so the README has it name the file brought along,
    and predict refused every fold as another config's. The folds still count by their rows
    (:mod:`pipeline.data_files` 'folds'); a deliberate ``folds.name`` switch is refused by
    the train stage as another config, not trained again in place."""
    hashes = {cfg.train_hash()}
    if cfg.pseudo is not None:  # recorded with its source's whole path by the release before
        hashes.add(compute_train_hash(cfg, source_path=True))
    if cfg.folds.name and not strict:
        hashes.add(compute_train_hash(cfg, folds_name=False))
    if carries_keys(cfg.train):  # its old runs trained each such stage on other settings
        return frozenset(hashes)
    return frozenset(hashes | {cfg.legacy_train_hash()})
