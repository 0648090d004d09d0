"""The speed race: ``python bench/scripts/speed_race.py`` writes ``results/speed_race.md``.

The same model (seed 000's network: ``SinusoidalMLP(2)``, float32), the same method and NFE, on the CPU with the
harness's one torch thread (``--threads`` to change), at n = 1, 16, 256, 4096, 65 536: ours (``fmcore.solvers.sample``,
the checked path users call) against each peer called the way its users call it — torchdiffeq's ``odeint``,
flow_matching's ``ODESolver``, torchdyn's ``NeuralODE``, torchode's fixed-step solver. Medians of interleaved
repeats (every contender once per round, so a slow spell hits all alike), the ratio of the fastest peer's time to
ours, the max |difference| of each output from ours, and our solver overhead: time ÷ (NFE × one bare network call).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fmbench  # noqa: F401 — registers the peer adapters
import pandas as pd
import torch
from fmbench.report import markdown_table
from fmbench.timing import interleaved_medians

from fmcore import get_schedule
from fmcore.models import LearnedField, SinusoidalMLP
from fmcore.solvers import sample

STEPS = 16
RACES = {  # our method → {peer: callable factory}; each peer runs the same method at the same NFE
    "euler": ("euler", "euler", "euler", "Euler"),
    "midpoint": ("midpoint", "midpoint", None, None),
    "rk38": ("rk4", "rk4", None, None),  # torchdiffeq's (and so flow_matching's) rk4 is the 3/8 rule
    "rk4": (None, None, "rk4", None),  # torchdyn's rk4 (stage times (0, 0, ½, ½): not RK4, same NFE)
}


def contenders(method: str, field: LearnedField, x0: torch.Tensor) -> dict:
    """Zero-argument callables, each one full solve of ``method`` at STEPS steps from x0."""
    network, n = field.model, x0.shape[0]
    grid = torch.linspace(0, 1, STEPS + 1, dtype=x0.dtype)

    def velocity(t, x):
        return network(t.expand(x.shape[0]) if t.dim() == 0 else t, x)

    torchdiffeq_name, flow_matching_name, torchdyn_name, torchode_name = RACES[method]
    runs = {"ours": lambda: sample(field, x0, method, steps=STEPS).x}
    if torchdiffeq_name:
        from torchdiffeq import odeint

        runs["torchdiffeq"] = lambda: odeint(velocity, x0, grid, method=torchdiffeq_name)[-1]
    if flow_matching_name:
        try:
            from flow_matching.solver import ODESolver

            solver = ODESolver(velocity_model=lambda x, t, **_: velocity(t, x))
            runs["flow_matching"] = lambda: solver.sample(x_init=x0, step_size=None, method=flow_matching_name, time_grid=grid)
        except ImportError:
            pass
    if torchdyn_name:
        try:
            from fmbench.peers import _TimeFirst
            from torchdyn.core import NeuralODE

            node = NeuralODE(_TimeFirst(velocity), solver=torchdyn_name)
            runs["torchdyn"] = lambda: node.trajectory(x0, t_span=grid)[-1]
        except ImportError:
            pass
    if torchode_name:
        try:
            import torchode as to

            solver_ode = to.AutoDiffAdjoint(getattr(to, torchode_name)(term=to.ODETerm(lambda t, y: velocity(t, y))),
                                            to.FixedStepController())
            problem = to.InitialValueProblem(y0=x0, t_start=torch.zeros(n), t_end=torch.ones(n))
            dt0 = torch.full((n,), 1.0 / STEPS)
            runs["torchode"] = lambda: solver_ode.solve(problem, dt0=dt0).ys[:, -1]
        except ImportError:
            pass
    return runs


def _bare_call_seconds(field: LearnedField, x0: torch.Tensor, repeats: int) -> float:
    """One network call on the batch, no solver around it: the unit of the overhead ratio."""
    t_half = torch.full((x0.shape[0],), 0.5)
    return interleaved_medians({"bare": lambda: field.model(t_half, x0)}, repeats=repeats)["bare"].median_s


def race(sizes: list[int], repeats: int) -> list[dict]:
    torch.manual_seed(0)
    field = LearnedField(SinusoidalMLP(2), get_schedule("cond_ot"), "cfm")
    stages = {"euler": 1, "midpoint": 2, "rk38": 4, "rk4": 4}
    rows = []
    for n in sizes:
        x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            bare = _bare_call_seconds(field, x0, repeats * 3)
            for method in RACES:
                runs = contenders(method, field, x0)
                outputs = {name: run() for name, run in runs.items()}
                timings = interleaved_medians(runs, repeats=repeats)
                ours = timings["ours"].median_s
                peers = {name: timing.median_s for name, timing in timings.items() if name != "ours"}
                fastest = min(peers, key=peers.get) if peers else None
                row = {"method": method, "n": n, "NFE": stages[method] * STEPS, "ours ms": 1e3 * ours,
                       "overhead (÷ NFE × bare call)": ours / (stages[method] * STEPS * bare)}
                for name, seconds in peers.items():
                    row[f"{name} ms"] = 1e3 * seconds
                    row[f"{name} max|Δ|"] = float((outputs[name] - outputs["ours"]).abs().max())
                row["fastest peer / ours"] = peers[fastest] / ours if fastest else float("nan")
                row["fastest peer"] = fastest
                rows.append(row)
                print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 256, 4096, 65536])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/speed_race.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = pd.DataFrame(race(args.sizes, args.repeats))
    text = ["# The speed race: our RK engine against the peers, same model, method and NFE", "",
            f"Written by `python bench/scripts/speed_race.py` ({args.threads} torch thread(s), float32, CPU, {STEPS} steps, "
            f"medians of {args.repeats} interleaved rounds). `fastest peer / ours` > 1 means ours is faster.", "",
            markdown_table(table, ".3g"), ""]
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
