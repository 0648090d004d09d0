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

The recursion is the sampler's law in exact (float64) arithmetic; rotating the target does not change it (every
sampler here combines x and the field's predictions linearly, and ξ's law is rotation invariant).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..schedules import Schedule
from .diffusions import Diffusion
from .tableaus import ButcherTableau

__all__ = ["GaussianProblem", "AffineLaw", "LawRequest", "LawRecursion", "StepLaw", "TableauLaw", "EulerMaruyamaLaw",
           "ProbedLaw", "NoiseProbe", "PROBED"]

F64 = torch.float64


@dataclass(frozen=True)
class GaussianProblem:
    """The Gaussian target in its eigenbasis (``eigenvalues`` λ, ``rotated_mean`` m = Uᵀμ) and the path's schedule."""

    eigenvalues: Tensor
    rotated_mean: Tensor
    schedule: Schedule

    @property
    def dim(self) -> int:
        return self.eigenvalues.numel()

    def coefficients(self, t: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a, B, c, α m)`` at t: the velocity is ``a z + B``, the score ``−(z − α m)/c``.

        A zero eigenvalue where σ_t = 0 (a rank-deficient target at its data end) makes c = 0: refused by name."""
        values = self.schedule(t)
        alpha, d_alpha = float(values.alpha), float(values.d_alpha)
        variance = alpha**2 * self.eigenvalues + float(values.sigma) ** 2
        if not bool((variance > 0).all()):
            raise ValueError(
                f"the target is rank-deficient ({int((self.eigenvalues == 0).sum())} zero variance(s)) and σ_t = 0 at "
                f"t = {t:g}, where the sampler evaluates the field: the velocity is singular there. Stop before it "
                "(a grid with t1 < 1)")
        gain = (alpha * d_alpha * self.eigenvalues + float(values.sigma_d_sigma)) / variance
        return gain, (d_alpha - gain * alpha) * self.rotated_mean, variance, alpha * self.rotated_mean


@dataclass(frozen=True)
class AffineLaw:
    """Per eigendirection, the state is ``P z₀ + Q + (independent Gaussian noise of variance W)``."""

    P: Tensor
    Q: Tensor
    W: Tensor

    @classmethod
    def identity(cls, dim: int) -> AffineLaw:
        return cls(torch.ones(dim, dtype=F64), torch.zeros(dim, dtype=F64), torch.zeros(dim, dtype=F64))

    def then(self, scale: Tensor | float, shift: Tensor | float, noise_variance: Tensor | float = 0.0) -> AffineLaw:
        """Apply ``z ↦ scale·z + shift + noise`` after this map."""
        return AffineLaw(scale * self.P, scale * self.Q + shift, scale**2 * self.W + noise_variance)

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(part).all()) for part in (self.P, self.Q, self.W))


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

    @abstractmethod
    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        """The method's map from its start ``z₀`` to its output, per eigendirection."""


class StepLaw(LawRecursion):
    """A one-step method: the law is the composition of one affine step per grid interval."""

    @abstractmethod
    def step(self, problem: GaussianProblem, state: AffineLaw, t: float, t_next: float, request: LawRequest) -> AffineLaw:
        """One step s → t of the method, applied to ``state``."""

    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        times = request.grid.tolist()
        state = AffineLaw.identity(problem.dim)
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            state = self.step(problem, state, t, t_next, request)
        return state


@dataclass(frozen=True)
class TableauLaw(StepLaw):
    """The law of an explicit Runge–Kutta tableau (see the module docstring), with the engine's own stage times."""

    tableau: ButcherTableau

    def step(self, problem, state, t, t_next, request):
        h = t_next - t
        gains: list[Tensor] = []
        offsets: list[Tensor] = []
        for c_i, a_i in zip(self.tableau.c, self.tableau.a, strict=True):
            stage_time = t_next if c_i == 1.0 else t + c_i * h  # as integrate_explicit_rk places it
            gain, shift, _, _ = problem.coefficients(stage_time)
            K = 1.0 + h * sum((a_ij * K_j for a_ij, K_j in zip(a_i, gains, strict=False)), torch.zeros_like(gain))
            L = h * sum((a_ij * L_j for a_ij, L_j in zip(a_i, offsets, strict=False)), torch.zeros_like(gain))
            gains.append(gain * K)
            offsets.append(gain * L + shift)
        scale = 1.0 + h * sum(b_i * K_i for b_i, K_i in zip(self.tableau.b, gains, strict=True))
        shift = h * sum(b_i * L_i for b_i, L_i in zip(self.tableau.b, offsets, strict=True))
        return state.then(scale, shift)


class EulerMaruyamaLaw(StepLaw):
    """The law of Euler–Maruyama for the reverse SDE with the request's diffusion g (module docstring)."""

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
            raise RuntimeError(f"the sampler drew more than {self.capacity} Brownian increments (one per step is "
                               "the most a probed sampler may draw)")
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


class ProbedLaw(LawRecursion):
    """The law of a linear sampler read off its own float64 run on 3 + steps probes (module docstring): a
    deterministic sampler needs the first three rows only; each Brownian increment it draws adds one row."""

    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        from ..fields import AnalyticField  # the field module builds on the targets, which build on nothing here
        from ..targets import GaussianMixture
        from .counting import CountingField
        from .methods import SolveRequest, get_method

        method = get_method(request.method)
        dim = problem.dim
        capacity = request.steps if method.draws_noise(request.options) else 0
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
        if residual > DIAGONAL_TOLERANCE * scale:
            raise RuntimeError(f"{request.method} coupled the target's eigendirections (a random probe is off its "
                               f"diagonal map by {residual:.3g}): its map is not diagonal")
        return AffineLaw(gain, offset, (responses**2).sum(0))


PROBED = ProbedLaw()
"""The declaration of a method whose law is probed (``Method(..., exact_law=PROBED)``)."""
