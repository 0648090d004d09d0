r"""The exact laws of the diffusion samplers DDIM, EDM's Heun, DPM-Solver++(2M) and UniPC written in tensors of the
grid's times, so that they are differentiable in the grid (``fmcore/optimal_grids``).

Each sampler is a linear map of its start per eigendirection of a Gaussian target (``laws.py``); its own float64 run,
probed, gives that map (:class:`~.laws.ProbedLaw`, what :meth:`~.laws.LawRecursion.propagate` returns here too). The
classes below write the same map as the sampler's steps in tensors instead of Python floats, from the field's data
prediction in eigen coordinates, at time t (:math:`c = \alpha^2\lambda + \sigma^2`):

.. math::
    D(t, z) = E[z_1 \mid z_t = z] = g z + f, \qquad g = \frac{\alpha\lambda}{c}, \quad f = \frac{\sigma^2 m}{c}.

A one-step sampler (DDIM, EDM's Heun, with their noise) gives each step's affine map
(:meth:`~.laws.StepLaw.step_maps`). A multistep sampler (DPM-Solver++(2M), UniPC) carries earlier data predictions
from step to step; it is deterministic, so every quantity it holds — the state, each carried prediction — is an affine
function :math:`y = y_0 z_0 + y_1` of the start, kept as the pair ``(2, d)`` of its coefficients
(:data:`AFFINE_START`); its steps combine these pairs exactly as the sampler combines tensors.

Which steps fall back to first order (a step whose :math:`h = \lambda_t - \lambda_s` is infinite, at a path's
ends) is decided on the grid's values: the ends are not differentiated.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .laws import PROBED, AffineLaw, GaussianProblem, LawRecursion, LawRequest, compose_steps, grid_values, schedule_columns

__all__ = ["WrittenLaw", "DDIMLaw", "EDMHeunLaw", "DPMSolver2MLaw", "UniPCLaw", "data_prediction_coefficients"]

F64 = torch.float64


def data_prediction_coefficients(problem: GaussianProblem, times: Tensor) -> tuple[Tensor, Tensor]:
    """The data prediction's gain g and offset f (module docstring) at every time of ``times``, ``(len(times), d)``,
    differentiable in the times."""
    alpha, sigma, _, _, variance = grid_values(problem, times)
    return alpha * problem.eigenvalues / variance, sigma**2 * problem.rotated_mean / variance


def log_snr_ratios(alpha: Tensor, sigma: Tensor) -> Tensor:
    r""":math:`\rho_k = e^{-h_k} = \alpha_k\sigma_{k+1}/(\alpha_{k+1}\sigma_k)` of each step k → k + 1 (0 where a step
    starts at α = 0 or ends at σ = 0: h infinite), as the samplers' ``_ratio``."""
    return (alpha[:-1] * sigma[1:] / (alpha[1:] * sigma[:-1])).squeeze(-1)


def finite_log_snr_steps(rho: Tensor) -> list[Tensor | None]:
    """Each step's :math:`h = -\\log\\rho`, ``None`` where it is infinite (ρ = 0, decided on the values)."""
    return [-torch.log(r) if bool(r.detach() > 0) else None for r in rho]


class WrittenLaw(LawRecursion):
    """A law whose float64 values come from probing the sampler's own code (:data:`~.laws.PROBED`), and which is also
    written in tensors of the grid (:meth:`law_on_grid`), equal to the probe to round-off (``tests/test_optimal_grids.py``)."""

    differentiable: ClassVar[bool] = True

    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        return PROBED.propagate(problem, request)


class _WrittenStepLaw(WrittenLaw):
    """A one-step sampler written as its steps' affine maps, composed in step order."""

    def law_on_grid(self, problem, request):
        return compose_steps(problem.dim, *self.step_maps(problem, request))

    @abstractmethod
    def step_maps(self, problem: GaussianProblem, request: LawRequest) -> tuple[Tensor, Tensor, Tensor]:
        """Every step's ``(scale, shift, noise variance)``, as :meth:`~.laws.StepLaw.step_maps`."""


class DDIMLaw(_WrittenStepLaw):
    r"""DDIM with stochasticity η (``ddim``, ``euler_ancestral``): a step s → t is, with the noise prediction
    :math:`\hat\varepsilon = (z - \alpha_sD)/\sigma_s` and :math:`k = (\sigma_t/\sigma_s)\sqrt{1 - \eta^2(1-\rho^2)}`,

    .. math:: z' = \alpha_t D + k\,(z - \alpha_s D) + \sigma_\eta\xi, \qquad \sigma_\eta^2 = \eta^2\sigma_t^2(1 - \rho^2),

    that is scale :math:`\alpha_t g + k(1 - \alpha_s g)`, shift :math:`(\alpha_t - k\alpha_s)f`, noise
    :math:`\sigma_\eta^2`."""

    def step_maps(self, problem, request):
        eta = float(request.options.get("eta", 0.0))
        alpha, sigma, _, _ = schedule_columns(problem.schedule, request.grid)
        gain, offset = data_prediction_coefficients(problem, request.grid[:-1])  # at each step's start
        rho = log_snr_ratios(alpha, sigma).unsqueeze(-1)
        alpha_s, sigma_s, alpha_t, sigma_t = alpha[:-1], sigma[:-1], alpha[1:], sigma[1:]
        kept = 1.0 - eta**2 * (1.0 - rho**2)  # ≥ 1 − η² ≥ 0; 0 at η = 1 on a last step to σ = 0
        root = torch.where(kept > 0, torch.sqrt(torch.where(kept > 0, kept, 1.0)), 0.0)
        noise_share = sigma_t / sigma_s * root
        scale = alpha_t * gain + noise_share * (1.0 - alpha_s * gain)
        return scale, (alpha_t - noise_share * alpha_s) * offset, eta**2 * sigma_t**2 * (1.0 - rho**2)


class EDMHeunLaw(_WrittenStepLaw):
    r"""EDM's Heun (``edm_heun``) in :math:`\tilde z = z/\alpha`, levels :math:`\ell = \sigma/\alpha`: its slope at
    time u and level ℓ is affine, :math:`d(\tilde z) = (\tilde z - D_u(\alpha_u\tilde z))/\ell
    = p\,(\tilde z - m)` with :math:`p = \sigma_u^2/(c_u\ell)` (:math:`= \alpha_u\sigma_u/c_u` at the path's own
    level), so a Heun step of :math:`\Delta = \ell_t - \ell_s` is

    .. math:: \tilde z' - m = A(\tilde z - m),\qquad A = 1 + \tfrac{\Delta}{2}(p_s + p_t + \Delta p_sp_t)

    (Euler, :math:`A = 1 + \Delta p_s`, on a last step to ℓ = 0), and :math:`z' = \alpha_t\tilde z'`. With churn,
    each step first raises its level to :math:`\hat\ell = (1 + \gamma)\ell_s`, γ = min(churn/N, √2 − 1), adding noise
    of variance :math:`\hat\ell^2 - \ell_s^2` to :math:`\tilde z`, and starts at the time :math:`\hat s` of that level
    (the schedule's inverse SNR, then one Newton step so that :math:`d\hat s/d\hat\ell = 1/\ell'(\hat s)` carries the
    gradient); skipped where the path never reaches that level, as the sampler skips it."""

    def step_maps(self, problem, request):
        grid = request.grid
        steps = len(grid) - 1
        churn = float(request.options.get("churn", 0.0))
        gamma = min(churn / steps, math.sqrt(2.0) - 1.0) if churn > 0 else 0.0
        alpha, sigma, _, _ = schedule_columns(problem.schedule, grid)
        level = (sigma / alpha).squeeze(-1)
        starts, start_levels, added = grid[:-1], level[:-1], torch.zeros(steps, dtype=F64)
        if gamma > 0.0:
            starts, start_levels, added = _churned(problem.schedule, grid[:-1], level[:-1], gamma)
        slope_s = _slope_gain(problem, starts, start_levels)
        delta = (level[1:] - start_levels).unsqueeze(-1)
        amplification = 1.0 + delta * slope_s  # Euler
        inner = [k for k in range(steps) if bool(level[k + 1].detach() > 0)]  # Heun where the step ends at ℓ > 0
        if inner:
            slope_t = _slope_gain(problem, grid[1:][inner], level[1:][inner])
            heun = 1.0 + 0.5 * delta[inner] * (slope_s[inner] + slope_t + delta[inner] * slope_s[inner] * slope_t)
            amplification = amplification.index_put((torch.tensor(inner),), heun)
        alpha_t = alpha[1:]
        scale = alpha_t * amplification / alpha[:-1]
        shift = alpha_t * (1.0 - amplification) * problem.rotated_mean
        return scale, shift, (alpha_t * amplification) ** 2 * added.unsqueeze(-1)


def _slope_gain(problem: GaussianProblem, times: Tensor, levels: Tensor) -> Tensor:
    r"""EDM's slope gain :math:`p = \sigma_u^2/(c_u\ell)` at ``times`` and ``levels``, ``(len(times), d)``."""
    _, sigma, _, _, variance = grid_values(problem, times)
    return sigma**2 / (variance * levels.unsqueeze(-1))


def _churned(schedule, starts: Tensor, levels: Tensor, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """Each step's churned start time, level and the variance it adds to z̃ (:class:`EDMHeunLaw`)."""
    raised = levels * (1.0 + gamma)
    lowest_snr = float(schedule.snr(0.0))
    reached = 1.0 / raised.detach() >= lowest_snr
    found = schedule.t_from_snr(torch.where(reached, 1.0 / raised.detach(), lowest_snr)).clamp(min=0.0)
    inside = reached & (found > 0)  # a Newton step where ℓ is smooth (at t = 0, α may vanish: the time stays)
    values = schedule(torch.where(inside, found, 0.5))
    d_level = (values.d_sigma * values.alpha - values.sigma * values.d_alpha) / values.alpha**2
    newton = found + (raised - values.sigma / values.alpha) / d_level
    churned = torch.where(inside, newton, torch.where(reached, found, starts))
    return churned, torch.where(reached, raised, levels), torch.where(reached, raised**2 - levels**2, 0.0)


AFFINE_START = torch.tensor([[1.0], [0.0]], dtype=F64)
r"""The start :math:`z_0` as an affine function of itself, the pair :math:`(y_0, y_1) = (1, 0)` (broadcast over d)."""


class _WrittenMultistepLaw(WrittenLaw):
    """A deterministic multistep sampler written on affine pairs (module docstring): :meth:`run` maps the start pair
    to the output pair."""

    def law_on_grid(self, problem, request):
        gain, offset = data_prediction_coefficients(problem, request.grid[:-1])  # at each step's start
        alpha, sigma, _, _ = schedule_columns(problem.schedule, request.grid)
        output = self.run(AFFINE_START.expand(2, problem.dim), alpha, sigma, _AffineField(gain, offset))
        return AffineLaw(output[0], output[1], torch.zeros_like(output[0]))

    @abstractmethod
    def run(self, start: Tensor, alpha: Tensor, sigma: Tensor, field: _AffineField) -> Tensor:
        """The sampler from the affine ``start`` with the schedule's α, σ at the grid times (``(N + 1, 1)``),
        asking ``field`` for data predictions at the grid times."""


@dataclass(frozen=True)
class _AffineField:
    """The data prediction :math:`D = g_kz + f_k` at grid time k, of an affine state ``(2, d)``, as an affine pair."""

    gain: Tensor
    offset: Tensor

    def data_prediction(self, k: int, state: Tensor) -> Tensor:
        return torch.stack([self.gain[k] * state[0], self.gain[k] * state[1] + self.offset[k]])


class DPMSolver2MLaw(_WrittenMultistepLaw):
    r"""DPM-Solver++(2M) (``dpmpp_2m``, η = 0): :math:`z' = (\sigma_t/\sigma_s)z + \alpha_t(1 - \rho)\hat D`,
    :math:`\hat D = (1 + \tfrac{1}{2r})D_s - \tfrac{1}{2r}D_{prev}`, :math:`r = h_{prev}/h`, first order
    (:math:`\hat D = D_s`) on the first step and wherever h or :math:`h_{prev}` is infinite
    (:func:`~.diffusion_samplers.integrate_dpmpp_2m`)."""

    def run(self, start, alpha, sigma, field):
        rho = log_snr_ratios(alpha, sigma)
        h = finite_log_snr_steps(rho)
        state, previous = start, None
        for k in range(len(rho)):
            current = field.data_prediction(k, state)
            corrected = current
            if previous is not None and h[k] is not None and h[k - 1] is not None:
                r = h[k - 1] / h[k]
                corrected = (1.0 + 0.5 / r) * current - (0.5 / r) * previous
            state = (sigma[k + 1] / sigma[k]) * state + alpha[k + 1] * (1.0 - rho[k]) * corrected
            previous = current
        return state


class UniPCLaw(_WrittenMultistepLaw):
    r"""UniPC (``unipc``: UniP-2 predictor, UniC corrector, bh2), transcribed from
    :func:`~.diffusion_samplers.integrate_unipc` and :func:`~.diffusion_samplers._unipc_update`: the prediction at a
    step's predicted end corrects that step (redone from its start) and starts the next; the last step is a
    first-order predictor, not corrected."""

    def run(self, start, alpha, sigma, field):
        rho = log_snr_ratios(alpha, sigma)
        h = finite_log_snr_steps(rho)
        steps = len(rho)
        state, start_state, history = start, start, []
        for k in range(steps):
            prediction = field.data_prediction(k, state)
            if k > 0:
                state = self._update(start_state, k - 1, alpha, sigma, rho, h, history, prediction)
            history = [*history[-1:], prediction]
            start_state = state
            state = self._update(state, k, alpha, sigma, rho, h, history if k < steps - 1 else history[-1:], None)
        return state

    @staticmethod
    def _update(state, k, alpha, sigma, rho, h, history, end_prediction):
        """Step k → k + 1 from ``state``: predictor (``end_prediction`` None) or corrector (``_unipc_update``)."""
        second_order = len(history) == 2 and k >= 1 and h[k] is not None and h[k - 1] is not None
        current = history[-1]
        if end_prediction is None:
            corrected = current + (0.5 * h[k] / h[k - 1]) * (current - history[0]) if second_order else current
        elif second_order:
            r = h[k - 1] / h[k]
            phi = (rho[k] - 1.0) / -h[k] - 1.0
            b1 = phi / (rho[k] - 1.0)
            b2 = 2.0 * (phi / -h[k] - 0.5) / (rho[k] - 1.0)
            a = (b1 - b2) / (1.0 + r)
            corrected = current + (a / r) * (current - history[0]) + (b1 - a) * (end_prediction - current)
        else:
            corrected = current + 0.5 * (end_prediction - current)
        return (sigma[k + 1] / sigma[k]) * state + alpha[k + 1] * (1.0 - rho[k]) * corrected
