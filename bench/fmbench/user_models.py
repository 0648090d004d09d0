"""A user's trained network in a sweep: ``field = "module:<module>.<factory>"``.

``<module>`` is a module Python can import (installed, or on ``PYTHONPATH``) or the file name, without ``.py``, of a
module the sweep file lists in ``plugins`` (``plugins = ["my_model.py"]`` and ``field = "module:my_model.network"``:
the field string stays the same wherever the files are, so a baseline's cells keep their identity on every machine).
``<factory>`` is a function of no arguments returning a :class:`fmcore.model_field.TrainedNetwork` — the network,
what it predicts and its clock. It is called once per process; its module's source is fingerprinted with the
plugins, and every row records the network's own fingerprint (its parameters) in ``model_fingerprint``.

Each row of a user's network also states the network's error floor beside the sampler's error:
``model_velocity_loss``, its exact flow-matching loss :math:`E_{t,x\\sim p_t}\\|v_\\theta - u_t\\|^2` against the
analytic target (:func:`fmcore.models.exact_fm_loss`, :data:`LOSS_POINTS` points in each of 10 time bins), so a
reader sees when the network, not the sampler, limits the result.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fmbench.plugins import is_path_entry, load_plugin
from fmcore.model_field import TrainedNetwork

PREFIX = "module:"
LOSS_POINTS = 1000

_networks: dict[tuple[str, tuple[str, ...]], TrainedNetwork] = {}


class UserModelError(ValueError):
    """A ``module:`` field that names nothing importable, or whose factory does not return a TrainedNetwork."""


GIVEN_PREFIX = "python:"
"""A network handed over in Python (:func:`fmbench.evaluate`): ``python:<fingerprint>``, known to this process only."""
_given: dict[str, TrainedNetwork] = {}


def is_user_model(field: str) -> bool:
    return isinstance(field, str) and (field.startswith(PREFIX) or field.startswith(GIVEN_PREFIX))


def given_network(network: TrainedNetwork) -> str:
    """The field name of a network handed over in Python: ``python:<its fingerprint>``."""
    name = GIVEN_PREFIX + network.fingerprint()
    _given[name] = network
    return name


def _module_and_factory(field: str) -> tuple[str, str]:
    module, _, factory = field[len(PREFIX):].rpartition(".")
    if not module or not factory:
        raise UserModelError(f"field {field!r}: write module:<module>.<factory>, e.g. module:my_model.network")
    return module, factory


def _module(name: str, plugins: tuple[str, ...]):
    """A listed path plugin whose file (or package folder) is called ``name``, else the importable module."""
    for entry in plugins:
        if is_path_entry(entry):
            path = Path(entry)
            stem = path.stem if path.suffix == ".py" else path.name
            if stem == name:
                return load_plugin(entry)
    return importlib.import_module(name)


def load_network(field: str, plugins: tuple[str, ...] = ()) -> TrainedNetwork:
    """The :class:`TrainedNetwork` a ``module:`` field names, made once per process; :class:`UserModelError` saying
    what is wrong otherwise."""
    if field.startswith(GIVEN_PREFIX):
        if field not in _given:
            raise UserModelError(f"field {field!r} names a network handed to fmbench.evaluate in another process; "
                                 "in a sweep file, name its factory: module:<module>.<factory>")
        return _given[field]
    key = (field, tuple(plugins))
    if key in _networks:
        return _networks[key]
    module_name, factory_name = _module_and_factory(field)
    try:
        module = _module(module_name, plugins)
    except ModuleNotFoundError as error:
        raise UserModelError(
            f"field {field!r}: module {module_name!r} cannot be imported ({error}); list its file in the sweep's plugins "
            f"(plugins = [\"{module_name}.py\"]) or install it"
        ) from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise UserModelError(f"field {field!r}: module {module_name!r} has no function {factory_name!r}")
    network = factory()
    if not isinstance(network, TrainedNetwork):
        raise UserModelError(
            f"field {field!r}: {module_name}.{factory_name}() must return fmcore.model_field.TrainedNetwork(network, "
            f"prediction, convention), got {type(network).__name__}"
        )
    _networks[key] = network
    return network


def forget_networks() -> None:
    """Drop the networks made so far (the next :func:`load_network` calls its factory again)."""
    _networks.clear()
