"""What can be swept — ``fmbench list`` — as aligned text or as JSON (``fmbench list --json``).

:func:`catalogue` reads the registries (targets, schedules, grids, diffusions, methods, objectives) and the presets:
each factory with its parameters and their defaults, each method with what its declaration says (family, what it
takes, order, options, caveat) and, for a method that needs another library (``Method.requires``: the peers),
whether that library is installed here — checked without importing it. A preset's description is the whole comment
block it opens with. :func:`format_catalogue` writes it as text, each section's columns as wide as its widest entry.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from fmbench import peers  # noqa: F401 — registers the peer adapters
from fmbench.sweepfile import presets
from fmcore.grids import GRIDS
from fmcore.models import OBJECTIVES
from fmcore.schedules import SCHEDULES
from fmcore.solvers import DIFFUSIONS, METHODS, Method
from fmcore.targets import TARGETS

__all__ = ["catalogue", "format_catalogue", "preset_description"]

FACTORIES = {"targets": TARGETS, "schedules": SCHEDULES, "grids": GRIDS, "diffusions": DIFFUSIONS}


def preset_description(path: Path) -> str:
    """The comment block a preset file opens with, as one paragraph (``#`` and line breaks removed)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(part for part in lines if part)


def _takes(method: Method) -> str:
    takes = "rtol/atol" if method.adaptive else "steps" if method.stepping == "own_grid" else "steps or grid"
    return takes + (" + diffusion" if method.diffusion else "")


def _method_entry(method: Method) -> dict:
    missing = method.missing()
    return {"family": method.family, "takes": _takes(method), "order": method.order, "options": dict(method.options),
            "exact_law": method.exact_law is not None, "caveat": method.caveat,
            "installed": not missing, "missing": missing}


def catalogue() -> dict:
    """Everything a sweep can name, as plain data (what ``fmbench list --json`` prints)."""
    entries: dict = {title: {name: registry.parameters(name) for name in sorted(registry)}
                     for title, registry in FACTORIES.items()}
    entries["methods"] = {name: _method_entry(METHODS[name]) for name in sorted(METHODS)}
    entries["fields"] = ["analytic"] + [f"learned:{objective}" for objective in OBJECTIVES] + ["module:<module>.<factory>"]
    entries["presets"] = {name: preset_description(path) for name, path in presets().items()}
    return entries


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows of cells, each column as wide as its widest cell (the last column left ragged)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [indent + "  ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]).rstrip()
            for row in rows]


def _parameters_text(parameters: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in parameters.items()) or "-"


def _method_row(name: str, entry: dict) -> list[str]:
    order = f"order {entry['order']}" if entry["order"] else ""
    options = ", ".join(f"{key}={value}" for key, value in entry["options"].items())
    installed = "" if entry["installed"] else f"(not installed: {', '.join(entry['missing'])}; fmbench install-peers)"
    return [name, entry["family"], entry["takes"], order, "exact law" if entry["exact_law"] else "", options, installed]


def format_catalogue(entries: dict, width: int | None = None) -> str:
    """The catalogue as text: one section per kind, aligned; preset descriptions wrapped to ``width`` (the
    terminal's by default)."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    lines: list[str] = []
    for title in FACTORIES:
        lines.append(f"{title} (name, parameters with their defaults):")
        lines += _table([[name, _parameters_text(parameters)] for name, parameters in entries[title].items()])
    lines.append("methods (name, family, takes, order, exact law on Gaussians, options, availability):")
    lines += _table([_method_row(name, entry) for name, entry in entries["methods"].items()])
    lines.append("fields: " + ", ".join(entries["fields"]))
    lines.append("presets (fmbench run NAME):")
    name_width = max(len(name) for name in entries["presets"])
    for name, description in entries["presets"].items():
        wrapped = textwrap.wrap(description, width=max(40, width - name_width - 4)) or [""]
        lines.append(f"  {name.ljust(name_width)}  {wrapped[0]}")
        lines += [" " * (name_width + 4) + line for line in wrapped[1:]]
    return "\n".join(lines) + "\n"
