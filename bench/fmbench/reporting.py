"""The report of a run: ``<run>/report.md``, its figures, and ``cells.csv`` (every row) beside it.

Sections, in the order a reader asks: which method wins at each NFE the sweep ran, and how sure
(:mod:`fmbench.ranking`), the convergence
orders fitted on the asymptotic range only, what a clipped start costs, where a learned model's error takes over,
the figures (error vs NFE, sampled metrics with their floors as bands, local orders, the error–time Pareto front,
samples along the path), then timing as ratios measured in the same run, and failures. The analysis is in
:mod:`fmbench.analysis`, the drawing in :mod:`fmbench.figures`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fmbench import figures
from fmbench.analysis import (
    asymptotic_orders,
    execution_speedups,
    has_timed_repeats,
    labels,
    learned_crossover,
    roofline_fractions,
    throughput_table,
    time_ratios,
)
from fmbench.compare import LOAD_DIFFERENCE
from fmbench.files import atomic_writer, write_text
from fmbench.ranking import USEFUL_FRACTION, answers_at_nfe, method_caveats
from fmbench.store import export_parquet, load_rows

__all__ = ["write_report"]


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3g") -> str:
    if frame.empty:
        return "_none_"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    lines = [header, "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        cells = ["" if isinstance(v, float) and v != v else format(v, floatfmt) if isinstance(v, float) else str(v)
                 for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load_text(load) -> str:
    return ", ".join(f"{value:.2f}" for value in load) + " (1, 5, 15 min)" if load else "not recorded"


def _environment_line(environment: dict) -> list[str]:
    if not environment:
        return []
    packages = ", ".join(f"{k} {v}" for k, v in environment.get("packages", {}).items() if v)
    dirty = " (dirty)" if environment.get("git_dirty") else ""
    return [f"Commit `{environment.get('git_commit')}`{dirty}; {environment.get('processor')}, {environment.get('cpu_count')} "
            f"CPUs; {environment.get('executor', 'in-process')}, {environment.get('cell_threads')} torch thread(s) per cell; "
            f"load average at start {_load_text(environment.get('load_average'))}; "
            f"CUDA: {environment.get('cuda_devices') or 'none'}; "
            f"{packages}.", ""]


LOAD_WINDOWS = 5
"""The run is cut into this many consecutive parts (in row order, equal in cell count) to tell whether the load
changed during it: a single cell is too short to measure at /proc/stat's 10 ms resolution, a fifth of a run is not."""


def load_during_run(environment: dict, rows: pd.DataFrame | None = None) -> str:
    """What else ran beside the cells: the CPUs other processes kept busy while they ran (``other_cpu_load`` per cell,
    :class:`fmbench.timing.OtherLoad`), averaged over the run and over each of :data:`LOAD_WINDOWS` consecutive parts
    of it weighted by the cells' times. Marked where the parts differ by more than
    :data:`~fmbench.compare.LOAD_DIFFERENCE` (the threshold ``compare`` uses: then the load changed during the run and
    its timings mix an idle and a loaded machine), or where the run's average exceeds it (a busy machine
    throughout). The 1-minute load average at the run's start and end is given beside it; it lags, and counts the
    run's own processes."""
    start, end = environment.get("load_average"), environment.get("load_average_end")
    text = (f"1-minute load average {start[0]:.2f} when the run started" + (f" and {end[0]:.2f} when it ended" if end
            else "") + f", on {environment.get('cpu_count')} CPUs." if start else "Load average: not recorded.")
    if rows is None or "other_cpu_load" not in rows or "cell_s" not in rows:
        return text
    measured = rows.dropna(subset=["other_cpu_load", "cell_s"])
    if measured.empty or measured["cell_s"].sum() <= 0:
        return text
    bounds = np.linspace(0, len(measured), min(LOAD_WINDOWS, len(measured)) + 1).astype(int)
    parts = [measured.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    parts = [part for part in parts if part["cell_s"].sum() > 0]
    averages = [_time_weighted_load(part) for part in parts]
    overall = _time_weighted_load(measured)
    text += (f" Beside the cells, other processes kept {overall:.2f} CPU(s) busy on average (measured per cell from "
             f"/proc/stat; over the run's {len(parts)} consecutive parts: {', '.join(f'{a:.2f}' for a in averages)}).")
    if max(averages) - min(averages) > LOAD_DIFFERENCE:
        text += (" **The load changed during the run:** its timings mix an idle and a loaded machine (ratios between "
                 "cells timed under the same load are steadier; rerun for clean times).")
    elif overall > LOAD_DIFFERENCE:
        text += " **The machine was busy throughout the run:** its times are those of a loaded machine."
    return text


def _time_weighted_load(rows: pd.DataFrame) -> float:
    return float((rows["other_cpu_load"] * rows["cell_s"]).sum() / rows["cell_s"].sum())


def _early_stops(ok: pd.DataFrame) -> pd.DataFrame:
    if "t1" not in ok or not (ok["t1"] < 1).any():
        return pd.DataFrame()
    columns = ["target", "schedule", "label", "steps", "t1", "w2_exact_law", "w2_exact_law_marginal", "strong_error",
               "strong_error_marginal"]
    return ok[ok["t1"] < 1][[c for c in columns if c in ok]]


def _clip_table(ok: pd.DataFrame) -> pd.DataFrame:
    columns = ["clip_w2_exact_law", "clip_strong_error", "discretisation_strong_error"]
    if not any(c in ok for c in columns):
        return pd.DataFrame()
    clipped = ok[ok[[c for c in columns if c in ok]].notna().any(axis=1)]
    keep = [c for c in ["target", "schedule", "dtype", "label", "steps", "t0", "w2_exact_law", "strong_error_exact", *columns]
            if c in clipped]
    return clipped[keep].sort_values(["target", "schedule", "dtype", "label", "steps"])


def _exact_vs_sampled(ok: pd.DataFrame) -> pd.DataFrame:
    """Stochastic cells (an exact-law W2 and no exact strong error) beside their sample-based moment W2 and its floor."""
    if "w2_exact_law" not in ok:
        return pd.DataFrame()
    rows = ok[ok["w2_exact_law"].notna() & (ok["dtype"] == "float64")]
    if "strong_error_exact" in rows:
        rows = rows[rows["strong_error_exact"].isna()]
    keep = [c for c in ["target", "schedule", "label", "steps", "w2_exact_law", "gaussian_fit_w2", "gaussian_fit_w2_floor",
                        "spectral_fit_w2", "spectral_fit_w2_floor"] if c in rows]
    return rows[keep].sort_values(["target", "schedule", "label", "steps"])


def _mixture_distances(ok: pd.DataFrame) -> pd.DataFrame:
    """Mixture cells (analytic, float64): the sample-based distances to the target beside their floors, and whether
    the sample is told apart from exact samples at all (a distance above its floor)."""
    if "w2_sliced" not in ok:
        return pd.DataFrame()
    rows = ok[ok["w2_sliced"].notna() & (ok["dtype"] == "float64") & (ok["field"] == "analytic")].copy()
    if rows.empty:
        return pd.DataFrame()
    rows["distinguishable"] = [
        ", ".join(name for name in ("w2_sliced", "mode_tv") if row.get(name, 0) > row.get(f"{name}_floor", float("inf")))
        or "no: at the floor" for _, row in rows.iterrows()]
    keep = [c for c in ["target", "schedule", "label", "nfe", "w2_sliced", "w2_sliced_floor", "mode_tv", "mode_tv_floor",
                        "distinguishable"] if c in rows]
    return rows[keep].sort_values(["target", "schedule", "label", "nfe"])


def _learned_field(rows: pd.DataFrame, run: Path):
    """The run's learned seed000/cond_ot model from its cache, for the histograms (None if the run had none, or its
    cache is gone: a report never trains)."""
    learned = rows[(rows["status"] == "ok") & (rows["field"] == "learned:cfm") & (rows["target"] == "seed000")
                   & (rows["schedule"] == "cond_ot")] if "field" in rows else pd.DataFrame()
    if learned.empty:
        return None
    from fmbench.cells import CellSpec, train_for
    from fmbench.sweep import default_cache_dir

    row = learned.iloc[0]
    spec = CellSpec(target="seed000", schedule="cond_ot", method=str(row["method"]), field="learned:cfm",
                    seed=int(row["seed"]), train_steps=int(row["train_steps"]))
    cache = Path(json.loads((run / "environment.json").read_text()).get("cache_dir") or default_cache_dir(run)) \
        if (run / "environment.json").exists() else default_cache_dir(run)
    try:
        return train_for(spec, cache, cached_only=True)
    except Exception:  # noqa: BLE001 — the figure then shows the analytic field alone
        return None


def _performance_section(rows: pd.DataFrame, environment: dict, out: Path) -> list[str]:
    """Throughput against batch size, eager vs CUDA graph vs compile, and the roofline: for runs that sweep the batch
    size or the execution (the ``gpu`` preset); nothing otherwise."""
    if "n" not in rows or (rows["n"].nunique() < 2 and ("execution" not in rows or (rows["execution"] == "eager").all())):
        return []
    lines = ["## Performance: throughput, executions and the roofline", "",
             f"CUDA devices: {environment.get('cuda_devices') or 'none'}; driver {environment.get('cuda_driver')}, CUDA "
             f"{environment.get('cuda_version')}, cuDNN {environment.get('cudnn_version')}. Times are medians of the timed "
             "repeats after the scored run, device-synchronised; peak memory is `torch.cuda.max_memory_allocated` over "
             "the cell (CUDA only).", ""]
    plot = figures.throughput_plot(rows, out / "throughput_vs_batch_size.png")
    if plot is not None:
        lines += [f"![throughput]({plot.name})", ""]
    lines += ["### Samples/s, NFE/s and peak memory against batch size", "", markdown_table(throughput_table(rows)), ""]
    speedups = execution_speedups(rows)
    if len(speedups):
        lines += ["### Eager vs CUDA graph vs compile", "",
                  "`speed-up` = eager time ÷ this execution's time for the same cell spec, in the same run; `setup_s` is the "
                  "one-off capture or compilation; `error change` the exact error minus eager's; a fallback ran eagerly and "
                  "says why.", "", markdown_table(speedups), ""]
    fractions = roofline_fractions(rows, environment.get("peaks", []))
    if len(fractions):
        lines += ["### Roofline: the closed-form field's FLOP rate against the measured GEMM peak", "",
                  "At the largest batch size of each line; FLOPs from the velocity's cost model (`fmbench.roofline`) × NFE "
                  "over the whole solve's time, a lower bound on the field's own rate. Peaks measured at the start of the "
                  f"run: {environment.get('peaks')}.", "", markdown_table(fractions), ""]
    return lines


def _answers_section(rows: pd.DataFrame) -> list[str]:
    """The summary: every method ranked at each NFE the sweep ran, per target and schedule (:mod:`fmbench.ranking`)."""
    answers, unranked = answers_at_nfe(rows)
    lines = ["## Which sampler at each NFE, and how sure", "",
             "Analytic fields, float64, CPU: the error is discretisation alone. Per target and schedule, at each NFE a "
             "method ran: the best method and the next two **at that NFE** (`#2 ×`: how many times larger their error "
             "is). A method whose stages put it at other NFEs enters with its error interpolated on log–log axes "
             "between the two NFEs it ran (`≈ between NFE a and b`). Ranked on `w2_exact_law` (the exact W2 of the "
             "sampler's output law: no sampling noise, no ±) where methods have an exact law, and the others on "
             "`strong_error` (against the exact map from the same noise: ± 1.96 standard errors over its n noises), "
             "stochastic ones without an exact law on a sample-based W2 (± its floor); over several seeds the mean "
             "± a 95 % t-interval. A lead within the combined ± is a **tie**; `no method useful` marks an NFE where "
             f"even the best error exceeds {USEFUL_FRACTION:.0%} of the target's scale √tr Σ.", ""]
    if answers.empty:
        return lines + ["No analytic float64 CPU cells with an error metric: nothing to rank.", ""]
    for (target, schedule), table in answers.groupby(["target", "schedule"], sort=False):
        lines += [f"### {target} on {schedule}", "",
                  markdown_table(table.drop(columns=["target", "schedule"]).dropna(axis=1, how="all")), ""]
    if len(unranked):
        lines += ["Not ranked (no metric shared with the others):", "", markdown_table(unranked), ""]
    ranked = answers[[c for c in answers.columns if c == "best" or (c.startswith("#") and c[1:].isdigit())]]
    caveats = method_caveats(sorted(set(ranked.stack().dropna())))
    if caveats:
        lines += ["Caveats declared by the methods ranked here:", "", *[f"- {caveat}" for caveat in caveats], ""]
    return lines


def write_report(run: str | Path, histograms: bool = True, to: str | Path | None = None) -> Path:
    """Write ``report.md``, its figures and ``cells.csv`` from the rows of the run in ``run``, into ``to`` (default: the
    run directory, where the ``rows.parquet`` export is refreshed too). Every file is written atomically and never
    through a link (:mod:`fmbench.files`); the run itself is only read, so ``to`` makes a report of a run on read-only
    media.

    Works on any state of a run: partial, interrupted, one whose every cell failed, or one with no rows yet."""
    run = Path(run)
    out = Path(to) if to is not None else run
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(run)
    if (run / "rows.sqlite").exists() and out == run:
        export_parquet(run, rows)
    environment = json.loads((run / "environment.json").read_text()) if (run / "environment.json").exists() else {}
    if rows.empty or "status" not in rows or "field" not in rows:
        return write_text(out / "report.md", "\n".join([f"# Sweep report: {run.name}", "", *_environment_line(environment),
                                                      f"No cell's row is saved in {run} yet.", ""]))
    ok = rows[rows["status"] == "ok"].copy()
    if len(ok):
        ok["label"] = labels(ok)
    failed, skipped = rows[rows["status"] == "failed"], rows[rows["status"] == "skipped"]
    lines = [f"# Sweep report: {run.name}", "", *_environment_line(environment),
             f"{len(rows)} cells: {len(ok)} ok, {len(failed)} failed, {len(skipped)} skipped. Every cell's row is in "
             "[`cells.csv`](cells.csv).", ""]

    lines += _answers_section(rows)

    orders = asymptotic_orders(rows)
    lines += ["## Convergence orders, fitted on the asymptotic range", "",
              "Local orders between successive step counts; the fitted order is their median over the largest step counts "
              "where they agree within ±0.2. Errors below 100 × the dtype's epsilon are round-off and left out.", "",
              markdown_table(orders[[c for c in orders.columns if c not in ("device", "field")]] if len(orders) else orders), ""]

    clip = _clip_table(ok)
    if len(clip):
        lines += ["## Clipped starts: what the clip costs, and what the steps cost", "",
                  "Grids in noise level (karras, logsnr, ays) and the samplers that step in σ/α start at t₀ > 0 on "
                  "paths with α₀ = 0. `clip_*` is the exact flow "
                  "from t₀ (against the target, and against the exact map from 0); `discretisation_strong_error` is the "
                  "sampler against the exact map from its own start.", "", markdown_table(clip), ""]

    early = _early_stops(ok)
    if len(early):
        lines += ["## Early stops: scored against the data and against the path where they stopped", "",
                  "These cells' grids end at t1 < 1 (`grid_params`). Every other table scores them against the data, as "
                  "early-stopped sampling is scored (the stop is charged); `*_marginal` scores the same output against the "
                  "exact marginal at t1 (what the steps did, without the stop).", "", markdown_table(early), ""]

    exact_sampled = _exact_vs_sampled(ok)
    if len(exact_sampled):
        lines += ["## Stochastic samplers: exact-law W2 beside the sample-based moment W2", "",
                  "`gaussian_fit_w2` is the Bures W2 of the sample's moments (n samples) and `gaussian_fit_w2_floor` the same "
                  "for exact samples of the same size (`spectral_fit_w2`: the same fit diagonal in the target's eigenbasis, "
                  "for image-dimension targets): below the floor the sample-based figure cannot see discretisation.",
                  "", markdown_table(exact_sampled), ""]

    mixtures = _mixture_distances(ok)
    if len(mixtures):
        lines += ["## Mixtures: distribution distances against their floors", "",
                  "`w2_sliced` (sliced W2 to a target sample of the same size) and `mode_tv` (total variation of the "
                  "modes' occupancy) beside their floors — the same metric between two exact samples of that size, "
                  "mean of 3: below the floor a metric cannot see discretisation. `distinguishable` names the metrics "
                  "that tell the sampler's output from exact samples.", "", markdown_table(mixtures), ""]

    crossover = learned_crossover(rows)
    lines += ["## Learned vs analytic fields", "",
              "The learned model's error floor (its strong error against the exact reference at its largest NFE) and the "
              "NFE from which the analytic field's discretisation error is below it: beyond that NFE, steps buy nothing.",
              "", markdown_table(crossover), ""]

    figure_paths = [
        figures.error_vs_nfe(rows, out / "exact_error_vs_nfe.png"),
        figures.error_vs_nfe(rows, out / "gaussian_fit_w2_vs_nfe.png", metric="gaussian_fit_w2", floor="gaussian_fit_w2_floor"),
        figures.order_plot(orders, out / "local_orders.png"),
        figures.pareto_plot(rows, out / "pareto_front.png"),
    ]
    if histograms and len(ok) and (ok["target"] == "seed000").any():  # seed 000's figure, for sweeps that hold it
        figure_paths.append(figures.intermediate_histograms(out / "seed000_histograms.png", _learned_field(rows, run)))
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figure_paths if p is not None] + [""]

    ratios = time_ratios(rows)
    lines += ["## Timing", "", load_during_run(environment, ok), "",
              ("Times are the median of each cell's timed repeats after its scored run (the repeats' spread is "
               "(max − min) / median, median over a method's cells)" if has_timed_repeats(ok) else
               "Times are single runs (the preset asked for no timed repeats: a difference below 2× may be noise)")
              + "; shown as time per NFE relative to Euler on the same target, schedule, dtype and device, measured "
              "in the same run, which is steadier than a time.", "", markdown_table(ratios), ""]
    lines += _performance_section(rows, environment, out)
    for title, frame in (("Failed cells", failed), ("Skipped cells", skipped)):
        if len(frame):
            columns = [c for c in ["target", "schedule", "method", "steps", "device", "dtype", "fault", "attempt", "error"]
                       if c in frame]
            lines += [f"## {title}", "", markdown_table(frame[columns]), ""]
    with atomic_writer(out / "cells.csv") as file:
        rows.to_csv(file, index=False)
    return write_text(out / "report.md", "\n".join(lines))
