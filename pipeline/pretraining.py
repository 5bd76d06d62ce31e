"""The pretrain stage: train an encoder without the target on every unlabelled row (train +
test + an optional extra file) and publish it as ``<pretrained_dir>/<name>/``.

Layout of a pretrained folder::

    config.yaml      the resolved pretrain config
    record.json      objective, encoder kind, rows per source, hashes of the input files,
                     the config's identity hash, epochs, loss per epoch, seconds
    ...              what the objective wrote (encoder.pt, a transformers dir, vectors, ...)

The folder is built in ``<pretrained_dir>/.<name>.work/`` (where a killed run resumes, by
epoch) and renamed into place whole. A rerun of the same config on the same files is a
no-op; a different config or changed inputs under an existing name is refused unless
``--overwrite``. ``--export-features DIR`` writes the encoder's features of the train and
test rows as a competition folder (CSV, plus ``features.parquet``) that any member, a
scikit-learn or GBDT one included, trains on with ``competition.dir: DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import Field, SerializeAsAny, ValidationError, field_validator

from pipeline.artifacts import read_json, write_csv, write_json, write_parquet, write_yaml
from pipeline.class_folders import folder_digest
from pipeline.competition import (
    IMAGE_PATH,
    Competition,
    CompetitionConfig,
    load_competition,
)
from pipeline.competition_files import read_csv
from pipeline.config import apply_overrides, format_validation_error, read_yaml_mapping
from pipeline.errors import ConfigError, DataError, MissingArtifactError
from pipeline.output_folders import check_output_folders
from pipeline.pixel_images import pixel_columns, write_pixel_images
from pipeline.pretrain import OBJECTIVES, PretrainData
from pipeline.pretrain._base import RESUME_FILE
from pipeline.schema import Section

log = logging.getLogger("pipeline")
RECORD_FILE = "record.json"
IDENTITY_FILE = "identity.json"  # inside the work folder: which config and inputs it resumes


class PretrainConfig(Section):
    """One pretraining: the rows (a competition section + extra files) and the objective."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    pretrained_dir: str = "pretrained"  # beside runs/, folds/, submissions/
    competition: CompetitionConfig
    extra_unlabelled: str | None = None  # a CSV of more rows with the feature columns
    use_test: bool = True  # test rows are unlabelled data too
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    objective: SerializeAsAny[Section]

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value: Any) -> Any:
        if isinstance(value, Section):
            return value
        if not isinstance(value, dict) or "kind" not in value:
            raise ValueError(f"needs a 'kind': one of {', '.join(OBJECTIVES.list())}")
        kind = value["kind"]
        if kind not in OBJECTIVES:
            raise ValueError(OBJECTIVES.unknown_message(str(kind)))
        return OBJECTIVES.get(kind).config.model_validate(value)

    @property
    def folder(self) -> Path:
        """``<pretrained_dir>/<name>``."""
        return Path(self.pretrained_dir) / self.name

    def config_hash(self) -> str:
        """Hash of what decides the weights (not the name, folder or device)."""
        data = self.model_dump(mode="json")
        for key in ("name", "pretrained_dir", "device"):
            data.pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_pretrain_config(path: str | Path, overrides: list[str] | None = None
                         ) -> PretrainConfig:
    """Read a pretrain YAML, apply ``--set`` overrides and validate it."""
    data = read_yaml_mapping(path)
    cfg = build_pretrain_config(apply_overrides(data, overrides or []), str(path))
    check_output_folders({"'pretrained_dir'": Path(cfg.pretrained_dir)})  # a file: traceback
    return cfg


def build_pretrain_config(data: dict[str, Any], source: str = "<dict>") -> PretrainConfig:
    """Validate plain data; errors name each bad key's dotted path."""
    try:
        return PretrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(
            err, source, "pretrain config", lambda loc: _known_keys(data, loc))) from None


def _known_keys(data: dict[str, Any], loc: tuple[Any, ...]) -> list[str]:
    """The keys of the section holding an unknown key (top level, competition, objective)."""
    section: Any = {(): PretrainConfig, ("competition",): CompetitionConfig}.get(tuple(loc[:-1]))
    objective = data.get("objective")
    if tuple(loc[:-1]) == ("objective",) and isinstance(objective, dict):
        kind = objective.get("kind")
        section = OBJECTIVES.get(kind).config if kind in OBJECTIVES else None
    return list(section.model_fields) if section is not None else []


def _file_hash(path: Path) -> str:
    if path.is_dir():  # a train folder of class folders
        return folder_digest(path)[:16]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _inputs(cfg: PretrainConfig) -> dict[str, Path]:
    root = Path(cfg.competition.dir)
    files = {"train": root / cfg.competition.train_file}
    if cfg.use_test:
        files["test"] = root / cfg.competition.test_file
    if cfg.extra_unlabelled:
        files["extra"] = Path(cfg.extra_unlabelled)
    return files


def _objective_files(cfg: PretrainConfig) -> dict[str, Path]:
    """The local files the objective loads besides the rows (a transformers folder, a timm
    weights file, an edge list or events file), by their dotted key."""
    objective = cfg.objective
    events = getattr(objective, "events", None)
    paths = {"objective.model": getattr(objective, "model", None),
             "objective.weights": getattr(objective, "weights", None),
             "objective.edges": getattr(objective, "edges", None),
             "objective.events.file": getattr(events, "file", None)}
    return {k: Path(p) for k, p in paths.items() if isinstance(p, str) and Path(p).exists()}


def _contents_hash(path: Path) -> str:
    """SHA-256 over the names and contents of a file, or of every file in a folder: the
    config names only the path, so weights re-saved there (another checkpoint copied over)
    found the old pretraining 'up to date', and training runs kept folds made from it."""
    if path.is_file():
        return _file_hash(path)
    digest = hashlib.sha256()
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{_file_hash(file)}\n".encode())
    return digest.hexdigest()[:16]


def _same_identity(done: dict[str, Any], identity: dict[str, Any]) -> bool:
    """Whether a record was made by ``identity``. A record written before the objective's
    own files were hashed lacks their keys: those are not held against it."""
    inputs = done.get("inputs") or {}
    wanted = {k: v for k, v in identity["inputs"].items()
              if not k.startswith("objective.") or k in inputs}
    return done.get("config_hash") == identity["config_hash"] and inputs == wanted


def unlabelled_rows(cfg: PretrainConfig, comp: Competition) -> PretrainData:
    """Train rows without their targets (those kept without one under
    'competition.unlabelled_train_rows: unlabelled' after them), then test rows, then the
    extra file's rows."""
    ccfg = comp.cfg
    labels = [*ccfg.target_columns, *(a.column for a in getattr(ccfg, "aux_targets", []))]
    parts = {"train": comp.train.drop(columns=labels)}
    if comp.unlabelled is not None:  # 'competition.unlabelled_train_rows: unlabelled'
        parts["train_unlabelled"] = comp.unlabelled.drop(columns=labels)
    if cfg.use_test:
        parts["test"] = comp.test
    if cfg.extra_unlabelled:
        extra = read_csv(Path(cfg.extra_unlabelled), "extra unlabelled", ccfg.sep,
                         ccfg.encoding, texts=ccfg.text_columns, na_values=ccfg.na_values,
                         decimal=ccfg.decimal, thousands=ccfg.thousands, quoting=ccfg.quoting)
        modality = OBJECTIVES.get(cfg.objective.kind).modality  # type: ignore[attr-defined]
        # the columns the objective reads (a sequence objective checks its own)
        needed = {"tabular": comp.feature_columns, "text": list(ccfg.text_columns),
                  "image": [ccfg.image_column] if ccfg.image_column else []}.get(modality, [])
        absent = [c for c in needed if c not in extra.columns]
        if absent:
            raise DataError(f"extra unlabelled file {cfg.extra_unlabelled} lacks columns "
                            f"{absent} ('extra_unlabelled'); it needs {needed}")
        if ccfg.image_column or ccfg.image_path:  # image paths, resolved as load does
            try:
                extra[IMAGE_PATH] = (extra[ccfg.image_column].astype(str) if ccfg.image_column
                                     else [str(ccfg.image_path).format(split="extra", **row)
                                           for row in extra.to_dict(orient="records")])
            except KeyError as err:
                raise DataError(f"extra unlabelled file {cfg.extra_unlabelled}: "
                                f"'competition.image_path' names column {err}, which it "
                                "lacks") from None
        if ccfg.pixels:  # written as load writes train's and test's (on their own range)
            source = Path(cfg.extra_unlabelled)
            columns = pixel_columns(extra, ccfg.pixels, source)
            extra[IMAGE_PATH] = write_pixel_images({"extra": (extra, source)}, columns,
                                                   ccfg.pixels)["extra"]
            extra = extra.drop(columns=columns)
        parts["extra"] = extra.drop(columns=[c for c in labels if c in extra.columns])
    frame = pd.concat(list(parts.values()), ignore_index=True)
    return PretrainData(frame, comp, {k: len(v) for k, v in parts.items()})


def _device(cfg: PretrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run(cfg: PretrainConfig, overwrite: bool = False) -> Path:
    """Pretrain (or resume, or find up to date) and return ``<pretrained_dir>/<name>``."""
    folder, work = cfg.folder, Path(cfg.pretrained_dir) / f".{cfg.name}.work"
    files = _inputs(cfg)
    missing = [str(p) for k, p in files.items() if not (p.is_file() or (k == "train"
                                                         and p.is_dir()))]
    if missing:
        raise DataError(f"pretrain inputs not found: {', '.join(missing)}")
    identity = {"config_hash": cfg.config_hash(),
                "inputs": {k: _file_hash(p) for k, p in files.items()}
                | {k: _contents_hash(p) for k, p in _objective_files(cfg).items()}}
    if (folder / RECORD_FILE).is_file():
        done = read_json(folder / RECORD_FILE)
        lost = [a for a in done.get("artifacts", []) if not (folder / a).exists()]
        if _same_identity(done, identity) and not lost:
            log.info("%s: up to date", folder)
            return folder
        if lost:  # a deleted encoder file was reported 'up to date' and failed in training
            log.warning("%s: %s missing; pretraining again", folder, ", ".join(lost))
        elif not overwrite:
            raise ConfigError(f"{folder} holds a pretraining of another config or other "
                              "inputs; pass --overwrite to replace it, or choose another "
                              "'name'")
    elif folder.exists() and not overwrite:
        raise ConfigError(f"{folder} exists but holds no {RECORD_FILE} (not a pretraining); "
                          "pass --overwrite to replace it, or choose another 'name'")
    if work.is_dir() and (not (work / IDENTITY_FILE).is_file()
                          or read_json(work / IDENTITY_FILE) != identity):
        shutil.rmtree(work)  # a cut-off run of another config: nothing to resume
    if (work / RESUME_FILE).is_file():
        log.info("%s: resuming from %s", folder, work / RESUME_FILE)
    made = not work.parent.exists()  # removed again by a refusal
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / IDENTITY_FILE, identity)
    comp = load_competition(cfg.competition)
    data = unlabelled_rows(cfg, comp)
    kind = cfg.objective.kind  # type: ignore[attr-defined]
    objective = OBJECTIVES.get(kind)
    start = time.perf_counter()
    try:
        fitted = objective.fit(cfg.objective, data, work, _device(cfg), cfg.seed)
    except ConfigError:  # it diverged: no resume point worth keeping (a refusal leaves none)
        shutil.rmtree(work, ignore_errors=True)
        if made:
            shutil.rmtree(work.parent, ignore_errors=True)
        raise
    record = {**identity, "name": cfg.name, "objective": kind, "encoder": objective.encoder,
              "modality": objective.modality, "sources": data.sources,
              "rows": len(data.frame), "files": {k: str(p) for k, p in files.items()},
              "epochs": getattr(cfg.objective, "epochs", None), "seed": cfg.seed,
              "seconds": round(time.perf_counter() - start, 2), **fitted}
    write_yaml(work / "config.yaml", cfg.model_dump(mode="json"))
    record["artifacts"] = sorted(f.relative_to(work).as_posix() for f in work.rglob("*")
                                 if f.is_file() and f.name not in (RESUME_FILE, IDENTITY_FILE))
    (work / RESUME_FILE).unlink(missing_ok=True)
    (work / IDENTITY_FILE).unlink()
    write_json(work / RECORD_FILE, record)
    _publish(work, folder)
    log.info("%s: %s pretrained on %d rows %s", folder, kind, len(data.frame), data.sources)
    return folder


def _publish(work: Path, folder: Path) -> None:
    """Rename the finished work folder onto ``folder`` (an old one is moved aside first)."""
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    work.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def read_record(folder: str | Path) -> dict[str, Any]:
    """``record.json`` of a finished pretraining."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        raise MissingArtifactError(f"{path} not found: {folder} is not a finished "
                                   "pretraining (run `pipeline pretrain` first)")
    return dict(read_json(path))


def export_features(cfg: PretrainConfig, out: str | Path, keep_raw: bool = True) -> Path:
    """Write the pretrained encoder's features of the train and test rows as a competition
    folder: ``train.csv`` / ``test.csv`` (id, targets, the raw columns unless
    ``keep_raw`` is false, then ``<name>_f<i>``), the sample submission, and
    ``features.parquet`` (id, split, features)."""
    record = read_record(cfg.folder)
    objective = OBJECTIVES.get(record["objective"])
    if objective.features is None:
        able = [n for n in OBJECTIVES if OBJECTIVES.get(n).features is not None]
        raise ConfigError(f"objective {record['objective']!r} makes no feature table; "
                          f"these do: {', '.join(able)}")
    comp = load_competition(cfg.competition)
    ccfg, out = comp.cfg, Path(out)
    labels = list(ccfg.target_columns)
    tables = {}
    # train rows kept without a target ('unlabelled_train_rows: unlabelled') go out with
    # their targets empty, so the exported competition, under the same option, has them too
    train = comp.train if comp.unlabelled is None else pd.concat(
        [comp.train, comp.unlabelled], ignore_index=True)
    for split, frame in (("train", train), ("test", comp.test)):
        values = objective.features(cfg.folder, frame, _device(cfg))
        feats = pd.DataFrame(values, columns=[f"{cfg.name}_f{i}" for i in range(values.shape[1])])
        keep = [c for c in frame.columns if c != IMAGE_PATH] if keep_raw else [
            ccfg.id_column, *(labels if split == "train" else [])]
        raw = frame[keep].reset_index(drop=True)
        if keep_raw and ccfg.image_column:
            # relative to the old folder they would name no file from DIR: absolute paths
            # keep the export an image competition too (DIR / an absolute path is that path)
            raw[ccfg.image_column] = [str((comp.dir / p).resolve()) for p in frame[IMAGE_PATH]]
        tables[split] = pd.concat([raw, feats], axis=1)
    write_csv(out / "train.csv", tables["train"])
    write_csv(out / "test.csv", tables["test"])
    write_csv(out / "sample_submission.csv", comp.sample_submission)
    both = pd.concat([t.assign(split=s)[[ccfg.id_column, "split", *t.columns[-values.shape[1]:]]]
                      for s, t in tables.items()], ignore_index=True)
    write_parquet(out / "features.parquet", both)
    log.info("%s: %d feature columns for %d train and %d test rows", out, values.shape[1],
             len(tables["train"]), len(tables["test"]))
    return out


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``pipeline pretrain CONFIG``."""
    path = args.config or args.config_opt
    if not path:
        raise ConfigError("no config given: pass CONFIG or --config CONFIG")
    cfg = load_pretrain_config(path, args.overrides)
    folder = run(cfg, overwrite=args.overwrite)
    print(folder)
    if args.export_features:
        print(export_features(cfg, args.export_features, keep_raw=not args.features_only))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``pretrain`` to the ``pipeline`` command's subparsers."""
    text = ("train an encoder without the target on train + test (+ extra) rows -> "
            "<pretrained_dir>/<name>/")
    p = sub.add_parser("pretrain", help=text, description=text,
                       epilog="example: pipeline pretrain configs/pretrain_dae.yaml "
                       "--export-features data/dae_features")
    p.add_argument("config", nargs="?", help="pretrain YAML")
    p.add_argument("--config", dest="config_opt", help="pretrain YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config key (dotted path)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a pretraining of another config under the same name")
    p.add_argument("--export-features", metavar="DIR", default=None,
                   help="also write the encoder's features of train and test rows as a "
                   "competition folder (tabular objectives)")
    p.add_argument("--features-only", action="store_true",
                   help="with --export-features: id, targets and features, no raw columns")
    p.set_defaults(fn=cmd_pretrain)
