r"""The roofline of the closed-form mixture velocity: what one call costs, what the device can do, and how close
the field comes.

**Cost of one call** (:func:`velocity_cost`) at a scalar time, for n points, K components in d dimensions,
counted from the code path of ``GaussianMixture.velocity`` (``fmcore/targets/mixture.py``):

* full covariances (eigenbases :math:`U_k`): the whitening GEMM :math:`x\,[U_1 C_1^{-1/2}|\dots|U_K C_K^{-1/2}]`
  (:math:`2nd\cdot Kd` FLOPs), the way back :math:`(\gamma w)\,[\dots]^\top` (:math:`2nKd\cdot d`), the mean part
  :math:`\gamma\,\mu` (:math:`2nKd`); elementwise work on the ``(n, K, d)`` array (:math:`w\cdot w`, its sum, the
  responsibility weighting: :math:`3nKd`) and on ``(n, K)`` (log-weights, softmax: about :math:`10nK`);
* diagonal or isotropic covariances: no GEMM; the whitening :math:`(x - \alpha\mu_k)/\sqrt{c_k}` (:math:`2nKd`),
  :math:`w\cdot w` and its sum (:math:`2nKd`), weighting, gain and the sum over k (:math:`3nKd`), the mean part;
* a single Gaussian (K = 1): its velocity is affine, :math:`U(a\odot U^\top x + b)`: one ``addcmul``
  (:math:`2nd`) and the finiteness check's sum (:math:`nd`), with the two GEMMs :math:`x U`, :math:`z U^\top`
  (:math:`2\cdot 2nd^2`) when the basis is a stored matrix; x is read, u written and read once (each GEMM adds a
  written and read ``(n, d)``; an FFT basis's transforms are not counted).

Bytes are counted two ways: *compulsory* (read x, write u: :math:`2nd` elements; the parameters are small), and
*as implemented* — every unfused elementwise operation reads its operands and writes its result once, so the
``(n, K, d)`` intermediate is written and read 7 times (full) or 11 times (diagonal). The first is the floor any
implementation pays; the second is what this one moves through the memory hierarchy (on the CPU it is evaluated
in L2-sized chunks, so most of it never reaches DRAM; on a GPU, at n = 2²⁰, it does).

**Peaks** (:func:`measure_peaks`) are measured, not taken from a datasheet: a square GEMM (``torch.mm``) for
compute, a large ``copy_`` (read + write) for memory bandwidth, on the same device, dtype and threads.

**Achieved**: FLOPs ÷ median time of the velocity call, against each peak; the roofline bound is
:math:`\min(P, I\cdot B)` with :math:`I` the arithmetic intensity (FLOPs per byte as implemented).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from fmbench.execution import inductor_cache_per_cpu_capability
from fmbench.timing import median_time
from fmcore import AnalyticField
from fmcore.targets import GaussianMixture


@dataclass(frozen=True)
class FieldCost:
    """FLOPs (all, and in GEMMs) and bytes (compulsory, and as implemented) of one velocity call."""

    flops: float
    gemm_flops: float
    bytes_compulsory: float
    bytes_implemented: float

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved as implemented."""
        return self.flops / self.bytes_implemented


def velocity_cost(target: GaussianMixture, n: int, element_bytes: int) -> FieldCost:
    """The cost model above for ``n`` points of ``element_bytes`` per entry (4 for float32, 8 for float64)."""
    K, d = target.num_components, target.dim
    nKd, nK, nd = n * K * d, n * K, n * d
    softmax_flops, softmax_traffic = 10 * nK, 15 * nK
    mean_part_flops, mean_part_traffic = 2 * nKd + 2 * nd, nK + 4 * nd
    if K == 1:
        dense = target.layout.per_component or target.basis.is_matrix
        gemm = 2 * 2 * nd * d if dense else 0
        traffic = 3 * nd + (4 * nd if dense else 0)
        return FieldCost(float(gemm + 3 * nd), float(gemm), float(2 * nd * element_bytes), float(traffic * element_bytes))
    if target.layout.per_component:
        gemm = 2 * nd * K * d + 2 * nKd * d + 2 * nKd
        flops = gemm + 3 * nKd + softmax_flops + mean_part_flops
        traffic = 7 * nKd + softmax_traffic + mean_part_traffic + 2 * nd
    else:
        gemm = 2 * nKd  # the mean part's γ μ is a matmul
        flops = 7 * nKd + softmax_flops + mean_part_flops
        traffic = 11 * nKd + softmax_traffic + mean_part_traffic + 2 * nd
    return FieldCost(float(flops), float(gemm), float(2 * nd * element_bytes), float(traffic * element_bytes))


@dataclass(frozen=True)
class Peaks:
    """Measured peaks of one device and dtype: GEMM FLOP/s and copy bandwidth (bytes/s)."""

    device: str
    dtype: str
    threads: int
    gemm_flops_per_s: float
    copy_bytes_per_s: float
    gemm_size: int
    copy_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure_peaks(device: str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 5) -> Peaks:
    """A square ``torch.mm`` (N = 1024 on the CPU, 8192 on CUDA) and a ``copy_`` of 128 MiB (CPU) or 1 GiB (CUDA),
    each timed with warm-up, device synchronisation and the median of ``repeats`` runs, on torch's current threads."""
    cuda = torch.device(device).type == "cuda"
    size = 8192 if cuda else 1024
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    gemm = median_time(lambda: torch.mm(a, b), repeats=repeats, warmup=2, device=device)
    copy_bytes = (2**30 if cuda else 2**27)
    source = torch.empty(copy_bytes // a.element_size(), dtype=dtype, device=device).fill_(1.0)
    target = torch.empty_like(source)
    copy = median_time(lambda: target.copy_(source), repeats=repeats, warmup=2, device=device)
    return Peaks(str(device), str(dtype).removeprefix("torch."), torch.get_num_threads(), 2 * size**3 / gemm.median_s,
                 2 * copy_bytes / copy.median_s, size, copy_bytes)


def field_roofline(target: GaussianMixture, schedule, n: int, peaks: Peaks, device: str = "cpu",
                   dtype: torch.dtype = torch.float32, repeats: int = 7, compiled: bool = False) -> list[dict]:
    """Time the checked velocity call (and the unchecked one, compiled when asked) at t = 0.5 and place it on the
    roofline of ``peaks``. One row per variant."""
    field = AnalyticField(target, schedule)
    x = target.marginal(0.5, schedule).sample(n, generator=torch.Generator().manual_seed(0)).to(dtype=dtype, device=device)
    t = torch.tensor(0.5, dtype=dtype, device=device)
    variants = {"checked": lambda: field(0.5, x), "unchecked": lambda: field.velocity_unchecked(t, x)}
    if compiled:
        inductor_cache_per_cpu_capability()  # a cached kernel of another CPU capability can be wrong
        torch._dynamo.reset()  # a fresh compilation per call: earlier ones would count against the recompile limit
        compiled_velocity = torch.compile(field.velocity_unchecked, fullgraph=True, dynamic=False)
        variants["compiled"] = lambda: compiled_velocity(t, x)
    cost = velocity_cost(target, n, x.element_size())
    rows = []
    with torch.no_grad():
        for name, call in variants.items():
            seconds = median_time(call, repeats=repeats, warmup=2, device=device).median_s
            achieved_flops = cost.flops / seconds
            bound = min(peaks.gemm_flops_per_s, cost.intensity * peaks.copy_bytes_per_s)
            rows.append({
                "variant": name, "n": n, "K": target.num_components, "d": target.dim, "device": device,
                "dtype": peaks.dtype, "threads": peaks.threads, "seconds": seconds,
                "gflop_per_call": cost.flops / 1e9, "gemm_share": cost.gemm_flops / cost.flops,
                "intensity_flop_per_byte": cost.intensity,
                "achieved_gflops": achieved_flops / 1e9,
                "fraction_of_gemm_peak": achieved_flops / peaks.gemm_flops_per_s,
                "achieved_gb_per_s_implemented": cost.bytes_implemented / seconds / 1e9,
                "fraction_of_copy_bandwidth": cost.bytes_implemented / seconds / peaks.copy_bytes_per_s,
                "fraction_of_roofline_bound": achieved_flops / bound,
            })
    return rows
