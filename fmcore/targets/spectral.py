r"""The per-eigenvalue algebra of a Gaussian on an affine path, written once.

For a component with eigenvalue λ (in its eigenbasis) under :math:`x_t = \alpha_t x_1 + \sigma_t\varepsilon`
(``docs/design.md``, "Analytic targets"):

* marginal variance :math:`c = \alpha_t^2\lambda + \sigma_t^2`;
* velocity gain :math:`a = (\alpha_t\dot\alpha_t\lambda + \sigma_t\dot\sigma_t)/c`: the velocity is
  :math:`u = a z + (\dot\alpha_t - a\alpha_t)m` in eigen coordinates (m the eigen-mean);
* score :math:`s = -(z - \alpha_t m)/c`;
* exact flow map from s to t: :math:`z_t = \alpha_t m + \sqrt{c_t/c_s}\,(z_s - \alpha_s m)`.

The mixture engine (:mod:`fmcore.targets.mixture`), the exact laws (:mod:`fmcore.solvers.laws`) and
:class:`fmcore.exact.ExactLaw` evaluate these functions; a zero variance where σ_t = 0 (a rank-deficient target at
its data end) is refused here, with one message.

:class:`SpectralGaussian` is one Gaussian held this way — a basis, its mean in eigen coordinates and its variances —
with the algebra as methods: a Gaussian target's component (:meth:`GaussianMixture.component
<fmcore.targets.GaussianMixture.component>`), its marginal at a time, and a linear sampler's exact output law
(:attr:`fmcore.exact.ExactLaw.output`) are all of this type, and the W2 between two of them on one basis is
:meth:`SpectralGaussian.w2_to`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import as_generator, check_int
from .bases import Basis

__all__ = ["SpectralGaussian", "marginal_variance", "velocity_gain", "flow_gain", "refuse_singular"]


def marginal_variance(alpha, sigma, eigenvalues: Tensor) -> Tensor:
    r""":math:`c = \alpha^2\lambda + \sigma^2` (α, σ broadcast against ``eigenvalues``)."""
    return alpha**2 * eigenvalues + sigma**2


def velocity_gain(alpha, d_alpha, sigma_d_sigma, eigenvalues: Tensor, variance: Tensor) -> Tensor:
    r""":math:`a = (\alpha\dot\alpha\lambda + \sigma\dot\sigma)/c`."""
    return (alpha * d_alpha * eigenvalues + sigma_d_sigma) / variance


def flow_gain(variance_from: Tensor, variance_to: Tensor) -> Tensor:
    r"""The exact flow map's gain :math:`\sqrt{c_t/c_s}` per eigendirection."""
    return (variance_to / variance_from).sqrt()


def squared_w2(mean: Tensor, std: Tensor, other_mean: Tensor, other_std: Tensor) -> Tensor:
    r""":math:`\|m - m'\|^2 + \|s - s'\|^2`: squared W2 between two Gaussians on one eigenbasis, given by their
    eigen-means and standard deviations per direction (a 0-d tensor, differentiable in them)."""
    return ((mean - other_mean) ** 2).sum() + ((std - other_std) ** 2).sum()


def refuse_singular(variance: Tensor, eigenvalues: Tensor, where: str, zero_variances: int | None = None) -> None:
    """Raise where a marginal variance is 0: a zero eigenvalue at a time where σ_t = 0 (``where`` says which; the
    message counts ``zero_variances``, the zeros of ``eigenvalues`` unless given)."""
    if bool((variance > 0).all()):
        return
    zeros = int((eigenvalues == 0).sum()) if zero_variances is None else zero_variances
    raise ValueError(
        f"the target is rank-deficient ({zeros} zero variance(s)) and σ_t = 0 at {where} (the "
        "data end): there its marginal has no density, so the score, velocity and predictions are singular. Stop "
        "before it (a grid with t1 < 1, e.g. get_grid(..., t1=1 - 1e-3))")


@dataclass(frozen=True)
class SpectralGaussian:
    r""":math:`N(Um,\ U\operatorname{diag}(v)U^\top)`: an orthonormal ``basis`` U, the mean ``eigen_mean`` m in its
    eigen coordinates and the ``variances`` v ≥ 0 (float64, ``(d,)``). Nothing d × d is stored or built unless asked
    (:attr:`covariance`)."""

    basis: Basis
    eigen_mean: Tensor
    variances: Tensor

    @property
    def dim(self) -> int:
        return self.basis.dim

    @property
    def mean(self) -> Tensor:
        """:math:`Um`, in data coordinates."""
        return self.basis.from_eigen(self.eigen_mean)

    @property
    def covariance(self) -> Tensor:
        r""":math:`U\operatorname{diag}(v)U^\top`, built (d² memory: for small d and tests)."""
        dense = self.basis.dense()
        return (dense * self.variances) @ dense.T

    def marginal(self, alpha: float, sigma: float) -> SpectralGaussian:
        r"""The law of :math:`\alpha x + \sigma\varepsilon` for x from this Gaussian: mean αm, variances
        :math:`c = \alpha^2 v + \sigma^2` (:func:`marginal_variance`), on the same basis."""
        return SpectralGaussian(self.basis, alpha * self.eigen_mean, marginal_variance(alpha, sigma, self.variances))

    def flow_map(self, start: tuple[float, float], end: tuple[float, float]) -> tuple[Tensor, Tensor]:
        r"""``(P*, Q*)`` of the exact probability-flow map between the times whose ``(α, σ)`` are ``start`` and
        ``end``, per eigendirection: :math:`z^* = P^*z + Q^*` with :math:`P^* = \sqrt{c_{end}/c_{start}}` and
        :math:`Q^* = (\alpha_{end} - P^*\alpha_{start})m`."""
        gain = flow_gain(marginal_variance(*start, self.variances), marginal_variance(*end, self.variances))
        return gain, (end[0] - gain * start[0]) * self.eigen_mean

    def w2_to(self, other: SpectralGaussian) -> float:
        r"""Exact W2 to ``other`` on the same basis (Bures for commuting covariances):
        :math:`\big(\|m - m'\|^2 + \|\sqrt v - \sqrt{v'}\|^2\big)^{1/2}`."""
        if other.basis is not self.basis and other.basis.fingerprint() != self.basis.fingerprint():
            raise ValueError(f"w2_to needs two Gaussians on the same basis; got {self.basis!r} and {other.basis!r}")
        return math.sqrt(float(squared_w2(self.eigen_mean, self.variances.sqrt(), other.eigen_mean,
                                          other.variances.sqrt())))

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        r"""``n`` draws, float64 on the CPU: :math:`U(m + \sqrt v\,\xi)`, ξ from ``torch.randn`` with ``generator``."""
        n = check_int("n", n, minimum=0)
        noise = torch.randn(n, self.dim, dtype=torch.float64, generator=as_generator(generator))
        return self.basis.from_eigen(torch.addcmul(self.eigen_mean, self.variances.sqrt(), noise))
