"""A name -> plug-in registry that raises on unknown names (never a silent fallback)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from cvtransfer.errors import ConfigError, unknown_name
from cvtransfer.options import declare

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one kind (tasks, strategies, loss terms, scores), registered by name.

    A plug-in with an ``options`` dataclass has its settings added to the Config on registration.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            options = getattr(obj, "options", None)
            if isinstance(options, type):
                declare(self.kind, name, options)
            return obj

        return add

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``; unknown names raise with the closest matches."""
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


def import_modules(package: str, path: Iterable[str], first: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (``first`` in that order, then the rest by name) so each registers.

    A plug-in package's ``__init__`` calls this: a new plug-in is one new file, no list to edit.
    """
    names = sorted(info.name for info in pkgutil.iter_modules(list(path)) if not info.name.startswith("_"))
    for name in [*first, *(n for n in names if n not in first)]:
        importlib.import_module(f"{package}.{name}")
