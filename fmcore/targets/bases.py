r"""Orthonormal eigenbases of analytic targets, applied as operators and never materialised unless dense.

A target's covariance is :math:`\Sigma = U\operatorname{diag}(\lambda)U^\top` with U orthonormal (columns are the
eigenvectors). A :class:`Basis` is U as an operator on batches of row vectors ``(n, d)``:

* :meth:`~Basis.to_eigen` :math:`z = U^\top x` (``x @ U``), :meth:`~Basis.from_eigen` :math:`x = Uz` (``z @ Uᵀ``);
* :class:`Identity` — the coordinate axes (a diagonal covariance): both maps are the identity, O(1);
* :class:`Dense` — any orthonormal U, stored: O(n·d²) per map, d² memory;
* :class:`DCT` — the orthonormal DCT-II over an image's axes (C, H, W): natural images' covariances are close to
  diagonal there. O(n·d log d), computed with FFTs (torch has no DCT; the result equals ``scipy.fft.dctn(...,
  norm="ortho")``, tested), on any device;
* :class:`Hartley` — the real orthonormal Fourier basis of a stationary (circular) image model such as ADSN:
  :math:`H = \operatorname{Re}F - \operatorname{Im}F` scaled by :math:`1/\sqrt d`, symmetric and its own inverse.

A basis casts itself to a dtype and device once (:meth:`~Basis.to`), and has a :meth:`~Basis.fingerprint` of what
defines it (for cache keys) and :meth:`~Basis.dense` (U built, d × d: only when asked).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .._checks import as_float64, check_int

__all__ = ["Basis", "Identity", "Dense", "DCT", "Hartley", "ORTHOGONALITY_TOLERANCE", "image_shape"]

ORTHOGONALITY_TOLERANCE = 1e-8
"""A dense basis with ``max |UᵀU − I|`` above this is refused as not orthonormal."""


class Basis(ABC):
    """An orthonormal basis U of R^d, applied to ``(..., d)`` row vectors."""

    dim: int
    is_identity: bool = False
    """True for the coordinate axes: callers may skip both maps."""
    is_matrix: bool = False
    """True when the maps are products with a stored d × d matrix (GEMMs, O(n·d²))."""

    @abstractmethod
    def to_eigen(self, x: Tensor) -> Tensor:
        """:math:`U^\\top x` for each row: eigen coordinates."""

    @abstractmethod
    def from_eigen(self, z: Tensor) -> Tensor:
        """:math:`Uz` for each row: data coordinates."""

    def to(self, dtype: torch.dtype, device: torch.device) -> Basis:
        """This basis for tensors of ``dtype`` on ``device`` (itself when nothing is stored)."""
        return self

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that identifies this basis (its kind and what defines it)."""

    def dense(self) -> Tensor:
        """U as a ``(d, d)`` float64 matrix (columns are the eigenvectors): d² memory, built on request."""
        return self.from_eigen(torch.eye(self.dim, dtype=torch.float64)).T

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.dim})"


class Identity(Basis):
    """The coordinate axes: a diagonal covariance's eigenbasis."""

    is_identity = True

    def __init__(self, dim: int):
        self.dim = check_int("dim", dim)

    def to_eigen(self, x: Tensor) -> Tensor:
        return x

    def from_eigen(self, z: Tensor) -> Tensor:
        return z

    def fingerprint(self) -> str:
        return f"identity:{self.dim}"

    def dense(self) -> Tensor:
        return torch.eye(self.dim, dtype=torch.float64)


class Dense(Basis):
    """A stored orthonormal ``(d, d)`` matrix U (columns are eigenvectors), checked to
    :data:`ORTHOGONALITY_TOLERANCE` on construction."""

    is_matrix = True

    def __init__(self, matrix, name: str = "matrix", check: bool = True):
        matrix = as_float64(name, matrix)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(f"{name} must be a square (d, d) matrix with d ≥ 1, got shape {tuple(matrix.shape)}")
        if check:
            check_orthonormal(name, matrix)
        self.matrix, self.dim = matrix, matrix.shape[0]
        self._float64 = matrix

    @classmethod
    def stored(cls, matrix: Tensor, float64: Tensor) -> Dense:
        """A basis from an already checked ``matrix`` of any dtype and device (``float64``: the same U in float64)."""
        basis = cls.__new__(cls)
        basis.matrix, basis.dim, basis._float64 = matrix, matrix.shape[0], float64
        return basis

    def to(self, dtype: torch.dtype, device: torch.device) -> Dense:
        return Dense.stored(self.matrix.to(dtype=dtype, device=device), self._float64)

    def to_eigen(self, x: Tensor) -> Tensor:
        return x @ self.matrix

    def from_eigen(self, z: Tensor) -> Tensor:
        return z @ self.matrix.T

    def fingerprint(self) -> str:
        return "dense:" + hashlib.sha256(self._float64.contiguous().numpy().tobytes()).hexdigest()

    def dense(self) -> Tensor:
        return self._float64


def check_orthonormal(name: str, matrices: Tensor) -> None:
    """Refuse ``(…, d, d)`` matrices whose columns are not orthonormal to :data:`ORTHOGONALITY_TOLERANCE`."""
    identity = torch.eye(matrices.shape[-1], dtype=matrices.dtype)
    departure = float((matrices.transpose(-1, -2) @ matrices - identity).abs().amax())
    if departure > ORTHOGONALITY_TOLERANCE:
        raise ValueError(
            f"{name} must be orthogonal (max |UᵀU − I| ≤ {ORTHOGONALITY_TOLERANCE:g}); got {departure:.3g}. "
            "Pass the covariances to GaussianMixture(...) instead if the basis is not orthonormal"
        )


def image_shape(shape) -> tuple[int, ...]:
    """A validated image shape ``(C, H, W)`` (or any tuple of positive sizes): its flattened size is d."""
    if isinstance(shape, int) or not hasattr(shape, "__len__") or len(shape) == 0:
        raise TypeError(f"shape must be a tuple of sizes such as (3, 32, 32), got {shape!r}")
    return tuple(check_int(f"shape[{axis}]", size) for axis, size in enumerate(shape))


class _ImageBasis(Basis):
    """A separable orthonormal transform over the axes of an image of ``shape`` (flattened row-major to d)."""

    def __init__(self, shape):
        self.shape = image_shape(shape)
        self.dim = math.prod(self.shape)

    def _as_images(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], *self.shape)

    def _as_rows(self, images: Tensor, like: Tensor) -> Tensor:
        return images.reshape(like.shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


class DCT(_ImageBasis):
    r"""The orthonormal DCT-II over every axis of an image of ``shape`` (e.g. (C, H, W)), separable.

    On one axis of length N: :math:`X_k = s_k\sum_n x_n\cos\big(\pi(2n+1)k/2N\big)` with :math:`s_0 = \sqrt{1/N}`,
    :math:`s_k = \sqrt{2/N}`; computed as Makhoul's N-point FFT of the even-odd reordered input,
    :math:`X_k = s_k\operatorname{Re}(e^{-i\pi k/2N}\,\mathrm{FFT}(v)_k)`, :math:`v = (x_0, x_2, \dots, x_3, x_1)`.
    ``to_eigen`` is the DCT (the eigen coordinates are DCT coefficients, frequency index row-major), ``from_eigen`` its
    inverse (DCT-III), which is its transpose."""

    name = "dct"

    def to_eigen(self, x: Tensor) -> Tensor:
        images = self._as_images(x)
        for axis in range(-len(self.shape), 0):
            images = _dct_along(images, axis)
        return self._as_rows(images, x)

    def from_eigen(self, z: Tensor) -> Tensor:
        images = self._as_images(z)
        for axis in range(-len(self.shape), 0):
            images = _idct_along(images, axis)
        return self._as_rows(images, z)

    def fingerprint(self) -> str:
        return f"dct:{self.shape}"

    def frequencies(self) -> Tensor:
        """Per eigen coordinate, its frequency along each axis in cycles per sample, ``(d, len(shape))`` (row-major):
        k/(2N) for DCT index k on an axis of length N."""
        return _frequency_grid(self.shape, lambda k, size: k / (2 * size))


def _frequency_grid(shape: tuple[int, ...], frequency) -> Tensor:
    """``frequency(k, N)`` of every index of every axis, on the row-major grid of ``shape``: ``(d, len(shape))``."""
    axes = [frequency(torch.arange(size, dtype=torch.float64), size) for size in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([grid.reshape(-1) for grid in grids], dim=1)


def _dct_along(x: Tensor, axis: int) -> Tensor:
    """Orthonormal DCT-II along ``axis`` (Makhoul's FFT algorithm)."""
    x = x.movedim(axis, -1)
    size = x.shape[-1]
    reordered = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)
    spectrum = torch.fft.fft(reordered, dim=-1)
    k = torch.arange(size, dtype=x.dtype, device=x.device)
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * size))
    coefficients = (spectrum * twiddle).real
    scale = torch.full_like(k, math.sqrt(2.0 / size))
    scale[0] = math.sqrt(1.0 / size)
    return (coefficients * scale).movedim(-1, axis)


def _idct_along(x: Tensor, axis: int) -> Tensor:
    """Orthonormal DCT-III along ``axis``, the inverse of :func:`_dct_along`: undo the scaling and the twiddle
    (:math:`V_k = (Y_k - iY_{N-k})e^{i\\pi k/2N}`, Y_N = 0), inverse FFT, then undo the reordering."""
    x = x.movedim(axis, -1)
    size = x.shape[-1]
    k = torch.arange(size, dtype=x.dtype, device=x.device)
    scale = torch.full_like(k, math.sqrt(2.0 / size))
    scale[0] = math.sqrt(1.0 / size)
    y = x / scale
    reflected = torch.cat([torch.zeros_like(y[..., :1]), y[..., 1:].flip(-1)], dim=-1)  # Y_{N−k}, Y_N = 0
    twiddle = torch.polar(torch.ones_like(k), math.pi * k / (2 * size))
    reordered = torch.fft.ifft(torch.complex(y, -reflected) * twiddle, dim=-1).real
    out = torch.empty_like(reordered)
    half = (size + 1) // 2
    out[..., 0::2] = reordered[..., :half]
    out[..., 1::2] = reordered[..., half:].flip(-1)
    return out.movedim(-1, axis)


class Hartley(_ImageBasis):
    r"""The real orthonormal Fourier basis over every axis of ``shape`` (the discrete Hartley transform):
    :math:`Hx = (\operatorname{Re}\,\mathrm{FFT}(x) - \operatorname{Im}\,\mathrm{FFT}(x))/\sqrt d`, with
    :math:`H = H^\top = H^{-1}`. A stationary (circularly shift-invariant) image model is diagonal here, with the
    eigenvalue of frequency k equal to that of −k."""

    name = "hartley"

    def to_eigen(self, x: Tensor) -> Tensor:
        images = self._as_images(x)
        axes = tuple(range(-len(self.shape), 0))
        spectrum = torch.fft.fftn(images, dim=axes, norm="ortho")
        return self._as_rows(spectrum.real - spectrum.imag, x)

    def from_eigen(self, z: Tensor) -> Tensor:
        return self.to_eigen(z)  # H is its own inverse

    def fingerprint(self) -> str:
        return f"hartley:{self.shape}"

    def frequencies(self) -> Tensor:
        """Per eigen coordinate, its frequency along each axis in cycles per sample, ``(d, len(shape))``: min(k, N − k)/N
        for index k on an axis of length N (k and −k alike)."""
        return _frequency_grid(self.shape, lambda k, size: torch.minimum(k, size - k) / size)
