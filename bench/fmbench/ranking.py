"""Which sampler at my NFE budget, and how sure: every method ranked at each NFE a sweep ran, with its uncertainty.

For each target (with its parameters) and schedule — analytic field, float64, CPU, where discretisation is all there
is — and for each NFE any method ran there:

* **every method ranked, on a metric it shares.** First on the first metric of :data:`RANKED_METRICS` the group's
  methods have — ``w2_exact_law`` (exact, no sampling noise) where they have an exact law — then, for the methods
  still unranked (an adaptive solver, a user's nonlinear sampler), on the next metric that covers them, with every
  method that has it: ``strong_error`` (against the exact flow map, or a tight reference, from the same noise), a
  sample-based W2 last (:func:`ranking_metrics`). A method with none of them is listed as not ranked, with why.
* **equal cost.** A method that ran at that NFE enters with its own error; one whose stage count puts it at other
  NFEs enters with its error interpolated on log–log axes between the two NFEs it ran on either side (marked ``≈``,
  with both NFEs named); outside its range it does not enter.
* **uncertainty.** Over several seeds: the mean and a 95 % Student-t interval of the seeds' values; one seed: ±1.96
  standard errors of the sampled metric (``strong_error_se``, over the cell's n noises), or for a sample-based
  distance ± its floor (:data:`FLOORS`); ``w2_exact_law``: exact (±0).
  A winner whose lead over the runner-up is within the combined interval, :math:`\\sqrt{u_1^2 + u_2^2}`, is a tie.
* **a usable answer.** Where even the best error exceeds :data:`USEFUL_FRACTION` of the target's scale
  :math:`\\sqrt{\\operatorname{tr}\\Sigma}` (the W2 distance from the target to a point at its mean), the row says
  no method is useful at that NFE.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from fmbench.analysis import labels, method_of, parameters_text

__all__ = ["RANKED_METRICS", "STANDARD_ERRORS", "USEFUL_FRACTION", "Estimate", "answers_at_nfe", "target_scale",
           "method_caveats", "ranking_metrics", "FLOORS"]

RANKED_METRICS = ("w2_exact_law", "strong_error", "w2_sliced", "spectral_fit_w2", "gaussian_fit_w2")
"""In order of preference: exact (no sampling noise), then paired with the same noise, then sample-based distances
(each with its floor in the row: below it they cannot see discretisation)."""
STANDARD_ERRORS = {"strong_error": "strong_error_se"}
"""A sampled metric's standard-error column, where the cell computes one."""
FLOORS = {"w2_sliced": "w2_sliced_floor", "spectral_fit_w2": "spectral_fit_w2_floor",
          "gaussian_fit_w2": "gaussian_fit_w2_floor"}
"""A sample-based distance's floor column (the same metric between exact samples of the cell's size): two values
closer than it are not told apart, so it is their ± here."""
EXACT_METRICS = ("w2_exact_law",)
USEFUL_FRACTION = 0.1
"""An error above this fraction of the target's scale √tr Σ is no usable sample."""
GROUP = ["target", "target_params", "schedule", "schedule_params"]
RUNNERS_UP = 2


@dataclass(frozen=True)
class Estimate:
    """A method's error at one NFE: ``value`` ± ``half_width`` (95 %; NaN where unknown), and how it was obtained."""

    label: str
    value: float
    half_width: float
    how: str  # "", or "≈ between NFE a and b"

    def text(self) -> str:
        interval = "" if self.half_width == 0 else (" ± ?" if math.isnan(self.half_width) else f" ± {self.half_width:.2g}")
        where = f", {self.how}" if self.how else ""
        return f"{self.value:.3g}{interval}{where}"


def answers_at_nfe(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(answers, unranked)``: one row per group, ranking metric and NFE — best, runners-up at equal NFE with their
    ratio to the best, and a verdict (tie, or no useful method) — and the methods no metric ranks, with the reason.
    An NFE enters where at least two methods have an estimate there."""
    ok = _analytic_float64(rows)
    answers, unranked = [], []
    if ok.empty:
        return pd.DataFrame(), pd.DataFrame()
    for key, group in ok.groupby(GROUP, sort=True, dropna=False):
        target, target_params, schedule, schedule_params = key
        where = {"target": target + parameters_text(target_params), "schedule": schedule + parameters_text(schedule_params)}
        metrics, left = ranking_metrics(group)
        unranked += [{**where, "method": label, "why": "none of " + ", ".join(RANKED_METRICS) + " in its rows"}
                     for label in sorted(left)]
        scale = target_scale(target, target_params)
        for metric in metrics:
            per_nfe = _seed_estimates(group[group[metric].notna()], metric)
            for nfe in sorted(per_nfe["nfe"].unique()):
                entries = sorted((e for e in (_at_nfe(part, nfe) for _, part in per_nfe.groupby("label")) if e is not None),
                                 key=lambda e: e.value)
                if len(entries) >= 2:
                    answers.append(_answer(where, metric, int(nfe), entries, scale))
    return pd.DataFrame(answers), pd.DataFrame(unranked)


def ranking_metrics(group: pd.DataFrame) -> tuple[list[str], set[str]]:
    """The metrics a group is ranked on, in :data:`RANKED_METRICS` order — each one that covers a label no earlier
    one did — and the labels none covers. Each ranking takes every label that has its metric, so a method without an
    exact law meets the others on ``strong_error``."""
    left, chosen = set(group["label"]), []
    for metric in RANKED_METRICS:
        covered = set(group.loc[group[metric].notna(), "label"]) if metric in group else set()
        if covered & left:
            chosen.append(metric)
            left -= covered
    return chosen, left


def _analytic_float64(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty or "status" not in rows:
        return pd.DataFrame()
    ok = rows[(rows["status"] == "ok") & (rows.get("field") == "analytic") & (rows.get("dtype") == "float64")
              & (rows.get("device") == "cpu")].copy()
    if ok.empty:
        return ok
    for column in ("target_params", "schedule_params"):
        ok[column] = ok[column].fillna("{}") if column in ok else "{}"
    ok["label"] = labels(ok)
    return ok


def _seed_estimates(ranked: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per label and NFE: the mean over seeds and its 95 % half-width (see the module docstring)."""
    se_column = STANDARD_ERRORS.get(metric)
    records = []
    for (label, nfe), cells in ranked.groupby(["label", "nfe"], sort=True):
        values = cells[metric].to_numpy(dtype=float)
        seeds = cells["seed"].nunique() if "seed" in cells else 1
        if metric in EXACT_METRICS:
            half = 0.0
        elif seeds > 1:
            half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
        elif se_column and se_column in cells and cells[se_column].notna().all():
            half = float(1.96 * cells[se_column].to_numpy(dtype=float).mean())
        elif FLOORS.get(metric) in cells and cells[FLOORS[metric]].notna().all():
            half = float(cells[FLOORS[metric]].to_numpy(dtype=float).mean())
        else:
            half = math.nan
        records.append({"label": label, "nfe": float(nfe), "value": float(values.mean()), "half": half})
    return pd.DataFrame(records)


def _at_nfe(part: pd.DataFrame, nfe: float) -> Estimate | None:
    """The label's estimate at ``nfe``: its own, or interpolated on log–log axes between the NFEs around it."""
    label = part["label"].iloc[0]
    exact = part[part["nfe"] == nfe]
    if len(exact):
        row = exact.iloc[0]
        return Estimate(label, row["value"], row["half"], "")
    below, above = part[part["nfe"] < nfe], part[part["nfe"] > nfe]
    if below.empty or above.empty:
        return None
    low, high = below.loc[below["nfe"].idxmax()], above.loc[above["nfe"].idxmin()]
    if low["value"] <= 0 or high["value"] <= 0:
        return None
    weight = math.log(nfe / low["nfe"]) / math.log(high["nfe"] / low["nfe"])
    value = math.exp((1 - weight) * math.log(low["value"]) + weight * math.log(high["value"]))
    relative = (1 - weight) * low["half"] / low["value"] + weight * high["half"] / high["value"]
    return Estimate(label, value, relative * value, f"≈ between NFE {int(low['nfe'])} and {int(high['nfe'])}")


def _answer(where: dict, metric: str, nfe: int, entries: list[Estimate], scale: float) -> dict:
    best = entries[0]
    record = {**where, "NFE": nfe, "metric": metric, "best": best.label, "error": best.text()}
    for place, entry in enumerate(entries[1:1 + RUNNERS_UP], start=2):
        ratio = entry.value / best.value if best.value > 0 else math.nan
        record[f"#{place}"] = entry.label
        record[f"#{place} error"] = entry.text()
        record[f"#{place} ×"] = f"{ratio:.3g}"
    verdict = []
    runner = entries[1]  # an answer is made where two methods or more have an estimate
    combined = math.hypot(best.half_width, runner.half_width)
    if math.isnan(combined):
        verdict.append("lead's uncertainty unknown")
    elif runner.value - best.value <= combined:
        verdict.append(f"tie with {runner.label} (within ± {combined:.2g})")
    if math.isfinite(scale) and best.value > USEFUL_FRACTION * scale:
        verdict.append(f"no method useful: best > {USEFUL_FRACTION:.0%} of the target's scale √tr Σ = {scale:.3g}")
    record["verdict"] = "; ".join(verdict)
    return record


def target_scale(name: str, params_json: str) -> float:
    r""":math:`\sqrt{\operatorname{tr}\Sigma}` of the target (its total covariance; for a mixture
    :math:`\sum_k w_k(\operatorname{tr}\Sigma_k + \|\mu_k\|^2) - \|\sum_k w_k\mu_k\|^2`); NaN for a target this
    process cannot build."""
    from fmcore import get_target

    try:
        target = get_target(name, **(json.loads(params_json) if params_json else {}))
    except Exception:  # a plugin's target not loaded here: the report then makes no "useful" verdict
        return math.nan
    weights = target.weights.double()
    means = target.means.double()
    within = (weights * (target.eigenvalues.double().sum(1) + (means**2).sum(1))).sum()
    overall = (weights[:, None] * means).sum(0)
    return math.sqrt(max(float(within - (overall**2).sum()), 0.0))


def method_caveats(labels: list[str]) -> list[str]:
    """The declared caveats (``Method.caveat``) of the methods behind ``labels``."""
    from fmcore.solvers import get_method

    notes = {}
    for label in labels:
        name = method_of(label)
        try:
            caveat = get_method(name).caveat
        except KeyError:
            continue
        if caveat:
            notes[name] = caveat
    return [f"`{name}`: {caveat}." for name, caveat in sorted(notes.items())]



