"""fmcore: exact targets, schedules, fields, solvers and metrics for flow matching and diffusion sampling.

The names below are the package's face; each is imported from its module on first use (PEP 562's module
``__getattr__``), so that ``import fmcore`` — and a tool that needs only one of its small modules, such as the file
helpers the harness's store uses — starts without loading torch. ``fmcore.solvers`` registers every method,
the reproductions included, when it is first imported.
"""

from importlib import import_module

__all__ = [
    "AnalyticField",
    "Gaussian",
    "GaussianMixture",
    "Schedule",
    "ScheduleValues",
    "get_schedule",
    "get_target",
]
__version__ = "0.1.0"

_HOMES = {"AnalyticField": "fields", "Gaussian": "targets", "GaussianMixture": "targets", "Schedule": "schedules",
          "ScheduleValues": "schedules", "get_schedule": "schedules", "get_target": "targets"}
"""Where each name of :data:`__all__` is defined."""


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'fmcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
