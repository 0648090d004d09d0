"""Does the optimal grid depend on the data? ``python bench/scripts/grid_transfer.py`` writes
``results/grid_transfer/`` (``transfer.md``, ``gaussians.csv``, ``mixture.csv``).

**Between Gaussians.** Each optimal grid of ``results/grid_gap/optimal_grids.json`` (``grid_gap.py``: every method,
NFE, schedule, with its start free, minimising the exact W2 to the marginal at t1 = 1 − 1e-3) is scored, exactly, on
the other Gaussian — the 8-d one's optimum on the CIFAR-10 Gaussian and back — as a ratio to that target's own
optimum, beside the uniform grid's ratio there.

**From a spectrum to a mixture sharing its basis.** For the deterministic samplers (euler, heun, dpmpp_2m, unipc,
ddim) at NFE 10 and 20 on vp and cond_ot: the grid minimising the exact strong error on ``image_gaussian`` (3 × 16 × 16
DCT power law, d = 768), and on the Gaussian matching the mixture's second moments in that basis (its diagonal), is run
on ``image_mixture`` (K = 4 components sharing that basis, different means and spectra) beside the uniform, karras
(ρ = 7) and logsnr grids. There no law is exact: each grid is scored by its strong error against a float64 dopri5
solve at rtol = atol = 1e-10 from the same noises (n = 1000, the same for every grid: the comparison is paired), with
its Monte-Carlo standard error; the reference's own error is bounded by a second solve at 1e-8. Every grid runs from
the method's own start to t = 1 (the mixture has a density there), from N(0, I); karras and logsnr start where
σ/α = 80 when the path starts noisier, and are scored from there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from fmbench.reporting import markdown_table

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.grids import get_grid
from fmcore.metrics import strong_error, strong_error_standard_error
from fmcore.optimal_grids import GridObjective, optimal_grid
from fmcore.solvers import get_diffusion, sample
from fmcore.targets import GaussianMixture

F64 = torch.float64
MIXTURE_METHODS = {"euler": 1, "heun": 2, "dpmpp_2m": 1, "unipc": 1, "ddim": 1}
"""The deterministic samplers scored on the mixture, with their evaluations per step."""
MIXTURE_NFES = (10, 20)
SCHEDULES = ("vp", "cond_ot")
SHAPE = (3, 16, 16)
SAMPLES = 1000
SHIPPED = {"uniform": {}, "karras ρ=7": {"rho": 7.0}, "logsnr": {}}


def _target(name: str, params: dict) -> GaussianMixture:
    return get_target(name, **params)


def between_gaussians(optima: list[dict]) -> pd.DataFrame:
    """Each free-start optimum scored on the other Gaussian (module docstring)."""
    free = {(o["target"], o["schedule"], o["method"], o["nfe"]): o for o in optima if o["start"] == "free"}
    targets = {o["target"]: o["target_params"] for o in optima}
    rows = []
    for (source, schedule_name, method, nfe), optimum in free.items():
        for scored_on, params in targets.items():
            if scored_on == source or (scored_on, schedule_name, method, nfe) not in free:
                continue
            own = free[(scored_on, schedule_name, method, nfe)]
            schedule = get_schedule(schedule_name)
            diffusion = get_diffusion("forward") if method == "euler_maruyama" else None
            objective = GridObjective(_target(scored_on, params), schedule, method, diffusion, metric=optimum["metric"])
            transferred = float(objective(torch.tensor(optimum["grid"], dtype=F64)))
            start = float(objective.default_grid(optimum["steps"])[0])
            uniform = float(objective(torch.linspace(start, optimum["t1"], optimum["steps"] + 1, dtype=F64)))
            rows.append({"optimised on": source, "scored on": scored_on, "schedule": schedule_name, "method": method,
                         "nfe": nfe, "own optimum W2": own["value"], "transferred W2": transferred,
                         "transferred ratio": transferred / own["value"], "uniform ratio": uniform / own["value"],
                         "own optimum converged": own["converged"]})
    return pd.DataFrame(rows)


def moment_matched(mixture: GaussianMixture) -> GaussianMixture:
    r"""The Gaussian with the mixture's mean and, in the basis its components share, the diagonal of its covariance:
    :math:`\bar m = \sum_k w_km_k`, :math:`v_j = \sum_k w_k(\lambda_{kj} + m_{kj}^2) - \bar m_j^2`."""
    weights = mixture.weights.unsqueeze(-1)
    means = torch.stack([mixture.component(k).eigen_mean for k in range(mixture.num_components)])
    variances = torch.stack([mixture.component(k).variances for k in range(mixture.num_components)])
    mean = (weights * means).sum(0)
    variance = (weights * (variances + means**2)).sum(0) - mean**2
    basis = mixture.basis
    return GaussianMixture.on_basis(torch.ones(1, dtype=F64), basis.from_eigen(mean.unsqueeze(0)),
                                    variance.unsqueeze(0), basis)


class ReferenceSolves:
    """The field's flow from ``noise``, by float64 dopri5 at rtol = atol = 1e-10 from each start time asked for, with
    the strong error of a 1e-8 solve against it (a bound on the reference's own error)."""

    def __init__(self, field: AnalyticField, noise: torch.Tensor):
        self.field, self.noise = field, noise
        self.solved: dict[float, tuple[torch.Tensor, float]] = {}

    def at(self, t0: float) -> tuple[torch.Tensor, float]:
        if t0 not in self.solved:
            interval = torch.tensor([t0, 1.0], dtype=F64)
            tight = sample(self.field, self.noise, "dopri5", grid=interval, rtol=1e-10, atol=1e-10).x
            loose = sample(self.field, self.noise, "dopri5", grid=interval, rtol=1e-8, atol=1e-8).x
            self.solved[t0] = (tight, strong_error(loose, tight))
        return self.solved[t0]


def on_the_mixture() -> pd.DataFrame:
    """The spectrum's and the moment-matched Gaussian's strong-error optima against the shipped grids on the
    mixture (module docstring)."""
    mixture = get_target("image_mixture", shape=SHAPE)
    spectra = {"image_gaussian optimum": get_target("image_gaussian", shape=SHAPE),
               "moment-matched optimum": moment_matched(mixture)}
    noise = torch.randn(SAMPLES, mixture.dim, dtype=F64, generator=torch.Generator().manual_seed(0))
    rows = []
    for schedule_name in SCHEDULES:
        schedule = get_schedule(schedule_name)
        field = AnalyticField(mixture, schedule)
        references = ReferenceSolves(field, noise)
        for method, per_step in MIXTURE_METHODS.items():
            for nfe in MIXTURE_NFES:
                steps = nfe // per_step
                grids = {}
                for label, gaussian in spectra.items():
                    grids[label] = optimal_grid(gaussian, schedule, method, steps, metric="strong_error").grid
                start = float(grids["image_gaussian optimum"][0])
                for name, params in SHIPPED.items():
                    grids[name] = get_grid(name.split(" ")[0], steps, schedule, t0=start, **params)
                exact = GridObjective(spectra["image_gaussian optimum"], schedule, method, metric="strong_error")
                for name, grid in grids.items():
                    t0 = float(grid[0])
                    output = sample(field, noise, method, grid=grid).x
                    truth, bound = references.at(t0)
                    rows.append({"schedule": schedule_name, "method": method, "nfe": nfe, "grid": name, "t0": t0,
                                 "strong error on the mixture": strong_error(output, truth),
                                 "standard error": strong_error_standard_error(output, truth),
                                 "exact strong error on image_gaussian": float(exact(grid)),
                                 "reference error bound": bound})
                print(f"mixture {schedule_name} {method} NFE {nfe} done", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", type=Path, default=Path("results/grid_gap/optimal_grids.json"))
    parser.add_argument("--out", type=Path, default=Path("results/grid_transfer"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    gaussians = between_gaussians(json.loads(args.grids.read_text()))
    gaussians.to_csv(args.out / "gaussians.csv", index=False)
    mixture = on_the_mixture()
    mixture.to_csv(args.out / "mixture.csv", index=False)
    best = mixture.groupby(["schedule", "method", "nfe"])["strong error on the mixture"].transform("min")
    mixture["ratio to the best here"] = mixture["strong error on the mixture"] / best
    wide = mixture.pivot_table(index=["schedule", "method", "nfe"], columns="grid", values="ratio to the best here",
                               sort=False)
    text = ["# Does the optimal grid transfer?", "",
            f"Written by `python bench/scripts/grid_transfer.py` in {time.perf_counter() - began:.0f} s.", "",
            " ".join(__doc__.split("\n\n")[1].split()), "",
            markdown_table(gaussians), "",
            " ".join(__doc__.split("\n\n")[2].split()), "",
            "Each grid's strong error on the mixture over the best grid's in its row (paired noises):", "",
            markdown_table(wide.reset_index()), "",
            "Every figure, with its standard error, the exact strong error of the same grid on the image Gaussian and "
            "the bound on the reference's own error:", "",
            markdown_table(mixture.drop(columns=["ratio to the best here"])), ""]
    (args.out / "transfer.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
