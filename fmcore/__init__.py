"""fmcore: exact targets, schedules, fields, solvers and metrics for flow matching and diffusion sampling."""

from ._threads import prefer_passive_wait

prefer_passive_wait()  # before anything below imports torch (see fmcore._threads)

from .fields import AnalyticField  # noqa: E402
from .schedules import Schedule, ScheduleValues, get_schedule  # noqa: E402
from .targets import Gaussian, GaussianMixture, get_target  # noqa: E402

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
