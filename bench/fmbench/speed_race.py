"""The speed race: the same model, method and NFE, solved by ours and by each peer library as its users call it.

Used by ``bench/scripts/speed_race.py`` (the table in ``results/speed_race.md``) and the pytest-benchmark suite
``bench/suites/bench_speed_race.py``. The model is seed 000's network (``SinusoidalMLP(2)``, float32); ours is
``fmcore.solvers.sample`` (the checked path users call); the peers are torchdiffeq's ``odeint``, flow_matching's
``ODESolver``, torchdyn's ``NeuralODE`` and torchode's fixed-step solver, each skipped when not installed.
"""

from __future__ import annotations

import torch

from fmbench.timing import interleaved_medians
from fmcore import get_schedule
from fmcore.models import LearnedField, SinusoidalMLP
from fmcore.solvers import sample

STEPS = 16
RACES = {  # our method → the name of the same method (same NFE) in torchdiffeq, flow_matching, torchdyn, torchode
    "euler": ("euler", "euler", "euler", "Euler"),
    "midpoint": ("midpoint", "midpoint", None, None),
    "rk38": ("rk4", "rk4", None, None),  # torchdiffeq's (and so flow_matching's) rk4 is the 3/8 rule
    "rk4": (None, None, "rk4", None),  # torchdyn's rk4 (stage times (0, 0, ½, ½): not RK4, same NFE)
}
STAGES = {"euler": 1, "midpoint": 2, "rk38": 4, "rk4": 4}


def race_field(device: str = "cpu") -> LearnedField:
    """Seed 000's network, untrained (its weights do not change the cost), seeded, float32."""
    torch.manual_seed(0)
    return LearnedField(SinusoidalMLP(2).to(device), get_schedule("cond_ot"), "cfm")


def race_noise(n: int, device: str = "cpu") -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(n)).to(device)


def contenders(method: str, field: LearnedField, x0: torch.Tensor) -> dict:
    """Zero-argument callables, each one full solve of ``method`` at STEPS steps from x0."""
    network, n = field.model, x0.shape[0]
    grid = torch.linspace(0, 1, STEPS + 1, dtype=x0.dtype, device=x0.device)

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
            from torchdyn.core import NeuralODE

            from fmbench.peers import _TimeFirst

            node = NeuralODE(_TimeFirst(velocity), solver=torchdyn_name)
            runs["torchdyn"] = lambda: node.trajectory(x0, t_span=grid)[-1]
        except ImportError:
            pass
    if torchode_name:
        try:
            import torchode as to

            solver_ode = to.AutoDiffAdjoint(getattr(to, torchode_name)(term=to.ODETerm(lambda t, y: velocity(t, y))),
                                            to.FixedStepController())
            like = dict(dtype=x0.dtype, device=x0.device)
            problem = to.InitialValueProblem(y0=x0, t_start=torch.zeros(n, **like), t_end=torch.ones(n, **like))
            dt0 = torch.full((n,), 1.0 / STEPS, **like)
            runs["torchode"] = lambda: solver_ode.solve(problem, dt0=dt0).ys[:, -1]
        except ImportError:
            pass
    return runs


def bare_call_seconds(field: LearnedField, x0: torch.Tensor, repeats: int) -> float:
    """One network call on the batch, no solver around it: the unit of the overhead ratio."""
    t_half = torch.full((x0.shape[0],), 0.5, device=x0.device)
    timings = interleaved_medians({"bare": lambda: field.model(t_half, x0)}, repeats=repeats, device=str(x0.device))
    return timings["bare"].median_s


def race_row(method: str, field: LearnedField, x0: torch.Tensor, repeats: int, bare: float) -> dict:
    """One line of the race: every contender's median (interleaved rounds), our overhead over ``bare`` (one bare
    network call, in seconds), each peer's max |output − ours| and the fastest peer's time ÷ ours."""
    runs = contenders(method, field, x0)
    with torch.no_grad():
        outputs = {name: run() for name, run in runs.items()}
        timings = interleaved_medians(runs, repeats=repeats, device=str(x0.device))
    ours = timings["ours"].median_s
    peers = {name: timing.median_s for name, timing in timings.items() if name != "ours"}
    fastest = min(peers, key=peers.get) if peers else None
    nfe = STAGES[method] * STEPS
    row = {"method": method, "n": x0.shape[0], "device": str(x0.device), "NFE": nfe, "ours ms": 1e3 * ours,
           "overhead (÷ NFE × bare call)": ours / (nfe * bare)}
    for name, seconds in peers.items():
        row[f"{name} ms"] = 1e3 * seconds
        row[f"{name} max|Δ|"] = float((outputs[name] - outputs["ours"]).abs().max())
    row["fastest peer / ours"] = peers[fastest] / ours if fastest else float("nan")
    row["fastest peer"] = fastest
    return row


def race(sizes: list[int], repeats: int, device: str = "cpu") -> list[dict]:
    field = race_field(device)
    rows = []
    for n in sizes:
        x0 = race_noise(n, device)
        with torch.no_grad():
            bare = bare_call_seconds(field, x0, repeats * 3)
        for method in RACES:
            rows.append(race_row(method, field, x0, repeats, bare))
            print(rows[-1], flush=True)
    return rows


