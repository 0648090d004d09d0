"""The learned models' measurements: ``python bench/scripts/learned_models.py`` writes ``results/learned_models.md``.

1. A cfm model of ``seed000`` on ``cond_ot`` trained within a 90 s budget: exact FM loss per time bin,
   W2 (exact, n = 2000) of dopri5 samples against the measured floor, and RK4 at 4…64 steps next to the
   analytic field at the same steps (W2 and strong error against the analytic field's exact-ish solve).
2. The same for ``eight_gaussians`` (reported, no threshold).
3. Seed 000's SDE sampler as written vs ours, on the analytic field and on a model trained on the seed's
   own path (``cond_ot(sigma_min=0.001)``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.metrics import gaussian_fit_w2, mode_tv, strong_error, w2_exact, w2_floor, w2_sliced
from fmcore.models import exact_fm_loss, train_model
from fmcore.solvers import get_diffusion, sample

RK4_STEPS = [4, 8, 16, 32, 64]


NOISE_SEEDS = range(7, 12)  # five independent x₀ draws per sampler


def _w2_to_target(x: torch.Tensor, target, seeds: range) -> float:
    """Mean exact W2 between x and independent target samples of the same size (one per seed)."""
    return float(np.mean([w2_exact(x.double(), target.sample(x.shape[0], generator=torch.Generator().manual_seed(s)))
                          for s in seeds]))


def _noise(seed: int, n: int, dim: int) -> torch.Tensor:
    return torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def model_report(name: str, target, schedule, budget_s: float, n: int, lines: list[str]) -> None:
    analytic = AnalyticField(target, schedule)
    start = time.perf_counter()
    field = train_model(target, schedule, "cfm", seed=0, budget_s=budget_s)
    trained_s = time.perf_counter() - start
    loss = exact_fm_loss(field, analytic, n=4000, time_bins=10, generator=0)
    floor_values = [w2_floor(target, n, "exact", generator=100 + r) for r in range(5)]
    floor, floor_sd = float(np.mean(floor_values)), float(np.std(floor_values, ddof=1))
    # Each sampler run from its own x₀ against its own fresh target sample: for an exact sampler this has the
    # same law as the floor's pairs, so "W2 / floor" is 1 in expectation.
    w2_learned, w2_analytic, nfe = [], [], []
    for seed in NOISE_SEEDS:
        x0 = _noise(seed, n, target.dim)
        with torch.no_grad():
            learned_run = sample(field, x0.float(), "dopri5", rtol=1e-5, atol=1e-5)
        nfe.append(learned_run.nfe)
        w2_learned.append(_w2_to_target(learned_run.x, target, range(1000 + seed, 1001 + seed)))
        exact_run = sample(analytic, x0, "dopri5", rtol=1e-10, atol=1e-10)
        w2_analytic.append(_w2_to_target(exact_run.x, target, range(1000 + seed, 1001 + seed)))
    w2_dopri, w2_analytic_dopri = float(np.mean(w2_learned)), float(np.mean(w2_analytic))
    x0 = _noise(NOISE_SEEDS[0], n, target.dim)
    reference = sample(analytic, x0, "dopri5", rtol=1e-10, atol=1e-10).x
    lines += [
        f"## {name} on {schedule!r}, cfm model",
        "",
        f"Trained {field.config['steps_done']} steps in {field.config['seconds']:.1f} s (budget {budget_s:.0f} s; "
        f"this run took {trained_s:.1f} s to get it: ≈ 0 means it came from the checkpoint cache), "
        f"final CFM loss {field.config['final_loss']:.4f}.",
        "",
        f"* exact FM loss E‖v_θ − u‖² overall: **{loss.velocity:.4f}**; exact score loss: {loss.score:.4g}",
        f"* W2 floor (exact, n = {n}, 5 pairs): **{floor:.4f}** ± {floor_sd:.4f}",
        f"* dopri5 (rtol = atol = 1e-5, NFE {int(np.mean(nfe))}) from the model, 5 runs (each its own x₀ and its own "
        f"fresh target sample): W2 {_mean_sd(w2_learned)}, mean **{w2_dopri / floor:.2f} × floor**; the analytic field "
        f"(dopri5 at 1e-10) from the same x₀: {_mean_sd(w2_analytic)} ({w2_analytic_dopri / floor:.2f} × floor)",
        "",
        "Exact FM loss per time bin (t = 0 noise, t = 1 data):",
        "",
        "| t bin | E‖v_θ − u‖² | E‖s_θ − s‖² |",
        "|---|---|---|",
    ]
    lines += [f"| [{lo:.1f}, {hi:.1f}) | {v:.4f} | {s:.4g} |" for (lo, hi), v, s in
              zip(loss.bins, loss.velocity_per_bin, loss.score_per_bin, strict=True)]
    lines += [
        "",
        "RK4 at N steps, one x₀ (n = " + str(n) + "): W2 to target samples (mean of 5), and strong error "
        "against the analytic field's dopri5 solve from the same x₀ (model + discretisation error, no sampling noise):",
        "",
        "| steps | NFE | W2 learned | W2 analytic | strong error learned | strong error analytic |",
        "|---|---|---|---|---|---|",
    ]
    for steps in RK4_STEPS:
        with torch.no_grad():
            learned = sample(field, x0.float(), "rk4", steps=steps)
        exact_path = sample(analytic, x0, "rk4", steps=steps)
        lines.append(
            f"| {steps} | {learned.nfe} | {_w2_to_target(learned.x, target, range(200, 205)):.4f} | "
            f"{_w2_to_target(exact_path.x, target, range(200, 205)):.4f} | "
            f"{strong_error(learned.x.double(), reference):.4f} | {strong_error(exact_path.x, reference):.2e} |"
        )
    lines.append("")


def seed_sampler_report(budget_s: float, n: int, lines: list[str]) -> None:
    target = get_target("seed000")
    schedule = get_schedule("cond_ot", sigma_min=0.001)  # the seed's own path, in our time
    analytic = AnalyticField(target, schedule)
    field = train_model(target, schedule, "cfm", seed=0, budget_s=budget_s)
    floor_sliced = w2_floor(target, n, "sliced", generator=300, repeats=3)
    moments_floor = float(np.mean([
        gaussian_fit_w2(target.sample(n, generator=torch.Generator().manual_seed(400 + r)), target) for r in range(5)
    ]))
    lines += [
        "## Seed 000's SDE sampler, as written, vs ours",
        "",
        f"Target seed000, path cond_ot(σ_min = 0.001) (the seed's, time reversed). n = {n} samples; mean ± sd over "
        f"3 runs (x₀ and Brownian seeds shared across samplers). Columns: Bures W2 of the sample moments to the exact moments "
        f"(floor for an exact sampler at this n: {moments_floor:.4f}), mode TV, sliced W2 (256 directions) to a "
        f"target sample (floor {floor_sliced:.4f}). Learned model: cfm, {field.config['steps_done']} steps.",
        "",
        "| field | sampler | steps | moments W2 | mode TV | sliced W2 |",
        "|---|---|---|---|---|---|",
    ]
    reference_sample = target.sample(n, generator=torch.Generator().manual_seed(12))
    seed_g = get_diffusion("proportional", c=1.0, power=0.5)  # the seed's g² = σ
    for field_name, used in (("analytic", analytic), ("learned", field)):
        runs = [("dopri5 (ODE)", "dopri5", {"rtol": 1e-6, "atol": 1e-6})]
        for steps in (100, 1000):
            runs += [
                ("seed000_sde (as written)", "seed000_sde", {"steps": steps}),
                ("euler_maruyama, g² = σ (seed's g)", "euler_maruyama", {"steps": steps, "diffusion": seed_g}),
                ("euler_maruyama, g = σ", "euler_maruyama", {"steps": steps, "diffusion": get_diffusion("proportional", c=1.0)}),
            ]
        for label, method, options in runs:
            moments, modes, sliced = [], [], []
            for repeat in range(3):  # three x₀ / Brownian seeds
                x0 = _noise(11 + repeat, n, 3)
                extra = {} if method == "dopri5" else {"generator": 5 + repeat}
                with torch.no_grad():
                    result = sample(used, x0 if field_name == "analytic" else x0.float(), method, **options, **extra)
                x = result.x.double()
                moments.append(gaussian_fit_w2(x, target))
                modes.append(mode_tv(x, target))
                sliced.append(w2_sliced(x, reference_sample, 256, generator=repeat))
            lines.append(
                f"| {field_name} | {label} | {options.get('steps', result.nfe)} | {_mean_sd(moments)} | "
                f"{_mean_sd(modes)} | {_mean_sd(sliced)} |"
            )
    lines.append("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=90.0, help="training budget per model, seconds")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("results/learned_models.md"))
    args = parser.parse_args()
    command = f"`python bench/scripts/learned_models.py --budget {args.budget:g} --n {args.n}`"
    lines = ["# Learned models vs the analytic truth", "", f"{command}; CPU, {torch.get_num_threads()} threads.", ""]
    model_report("seed000", get_target("seed000"), get_schedule("cond_ot"), args.budget, args.n, lines)
    model_report("eight_gaussians", get_target("eight_gaussians"), get_schedule("cond_ot"), args.budget, args.n, lines)
    seed_sampler_report(args.budget, 50_000, lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
