"""Reading the YAML files a user writes (an experiment config, a pretrain config, a sweep's
space) into a mapping, with one-line errors naming the file: a file that is missing, empty,
not UTF-8, not YAML, not a mapping, or that gives one key twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError


class _RepeatedKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the
    last silently, so a second 'train:' section dropped the first one's keys, and the run
    trained under defaults the config seemed to override. A merge ('<<: *base') may still
    be overridden by the mapping's own keys, as YAML means it to."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _RepeatedKey(key, seen[key], line)
            except TypeError:  # an unhashable key: PyYAML's own error says so below
                continue
            seen[key] = line
        return super().construct_mapping(node, deep)


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's message in one line: its problem, where, and what it was parsing (its own
    text spans five lines, with the file's line quoted and a caret under the column)."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if not problem or mark is None:
        return " ".join(str(err).split())
    context = getattr(err, "context", None)
    return (f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
            + (f" ({context})" if context else ""))


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping a YAML file holds (a config, a pretrain config, a sweep's space); a missing
    or empty file, text that is not UTF-8 or not YAML, another top-level type, or a key given
    twice in one mapping is a one-line ConfigError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({err.reason} at byte "
                          f"{err.start}): save it as UTF-8") from None
    except _RepeatedKey as err:
        raise ConfigError(f"{what} {path}: key {err.key!r} is given twice in one mapping "
                          f"(lines {err.first} and {err.second}); YAML would keep only the "
                          "last: merge them into one") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {_one_line(err)}") from None
    if data is None:  # nothing but comments: 'Field required' for every key said less
        raise ConfigError(f"{what} {path} is empty")
    if not isinstance(data, dict):  # a scalar too ('0' read as {} was 'Field required')
        raise ConfigError(f"{what} {path} must hold a mapping at the top level (key: value "
                          f"lines). Got a {type(data).__name__}.")
    return data
