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

The eigendecomposition happens once, at construction; the eigenbases are held by a layout
(:mod:`fmcore.targets.layouts`: one basis shared by every component — the axes, a DCT, a Hartley or a dense basis,
applied as an operator — or one dense basis per component), and the per-eigenvalue algebra (c, a, the flow map's
gain) is :mod:`fmcore.targets.spectral`. Parameters are stored in float64 and cast (once, then cached) to the dtype
and device of the points they are evaluated at. A closed form is evaluated in two parts: its per-time work (the
whitening, the gain, the rotation back with the gain folded in) once per call when every point shares one time, and
its per-chunk part (a GEMM in, the responsibilities, a GEMM out) on cache-sized chunks of points.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import (
    TimeLike,
    as_float64,
    as_generator,
    as_time,
    check_allocation,
    check_instance,
    check_int,
    check_samples,
)
from .._row_parallel import map_blocks
from ..schedules import Schedule, ScheduleValues, get_schedule
from .bases import Basis, Identity, check_orthonormal
from .covariances import check_spectrum, eigendecompose
from .layouts import Layout, PerComponentBases, SharedBasis
from .spectral import SpectralGaussian, flow_gain, marginal_variance, refuse_singular, velocity_gain

__all__ = ["GaussianMixture", "Gaussian"]

_LOG_2PI = math.log(2.0 * math.pi)
_DATA = get_schedule("cond_ot")  # at t = 1, α = 1 and σ = 0 exactly: p_1 is the target itself


@dataclass(frozen=True)
class _Parameters:
    """Mixture parameters cast to one dtype/device, with the layout of its eigenbases."""

    log_weights: Tensor  # (K,)
    means: Tensor  # (K, d)
    eigenvalues: Tensor  # (K, d)
    layout: Layout  # the eigenbases, cast
    rotated_means: Tensor  # (K, d): U_kᵀ μ_k
    ones: Tensor  # (d,): for sums over the last axis as matrix–vector products (_squared_norms)


@dataclass(frozen=True)
class _Whitening:
    """What depends on time only: computed once per call for a scalar t."""

    values: ScheduleValues  # 0-d or (n,)
    std: Tensor  # (K, d) or (n, K, d): √c_k, c_k = α² λ_k + σ²
    shift: Tensor  # same shape: α U_kᵀ μ_k / √c_k
    matrix: Tensor | None  # (d, K·d): stacked U_k diag(c_k)^(-1/2), scalar time and per-component bases only
    log_normaliser: Tensor  # (K,) or (n, K): log w_k − ½ log det C_k − ½ d log 2π


@dataclass(frozen=True)
class _Components:
    """Per-component quantities at one (t, x): everything in each component's eigenbasis."""

    whitened: Tensor  # (n, K, d): w_k = c_k^(-1/2) U_kᵀ (x − α μ_k)
    responsibilities: Tensor  # (n, K): γ_k(x)
    log_density: Tensor  # (n,): log p_t(x)


_Finish = Callable[[_Components], object]
"""A closed form's per-chunk part: from the components at a chunk of points to the result there."""


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
    :data:`~fmcore.targets.covariances.EIGENVALUE_FLOOR` times its largest of zero (either sign): ``eigh`` resolves
    eigenvalues only to about :math:`\epsilon\,\lambda_{max}`, so such an eigenvalue could be zero (or negative), and
    the score at t = 1 would be noise amplified by :math:`1/\lambda_{min}`. Such covariances are refused, never
    silently used: regularise explicitly (add :math:`\delta I`) if that is what is meant. Diagonal and isotropic variances are
    taken as given (only ≥ 0 is required): no eigendecomposition rounds them, so an exact zero is a true zero.
    """

    cpu_chunk_elements: int = 2**19
    """On the CPU, closed forms are evaluated about this many (point, component, dimension) entries at a time, a chunk
    per single-threaded worker (:mod:`fmcore._row_parallel`): 2 MiB in float32, 4 MiB in float64, about one 2 MiB L2.
    Measured (velocity, K = 16, d = 16, n = 10⁵, interleaved medians of 7, 2-core Xeon, idle), 2¹⁸ / 2¹⁹ / 2²⁰:
    float32 2 threads 99 / 82 / 76 ms, 1 thread 144 / 136 / 136 ms, with one other CPU-bound process 185 / 162 /
    191–276 ms; float64 2 threads 160 / 149 / 184 ms, 1 thread 233 / 229 / 253 ms. On a 2-core AMD EPYC (Zen 4, 1 MiB
    L2), as speed-ups over autograd (same sizes, interleaved, medians of 9), 2¹⁷ / 2¹⁸ / 2¹⁹ / 2²⁰: 1 thread 11.4 /
    12.9 / 13.7 / 11.4×, 2 threads 6.3 / 9.6 / 11.6 / 10.1×. Smaller chunks cost the Python between operations
    (serialised by the GIL), larger ones fall out of cache."""

    def __init__(self, weights, means, covs, covariance_type: str | None = None):
        weights, means = _checked_weights_and_means(weights, means)
        covs = as_float64("covs", covs)
        count, dim = means.shape
        eigenvalues, eigenvectors = eigendecompose(covs, count, dim, covariance_type)
        layout = SharedBasis(Identity(dim), count) if eigenvectors is None else PerComponentBases(eigenvectors)
        self._init_from_eigen(weights, means, eigenvalues, layout)

    @classmethod
    def from_eigendecomposition(cls, weights, means, eigenvalues, eigenvectors=None) -> GaussianMixture:
        r"""Build from :math:`\Sigma_k = U_k \operatorname{diag}(\lambda_k) U_k^\top` without a new eigh: one dense
        basis per component (:class:`~fmcore.targets.layouts.PerComponentBases`).

        ``eigenvalues`` ``(K, d)`` must be > 0 and resolved (≥ 0 when axis-aligned: a rank-deficient target, see
        :attr:`rank_deficient`); ``eigenvectors`` ``(K, d, d)`` must be orthogonal to within
        :data:`~fmcore.targets.bases.ORTHOGONALITY_TOLERANCE` (``max |UᵀU − I|``; columns are eigenvectors); None means
        axis-aligned. No d × d covariance is built to validate them.
        """
        if eigenvectors is None:
            return cls(weights, means, eigenvalues, covariance_type="diag")
        weights, means = _checked_weights_and_means(weights, means)
        eigenvectors = as_float64("eigenvectors", eigenvectors)
        eigenvalues = as_float64("eigenvalues", eigenvalues)
        count, dim = means.shape
        if eigenvalues.shape != (count, dim) or eigenvectors.shape != (count, dim, dim):
            raise ValueError(
                f"eigenvalues must have shape (K, d) = ({count}, {dim}) and eigenvectors (K, d, d) to match the means; "
                f"got {tuple(eigenvalues.shape)} and {tuple(eigenvectors.shape)}"
            )
        check_spectrum(eigenvalues, dense_basis=True)
        check_orthonormal("eigenvectors", eigenvectors)
        mixture = cls.__new__(cls)
        mixture._init_from_eigen(weights, means, eigenvalues, PerComponentBases(eigenvectors))
        return mixture

    @classmethod
    def on_basis(cls, weights, means, eigenvalues, basis: Basis) -> GaussianMixture:
        r"""A mixture whose components share one eigenbasis ``basis`` (:class:`~fmcore.targets.bases.Basis`):
        :math:`\Sigma_k = U\operatorname{diag}(\lambda_k)U^\top`, means ``(K, d)`` in data coordinates, eigenvalues
        ``(K, d)`` in the basis's order, ≥ 0 (zeros exact unless the basis is dense). Every closed form costs
        O(n·cost(U) + n·K·d): U is applied, never built (:class:`~fmcore.targets.layouts.SharedBasis`)."""
        check_instance("basis", basis, Basis, "fmcore.targets.bases: Identity, Dense, DCT or Hartley")
        weights, means = _checked_weights_and_means(weights, means)
        eigenvalues = as_float64("eigenvalues", eigenvalues)
        count, dim = means.shape
        if eigenvalues.shape != (count, dim) or basis.dim != dim:
            raise ValueError(f"eigenvalues must have shape (K, d) = ({count}, {dim}) and basis dimension {dim} to "
                             f"match the means; got {tuple(eigenvalues.shape)} and basis d = {basis.dim}")
        check_spectrum(eigenvalues, dense_basis=False)  # the spectrum is given, not computed: a zero is exact
        mixture = cls.__new__(cls)
        mixture._init_from_eigen(weights, means, eigenvalues, SharedBasis(basis, count))
        return mixture

    def _init_from_eigen(self, weights: Tensor, means: Tensor, eigenvalues: Tensor, layout: Layout):
        self.weights = weights
        self.means = means
        self.eigenvalues = eigenvalues
        self.layout = layout
        """The components' eigenbases (:mod:`fmcore.targets.layouts`): shared by all, or one dense basis each."""
        self.rank_deficient = bool((eigenvalues == 0).any())
        """Some component has a zero variance: its marginal at a time where σ_t = 0 (the data end of most paths) has no
        density, and every closed form there is refused with a message saying so."""
        self._cache: dict[tuple[torch.dtype, torch.device], _Parameters] = {}

    # ------------------------------------------------------------------ basic properties

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def axis_aligned(self) -> bool:
        """True when every component's eigenbasis is the coordinate axes (diagonal covariances)."""
        return self.layout.axis_aligned

    @property
    def basis(self) -> Basis | None:
        """The eigenbasis all components share, or None when each has its own (``layout.basis_of(k)``)."""
        return None if self.layout.per_component else self.layout.basis_of(0)

    @property
    def eigenvectors(self) -> Tensor | None:
        """Dense eigenbases ``(K, d, d)`` (columns are eigenvectors); None when axis-aligned. For a shared transform
        (DCT, Hartley) this builds K·d² entries: prefer :attr:`layout` and :attr:`basis`, which apply it."""
        return None if self.axis_aligned else self.layout.dense()

    @property
    def covariances(self) -> Tensor:
        """Full ``(K, d, d)`` covariances, rebuilt from the eigendecomposition (float64; K·d² entries)."""
        if self.axis_aligned:
            return torch.diag_embed(self.eigenvalues)
        bases = self.layout.dense()
        return bases @ torch.diag_embed(self.eigenvalues) @ bases.transpose(-1, -2)

    def fingerprint(self) -> str:
        """A hash of what defines the target (weights, means, eigenvalues and the layout's fingerprint: no d × d
        covariance is built), for cache keys."""
        digest = hashlib.sha256()
        for tensor in (self.weights, self.means, self.eigenvalues):
            digest.update(tensor.contiguous().numpy().tobytes())
        digest.update(self.layout.fingerprint().encode())
        return digest.hexdigest()[:16]

    def component(self, k: int) -> SpectralGaussian:
        """Component ``k`` as a :class:`~fmcore.targets.spectral.SpectralGaussian` on its own basis (its weight aside)."""
        k = check_int("k", k, minimum=0)
        if k >= self.num_components:
            raise ValueError(f"k must be a component index in [0, {self.num_components - 1}], got {k}")
        basis = self.layout.basis_of(k)
        return SpectralGaussian(basis, basis.to_eigen(self.means[k : k + 1])[0], self.eigenvalues[k])

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
            layout = self.layout.to(like.dtype, like.device)
            self._cache[key] = _Parameters(
                log_weights=cast(torch.log(self.weights)),
                means=cast(self.means),
                eigenvalues=cast(self.eigenvalues),
                layout=layout,
                rotated_means=cast(self.layout.rotate_means(self.means)),
                ones=torch.ones(self.dim, dtype=like.dtype, device=like.device),
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
        return self.means[components] + self.layout.rotate_out(scaled, components)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact :math:`\\log p_1(x)`, ``(n,)``, by log-sum-exp over components."""
        check_samples("x", x, self.dim)
        return self.marginal_log_prob(1.0, x, _DATA)

    def component_posteriors(self, x: Tensor) -> Tensor:
        """:math:`P(k | x_1 = x)`, ``(n, K)``, under the target itself."""
        check_samples("x", x, self.dim)
        return self._evaluate(1.0, x, _DATA, lambda whitening, params: _responsibilities)

    def _whitening(self, values: ScheduleValues, params: _Parameters) -> _Whitening:
        r"""Per-time work, done once per call: :math:`\sqrt{c_k}`, the shift :math:`\alpha\tilde\mu_k/\sqrt{c_k}` and,
        for a scalar time, the whitening matrix :math:`[U_1 \operatorname{diag}(c_1)^{-1/2} | \dots]`."""
        alpha, sigma = _per_point(values.alpha), _per_point(values.sigma)
        variance = marginal_variance(alpha, sigma, params.eigenvalues)  # (K, d) or (n, K, d)
        if self.rank_deficient:
            where = "a time" if values.sigma.dim() == 0 else f"{int((values.sigma == 0).sum())} time(s)"
            refuse_singular(variance, self.eigenvalues, f"{where} asked for")
        std = torch.sqrt(variance)
        matrix = params.layout.whitening_matrix(std) if std.dim() == 2 else None
        log_normaliser = params.log_weights - torch.log(std).sum(-1) - 0.5 * self.dim * _LOG_2PI
        return _Whitening(values, std, alpha * params.rotated_means / std, matrix, log_normaliser)

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
            whitened = params.layout.rotate_in(x) / whitening.std - whitening.shift
        log_joint = torch.add(whitening.log_normaliser, _squared_norms(whitened, params.ones), alpha=-0.5)
        responsibilities, log_density = _normalise_log_weights(log_joint)
        if check and not _all_finite(log_density):
            _explain_non_finite(x, log_density)
        return _Components(whitened, responsibilities, log_density)

    @staticmethod
    def _linear_form(params: _Parameters, gain: Tensor, mean_coefficient: Tensor | None = None) -> _Finish:
        r"""The closed form :math:`\sum_k \gamma_k\,(b\,\mu_k + U_k \operatorname{diag}(g_k) w_k)`, ``(n, d)``, for a
        gain g ``(K, d)`` or ``(n, K, d)`` and a mean coefficient b (0-d or ``(n, 1)``; None: no mean term).

        Every closed form but the density is one of these: a gain of :math:`-c^{-1/2}` gives the score, etc. What
        depends on the time alone is done here, once per time, not once per chunk: the layout's rotation back
        (:meth:`~fmcore.targets.layouts.Layout.combiner`: with per-component bases and one time, the gain folded into
        the rotation matrix, so that a chunk costs one GEMM; with a shared basis the components are summed in eigen
        coordinates and rotated back once)."""
        rotate_back = params.layout.combiner(gain)

        def combined(parts: _Components) -> Tensor:
            return rotate_back(parts.responsibilities.unsqueeze(-1) * parts.whitened)

        if mean_coefficient is None:
            return combined
        if mean_coefficient.dim() == 0:  # one time: b μ_k once, and the mean term joins each chunk's result in one addmm
            scaled_means = mean_coefficient * params.means
            return lambda parts: torch.addmm(combined(parts), parts.responsibilities, scaled_means)
        return lambda parts: combined(parts) + mean_coefficient * (parts.responsibilities @ params.means)

    # ------------------------------------------------------------------ the marginal path

    def marginal(self, t: TimeLike, schedule: Schedule) -> GaussianMixture:
        """The mixture :math:`p_t` of :math:`x_t` (scalar ``t``): means :math:`\\alpha_t\\mu_k`, covariances :math:`C_k(t)`."""
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
        t_tensor = as_time(t)
        if t_tensor.dim() != 0:
            raise ValueError(f"marginal needs a scalar t, got shape {tuple(t_tensor.shape)}")
        values = schedule(t_tensor)
        eigenvalues = marginal_variance(values.alpha, values.sigma, self.eigenvalues)
        if bool((eigenvalues <= 0).any()):
            raise ValueError(f"the marginal of {schedule!r} at t = {float(t_tensor)} is degenerate (zero covariance)")
        marginal = GaussianMixture.__new__(GaussianMixture)  # the same eigenbases: nothing to re-check
        marginal._init_from_eigen(self.weights, values.alpha * self.means, eigenvalues, self.layout)
        return marginal

    def _evaluate(self, t: TimeLike, x: Tensor, schedule: Schedule, form, affine=None):
        """Validate ``(t, x)``, then evaluate a closed form — in cache-sized chunks of points on the CPU.

        ``form(whitening, params)`` does the closed form's per-time work and returns its per-chunk part
        (:data:`_Finish`); for one time shared by every point it runs once per call, for a time per point once per
        chunk (with that chunk's times).

        The per-component arrays are ``(n, K, d)``; on the CPU, memory bandwidth, not arithmetic, bounds
        their cost, so they are built ``chunk`` points at a time (about :attr:`cpu_chunk_elements` entries,
        sized by measurement, see the attribute). Rows are independent,
        so chunking changes no result. On CUDA the whole batch goes at once.

        A single Gaussian (K = 1) at one time skips all of it when the closed form gives its ``affine`` map
        (:meth:`_affine_map`): there every closed form but the density is affine, one pass over the points.
        """
        check_samples("x", x, self.dim)
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
        t_tensor = as_time(t, like=x, n=x.shape[0])
        n = x.shape[0]
        if n == 0:  # the same shapes and dtypes as for one point, with no rows
            one = torch.zeros(1, self.dim, dtype=x.dtype, device=x.device)
            output = self._evaluate(t_tensor if t_tensor.dim() == 0 else 0.5, one, schedule, form, affine)
            return tuple(part[:0] for part in output) if isinstance(output, tuple) else output[:0]
        params = self._parameters(x)
        if t_tensor.dim() == 0:  # one time for every point: its per-time work is shared by all chunks
            values = schedule.values(t_tensor)
            if affine is not None and self.num_components == 1:
                return self._affine_map(values, x, params, affine)
            shared = self._prepared(values, params, form)
            return self._over_chunks(x, params, lambda start, stop: shared)
        return self._over_chunks(
            x, params, lambda start, stop: self._prepared(schedule.values(t_tensor[start:stop]), params, form)
        )

    def _prepared(self, values: ScheduleValues, params: _Parameters, form) -> tuple[_Whitening, _Finish]:
        """The per-time work at ``values``: the whitening, and the closed form's per-chunk part built on it."""
        whitening = self._whitening(values, params)
        return whitening, form(whitening, params)

    def _affine_map(self, values: ScheduleValues, x: Tensor, params: _Parameters, affine, check: bool = True):
        r"""A single Gaussian's closed form at one time, :math:`f(x) = U(g \odot U^\top x + h)`: ``affine(values, c, λ,
        m)`` gives the gain g and shift h per eigendirection (a list of pairs, one per output), c = α²λ + σ². One
        transform in, one fused multiply-add (``addcmul``), one transform back: on the axes, a single pass that reads x
        and writes f(x) (what the memory bandwidth allows), then one reduction to check it is finite (``check=False``:
        no check, no host synchronisation)."""
        variance = marginal_variance(values.alpha, values.sigma, params.eigenvalues[0])
        if check and self.rank_deficient:
            refuse_singular(variance, self.eigenvalues, "a time asked for")
        basis = params.layout.basis_of(0)
        z = basis.to_eigen(x)
        maps = affine(values, variance, params.eigenvalues[0], params.rotated_means[0])
        outputs = tuple(basis.from_eigen(torch.addcmul(shift, gain, z)) for gain, shift in maps)
        if check and not all(math.isfinite(float(output.detach().sum())) for output in outputs):
            _explain_non_finite_output(x)
        return outputs if len(outputs) > 1 else outputs[0]

    def _over_chunks(self, x: Tensor, params: _Parameters, prepared_for, check: bool = True):
        """A closed form at chunks of the points ``x`` (``n ≥ 1``), concatenated: on the CPU about
        :attr:`cpu_chunk_elements` ``(n, K, d)`` entries per chunk (one L2's worth), the chunks shared out among
        single-threaded workers, one per torch thread (:mod:`fmcore._row_parallel`: no operation waits for a
        descheduled thread), in this thread when autograd must record them; all points at once elsewhere.
        ``prepared_for(start, stop)`` gives rows start:stop's per-time work and the closed form's per-chunk part
        (:meth:`_prepared`); ``check`` as in :meth:`_components`."""
        chunk = x.shape[0] if x.device.type != "cpu" else max(1, self.cpu_chunk_elements // (self.num_components * self.dim))

        def compute_chunk(index: int):
            start, stop = index * chunk, (index + 1) * chunk
            whitening, finish = prepared_for(start, stop)
            return finish(self._components(x[start:stop], whitening, params, check))

        recorded = torch.is_grad_enabled() and x.requires_grad  # autograd must see the operations: in this thread
        outputs = map_blocks(compute_chunk, -(-x.shape[0] // chunk), parallel=not recorded)
        if len(outputs) == 1:
            return outputs[0]
        if isinstance(outputs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))
        return torch.cat(outputs)

    def marginal_log_prob(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`\\log p_t(x)`, ``(n,)``."""
        return self._evaluate(t, x, schedule, lambda whitening, params: _log_density)

    def score(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`\\nabla_x \\log p_t(x) = -\\sum_k\\gamma_k C_k^{-1} r_k`, ``(n, d)``. Needs :math:`C_k(t)` invertible."""
        return self._evaluate(t, x, schedule, self._score_form, _score_map)

    def _score_form(self, whitening: _Whitening, params: _Parameters) -> _Finish:
        return self._linear_form(params, -1.0 / whitening.std)

    def noise_prediction(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`E[\\varepsilon | x_t = x] = \\sigma_t\\sum_k\\gamma_k C_k^{-1} r_k = -\\sigma_t s(x)` (Tweedie)."""

        def form(whitening: _Whitening, params: _Parameters) -> _Finish:
            return self._linear_form(params, _per_point(whitening.values.sigma) / whitening.std)

        return self._evaluate(t, x, schedule, form, _noise_map)

    def data_prediction(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """:math:`E[x_1 | x_t = x] = \\sum_k\\gamma_k(\\mu_k + \\alpha_t\\Sigma_k C_k^{-1} r_k)`."""

        def form(whitening: _Whitening, params: _Parameters) -> _Finish:
            gain = _per_point(whitening.values.alpha) * params.eigenvalues / whitening.std
            return self._linear_form(params, gain, mean_coefficient=torch.ones((), dtype=gain.dtype, device=gain.device))

        return self._evaluate(t, x, schedule, form, _data_map)

    def velocity(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        """Marginal velocity :math:`u_t(x) = \\dot\\alpha_t E[x_1|x] + \\dot\\sigma_t E[\\varepsilon|x]`, ``(n, d)``."""
        return self._evaluate(t, x, schedule, self._velocity_form, _velocity_map)

    def velocity_and_score(self, t: TimeLike, x: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor]:
        """Both at once, sharing the responsibilities (what the reverse SDE's drift needs)."""
        def form(whitening: _Whitening, params: _Parameters) -> _Finish:
            velocity, score = self._velocity_form(whitening, params), self._score_form(whitening, params)
            return lambda parts: (velocity(parts), score(parts))

        return self._evaluate(t, x, schedule, form, lambda *args: _velocity_map(*args) + _score_map(*args))

    def _velocity_gain(self, whitening: _Whitening, params: _Parameters, check: bool = True) -> Tensor:
        r"""The velocity's gain :math:`a_k\sqrt{c_k} = (\alpha\dot\alpha\lambda_k + \sigma\dot\sigma)/\sqrt{c_k}`."""
        values = whitening.values
        if check:
            _check_velocity_finite(values)
        alpha, d_alpha = _per_point(values.alpha), _per_point(values.d_alpha)
        return velocity_gain(alpha, d_alpha, _per_point(values.sigma_d_sigma), params.eigenvalues, whitening.std)

    def _velocity_form(self, whitening: _Whitening, params: _Parameters, check: bool = True) -> _Finish:
        d_alpha = _per_point(whitening.values.d_alpha).squeeze(-1)  # 0-d or (n, 1)
        return self._linear_form(params, self._velocity_gain(whitening, params, check), mean_coefficient=d_alpha)

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
        if self.num_components == 1:
            return self._affine_map(schedule.values(t), x, params, _unchecked_velocity_map, check=False)
        whitening = self._whitening(schedule.values(t), params)
        shared = whitening, self._velocity_form(whitening, params, check=False)
        return self._over_chunks(x, params, lambda start, stop: shared, check=False)

    def velocity_divergence(self, t: TimeLike, x: Tensor, schedule: Schedule) -> Tensor:
        r"""Closed-form :math:`\nabla\cdot u_t(x)`, ``(n,)``.

        With :math:`m_k = \dot\alpha\mu_k + A_k r_k` (:math:`A_k = U_k\operatorname{diag}(a_k)U_k^\top`), the
        per-component velocity, :math:`s_k = -C_k^{-1}r_k` and :math:`\nabla\gamma_k = \gamma_k(s_k - s)`:

        .. math:: \nabla\cdot u = \sum_k\gamma_k\operatorname{tr}A_k + \sum_k\gamma_k\, m_k\cdot s_k - u\cdot s .

        Each dot product :math:`m_k\cdot s_k` is taken in the k-th eigenbasis, where it is a diagonal sum:
        :math:`m_k\cdot s_k = -\sum_j(\dot\alpha\tilde\mu_{kj} + a_{kj}z_{kj})z_{kj}/c_{kj}` with
        :math:`z = \sqrt{c}\,w`.
        """
        def form(whitening: _Whitening, params: _Parameters) -> _Finish:
            both = self._velocity_and_divergence_form(whitening, params)
            return lambda parts: both(parts)[1]

        return self._evaluate(t, x, schedule, form)

    def velocity_and_divergence(self, t: TimeLike, x: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor]:
        """Velocity and its divergence from one evaluation (what the likelihood ODE needs)."""
        return self._evaluate(t, x, schedule, self._velocity_and_divergence_form)

    def _velocity_and_divergence_form(self, whitening: _Whitening, params: _Parameters) -> _Finish:
        gains = self._velocity_gain(whitening, params) / whitening.std  # a
        trace = gains.sum(-1)  # tr A_k, (K,) or (n, K)
        mean_gain = _per_point(whitening.values.d_alpha) * params.rotated_means / whitening.std  # α̇ m̃_k / √c_k
        velocity_of, score_of = self._velocity_form(whitening, params), self._score_form(whitening, params)

        def finish(parts: _Components) -> tuple[Tensor, Tensor]:
            gamma, whitened = parts.responsibilities, parts.whitened
            component_term = -gamma * ((mean_gain * whitened).sum(-1) + (gains * whitened**2).sum(-1))
            velocity, score = velocity_of(parts), score_of(parts)
            return velocity, (gamma * trace + component_term).sum(-1) - (velocity * score).sum(-1)

        return finish

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
        variance_start = marginal_variance(start.alpha, start.sigma, params.eigenvalues[0])
        variance_end = marginal_variance(end.alpha, end.sigma, params.eigenvalues[0])
        if bool((variance_start <= 0).any()):
            raise ValueError(f"the marginal at t0 = {float(start.alpha)} is degenerate: the flow map is undefined")
        basis = params.layout.basis_of(0)
        centred = x - start.alpha * params.means[0]
        mapped = basis.from_eigen(basis.to_eigen(centred) * flow_gain(variance_start, variance_end))
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


# A single Gaussian's closed forms in its eigen coordinates z = Uᵀx, m = Uᵀμ, c = α²λ + σ²: each f(z) = g ⊙ z + h.
def _score_map(values: ScheduleValues, c: Tensor, eigenvalues: Tensor, m: Tensor) -> list[tuple[Tensor, Tensor]]:
    r"""Score :math:`-(z - \alpha m)/c`."""
    return [(-1.0 / c, values.alpha * m / c)]


def _noise_map(values: ScheduleValues, c: Tensor, eigenvalues: Tensor, m: Tensor) -> list[tuple[Tensor, Tensor]]:
    r"""Noise prediction :math:`\sigma(z - \alpha m)/c`."""
    return [(values.sigma / c, -values.sigma * values.alpha * m / c)]


def _data_map(values: ScheduleValues, c: Tensor, eigenvalues: Tensor, m: Tensor) -> list[tuple[Tensor, Tensor]]:
    r"""Data prediction :math:`m + (\alpha\lambda/c)(z - \alpha m) = (\alpha\lambda/c)z + (\sigma^2/c)m`."""
    return [(values.alpha * eigenvalues / c, values.sigma**2 * m / c)]


def _velocity_map(values: ScheduleValues, c: Tensor, eigenvalues: Tensor, m: Tensor) -> list[tuple[Tensor, Tensor]]:
    r"""Velocity :math:`a z + (\dot\alpha - a\alpha)m`, :math:`a = (\alpha\dot\alpha\lambda + \sigma\dot\sigma)/c`."""
    _check_velocity_finite(values)
    return _unchecked_velocity_map(values, c, eigenvalues, m)


def _unchecked_velocity_map(values: ScheduleValues, c: Tensor, eigenvalues: Tensor, m: Tensor):
    """:func:`_velocity_map` without its check of the schedule's values (a host synchronisation)."""
    gain = velocity_gain(values.alpha, values.d_alpha, values.sigma_d_sigma, eigenvalues, c)
    return [(gain, (values.d_alpha - gain * values.alpha) * m)]


def _explain_non_finite_output(x: Tensor) -> None:
    """Raise the reason a closed form came out non-finite: non-finite input, or a result beyond the dtype's range."""
    _refuse_non_finite_input(x)
    raise ValueError(f"the closed form at x overflows {x.dtype} (largest |x| = {float(x.abs().max()):.3g}): its result is "
                     "beyond the dtype's range" + (". Use float64" if x.dtype != torch.float64 else ""))


def _checked_weights_and_means(weights, means) -> tuple[Tensor, Tensor]:
    """``(weights (K,), means (K, d))`` as float64, checked: K ≥ 1, d ≥ 1, weights ≥ 0 summing to 1 (within 1e-6),
    returned renormalised to sum to 1 exactly."""
    weights = as_float64("weights", weights)
    means = as_float64("means", means)
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
    return weights / weights.sum(), means


def _refuse_non_finite_input(x: Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"x must be finite; it holds {int((~torch.isfinite(x)).sum())} non-finite value(s) (NaN or inf)")


def _explain_non_finite(x: Tensor, log_density: Tensor) -> None:
    """Raise the reason a log-density came out non-finite: non-finite input, or a distance beyond the dtype's range."""
    _refuse_non_finite_input(x)
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


def _squared_norms(whitened: Tensor, ones: Tensor) -> Tensor:
    r""":math:`\|w_k\|^2 = \sum_j w_{kj}^2`, ``(n, K)``, from ``whitened`` ``(n, K, d)``: the squares (``w * w``,
    measured several times faster than ``.square()``) summed by a matrix–vector product with ``ones`` ``(d,)``,
    measured 1.5× faster than ``.sum(-1)`` at d = 16 (a reduction along the innermost axis vectorises poorly there;
    2-core EPYC, float32, 2048 × 16 × 16: 130 against 190 µs)."""
    n, count, dim = whitened.shape
    return torch.mv((whitened * whitened).reshape(-1, dim), ones).view(n, count)


def _log_density(parts: _Components) -> Tensor:
    return parts.log_density


def _responsibilities(parts: _Components) -> Tensor:
    return parts.responsibilities


def _all_finite(values: Tensor) -> bool:
    """Whether every entry is finite, with one reduction where they are: a finite sum means finite entries (an inf
    or NaN makes the sum inf or NaN); a sum that is not finite is settled entry by entry (finite entries can overflow
    it)."""
    return math.isfinite(float(values.detach().sum())) or bool(torch.isfinite(values).all())


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
