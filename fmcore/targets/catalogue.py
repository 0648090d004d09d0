"""The named targets: ``get_target(name, **params)`` and the registry a new target joins with
``@register_target("name")``."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import torch
from torch import Tensor

from .._checks import check_allocation, check_choice, check_int, check_number, check_seed
from .._registry import Registry
from .bases import DCT, Hartley, image_shape
from .covariances import EIGENVALUE_FLOOR
from .mixture import GaussianMixture

__all__ = ["TARGETS", "get_target", "register_target", "ADSN_SPECTRUM", "CIFAR10_SPECTRUM", "IMAGE_BASES", "image_spectrum"]

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


DATA = Path(__file__).parent.parent / "data"
CIFAR10_SPECTRUM = DATA / "cifar10_covariance_eigenvalues.npy"
"""The covariance spectrum of CIFAR-10 (3072 eigenvalues, 9 of them zero): its source is in ``fmcore/data/README.md``."""
CIFAR10_SPECTRUM_SHA256 = "5c896e4125f16a1e7a76efa10e550dc656506b6bb184d56c340e5098317a6e58"
ADSN_SPECTRUM = DATA / "adsn_covariance_eigenvalues.npy"
"""The covariance spectrum of an ADSN texture model (196 608 eigenvalues, 131 072 of them zero): source in
``fmcore/data/README.md``."""
ADSN_SPECTRUM_SHA256 = "098952779b1ecb6f142963d768368847edb67302069c1e46056cad0c57ffb176"


def _shipped_gaussian(path: Path, sha256: str, what: str) -> GaussianMixture:
    """The zero-mean Gaussian on the coordinate axes with the shipped spectrum at ``path`` (checked by its SHA-256)."""
    import numpy as np

    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path} is not the shipped {what} spectrum (its SHA-256 differs)")
    eigenvalues = torch.from_numpy(np.load(io.BytesIO(data)).astype(np.float64)).abs()  # −0.0 → 0.0
    dim = eigenvalues.numel()
    return GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, dim, dtype=torch.float64),
                           eigenvalues.unsqueeze(0), covariance_type="diag")


@register_target("cifar10")
def cifar10_gaussian() -> GaussianMixture:
    """The zero-mean Gaussian with CIFAR-10's covariance spectrum, d = 3 × 32 × 32 = 3072, on the coordinate axes.

    Rank 3063: its nine zero eigenvalues make its marginal singular where σ_t = 0 (the data end), so samplers are
    stopped before it (a grid with t1 < 1, as Pierret & Galerne's ε). Only the spectrum is published; every
    basis-invariant figure (W2 to the target, the exact laws per eigenvalue, strong errors) is that of the data's
    own basis."""
    return _shipped_gaussian(CIFAR10_SPECTRUM, CIFAR10_SPECTRUM_SHA256, "CIFAR-10")


@register_target("adsn")
def adsn_gaussian() -> GaussianMixture:
    """The zero-mean Gaussian with an ADSN texture model's covariance spectrum, d = 3 × 256 × 256 = 196 608, on the
    coordinate axes (its own basis is a Fourier basis; only the spectrum is published, as for ``cifar10``).

    Rank 65 536 (one nonzero eigenvalue per spatial frequency: a colour texture's covariance has rank one in colour),
    so its marginal is singular where σ_t = 0: stop before it."""
    return _shipped_gaussian(ADSN_SPECTRUM, ADSN_SPECTRUM_SHA256, "ADSN")


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


IMAGE_BASES = {basis.name: basis for basis in (DCT, Hartley)}
"""The transforms an image target may be diagonal in, by name."""


def image_spectrum(basis: DCT | Hartley, exponent: float, scale: float, channel_ratio: float) -> Tensor:
    r"""A power law over spatial frequency, per eigen coordinate of an image basis of shape (C, H, W):
    :math:`\lambda = s\,g_c\,(1 + \rho^2/\rho_0^2)^{-p/2}` with ρ the coordinate's spatial frequency
    (:meth:`~fmcore.targets.bases.DCT.frequencies`, in cycles per pixel), :math:`\rho_0 = 1/\max(H, W)` one frequency
    step, p = ``exponent`` (natural images: about 2), s = ``scale`` and :math:`g_c` = 1 for the first channel frequency
    (the channels' mean, where most of the energy is), ``channel_ratio`` for the others."""
    frequencies = basis.frequencies()  # (d, 3): channel, vertical, horizontal
    spatial = frequencies[:, 1:]
    radius = spatial.pow(2).sum(1).sqrt()
    step = 1.0 / max(basis.shape[1:])
    channel_gain = torch.where(frequencies[:, 0] == 0, 1.0, channel_ratio).to(torch.float64)
    return scale * channel_gain * (1.0 + (radius / step) ** 2) ** (-exponent / 2)


def _image_basis(shape, basis: str) -> DCT | Hartley:
    shape = image_shape(shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    return IMAGE_BASES[check_choice("basis", basis, tuple(IMAGE_BASES))](shape)


@register_target("image_gaussian")
def image_gaussian(shape=(3, 32, 32), basis: str = "dct", exponent: float = 2.0, scale: float = 1.0,
                   channel_ratio: float = 0.1) -> GaussianMixture:
    """A zero-mean Gaussian on images of ``shape`` (C, H, W), diagonal in the orthonormal ``basis`` ("dct" over
    (C, H, W), or "hartley": a stationary, circular model) with a power-law spectrum over spatial frequency
    (:func:`image_spectrum`). The basis is applied, never built: O(n·d log d) per closed form."""
    image_basis = _image_basis(shape, basis)
    exponent = check_number("exponent", exponent, 0.0)
    scale = check_number("scale", scale, 0.0, low_open=True)
    channel_ratio = check_number("channel_ratio", channel_ratio, 0.0, low_open=True)
    eigenvalues = image_spectrum(image_basis, exponent, scale, channel_ratio).unsqueeze(0)
    return GaussianMixture.on_basis(torch.ones(1, dtype=torch.float64), torch.zeros(1, image_basis.dim, dtype=torch.float64),
                                    eigenvalues, image_basis)


@register_target("image_mixture")
def image_mixture(K: int = 4, shape=(3, 16, 16), basis: str = "dct", exponent: float = 2.0, spread: float = 1.0,
                  seed: int = 0) -> GaussianMixture:
    """K seeded image Gaussians sharing one basis: component k has exponent ``exponent`` × (0.75 … 1.25), a scale
    log-uniform in [0.5, 2], a mean drawn from the base spectrum times ``spread`` (a smooth random image), and a
    weight ∝ 0.5 + U(0, 1). O(n·d log d + n·K·d) per closed form."""
    K, seed = check_int("K", K), check_seed("seed", seed)
    image_basis = _image_basis(shape, basis)
    exponent = check_number("exponent", exponent, 0.0)
    spread = check_number("spread", spread, 0.0)
    check_allocation("K", K, f"{K} image components of d = {image_basis.dim}", 8.0 * 8 * K * image_basis.dim)
    generator = torch.Generator().manual_seed(int(seed))
    uniform = lambda *size: torch.rand(*size, dtype=torch.float64, generator=generator)  # noqa: E731
    exponents = exponent * (0.75 + 0.5 * uniform(K))
    scales = 0.5 * 4.0 ** uniform(K)
    eigenvalues = torch.stack([image_spectrum(image_basis, float(p), float(s), 0.1) for p, s in zip(exponents, scales,
                                                                                                     strict=True)])
    base = image_spectrum(image_basis, exponent, 1.0, 0.1)
    rotated_means = spread * base.sqrt() * torch.randn(K, image_basis.dim, dtype=torch.float64, generator=generator)
    weights = 0.5 + uniform(K)
    return GaussianMixture.on_basis(weights / weights.sum(), image_basis.from_eigen(rotated_means), eigenvalues,
                                    image_basis)

