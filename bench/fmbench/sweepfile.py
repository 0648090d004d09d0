"""Sweep files: a TOML file (or a named preset) expanded to a list of cells, and checked whole before any runs.

A sweep file has a ``[sweep]`` table of axes (lists) and fixed values, and optional ``[[solver]]`` entries
that say which step counts or tolerances go with which method; the cells are the product of the ``[sweep]``
axes with each ``[[solver]]`` entry's axes (an entry's value replaces the ``[sweep]`` value of the same key)::

    [sweep]
    target = ["seed000", "gaussian"]
    schedule = ["cond_ot", "cosine"]
    dtype = ["float64"]
    n = 2000
    target_params = { gaussian = { d = 8 } }

    [[solver]]
    method = ["euler", "heun", "rk4"]
    steps = [4, 8, 16, 32]

    [[solver]]
    method = ["euler_maruyama"]
    steps = [32]
    diffusion = ["constant"]
    diffusion_params = { constant = { c = 0.5 } }

A top-level ``plugins = ["samplers.py", "mypackage.samplers"]`` names modules to import before the sweep is checked
(and in every worker before a cell runs): a module that registers a method (``fmcore.solvers.register_method``), a
tableau (``register_tableau``), a target or a schedule makes it available by name to the sweep. An entry is a path
(a ``.py`` file or a package folder, relative to the sweep file) or the name of an installed module; nothing else
beside the sweep file is ever imported (:mod:`fmbench.plugins`).

A top-level ``time_limit_s = 600`` sets each cell's time limit (``fmbench run --time-limit`` overrides it;
:mod:`fmbench.faults`).

Parameter maps (``target_params``, ``schedule_params``, ``diffusion_params``, ``method_params``, ``grid_params``) map a
name to its parameters; ``grid_params = { uniform = { t1 = 0.99 } }`` stops the sampler early, at t = 0.99.
They work the same in ``[sweep]`` and in a ``[[solver]]`` entry; an entry's map is merged over the sweep's
(name by name). A name in a map that is not registered is an error (a typo would otherwise be ignored).

:func:`check_cells` validates every cell against the registries before any cell runs and raises
:class:`SweepError` listing each distinct problem once (with how many cells have it): nothing is pruned
silently, and nothing runs until the file is right.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections import Counter
from dataclasses import fields
from pathlib import Path

from fmbench.cells import AUTOCAST, DTYPES, CellSpec, grid_arguments
from fmbench.execution import EXECUTIONS
from fmbench.plugins import PluginError, import_plugins
from fmbench.user_models import UserModelError, is_user_model, load_network
from fmcore._registry import unknown_name
from fmcore.grids import GRIDS, get_grid
from fmcore.models import OBJECTIVES
from fmcore.schedules import SCHEDULES
from fmcore.solvers import DIFFUSIONS, METHODS, get_method
from fmcore.targets import TARGETS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PRESETS_DIR = Path(__file__).parent / "presets"
SPEC_FIELDS = {f.name for f in fields(CellSpec)}
AXIS_DEFAULTS = {f.name: f.default for f in fields(CellSpec) if isinstance(f.default, str)}
PARAMETER_MAPS = {"target_params": ("target", TARGETS), "schedule_params": ("schedule", SCHEDULES),
                  "diffusion_params": ("diffusion", DIFFUSIONS), "method_params": ("method", METHODS),
                  "grid_params": ("grid", GRIDS)}
TABLES = {"sweep", "solver", "plugins", "time_limit_s"}


class SweepError(ValueError):
    """A sweep file that cannot run as written; the message lists every problem found."""


def presets() -> dict[str, Path]:
    """Named presets: ``fmbench/presets/<name>.toml``."""
    return {path.stem: path for path in sorted(PRESETS_DIR.glob("*.toml"))}


def load_sweep(source: str | Path) -> dict:
    """A preset name or a path to a TOML file, parsed (a malformed file names its line and column)."""
    path = Path(source)
    if not path.suffix:
        available = presets()
        if str(source) not in available:
            raise SweepError(f"unknown preset {str(source)!r}; presets: {sorted(available)} (or give a path to a .toml file)")
        path = available[str(source)]
    if not path.exists():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SweepError(f"{path} is not valid TOML: {error}") from None
    unknown = sorted(set(config) - TABLES)
    if unknown:
        raise SweepError(f"{path}: unknown table(s) {unknown}; a sweep file has [sweep], [[solver]], plugins and "
                         "time_limit_s only")
    if not isinstance(config.get("solver", []), list):
        raise SweepError(f"{path}: solver entries are written [[solver]] (an array of tables), not [solver]")
    limit = config.get("time_limit_s")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit < math.inf):
        raise SweepError(f"{path}: time_limit_s must be a number of seconds > 0, got {limit!r}")
    names = config.get("plugins", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise SweepError(f"{path}: plugins must be a list of paths or module names, e.g. plugins = [\"samplers.py\"]")
    try:
        config["plugins"] = import_plugins(names, path.parent)
    except PluginError as error:
        raise SweepError(f"{path}: {error}") from None
    return config


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _parameter_maps(table: dict, where: str) -> dict[str, dict]:
    """Pop the parameter maps out of ``table``, checking that each maps registered names to tables."""
    maps = {}
    for key, (axis, registry) in PARAMETER_MAPS.items():
        value = table.pop(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise SweepError(f"{where}: {key} must map {axis} names to tables of parameters, e.g. "
                             f"{key} = {{ name = {{ parameter = 1.0 }} }}; got {value!r}")
        unknown = sorted(set(value) - set(registry))
        if unknown:
            raise SweepError(f"{where}: {key} names unknown {axis}(s) {unknown}; valid names: {sorted(registry)}")
        maps[key] = value
    return maps


def expand(config: dict) -> list[CellSpec]:
    """The cells of a sweep, in order, without duplicates."""
    base = dict(config.get("sweep", {}))
    base_maps = _parameter_maps(base, "[sweep]")
    cells: list[CellSpec] = []
    for index, entry in enumerate(config.get("solver", [{}])):
        entry = dict(entry)
        where = f"[[solver]] entry {index + 1}"
        entry_maps = _parameter_maps(entry, where)
        axes = {**base, **entry}
        unknown = sorted(set(axes) - SPEC_FIELDS)
        if unknown:
            allowed = sorted(SPEC_FIELDS - set(PARAMETER_MAPS)) + sorted(PARAMETER_MAPS)
            raise SweepError(f"{where}: unknown key(s) {unknown}; allowed: {allowed}")
        names = list(axes)
        for values in itertools.product(*(_as_list(axes[name]) for name in names)):
            spec = dict(zip(names, values, strict=True))
            for key, (axis, _) in PARAMETER_MAPS.items():
                name = spec.get(axis, AXIS_DEFAULTS.get(axis))  # e.g. grid_params for the default grid, "uniform"
                spec[key] = {**base_maps[key].get(name, {}), **entry_maps[key].get(name, {})}
            cells.append(CellSpec(**spec))
    unique = {cell.key(): cell for cell in cells}
    return list(unique.values())


# ---------------------------------------------------------------------- checking a whole sweep


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _problems(cell: CellSpec, plugins: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with one cell (an empty list when nothing is); ``plugins`` the sweep's, resolved."""
    problems = []
    for axis, registry in (("target", TARGETS), ("schedule", SCHEDULES), ("grid", GRIDS)):
        name = getattr(cell, axis)
        if not isinstance(name, str) or name not in registry:
            problems.append(unknown_name(axis, name, registry))
    try:
        method = get_method(cell.method)  # also makes a tableau registered by a plugin a method
    except (KeyError, TypeError):
        problems.append(unknown_name("method", cell.method, METHODS, "`fmbench list` shows each with what it takes"))
        method = None
    if is_user_model(cell.field):
        try:
            load_network(cell.field, plugins)
        except UserModelError as error:
            problems.append(str(error))
    elif cell.field != "analytic" and cell.learned_objective() not in OBJECTIVES:
        problems.append(f"field must be 'analytic', 'learned:<objective>' with objective in {list(OBJECTIVES)} or "
                        f"'module:<module>.<factory>' (a user's network), got {cell.field!r}")
    if cell.dtype not in DTYPES:
        problems.append(f"unknown dtype {cell.dtype!r}; valid: {sorted(DTYPES)}")
    if cell.dtype in AUTOCAST and cell.field == "analytic":
        problems.append(f"dtype {cell.dtype!r} (network in {cell.dtype}, state in float32) applies to learned fields "
                        "only: the closed forms are not meaningful in it")
    if cell.execution not in EXECUTIONS:
        problems.append(f"unknown execution {cell.execution!r}; valid: {list(EXECUTIONS)}")
    if not isinstance(cell.device, str) or not (cell.device == "cpu" or cell.device.startswith("cuda")):
        problems.append(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {cell.device!r}")
    for name in ("n", "train_steps"):
        if not _positive_int(getattr(cell, name)):
            problems.append(f"{name} must be an integer ≥ 1, got {getattr(cell, name)!r}")
    if not isinstance(cell.seed, int) or isinstance(cell.seed, bool) or cell.seed < 0:
        problems.append(f"seed must be an integer ≥ 0, got {cell.seed!r}")
    if not isinstance(cell.timing_repeats, int) or isinstance(cell.timing_repeats, bool) or cell.timing_repeats < 0:
        problems.append(f"timing_repeats must be an integer ≥ 0, got {cell.timing_repeats!r}")
    if method is not None:
        problems += _method_problems(cell, method)
    if not problems:
        problems += _build_problems(cell)
    return problems


def _method_problems(cell: CellSpec, method) -> list[str]:
    """What the method's declaration says the cell cannot ask of it."""
    problems = []
    if method.takes_steps:
        if not _positive_int(cell.steps):
            problems.append(f"steps must be an integer ≥ 1 for fixed-step method {cell.method!r}, got {cell.steps!r}")
        if cell.rtol is not None or cell.atol is not None:
            problems.append(f"rtol/atol do not apply to fixed-step method {cell.method!r} (it takes steps)")
    if method.adaptive:
        if cell.steps is not None:
            problems.append(f"steps do not apply to adaptive method {cell.method!r} (it takes rtol/atol)")
        if cell.grid != "uniform":
            problems.append(f"a grid does not apply to adaptive method {cell.method!r}")
        for name in ("rtol", "atol"):
            value = getattr(cell, name)
            if value is not None and not _positive_number(value):
                problems.append(f"{name} must be a number > 0, got {value!r}")
    if method.stepping == "own_grid" and (cell.grid != "uniform" or cell.grid_params):
        problems.append(f"{cell.method!r} runs on its own grid; grid must be 'uniform', without grid_params")
    if method.adaptive and cell.grid_params:
        problems.append(f"grid_params do not apply to adaptive method {cell.method!r}")
    if method.diffusion:
        if cell.diffusion not in DIFFUSIONS:
            problems.append(f"{cell.method!r} needs a diffusion, one of {sorted(DIFFUSIONS)}; got {cell.diffusion!r}")
    elif cell.diffusion is not None:
        problems.append(f"a diffusion applies to reverse-SDE methods only; {cell.method!r} takes none")
    unknown = sorted(set(cell.method_params) - set(method.options))
    if unknown:
        problems.append(f"method {cell.method!r} takes no option(s) {unknown}; its options: {sorted(method.options) or 'none'}")
    for name, value in cell.method_params.items():
        if name in method.options and not (_positive_number(value) or value == 0):
            problems.append(f"method option {name} must be a number ≥ 0, got {value!r}")
    return problems


def _build_problems(cell: CellSpec) -> list[str]:
    """Parameters are checked by building what they parameterise (no sampling), once per distinct name and params."""
    problems = []
    for label, name, params in (("target", cell.target, cell.target_params),
                                ("schedule", cell.schedule, cell.schedule_params),
                                ("diffusion", cell.diffusion, cell.diffusion_params)):
        if name is not None:
            problem = _build_problem(label, name, json.dumps(params, sort_keys=True))
            if problem:
                problems.append(problem)
    if cell.grid_params and not problems:
        problem = _grid_problem(cell.grid, cell.steps, cell.schedule, json.dumps(cell.schedule_params, sort_keys=True),
                                json.dumps(grid_arguments(cell), sort_keys=True))
        if problem:
            problems.append(problem)
    return problems


@functools.lru_cache(maxsize=256)
def _grid_problem(grid: str, steps: int, schedule: str, schedule_json: str, params_json: str) -> str | None:
    """A grid's parameters are checked by building the grid (``steps`` points on the cell's schedule)."""
    params = json.loads(params_json)
    try:
        get_grid(grid, steps, SCHEDULES.build(schedule, **json.loads(schedule_json)), **params)
    except (TypeError, ValueError, MemoryError) as error:
        return f"grid {grid!r} with {params}: {error}"
    return None


@functools.lru_cache(maxsize=256)
def _build_problem(label: str, name: str, params_json: str) -> str | None:
    registry = {"target": TARGETS, "schedule": SCHEDULES, "diffusion": DIFFUSIONS}[label]
    params = json.loads(params_json)
    try:
        registry.build(name, **params)
    except (TypeError, ValueError, OverflowError) as error:
        return f"{label} {name!r} with {params}: {error}"
    except (MemoryError, RuntimeError) as error:  # e.g. the allocator refusing a target of d = 10⁶
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"{label} {name!r} with {params} cannot be built on this machine: {first_line}"
    return None


def check_cells(cells: list[CellSpec], plugins: tuple[str, ...] = ()) -> None:
    """Raise :class:`SweepError` listing every distinct problem (and how many cells have it); return if none.
    ``plugins``: the sweep's, as :func:`load_sweep` resolved them (where a ``module:`` field's module may be)."""
    if not cells:
        raise SweepError("the sweep has no cells")
    counts: Counter[str] = Counter()
    for cell in cells:
        for problem in dict.fromkeys(_problems(cell, plugins)):
            counts[problem] += 1
    if counts:
        lines = [f"  - {problem}  ({count} cell{'s' if count > 1 else ''})" for problem, count in counts.items()]
        raise SweepError(f"the sweep cannot run as written ({len(counts)} problem(s)); nothing was run:\n" + "\n".join(lines))
