r"""Analytic targets: Gaussian mixtures whose marginals along any affine path are known exactly.

A mixture :math:`p_1 = \sum_k w_k N(\mu_k, \Sigma_k)` with :math:`\Sigma_k = U_k \operatorname{diag}(\lambda_k) U_k^\top`
has, under :math:`x_t = \alpha_t x_1 + \sigma_t \varepsilon`, the marginal (``docs/design.md``, "Analytic targets")

.. math::
    p_t = \sum_k w_k N(\alpha_t\mu_k,\ C_k(t)), \qquad
    C_k(t) = \alpha_t^2\Sigma_k + \sigma_t^2 I = U_k \operatorname{diag}(c_k) U_k^\top,\quad
    c_k = \alpha_t^2\lambda_k + \sigma_t^2 .

So every closed form below is a rotation into each component's eigenbasis, a diagonal scaling and a
rotation back: no factorisation per step. With :math:`r_k = x - \alpha_t\mu_k`,
:math:`z_k = U_k^\top r_k` and responsibilities
:math:`\gamma_k(x) = \operatorname{softmax}_k(\log w_k + \log N(x; \alpha_t\mu_k, C_k))`:

* score :math:`s(x) = -\sum_k \gamma_k C_k^{-1} r_k`
* data prediction :math:`E[x_1|x_t = x] = \sum_k \gamma_k(\mu_k + \alpha_t \Sigma_k C_k^{-1} r_k)`
* noise prediction :math:`E[\varepsilon|x_t = x] = \sigma_t\sum_k \gamma_k C_k^{-1} r_k = -\sigma_t s(x)`
* velocity :math:`u_t(x) = \dot\alpha_t E[x_1|x] + \dot\sigma_t E[\varepsilon|x]
  = \dot\alpha_t\sum_k\gamma_k\mu_k + \sum_k \gamma_k U_k \operatorname{diag}(a_k) z_k`,
  :math:`a_k = (\alpha_t\dot\alpha_t\lambda_k + \sigma_t\dot\sigma_t)/c_k` — no division by α or σ.

The eigendecomposition happens once, at construction. Parameters are stored in float64 and cast
(once, then cached) to the dtype and device of the points they are evaluated at.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ._checks import (
    TimeLike,
    as_float64,
    as_generator,
    as_time,
    check_allocation,
    check_choice,
    check_instance,
    check_int,
    check_number,
    check_samples,
    check_seed,
)
from ._registry import Registry
from .schedules import Schedule, ScheduleValues, get_schedule

__all__ = ["GaussianMixture", "Gaussian", "get_target", "register_target", "TARGETS"]

_LOG_2PI = math.log(2.0 * math.pi)
_DATA = get_schedule("cond_ot")  # at t = 1, α = 1 and σ = 0 exactly: p_1 is the target itself


@dataclass(frozen=True)
class _Parameters:
    """Mixture parameters cast to one dtype/device; ``eigenvectors`` is None for axis-aligned mixtures."""

    log_weights: Tensor  # (K,)
    means: Tensor  # (K, d)
    eigenvalues: Tensor  # (K, d)
    eigenvectors: Tensor | None  # (K, d, d), columns are eigenvectors
    stacked_eigenvectors: Tensor | None  # (d, K·d): [U_1 | U_2 | ...], for one GEMM into every eigenbasis
    rotated_means: Tensor  # (K, d): U_kᵀ μ_k


@dataclass(frozen=True)
class _Whitening:
    """What depends on time only: computed once per call for a scalar t."""

    values: ScheduleValues  # 0-d or (n,)
    std: Tensor  # (K, d) or (n, K, d): √c_k, c_k = α² λ_k + σ²
    shift: Tensor  # same shape: α U_kᵀ μ_k / √c_k
    matrix: Tensor | None  # (d, K·d): stacked U_k diag(c_k)^(-1/2), scalar time and rotated components only
    log_det: Tensor  # (K,) or (n, K): ½ log det C_k


@dataclass(frozen=True)
class _Components:
    """Per-component quantities at one (t, x): everything in each component's eigenbasis."""

    values: ScheduleValues  # schedule values, 0-d or (n,)
    whitened: Tensor  # (n, K, d): w_k = c_k^(-1/2) U_kᵀ (x − α μ_k)
    std: Tensor  # (K, d) or (n, K, d): √c_k, c_k = α² λ_k + σ²
    responsibilities: Tensor  # (n, K): γ_k(x)
    log_density: Tensor  # (n,): log p_t(x)


class GaussianMixture:
    r"""A mixture of K Gaussians in d dimensions: :math:`\sum_k w_k N(\mu_k, \Sigma_k)`.

    Args:
        weights: ``(K,)``, non-negative, summing to one (within 1e-6).
        means: ``(K, d)``.
        covs: full ``(K, d, d)`` (symmetric positive definite), diagonal ``(K, d)`` or isotropic ``(K,)``
            (entries ≥ 0: a zero variance is a rank-deficient direction, see :attr:`rank_deficient`).
        covariance_type: ``"full"``, ``"diag"`` or ``"iso"``; read from the shape of ``covs`` when None. It must
            be given when the shape is ambiguous: ``covs`` of shape ``(K, d)`` with ``K = d > 1`` could be K
            diagonals or one full ``(d, d)`` matrix meant for every component.

    A full covariance is *numerically singular* when its smallest eigenvalue from ``eigh`` is within
    :data:`EIGENVALUE_FLOOR` times its largest of zero (either sign): ``eigh`` resolves eigenvalues only to about
    :math:`\epsilon\,\lambda_{max}`, so such an eigenvalue could be zero (or negative), and the score at t = 1
    would be noise amplified by :math:`1/\lambda_{min}`. Such covariances are refused, never silently used:
    regularise explicitly (add :math:`\delta I`) if that is what is meant. Diagonal and isotropic variances are
    taken as given (only ≥ 0 is required): no eigendecomposition rounds them, so an exact zero is a true zero.
    """

    cpu_chunk_elements: int = 2**18
    """On the CPU, closed forms are evaluated about this many (point, component, dimension) entries at a time: 1 MiB
    in float32, 2 MiB in float64, within a 2 MiB L2. Measured (velocity, 1 thread, interleaved medians) against 2²⁰:
    K = 16, d = 16, n = 10⁵: 62 vs 70 ms (float32), 109 vs 169 ms (float64); 8-d Gaussian, float64: 8.4 vs 20 ms;
    seed 000's mixture: within 4 %."""

    def __init__(self, weights, means, covs, covariance_type: str | None = None):
        weights = as_float64("weights", weights)
        means = as_float64("means", means)
        covs = as_float64("covs", covs)
        if weights.dim() != 1 or weights.numel() == 0:
            raise ValueError(f"weights must have shape (K,) with K ≥ 1, got shape {tuple(weights.shape)}")
        if means.dim() != 2 or means.shape[0] != weights.shape[0] or means.shape[1] == 0:
            raise ValueError(
                f"means must have shape (K, d) = ({weights.shape[0]}, d) to match weights, got {tuple(means.shape)}"
            )
        if bool((weights < 0).any()):
            raise ValueError(f"weights must be ≥ 0, got {weights.tolist()}")
        if abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1 (within 1e-6), they sum to {float(weights.sum())!r}")
        count, dim = means.shape
        eigenvalues, eigenvectors = _eigendecompose(covs, count, dim, covariance_type)
        self._init_from_eigen(weights / weights.sum(), means, eigenvalues, eigenvectors)

    @classmethod
    def from_eigendecomposition(cls, weights, means, eigenvalues, eigenvectors=None) -> GaussianMixture:
        """Build from :math:`\\Sigma_k = U_k \\operatorname{diag}(\\lambda_k) U_k^\\top` without a new eigh.

        ``eigenvalues`` ``(K, d)`` must be > 0 (≥ 0 when axis-aligned: a rank-deficient target, see
        :attr:`rank_deficient`); ``eigenvectors`` ``(K, d, d)`` must be orthogonal to within
        :data:`ORTHOGONALITY_TOLERANCE` (``max |UᵀU − I|``; columns are eigenvectors); None means axis-aligned.
        """
        if eigenvectors is None:
            return cls(weights, means, eigenvalues, covariance_type="diag")
        eigenvectors = as_float64("eigenvectors", eigenvectors)
        eigenvalues = as_float64("eigenvalues", eigenvalues)
        count = eigenvalues.shape[0] if eigenvalues.dim() == 2 else -1
        dim = eigenvalues.shape[1] if eigenvalues.dim() == 2 else -1
        if eigenvalues.dim() != 2 or eigenvectors.shape != (count, dim, dim):
            raise ValueError(
                f"eigenvalues must have shape (K, d) and eigenvectors (K, d, d) to match; got "
                f"{tuple(eigenvalues.shape)} and {tuple(eigenvectors.shape)}"
            )
        if bool((eigenvalues <= 0).any()):
            raise ValueError(f"eigenvalues must be > 0; the smallest is {float(eigenvalues.min()):.3g}")
        identity = torch.eye(dim, dtype=torch.float64)
        departure = float((eigenvectors.transpose(-1, -2) @ eigenvectors - identity).abs().amax())
        if departure > ORTHOGONALITY_TOLERANCE:
            raise ValueError(
                f"eigenvectors must be orthogonal (max |UᵀU − I| ≤ {ORTHOGONALITY_TOLERANCE:g}); got {departure:.3g}. "
                "Pass the covariances to GaussianMixture(...) instead if the basis is not orthonormal"
            )
        covs = eigenvectors @ torch.diag_embed(eigenvalues) @ eigenvectors.transpose(-1, -2)
        mixture = cls.__new__(cls)
        # Validate everything through the ordinary constructor's checks, then keep the given basis.
        reference = cls(weights, means, covs, covariance_type="full")
        mixture._init_from_eigen(reference.weights, reference.means, eigenvalues, eigenvectors)
        return mixture

    def _init_from_eigen(self, weights: Tensor, means: Tensor, eigenvalues: Tensor, eigenvectors: Tensor | None):
        self.weights = weights
        self.means = means
        self.eigenvalues = eigenvalues
        self.eigenvectors = eigenvectors
        self.rank_deficient = bool((eigenvalues == 0).any())
        """Some component has a zero variance (axis-aligned only): its marginal at a time where σ_t = 0 (the data end
        of most paths) has no density, and every closed form there is refused with a message saying so."""
        self._cache: dict[tuple[torch.dtype, torch.device], _Parameters] = {}

    # ------------------------------------------------------------------ basic properties

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def covariances(self) -> Tensor:
        """Full ``(K, d, d)`` covariances, rebuilt from the eigendecomposition (float64)."""
        if self.eigenvectors is None:
            return torch.diag_embed(self.eigenvalues)
        return self.eigenvectors @ torch.diag_embed(self.eigenvalues) @ self.eigenvectors.transpose(-1, -2)

    def mean(self) -> Tensor:
        """Exact mean :math:`\\sum_k w_k\\mu_k` (float64)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Exact covariance :math:`\\sum_k w_k\\Sigma_k + \\sum_k w_k(\\mu_k - m)(\\mu_k - m)^\\top` (float64).

        Written with centred means, so means far from the origin (say 1e200) do not cancel catastrophically;
        ``ValueError`` when the covariance itself is beyond float64's range."""
        centred = self.means - self.mean()
        covariance = torch.einsum("k,kij->ij", self.weights, self.covariances)
        covariance = covariance + torch.einsum("k,ki,kj->ij", self.weights, centred, centred)
        if not bool(torch.isfinite(covariance).all()):
            raise ValueError("the mixture's covariance overflows float64: its components are too far apart to represent it")
        return 0.5 * (covariance + covariance.T)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"

    def _parameters(self, like: Tensor) -> _Parameters:
        key = (like.dtype, like.device)
        if key not in self._cache:
            cast = lambda tensor: tensor.to(dtype=like.dtype, device=like.device)  # noqa: E731
            eigenvectors = None if self.eigenvectors is None else cast(self.eigenvectors)
            if eigenvectors is None:
                stacked, rotated_means = None, cast(self.means)
            else:
                stacked = eigenvectors.permute(1, 0, 2).reshape(self.dim, self.num_components * self.dim)
                rotated_means = cast(torch.einsum("kij,ki->kj", self.eigenvectors, self.means))
            self._cache[key] = _Parameters(
                log_weights=cast(torch.log(self.weights)),
                means=cast(self.means),
                eigenvalues=cast(self.eigenvalues),
                eigenvectors=eigenvectors,
                stacked_eigenvectors=stacked,
                rotated_means=rotated_means,
            )
        return self._cache[key]

    # ------------------------------------------------------------------ sampling and density

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples, on the CPU in float64 (``docs/design.md``, "Conventions": cast/move afterwards).

        Component indices come from ``torch.multinomial`` and the Gaussian part from ``torch.randn``,
        both with ``generator``, so a seed fixes the sample on every device.
        """
        n = check_int("n", n, minimum=0)
        generator = as_generator(generator)
        check_allocation("n", n, f"{n} samples in d = {self.dim} (and their working copies)", 4 * 8.0 * n * self.dim)
        if n == 0:
            return torch.empty(0, self.dim, dtype=torch.float64)
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        scaled = noise * torch.sqrt(self.eigenvalues[components])
        if self.eigenvectors is not None:  # each component's points rotated by its basis: O(n·d²) time, O(n·d) memory
            rotated = torch.empty_like(scaled)
            for k in components.unique().tolist():
                chosen = components == k
                rotated[chosen] = scaled[chosen] @ self.eigenvectors[k].T
            scaled = rotated
        return self.means[components] + scaled

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact :math:`\\log p_1(x)`, ``(n,)``, by log-sum-exp over components."""
        check_samples("x", x, self.dim)
        return self.marginal_log_prob(1.0, x, _DATA)

    def component_posteriors(self, x: Tensor) -> Tensor:
        """:math:`P(k | x_1 = x)`, ``(n, K)``, under the target itself."""
        check_samples("x", x, self.dim)
        return self._evaluate(1.0, x, _DATA, lambda parts, params: parts.responsibilities)

    def _whitening(self, values: ScheduleValues, params: _Parameters) -> _Whitening:
        r"""Per-time work, done once per call: :math:`\sqrt{c_k}`, the shift :math:`\alpha\tilde\mu_k/\sqrt{c_k}` and,
        for a scalar time, the whitening matrix :math:`[U_1 \operatorname{diag}(c_1)^{-1/2} | \dots]`."""
        alpha, sigma = _per_point(values.alpha), _per_point(values.sigma)
        std = torch.sqrt(alpha**2 * params.eigenvalues + sigma**2)  # (K, d) or (n, K, d)
        if self.rank_deficient and not bool((std > 0).all()):
            zero = (values.sigma == 0).reshape(-1)
            times = "a time" if values.sigma.dim() == 0 else f"{int(zero.sum())} time(s)"
            raise ValueError(
                f"the target is rank-deficient ({int((self.eigenvalues == 0).sum())} zero variance(s)) and σ_t = 0 at "
                f"{times} asked for (the data end): there its marginal has no density, so the score, velocity and "
                "predictions are singular. Stop before it (a grid with t1 < 1, e.g. get_grid(..., t1=1 - 1e-3))")
        matrix = None
        if std.dim() == 2 and params.stacked_eigenvectors is not None:
            matrix = params.stacked_eigenvectors / std.reshape(1, -1)
        return _Whitening(values, std, alpha * params.rotated_means / std, matrix, torch.log(std).sum(-1))

    def _components(self, x: Tensor, whitening: _Whitening, params: _Parameters, check: bool = True) -> _Components:
        r"""Whitened residuals :math:`w_k = \operatorname{diag}(c_k)^{-1/2} U_k^\top (x - \alpha\mu_k)` ``(n, K, d)``,
        responsibilities and :math:`\log p_t(x)`.

        For a scalar time the scaling and the shift are folded into one ``addmm`` against the whitening matrix,
        so the only pass over the ``(n, K, d)`` array is the GEMM's own output. ``check=False`` skips the finiteness
        check of :math:`\log p_t` (a host synchronisation).
        """
        n = x.shape[0]
        if whitening.matrix is not None:
            shift = whitening.shift.reshape(-1)
            whitened = torch.addmm(shift, x, whitening.matrix, beta=-1).view(n, self.num_components, self.dim)
        else:
            whitened = self._rotate_in(x, params) / whitening.std - whitening.shift
        squared_norm = (whitened * whitened).sum(-1)  # w*w: measured several times faster than .square() here
        log_joint = params.log_weights - 0.5 * squared_norm - whitening.log_det - 0.5 * self.dim * _LOG_2PI
        responsibilities, log_density = _normalise_log_weights(log_joint)
        if check and not bool(torch.isfinite(log_density).all()):
            _explain_non_finite(x, log_density)
        return _Components(whitening.values, whitened, whitening.std, responsibilities, log_density)

    def _rotate_in(self, x: Tensor, params: _Parameters) -> Tensor:
        """:math:`U_k^\\top x` for every k, ``(n, K, d)``: one GEMM against the stacked eigenvectors."""
        n = x.shape[0]
        if params.stacked_eigenvectors is None:
            return x.unsqueeze(1).expand(n, self.num_components, self.dim)
        return (x @ params.stacked_eigenvectors).view(n, self.num_components, self.dim)

    def _combine(self, parts: _Components, gain: Tensor, params: _Parameters) -> Tensor:
        r""":math:`\sum_k \gamma_k U_k \operatorname{diag}(g_k) w_k`, ``(n, d)``, for a gain ``(K, d)`` or ``(n, K, d)``.

        Every closed form is one of these: a gain of :math:`-c^{-1/2}` gives the score, etc. For a scalar
        time the gain is folded into the rotation matrix, so this is one GEMM.
        """
        weighted = parts.responsibilities.unsqueeze(-1) * parts.whitened
        n = weighted.shape[0]
        if gain.dim() == 2 and params.stacked_eigenvectors is not None:
            return weighted.reshape(n, -1) @ (params.stacked_eigenvectors.T * gain.reshape(-1, 1))
        weighted = weighted * gain
        if params.stacked_eigenvectors is None:
            return weighted.sum(dim=1)
        return weighted.reshape(n, -1) @ params.stacked_eigenvectors.T

    # ------------------------------------------------------------------ the marginal path

    def marginal(self, t: TimeLike, schedule: Schedule) -> GaussianMixture:
        """The mixture :math:`p_t` of :math:`x_t` (scalar ``t``): means :math:`\\alpha_t\\mu_k`, covariances :math:`C_k(t)`."""
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
        t_tensor = as_time(t)
        if t_tensor.dim() != 0:
            raise ValueError(f"marginal needs a scalar t, got shape {tuple(t_tensor.shape)}")
        values = schedule(t_tensor)
        eigenvalues = values.alpha**2 * self.eigenvalues + values.sigma**2
        if bool((eigenvalues <= 0).any()):
            raise ValueError(f"the marginal of {schedule!r} at t = {float(t_tensor)} is degenerate (zero covariance)")
        return GaussianMixture.from_eigendecomposition(
            self.weights, values.alpha * self.means, eigenvalues, self.eigenvectors
        )

    def _evaluate(self, t: TimeLike, x: Tensor, schedule: Schedule, compute):
        """Validate ``(t, x)``, then apply ``compute(parts, params)`` — in cache-sized chunks of points on the CPU.

        The per-component arrays are ``(n, K, d)``; on the CPU, memory bandwidth, not arithmetic, bounds
        their cost, so they are built ``chunk`` points at a time (about :attr:`cpu_chunk_elements` entries,
        sized by measurement on a 2-core EPYC with 2 MiB of L2 per core). Rows are independent,
        so chunking changes no result. On CUDA the whole batch goes at once.
        """
        check_samples("x", x, self.dim)
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
        t_tensor = as_time(t, like=x, n=x.shape[0])
        n = x.shape[0]
        if n == 0:  # the same shapes and dtypes as for one point, with no rows
            one = torch.zeros(1, self.dim, dtype=x.dtype, device=x.device)
            output = self._evaluate(t_tensor if t_tensor.dim() == 0 else 0.5, one, schedule, compute)
            return tuple(part[:0] for part in output) if isinstance(output, tuple) else output[:0]
        params = self._parameters(x)
        if t_tensor.dim() == 0:  # one time for every point: its per-time work is shared by all chunks
            shared = self._whitening(schedule.values(t_tensor), params)
            return self._over_chunks(x, params, lambda start, stop: shared, compute)
        return self._over_chunks(
            x, params, lambda start, stop: self._whitening(schedule.values(t_tensor[start:stop]), params), compute
        )

    def _over_chunks(self, x: Tensor, params: _Parameters, whitening_of, compute, check: bool = True):
        """``compute(parts, params)`` for chunks of the points ``x`` (``n ≥ 1``), concatenated: about
        :attr:`cpu_chunk_elements` ``(n, K, d)`` entries per chunk on the CPU, all points at once elsewhere.
        ``whitening_of(start, stop)`` is a chunk's per-time work; ``check`` as in :meth:`_components`."""
        chunk = x.shape[0] if x.device.type != "cpu" else max(1, self.cpu_chunk_elements // (self.num_components * self.dim))
        outputs = [compute(self._components(x[start : start + chunk], whitening_of(start, start + chunk), params, check), params)
                   for start in range(0, x.shape[0], chunk)]
        if len(outputs) == 1:
            return outputs[0]
        if isinstance(outputs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))
        return torch.cat(outputs)

    def marginal_log_prob(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`\\log p_t(x)`, ``(n,)``."""
        return self._evaluate(t, x, schedule, lambda parts, params: parts.log_density)

    def score(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`\\nabla_x \\log p_t(x) = -\\sum_k\\gamma_k C_k^{-1} r_k`, ``(n, d)``. Needs :math:`C_k(t)` invertible."""
        return self._evaluate(t, x, schedule, self._score_from)

    def _score_from(self, parts: _Components, params: _Parameters) -> Tensor:
        return self._combine(parts, -1.0 / parts.std, params)

    def noise_prediction(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`E[\\varepsilon | x_t = x] = \\sigma_t\\sum_k\\gamma_k C_k^{-1} r_k = -\\sigma_t s(x)` (Tweedie)."""

        def compute(parts: _Components, params: _Parameters) -> Tensor:
            return self._combine(parts, _per_point(parts.values.sigma) / parts.std, params)

        return self._evaluate(t, x, schedule, compute)

    def data_prediction(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`E[x_1 | x_t = x] = \\sum_k\\gamma_k(\\mu_k + \\alpha_t\\Sigma_k C_k^{-1} r_k)`."""

        def compute(parts: _Components, params: _Parameters) -> Tensor:
            gain = _per_point(parts.values.alpha) * params.eigenvalues / parts.std
            return parts.responsibilities @ params.means + self._combine(parts, gain, params)

        return self._evaluate(t, x, schedule, compute)

    def velocity(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """Marginal velocity :math:`u_t(x) = \\dot\\alpha_t E[x_1|x] + \\dot\\sigma_t E[\\varepsilon|x]`, ``(n, d)``."""
        return self._evaluate(t, x, schedule, self._velocity_from)

    def velocity_and_score(self, t: TimeLike, x: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor]:
        """Both at once, sharing the responsibilities (what the reverse SDE's drift needs)."""
        return self._evaluate(
            t, x, schedule, lambda parts, params: (self._velocity_from(parts, params), self._score_from(parts, params))
        )

    def _velocity_gain(self, parts: _Components, params: _Parameters, check: bool = True) -> Tensor:
        r"""The velocity's gain :math:`a_k\sqrt{c_k} = (\alpha\dot\alpha\lambda_k + \sigma\dot\sigma)/\sqrt{c_k}`."""
        values = parts.values
        if check:
            _check_velocity_finite(values)
        alpha, d_alpha = _per_point(values.alpha), _per_point(values.d_alpha)
        return (alpha * d_alpha * params.eigenvalues + _per_point(values.sigma_d_sigma)) / parts.std

    def _velocity_from(self, parts: _Components, params: _Parameters, check: bool = True) -> Tensor:
        d_alpha = _per_point(parts.values.d_alpha).squeeze(-1)  # 0-d or (n, 1)
        mean_part = d_alpha * (parts.responsibilities @ params.means)
        return mean_part + self._combine(parts, self._velocity_gain(parts, params, check), params)

    def velocity_unchecked(self, t: Tensor, x: Tensor, schedule: Schedule) -> Tensor:
        """:meth:`velocity` with no validation and no host synchronisation: what a CUDA graph can capture and
        ``torch.compile`` can trace without a break.

        ``t`` must be a 0-d tensor of ``x``'s dtype and device in [0, 1] where the velocity is finite, and ``x`` a
        finite ``(n, d)`` tensor with ``n ≥ 1``; nothing checks it, so wrong input gives a wrong answer (NaN at
        worst) with no error. Call it through something that has validated its input, as the harness's fixed-step
        loops do (one finiteness check of the result at the end). Chunked on the CPU like every closed form (the
        chunking is what keeps the ``(n, K, d)`` arrays in cache: unchunked it was 4× slower at n = 10⁵, K = d = 16).
        """
        params = self._parameters(x)
        whitening = self._whitening(schedule.values(t), params)
        return self._over_chunks(
            x, params, lambda start, stop: whitening,
            lambda parts, params: self._velocity_from(parts, params, check=False), check=False,
        )

    def velocity_divergence(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        r"""Closed-form :math:`\nabla\cdot u_t(x)`, ``(n,)``.

        With :math:`m_k = \dot\alpha\mu_k + A_k r_k` (:math:`A_k = U_k\operatorname{diag}(a_k)U_k^\top`), the
        per-component velocity, :math:`s_k = -C_k^{-1}r_k` and :math:`\nabla\gamma_k = \gamma_k(s_k - s)`:

        .. math:: \nabla\cdot u = \sum_k\gamma_k\operatorname{tr}A_k + \sum_k\gamma_k\, m_k\cdot s_k - u\cdot s .

        Each dot product :math:`m_k\cdot s_k` is taken in the k-th eigenbasis, where it is a diagonal sum:
        :math:`m_k\cdot s_k = -\sum_j(\dot\alpha\tilde\mu_{kj} + a_{kj}z_{kj})z_{kj}/c_{kj}` with
        :math:`z = \sqrt{c}\,w`.
        """
        return self._evaluate(t, x, schedule, lambda parts, params: self._velocity_and_divergence_from(parts, params)[1])

    def velocity_and_divergence(self, t: TimeLike, x: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor]:
        """Velocity and its divergence from one evaluation (what the likelihood ODE needs)."""
        return self._evaluate(t, x, schedule, self._velocity_and_divergence_from)

    def _velocity_and_divergence_from(self, parts: _Components, params: _Parameters) -> tuple[Tensor, Tensor]:
        gain = self._velocity_gain(parts, params)  # a·√c
        gains = gain / parts.std  # a
        d_alpha = _per_point(parts.values.d_alpha)
        gamma, whitened = parts.responsibilities, parts.whitened
        trace_term = gamma * gains.sum(-1)
        component_term = -gamma * (
            (d_alpha * params.rotated_means / parts.std * whitened).sum(-1) + (gains * whitened**2).sum(-1)
        )
        velocity = self._velocity_from(parts, params)
        score = self._score_from(parts, params)
        return velocity, (trace_term + component_term).sum(-1) - (velocity * score).sum(-1)

    # ------------------------------------------------------------------ exact flow map (K = 1)

    def flow_map(self, x: Tensor, schedule: Schedule, t0: TimeLike = 0.0, t1: TimeLike = 1.0) -> Tensor:
        r"""Exact probability-flow map from time ``t0`` to ``t1`` (Gaussian targets only).

        .. math::
            x_{t_1} = \alpha_{t_1}\mu + U\operatorname{diag}\big(\sqrt{c_{t_1}/c_{t_0}}\big)U^\top(x_{t_0} - \alpha_{t_0}\mu),
            \qquad c_t = \alpha_t^2\lambda + \sigma_t^2 .
        """
        if self.num_components != 1:
            raise ValueError(
                f"flow_map is exact only for a single Gaussian (K = 1); this mixture has K = {self.num_components}. "
                "Use a float64 reference solve (fmcore.solvers) for K > 1."
            )
        check_samples("x", x, self.dim, finite=True)
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
        params = self._parameters(x)
        start, end = schedule(as_time(t0, like=x, name="t0")), schedule(as_time(t1, like=x, name="t1"))
        if start.alpha.dim() or end.alpha.dim():
            raise ValueError("flow_map needs scalar t0 and t1")
        variance_start = start.alpha**2 * params.eigenvalues[0] + start.sigma**2
        variance_end = end.alpha**2 * params.eigenvalues[0] + end.sigma**2
        if bool((variance_start <= 0).any()):
            raise ValueError(f"the marginal at t0 = {float(start.alpha)} is degenerate: the flow map is undefined")
        scale = torch.sqrt(variance_end / variance_start)
        centred = x - start.alpha * params.means[0]
        if params.eigenvectors is None:
            mapped = centred * scale
        else:
            basis = params.eigenvectors[0]
            mapped = ((centred @ basis) * scale) @ basis.T
        return end.alpha * params.means[0] + mapped


def Gaussian(mean, cov) -> GaussianMixture:
    """A single Gaussian :math:`N(\\mu, \\Sigma)`: the K = 1 mixture. ``cov`` full ``(d,d)``, diagonal ``(d,)`` or a scalar."""
    mean = as_float64("mean", mean)
    cov = as_float64("cov", cov)
    if mean.dim() != 1:
        raise ValueError(f"mean must have shape (d,), got {tuple(mean.shape)}")
    kinds = {0: "iso", 1: "diag", 2: "full"}
    if cov.dim() not in kinds:
        raise ValueError(f"cov must be a scalar, a (d,) diagonal or a (d, d) matrix, got shape {tuple(cov.shape)}")
    return GaussianMixture(
        torch.ones(1, dtype=torch.float64), mean.unsqueeze(0), cov.reshape(1, *cov.shape), covariance_type=kinds[cov.dim()]
    )


# ---------------------------------------------------------------------- helpers


EIGENVALUE_FLOOR = 1e-12
"""A full covariance whose smallest eigenvalue is within this × its largest of zero (either sign) is refused as
numerically singular; one more negative than that is refused as not positive definite."""

ORTHOGONALITY_TOLERANCE = 1e-8
"""``from_eigendecomposition`` refuses eigenvectors with ``max |UᵀU − I|`` above this."""


def _covariance_type(covs: Tensor, count: int, dim: int, covariance_type: str | None) -> str:
    """The kind of ``covs``: given, or read from its shape where that is unambiguous."""
    if covariance_type is not None:
        return check_choice("covariance_type", covariance_type, ("full", "diag", "iso"))
    if covs.shape == (count, dim) and count == dim and dim > 1:
        raise ValueError(
            f"covs of shape {tuple(covs.shape)} is ambiguous when K = d = {dim}: K diagonals, or one full (d, d) "
            "covariance? Pass covariance_type='diag', or a (K, d, d) tensor for full covariances"
        )
    if covs.shape == (count,) and covs.dim() == 1:
        return "iso"
    return "diag" if covs.dim() == 2 else "full"


def _eigendecompose(covs: Tensor, count: int, dim: int, covariance_type: str | None = None) -> tuple[Tensor, Tensor | None]:
    """Return ``(eigenvalues (K,d), eigenvectors (K,d,d) or None)`` from full, diagonal or isotropic ``covs``."""
    kind_given = _covariance_type(covs, count, dim, covariance_type)
    expected = {"iso": (count,), "diag": (count, dim), "full": (count, dim, dim)}[kind_given]
    if covariance_type is not None and covs.shape != expected:
        raise ValueError(f"covs must have shape {expected} for covariance_type={covariance_type!r}, got {tuple(covs.shape)}")
    if covs.shape == (count,) and kind_given == "iso":
        eigenvalues, eigenvectors = covs.unsqueeze(1).expand(count, dim).clone(), None
        kind = "isotropic variance"
    elif covs.shape == (count, dim) and kind_given == "diag":
        eigenvalues, eigenvectors = covs.clone(), None
        kind = "diagonal variance"
    elif covs.shape == (count, dim, dim):
        asymmetry = (covs - covs.transpose(-1, -2)).abs().amax()
        scale = covs.abs().amax().clamp_min(1e-300)
        if float(asymmetry) > 1e-8 * float(scale):
            raise ValueError(
                f"covs must be symmetric; the largest |Σ - Σᵀ| entry is {float(asymmetry):.3g} "
                f"(relative {float(asymmetry / scale):.3g}, allowed 1e-8)"
            )
        eigenvalues, eigenvectors = torch.linalg.eigh(0.5 * (covs + covs.transpose(-1, -2)))
        kind = "covariance eigenvalue"
    else:
        raise ValueError(
            f"covs must have shape (K, d, d) = ({count}, {dim}, {dim}) for full covariances, (K, d) = ({count}, {dim}) "
            f"for diagonal or (K,) = ({count},) for isotropic ones; got {tuple(covs.shape)}"
        )
    if eigenvectors is not None:
        _check_resolved(eigenvalues)
    smallest = float(eigenvalues.min())
    if eigenvectors is not None and smallest <= 0:
        raise ValueError(f"covs must be positive definite; the smallest {kind} is {smallest:.3g} (all must be > 0)")
    if smallest < 0:
        raise ValueError(f"covs must be positive semi-definite; the smallest {kind} is {smallest:.3g} (all must be ≥ 0; "
                         "a zero variance is a rank-deficient direction, valid at every t < 1)")
    return eigenvalues, eigenvectors


def _check_resolved(eigenvalues: Tensor) -> None:
    """Refuse full covariances whose eigenvalues ``eigh`` cannot resolve, per component (ascending ``(K, d)``).

    ``eigh`` returns each eigenvalue to about ε·λ_max, so a smallest eigenvalue with |λ_min| ≤ :data:`EIGENVALUE_FLOOR` ×
    λ_max — zero in exact arithmetic, but returned as a round-off value of either sign, depending on the CPU and its
    LAPACK — is *numerically singular*; only one below −:data:`EIGENVALUE_FLOOR` × λ_max is a real negative eigenvalue.
    The singular test therefore comes first, and a round-off negative gets the singular message on every machine."""
    largest = eigenvalues[:, -1]
    ratio = eigenvalues[:, 0] / largest.clamp_min(torch.finfo(eigenvalues.dtype).tiny)
    for component in range(eigenvalues.shape[0]):
        smallest, top = float(eigenvalues[component, 0]), float(largest[component])
        if top <= 0 or float(ratio[component]) < -EIGENVALUE_FLOOR:
            raise ValueError(
                f"covs[{component}] must be positive definite; its smallest covariance eigenvalue is {smallest:.3g} "
                f"(largest {top:.3g}): negative beyond round-off"
            )
        if float(ratio[component]) <= EIGENVALUE_FLOOR:
            raise ValueError(
                f"covs[{component}] is numerically singular: its smallest eigenvalue {smallest:.3g} is within "
                f"{EIGENVALUE_FLOOR:g} × its largest {top:.3g} of zero, below what eigh resolves. Regularise it "
                "explicitly (covs + δ·I) if that is what you mean"
            )


def _explain_non_finite(x: Tensor, log_density: Tensor) -> None:
    """Raise the reason a log-density came out non-finite: non-finite input, or a distance beyond the dtype's range."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"x must be finite; it holds {int((~torch.isfinite(x)).sum())} non-finite value(s) (NaN or inf)")
    bad = int((~torch.isfinite(log_density)).sum())
    raise ValueError(
        f"{bad} point(s) of x are too far from every component for {x.dtype}: their squared whitened distance "
        f"overflows (largest |x| = {float(x.abs().max()):.3g}), so log p_t, the responsibilities and every closed form "
        "there are beyond the dtype's range"
        + (". Use float64, or points nearer the data" if x.dtype != torch.float64 else "")
    )


def _normalise_log_weights(log_joint: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax and log-sum-exp over components (dim 1) with one ``exp``.

    Relative weights are floored at eps³ (2e-21 in float32, 1e-47 in float64): ``exp`` of very negative
    arguments is over ten times slower on the CPU (subnormal results), and a weight that small changes no
    representable digit of any sum it enters.
    """
    largest = log_joint.amax(dim=1, keepdim=True)
    floor = 3.0 * math.log(torch.finfo(log_joint.dtype).eps)
    unnormalised = torch.exp((log_joint - largest).clamp_min(floor))
    total = unnormalised.sum(dim=1, keepdim=True)
    return unnormalised / total, (largest + torch.log(total)).squeeze(1)


def _per_point(value: Tensor) -> Tensor:
    """A schedule value, 0-d (kept 0-d) or ``(n,)`` (made ``(n, 1, 1)``), to broadcast against ``(·, K, d)``."""
    return value.view(-1, 1, 1) if value.dim() == 1 else value


def _check_velocity_finite(values: ScheduleValues) -> None:
    bad = ~(torch.isfinite(values.d_alpha) & torch.isfinite(values.sigma_d_sigma))
    if bool(bad.any()):
        raise ValueError(
            "the marginal velocity is infinite here: the schedule's dα/dt or σ·dσ/dt is not finite "
            f"at {int(bad.sum())} time(s); start the solve at a clipped t > 0 (or t < 1)"
        )


# ---------------------------------------------------------------------- named targets

FULL_COVARIANCE_BYTES = 64
"""Bytes per entry of a component's d × d covariance that building it takes at its peak (measured: 8 float64 d × d
matrices for a d = 3000 Gaussian — the covariance, eigenbasis, whitening, and the QR and eigh workspaces)."""

TARGETS = Registry("target")
register_target = TARGETS.register


def get_target(name: str, **params) -> GaussianMixture:
    """Build the named target, e.g. ``get_target("gaussian", d=8, condition_number=100)``."""
    return TARGETS.build(name, **params)


@register_target("seed000")
def seed000() -> GaussianMixture:
    """Seed 000's data: ``Normal(loc=means (3, 2), scale=stds (3, 2))`` sampled as ``(n, 3, 2)`` and
    rearranged ``'n d c -> (n c) d'``.

    The last axis ``c`` becomes the sample axis, so each column of the seed's ``means`` is one
    component: a two-component, equal-weight, diagonal mixture in 3-D with means (−1, −0.5, 1.5) and
    (1, 1.5, 0.25) and per-dimension standard deviations (0.25, 0.25, 0.15) in both.
    """
    seed_means = torch.tensor([[-1.0, 1.0], [-0.5, 1.5], [1.5, 0.25]], dtype=torch.float64)  # (d, c)
    seed_stds = torch.tensor([[0.25], [0.25], [0.15]], dtype=torch.float64).repeat(1, 2)  # (d, c)
    return GaussianMixture(torch.full((2,), 0.5, dtype=torch.float64), seed_means.T, seed_stds.T**2)


def _random_rotation(dim: int, generator: torch.Generator) -> Tensor:
    """Haar-random orthogonal matrix: QR of a Gaussian matrix with the sign of R's diagonal fixed."""
    matrix = torch.randn(dim, dim, dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(matrix)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


@register_target("gaussian")
def anisotropic_gaussian(d: int = 8, condition_number: float = 100.0, seed: int = 0, scale: float = 1.0) -> GaussianMixture:
    """A correlated Gaussian in d dims: eigenvalues log-spaced from ``scale`` down to ``scale/condition_number``,
    a seeded Haar rotation and a seeded N(0, I) mean."""
    d, seed = check_int("d", d), check_seed("seed", seed)
    check_allocation("d", d, "the Gaussian's covariance, eigenbasis and their factors", FULL_COVARIANCE_BYTES * d * d)
    condition_number = check_number("condition_number", condition_number, 1.0, 1.0 / EIGENVALUE_FLOOR, high_open=True)
    scale = check_number("scale", scale, 0.0, low_open=True)
    generator = torch.Generator().manual_seed(int(seed))
    eigenvalues = scale * torch.logspace(0.0, -math.log10(condition_number), int(d), dtype=torch.float64)
    rotation = _random_rotation(int(d), generator)
    mean = torch.randn(int(d), dtype=torch.float64, generator=generator)
    return GaussianMixture.from_eigendecomposition(
        torch.ones(1, dtype=torch.float64), mean.unsqueeze(0), eigenvalues.unsqueeze(0), rotation.unsqueeze(0)
    )


CIFAR10_SPECTRUM = Path(__file__).parent / "data" / "cifar10_covariance_eigenvalues.npy"
"""The covariance spectrum of CIFAR-10 (3072 eigenvalues, 9 of them zero): its source is in ``fmcore/data/README.md``."""
CIFAR10_SPECTRUM_SHA256 = "5c896e4125f16a1e7a76efa10e550dc656506b6bb184d56c340e5098317a6e58"


@register_target("cifar10")
def cifar10_gaussian() -> GaussianMixture:
    """The zero-mean Gaussian with CIFAR-10's covariance spectrum, d = 3 × 32 × 32 = 3072, on the coordinate axes.

    Rank 3063: its nine zero eigenvalues make its marginal singular where σ_t = 0 (the data end), so samplers are
    stopped before it (a grid with t1 < 1, as Pierret & Galerne's ε). Only the spectrum is published; every
    basis-invariant figure (W2 to the target, the exact laws per eigenvalue, strong errors) is that of the data's
    own basis."""
    import hashlib

    import numpy as np

    data = CIFAR10_SPECTRUM.read_bytes()
    if hashlib.sha256(data).hexdigest() != CIFAR10_SPECTRUM_SHA256:
        raise ValueError(f"{CIFAR10_SPECTRUM} is not the shipped CIFAR-10 spectrum (its SHA-256 differs)")
    eigenvalues = torch.from_numpy(np.load(io.BytesIO(data)).astype(np.float64)).abs()  # −0.0 → 0.0
    dim = eigenvalues.numel()
    return GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, dim, dtype=torch.float64),
                           eigenvalues.unsqueeze(0), covariance_type="diag")


@register_target("eight_gaussians")
def eight_gaussians(scale: float = 5.0, var: float = 0.1) -> GaussianMixture:
    """TorchCFM's 2-D ring (``sample_8gaussians``): eight equal-weight modes at ``scale`` × the unit
    vectors at multiples of 45°. TorchCFM builds the noise as ``MultivariateNormal(0, √var · I)``, so each
    mode's covariance is √var · I (≈ 0.316 I for var = 0.1), not var · I."""
    scale = check_number("scale", scale, 0.0, low_open=True)
    var = check_number("var", var, 0.0, low_open=True)
    angles = torch.tensor([0, 4, 2, 6, 1, 5, 3, 7], dtype=torch.float64) * (math.pi / 4)
    centres = scale * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    centres = torch.where(centres.abs() < 1e-12, torch.zeros_like(centres), centres)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=torch.float64), centres, torch.full((8,), math.sqrt(var)))


@register_target("gmm")
def hard_mixture(
    K: int = 8, d: int = 8, seed: int = 0, min_weight: float = 1e-2, narrow: float = 0.01, wide: float = 1.0,
    spread: float = 3.0,
) -> GaussianMixture:
    """A hard seeded mixture: K full-covariance components in d dims, weights from ``min_weight`` up
    (the smallest exactly ``min_weight``), modes from narrow (eigenvalues ≈ ``narrow``) to wide (≈ ``wide``),
    means N(0, spread² I)."""
    K, d, seed = check_int("K", K), check_int("d", d), check_seed("seed", seed)
    check_allocation("d", d, f"{K} full covariances, eigenbases and their factors", FULL_COVARIANCE_BYTES * K * d * d)
    narrow = check_number("narrow", narrow, 0.0, low_open=True)
    wide = check_number("wide", wide, narrow)
    spread = check_number("spread", spread, 0.0)
    min_weight = check_number("min_weight", min_weight)
    if not 0 < min_weight <= 1 / K:
        raise ValueError(f"min_weight must lie in (0, 1/K] = (0, {1 / K:.3g}], got {min_weight}")
    generator = torch.Generator().manual_seed(int(seed))
    raw = torch.rand(K, dtype=torch.float64, generator=generator) + 0.1
    raw[0] = 0.0
    weights = min_weight + (1 - K * min_weight) * raw / raw.sum()
    means = spread * torch.randn(K, d, dtype=torch.float64, generator=generator)
    # Component k's eigenvalues span one decade around a level log-spaced from narrow to wide.
    levels = torch.logspace(math.log10(narrow), math.log10(wide), K, dtype=torch.float64)
    within = torch.logspace(-0.5, 0.5, d, dtype=torch.float64)
    eigenvalues = levels.unsqueeze(1) * within.unsqueeze(0)
    rotations = torch.stack([_random_rotation(d, generator) for _ in range(K)])
    return GaussianMixture.from_eigendecomposition(weights, means, eigenvalues, rotations)
