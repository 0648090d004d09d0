r"""The exact output law of a linear sampler on a Gaussian target, with no sampling noise.

For a Gaussian target :math:`N(\mu, U\operatorname{diag}(\lambda)U^\top)` on an affine path, the velocity, the score
and every prediction are affine in x and diagonal in the target's eigenbasis, so every linear sampler — each explicit
Runge–Kutta tableau, Euler–Maruyama with any diffusion, the diffusion samplers deterministic or stochastic, the
reproductions — maps its start :math:`z_0` (eigen coordinates :math:`z = U^\top x`) and its Gaussian increments
affinely: :math:`z_N = P z_0 + Q + \sum_i R_i\xi_i` per eigendirection. Each method declares how its
:math:`(P, Q, W = \sum_i R_i^2)` is computed, beside its integrator (``Method.exact_law``, a
:class:`~fmcore.solvers.laws.LawRecursion`: its recursion per eigenvalue, or a probe of its own code).

With the start :math:`z_0 \sim N(m_0, v_0)` (:data:`STARTS`: the schedule's prior, the path's marginal, or N(0, I)),
the output law is :math:`N(U(Pm_0 + Q),\ U\operatorname{diag}(v_0P^2 + W)U^\top)`, so its W2 to the target is exact
(:meth:`ExactLaw.w2_to_target`, the Bures distance of two laws with a common eigenbasis). For ODE methods (W = 0)
the sampler's map :math:`\hat z = Pz_0 + Q` and the exact flow map :math:`z^* = P^*z_0 + Q^*` give the exact
expected strong error :math:`E\|\hat x - x^*\|^2 = \|(P - P^*)m_0 + Q - Q^*\|^2 + v_0\|P - P^*\|^2`
(:meth:`ExactLaw.strong_error`). This is the analysis of Pierret & Galerne (ICML 2025, "Diffusion models for
Gaussian distributions: exact solutions and Wasserstein errors"), made general over schedules, grids and methods.

The law is that of the recursion in exact (float64) arithmetic: a float32 run differs from it by its round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_choice, check_instance, check_number
from .schedules import Schedule
from .solvers.diffusions import Diffusion
from .solvers.laws import AffineLaw, GaussianProblem, LawRecursion, LawRequest, propagate_distinct
from .solvers.methods import METHODS, get_method
from .solvers.sampling import method_grid, method_options
from .targets import GaussianMixture
from .targets.spectral import SpectralGaussian, marginal_variance

__all__ = ["ExactLaw", "exact_output_law", "has_exact_law", "methods_with_exact_law", "STARTS", "start_law",
           "mean_square_between_maps"]

F64 = torch.float64

STARTS = ("prior", "marginal", "standard_normal")
"""Where the sampler's start x₀ comes from: ``prior`` N(0, σ₀² I) (the schedule's prior, what ``sample`` is given by
the harness), ``marginal`` the path's exact marginal at the grid's first time (the paper's p_T), ``standard_normal``
N(0, I) (what a pipeline feeds a sampler)."""


def has_exact_law(method: str) -> bool:
    """Whether ``method`` declares an exact law (``Method.exact_law``); unknown names have none."""
    return isinstance(method, str) and method in METHODS and METHODS[method].exact_law is not None


def methods_with_exact_law() -> list[str]:
    return sorted(name for name, method in METHODS.items() if method.exact_law is not None)


@dataclass(frozen=True)
class ExactLaw:
    r"""The output law :math:`N(\text{mean}, \text{covariance})` of a linear sampler, and its maps.

    ``gain`` P, ``offset`` Q and ``noise_variance`` W are per eigendirection of the target (``basis`` U, columns);
    the start is :math:`N(m_0, v_0)` per eigendirection (``start_mean``, ``start_variance``; ``start`` names it, one
    of :data:`STARTS`) at ``t0``, where the sampler started; ``t1`` is where it stopped: 1, or earlier for a grid that
    ends before the data (an early stop). :meth:`w2_to_target` and :meth:`strong_error` score the output against the
    data whatever ``t1`` (an early stop is charged for stopping, as early-stopped diffusion sampling is scored);
    :meth:`w2_to_marginal` and ``strong_error(t_to=t1)`` against the path at ``t1``."""

    target: GaussianMixture
    schedule: Schedule
    gain: Tensor
    offset: Tensor
    noise_variance: Tensor
    start_mean: Tensor
    start_variance: Tensor
    t0: float
    t1: float = 1.0
    start: str = "prior"

    @property
    def output(self) -> SpectralGaussian:
        r"""The output law itself, a :class:`~fmcore.targets.spectral.SpectralGaussian` on the target's basis — the
        type of the target's own component (``target.component(0)``): eigen-mean :math:`Pm_0 + Q`, variances
        :math:`v_0P^2 + W`."""
        return SpectralGaussian(self.target.layout.basis_of(0), self.gain * self.start_mean + self.offset,
                                self.start_variance * self.gain**2 + self.noise_variance)

    @property
    def basis(self) -> Tensor:
        """The target's eigenbasis U (columns) as a dense ``(d, d)`` matrix, built (for tests and small d; the law
        itself never needs it: :attr:`mean` applies the basis)."""
        return self.output.basis.dense()

    @property
    def rotated_mean(self) -> Tensor:
        r"""The target's mean in its eigen coordinates, :math:`U^\top\mu` (no d × d matrix when axis-aligned)."""
        return self.target.component(0).eigen_mean

    @property
    def rotated_output_mean(self) -> Tensor:
        """The output's mean in the target's eigen coordinates, :math:`Pm_0 + Q`."""
        return self.output.eigen_mean

    @property
    def variance(self) -> Tensor:
        """Per-eigendirection variance of the output, :math:`v_0P^2 + W`."""
        return self.output.variances

    @property
    def mean(self) -> Tensor:
        """The output's mean in data coordinates, :math:`U(Pm_0 + Q)`."""
        return self.output.mean

    @property
    def covariance(self) -> Tensor:
        return self.output.covariance

    def w2_to_target(self) -> float:
        r"""Exact W2 to the target: :math:`\big(\sum_j (\bar z_j - m_j)^2 + (\sqrt{V_j} - \sqrt{\lambda_j})^2\big)^{1/2}`
        with :math:`\bar z = Pm_0 + Q` (Bures for two Gaussians with a common eigenbasis:
        :meth:`SpectralGaussian.w2_to <fmcore.targets.spectral.SpectralGaussian.w2_to>`)."""
        return self.output.w2_to(self.target.component(0))

    def w2_to_marginal(self, t: float | None = None) -> float:
        r"""Exact W2 to the path's marginal at ``t`` (``t1`` by default),
        :math:`N(\alpha_t m, \alpha_t^2\Lambda + \sigma_t^2)` in the target's eigenbasis."""
        values = self.schedule(self.t1 if t is None else check_number("t", t, 0.0, 1.0))
        return self.output.w2_to(self.target.component(0).marginal(float(values.alpha), float(values.sigma)))

    def exact_map(self, t_from: float, t_to: float = 1.0) -> tuple[Tensor, Tensor]:
        r"""``(P*, Q*)`` of the exact probability-flow map from ``t_from`` to ``t_to`` (:math:`z^* = P^*z + Q^*`)."""
        start, end = self.schedule(t_from), self.schedule(t_to)
        return self.target.component(0).flow_map((float(start.alpha), float(start.sigma)),
                                                 (float(end.alpha), float(end.sigma)))

    def _rms_between(self, gain: Tensor, offset: Tensor, other_gain: Tensor, other_offset: Tensor) -> float:
        r""":math:`(E\|(P - P')z_0 + Q - Q'\|^2)^{1/2}` over the start law."""
        return math.sqrt(float(mean_square_between_maps(gain, offset, other_gain, other_offset, self.start_mean,
                                                        self.start_variance)))

    def strong_error(self, t_from: float = 0.0, t_to: float = 1.0) -> float:
        r"""Exact RMS distance :math:`(E\|\hat x - x^*\|^2)^{1/2}` to the exact flow map from ``t_from`` to ``t_to``
        (the data by default; ``t_to = t1`` for the path where an early stop ended) of the same start:
        :math:`(\|(P - P^*)m_0 + Q - Q^*\|^2 + v_0\|P - P^*\|^2)^{1/2}`. ODE methods only (no injected noise)."""
        if bool((self.noise_variance > 0).any()):
            raise ValueError("the strong error is defined for ODE methods (no injected noise); use w2_to_target")
        gain, offset = self.exact_map(check_number("t_from", t_from, 0.0, 1.0), check_number("t_to", t_to, 0.0, 1.0))
        return self._rms_between(self.gain, self.offset, gain, offset)

    def clip_strong_error(self) -> float:
        """RMS distance between the exact flow maps from ``t0`` and from 0 of the same start: the clip's own error."""
        return self._rms_between(*self.exact_map(self.t0), *self.exact_map(0.0))

    def clip_law_w2(self) -> float:
        """W2 to the target of the exact flow started at ``t0`` from the same start: the cost of the start alone."""
        gain, offset = self.exact_map(self.t0)
        clipped = ExactLaw(self.target, self.schedule, gain, offset, torch.zeros_like(gain), self.start_mean,
                           self.start_variance, self.t0, 1.0, self.start)
        return clipped.w2_to_target()


def mean_square_between_maps(gain: Tensor, offset: Tensor, other_gain: Tensor, other_offset: Tensor,
                             start_mean: Tensor, start_variance: Tensor) -> Tensor:
    r""":math:`E\|(P - P')z_0 + Q - Q'\|^2 = \|(P - P')m_0 + Q - Q'\|^2 + v_0\|P - P'\|^2` for
    :math:`z_0 \sim N(m_0, v_0)` per eigendirection, as a 0-d tensor (differentiable in the maps)."""
    difference = gain - other_gain
    squared = ((difference * start_mean + offset - other_offset) ** 2).sum()
    return squared + (start_variance * difference**2).sum()


def start_law(start: str, problem: GaussianProblem, t0: float | Tensor) -> tuple[Tensor, Tensor]:
    """``(m₀, v₀)`` per eigendirection of the start named ``start`` (:data:`STARTS`) at the grid's first time ``t0``
    (a 0-d tensor that requires grad gives a start law differentiable in it)."""
    if start == "marginal":
        values = problem.schedule(torch.as_tensor(t0, dtype=F64))
        alpha, sigma = values.alpha, values.sigma
        return alpha * problem.rotated_mean, marginal_variance(alpha, sigma, problem.eigenvalues)
    std = problem.schedule.prior_std if start == "prior" else 1.0
    return torch.zeros(problem.dim, dtype=F64), torch.full((problem.dim,), std**2, dtype=F64)


def exact_output_law(
    target: GaussianMixture,
    schedule: Schedule,
    method: str,
    steps: int | None = None,
    grid: Tensor | None = None,
    diffusion: Diffusion | None = None,
    start: str = "prior",
    law: LawRecursion | None = None,
    **options: float,
) -> ExactLaw:
    """The exact output law of ``sample(AnalyticField(target, schedule), x0, method, ...)`` with x0 from ``start``.

    Takes the method's arguments as :func:`fmcore.solvers.sample` does — ``steps`` (a uniform grid from where the
    method starts) or a ``grid`` (which may end before t = 1: an early stop), ``diffusion`` for reverse-SDE methods,
    the method's own ``options`` (DDIM's ``eta``, EDM's ``churn``, ...) — and resolves the grid as it does.
    ``start`` is one of :data:`STARTS`: the schedule's prior N(0, σ₀² I) (default), the path's exact marginal at the
    grid's first time, or N(0, I). ``law`` computes it instead of the method's declaration — e.g.
    :data:`~fmcore.solvers.laws.PROBED` for a method that declares none but is linear and runs in float64 (a peer
    library's deterministic sampler, your own): the probe refuses a map that couples eigendirections.
    """
    check_instance("target", target, GaussianMixture, "a Gaussian target: get_target('gaussian') or Gaussian(...)")
    check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
    start = check_choice("start", start, STARTS)
    if target.num_components != 1:
        raise ValueError(f"the exact law is for Gaussian targets (K = 1); this mixture has K = {target.num_components}")
    if law is None and not has_exact_law(method):
        raise KeyError(f"no exact law for method {method!r}; methods with one: {methods_with_exact_law()}")
    spec = get_method(method)
    if law is not None:
        check_instance("law", law, LawRecursion, "e.g. fmcore.solvers.laws.PROBED")
    options = method_options(spec, options)
    grid = method_grid(spec, schedule, steps, grid, diffusion)
    component = target.component(0)
    problem = GaussianProblem(component.variances, component.eigen_mean, schedule)
    state = propagate_distinct(law or spec.exact_law, problem, LawRequest(method, grid, diffusion, options))
    _check_law_finite(state, schedule, grid, method)
    t0 = float(grid[0])
    start_mean, start_variance = start_law(start, problem, t0)
    return ExactLaw(target, schedule, state.P, state.Q, state.W, start_mean, start_variance, t0, float(grid[-1]), start)


def _check_law_finite(state: AffineLaw, schedule: Schedule, grid: Tensor, method: str) -> None:
    """Raise, as :func:`fmcore.solvers.sample` does for the same grid, where the law is not finite: the velocity is
    infinite at a time the sampler evaluates it (a schedule whose dα/dt or σ·dσ/dt diverges there), or it overflowed."""
    if state.is_finite():
        return
    values = schedule(grid)
    infinite = ~(torch.isfinite(values.d_alpha) & torch.isfinite(values.sigma_d_sigma))
    if bool(infinite.any()):
        times = grid[infinite].tolist()[:3]
        raise ValueError(f"the exact law of {method!r} is not finite: the marginal velocity is infinite at t = {times} "
                         "of its grid (the schedule's dα/dt or σ·dσ/dt is not finite there); start the grid at a "
                         "clipped t > 0, as sample() would need")
    raise ValueError(f"the exact law of {method!r} is not finite on this grid (its gain or offset overflowed float64)")
