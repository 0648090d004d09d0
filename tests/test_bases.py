"""Eigenbases as operators (``fmcore/targets/bases.py``) and the two layouts (``fmcore/targets/layouts.py``): each
transform against an independent computation, and every closed form of a shared basis against the same basis held
per component, to 1e-12."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.fft
import torch

from fmcore import GaussianMixture, get_schedule, get_target
from fmcore.exact import exact_output_law
from fmcore.targets import DCT, Dense, Hartley, Identity, PerComponentBases, SharedBasis

F64 = torch.float64
SHAPES = [(3, 4, 5), (1, 7, 6), (2, 1, 3), (8,)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dct_is_scipys_orthonormal_dctn_and_its_inverse(shape):
    basis = DCT(shape)
    x = torch.randn(5, basis.dim, dtype=F64, generator=torch.Generator().manual_seed(0))
    reference = scipy.fft.dctn(x.numpy().reshape(5, *shape), axes=tuple(range(1, len(shape) + 1)), norm="ortho")
    np.testing.assert_allclose(basis.to_eigen(x).numpy(), reference.reshape(5, basis.dim), rtol=0, atol=1e-13)
    torch.testing.assert_close(basis.from_eigen(basis.to_eigen(x)), x, rtol=0, atol=1e-13)


@pytest.mark.parametrize("size", [1, 2, 7, 8])
def test_hartley_is_the_cas_matrix_in_one_dimension(size):
    """H[j, k] = (cos 2πjk/N + sin 2πjk/N)/√N, written out."""
    j = torch.arange(size, dtype=F64)
    angle = 2 * math.pi * torch.outer(j, j) / size
    cas = (torch.cos(angle) + torch.sin(angle)) / math.sqrt(size)
    torch.testing.assert_close(Hartley((size,)).dense(), cas, rtol=0, atol=1e-13)


@pytest.mark.parametrize("basis", [DCT((3, 4, 5)), Hartley((3, 4, 5)), Hartley((2, 3, 3)), Identity(6)], ids=repr)
def test_image_bases_are_orthonormal(basis):
    dense = basis.dense()
    torch.testing.assert_close(dense.T @ dense, torch.eye(basis.dim, dtype=F64), rtol=0, atol=1e-13)
    x = torch.randn(3, basis.dim, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(basis.to_eigen(x), x @ dense, rtol=0, atol=1e-13)


def test_a_dense_basis_must_be_orthonormal():
    with pytest.raises(ValueError, match="must be orthogonal"):
        Dense(torch.ones(3, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"square \(d, d\)"):
        Dense(torch.ones(3, 2, dtype=F64))
    with pytest.raises(TypeError, match="shape must be a tuple"):
        DCT(12)


def _random_rotation(dim: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    return q * torch.sign(torch.diagonal(r))


def _both_layouts(basis_matrix: torch.Tensor, shared_basis, count: int = 3, seed: int = 2):
    """The same mixture with one basis for all components, held shared and held per component."""
    dim = basis_matrix.shape[0]
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(count, dtype=F64, generator=generator) + 0.2
    weights = weights / weights.sum()
    means = 2 * torch.randn(count, dim, dtype=F64, generator=generator)
    eigenvalues = torch.logspace(-2, 0.5, dim, dtype=F64).repeat(count, 1) * (1 + torch.rand(count, 1, dtype=F64,
                                                                                            generator=generator))
    shared = GaussianMixture.on_basis(weights, means, eigenvalues, shared_basis)
    per_component = GaussianMixture.from_eigendecomposition(weights, means, eigenvalues,
                                                            basis_matrix.expand(count, dim, dim).clone())
    return shared, per_component


LAYOUT_CASES = {
    "dense": lambda: (_random_rotation(6, 0), Dense(_random_rotation(6, 0))),
    "dct": lambda: (DCT((2, 2, 3)).dense(), DCT((2, 2, 3))),
    "hartley": lambda: (Hartley((1, 3, 4)).dense(), Hartley((1, 3, 4))),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
@pytest.mark.parametrize("time", ["scalar", "per_point"])
def test_a_shared_basis_gives_every_closed_form_of_the_per_component_layout(case, time):
    matrix, basis = LAYOUT_CASES[case]()
    shared, per_component = _both_layouts(matrix, basis)
    assert isinstance(shared.layout, SharedBasis) and isinstance(per_component.layout, PerComponentBases)
    schedule = get_schedule("cosine")
    x = torch.randn(40, shared.dim, dtype=F64, generator=torch.Generator().manual_seed(3))
    t = 0.6 if time == "scalar" else torch.rand(40, dtype=F64, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.05
    for name in ("score", "velocity", "data_prediction", "noise_prediction", "marginal_log_prob", "velocity_divergence"):
        torch.testing.assert_close(getattr(shared, name)(t, x, schedule), getattr(per_component, name)(t, x, schedule),
                                   rtol=1e-12, atol=1e-12, msg=name)
    for mine, theirs in zip(shared.velocity_and_score(t, x, schedule), per_component.velocity_and_score(t, x, schedule),
                            strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shared.log_prob(x), per_component.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shared.component_posteriors(x), per_component.component_posteriors(x), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(shared.sample(50, generator=5), per_component.sample(50, generator=5), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(shared.covariance(), per_component.covariance(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_a_shared_basis_gives_the_flow_map_and_exact_law_of_the_per_component_layout(case):
    matrix, basis = LAYOUT_CASES[case]()
    shared, per_component = _both_layouts(matrix, basis, count=1)
    schedule = get_schedule("vp")
    x = torch.randn(20, shared.dim, dtype=F64, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(shared.flow_map(x, schedule, 0.1, 0.9), per_component.flow_map(x, schedule, 0.1, 0.9),
                               rtol=1e-12, atol=1e-12)
    for method in ("rk4", "dpmpp_2m_sde"):
        mine = exact_output_law(shared, schedule, method, steps=12)
        theirs = exact_output_law(per_component, schedule, method, steps=12)
        assert mine.w2_to_target() == pytest.approx(theirs.w2_to_target(), rel=1e-12)
        torch.testing.assert_close(mine.mean, theirs.mean, rtol=1e-12, atol=1e-12)


def test_image_targets_are_spectral_gaussians_on_their_basis():
    gaussian = get_target("image_gaussian", shape=(3, 8, 8), exponent=2.0)
    assert gaussian.dim == 192 and isinstance(gaussian.basis, DCT) and not gaussian.axis_aligned
    spectrum = gaussian.eigenvalues[0]
    assert float(spectrum.max()) == pytest.approx(1.0) and float(spectrum.max() / spectrum.min()) > 100
    mixture = get_target("image_mixture", K=3, shape=(3, 4, 4), basis="hartley", seed=1)
    assert mixture.num_components == 3 and isinstance(mixture.basis, Hartley)
    dense = GaussianMixture.from_eigendecomposition(mixture.weights, mixture.means, mixture.eigenvalues,
                                                    mixture.eigenvectors)
    x = mixture.sample(30, generator=0)
    torch.testing.assert_close(mixture.velocity(0.7, x, get_schedule("cond_ot")),
                               dense.velocity(0.7, x, get_schedule("cond_ot")), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="basis must be one of"):
        get_target("image_gaussian", basis="wavelet")
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\)"):
        get_target("image_gaussian", shape=(8, 8))


MEMORY_PROBE = textwrap.dedent("""
    import resource, sys, torch
    from fmcore import AnalyticField, get_schedule, get_target
    from fmcore.exact import exact_output_law
    from fmcore.solvers import sample
    torch.set_num_threads(1)
    target, schedule = get_target("image_gaussian", shape=(3, 64, 64)), get_schedule("cosine")  # d = 12 288
    x = target.sample(64, generator=0)  # warm up the allocator before the limit
    used = int(open("/proc/self/statm").read().split()[5]) * resource.getpagesize()  # data + stack now
    budget = used + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_DATA, (budget, budget))
    field = AnalyticField(target, schedule)
    field(0.5, x)  # the velocity
    for name in ("score", "data_prediction", "noise_prediction"):
        getattr(field, name)(0.5, x)
    target.marginal_log_prob(0.5, x, schedule)
    target.flow_map(x, schedule, 0.1, 0.9)
    sample(field, x, "heun", steps=4)
    law = exact_output_law(target, schedule, "dpmpp_2m_sde", steps=8)
    print(law.w2_to_target(), law.mean.shape)
""")


def test_nothing_at_image_dimension_builds_a_d_by_d_matrix_unless_the_basis_is_dense():
    """d = 12 288: one d × d float64 matrix is 1.2 GB. Under a data limit of 300 MB above what the process holds, every
    closed form, the flow map, a sampler and a stochastic exact law run (Linux counts anonymous mappings in
    RLIMIT_DATA); a d × d allocation would raise."""
    if not sys.platform.startswith("linux"):
        pytest.skip("RLIMIT_DATA counts anonymous mappings on Linux only")
    limit = str(300 * 2**20)
    dense = MEMORY_PROBE.replace("print(law.w2_to_target(), law.mean.shape)", "target.eigenvectors")
    refused = subprocess.run([sys.executable, "-c", dense, limit], capture_output=True, text=True, timeout=300)
    if refused.returncode == 0:  # a kernel that does not count anonymous mappings in RLIMIT_DATA (Linux < 4.7)
        pytest.skip("RLIMIT_DATA does not limit allocations here: building one d × d basis succeeded under it")
    assert "MemoryError" in refused.stderr or "alloc" in refused.stderr.lower(), refused.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, limit], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("target_name, params", [("image_gaussian", {"shape": (2, 4, 4)}),
                                                 ("image_mixture", {"K": 3, "shape": (1, 4, 6), "basis": "hartley"})])
def test_spectral_fit_w2_is_the_bures_distance_of_the_fits_diagonal_in_the_basis(target_name, params):
    """Against w2_gaussian (a general Bures distance, matrix square roots) of the same two Gaussians written densely:
    the sample's per-direction moments in U, and the target's exact mean and the diagonal of UᵀCU."""
    from fmcore.metrics import spectral_fit_w2, w2_gaussian

    target = get_target(target_name, **params)
    x = 1.3 * target.sample(400, generator=3) + 0.1
    U = target.basis.dense()
    z = x @ U
    covariance = target.covariance()
    target_diagonal = U @ torch.diag(torch.diagonal(U.T @ covariance @ U)) @ U.T
    expected = w2_gaussian(U @ z.mean(0), U @ torch.diag(z.var(0)) @ U.T, target.mean(), target_diagonal)
    assert spectral_fit_w2(x, target) == pytest.approx(expected, rel=1e-9)
    if target.num_components == 1:  # a Gaussian on its basis: its covariance is that diagonal
        torch.testing.assert_close(target_diagonal, covariance, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="use gaussian_fit_w2"):
        spectral_fit_w2(torch.zeros(4, 8, dtype=F64), get_target("gaussian", d=8))
