"""What a report says, computed from the rows with pandas (no plotting here).

* :func:`exact_error` — the error a cell is judged by: the exact-law figures where they exist (no sampling noise),
  else the strong error against the float64 reference (also deterministic);
* :func:`best_at_budget` — for each target/schedule and NFE budget, the best method and grid, and by how much it
  beats Euler and the runner-up;
* :func:`asymptotic_orders` — convergence orders fitted only where the local orders have settled;
* :func:`learned_crossover` — a learned model's error floor, and the NFE where it takes over from discretisation;
* :func:`pareto_front`, :func:`time_ratios` — cost: error against time, and time relative to a reference method
  measured in the same run;
* :func:`throughput_table`, :func:`execution_speedups`, :func:`roofline_fractions` — performance tracking: samples/s,
  NFE/s and peak memory against batch size, eager vs CUDA graph vs compile, and the closed-form field's FLOP rate
  as a fraction of the device's measured GEMM peak.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from fmbench import peers  # noqa: F401 — registers the peer adapters before any method is looked up
from fmcore.solvers import METHODS

GROUP = ["target", "schedule", "dtype", "device", "field"]
STABLE_WITHIN = 0.2
"""Successive local orders that differ by at most this are in the asymptotic range."""
ROUND_OFF = {"float32": 100 * 1.19e-7, "float64": 100 * 2.22e-16}
"""An error below this (100 × the dtype's machine epsilon) is treated as round-off, not discretisation."""


def labels(frame: pd.DataFrame) -> pd.Series:
    """method (with its own options), plus grid (with its parameters) / diffusion (with its parameters) / learned
    field where they distinguish rows; an early stop shows as its grid's ``t1``."""
    label = frame["method"].astype(str)
    options = frame.get("method_params", pd.Series("{}", index=frame.index)).fillna("{}").map(parameters_text)
    label = label + options  # ddim(eta=1.0) is not ddim
    grid = frame.get("grid", pd.Series("uniform", index=frame.index)).fillna("uniform")
    grid_parameters = frame.get("grid_params", pd.Series("{}", index=frame.index)).fillna("{}").map(parameters_text)
    plain = (grid == "uniform") & (grid_parameters == "")
    label = label.where(plain, label + "[" + grid + grid_parameters + "]")
    diffusion = frame.get("diffusion", pd.Series(None, index=frame.index))
    parameters = frame.get("diffusion_params", pd.Series("{}", index=frame.index)).fillna("{}")
    described = diffusion.astype(str) + parameters.map(parameters_text)
    label = label.where(diffusion.isna(), label + "[" + described + "]")
    field = frame.get("field", pd.Series("analytic", index=frame.index)).fillna("analytic")
    label = label.where(field == "analytic", label + " (" + field + ")")
    execution = frame.get("execution_used", pd.Series("eager", index=frame.index)).fillna("eager")
    return label.where(execution == "eager", label + " {" + execution + "}")


def method_of(label: str) -> str:
    """The method name a :func:`labels` label starts with (before its options, grid, diffusion or field)."""
    return re.split(r"[\[( ]", label, maxsplit=1)[0]


def parameters_text(parameters) -> str:
    """``'{"c": 0.5}'`` → ``"(c=0.5)"``; nothing for no parameters."""
    values = json.loads(parameters) if isinstance(parameters, str) else (parameters or {})
    return "(" + ", ".join(f"{key}={value}" for key, value in values.items()) + ")" if values else ""


def exact_error(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """``(error, metric name)`` per row: ``w2_exact_law``, else ``strong_error`` (deterministic either way)."""
    error = pd.Series(np.nan, index=frame.index)
    name = pd.Series(None, index=frame.index, dtype=object)
    for column in ("strong_error", "w2_exact_law"):  # later columns take precedence
        if column in frame:
            present = frame[column].notna()
            error = error.where(~present, frame[column])
            name = name.where(~present, column)
    return error, name


def panel_metric(frame: pd.DataFrame) -> str | None:
    """The one exact metric a figure panel draws for all its rows: ``w2_exact_law`` where any row has it (the exact
    W2 of the output law, stochastic samplers included), else ``strong_error``; None where neither is present. Rows
    without it are left out of the panel, and counted in its title."""
    for name in ("w2_exact_law", "strong_error"):
        if name in frame and frame[name].notna().any():
            return name
    return None


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    ok = rows[rows["status"] == "ok"].copy()
    if ok.empty:
        return ok
    ok["label"] = labels(ok)
    ok["error"], ok["metric"] = exact_error(ok)
    return ok.dropna(subset=["error"])


def asymptotic_orders(rows: pd.DataFrame) -> pd.DataFrame:
    """Convergence orders of fixed-step methods that declare one (``Method.order``: tableaus, the diffusion samplers,
    reproductions) on uniform grids, fitted on the asymptotic range only; ``flags`` says where the fit disagrees with
    the declaration by more than :data:`STABLE_WITHIN` (pointing to the method's ``caveat``, if it declares one).
    Methods run at fewer than three step counts are left out.

    Local orders :math:`p_i = \\log(e_i/e_{i+1}) / \\log(N_{i+1}/N_i)` between successive step counts. Errors below
    the dtype's round-off floor (:data:`ROUND_OFF`) are flagged "round-off" and left out. Walking back from the
    largest step counts, the local orders that stay within :data:`STABLE_WITHIN` of their neighbour form the
    asymptotic range; the fitted order is their median. Earlier points are "pre-asymptotic"; with fewer than two
    settled local orders there is no fit.
    """
    ok = _ok(rows)
    if ok.empty:
        return pd.DataFrame()
    declared = {name: method.order for name, method in METHODS.items() if method.order is not None and method.takes_steps}
    fixed = ok[ok["method"].isin(list(declared)) & (ok["grid"] == "uniform") & (ok["field"] == "analytic")]
    records = []
    for keys, group in fixed.groupby(GROUP + ["method"], sort=True):
        group = group.groupby("steps", as_index=False)["error"].min().sort_values("steps")
        if len(group) < 3:  # two step counts give one local order: nothing to fit or to call settled
            continue
        steps, errors = group["steps"].to_numpy(float), group["error"].to_numpy(float)
        floor = ROUND_OFF.get(keys[2], 0.0)
        usable = errors > floor
        local = [math.log(errors[i] / errors[i + 1]) / math.log(steps[i + 1] / steps[i])
                 if usable[i] and usable[i + 1] else math.nan for i in range(len(steps) - 1)]
        stable: list[int] = []
        for i in reversed(range(len(local))):
            if math.isnan(local[i]):
                if stable:
                    break
                continue
            if stable and abs(local[i] - local[stable[-1]]) > STABLE_WITHIN:
                break
            stable.append(i)
        fitted = float(np.median([local[i] for i in stable])) if len(stable) >= 2 else math.nan
        flags = []
        if not usable.all():
            flags.append(f"round-off at N ≥ {int(steps[~usable].min())}")
        first_stable = min(stable) if len(stable) >= 2 else len(local)
        if first_stable > 0:
            flags.append(f"pre-asymptotic at N ≤ {int(steps[first_stable])}" if len(stable) >= 2 else "no asymptotic range")
        order = declared[keys[-1]]
        if math.isfinite(fitted) and abs(fitted - order) > STABLE_WITHIN:
            caveat = " (the method declares a caveat: see the summary)" if METHODS[keys[-1]].caveat else ""
            flags.append(f"fitted {fitted:.2f} ≠ declared {order}{caveat}")
        records.append({**dict(zip(GROUP + ["method"], keys, strict=True)), "declared order": order,
                        "fitted order": fitted, "local orders": " ".join(f"{p:.2f}" for p in local),
                        "steps": " ".join(str(int(s)) for s in steps), "flags": "; ".join(flags) or "-"})
    return pd.DataFrame(records)


def learned_crossover(rows: pd.DataFrame) -> pd.DataFrame:
    """Per learned model and method: its error floor (the error at its largest NFE, against the exact reference of
    the same noise) and the smallest NFE at which the analytic field's discretisation error falls below it —
    beyond that NFE, more steps cannot help the learned model."""
    ok = _ok(rows)
    if ok.empty or "strong_error" not in ok:
        return pd.DataFrame()
    learned = ok[(ok["field"] != "analytic") & ok["strong_error"].notna()]
    records = []
    for (target, schedule, dtype, field, method), group in learned.groupby(["target", "schedule", "dtype", "field", "method"]):
        group = group.sort_values("nfe")
        model_floor = float(group["strong_error"].iloc[-1])
        analytic = ok[(ok["field"] == "analytic") & (ok["target"] == target) & (ok["schedule"] == schedule)
                      & (ok["dtype"] == dtype) & (ok["method"] == method) & (ok["grid"] == "uniform")
                      & ok["strong_error"].notna()].sort_values("nfe")
        below = analytic[analytic["strong_error"] < model_floor]
        records.append({"target": target, "schedule": schedule, "dtype": dtype, "field": field, "method": method,
                        "model error floor": model_floor,
                        "learned error by NFE": _by_nfe(group),
                        "analytic error by NFE": _by_nfe(analytic),
                        "model error dominates from NFE": int(below["nfe"].iloc[0]) if len(below) else None})
    return pd.DataFrame(records)


def _by_nfe(frame: pd.DataFrame) -> str:
    return " ".join(f"{int(n)}:{e:.2g}" for n, e in zip(frame["nfe"], frame["strong_error"], strict=True))


def pareto_front(frame: pd.DataFrame, error: str, cost: str = "wall_s") -> pd.DataFrame:
    """Rows not dominated in (cost, error): no other row is at least as cheap and strictly more accurate."""
    ordered = frame.dropna(subset=[error, cost]).sort_values([cost, error])
    front, best = [], np.inf
    for _, row in ordered.iterrows():
        if row[error] < best:
            front.append(row)
            best = row[error]
    return pd.DataFrame(front)


def has_timed_repeats(rows: pd.DataFrame) -> bool:
    """Whether some row's time is the median of timed repeats (it then has their range, ``wall_s_min`` … ``wall_s_max``)."""
    return "wall_s_max" in rows and bool(rows["wall_s_max"].notna().any())


def time_ratios(rows: pd.DataFrame, reference: str = "euler") -> pd.DataFrame:
    """Time per NFE of each method relative to ``reference`` on the same target, schedule, dtype and device, in the
    same run (a ratio survives a slow machine better than a time): median over the cells of each method; with timed
    repeats, the repeats' spread ``(max − min) / median`` too (median over the cells), and the CPUs other processes
    kept busy beside the method's cells (``other_cpu_load``, averaged over them weighted by their times)."""
    if "wall_s" not in rows:
        return pd.DataFrame()
    ok = rows[(rows["status"] == "ok") & rows["wall_s"].notna() & (rows["nfe"] > 0)].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["label"] = labels(ok)
    ok["s_per_nfe"] = ok["wall_s"] / ok["nfe"]
    keys = ["target", "schedule", "dtype", "device"]
    base = ok[(ok["method"] == reference) & (ok["field"] == "analytic")].groupby(keys)["s_per_nfe"].median().rename("reference")
    ok = ok.join(base, on=keys).dropna(subset=["reference"])
    ok["time per NFE / euler"] = ok["s_per_nfe"] / ok["reference"]
    columns = {"time per NFE / euler": ("time per NFE / euler", "median"), "cells": ("cell", "count"),
               "median µs per NFE": ("s_per_nfe", lambda s: 1e6 * s.median())}
    if has_timed_repeats(ok):  # how far apart the repeats were
        ok["spread"] = (ok["wall_s_max"] - ok["wall_s_min"]) / ok["wall_s"]
        columns["repeats' spread"] = ("spread", "median")
    table = ok.groupby(["device", "dtype", "label"], as_index=False).agg(**columns)
    if {"other_cpu_load", "cell_s"} <= set(ok) and ok["other_cpu_load"].notna().any():  # what else ran beside them
        ok["other_cpu_s"] = ok["other_cpu_load"] * ok["cell_s"]
        sums = ok.groupby(["device", "dtype", "label"], as_index=False)[["other_cpu_s", "cell_s"]].sum()
        table["other CPUs busy"] = (sums["other_cpu_s"] / sums["cell_s"]).to_numpy()
    return table


def performance_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The ok rows with a time, labelled, with their exact error (the accuracy beside the speed)."""
    if "wall_s" not in rows:
        return pd.DataFrame()
    ok = rows[(rows["status"] == "ok") & rows["wall_s"].notna()].copy()
    if ok.empty:
        return ok
    ok["label"] = labels(ok)
    ok["error"], ok["metric"] = exact_error(ok)
    if "execution_used" not in ok:
        ok["execution_used"] = "eager"
    return ok


def throughput_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Samples/s, NFE/s, peak CUDA memory (MiB) and the exact error per target, device, dtype, method and batch size."""
    ok = performance_rows(rows)
    if ok.empty:
        return ok
    ok["peak MiB"] = ok["peak_memory_bytes"] / 2**20 if "peak_memory_bytes" in ok else math.nan
    columns = ["target", "device", "dtype", "label", "n", "samples_per_s", "nfe_per_s", "peak MiB", "error", "metric"]
    return ok[columns].sort_values(["target", "device", "dtype", "label", "n"])


_SPEC_COLUMNS = ["target", "target_params", "schedule", "schedule_params", "method", "field", "steps", "grid", "rtol",
                 "atol", "diffusion", "diffusion_params", "device", "dtype", "seed", "n", "train_steps"]


def execution_speedups(rows: pd.DataFrame) -> pd.DataFrame:
    """Each CUDA-graph or compiled cell beside the eager cell of the same spec: the speed-up (eager time ÷ its time,
    in the same run), the one-off setup time, the change in exact error, or the fallback's reason."""
    ok = performance_rows(rows)
    if ok.empty or "execution" not in ok or not (ok["execution"] != "eager").any():
        return pd.DataFrame()
    keys = [c for c in _SPEC_COLUMNS if c in ok]
    ok[keys] = ok[keys].astype(str)
    eager = ok[ok["execution"] == "eager"][keys + ["wall_s", "error"]].rename(
        columns={"wall_s": "eager_wall_s", "error": "eager_error"})
    other = ok[ok["execution"] != "eager"].merge(eager, on=keys, how="left")
    other["speed-up"] = other["eager_wall_s"] / other["wall_s"]
    other["error change"] = other["error"] - other["eager_error"]
    fallback = other.get("execution_fallback", pd.Series(None, index=other.index)).astype(object).fillna("").astype(str)
    other["fallback"] = fallback.str.slice(0, 80)
    columns = ["target", "device", "dtype", "method", "field", "n", "execution", "execution_used", "speed-up", "setup_s",
               "error change", "fallback"]
    return other[columns].sort_values(["target", "device", "dtype", "method", "field", "execution", "n"])


def roofline_fractions(rows: pd.DataFrame, peaks: list[dict]) -> pd.DataFrame:
    """Analytic-field cells placed on the roofline: the velocity's FLOPs (``field_gflop``, its cost model × NFE) per
    second of the whole solve, as a fraction of the measured GEMM peak of that device and dtype. A lower bound on
    the field's own fraction: the solve's time also holds the steps' arithmetic and checks."""
    ok = performance_rows(rows)
    if ok.empty or "field_gflop" not in ok or not peaks:
        return pd.DataFrame()
    ok = ok[ok["field_gflop"].notna()].copy()
    peak = {(p["device"], p["dtype"]): p["gemm_flops_per_s"] for p in peaks}
    ok["peak GFLOP/s"] = [peak.get((d, t), math.nan) / 1e9 for d, t in zip(ok["device"], ok["dtype"], strict=True)]
    ok["achieved GFLOP/s"] = ok["field_gflop"] / ok["wall_s"]
    ok["fraction of GEMM peak"] = ok["achieved GFLOP/s"] / ok["peak GFLOP/s"]
    largest = ok.groupby(["target", "device", "dtype", "label"])["n"].transform("max")
    columns = ["target", "device", "dtype", "label", "n", "achieved GFLOP/s", "peak GFLOP/s", "fraction of GEMM peak"]
    return ok[ok["n"] == largest][columns].sort_values(["target", "device", "dtype", "label"])
