"""Covariance parsing and the checks a target's spectrum must pass: full ``(K, d, d)``, diagonal ``(K, d)`` or isotropic
``(K,)`` covariances to eigenvalues and eigenvectors, refusing what ``eigh`` cannot resolve."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice

__all__ = ["EIGENVALUE_FLOOR", "eigendecompose", "check_resolved", "check_spectrum"]

EIGENVALUE_FLOOR = 1e-12
"""A full covariance whose smallest eigenvalue is within this × its largest of zero (either sign) is refused as
numerically singular; one more negative than that is refused as not positive definite."""

def covariance_type_of(covs: Tensor, count: int, dim: int, covariance_type: str | None) -> str:
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


def eigendecompose(covs: Tensor, count: int, dim: int, covariance_type: str | None = None) -> tuple[Tensor, Tensor | None]:
    """Return ``(eigenvalues (K,d), eigenvectors (K,d,d) or None)`` from full, diagonal or isotropic ``covs``."""
    kind_given = covariance_type_of(covs, count, dim, covariance_type)
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
        check_resolved(eigenvalues)
    smallest = float(eigenvalues.min())
    if eigenvectors is not None and smallest <= 0:
        raise ValueError(f"covs must be positive definite; the smallest {kind} is {smallest:.3g} (all must be > 0)")
    if smallest < 0:
        raise ValueError(f"covs must be positive semi-definite; the smallest {kind} is {smallest:.3g} (all must be ≥ 0; "
                         "a zero variance is a rank-deficient direction, valid at every t < 1)")
    return eigenvalues, eigenvectors


def check_resolved(eigenvalues: Tensor, name: str = "covs") -> None:
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
                f"{name}[{component}] must be positive definite; its smallest covariance eigenvalue is {smallest:.3g} "
                f"(largest {top:.3g}): negative beyond round-off"
            )
        if float(ratio[component]) <= EIGENVALUE_FLOOR:
            raise ValueError(
                f"{name}[{component}] is numerically singular: its smallest eigenvalue {smallest:.3g} is within "
                f"{EIGENVALUE_FLOOR:g} × its largest {top:.3g} of zero, below what eigh resolves. Regularise it "
                "explicitly (covs + δ·I) if that is what you mean"
            )


def check_spectrum(eigenvalues: Tensor, dense_basis: bool) -> None:
    """Refuse eigenvalues ``(K, d)`` a target cannot use: negative ones; with a dense basis (eigenvalues that came
    with eigenvectors), zero or unresolved ones (:func:`check_resolved`, per component on the sorted values). On the
    coordinate axes or a fixed transform (DCT, Hartley) a zero is exact: a rank-deficient direction."""
    smallest = float(eigenvalues.min())
    if dense_basis:
        if smallest <= 0:
            raise ValueError(f"eigenvalues must be > 0; the smallest is {smallest:.3g} (with a dense eigenbasis a zero "
                             "cannot be told from round-off)")
        check_resolved(eigenvalues.sort(dim=1).values, "eigenvalues")
    elif smallest < 0:
        raise ValueError(f"eigenvalues must be ≥ 0 (a zero is a rank-deficient direction); the smallest is {smallest:.3g}")

