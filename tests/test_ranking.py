"""The report's answer (``fmbench.ranking``): methods ranked at equal NFE, with their uncertainty, every method in."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from fmbench.ranking import answers_at_nfe, target_scale
from scipy import stats

from fmcore import get_target

STAGES = {"euler": 1, "heun": 2, "rk4": 4}


def _rows(method: str, steps: list[int], metric: str, errors: list[float], **extra) -> pd.DataFrame:
    return pd.DataFrame({"status": "ok", "target": "gaussian", "target_params": '{"d": 2}', "schedule": "cond_ot",
                         "dtype": "float64", "device": "cpu", "field": "analytic", "grid": "uniform", "method": method,
                         "steps": steps, metric: errors, "nfe": [s * STAGES[method] for s in steps], **extra})


def _answer(answers: pd.DataFrame, nfe: int, metric: str = "w2_exact_law") -> pd.Series:
    return answers[(answers["NFE"] == nfe) & (answers["metric"] == metric)].iloc[0]


def test_methods_are_compared_at_equal_nfe_and_interpolated_between_their_own():
    rows = pd.concat([_rows("euler", [8, 16, 32], "w2_exact_law", [0.1, 0.05, 0.025]),
                      _rows("heun", [4, 8, 16], "w2_exact_law", [0.04, 0.01, 0.0025]),
                      _rows("rk4", [2, 8], "w2_exact_law", [0.02, 0.02 / 256])])
    answers, unranked = answers_at_nfe(rows)
    at_16 = _answer(answers, 16)
    assert at_16["best"] == "rk4" and "≈ between NFE 8 and 32" in at_16["error"]  # interpolated on log-log
    assert float(at_16["error"].split(",")[0]) == pytest.approx(0.02 / 16, rel=1e-3)  # slope 4 at NFE 16
    assert at_16["#2"] == "heun" and float(at_16["#2 ×"]) == pytest.approx(0.01 / (0.02 / 16), rel=1e-3)
    assert at_16["#3"] == "euler" and float(at_16["#3 ×"]) == pytest.approx(0.05 / (0.02 / 16), rel=1e-3)
    assert unranked.empty
    assert "≈" not in _answer(answers, 32)["error"] and 64 not in set(answers["NFE"])  # outside rk4's range: no row


def test_several_seeds_are_a_mean_with_a_t_interval_never_the_minimum():
    seeds = [0.1, 0.2, 0.3]
    rows = pd.concat([_rows("euler", [16, 16, 16], "strong_error", seeds, seed=[0, 1, 2]),
                      _rows("heun", [8, 8, 8], "strong_error", [0.5, 0.5, 0.5], seed=[0, 1, 2])])
    row = _answer(answers_at_nfe(rows)[0], 16, "strong_error")
    value, half = row["error"].split(" ± ")
    assert float(value) == pytest.approx(0.2) and row["best"] == "euler"
    expected = stats.t.ppf(0.975, 2) * pd.Series(seeds).std() / math.sqrt(3)
    assert float(half) == pytest.approx(expected, rel=0.01)


def test_a_lead_within_the_uncertainty_is_a_tie_and_outside_it_is_not():
    close = pd.concat([_rows("euler", [16], "strong_error", [0.100], strong_error_se=[0.004]),
                       _rows("heun", [8], "strong_error", [0.105], strong_error_se=[0.004])])
    assert "tie with heun" in _answer(answers_at_nfe(close)[0], 16, "strong_error")["verdict"]
    apart = close.assign(strong_error_se=[0.0001, 0.0001])
    assert "tie" not in _answer(answers_at_nfe(apart)[0], 16, "strong_error")["verdict"]


def test_a_method_without_the_exact_metric_is_ranked_on_one_it_shares():
    """An adaptive solver (no exact law) meets the others on strong_error instead of being dropped."""
    rows = pd.concat([_rows("euler", [16, 32], "w2_exact_law", [0.05, 0.025], strong_error=[0.06, 0.03]),
                      _rows("heun", [8, 16], "w2_exact_law", [0.01, 0.0025], strong_error=[0.012, 0.003])])
    adaptive = _rows("euler", [16], "strong_error", [0.001]).assign(method="dopri5", nfe=[16])
    answers, unranked = answers_at_nfe(pd.concat([rows, adaptive]))
    assert set(answers["metric"]) == {"w2_exact_law", "strong_error"} and unranked.empty
    assert _answer(answers, 16, "strong_error")["best"] == "dopri5"
    assert "dopri5" not in set(answers.loc[answers["metric"] == "w2_exact_law", "best"])


def test_no_method_useful_where_the_best_error_exceeds_a_tenth_of_the_targets_scale():
    scale = target_scale("gaussian", '{"d": 2}')
    rows = pd.concat([_rows("euler", [8], "w2_exact_law", [0.2 * scale]), _rows("heun", [4], "w2_exact_law", [0.3 * scale])])
    assert "no method useful" in _answer(answers_at_nfe(rows)[0], 8)["verdict"]
    assert "no method useful" not in _answer(answers_at_nfe(rows.assign(w2_exact_law=[0.05 * scale, 0.3 * scale]))[0],
                                             8)["verdict"]


def test_the_targets_scale_is_the_root_of_its_total_variance():
    """√tr Σ against a Monte-Carlo estimate from 4·10⁵ samples of a mixture (within 1 %: the estimate's relative
    standard error is ≈ 0.2 % here)."""
    target = get_target("gmm", K=3, d=3)
    x = target.sample(400_000, generator=torch.Generator().manual_seed(0)).double()
    monte_carlo = math.sqrt(float(((x - x.mean(0)) ** 2).sum(1).mean()))
    assert target_scale("gmm", '{"K": 3, "d": 3}') == pytest.approx(monte_carlo, rel=0.01)


def _adams_bashforth_2(request):
    """A user's two-step Adams–Bashforth (Euler for its first step): linear in x and the field's velocities."""
    x, grid, previous = request.x0, request.grid.tolist(), None
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        h, velocity = t_next - t, request.field(t, x)
        x = x + h * velocity if previous is None else x + h * (1.5 * velocity - 0.5 * previous)
        previous = velocity
    return x, None, {}


def test_a_users_affine_method_gets_its_exact_law_by_probing_and_is_ranked(tmp_path):
    """``Method(..., affine=True)``: no law of its own, so the cell probes one; the report ranks it beside the rest."""
    from dataclasses import replace

    from fmbench.cells import CellSpec
    from fmbench.reporting import write_report
    from fmbench.sweep import run_sweep

    from fmcore import AnalyticField, get_schedule
    from fmcore.exact import exact_output_law, has_exact_law
    from fmcore.solvers import METHODS, Method, register_method, sample
    from fmcore.solvers.laws import PROBED

    name = "test_user_ab2"
    if name not in METHODS:
        register_method(Method(name, _adams_bashforth_2, stages=1, order=2, affine=True))
    assert has_exact_law(name) and METHODS[name].exact_law is PROBED
    # The probed law is the law of the method's own runs: per eigendirection, mean and variance against 4·10⁵ samples
    # (5 standard errors; a Gaussian's sample variance has standard error V √(2/n)).
    target, schedule = get_target("gaussian", d=2, seed=1), get_schedule("cosine")
    law = exact_output_law(target, schedule, name, steps=8)
    x0 = schedule.prior_std * torch.randn(400_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    x = sample(AnalyticField(target, schedule), x0, name, steps=8).x
    z, n = x @ law.basis, x.shape[0]
    assert bool(((z.mean(0) - law.rotated_output_mean).abs() <= 5 * (law.variance / n).sqrt()).all())
    assert bool(((z.var(0) - law.variance).abs() <= 5 * law.variance * math.sqrt(2 / n)).all())

    base = CellSpec(target="gaussian", target_params={"d": 2}, schedule="cosine", method="euler", steps=16, n=256)
    cells = [base, replace(base, method="heun", steps=8), replace(base, method=name, steps=16)]
    run_sweep(cells, tmp_path, progress=False, cache_dir=tmp_path / "cache")
    report = write_report(tmp_path, histograms=False).read_text()
    summary = report.split("## Which sampler at each NFE")[1].split("\n## ")[0]
    assert name in summary and "w2_exact_law" in summary



def test_a_methods_own_options_make_it_another_entry():
    """ddim with η = 1 is not ddim (η = 0): two entries, not two 'seeds' of one."""
    rows = pd.concat([_rows("euler", [16], "w2_exact_law", [0.05]).assign(method="ddim", method_params='{"eta": 1.0}'),
                      _rows("euler", [16], "w2_exact_law", [0.02]).assign(method="ddim", method_params="{}")])
    answer = _answer(answers_at_nfe(rows)[0], 16)
    assert (answer["best"], answer["#2"]) == ("ddim", "ddim(eta=1.0)") and float(answer["#2 ×"]) == pytest.approx(2.5)
