"""fmcore: exact targets, schedules, fields, solvers and metrics for flow matching and diffusion sampling."""

from . import reproductions  # noqa: F401 — registers the reproduced samplers (seed000_sde)
from .fields import AnalyticField
from .schedules import Schedule, ScheduleValues, get_schedule
from .targets import Gaussian, GaussianMixture, get_target

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
