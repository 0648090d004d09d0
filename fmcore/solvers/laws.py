r"""Exact output laws of linear samplers on a Gaussian target, declared on each method beside its integrator.

On a Gaussian target :math:`N(\mu, U\operatorname{diag}(\lambda)U^\top)` every prediction a sampler asks for is affine
in x and diagonal in the eigenbasis. In eigen coordinates :math:`z = U^\top x`, :math:`m = U^\top\mu`, direction j
(``docs/design.md``, "Analytic targets"):

.. math::
    u_j(t, z) = a_j z_j + (\dot\alpha - a_j\alpha)m_j,\quad a_j = \frac{\alpha\dot\alpha\lambda_j + \sigma\dot\sigma}{c_j},
    \quad s_j(t, z) = -\frac{z_j - \alpha m_j}{c_j},\quad c_j = \alpha^2\lambda_j + \sigma^2 .

A sampler built from these and from Gaussian increments ξ is, per eigendirection, an affine map of the start and the
increments: :math:`z_N = P z_0 + Q + \sum_i R_i\xi_i`. A :class:`LawRecursion` computes :math:`(P, Q, W = \sum_i R_i^2)`
(an :class:`AffineLaw`) in float64 on the method's own grid, in O(steps · stages · d):

* :class:`TableauLaw` — an explicit Runge–Kutta tableau (c, A, b) on :math:`z' = a(t)z + B(t)`: stages
  :math:`k_i = K_i z + L_i`, :math:`K_i = a(t + c_ih)(1 + h\sum_j a_{ij}K_j)`,
  :math:`L_i = a(t + c_ih)h\sum_j a_{ij}L_j + B(t + c_ih)`, step :math:`z \mapsto (1 + h\sum_i b_iK_i)z + h\sum_i b_iL_i`;
* :class:`EulerMaruyamaLaw` — :math:`z \mapsto (1 + hA)z + hB + g\sqrt h\,\xi` with
  :math:`A = a - \tfrac12 g^2/c`, :math:`B = (\dot\alpha - a\alpha)m + \tfrac12 g^2\alpha m/c`;
* :class:`ProbedLaw` — any other linear sampler (multistep, stochastic, with carried predictions): its own
  integrator is run in float64 on the axis-aligned Gaussian with the same spectrum, on a batch of probes whose
  Brownian increments are set by a :class:`NoiseProbe`: row 0 starts at 0 with no noise (Q), row 1 at the all-ones
  vector (P + Q), rows 3 … 3 + k − 1 with a unit increment at draw k only (:math:`R_k`), and row 2 at a random start
  with random increments, which checks the map is diagonal, :math:`z_N = P r + Q + \sum_k R_k r_k`. The augmented
  state of a multistep method (its carried predictions) is carried by the integrator itself.

A one-step law that writes its steps' affine maps as tensors of the grid's times (:meth:`StepLaw.step_maps`:
:class:`TableauLaw`, :class:`EulerMaruyamaLaw`) is :attr:`LawRecursion.differentiable`: :meth:`LawRecursion.law_on_grid`
gives the same law as a function of the grid that autograd differentiates (``fmcore/optimal_grids``). A probe runs
the sampler's own code, whose steps are Python floats: it is not; the diffusion samplers DDIM, EDM's Heun,
DPM-Solver++(2M) and UniPC keep their probed law and are also written in tensors of the grid
(:mod:`.diffusion_laws`, the multisteps on affine functions of the start).

The recursion is the sampler's law in exact (float64) arithmetic; rotating the target does not change it (every
sampler here combines x and the field's predictions linearly, and ξ's law is rotation invariant).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ..schedules import Schedule
from ..targets.spectral import marginal_variance, refuse_singular, velocity_gain
from .diffusions import Diffusion
from .tableaus import ButcherTableau, stage_time

__all__ = ["GaussianProblem", "AffineLaw", "LawRequest", "LawRecursion", "StepLaw", "TableauLaw", "EulerMaruyamaLaw",
           "ProbedLaw", "NoiseProbe", "PROBED", "propagate_distinct", "compose_steps", "schedule_columns",
           "grid_values", "grid_coefficients"]

F64 = torch.float64


@dataclass(frozen=True)
class GaussianProblem:
    """The Gaussian target in its eigenbasis (``eigenvalues`` λ, ``rotated_mean`` m = Uᵀμ) and the path's schedule.

    Schedule values are computed once per time and shared by the problem's parts (:meth:`part`)."""

    eigenvalues: Tensor
    rotated_mean: Tensor
    schedule: Schedule
    zero_variances: int = -1  # of the whole target (for messages); −1: count them here
    _values: dict = field(default_factory=dict, compare=False, repr=False)
    _recent: dict = field(default_factory=dict, compare=False, repr=False)  # this part's last coefficients, by time

    def __post_init__(self):
        if self.zero_variances < 0:
            object.__setattr__(self, "zero_variances", int((self.eigenvalues == 0).sum()))
        object.__setattr__(self, "_centred", not bool(self.rotated_mean.any()))

    @property
    def dim(self) -> int:
        return self.eigenvalues.numel()

    @property
    def centred(self) -> bool:
        """The target's mean is 0 (in these eigendirections): every offset Q stays 0."""
        return self._centred

    def part(self, start: int, stop: int) -> GaussianProblem:
        """The eigendirections ``start:stop`` alone (each evolves on its own), sharing the schedule's values."""
        return GaussianProblem(self.eigenvalues[start:stop], self.rotated_mean[start:stop], self.schedule,
                               self.zero_variances, self._values)

    def scalars(self, t: float) -> tuple[float, float, float, float]:
        """``(α, σ, α̇, σσ̇)`` at t, computed once per time (:meth:`evaluate`, unless it was given t already)."""
        if t not in self._values:
            self.evaluate([t])
        return self._values[t]

    def evaluate(self, times: list[float]) -> None:
        """Compute the schedule's values at ``times`` in one vectorised call (a recursion knows its times before it
        runs; one call per time costs more than the step it serves at image dimension)."""
        new = [t for t in dict.fromkeys(times) if t not in self._values]
        if not new:
            return
        values = self.schedule(torch.tensor(new, dtype=F64))
        columns = (values.alpha, values.sigma, values.d_alpha, values.sigma_d_sigma)
        for t, *scalars in zip(new, *(column.expand(len(new)).tolist() for column in columns), strict=True):
            self._values[t] = tuple(scalars)

    def coefficients(self, t: float) -> tuple[Tensor, Tensor | float, Tensor, Tensor | float]:
        """``(a, B, c, α m)`` at t: the velocity is ``a z + B``, the score ``−(z − α m)/c`` (B and α m are the float
        0 on a centred target: nothing to compute). The last few times' are kept (a step's end is the next step's
        start; rk4's two middle stages share a time).

        A zero eigenvalue where σ_t = 0 (a rank-deficient target at its data end) makes c = 0: refused by name."""
        if t not in self._recent:
            if len(self._recent) >= 4:
                del self._recent[next(iter(self._recent))]
            self._recent[t] = self._coefficients(t)
        return self._recent[t]

    def _coefficients(self, t: float) -> tuple[Tensor, Tensor | float, Tensor, Tensor | float]:
        alpha, sigma, d_alpha, sigma_d_sigma = self.scalars(t)
        variance = marginal_variance(alpha, sigma, self.eigenvalues)
        if sigma == 0.0 and (self.zero_variances or alpha == 0.0):  # c = α²λ + σ² can vanish only here (λ ≥ 0)
            refuse_singular(variance, self.eigenvalues, f"t = {t:g}, where the sampler evaluates the field",
                            self.zero_variances)
        gain = velocity_gain(alpha, d_alpha, sigma_d_sigma, self.eigenvalues, variance)
        if self.centred:
            return gain, 0.0, variance, 0.0
        return gain, (d_alpha - gain * alpha) * self.rotated_mean, variance, alpha * self.rotated_mean

    def distinct(self) -> tuple[GaussianProblem, Tensor] | None:
        r"""The problem on the distinct eigenvalues, with the eigen-mean set to 1, and the index of each direction's
        eigenvalue among them; ``None`` where every eigenvalue is distinct.

        A linear sampler's law in direction j depends on λ_j alone and, linearly, on m_j: :math:`P_j = p(\lambda_j)`,
        :math:`W_j = w(\lambda_j)`, :math:`Q_j = q(\lambda_j)\,m_j` (every prediction is affine in (z, m) with
        coefficients that are functions of λ). An image spectrum repeats its eigenvalues (ADSN's 196 608 are 65 511
        distinct values, 131 072 of them 0), so the law is computed once per value (:func:`propagate_distinct`)."""
        values, index = torch.unique(self.eigenvalues, return_inverse=True)
        if values.numel() == self.dim:
            return None
        mean = torch.zeros_like(values) if self.centred else torch.ones_like(values)
        return GaussianProblem(values, mean, self.schedule, self.zero_variances), index


@dataclass(frozen=True)
class AffineLaw:
    """Per eigendirection, the state is ``P z₀ + Q + (independent Gaussian noise of variance W)``; Q and W may be the
    float 0 (a centred target's offsets, a deterministic sampler's noise): :meth:`dense` makes them tensors."""

    P: Tensor
    Q: Tensor | float = 0.0
    W: Tensor | float = 0.0

    @classmethod
    def identity(cls, dim: int) -> AffineLaw:
        return cls(torch.ones(dim, dtype=F64))

    def then(self, scale: Tensor | float, shift: Tensor | float = 0.0, noise_variance: Tensor | float = 0.0) -> AffineLaw:
        """Apply ``z ↦ scale·z + shift + noise`` after this map (a zero offset, shift or noise costs nothing)."""
        offset = self.Q if _is_zero(self.Q) else scale * self.Q
        variance = self.W if _is_zero(self.W) else scale**2 * self.W
        return AffineLaw(scale * self.P, offset if _is_zero(shift) else offset + shift,
                         variance if _is_zero(noise_variance) else variance + noise_variance)

    def dense(self) -> AffineLaw:
        """The same law with Q and W as tensors."""
        return AffineLaw(self.P, *(part if isinstance(part, Tensor) else torch.full_like(self.P, part)
                                   for part in (self.Q, self.W)))

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(torch.as_tensor(part)).all()) for part in (self.P, self.Q, self.W))


def _is_zero(value: Tensor | float) -> bool:
    return not isinstance(value, Tensor) and value == 0.0


@dataclass(frozen=True)
class LawRequest:
    """What a recursion needs besides the problem: the method, its resolved grid (as ``sample`` resolves it), its
    ``steps`` (for a method on its own grid), diffusion and options."""

    method: str
    grid: Tensor
    diffusion: Diffusion | None = None
    options: Mapping[str, float] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.grid) - 1


class LawRecursion(ABC):
    """How a method's exact output law on a Gaussian target is computed (declared as ``Method.exact_law``)."""

    differentiable: ClassVar[bool] = False
    """Whether :meth:`law_on_grid` gives the law as a differentiable function of the grid's times."""

    @abstractmethod
    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        """The method's map from its start ``z₀`` to its output, per eigendirection."""

    def law_on_grid(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        """The same map as a differentiable function of ``request.grid`` (float64, under autograd: the grid may
        require grad), for recursions that are :attr:`differentiable`."""
        raise NotImplementedError(f"{type(self).__name__} does not give its law as a differentiable function of the "
                                  "grid (a probed law runs the sampler's own code, whose steps are Python floats)")


class StepLaw(LawRecursion):
    """A one-step method: the law is the composition of one affine step per grid interval."""

    @abstractmethod
    def step(self, problem: GaussianProblem, state: AffineLaw, t: float, t_next: float, request: LawRequest) -> AffineLaw:
        """One step s → t of the method, applied to ``state``."""

    def evaluation_times(self, times: list[float]) -> list[float]:
        """The times at which the steps over the grid ``times`` read the problem's coefficients (the grid's)."""
        return times

    def step_maps(self, problem: GaussianProblem, request: LawRequest) -> tuple[Tensor, Tensor, Tensor]:
        r"""Every step's affine map at once, ``(scale, shift, noise variance)`` of shape ``(steps, d)`` (or
        broadcastable to it), as differentiable functions of ``request.grid``: step k is
        :math:`z \mapsto \text{scale}_k z + \text{shift}_k + \sqrt{\text{noise}_k}\,\xi_k`. A step law that writes
        them is :attr:`differentiable`."""
        raise NotImplementedError(f"{type(self).__name__} writes its steps with Python floats only")

    def law_on_grid(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        """The composition of :meth:`step_maps` in step order."""
        return compose_steps(problem.dim, *self.step_maps(problem, request))

    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        """Every step on each part of :data:`LAW_CHUNK` eigendirections in turn (they evolve independently: a part
        stays in cache for all its steps)."""
        times = request.grid.tolist()
        problem.evaluate(self.evaluation_times(times))
        parts = []
        for start in range(0, problem.dim, LAW_CHUNK):
            part = problem.part(start, min(start + LAW_CHUNK, problem.dim))
            state = AffineLaw.identity(part.dim)
            for t, t_next in zip(times[:-1], times[1:], strict=True):
                state = self.step(part, state, t, t_next, request)
            parts.append(state.dense())
        if len(parts) == 1:
            return parts[0]
        return AffineLaw(*(torch.cat(pieces) for pieces in zip(*((p.P, p.Q, p.W) for p in parts), strict=True)))


def compose_steps(dim: int, scales: Tensor, shifts: Tensor, noises: Tensor) -> AffineLaw:
    """The composition, in step order, of the steps ``z ↦ scale_k z + shift_k + √noise_k ξ_k`` (rows of the
    :meth:`StepLaw.step_maps` tensors, broadcast to ``(steps, dim)``)."""
    state = AffineLaw.identity(dim)
    scales = scales.expand(-1, dim)
    for scale, shift, noise in zip(scales, shifts.expand_as(scales), noises.expand_as(scales), strict=True):
        state = state.then(scale, shift, noise)
    return state.dense()


def propagate_distinct(recursion: LawRecursion, problem: GaussianProblem, request: LawRequest,
                       on_grid: bool = False) -> AffineLaw:
    """``recursion``'s law, computed once per distinct eigenvalue (:meth:`GaussianProblem.distinct`) and spread to
    the directions that share it: ``P = p[index]``, ``Q = q[index]·m``, ``W = w[index]``. ``on_grid``: by
    :meth:`LawRecursion.law_on_grid`, differentiable in the grid."""
    propagate = recursion.law_on_grid if on_grid else recursion.propagate
    distinct = problem.distinct()
    if distinct is None:
        return propagate(problem, request).dense()
    reduced, index = distinct
    law = propagate(reduced, request).dense()
    offset = law.Q[index] * problem.rotated_mean if not problem.centred else torch.zeros_like(problem.eigenvalues)
    return AffineLaw(law.P[index], offset, law.W[index])


LAW_CHUNK = 65536
"""Eigendirections per part in :meth:`StepLaw.propagate`: 512 KiB of float64 per vector, so a part's working vectors
stay near the cores for all its steps, and each operation is split over two threads (torch's grain is 32 768
elements). Measured on this 2-core EPYC (rk4, 1000 steps, ADSN's 65 511 distinct eigenvalues, 2 threads, 5 runs):
0.49–0.66 s at 2¹⁶ against 0.96–1.15 s at 2¹⁵ (``bench/suites/bench_exact_laws.py``)."""


def schedule_columns(schedule: Schedule, times: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(α, σ, α̇, σσ̇)`` at every time of the 1-D tensor ``times``, as columns ``(len(times), 1)`` (to broadcast
    against the eigenvalues), differentiable in the times."""
    values = schedule(times)
    return tuple(column.expand(times.shape).unsqueeze(-1) for column in
                 (values.alpha, values.sigma, values.d_alpha, values.sigma_d_sigma))


def grid_values(problem: GaussianProblem, times: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""``(α, σ, α̇, σσ̇)`` as columns ``(len(times), 1)`` and :math:`c = \alpha^2\lambda + \sigma^2` as
    ``(len(times), d)`` at every time of the 1-D tensor ``times``, differentiable in the times. The field is
    evaluated at these times: a zero c (a zero eigenvalue where σ_t = 0) is refused by name, as
    :meth:`GaussianProblem.coefficients` refuses it."""
    alpha, sigma, d_alpha, sigma_d_sigma = schedule_columns(problem.schedule, times)
    variance = marginal_variance(alpha, sigma, problem.eigenvalues)
    if not bool((variance > 0).all()):
        row = int((variance <= 0).any(-1).nonzero()[0])
        refuse_singular(variance[row], problem.eigenvalues, f"t = {float(times[row]):g}, where the sampler evaluates "
                        "the field", problem.zero_variances)
    return alpha, sigma, d_alpha, sigma_d_sigma, variance


def grid_coefficients(problem: GaussianProblem, times: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(a, B, c, α m)`` of :meth:`GaussianProblem.coefficients` at every time of the 1-D tensor ``times`` at once,
    shaped ``(len(times), d)``, as differentiable functions of the times (they may require grad)."""
    alpha, _, d_alpha, sigma_d_sigma, variance = grid_values(problem, times)
    gain = velocity_gain(alpha, d_alpha, sigma_d_sigma, problem.eigenvalues, variance)
    return gain, (d_alpha - gain * alpha) * problem.rotated_mean, variance, alpha * problem.rotated_mean


def _weighted_sum(weights, terms: list[Tensor]) -> Tensor | float:
    r""":math:`\sum_j w_jt_j` over the nonzero weights (0 where there are none)."""
    return sum((weight * term for weight, term in zip(weights, terms, strict=False) if weight != 0.0), 0.0)


@dataclass(frozen=True)
class TableauLaw(StepLaw):
    """The law of an explicit Runge–Kutta tableau (see the module docstring), with the engine's own stage times."""

    tableau: ButcherTableau
    differentiable: ClassVar[bool] = True

    def step_maps(self, problem, request):
        """The module docstring's stage recursion for all steps at once, in tensors of the grid's times."""
        t, t_next = request.grid[:-1], request.grid[1:]
        h = (t_next - t).unsqueeze(-1)
        gains: list[Tensor] = []
        offsets: list[Tensor] = []
        for c_i, a_i in zip(self.tableau.c, self.tableau.a, strict=True):
            gain, shift, _, _ = grid_coefficients(problem, stage_time(c_i, t, t_next, t_next - t))
            gains.append(gain * (1.0 + h * _weighted_sum(a_i, gains)))
            offsets.append(shift + gain * h * _weighted_sum(a_i, offsets))
        scale = 1.0 + h * _weighted_sum(self.tableau.b, gains)
        return scale, h * _weighted_sum(self.tableau.b, offsets), torch.zeros(1, dtype=F64)

    def evaluation_times(self, times):
        return [stage_time(c_i, t, t_next, t_next - t) for t, t_next in zip(times[:-1], times[1:], strict=True)
                for c_i in self.tableau.c]

    def step(self, problem, state, t, t_next, request):
        h = t_next - t
        centred = problem.centred  # then every shift is 0 and the offsets need no work
        gains: list[Tensor] = []
        offsets: list[Tensor] = []
        for c_i, a_i in zip(self.tableau.c, self.tableau.a, strict=True):
            gain, shift, _, _ = problem.coefficients(stage_time(c_i, t, t_next, h))
            gains.append(_times_one_plus(gain, _combination(a_i, gains), h))
            if not centred:
                earlier = _combination(a_i, offsets)
                offsets.append(shift if earlier is None else torch.addcmul(shift, gain, earlier[0], value=h * earlier[1]))
        scale = _one_plus(_combination(self.tableau.b, gains), h)
        if centred:
            return state.then(scale)
        shift = _combination(self.tableau.b, offsets)
        return state.then(scale, 0.0 if shift is None else torch.mul(shift[0], h * shift[1]))


Combination = tuple[Tensor, float]
r"""``(S, w)`` standing for :math:`wS`: a sum :math:`\sum_j w_jt_j` kept as its terms' scale and a factor."""


def _combination(weights, terms: list[Tensor]) -> Combination | None:
    r""":math:`\sum_j w_jt_j` over the nonzero weights (a tableau row is mostly zeros) as ``(S, w₀)`` with
    :math:`S = t_0 + \sum_{j>0}(w_j/w_0)t_j`: one term costs nothing, each further one a fused multiply-add; ``None``
    where every weight is 0."""
    nonzero = [(weight, term) for weight, term in zip(weights, terms, strict=False) if weight != 0.0]
    if not nonzero:
        return None
    (first_weight, first), rest = nonzero[0], nonzero[1:]
    if not rest:
        return first, first_weight
    total = torch.add(first, rest[0][1], alpha=rest[0][0] / first_weight)
    for weight, term in rest[1:]:
        total.add_(term, alpha=weight / first_weight)
    return total, first_weight


def _times_one_plus(gain: Tensor, earlier: Combination | None, h: float) -> Tensor:
    r""":math:`K_i = a_i(1 + h\sum_j a_{ij}K_j)` in one fused multiply-add (``None``: :math:`K_i = a_i`)."""
    return gain if earlier is None else torch.addcmul(gain, gain, earlier[0], value=h * earlier[1])


def _one_plus(increment: Combination | None, h: float) -> Tensor | float:
    r""":math:`1 + h\sum_i b_iK_i`."""
    return 1.0 if increment is None else torch.mul(increment[0], h * increment[1]).add_(1.0)


class EulerMaruyamaLaw(StepLaw):
    """The law of Euler–Maruyama for the reverse SDE with the request's diffusion g (module docstring)."""

    differentiable: ClassVar[bool] = True

    def step_maps(self, problem, request):
        """The module docstring's step for all steps at once, in tensors of the grid's times."""
        t = request.grid[:-1]
        h = (request.grid[1:] - t).unsqueeze(-1)
        gain, shift, variance, alpha_mean = grid_coefficients(problem, t)
        g_squared = request.diffusion(problem.schedule(t)).unsqueeze(-1) ** 2
        scale = 1.0 + h * (gain - 0.5 * g_squared / variance)
        return scale, h * (shift + 0.5 * g_squared * alpha_mean / variance), g_squared * h

    def step(self, problem, state, t, t_next, request):
        h = t_next - t
        gain, shift, variance, alpha_mean = problem.coefficients(t)
        g = float(request.diffusion(problem.schedule(t)))
        drift_gain = gain - 0.5 * g * g / variance
        drift_shift = shift + 0.5 * g * g * alpha_mean / variance
        return state.then(1.0 + h * drift_gain, h * drift_shift, g * g * h)


class NoiseProbe:
    """Brownian increments for probing a sampler's law (see :class:`ProbedLaw`); passed where a sampler takes its
    ``generator``, and read by :func:`fmcore.solvers.sde.brownian_increment`.

    Draw k returns, for a batch of ``3 + capacity`` rows of dimension d: 0 in rows 0 and 1, a seeded N(0, I) vector
    in row 2 (recorded in :attr:`random_draws`), and 1 in row ``3 + k`` only."""

    def __init__(self, dim: int, capacity: int, seed: int):
        self.dim, self.capacity = dim, capacity
        self.generator = torch.Generator().manual_seed(seed)
        self.random_draws: list[Tensor] = []

    @property
    def draws(self) -> int:
        return len(self.random_draws)

    def draw(self, shape: torch.Size, like: Tensor) -> Tensor:
        if tuple(shape) != (3 + self.capacity, self.dim):
            raise RuntimeError(f"a noise probe draws ({3 + self.capacity}, {self.dim}) increments, asked {tuple(shape)}")
        if self.draws >= self.capacity:
            raise RuntimeError(f"the sampler drew more than {self.capacity} Brownian increments (its Method's "
                               "draws_per_step per step is the most a probed sampler may draw)")
        increment = torch.zeros(3 + self.capacity, self.dim, dtype=F64)
        random = torch.randn(self.dim, dtype=F64, generator=self.generator)
        increment[2] = random
        increment[3 + self.draws] = 1.0
        self.random_draws.append(random)
        return increment.to(dtype=like.dtype, device=like.device)


PROBE_SEED = 0
"""Seed of the random probe (start and increments) that checks a probed map is diagonal."""
DIAGONAL_TOLERANCE = 1e-9
"""A probed map is refused as not diagonal when the random probe is off ``P r + Q + Σ R_k r_k`` by more than this,
relative to the size of that prediction (float64 round-off over the probe's run is ~1e-13 here)."""


@dataclass(frozen=True)
class ProbedLaw(LawRecursion):
    """The law of a linear sampler read off its own float64 run on 3 + steps · draws_per_step probes (module
    docstring): a deterministic sampler needs the first three rows only; each Brownian increment it draws adds one
    row. The run must be affine and diagonal to ``tolerance`` (relative): :data:`DIAGONAL_TOLERANCE` for this
    suite's float64 samplers; a peer that rounds through float32 tables (diffusers) needs about 1e-5, and its law is
    that accurate."""

    tolerance: float = DIAGONAL_TOLERANCE

    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        from ..fields import AnalyticField  # the field module builds on the targets, which build on nothing here
        from ..targets import GaussianMixture
        from .counting import CountingField
        from .methods import SolveRequest, get_method

        method = get_method(request.method)
        dim = problem.dim
        capacity = request.steps * method.draws_per_step if method.draws_noise(request.options) else 0
        noise = NoiseProbe(dim, capacity, PROBE_SEED)
        random_start = torch.randn(dim, dtype=F64, generator=torch.Generator().manual_seed(PROBE_SEED + 1))
        probes = torch.zeros(3 + capacity, dim, dtype=F64)
        probes[1], probes[2] = 1.0, random_start
        # The axis-aligned Gaussian with the target's spectrum and rotated mean: the same law in eigen coordinates.
        target = GaussianMixture(torch.ones(1, dtype=F64), problem.rotated_mean.unsqueeze(0),
                                 problem.eigenvalues.unsqueeze(0), covariance_type="diag")
        grid = request.grid
        counting = CountingField(AnalyticField(target, problem.schedule),
                                 interval=(float(grid.min()), float(grid.max())))
        solve = SolveRequest(counting, probes, grid, None, None, request.diffusion, noise, False, dict(request.options))
        output, _, _ = method.integrate(solve)
        offset, gain = output[0], output[1] - output[0]
        responses = output[3:3 + noise.draws] - offset
        predicted = gain * random_start + offset
        for response, random in zip(responses, noise.random_draws, strict=True):
            predicted = predicted + response * random
        scale = max(1.0, float(predicted.abs().max()))
        residual = float((output[2] - predicted).abs().max())
        if residual > self.tolerance * scale:
            raise RuntimeError(f"{request.method} is not an affine map diagonal in the target's eigenbasis: a random probe "
                               f"is off it by {residual:.3g} (allowed {self.tolerance:g} × {scale:.3g}). It couples "
                               "eigendirections, or it is not computed in float64")
        return AffineLaw(gain, offset, (responses**2).sum(0))


PROBED = ProbedLaw()
"""The declaration of a method whose law is probed (``Method(..., exact_law=PROBED)``)."""
