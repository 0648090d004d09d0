"""Registries by name: how a schedule, target, grid or diffusion becomes available as a string.

A new entry is one decorated class or function in its own module; nothing else needs editing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Entry = TypeVar("Entry", bound=Callable)


class Registry(dict):
    """A ``name → factory`` mapping with a decorator to fill it and a ``build`` that validates the name."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Entry], Entry]:
        """Decorator: register a class or function under ``name`` (a class also gets ``name`` as attribute)."""

        def register(entry: Entry) -> Entry:
            if name in self:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            if isinstance(entry, type):
                entry.name = name
            self[name] = entry
            return entry

        return register

    def lookup(self, name: str) -> Callable:
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {sorted(self)}")
        return self[name]

    def build(self, name: str, *args, **params):
        """Call the factory registered as ``name``; wrong parameters become a ``ValueError`` naming them."""
        factory = self.lookup(name)
        try:
            return factory(*args, **params)
        except TypeError as error:
            raise ValueError(f"bad parameters for {self.kind} {name!r}: {error}") from None
