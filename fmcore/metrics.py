r"""Metrics: exact and sample-based Wasserstein distances, their noise floor, strong error, mode coverage,
likelihood error. Each docstring states the metric's cost and its own error (``docs/design.md``, "Metrics").

All distances are W2 (not squared), computed in float64. Sample inputs are ``(n, d)`` tensors (any device
for ``w2_sliced``; the others move to the CPU).

A note on empirical W2 between two samples of size n from the same law: it is not zero but decays like
:math:`n^{-1/d}` for :math:`d \ge 5` (slower than the :math:`n^{-1/2}` of a moment), like
:math:`n^{-1/2}\log n` in d = 4 and :math:`n^{-1/2}` in d ≤ 3 up to logs (Fournier & Guillin 2015). That bias
is what :func:`w2_floor` measures; report it beside every empirical W2.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from ._checks import (
    as_float64,
    as_generator,
    check_allocation,
    check_finite,
    check_instance,
    check_int,
    check_memory,
    check_samples,
)
from .targets import GaussianMixture

__all__ = [
    "w2_gaussian",
    "w2_exact",
    "w2_sliced",
    "w2_floor",
    "strong_error",
    "strong_error_standard_error",
    "gaussian_fit_w2",
    "spectral_fit_w2",
    "mode_tv",
    "nll_error",
    "W2_ESTIMATORS",
]

PSD_TOLERANCE = 1e-10  # eigenvalues ≥ −tolerance·(largest |eigenvalue|) count as zero


# ---------------------------------------------------------------------- validation


W2_EXACT_BYTES_PER_PAIR = 41
"""Peak memory of :func:`w2_exact` per (x, y) pair: the float64 cost matrix and the network simplex's own arrays,
measured at n = 2000 and 4000 (41 bytes per pair at both)."""


def _check_point_cloud(name: str, x: Tensor) -> None:
    check_samples(name, x, finite=True, min_points=1)


def _check_target(target) -> None:
    check_instance("target", target, GaussianMixture, "e.g. fmcore.get_target('seed000'), not its name")


def _check_pair(x: Tensor, y: Tensor, same_size: bool = False, names: tuple[str, str] = ("x", "y")) -> None:
    """Two point clouds of the same d (and the same n when ``same_size``), named as the caller's arguments."""
    first, second = names
    _check_point_cloud(first, x)
    _check_point_cloud(second, y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{first} and {second} must have the same dimension d, got {x.shape[1]} and {y.shape[1]}")
    if same_size and x.shape[0] != y.shape[0]:
        raise ValueError(f"{first} and {second} must have the same number of points, got {x.shape[0]} and {y.shape[0]}")


def _binary_exponent(largest: float) -> int:
    """The e with ``largest`` < 2^e (0 for 0): the power of two a computation is scaled by to keep its squares in range."""
    return math.frexp(largest)[1] if largest > 0 else 0


def _times_power_of_two(x: Tensor, exponent: int) -> Tensor:
    """``x · 2^exponent``, exact wherever the result is a normal number (two factors, each a normal float64)."""
    half = exponent // 2
    return x * math.ldexp(1.0, half) * math.ldexp(1.0, exponent - half)


def _unscaled(value: float, exponent: int, what: str) -> float:
    """``value · 2^exponent``: a metric computed on inputs scaled by 2^−exponent, brought back to their scale; an
    ``OverflowError`` where the true value is beyond float64's range."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        raise OverflowError(f"{what} is {value:.6g} × 2^{exponent}, beyond float64's range (about 1.8e308)") from None


def _largest(*tensors: Tensor) -> float:
    return max((float(t.abs().max()) for t in tensors if t.numel()), default=0.0)


def _symmetric_psd(name: str, matrix, dim: int | None = None) -> Tensor:
    matrix = as_float64(name, matrix)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or (dim is not None and matrix.shape[0] != dim):
        expected = f"({dim}, {dim})" if dim is not None else "(d, d)"
        raise ValueError(f"{name} must be a square matrix of shape {expected}, got {tuple(matrix.shape)}")
    scale = float(matrix.abs().max()) or 1.0
    if float((matrix - matrix.T).abs().max()) > 1e-8 * scale:
        raise ValueError(f"{name} must be symmetric (|C − Cᵀ| ≤ 1e-8·max|C|)")
    symmetric = 0.5 * (matrix + matrix.T)
    smallest = float(torch.linalg.eigvalsh(symmetric).min())
    if smallest < -PSD_TOLERANCE * scale * max(1, matrix.shape[0]):
        raise ValueError(f"{name} must be positive semi-definite; its smallest eigenvalue is {smallest:.3g}")
    return symmetric


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Symmetric square root by eigh, with eigenvalues clamped at 0 (round-off makes tiny negatives)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T


# ---------------------------------------------------------------------- Gaussian (exact)


def w2_gaussian(mean1, cov1, mean2, cov2) -> float:
    r"""W2 between :math:`N(m_1, C_1)` and :math:`N(m_2, C_2)` by the Bures formula, float64:

    .. math:: W_2^2 = \|m_1 - m_2\|^2 + \operatorname{tr} C_1 + \operatorname{tr} C_2 - 2\,\|C_1^{1/2} C_2^{1/2}\|_*,

    where :math:`\|\cdot\|_*` is the nuclear norm (sum of singular values): :math:`\|C_1^{1/2}C_2^{1/2}\|_* =
    \operatorname{tr}(C_2^{1/2} C_1 C_2^{1/2})^{1/2}`, since :math:`(C_1^{1/2}C_2^{1/2})^\top(C_1^{1/2}C_2^{1/2}) =
    C_2^{1/2} C_1 C_2^{1/2}`. The singular values are taken directly (SVD), not as square roots of that product's
    eigenvalues: an eigenvalue at round-off :math:`\epsilon\|C\|` of the product would turn into an error of
    :math:`\sqrt{\epsilon\|C\|}` in its root, which the SVD avoids. :math:`C^{1/2}` by symmetric eigendecomposition,
    with round-off negatives clamped to 0.

    Accuracy: :math:`W_2^2` to about :math:`d\,\epsilon\,(\operatorname{tr} C_1 + \operatorname{tr} C_2)` where the
    covariances' eigenvalues are resolved (≫ :math:`\epsilon\|C\|`), so W2 itself to the square root of that when the
    two laws coincide; an eigenvalue of :math:`C_1` or :math:`C_2` at round-off level (a singular covariance) enters
    :math:`C^{1/2}` as up to :math:`\sqrt{\epsilon\|C\|}`. Symmetric in the two laws to round-off. Cost
    :math:`O(d^3)`. No sampling error. Computed for the laws scaled by a power of two that brings the largest mean
    entry or standard deviation to [½, 1), and scaled back: scale-invariant, so no square over- or underflows
    (W2 of 10³⁰⁸·I with itself is 0, means 10²⁰⁰ apart give 10²⁰⁰·√d); an ``OverflowError`` only where W2 itself is
    beyond float64's range.
    """
    mean1 = as_float64("mean1", mean1)
    mean2 = as_float64("mean2", mean2)
    if mean1.dim() > 1 or mean2.dim() > 1 or mean1.shape != mean2.shape or mean1.numel() == 0:
        raise ValueError(
            f"mean1 and mean2 must be vectors (d,) of the same d ≥ 1, got shapes {tuple(mean1.shape)} and {tuple(mean2.shape)}"
        )
    mean1, mean2 = mean1.reshape(-1), mean2.reshape(-1)
    dim = mean1.numel()
    cov1, cov2 = as_float64("cov1", cov1), as_float64("cov2", cov2)
    # Scaled by a power of two s (exactly) so that no square over- or underflows: W2 is computed for the laws of x/s.
    exponent = _binary_exponent(max(_largest(mean1, mean2), math.sqrt(_largest(cov1, cov2))))
    mean1, mean2 = _times_power_of_two(mean1, -exponent), _times_power_of_two(mean2, -exponent)
    cov1 = _symmetric_psd("cov1", _times_power_of_two(cov1, -2 * exponent), dim)
    cov2 = _symmetric_psd("cov2", _times_power_of_two(cov2, -2 * exponent), dim)
    nuclear = torch.linalg.svdvals(_psd_sqrt(cov1) @ _psd_sqrt(cov2)).sum()
    squared = float(((mean1 - mean2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * nuclear)
    return _unscaled(math.sqrt(max(squared, 0.0)), exponent, "the W2 distance")


# ---------------------------------------------------------------------- exact optimal transport


def w2_exact(x: Tensor, y: Tensor, max_iterations: int = 100_000_000, max_memory_bytes: float | None = None) -> float:
    r"""Exact W2 between the empirical measures of ``x`` (n points) and ``y`` (m points), uniform weights.

    Solved by POT's network simplex (``ot.emd2``) on the squared-Euclidean cost matrix, in float64. Chosen by
    measurement over SciPy's ``linear_sum_assignment``: at n = 4000, d = 3 on one core, 4.3 s against 15.5 s
    (see ``bench/bench_metrics.py``). Cost: :math:`O(nm)` memory for the cost matrix and roughly
    :math:`O(n^2 \log n)`–:math:`O(n^3)` time; practical to n ≈ 10⁴. No error of its own beyond float64
    round-off (raises if the simplex hits ``max_iterations``); as an estimate of the W2 between the
    underlying laws it carries the sample-size bias described in the module docstring.

    Memory is estimated first (:data:`W2_EXACT_BYTES_PER_PAIR` × n × m) and a ``MemoryError`` raised, before any
    allocation, above ``max_memory_bytes`` (default 4 GiB: n = m ≈ 10⁴).
    """
    import ot
    from scipy.spatial.distance import cdist

    _check_pair(x, y)
    max_iterations = check_int("max_iterations", max_iterations)
    check_memory(f"w2_exact of {x.shape[0]} × {y.shape[0]} points", W2_EXACT_BYTES_PER_PAIR * x.shape[0] * y.shape[0],
                 max_memory_bytes)
    x64 = x.detach().to(dtype=torch.float64, device="cpu").numpy()
    y64 = y.detach().to(dtype=torch.float64, device="cpu").numpy()
    cost = cdist(x64, y64, metric="sqeuclidean")  # Σ(x − y)², no cancellation (unlike ‖x‖² + ‖y‖² − 2x·y)
    a = np.full(x64.shape[0], 1.0 / x64.shape[0])
    b = np.full(y64.shape[0], 1.0 / y64.shape[0])
    value, log = ot.emd2(a, b, cost, numItermax=max_iterations, log=True)
    if log.get("warning"):
        raise RuntimeError(f"w2_exact: the network simplex did not converge: {log['warning']}")
    return math.sqrt(max(float(value), 0.0))


# ---------------------------------------------------------------------- sliced


def _sort_rows(*blocks: Tensor) -> list[Tensor]:
    """Sort every row of every block. On the CPU: NumPy's SIMD sort (about 3× faster than ``torch.sort``
    here), rows spread over a thread pool of ``torch.get_num_threads()`` (``ndarray.sort`` releases the GIL)."""
    if blocks[0].device.type != "cpu":
        return [torch.sort(block, dim=1).values for block in blocks]
    arrays = [block.contiguous().numpy() for block in blocks]
    rows = [row for array in arrays for row in array]
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        list(pool.map(np.ndarray.sort, rows))
    return [torch.from_numpy(array) for array in arrays]


def _squared_w2_1d_sorted(x_sorted: Tensor, y_sorted: Tensor) -> Tensor:
    r"""Row-wise :math:`\int_0^1 (F_x^{-1}(u) - F_y^{-1}(u))^2\,du` of sorted samples, ``(P,)``.

    Equal sizes: the mean squared difference of order statistics. Unequal sizes n, m: the quantile functions
    are step functions with breaks at i/n and j/m; integrate exactly over the merged breaks, in integer
    arithmetic on the common denominator n·m.
    """
    n, m = x_sorted.shape[1], y_sorted.shape[1]
    if n == m:
        return ((x_sorted - y_sorted) ** 2).mean(dim=1)
    device = x_sorted.device
    breaks = torch.cat([torch.arange(1, n + 1, device=device) * m, torch.arange(1, m + 1, device=device) * n]).unique()
    widths = torch.diff(breaks, prepend=torch.zeros(1, dtype=breaks.dtype, device=device)).to(x_sorted.dtype) / (n * m)
    index_x = (breaks + m - 1) // m - 1
    index_y = (breaks + n - 1) // n - 1
    return ((x_sorted[:, index_x] - y_sorted[:, index_y]) ** 2 * widths).sum(dim=1)


def w2_sliced(
    x: Tensor, y: Tensor, n_projections: int = 256, generator: torch.Generator | int | None = None, batch: int = 32
) -> float:
    r"""Sliced W2: :math:`\big(\frac1P\sum_p W_2^2(\theta_p^\top x, \theta_p^\top y)\big)^{1/2}` over P random unit
    directions :math:`\theta_p` (drawn in float64 on the CPU from ``generator``, so the same seed gives the
    same directions on every device).

    Each 1-D W2 is exact (sorted samples). Works on CUDA tensors (sorts there); on the CPU sorts with NumPy.
    Cost :math:`O(P(n + m)(d + \log n))`, projections processed ``batch`` at a time (memory
    :math:`O(\text{batch}\cdot n)`). Its own error: Monte Carlo over directions, relative standard
    deviation about :math:`\operatorname{sd}_\theta(W_2^2(\theta))/(2W^2\sqrt P)`; and, like every empirical W2,
    the sample-size bias (module docstring), though in 1-D slices it decays like :math:`n^{-1/2}`. It is a
    different distance from W2 (smaller, by a factor that depends on d): compare it only with itself.
    """
    _check_pair(x, y)
    n_projections, batch = check_int("n_projections", n_projections), check_int("batch", batch)
    generator = as_generator(generator)
    check_allocation("n_projections", n_projections, f"{n_projections} directions in d = {x.shape[1]}",
                     8.0 * n_projections * x.shape[1])
    directions = torch.randn(n_projections, x.shape[1], dtype=torch.float64, generator=generator)
    directions = directions / directions.norm(dim=1, keepdim=True)
    work_dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.detach().to(work_dtype), y.detach().to(dtype=work_dtype, device=x.device)
    exponent = _binary_exponent(_largest(x, y))  # points scaled by a power of two: no square overflows (float32 too)
    x, y = _times_power_of_two(x, -exponent), _times_power_of_two(y, -exponent)
    total = 0.0
    for start in range(0, n_projections, batch):
        block = directions[start : start + batch].to(dtype=work_dtype, device=x.device)
        x_sorted, y_sorted = _sort_rows(block @ x.T, block @ y.T)  # (batch, n): one contiguous row per direction
        total += float(_squared_w2_1d_sorted(x_sorted, y_sorted).double().sum())
    return _unscaled(math.sqrt(max(total / n_projections, 0.0)), exponent, "the sliced W2 distance")


W2_ESTIMATORS = {"exact": w2_exact, "sliced": w2_sliced}


def w2_floor(
    target: GaussianMixture, n: int, estimator: str = "exact", generator: torch.Generator | int | None = None,
    repeats: int = 1, **estimator_options,
) -> float:
    """The noise floor of an empirical W2 estimator: the same estimator between two independent samples of
    size n from ``target`` itself, averaged over ``repeats`` pairs.

    A solver's empirical W2 against a target sample is only meaningful where it clearly exceeds this.
    Cost: ``repeats`` calls of the estimator at size n. Its own spread: run with ``repeats`` > 1.
    """
    _check_target(target)
    if not isinstance(estimator, str):
        raise TypeError(f"estimator must be a name, one of {sorted(W2_ESTIMATORS)}, got {type(estimator).__name__}")
    if estimator not in W2_ESTIMATORS:
        raise KeyError(f"unknown estimator {estimator!r}; valid names: {sorted(W2_ESTIMATORS)}")
    n, repeats = check_int("n", n), check_int("repeats", repeats)
    generator = as_generator(generator)
    values = []
    for _ in range(repeats):
        first, second = target.sample(n, generator=generator), target.sample(n, generator=generator)
        if estimator == "sliced":
            estimator_options.setdefault("generator", generator)
        values.append(W2_ESTIMATORS[estimator](first, second, **estimator_options))
    return float(np.mean(values))


# ---------------------------------------------------------------------- other metrics


def strong_error(x: Tensor, x_ref: Tensor) -> float:
    r"""RMS distance :math:`\big(\frac1n\sum_i\|\hat x_i - x^*_i\|^2\big)^{1/2}` between a sampler's outputs and
    reference outputs from the **same** noise. It bounds W2 between their laws from above (the pairing is a
    coupling) and has no sampling noise of its own beyond that of the n noises used
    (:func:`strong_error_standard_error`). Cost :math:`O(nd)`. Computed on the inputs and their difference scaled by
    powers of two, so it is finite for all finite inputs whose strong error is representable (an ``OverflowError``
    beyond)."""
    squares, exponent = _scaled_squared_distances(x, x_ref)
    return _unscaled(math.sqrt(float(squares.mean())), exponent, "the strong error")


def strong_error_standard_error(x: Tensor, x_ref: Tensor) -> float:
    r"""The Monte-Carlo standard error of :func:`strong_error` over its n noises. With
    :math:`e_i = \|\hat x_i - x^*_i\|^2`, their mean :math:`\bar e` and sample standard deviation :math:`s_e`, the
    strong error is :math:`\sqrt{\bar e}` and, by the delta method,

    .. math:: \operatorname{SE}\big(\sqrt{\bar e}\big) \approx \frac{s_e}{2\sqrt{\bar e}\,\sqrt n}

    (0 where every distance is 0; ``nan`` for n = 1). What another draw of n noises would move the figure by: two
    samplers whose strong errors differ by less than about twice their combined SE are not ranked by it."""
    squares, exponent = _scaled_squared_distances(x, x_ref)
    n = squares.numel()
    if n < 2:
        return math.nan
    mean = float(squares.mean())
    if mean == 0.0:
        return 0.0
    return _unscaled(float(squares.std()) / (2.0 * math.sqrt(mean) * math.sqrt(n)), exponent,
                     "the strong error's standard error")


def _scaled_squared_distances(x: Tensor, x_ref: Tensor) -> tuple[Tensor, int]:
    r"""``(e, k)`` with :math:`\|\hat x_i - x^*_i\|^2 = e_i 4^k`: the inputs scaled to [½, 1), then their difference,
    by exact powers of two, so no square over- or underflows."""
    _check_pair(x, x_ref, same_size=True, names=("x", "x_ref"))
    x, x_ref = x.detach().double(), x_ref.detach().to(device=x.device).double()
    inputs = _binary_exponent(_largest(x, x_ref))
    difference = _times_power_of_two(x, -inputs) - _times_power_of_two(x_ref, -inputs)
    differences = _binary_exponent(_largest(difference))
    difference = _times_power_of_two(difference, -differences)
    return (difference**2).sum(dim=1), inputs + differences


def _check_sample_of(x: Tensor, target, estimate: str) -> None:
    """``x`` a finite point cloud of the target's d with at least 2 points (to estimate ``estimate``)."""
    _check_target(target)
    _check_point_cloud("x", x)
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 points to estimate {estimate}, got shape {tuple(x.shape)}")
    if x.shape[1] != target.dim:
        raise ValueError(f"x must have d = {target.dim} columns to match the target, got {x.shape[1]}")


def gaussian_fit_w2(x: Tensor, target: GaussianMixture) -> float:
    """Bures W2 between the sample's mean and covariance and the target's exact ones (FID-like).

    Cost :math:`O(nd^2 + d^3)`. Blind to everything beyond second moments. Its own error: the sample mean's
    standard error is :math:`\\sqrt{\\operatorname{tr}\\Sigma/n}`, which is also roughly its floor for an exact
    sampler (use :func:`w2_floor`-style repeats to measure it for a given n)."""
    _check_sample_of(x, target, "a covariance")
    x64 = x.detach().double().cpu()
    return w2_gaussian(x64.mean(0), torch.cov(x64.T).reshape(target.dim, target.dim), target.mean(), target.covariance())


def spectral_fit_w2(x: Tensor, target: GaussianMixture) -> float:
    r"""W2 between the target's moments and the Gaussian fitted to ``x`` diagonally in the target's shared eigenbasis U.

    With :math:`z = U^\top x` (U applied, never built), per eigendirection j the sample mean :math:`\hat m_j` and
    variance :math:`\hat v_j` against the target's exact :math:`m_j = \sum_k w_k\tilde\mu_{kj}` and
    :math:`v_j = \sum_k w_k(\lambda_{kj} + \tilde\mu_{kj}^2) - m_j^2`:
    :math:`\big(\sum_j (\hat m_j - m_j)^2 + (\sqrt{\hat v_j} - \sqrt{v_j})^2\big)^{1/2}` — the Bures distance of two
    Gaussians diagonal in U. It is :func:`gaussian_fit_w2` without the sample's correlations across eigendirections
    (none in the law of a linear sampler on a Gaussian target), at O(n·cost(U)) instead of O(n·d² + d³): what scores
    image-dimension targets. Its own error, like the full fit's: about :math:`\sqrt{2\sum_j v_j/n}` for an exact sampler."""
    _check_sample_of(x, target, "a variance")
    if target.basis is None:
        raise ValueError("spectral_fit_w2 needs a target whose components share one eigenbasis (target.basis); this "
                         "one has a dense basis per component: use gaussian_fit_w2")
    z = target.basis.to_eigen(x.detach().double().cpu())
    rotated_means = target.basis.to_eigen(target.means)
    mean = target.weights @ rotated_means
    variance = target.weights @ (target.eigenvalues + rotated_means**2) - mean**2
    squared = ((z.mean(0) - mean) ** 2).sum() + ((z.var(0).sqrt() - variance.clamp_min(0).sqrt()) ** 2).sum()
    return math.sqrt(float(squared))


def mode_tv(x: Tensor, target: GaussianMixture) -> float:
    r"""Total variation :math:`\frac12\sum_k |f_k - w_k|` between the target's weights and the fractions
    :math:`f_k` of samples whose most probable component (posterior under the target) is k.

    Cost :math:`O(nKd^2)`. Its own error: multinomial noise, about :math:`\frac12\sum_k\sqrt{w_k/n}` for an
    exact sampler, plus the misassignment of samples that fall where components overlap (zero for
    well-separated modes)."""
    _check_target(target)
    _check_point_cloud("x", x)
    if x.shape[1] != target.dim:
        raise ValueError(f"x must have d = {target.dim} columns to match the target, got {x.shape[1]}")
    assignment = target.component_posteriors(x.detach().double().cpu()).argmax(dim=1)
    fractions = torch.bincount(assignment, minlength=target.num_components).double() / x.shape[0]
    return 0.5 * float((fractions - target.weights).abs().sum())


def nll_error(model_logp: Tensor, x: Tensor, target: GaussianMixture) -> float:
    r"""Mean of the model's log-density minus the exact one on points ``x`` (samples of the target):
    :math:`\frac1n\sum_i(\log q(x_i) - \log p(x_i))`.

    On target samples its expectation is :math:`-\mathrm{KL}(p\,\|\,q) \le 0`, so a positive value is Monte
    Carlo noise or a model error. Cost :math:`O(nKd^2)` beyond computing ``model_logp``; standard error
    :math:`\operatorname{sd}(\log q - \log p)/\sqrt n`."""
    _check_target(target)
    _check_point_cloud("x", x)
    if x.shape[1] != target.dim:
        raise ValueError(f"x must have d = {target.dim} columns to match the target, got {x.shape[1]}")
    model_logp = as_float64("model_logp", model_logp).reshape(-1)
    if model_logp.numel() != x.shape[0]:
        raise ValueError(f"model_logp must have one value per point: {x.shape[0]}, got {model_logp.numel()}")
    check_finite("model_logp", model_logp)
    return float((model_logp - target.log_prob(x.detach().double().cpu())).mean())
