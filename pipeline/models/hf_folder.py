"""The folder of an ``hf:<dir>`` / ``rows_text:<dir>`` encoder, checked before a run writes
anything: a folder that is no transformers model folder (a Kaggle dataset's top folder above
the one ``save_pretrained`` wrote, a sentence-transformers package) ended the run in a
traceback ("Unrecognized model in ... Should have a `model_type` key in its config.json")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

_SHOWN = 3  # model folders named in the hint


def hf_folder(name: str, target: str) -> str:
    """``target``, the folder encoder ``name`` loads, when it holds a config.json; else a
    one-line error naming the folders just below it that hold one, if any."""
    folder = Path(target)
    if not folder.is_dir():
        raise ConfigError(f"encoder {name!r}: directory {target} not found")
    if (folder / "config.json").is_file():
        return target
    raise ConfigError(f"encoder {name!r}: {target} holds no config.json, so it is no "
                      f"transformers model folder{_below(name, folder)}")


def _below(name: str, folder: Path) -> str:
    kind = name.split(":", 1)[0]
    below = sorted(p.parent for p in folder.glob("*/config.json"))
    if not below:
        return "; name the folder save_pretrained wrote (config.json, weights, tokenizer files)"
    return "; a model folder below it: " + ", ".join(f"'{kind}:{p.as_posix()}'"
                                                     for p in below[:_SHOWN])


def folder_config(name: str, target: str, params: dict[str, Any]) -> Any:
    """The transformers config of the model folder ``target``; one that transformers cannot
    read (a config.json of another library) is a one-line error."""
    from transformers import AutoConfig

    folder = hf_folder(name, target)
    try:
        return AutoConfig.from_pretrained(folder, **params)
    except (ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"encoder {name!r}: transformers cannot read {target} as a model "
                          f"folder ({first}){_below(name, Path(target))}") from None
