"""Analytic targets: Gaussian mixtures whose marginals along any affine path are known exactly.

The package, one job per module:

* :mod:`~fmcore.targets.mixture` — :class:`GaussianMixture` (the closed-form engine: score, predictions, velocity,
  its divergence, the exact flow map, sampling) and :func:`Gaussian`;
* :mod:`~fmcore.targets.bases` — orthonormal eigenbases applied as operators: :class:`Identity`, :class:`Dense`,
  :class:`DCT`, :class:`Hartley`;
* :mod:`~fmcore.targets.layouts` — one basis shared by every component, or one dense basis per component;
* :mod:`~fmcore.targets.spectral` — the per-eigenvalue algebra (c = α²λ + σ², the velocity gain, the flow map) and
  :class:`SpectralGaussian` (a basis, an eigen-mean and variances: a component, a marginal, an exact output law);
* :mod:`~fmcore.targets.covariances` — covariance parsing and the checks a spectrum must pass;
* :mod:`~fmcore.targets.catalogue` — the named targets (:func:`get_target`, :func:`register_target`).
"""

from .bases import DCT, ORTHOGONALITY_TOLERANCE, Basis, Dense, Hartley, Identity
from .catalogue import ADSN_SPECTRUM, CIFAR10_SPECTRUM, TARGETS, get_target, image_spectrum, register_target
from .covariances import EIGENVALUE_FLOOR
from .layouts import Layout, PerComponentBases, SharedBasis
from .mixture import Gaussian, GaussianMixture
from .spectral import SpectralGaussian

__all__ = [
    "Basis",
    "ADSN_SPECTRUM",
    "CIFAR10_SPECTRUM",
    "DCT",
    "Dense",
    "EIGENVALUE_FLOOR",
    "Gaussian",
    "GaussianMixture",
    "Hartley",
    "Identity",
    "Layout",
    "ORTHOGONALITY_TOLERANCE",
    "PerComponentBases",
    "SharedBasis",
    "SpectralGaussian",
    "TARGETS",
    "get_target",
    "image_spectrum",
    "register_target",
]
