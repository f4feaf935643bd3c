"""A tiny name -> object registry with helpful misses.

A registry is a dict plus ``register(name)``. Looking up an unknown name raises a
``KeyError`` that lists the known names and the closest match, so a typo in a config
or on the command line tells the user what to type instead.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A registry miss. Subclasses ``KeyError`` but prints its message without quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to objects (classes, functions) of one kind.

    Example:
        >>> IMPORTANCES = Registry("importance")
        >>> @IMPORTANCES.register("l1")
        ... def make_l1(): ...
        >>> IMPORTANCES.get("l1") is make_l1
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is an error."""

        def wrap(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> T:
        """Returns the object registered as ``name`` or raises a helpful ``UnknownNameError``."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, self._items)) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


def unknown_name_message(kind: str, name: str, known: "dict | list | set") -> str:
    """Builds 'unknown X 'foo'; did you mean 'fo'? Known: ...' for any lookup miss."""
    known_names = sorted(known)
    close = difflib.get_close_matches(str(name), known_names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known {kind} names: {', '.join(known_names)}"
