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
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["marginal_variance", "velocity_gain", "flow_gain", "refuse_singular"]


def marginal_variance(alpha, sigma, eigenvalues: Tensor) -> Tensor:
    r""":math:`c = \alpha^2\lambda + \sigma^2` (α, σ broadcast against ``eigenvalues``)."""
    return alpha**2 * eigenvalues + sigma**2


def velocity_gain(alpha, d_alpha, sigma_d_sigma, eigenvalues: Tensor, variance: Tensor) -> Tensor:
    r""":math:`a = (\alpha\dot\alpha\lambda + \sigma\dot\sigma)/c`."""
    return (alpha * d_alpha * eigenvalues + sigma_d_sigma) / variance


def flow_gain(variance_from: Tensor, variance_to: Tensor) -> Tensor:
    r"""The exact flow map's gain :math:`\sqrt{c_t/c_s}` per eigendirection."""
    return (variance_to / variance_from).sqrt()


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
