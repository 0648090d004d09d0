"""Change points of a series: where its level moved, the commit where the move began, and by how much.

**Exact series** (every accuracy metric of a fixed computation: its spread is 0) move only when code or round-off
moves them, so a step is any change beyond the tolerance of the metric's class — the same tolerances the CI
comparison uses (:data:`fmbench.compare.TOLERANCES`). Each point is compared with the first point of the current
level, so that a drift of many sub-tolerance moves is caught once it adds up to one tolerance.

**Noisy series** (timings in log units; sampled metrics, whose spread is their Monte-Carlo floor) are fitted with a
piecewise-constant function by minimising the weighted Potts functional (asv's step detection, with an L2 data term
and an exact O(n²) dynamic programme in place of asv's approximate L1 solver):

.. math::

    \\min_{k,\\ j_1 < \\dots < j_k,\\ \\mu}\\ \\gamma k + \\sum_{r=0}^{k} \\sum_{i = j_r}^{j_{r+1} - 1}
        \\frac{(y_i - \\mu_r)^2}{\\sigma_i^2},
    \\qquad \\sigma_i = \\max(s_i, \\hat\\tau), \\quad
    \\hat\\tau = \\frac{1.4826}{\\sqrt 2}\\,\\operatorname{median}_i |y_{i+1} - y_i|,

where s_i is the point's own spread and τ̂ the run-to-run noise read off the series itself (the median absolute
difference of neighbours, which a few steps do not move). The penalty γ is set so that on pure noise a step is
reported in at most a fraction ``false_alarm`` of series (default 0.1 %: a history holds thousands of noisy
series): γ(n) is the (1 − false_alarm) quantile, over
simulated Gaussian series of the same length, of the smallest penalty at which the fit keeps no step,
max_k (C₀ − C_k)/k (C_k: the least cost with k steps, k ≤ 6). Steps smaller than their own uncertainty therefore go
unreported; the size of each reported step is the difference of the fitted levels (a ratio for timings).

No library is used for the fit: ruptures (the maintained change-point library) has no per-point weights, and asv's
solver is internal to asv; the exact programme is thirty lines and instant for histories of hundreds of commits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from fmbench.compare import TOLERANCES, Tolerance
from fmbench.history.series import Series

__all__ = ["DEFAULT_FALSE_ALARM", "Step", "detect_all", "detect_steps", "fit_levels", "format_steps",
           "noise_scale", "penalty", "tolerance_steps", "weighted_steps"]

DEFAULT_FALSE_ALARM = 0.001
MAX_CALIBRATION_STEPS = 6
MAD_TO_SIGMA = 1.4826
CALIBRATED_LENGTH = 64


@dataclass(frozen=True)
class Step:
    """A level change of ``series`` beginning at point ``index`` (its commit), from ``before`` to ``after`` (levels,
    in the metric's own units); ``kind`` is ``"tolerance"`` (an exact series) or ``"fit"`` (a noisy one), and
    ``z`` the change over its standard error (fits only)."""

    series: Series
    index: int
    before: float
    after: float
    kind: str
    z: float | None = None

    @property
    def commit(self) -> str:
        return self.series.points[self.index].commit

    @property
    def previous_commit(self) -> str:
        return self.series.points[self.index - 1].commit

    @property
    def relative(self) -> float:
        return (self.after - self.before) / abs(self.before) if self.before else math.inf

    def as_dict(self) -> dict:
        key = self.series.key
        return {"preset": key.preset, "machine": key.machine, "executor": key.executor, "threads": key.threads,
                "cell": key.cell, "metric": key.metric, "group": self.series.group, "label": self.series.label,
                "commit": self.commit, "previous_commit": self.previous_commit,
                "subject": self.series.points[self.index].subject, "before": self.before, "after": self.after,
                "relative": self.relative, "kind": self.kind, "z": self.z}


# ---------------------------------------------------------------------- exact series


def tolerance_steps(values: list[float], tolerance: Tolerance) -> list[tuple[int, float]]:
    """(index, level before) where a value leaves the tolerance of its level's first value, which is the level
    before; that value starts the next level."""
    steps, reference = [], values[0] if values else None
    for index, value in enumerate(values[1:], start=1):
        if not tolerance.admits(reference, value):
            steps.append((index, reference))
            reference = value
    return steps


# ---------------------------------------------------------------------- noisy series


def noise_scale(values: np.ndarray) -> float:
    """τ̂ = 1.4826/√2 · median |y_{i+1} − y_i|: the noise's standard deviation, robust to a few steps."""
    if len(values) < 2:
        return 0.0
    return MAD_TO_SIGMA / math.sqrt(2.0) * float(np.median(np.abs(np.diff(values))))


def _segment_costs(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """cost[..., i, j] = Σ_{i ≤ l < j} w_l (y_l − ȳ_w)², the weighted residual of one level over points [i, j)."""
    zero = np.zeros(values.shape[:-1] + (1,))
    w = np.concatenate([zero, np.cumsum(weights, axis=-1)], axis=-1)
    wy = np.concatenate([zero, np.cumsum(weights * values, axis=-1)], axis=-1)
    wyy = np.concatenate([zero, np.cumsum(weights * values**2, axis=-1)], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dw = w[..., None, :] - w[..., :, None]
        dwy = wy[..., None, :] - wy[..., :, None]
        cost = (wyy[..., None, :] - wyy[..., :, None]) - np.where(dw > 0, dwy**2 / dw, 0.0)
    n = values.shape[-1]
    upper = np.triu(np.ones((n + 1, n + 1), dtype=bool), k=1)
    return np.where(upper, np.maximum(cost, 0.0), np.inf)


def fit_levels(values: np.ndarray, sigmas: np.ndarray, gamma: float) -> list[int]:
    """The starts of the levels after the first in the minimiser of the weighted Potts functional (module
    docstring): F(j) = min_{i<j} F(i) + cost(i, j) + γ, F(0) = −γ, traced back from F(n)."""
    n = len(values)
    cost = _segment_costs(values, 1.0 / sigmas**2)
    best, start = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=int)
    best[0] = -gamma
    for j in range(1, n + 1):
        candidates = best[:j] + cost[:j, j] + gamma
        start[j] = int(np.argmin(candidates))
        best[j] = candidates[start[j]]
    starts, j = [], n
    while j > 0:
        j = start[j]
        if j > 0:
            starts.append(j)
    return sorted(starts)


def _least_costs(values: np.ndarray, max_steps: int) -> np.ndarray:
    """C_k for k = 0 … max_steps of each row of ``values`` (unit weights): the least residual with k steps."""
    cost = _segment_costs(values, np.ones_like(values))
    n = values.shape[-1]
    best = cost[:, 0, :]  # F_0(j) = cost(0, j)
    least = [best[:, n]]
    for _ in range(min(max_steps, n - 1)):
        best = np.min(best[:, :, None] + cost, axis=1)
        least.append(best[:, n])
    return np.stack(least, axis=1)


@functools.lru_cache(maxsize=64)
def penalty(n: int, false_alarm: float = DEFAULT_FALSE_ALARM) -> float:
    """γ(n): the (1 − false_alarm) quantile over simulated pure-noise series of length n (σ estimated by
    :func:`noise_scale`, as in the fit) of max_k (C₀ − C_k)/k. Deterministic (seeded), cached per (n, rate).

    The simulation costs O(n²) per series, so it is run up to n = :data:`CALIBRATED_LENGTH`; a longer series takes
    γ(64) + 2 ln(n / 64), which errs high (fewer false alarms than stated): the largest split statistic of pure
    noise grows like 2 ln ln n (Darling–Erdős), slower than 2 ln n."""
    if n < 3:
        return math.inf
    if n > CALIBRATED_LENGTH:
        return penalty(CALIBRATED_LENGTH, false_alarm) + 2.0 * math.log(n / CALIBRATED_LENGTH)
    generator = np.random.default_rng(20261204)
    simulations = max(4000, int(40 / false_alarm))
    thresholds = []
    for chunk in range(0, simulations, 250):
        values = generator.standard_normal((min(250, simulations - chunk), n))
        scale = MAD_TO_SIGMA / math.sqrt(2.0) * np.median(np.abs(np.diff(values, axis=1)), axis=1)
        values = values / scale[:, None]
        least = _least_costs(values, MAX_CALIBRATION_STEPS)
        steps = np.arange(1, least.shape[1])
        thresholds.append(np.max((least[:, :1] - least[:, 1:]) / steps, axis=1))
    return float(np.quantile(np.concatenate(thresholds), 1.0 - false_alarm))


def weighted_steps(values: list[float], spreads: list[float | None],
                   false_alarm: float = DEFAULT_FALSE_ALARM) -> list[tuple[int, float, float, float]]:
    """(index, level before, level after, z) of each step of a noisy series (module docstring). A series with no
    noise at all (τ̂ = 0 and no spread) has a step wherever its value changes; one of fewer than 3 points, none."""
    y = np.asarray(values, dtype=float)
    if len(y) < 3:
        return []  # two points cannot tell a step from noise
    own = np.array([spread if spread is not None else 0.0 for spread in spreads], dtype=float)
    sigmas = np.maximum(own, noise_scale(y))
    if not np.any(sigmas > 0):
        changes = [index for index in range(1, len(y)) if y[index] != y[index - 1]]
        return [(index, float(y[index - 1]), float(y[index]), math.inf) for index in changes]
    sigmas = np.where(sigmas > 0, sigmas, np.min(sigmas[sigmas > 0]))
    starts = fit_levels(y, sigmas, penalty(len(y), false_alarm))
    bounds = [0, *starts, len(y)]
    weights = 1.0 / sigmas**2
    levels = [(float(np.sum(weights[a:b] * y[a:b]) / np.sum(weights[a:b])), float(np.sum(weights[a:b])))
              for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    steps = []
    for number, index in enumerate(starts):
        (before, w_before), (after, w_after) = levels[number], levels[number + 1]
        steps.append((int(index), before, after, abs(after - before) / math.sqrt(1 / w_before + 1 / w_after)))
    return steps


# ---------------------------------------------------------------------- a series, a history


def detect_steps(series: Series, false_alarm: float = DEFAULT_FALSE_ALARM) -> list[Step]:
    """The steps of one series: by tolerance where every spread is 0, else by the weighted fit (timings in log
    units, reported back in seconds)."""
    values = series.values
    if len(values) < 2:
        return []
    spreads = [point.spread for point in series.points]
    if series.metric_class in TOLERANCES and all(spread == 0 for spread in spreads):
        return [Step(series, index, before, values[index], "tolerance")
                for index, before in tolerance_steps(values, TOLERANCES[series.metric_class])]
    logarithmic = series.is_timing and min(values) > 0
    y = [math.log(value) for value in values] if logarithmic else values
    found = weighted_steps(y, spreads, false_alarm)
    back = math.exp if logarithmic else float
    return [Step(series, index, back(before), back(after), "fit", z) for index, before, after, z in found]


def detect_all(series: list[Series], false_alarm: float = DEFAULT_FALSE_ALARM) -> list[Step]:
    return [step for one in series for step in detect_steps(one, false_alarm)]


def format_steps(series: list[Series], steps: list[Step], false_alarm: float = DEFAULT_FALSE_ALARM) -> str:
    """The steps by the commit where they began (in commit order), each with its series and size, and a summary."""
    noisy = sum(1 for one in series if not (one.metric_class in TOLERANCES and
                                            all(point.spread == 0 for point in one.points)))
    lines = [f"{len(series)} series: {len(series) - noisy} exact (steps beyond the CI tolerance of their class), "
             f"{noisy} noisy (weighted step fit; on pure noise ≈ {noisy * false_alarm:.1f} would show a step at "
             f"{100 * false_alarm:g} % per series)", ""]
    order = {}
    for one in series:
        for position, point in enumerate(one.points):
            order.setdefault(point.commit, (position, point.subject))
    by_commit: dict[str, list[Step]] = {}
    for step in steps:
        by_commit.setdefault(step.commit, []).append(step)
    if not steps:
        lines.append("no steps detected")
    for commit in sorted(by_commit, key=lambda commit: order.get(commit, (0, ""))[0]):
        group = by_commit[commit]
        lines.append(f"{commit[:10]} {order.get(commit, (0, ''))[1][:90]}")
        lines.append(f"  {len(group)} step(s), since {group[0].previous_commit[:10]}:")
        for step in sorted(group, key=lambda step: (step.series.key.metric, step.series.group, step.series.label)):
            size = (f"×{step.after / step.before:.3g}" if step.series.is_timing and step.before > 0
                    else f"{100 * step.relative:+.3g} %")
            z = f", z = {step.z:.1f}" if step.z is not None and math.isfinite(step.z) else ""
            lines.append(f"    {step.series.key.metric:<26} {step.before:.6g} → {step.after:.6g} ({size}{z})  "
                         f"{step.series.group} · {step.series.label} [{step.series.key.cell}, "
                         f"{step.series.key.machine}]")
    return "\n".join(lines) + "\n"
