"""The report's figures, drawn with one fixed style for the whole report.

* one colour per method, fixed by its place in the method registry (:func:`method_colour`), so a method has the same
  colour in every figure of every report; its variants (diffusion, field) are shades of it;
* one marker per time grid (so ``karras`` and ``logsnr`` stay apart where their curves overlap), one line style per
  dtype, panels in sorted order: the same rows always give the same figure.
"""

from __future__ import annotations

import itertools
import math
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from fmbench.analysis import exact_error, labels, method_of, pareto_front, performance_rows  # noqa: E402
from fmbench.files import atomic_writer  # noqa: E402
from fmcore.solvers import METHODS  # noqa: E402

MARKERS = {"uniform": "o", "karras": "s", "logsnr": "^", "cosine": "D"}
DASHES = {"float64": "-", "float32": "--"}


def colour_key(frame: pd.DataFrame) -> pd.Series:
    """The part of a label that gets a colour: the label without its grid (the grid is the marker)."""
    grid = frame.get("grid", pd.Series("uniform", index=frame.index)).fillna("uniform")
    label = labels(frame)
    return pd.Series([lab.replace(f"[{g}]", "") for lab, g in zip(label, grid, strict=True)], index=frame.index)


COLOURS = (sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8) + sns.color_palette("Set1", 9)
           + sns.color_palette("tab20b", 20)[::2] + sns.color_palette("tab20c", 20)[::4])
"""The qualitative colours a method's colour is taken from, by its position in the method registry."""
SHADES = (0.0, -0.35, 0.45, -0.6, 0.7)
"""How variants of one method (its diffusions, fields, learned models) are told apart: mixed towards black (< 0) or
white (> 0) by this much, in the variants' sorted order."""


def method_colour(method: str) -> tuple:
    """A method's own colour, the same in every figure of every report: taken from :data:`COLOURS` by its place in
    the registry (built-in methods register in a fixed order; a plugin's come after them), or by a stable hash of the
    name for one that is not registered here."""
    order = list(METHODS)
    index = order.index(method) if method in order else len(order) + zlib.crc32(method.encode()) % len(COLOURS)
    return tuple(COLOURS[index % len(COLOURS)])


def palette(keys) -> dict[str, tuple]:
    """A colour per key: its method's :func:`method_colour`, shaded per variant of that method (:data:`SHADES`)."""
    variants: dict[str, list[str]] = {}
    for key in sorted(set(keys)):
        variants.setdefault(method_of(key), []).append(key)
    colours = {}
    for method, keys_of_method in variants.items():
        base = np.array(method_colour(method))
        for shade, key in zip(itertools.cycle(SHADES), keys_of_method):
            towards = np.zeros(3) if shade < 0 else np.ones(3)
            colours[key] = tuple((1 - abs(shade)) * base + abs(shade) * towards)
    return colours


def _facets(frame: pd.DataFrame):
    targets, schedules = sorted(frame["target"].unique()), sorted(frame["schedule"].unique())
    figure, axes = plt.subplots(len(targets), len(schedules), figsize=(4.2 * len(schedules), 3.4 * len(targets)),
                                squeeze=False)
    return figure, axes, targets, schedules


def _styled_panels(frame: pd.DataFrame):
    """Colour keys, grids and a figure of target × schedule panels: ``(colours, figure, panels)`` where ``panels``
    yields ``(axis, target, schedule, rows of that panel)``."""
    frame["key"], frame["grid"] = colour_key(frame), frame["grid"].fillna("uniform")
    colours = palette(frame["key"])
    figure, axes, targets, schedules = _facets(frame)
    panels = ((axes[i][j], target, schedule, frame[(frame["target"] == target) & (frame["schedule"] == schedule)])
              for i, target in enumerate(targets) for j, schedule in enumerate(schedules))
    return colours, figure, panels


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_writer(path) as file:  # never through a link planted at the figure's name (fmbench.files)
        figure.savefig(file, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _legend(figure, colours: dict, grids, dtypes) -> None:
    handles = [plt.Line2D([], [], color=c, lw=2, label=k) for k, c in colours.items()]
    handles += [plt.Line2D([], [], color="grey", marker=MARKERS.get(g, "x"), ls="", label=f"grid {g}") for g in grids]
    handles += [plt.Line2D([], [], color="grey", ls=DASHES.get(d, ":"), label=d) for d in dtypes]
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def error_vs_nfe(rows: pd.DataFrame, path: Path, metric: str | None = None, floor: str | None = None) -> Path | None:
    """log-log error vs NFE (the mean over seeds); ``metric=None`` uses each row's exact metric. A ``floor`` column is
    drawn as a dotted line."""
    ok = rows[rows["status"] == "ok"].copy()
    if ok.empty:
        return None
    ok["y"] = exact_error(ok)[0] if metric is None else (ok[metric] if metric in ok else np.nan)
    ok = ok[ok["y"] > 0].dropna(subset=["y", "nfe"])
    if ok.empty:
        return None
    colours, figure, panels = _styled_panels(ok)
    for axis, target, schedule, panel in panels:
        for (key, grid, dtype), line in panel.groupby(["key", "grid", "dtype"], sort=True):
            line = line.groupby("nfe", as_index=False)["y"].mean()  # over seeds: their mean, never the luckiest
            axis.plot(line["nfe"], line["y"], color=colours[key], marker=MARKERS.get(grid, "x"),
                      ls=DASHES.get(dtype, ":"), ms=4, lw=1.2)
        if floor and floor in panel and panel[floor].notna().any():
            level = float(panel[floor].median())
            axis.axhline(level, color="black", lw=1.0, ls=":")  # a line, not a band: the data keep the axis
            axis.annotate("floor (exact samples)", (0.02, level), xycoords=("axes fraction", "data"), fontsize=7,
                          va="bottom", color="black")
        axis.set(xscale="log", yscale="log", title=f"{target} / {schedule}", xlabel="NFE", ylabel=metric or "exact error")
    _legend(figure, colours, sorted(ok["grid"].unique()), sorted(ok["dtype"].unique()))
    if metric is None:
        figure.suptitle("exact error vs NFE: W2 of the exact output law (Gaussian targets) or strong error against a "
                        "float64 reference (mixtures)", y=1.01, fontsize=9)
    return _save(figure, path)


def order_plot(orders: pd.DataFrame, path: Path) -> Path | None:
    """Local convergence orders against step count, with each tableau's order as a dotted line."""
    if orders.empty:
        return None
    orders = orders[orders["local orders"].str.strip() != ""]  # one step count: no local order to draw
    if orders.empty:
        return None
    colours = palette(orders["method"])
    figure, axes, targets, schedules = _facets(orders)
    local_orders = [float(p) for text in orders["local orders"] for p in text.split() if math.isfinite(float(p))]
    top = max([6.0, *(p + 0.5 for p in local_orders)])  # every local order on the axis, however far off
    bottom = min([-0.5, *(p - 0.5 for p in local_orders)])
    for i, target in enumerate(targets):
        for j, schedule in enumerate(schedules):
            axis = axes[i][j]
            panel = orders[(orders["target"] == target) & (orders["schedule"] == schedule)]
            drawn_steps = set()
            for _, row in panel.sort_values(["method", "dtype"]).iterrows():
                steps = [float(s) for s in row["steps"].split()]
                local = [float(p) for p in row["local orders"].split()]
                axis.plot(steps[1:], local, color=colours[row["method"]], ls=DASHES.get(row["dtype"], ":"), marker="o", ms=3)
                axis.axhline(row["declared order"], color=colours[row["method"]], ls=":", lw=0.8)
                drawn_steps.update(steps[1:])
            axis.set(xscale="log", title=f"{target} / {schedule}", xlabel="steps N (order from the previous N)",
                     ylabel="local order", ylim=(bottom, top))
            axis.set_xticks(sorted(drawn_steps), [f"{s:g}" for s in sorted(drawn_steps)])  # the step counts, plainly
            axis.xaxis.set_minor_locator(ticker.NullLocator())
    _legend(figure, colours, [], sorted(orders["dtype"].unique()))
    return _save(figure, path)


def pareto_plot(rows: pd.DataFrame, path: Path) -> Path | None:
    """Exact error against wall time per cell, the Pareto front drawn through the non-dominated cells."""
    ok = rows[(rows["status"] == "ok") & (rows["field"] == "analytic")].copy()
    if ok.empty or "wall_s" not in ok:
        return None
    ok["error"] = exact_error(ok)[0]
    ok = ok[ok["error"] > 0].dropna(subset=["error", "wall_s"])
    if ok.empty:
        return None
    colours, figure, panels = _styled_panels(ok)
    for axis, target, schedule, panel in panels:
        panel = panel[panel["dtype"] == "float64"]
        for _, row in panel.iterrows():
            axis.scatter(row["wall_s"], row["error"], color=colours[row["key"]], marker=MARKERS.get(row["grid"], "x"), s=14)
        front = pareto_front(panel, "error")
        if len(front):
            axis.step(front["wall_s"], front["error"], where="post", color="black", lw=0.8)
        axis.set(xscale="log", yscale="log", title=f"{target} / {schedule} (float64)", xlabel="wall time (s)",
                 ylabel="exact error")
    _legend(figure, colours, sorted(ok["grid"].unique()), [])
    return _save(figure, path)


def intermediate_histograms(path: Path, learned_field=None, times=(0.25, 0.5, 0.75, 1.0), n: int = 4000) -> Path:
    """Seed 000's style: histograms of the first coordinate of samples along the path (analytic field, rk4 with 64
    steps; the learned field when given), against the exact marginal density of p_t."""
    from fmcore import AnalyticField, get_schedule, get_target
    from fmcore.solvers import sample

    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    x0 = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    paths = {"analytic field": sample(AnalyticField(target, schedule), x0, "rk4", steps=64, return_trajectory=True)}
    if learned_field is not None:
        with torch.no_grad():
            paths["learned field"] = sample(learned_field, x0.float(), "rk4", steps=64, return_trajectory=True)
    figure, axes = plt.subplots(1, len(times), figsize=(3.6 * len(times), 3.0), squeeze=False)
    for axis, t in zip(axes[0], times, strict=True):
        index = round(t * 64)
        for (name, result), colour in zip(paths.items(), ("tab:blue", "tab:orange"), strict=False):
            values = result.trajectory[index][:, 0].double().numpy()
            axis.hist(values, bins=60, density=True, alpha=0.45, color=colour, label=name)
        marginal = target.marginal(t, schedule)
        grid = np.linspace(-4, 4, 400)
        variances = marginal.covariances[:, 0, 0].numpy()
        density = sum(w * np.exp(-(grid - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v)
                      for w, m, v in zip(marginal.weights.numpy(), marginal.means[:, 0].numpy(), variances, strict=True))
        axis.plot(grid, density, color="black", lw=1.2, label="exact p_t")
        axis.set(title=f"t = {t}", xlabel="x[0]")
    axes[0][0].legend(fontsize=8)
    figure.suptitle("seed000 on cond_ot: samples along the path vs the exact marginal", y=1.03)
    return _save(figure, path)


def throughput_plot(rows: pd.DataFrame, path: Path) -> Path | None:
    """Samples/s against batch size: a panel per target and device, a colour per method (and execution), a line
    style per dtype. Drawn only for runs with more than one batch size."""
    ok = performance_rows(rows)
    if ok.empty or ok["n"].nunique() < 2:
        return None
    ok["panel"] = ok["target"] + " · " + ok["device"]
    panels = sorted(ok["panel"].unique())
    colours = palette(ok["label"])
    columns = min(3, len(panels))
    lines_of_panels = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines_of_panels, columns, figsize=(4.6 * columns, 3.6 * lines_of_panels), squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        for (label, dtype), line in ok[ok["panel"] == panel].groupby(["label", "dtype"], sort=True):
            line = line.groupby("n", as_index=False)["samples_per_s"].median()
            axis.plot(line["n"], line["samples_per_s"], color=colours[label], ls=DASHES.get(dtype, ":"), marker="o", ms=3)
        axis.set_xscale("log", base=2)
        axis.set(yscale="log", title=panel, xlabel="batch size n", ylabel="samples / s")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, which="major", alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    _legend(figure, colours, [], sorted(ok["dtype"].unique()))
    return _save(figure, path)
