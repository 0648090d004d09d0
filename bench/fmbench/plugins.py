"""The user's plugins: modules a sweep file names, imported before the sweep is checked and in every worker.

A sweep file's ``plugins`` list holds two kinds of entry:

* a **path** — ending in ``.py`` (a module) or naming a folder with an ``__init__.py`` (a package), relative to the
  sweep file's folder or absolute: ``plugins = ["samplers.py", "plugins/mypackage"]``. That file, and only it, is
  imported (under a private module name, ``fmbench_plugin_<stem>_<hash of its path>``, so it can never take the
  place of an installed module);
* a **module name** — ``plugins = ["mypackage.samplers"]`` — imported as Python finds it (installed, or on
  ``PYTHONPATH``).

Nothing is put on ``sys.path``: a module that sits beside the sweep file but is not listed never runs, even when
its name is that of a module the run imports (a ``distributed.py`` or ``torchode.py`` there stays a file).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path


class PluginError(ValueError):
    """A plugin entry that names nothing importable, or whose import failed."""


def is_path_entry(entry: str) -> bool:
    """A plugin entry is a path when it ends in ``.py`` or holds a path separator; otherwise a module name."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def resolve_plugin(entry: str, folder: Path | None) -> str:
    """The entry as every process can load it: a path entry made absolute (relative to ``folder``, the sweep file's),
    checked to exist; a module name as it is."""
    if not is_path_entry(entry):
        return entry
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = (folder or Path.cwd()) / path
    path = path.resolve()
    if path.is_dir() and not (path / "__init__.py").is_file():
        raise PluginError(f"plugin {entry!r}: the folder {path} is not a package (it has no __init__.py)")
    if not path.exists():
        raise PluginError(f"plugin {entry!r}: {path} does not exist (a path entry is relative to the sweep file's folder)")
    return str(path)


def module_name(path: Path) -> str:
    """The private name a path plugin is imported under."""
    stem = path.stem if path.is_file() else path.name
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"fmbench_plugin_{''.join(c if c.isalnum() else '_' for c in stem)}_{digest}"


def load_plugin(entry: str) -> object:
    """Import a plugin entry (:func:`resolve_plugin`'s form) once per process; return its module."""
    if not is_path_entry(entry):
        return importlib.import_module(entry)
    path = Path(entry)
    name = module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {entry!r} cannot be imported: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def plugin_source(entry: str) -> Path | None:
    """Where a plugin's source is: its package folder or its module file (None when it has no file)."""
    if is_path_entry(entry):
        return Path(entry)
    try:
        spec = importlib.util.find_spec(entry)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin).resolve()
    return origin.parent if spec.submodule_search_locations else origin


def import_plugins(entries: list[str], folder: Path | None = None) -> tuple[str, ...]:
    """Import every plugin entry (paths relative to ``folder``); return them in the form workers load
    (:func:`resolve_plugin`). Raises :class:`PluginError` naming the entry that failed."""
    resolved = []
    for entry in entries:
        where = resolve_plugin(entry, folder)
        try:
            load_plugin(where)
        except ModuleNotFoundError as error:
            beside = folder / f"{entry}.py" if folder is not None and not is_path_entry(entry) else None
            hint = (f"; to import the file beside the sweep file, write its path: plugins = [\"{entry}.py\"]"
                    if beside is not None and beside.exists() else "")
            raise PluginError(f"plugin {entry!r} could not be imported: {error}{hint}") from None
        except Exception as error:  # noqa: BLE001 — any failure to import is the user's plugin's, said plainly
            raise PluginError(f"plugin {entry!r} could not be imported: {type(error).__name__}: {error}") from None
        resolved.append(where)
    return tuple(resolved)
