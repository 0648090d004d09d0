"""Shared fixtures and helpers for the fmcore tests."""

from __future__ import annotations

import pytest

from fmcore import get_schedule

ALL_SCHEDULES = [
    ("cond_ot", {}),
    ("cond_ot", {"sigma_min": 0.01}),
    ("cosine", {}),
    ("linear_vp", {}),
    ("vp", {}),
    ("ve", {}),
    ("ve", {"sigma_min": 0.05, "sigma_max": 5.0}),
    ("poly", {"n": 2.0}),
    ("poly", {"n": 1.5}),
]


def schedule_id(entry) -> str:
    name, params = entry
    return name + "".join(f"-{key}={value}" for key, value in params.items())


@pytest.fixture(params=ALL_SCHEDULES, ids=schedule_id)
def any_schedule(request):
    name, params = request.param
    return get_schedule(name, **params)


# ---------------------------------------------------------------------- Hypothesis profiles
# default: bounded and derandomised, so every run (and CI) checks the same examples quickly;
# slow: 2 000 examples per property, random, for deeper runs: HYPOTHESIS_PROFILE=slow pytest tests/test_properties.py
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("default", max_examples=25, deadline=None, derandomize=True, database=None)
settings.register_profile(
    "slow", max_examples=2000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
