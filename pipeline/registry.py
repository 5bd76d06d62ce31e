"""A generic name -> part registry, one instance per kind of part (losses, metrics, ...)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered part: its config name, the object itself and a one-line description."""

    name: str
    obj: T
    description: str = ""
    flags: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps config names to parts; unknown names fail with the list of known ones.

    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("l1")
    ... def l1(a, b):
    ...     return abs(a - b)
    >>> LOSSES.get("l1")(3, 1)
    2
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, description: str = "", **flags: Any
    ) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description, **flags)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str = "", **flags: Any) -> None:
        """Register ``obj`` under ``name``; a name may be registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not description and obj.__doc__:
            description = obj.__doc__.strip().splitlines()[0]
        self._entries[name] = Entry(name, obj, description, dict(flags))

    def entry(self, name: str) -> Entry[T]:
        """The entry registered under ``name``; KeyError lists close and known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def get(self, name: str) -> T:
        """The part registered under ``name``."""
        return self.entry(name).obj

    def unknown_message(self, name: str) -> str:
        """Error text for an unknown name: close matches first, then every known name."""
        close = difflib.get_close_matches(name, self._entries, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}."

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
