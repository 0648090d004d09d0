r"""How a mixture's components hold their eigenbases: one basis shared by all, or one dense basis per component.

Every closed form of a mixture is, per component k, a rotation into its eigenbasis, a diagonal scaling and a rotation
back (:mod:`fmcore.targets.mixture`). A layout does the two rotations for all components at once:

* :class:`SharedBasis` — one :class:`~fmcore.targets.bases.Basis` U for every component (the coordinate axes, a DCT,
  a Hartley basis, or one dense U): :math:`z = U^\top x` once per point, then each component's diagonal work on
  ``(n, K, d)``, summed over k and rotated back once. O(n·cost(U) + n·K·d) per call, no d × d GEMM unless U is dense.
* :class:`PerComponentBases` — K dense bases :math:`U_k` ``(K, d, d)``: one GEMM against the stacked
  :math:`[U_1 | \dots | U_K]` ``(d, K·d)`` each way, O(n·K·d²), with the per-time diagonal scalings folded into the
  GEMM's matrix for a scalar time.

Both give the same closed forms (tested to 1e-12 with one dense U held both ways).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from .bases import Basis, Dense

__all__ = ["Layout", "SharedBasis", "PerComponentBases"]


class Layout(ABC):
    """The eigenbases of K components in d dimensions, as operators."""

    count: int
    dim: int
    per_component: bool
    """True when each component has its own dense basis (the GEMM engine)."""

    @abstractmethod
    def to(self, dtype: torch.dtype, device: torch.device) -> Layout:
        """This layout with its tensors cast to ``dtype`` on ``device``."""

    @abstractmethod
    def rotate_in(self, x: Tensor) -> Tensor:
        """:math:`U_k^\\top x` for every component: ``(n, d)`` → ``(n, K, d)`` (an expanded view when shared)."""

    @abstractmethod
    def rotate_means(self, means: Tensor) -> Tensor:
        """:math:`U_k^\\top\\mu_k`, ``(K, d)``."""

    def whitening_matrix(self, std: Tensor) -> Tensor | None:
        """For a scalar time, the matrix that rotates and scales in one GEMM, ``(d, K·d)``; None when shared."""
        return None

    @abstractmethod
    def combiner(self, gain: Tensor) -> Callable[[Tensor], Tensor]:
        """The rotation back for one gain ``(K, d)`` (one time for every point) or ``(n, K, d)`` (a time per point):
        a function taking ``weighted`` ``(n, K, d)`` to :math:`\\sum_k U_k\\operatorname{diag}(g_k)w_k`, ``(n, d)``.
        What depends on the gain alone is done here, once, not in every chunk of points the function is applied to."""

    @abstractmethod
    def rotate_out(self, z: Tensor, components: Tensor) -> Tensor:
        """:math:`U_{k_i} z_i` for points ``z`` ``(n, d)`` drawn from components ``components`` ``(n,)``."""

    @abstractmethod
    def basis_of(self, component: int) -> Basis:
        """Component ``component``'s basis."""

    @abstractmethod
    def dense(self) -> Tensor:
        """The bases as dense ``(K, d, d)`` float64 matrices (K·d² memory: on request only)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """What defines the layout, for cache keys."""

    @property
    def axis_aligned(self) -> bool:
        """True on the coordinate axes (a diagonal covariance)."""
        return False


class SharedBasis(Layout):
    """One basis for all ``count`` components."""

    per_component = False

    def __init__(self, basis: Basis, count: int):
        self.basis, self.count, self.dim = basis, count, basis.dim

    def to(self, dtype: torch.dtype, device: torch.device) -> SharedBasis:
        return SharedBasis(self.basis.to(dtype, device), self.count)

    def rotate_in(self, x: Tensor) -> Tensor:
        return self.basis.to_eigen(x).unsqueeze(1).expand(x.shape[0], self.count, self.dim)

    def rotate_means(self, means: Tensor) -> Tensor:
        return self.basis.to_eigen(means)

    def combiner(self, gain: Tensor) -> Callable[[Tensor], Tensor]:
        def rotate_back(weighted: Tensor) -> Tensor:  # the components summed in eigen coordinates, rotated back once
            return self.basis.from_eigen((weighted * gain).sum(dim=1))

        return rotate_back

    def rotate_out(self, z: Tensor, components: Tensor) -> Tensor:
        return self.basis.from_eigen(z)

    def basis_of(self, component: int) -> Basis:
        return self.basis

    def dense(self) -> Tensor:
        return self.basis.dense().expand(self.count, self.dim, self.dim)

    def fingerprint(self) -> str:
        return f"shared:{self.basis.fingerprint()}"

    @property
    def axis_aligned(self) -> bool:
        return self.basis.is_identity


class PerComponentBases(Layout):
    """K dense orthonormal bases ``(K, d, d)`` (columns are eigenvectors), checked by the caller."""

    per_component = True

    def __init__(self, eigenvectors: Tensor, float64: Tensor | None = None):
        self.eigenvectors = eigenvectors
        self._float64 = eigenvectors if float64 is None else float64
        self.count, self.dim = eigenvectors.shape[0], eigenvectors.shape[1]
        self.stacked = eigenvectors.permute(1, 0, 2).reshape(self.dim, self.count * self.dim)  # [U_1 | U_2 | ...]

    def to(self, dtype: torch.dtype, device: torch.device) -> PerComponentBases:
        return PerComponentBases(self.eigenvectors.to(dtype=dtype, device=device), self._float64)

    def rotate_in(self, x: Tensor) -> Tensor:
        return (x @ self.stacked).view(x.shape[0], self.count, self.dim)

    def rotate_means(self, means: Tensor) -> Tensor:
        return torch.einsum("kij,ki->kj", self.eigenvectors, means)

    def whitening_matrix(self, std: Tensor) -> Tensor:
        return self.stacked / std.reshape(1, -1)

    def combiner(self, gain: Tensor) -> Callable[[Tensor], Tensor]:
        if gain.dim() == 2:  # one time: the gain folds into the rotation, [U_1 diag(g_1) | …]ᵀ, and each chunk is one GEMM
            folded = self.stacked.T * gain.reshape(-1, 1)
            return lambda weighted: weighted.reshape(weighted.shape[0], -1) @ folded
        rotation = self.stacked.T
        return lambda weighted: (weighted * gain).reshape(weighted.shape[0], -1) @ rotation

    def rotate_out(self, z: Tensor, components: Tensor) -> Tensor:
        rotated = torch.empty_like(z)  # each component's points by its basis: O(n·d²) time, O(n·d) memory
        for k in components.unique().tolist():
            chosen = components == k
            rotated[chosen] = z[chosen] @ self.eigenvectors[k].T
        return rotated

    def basis_of(self, component: int) -> Basis:
        return Dense.stored(self.eigenvectors[component], self._float64[component])

    def dense(self) -> Tensor:
        return self._float64

    def fingerprint(self) -> str:
        return "per_component:" + "|".join(self.basis_of(k).fingerprint() for k in range(self.count))
