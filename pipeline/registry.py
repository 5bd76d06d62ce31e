"""A generic name -> part registry, one instance per kind of part (losses, metrics, ...)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered part: its config name, the object itself and a one-line description.

    What a part needs to say about itself (the tasks a loss fits, the inputs an encoder
    reads) belongs in ``obj``, a frozen dataclass of its own, not in loose flags.
    """

    name: str
    obj: T
    description: str = ""


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

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str = "") -> None:
        """Register ``obj`` under ``name``; a name may be registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not description and obj.__doc__:
            description = obj.__doc__.strip().splitlines()[0]
        self._entries[name] = Entry(name, obj, description)

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
