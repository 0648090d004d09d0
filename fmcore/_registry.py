"""Registries by name: how a schedule, target, grid or diffusion becomes available as a string.

A new entry is one decorated class or function in its own module; nothing else needs editing.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import TypeVar

Entry = TypeVar("Entry", bound=Callable)


LISTED_NAMES = 15
"""An unknown-name message lists the valid names when there are at most this many."""


def unknown_name(kind: str, name: object, names: Iterable[str], where: str = "") -> str:
    """``unknown <kind> <name>``, the closest valid names ("did you mean"), and the valid names — all of them when
    there are few, else their count and ``where`` they are listed."""
    names = sorted(names)
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    if len(names) <= LISTED_NAMES or not where:
        return f"unknown {kind} {name!r}{hint}; valid names: {names}"
    return f"unknown {kind} {name!r}{hint}; {len(names)} {kind}s are registered: {where}"


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
        """The factory registered as ``name``; ``KeyError`` listing the valid names otherwise."""
        if not isinstance(name, str):
            raise TypeError(f"a {self.kind} name must be a string, got {type(name).__name__} {name!r}")
        if name not in self:
            raise KeyError(unknown_name(self.kind, name, self))
        return self[name]

    structural = ("self", "steps", "schedule", "t0", "t1")
    """Arguments the library itself passes to some factories (grids); not user parameters."""

    def parameters(self, name: str) -> dict[str, object]:
        """The user parameters the factory ``name`` takes, with their defaults (``None`` when required)."""
        signature = inspect.signature(self.lookup(name))
        return {
            parameter.name: (None if parameter.default is inspect.Parameter.empty else parameter.default)
            for parameter in signature.parameters.values()
            if parameter.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            and parameter.name not in self.structural
        }

    def check_parameters(self, name: str, params: dict) -> None:
        """``TypeError`` naming the parameters ``name`` does not take (and those it does)."""
        allowed = self.parameters(name)
        unknown = sorted(set(params) - set(allowed) - set(self.structural))
        if unknown:
            raise TypeError(f"{self.kind} {name!r} takes no parameter(s) {unknown}; its parameters: {sorted(allowed)}")

    def build(self, name: str, *args, **params):
        """Call the factory registered as ``name`` after checking the parameter names; the factory validates values."""
        factory = self.lookup(name)
        self.check_parameters(name, params)
        return factory(*args, **params)
