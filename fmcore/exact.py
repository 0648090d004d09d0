r"""The exact output law of a linear sampler on a Gaussian target, with no sampling noise.

For a Gaussian target :math:`N(\mu, U\operatorname{diag}(\lambda)U^\top)` on an affine path, the velocity and the
score are affine in x and diagonal in the target's eigenbasis. In the coordinates :math:`z = U^\top x`,
:math:`m = U^\top\mu`, each eigendirection j evolves on its own (``docs/design.md``, "Analytic targets"):

.. math::
    u_j(t, z) = a_j(t)\,z_j + \big(\dot\alpha_t - a_j(t)\alpha_t\big)m_j, \quad
    a_j = \frac{\alpha\dot\alpha\lambda_j + \sigma\dot\sigma}{c_j},\quad
    s_j(t, z) = -\frac{z_j - \alpha_t m_j}{c_j},\quad c_j = \alpha_t^2\lambda_j + \sigma_t^2 .

So every method of this suite — each explicit Runge–Kutta tableau, Euler–Maruyama with any diffusion, seed
000's sampler, the deterministic diffusion samplers — maps the initial noise :math:`z_0 \sim N(0, \sigma_0^2)`
(and, for SDE methods, the injected Gaussian increments) affinely: :math:`z_N = P z_0 + Q + \sum_i R_i\xi_i` per
eigendirection. This module runs each method's *own* recursion, on its own grid, on the coefficients
:math:`(P, Q, W = \sum_i R_i^2)` in float64:

* an explicit RK step with tableau (c, A, b) on :math:`z' = A(t)z + B(t)` has stages
  :math:`k_i = K_i z + L_i` with :math:`K_i = A(t + c_ih)(1 + h\sum_j a_{ij}K_j)`,
  :math:`L_i = A(t + c_ih)\,h\sum_j a_{ij}L_j + B(t + c_ih)`, and the step is
  :math:`z \mapsto (1 + h\sum_i b_iK_i)z + h\sum_i b_iL_i`;
* an Euler–Maruyama step with diffusion g is :math:`z \mapsto (1 + hA)z + hB + g\sqrt h\,\xi` with the drift
  :math:`A = a - \tfrac12 g^2/c`, :math:`B = (\dot\alpha - a\alpha)m + \tfrac12 g^2\alpha m/c`.

The deterministic diffusion samplers (``ddim``, ``dpmpp_2m``, ``edm_heun``) are affine too but not tableaus: their
(P, Q) are read off their own float64 run on three probes (:data:`PROBED_METHODS`).

The output law is :math:`N(UQ,\ U\operatorname{diag}(\sigma_0^2P^2 + W)U^\top)`, so its W2 to the target is exact
(:meth:`ExactLaw.w2_to_target`, the Bures distance of two laws with a common eigenbasis). For ODE methods (W = 0)
the sampler's map :math:`\hat z = Pz_0 + Q` and the exact flow map :math:`z^* = P^*z_0 + Q^*` give the exact
expected strong error :math:`E\|\hat x - x^*\|^2 = \sigma_0^2\|P - P^*\|^2 + \|Q - Q^*\|^2`
(:meth:`ExactLaw.strong_error`). This is the analysis of Pierret & Galerne (ICML 2025, "Diffusion models for
Gaussian distributions: exact solutions and Wasserstein errors"), made general over schedules, grids and methods.

The law is that of the recursion in exact (float64) arithmetic: a float32 run differs from it by its round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_instance, check_number
from .fields import AnalyticField
from .grids import check_grid, get_grid
from .schedules import Schedule
from .solvers import sample
from .solvers.diffusions import Diffusion
from .solvers.sampling import check_grid_start
from .solvers.tableaus import TABLEAUS, ButcherTableau
from .targets import GaussianMixture

__all__ = ["ExactLaw", "exact_output_law", "EXACT_METHODS", "has_exact_law"]

F64 = torch.float64


@dataclass(frozen=True)
class _Problem:
    """The target in its eigenbasis and the schedule: what every recursion needs."""

    eigenvalues: Tensor  # (d,) λ_j
    rotated_mean: Tensor  # (d,) m = Uᵀμ
    schedule: Schedule

    def coefficients(self, t: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a, B_velocity, c, α m)`` at t: the velocity is ``a z + B_velocity``, the score ``−(z − α m)/c``."""
        values = self.schedule(t)
        alpha, d_alpha = float(values.alpha), float(values.d_alpha)
        variance = alpha**2 * self.eigenvalues + float(values.sigma) ** 2
        if not bool((variance > 0).all()):  # as the target's closed forms refuse it (GaussianMixture.rank_deficient)
            raise ValueError(
                f"the target is rank-deficient ({int((self.eigenvalues == 0).sum())} zero variance(s)) and σ_t = 0 at "
                f"t = {t:g}, where the sampler evaluates the field: the velocity is singular there. Stop before it "
                "(a grid with t1 < 1)")
        gain = (alpha * d_alpha * self.eigenvalues + float(values.sigma_d_sigma)) / variance
        return gain, (d_alpha - gain * alpha) * self.rotated_mean, variance, alpha * self.rotated_mean


@dataclass(frozen=True)
class _Affine:
    """Per eigendirection, the state is ``P z₀ + Q + (noise of variance W)``."""

    P: Tensor
    Q: Tensor
    W: Tensor

    def then(self, scale: Tensor, shift: Tensor, noise_variance: Tensor | float = 0.0) -> _Affine:
        """Apply ``z ↦ scale·z + shift + noise`` after this map."""
        return _Affine(scale * self.P, scale * self.Q + shift, scale**2 * self.W + noise_variance)


def _runge_kutta_step(problem: _Problem, state: _Affine, tableau: ButcherTableau, t: float, t_next: float) -> _Affine:
    h = t_next - t
    gains: list[Tensor] = []
    offsets: list[Tensor] = []
    for c_i, a_i in zip(tableau.c, tableau.a, strict=True):
        stage_time = t_next if c_i == 1.0 else t + c_i * h  # the engine's own stage times
        gain, shift, _, _ = problem.coefficients(stage_time)
        K = 1.0 + h * sum((a_ij * K_j for a_ij, K_j in zip(a_i, gains, strict=False)), torch.zeros_like(gain))
        L = h * sum((a_ij * L_j for a_ij, L_j in zip(a_i, offsets, strict=False)), torch.zeros_like(gain))
        gains.append(gain * K)
        offsets.append(gain * L + shift)
    scale = 1.0 + h * sum(b_i * K_i for b_i, K_i in zip(tableau.b, gains, strict=True))
    shift = h * sum(b_i * L_i for b_i, L_i in zip(tableau.b, offsets, strict=True))
    return state.then(scale, shift)


def _euler_maruyama_step(problem: _Problem, state: _Affine, diffusion: Diffusion, t: float, t_next: float) -> _Affine:
    h = t_next - t
    gain, shift, variance, alpha_mean = problem.coefficients(t)
    g = float(diffusion(problem.schedule(t)))
    drift_gain = gain - 0.5 * g * g / variance
    drift_shift = shift + 0.5 * g * g * alpha_mean / variance
    return state.then(1.0 + h * drift_gain, h * drift_shift, g * g * h)


def _seed000_recursion(problem: _Problem, state: _Affine, steps: int) -> _Affine:
    """Seed 000's sampler as written (see :mod:`fmcore.solvers.seed000`): model times ``1 − linspace(1, 0, N)``,
    state steps of 1/N, its own score formula with its 1e-6 regularisers and constants."""
    dt = 1.0 / steps
    for t_seed in torch.linspace(1, 0, steps, dtype=F64).tolist():
        gain, shift, _, _ = problem.coefficients(1.0 - t_seed)
        velocity_gain, velocity_shift = -gain, -shift  # the seed's model predicts −u
        alpha, sigma = 1.0 - t_seed, 0.001 + 0.999 * t_seed
        kappa = 1.0 / ((sigma + 1e-6) * (-sigma - alpha * 0.999 + 1e-6))  # score = κ(α v + x)
        score_gain, score_shift = kappa * (alpha * velocity_gain + 1.0), kappa * alpha * velocity_shift
        increment_gain = (velocity_gain - 0.5 * sigma * score_gain) * dt
        increment_shift = (velocity_shift - 0.5 * sigma * score_shift) * dt
        state = state.then(1.0 - increment_gain, -increment_shift, sigma * dt)
    return state


EXACT_METHODS: dict[str, str] = {"euler_maruyama": "sde", "seed000_sde": "seed"}
"""Methods with an exact law beyond the Runge–Kutta tableaus (every registered tableau has one), and
torchdiffeq's fixed-grid methods that are one of our tableaus step for step."""
TORCHDIFFEQ_EQUIVALENTS = {"tdq_euler": "euler", "tdq_midpoint": "midpoint", "tdq_heun2": "heun", "tdq_rk4": "rk38"}
PROBED_METHODS = ("ddim", "dpmpp_2m", "unipc", "edm_heun")
"""Deterministic diffusion samplers (at their default options: η = 0, no churn). Their steps are affine in x on a
Gaussian target but are not tableaus, so their (P, Q) are read off the sampler itself, run in float64 on three probes
(:func:`_probed_law`; the map is diagonal in the target's eigenbasis, which the third probe checks)."""


def has_exact_law(method: str) -> bool:
    return method in TABLEAUS or method in EXACT_METHODS or method in TORCHDIFFEQ_EQUIVALENTS or method in PROBED_METHODS


PROBE_SEED = 0
"""Seed of the random probe that checks a probed map is diagonal in the target's eigenbasis."""


def _probed_law(target: GaussianMixture, schedule: Schedule, method: str, steps, grid) -> ExactLaw:
    """``(P, Q)`` of a deterministic sampler from its own float64 run on three probes, in the target's eigen
    coordinates z (x = U z; see :data:`PROBED_METHODS`): z = 0 gives Q, z = 1 (every eigendirection at once) gives
    P + Q, and a random z = r checks that the map is diagonal, z_N(r) = P ⊙ r + Q, which a coupling of
    eigendirections would break. Three solves of dimension d, whatever d (it was d + 1)."""
    dim = target.dim
    random = torch.randn(dim, dtype=F64, generator=torch.Generator().manual_seed(PROBE_SEED))
    eigen_probes = torch.stack([torch.zeros(dim, dtype=F64), torch.ones(dim, dtype=F64), random])
    basis = None if target.eigenvectors is None else target.eigenvectors[0]
    probes = eigen_probes if basis is None else eigen_probes @ basis.T
    result = sample(AnalyticField(target, schedule), probes, method, steps=steps, grid=grid)
    rotated = result.x if basis is None else result.x @ basis
    offset, gain = rotated[0], rotated[1] - rotated[0]
    residual = float((rotated[2] - (gain * random + offset)).abs().max())
    scale = max(1.0, float(gain.abs().max()) * float(random.abs().max()) + float(offset.abs().max()))
    if residual > 1e-9 * scale:
        raise RuntimeError(f"{method} coupled the target's eigendirections (a random probe is off its diagonal map by "
                           f"{residual:.3g}): its map is not diagonal")
    return ExactLaw(target, schedule, gain, offset, torch.zeros_like(gain), schedule.prior_std, result.t0, result.t1)


@dataclass(frozen=True)
class ExactLaw:
    r"""The output law :math:`N(\text{mean}, \text{covariance})` of a linear sampler, and its maps.

    ``gain`` P, ``offset`` Q and ``noise_variance`` W are per eigendirection of the target (``basis`` U, columns);
    ``t0`` is where the sampler started, from :math:`N(0, \text{prior\_std}^2 I)`, and ``t1`` where it stopped: 1,
    or earlier for a grid that ends before the data (an early stop). :meth:`w2_to_target` and :meth:`strong_error`
    score the output against the data whatever ``t1`` (an early stop is charged for stopping, as early-stopped
    diffusion sampling is scored); :meth:`w2_to_marginal` and ``strong_error(t_to=t1)`` against the path at ``t1``."""

    target: GaussianMixture
    schedule: Schedule
    gain: Tensor
    offset: Tensor
    noise_variance: Tensor
    prior_std: float
    t0: float
    t1: float = 1.0

    @property
    def basis(self) -> Tensor:
        """The target's eigenbasis U (columns) as a dense matrix (the identity, built, for an axis-aligned target)."""
        eigenvectors = self.target.eigenvectors
        return torch.eye(self.target.dim, dtype=F64) if eigenvectors is None else eigenvectors[0]

    @property
    def rotated_mean(self) -> Tensor:
        """The target's mean in its eigen coordinates, :math:`U^\top\\mu` (no d × d matrix when axis-aligned)."""
        eigenvectors = self.target.eigenvectors
        return self.target.means[0] if eigenvectors is None else eigenvectors[0].T @ self.target.means[0]

    @property
    def variance(self) -> Tensor:
        """Per-eigendirection variance :math:`\\sigma_0^2P^2 + W`."""
        return self.prior_std**2 * self.gain**2 + self.noise_variance

    @property
    def mean(self) -> Tensor:
        eigenvectors = self.target.eigenvectors
        return self.offset if eigenvectors is None else eigenvectors[0] @ self.offset

    @property
    def covariance(self) -> Tensor:
        basis = self.basis
        return (basis * self.variance) @ basis.T

    def w2_to_target(self) -> float:
        r"""Exact W2 to the target: :math:`\big(\sum_j (Q_j - m_j)^2 + (\sqrt{V_j} - \sqrt{\lambda_j})^2\big)^{1/2}`
        (Bures for two Gaussians with a common eigenbasis)."""
        return self._w2_to(self.rotated_mean, self.target.eigenvalues[0])

    def w2_to_marginal(self) -> float:
        r"""Exact W2 to the path's marginal at ``t1``, :math:`N(\alpha_{t_1} m, \alpha_{t_1}^2\Lambda + \sigma_{t_1}^2)` in
        the target's eigenbasis."""
        values = self.schedule(self.t1)
        alpha, sigma = float(values.alpha), float(values.sigma)
        return self._w2_to(alpha * self.rotated_mean, alpha**2 * self.target.eigenvalues[0] + sigma**2)

    def _w2_to(self, rotated_mean: Tensor, variances: Tensor) -> float:
        """W2 to the Gaussian of this mean and these variances in the same eigenbasis."""
        squared = ((self.offset - rotated_mean) ** 2).sum() + ((self.variance.sqrt() - variances.sqrt()) ** 2).sum()
        return math.sqrt(float(squared))

    def exact_map(self, t_from: float, t_to: float = 1.0) -> tuple[Tensor, Tensor]:
        r"""``(P*, Q*)`` of the exact probability-flow map from ``t_from`` to ``t_to`` (:math:`z^* = P^*z + Q^*`)."""
        start, end = self.schedule(t_from), self.schedule(t_to)
        eigenvalues = self.target.eigenvalues[0]
        rotated_mean = self.rotated_mean
        variance_start = float(start.alpha) ** 2 * eigenvalues + float(start.sigma) ** 2
        variance_end = float(end.alpha) ** 2 * eigenvalues + float(end.sigma) ** 2
        gain = (variance_end / variance_start).sqrt()
        return gain, float(end.alpha) * rotated_mean - gain * float(start.alpha) * rotated_mean

    def strong_error(self, t_from: float = 0.0, t_to: float = 1.0) -> float:
        r"""Exact RMS distance :math:`(E\|\hat x - x^*\|^2)^{1/2}` to the exact flow map from ``t_from`` to ``t_to``
        (the data by default; ``t_to = t1`` for the path where an early stop ended) of the same noise:
        :math:`(\sigma_0^2\|P - P^*\|^2 + \|Q - Q^*\|^2)^{1/2}`. ODE methods only (no injected noise)."""
        if bool((self.noise_variance > 0).any()):
            raise ValueError("the strong error is defined for ODE methods (no injected noise); use w2_to_target")
        gain, offset = self.exact_map(check_number("t_from", t_from, 0.0, 1.0), check_number("t_to", t_to, 0.0, 1.0))
        squared = self.prior_std**2 * ((self.gain - gain) ** 2).sum() + ((self.offset - offset) ** 2).sum()
        return math.sqrt(float(squared))

    def clip_strong_error(self) -> float:
        """RMS distance between the exact flow maps from ``t0`` and from 0 of the same noise: the clip's own error."""
        gain_clipped, offset_clipped = self.exact_map(self.t0)
        gain, offset = self.exact_map(0.0)
        squared = self.prior_std**2 * ((gain_clipped - gain) ** 2).sum() + ((offset_clipped - offset) ** 2).sum()
        return math.sqrt(float(squared))

    def clip_law_w2(self) -> float:
        """W2 to the target of the exact flow started at ``t0`` from the prior: the cost of the start alone."""
        gain, offset = self.exact_map(self.t0)
        clipped = ExactLaw(self.target, self.schedule, gain, offset, torch.zeros_like(gain), self.prior_std, self.t0, 1.0)
        return clipped.w2_to_target()


def exact_output_law(
    target: GaussianMixture,
    schedule: Schedule,
    method: str,
    steps: int | None = None,
    grid: Tensor | None = None,
    diffusion: Diffusion | None = None,
) -> ExactLaw:
    """The exact output law of ``sample(AnalyticField(target, schedule), x0, method, ...)`` with x0 ~ N(0, σ₀² I).

    Takes the method's arguments as :func:`fmcore.solvers.sample` does: ``steps`` (a uniform grid from the start,
    which is ``diffusion.start_time`` for Euler–Maruyama) or a ``grid``; ``diffusion`` for ``euler_maruyama``.
    """
    check_instance("target", target, GaussianMixture, "a Gaussian target: get_target('gaussian') or Gaussian(...)")
    check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
    if target.num_components != 1:
        raise ValueError(f"the exact law is for Gaussian targets (K = 1); this mixture has K = {target.num_components}")
    if not isinstance(method, str) or not has_exact_law(method):
        raise KeyError(f"no exact law for method {method!r}; methods with one: "
                       f"{sorted(set(TABLEAUS) | set(EXACT_METHODS) | set(TORCHDIFFEQ_EQUIVALENTS) | set(PROBED_METHODS))}")
    if method in PROBED_METHODS:
        if diffusion is not None:
            raise ValueError(f"diffusion applies to euler_maruyama only, not {method!r}")
        return _probed_law(target, schedule, method, steps, grid)
    method = TORCHDIFFEQ_EQUIVALENTS.get(method, method)
    if method == "euler_maruyama":
        check_instance("diffusion", diffusion, Diffusion, "fmcore.solvers.get_diffusion(name, ...)")
    elif diffusion is not None:
        raise ValueError(f"diffusion applies to euler_maruyama only, not {method!r}")
    start = diffusion.start_time(schedule) if diffusion is not None else 0.0
    if method == "seed000_sde":
        if steps is None or grid is not None:
            raise ValueError("seed000_sde runs on its own grid: give steps")
    elif grid is None:
        if steps is None:
            raise ValueError("give steps (a uniform grid) or a grid")
        grid = get_grid("uniform", steps, t0=start)
    else:
        if steps is not None:
            raise ValueError("give steps or grid, not both")
        grid = torch.as_tensor(grid, dtype=F64)
        check_grid(grid)
        if diffusion is not None:  # as sample() refuses it: the recursion would divide by g's pole (NaN law)
            check_grid_start(grid, start, repr(diffusion))
    eigenvectors = target.eigenvectors
    rotated_mean = target.means[0] if eigenvectors is None else eigenvectors[0].T @ target.means[0]
    problem = _Problem(target.eigenvalues[0], rotated_mean, schedule)
    identity = _Affine(torch.ones(target.dim, dtype=F64), torch.zeros(target.dim, dtype=F64), torch.zeros(target.dim, dtype=F64))
    if method == "seed000_sde":
        state, t0 = _seed000_recursion(problem, identity, steps), 0.0
    else:
        step: Callable[[_Affine, float, float], _Affine]
        if method == "euler_maruyama":
            step = lambda state, t, t_next: _euler_maruyama_step(problem, state, diffusion, t, t_next)  # noqa: E731
        else:
            tableau = TABLEAUS[method]
            step = lambda state, t, t_next: _runge_kutta_step(problem, state, tableau, t, t_next)  # noqa: E731
        times = grid.tolist()
        state, t0 = identity, times[0]
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            state = step(state, t, t_next)
    _check_law_finite(state, schedule, grid, method)
    t1 = 1.0 if grid is None else float(grid[-1])
    return ExactLaw(target, schedule, state.P, state.Q, state.W, schedule.prior_std, t0, t1)


def _check_law_finite(state: _Affine, schedule: Schedule, grid: Tensor | None, method: str) -> None:
    """Raise, as :func:`fmcore.solvers.sample` does for the same grid, where the law is not finite: the velocity is
    infinite at a time the sampler evaluates it (a schedule whose dα/dt or σ·dσ/dt diverges there), or it overflowed."""
    if all(bool(torch.isfinite(part).all()) for part in (state.P, state.Q, state.W)):
        return
    if grid is not None:
        values = schedule(grid)
        infinite = ~(torch.isfinite(values.d_alpha) & torch.isfinite(values.sigma_d_sigma))
        if bool(infinite.any()):
            times = grid[infinite].tolist()[:3]
            raise ValueError(f"the exact law of {method!r} is not finite: the marginal velocity is infinite at t = {times} "
                             "of its grid (the schedule's dα/dt or σ·dσ/dt is not finite there); start the grid at a "
                             "clipped t > 0, as sample() would need")
    raise ValueError(f"the exact law of {method!r} is not finite on this grid (its gain or offset overflowed float64)")
