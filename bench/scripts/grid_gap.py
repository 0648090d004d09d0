"""How far is each shipped time grid from the best one? ``python bench/scripts/grid_gap.py`` writes
``results/grid_gap/`` (``gap.csv``, ``gap.md``, ``grids.png``).

For each method whose exact law is differentiable in its grid (``fmcore.optimal_grids``: euler, heun and
Euler–Maruyama with the forward diffusion g² = β of the reverse SDE here), on the CIFAR-10 Gaussian (d = 3072) and
the 8-d Gaussian of the default sweep, on vp and cond_ot, at NFE 5, 10, 20, 50: the exact W2 to the data of the
method's output on the uniform, cosine, karras (ρ = 7, and the best ρ of 1, 1.5, …, 20), logsnr, sd3_shift (shift 3)
and ays (SD1.5's levels) grids, and on the optimal grid between the method's own start and t1 = 1 − 1e-3 (every run
stops there, as in ``image_scale_ranking.py``: the CIFAR-10 Gaussian has no density at t = 1), each with its ratio
to the optimum. Grids defined in noise level start where σ/α = 80 (karras, logsnr; 14.6 for ays) when the path
starts noisier, so they are not bound to the optimum's start: a ratio below 1 says a later start pays.
Starts from the schedule's prior. An NFE budget gives steps = budget // evaluations per step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from fmbench.reporting import markdown_table  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fmcore import get_schedule, get_target  # noqa: E402
from fmcore.grids import get_grid  # noqa: E402
from fmcore.optimal_grids import GridObjective, optimal_grid  # noqa: E402
from fmcore.solvers import get_diffusion  # noqa: E402

METHODS = {"euler": 1, "heun": 2, "euler_maruyama": 1}  # method → evaluations per step
NFES = (5, 10, 20, 50)
SCHEDULES = ("vp", "cond_ot")
TARGETS = {"cifar10": {}, "gaussian": {"d": 8, "condition_number": 100}}
SHIPPED = {"uniform": {}, "cosine": {}, "karras ρ=7": {"rho": 7.0}, "logsnr": {}, "sd3_shift": {"shift": 3.0},
           "ays": {"model": "sd15"}}
RHOS = [1.0 + 0.5 * k for k in range(39)]
T1 = 1.0 - 1e-3
FIGURE = ("cifar10", 10)  # the grids drawn: this target, at this NFE


def _diffusion(method: str):
    return get_diffusion("forward") if method == "euler_maruyama" else None


def rows(figure_grids: dict) -> list[dict]:
    out = []
    for target_name, params in TARGETS.items():
        target = get_target(target_name, **params)
        for schedule_name in SCHEDULES:
            schedule = get_schedule(schedule_name)
            for method, per_step in METHODS.items():
                objective = GridObjective(target, schedule, method, _diffusion(method))
                for nfe in NFES:
                    steps = nfe // per_step
                    start = float(objective.default_grid(steps)[0])
                    began = time.perf_counter()
                    found = optimal_grid(target, schedule, method, steps, _diffusion(method), ends=(start, T1))
                    grids = {name: get_grid(name.split(" ")[0], steps, schedule, t0=start, t1=T1, **grid_params)
                             for name, grid_params in SHIPPED.items()}
                    karras = {rho: get_grid("karras", steps, schedule, t0=start, t1=T1, rho=rho) for rho in RHOS}
                    values = {rho: float(objective(grid)) for rho, grid in karras.items()}
                    best_rho = min(values, key=values.get)
                    grids["karras best ρ"] = karras[best_rho]
                    grids["optimal"] = found.grid
                    if nfe == FIGURE[1] and target_name == FIGURE[0]:
                        figure_grids[(schedule_name, method)] = (schedule, grids)
                    for name, grid in grids.items():
                        value = float(objective(grid))
                        out.append({"target": target_name, "schedule": schedule_name, "method": method, "nfe": nfe,
                                    "steps": steps, "grid": name, "w2": value, "ratio to optimal": value / found.value,
                                    "t0": float(grid[0]), "best ρ": best_rho})
                    out[-1].update(iterations=found.iterations, converged=found.converged,
                                   seconds=time.perf_counter() - began)
                    print(f"{target_name} {schedule_name} {method} NFE {nfe}: optimal {found.value:.4g} "
                          f"(uniform {found.initial_value:.4g}), {found.iterations} iterations, "
                          f"{time.perf_counter() - began:.1f} s", flush=True)
    return out


def draw(figure_grids: dict, path: Path) -> None:
    """σ/α at each step's start against step index for each grid: a row per schedule, a column per method."""
    schedules = sorted({schedule for schedule, _ in figure_grids})
    methods = [method for method in METHODS if any(key[1] == method for key in figure_grids)]
    figure, axes = plt.subplots(len(schedules), len(methods), figsize=(4.6 * len(methods), 3.8 * len(schedules)),
                                squeeze=False)
    for row, schedule_name in enumerate(schedules):
        for column, method in enumerate(methods):
            axis = axes[row][column]
            schedule, grids = figure_grids[(schedule_name, method)]
            for name, grid in grids.items():
                values = schedule(grid[:-1])  # the last time's σ/α can be 0 (cond_ot at t = 1) or tiny
                levels = (values.sigma / values.alpha).tolist()
                style = {"color": "black", "linewidth": 2.5} if name == "optimal" else {"linewidth": 1.2}
                axis.plot(range(len(levels)), levels, marker="o", markersize=3, label=name, **style)
            axis.set_yscale("log")
            axis.set_title(f"{method} on {schedule_name}")
            axis.set_xlabel("step index")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_ylabel("σ/α at the step's start")
            axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"Time grids on {FIGURE[0]} at NFE {FIGURE[1]} (σ/α = ∞ at t = 0 on cond_ot is not drawn)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/grid_gap"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    figure_grids: dict = {}
    began = time.perf_counter()
    table = pd.DataFrame(rows(figure_grids))
    table.to_csv(args.out / "gap.csv", index=False)
    wide = table.pivot_table(index=["target", "schedule", "method", "nfe"], columns="grid", values="ratio to optimal",
                             sort=False)
    optimum = table[table.grid == "optimal"].set_index(["target", "schedule", "method", "nfe"])["w2"]
    wide.insert(0, "optimal W2", optimum)
    groups = table.groupby(["target", "schedule", "method", "nfe"], sort=False)
    wide.insert(1, "best ρ", groups["best ρ"].first())
    for column in ("iterations", "converged", "seconds"):
        wide[f"optimiser {column}"] = groups[column].last()
    text = ["# Each shipped grid's exact W2 over the optimal grid's", "",
            f"Written by `python bench/scripts/grid_gap.py` in {time.perf_counter() - began:.0f} s. "
            + " ".join(__doc__.split("\n\n")[1].split()), "",
            "Columns after `optimal W2`: that grid's W2 ÷ the optimal grid's (1 = optimal; below 1: the grid starts "
            "later than the optimum's fixed start, and that pays).", "",
            markdown_table(wide.reset_index()), ""]
    (args.out / "gap.md").write_text("\n".join(text))
    draw(figure_grids, args.out / "grids.png")


if __name__ == "__main__":
    main()
