"""The report's figures, drawn with one fixed style for the whole report.

* one colour per method, fixed by its place in the method registry (:func:`method_colour`), so a method has the same
  colour in every figure of every report; its variants (diffusion, field) are shades of it;
* one marker per time grid (so ``karras`` and ``logsnr`` stay apart where their curves overlap), one line style per
  dtype, panels in sorted order: the same rows always give the same figure.
"""

from __future__ import annotations

import itertools
import math
import textwrap
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

from fmbench.analysis import (  # noqa: E402
    has_timed_repeats,
    labels,
    method_of,
    panel_metric,
    pareto_front,
    performance_rows,
)
from fmbench.files import atomic_writer  # noqa: E402
from fmcore.solvers import METHODS  # noqa: E402

MARKERS = {"uniform": "o", "karras": "s", "logsnr": "^", "cosine": "D"}
DASHES = {"float64": "-", "float32": "--"}


def colour_key(frame: pd.DataFrame) -> pd.Series:
    """The part of a label that gets a colour: the label without its grid (the grid is the marker)."""
    grid = frame.get("grid", pd.Series("uniform", index=frame.index)).fillna("uniform")
    label = labels(frame)
    return pd.Series([lab.replace(f"[{g}]", "") for lab, g in zip(label, grid, strict=True)], index=frame.index)


COLOUR_DISTANCE = 15.0
"""Two method colours differ by at least this CIELAB ΔE (:func:`colour_difference`): closer ones are hard to tell
apart. Euclidean RGB is not enough: midpoint's orange and Dark2's darker orange are 0.20 apart in RGB, ΔE 14."""


def cielab(colour) -> tuple[float, float, float]:
    r"""CIE L*a*b* (D65 white) of an sRGB colour with channels in [0, 1]: linearise each channel
    (:math:`c/12.92` up to 0.04045, else :math:`((c + 0.055)/1.055)^{2.4}`), map to XYZ with the sRGB matrix, then
    :math:`L^* = 116f(Y/Y_n) - 16`, :math:`a^* = 500(f(X/X_n) - f(Y/Y_n))`, :math:`b^* = 200(f(Y/Y_n) - f(Z/Z_n))`
    with :math:`f(t) = t^{1/3}` above :math:`(6/29)^3`, else :math:`t/(3(6/29)^2) + 4/29`."""
    linear = [value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4 for value in colour[:3]]
    to_xyz = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
    white = (0.95047, 1.0, 1.08883)
    x, y, z = (sum(weight * value for weight, value in zip(row, linear, strict=True)) / w
               for row, w in zip(to_xyz, white, strict=True))

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def colour_difference(first, second) -> float:
    """CIE76 ΔE: the Euclidean distance of two colours in CIELAB (about 2.3 is just noticeable)."""
    return math.dist(cielab(first), cielab(second))


def _distinct(candidates) -> list[tuple]:
    """The candidates in order, without greys and without any within :data:`COLOUR_DISTANCE` of an earlier one."""
    kept: list[tuple] = []
    for colour in candidates:
        if max(colour) - min(colour) > 0.15 and all(
                colour_difference(colour, other) > COLOUR_DISTANCE for other in kept):
            kept.append(tuple(colour))
    return kept


COLOURS = _distinct(sns.color_palette("tab10", 10) + sns.color_palette("tab20", 20)[1::2]
                    + sns.color_palette("Dark2", 8) + sns.color_palette("Set1", 9) + sns.color_palette("tab20b", 20)
                    + sns.color_palette("tab20c", 20) + sns.color_palette("Set2", 8) + sns.color_palette("Paired", 12))
"""The qualitative colours a method's colour is taken from, by its position in the method registry: tab10's nine
hues for the first nine methods, their light tints for the next eight, then other palettes' colours that differ from
all before them (48 in all, one per method registered today; tab10's and Dark2's greys once gave dopri5 and
euler_ancestral the same grey)."""
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


DTYPE_AGREEMENT = 0.01
"""A float32 line is drawn only where it differs from the float64 line of the same method and grid by more than this
(relative, at some NFE): elsewhere it would hide under it and double the legend for nothing."""


def _lines_that_differ(panel: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``panel``'s rows without the float32 lines that agree with their float64 line to :data:`DTYPE_AGREEMENT` at
    every NFE both ran, and how many lines were left out."""
    keep, dropped = [], 0
    for _, line in panel.groupby(["key", "grid"], sort=True):
        means = line.groupby(["dtype", "nfe"])["y"].mean()
        if {"float32", "float64"} <= set(line["dtype"]):
            both = pd.concat([means["float32"], means["float64"]], axis=1, join="inner")
            if len(both) and float((both.iloc[:, 0] / both.iloc[:, 1] - 1).abs().max()) <= DTYPE_AGREEMENT:
                line, dropped = line[line["dtype"] != "float32"], dropped + 1
        keep.append(line)
    return (pd.concat(keep) if keep else panel), dropped


def _panel_values(panel: pd.DataFrame, metric: str | None) -> tuple[pd.DataFrame, str | None, int]:
    """The panel's rows with the value ``y`` it draws: ``metric``, or the one exact metric of the panel
    (:func:`~fmbench.analysis.panel_metric`); and how many rows lack it."""
    name = metric if metric is not None else panel_metric(panel)
    if name is None or name not in panel:
        return panel.iloc[:0].assign(y=np.nan), name, len(panel)
    drawn = panel.assign(y=panel[name])
    drawn = drawn[drawn["y"] > 0].dropna(subset=["y", "nfe"])
    return drawn, name, len(panel) - len(drawn)


def error_vs_nfe(rows: pd.DataFrame, path: Path, metric: str | None = None, floor: str | None = None) -> Path | None:
    """log-log error vs NFE (the mean over seeds), one metric per panel: ``metric``, or each panel's exact metric
    (:func:`~fmbench.analysis.panel_metric`), named on its axis. float32 is drawn only where it differs from float64
    (:data:`DTYPE_AGREEMENT`). A ``floor`` column is drawn as a dotted line."""
    ok = rows[rows["status"] == "ok"]
    if ok.empty or "nfe" not in ok or (metric is not None and (metric not in ok or not (ok[metric] > 0).any())):
        return None
    ok = ok.dropna(subset=["nfe"]).copy()
    colours, figure, panels = _styled_panels(ok)
    drawn_dtypes, left_out = set(), 0
    for axis, target, schedule, panel in panels:
        panel, name, missing = _panel_values(panel, metric)
        panel, dropped = _lines_that_differ(panel)
        left_out += dropped
        for (key, grid, dtype), line in panel.groupby(["key", "grid", "dtype"], sort=True):
            line = line.groupby("nfe", as_index=False)["y"].mean()  # over seeds: their mean, never the luckiest
            axis.plot(line["nfe"], line["y"], color=colours[key], marker=MARKERS.get(grid, "x"),
                      ls=DASHES.get(dtype, ":"), ms=4, lw=1.2)
            drawn_dtypes.add(dtype)
        if floor and floor in panel and panel[floor].notna().any():
            level = float(panel[floor].median())
            axis.axhline(level, color="black", lw=1.0, ls=":")  # a line, not a band: the data keep the axis
            axis.annotate("floor (exact samples)", (0.02, level), xycoords=("axes fraction", "data"), fontsize=7,
                          va="bottom", color="black")
        note = f" ({missing} cells without it)" if missing and metric is None else ""
        axis.set(xscale="log", yscale="log", title=f"{target} / {schedule}{note}", xlabel="NFE",
                 ylabel=name or "no exact metric")
        _nfe_ticks(axis)
    _legend(figure, colours, sorted(ok["grid"].unique()), sorted(drawn_dtypes))
    shown = f" float32 is drawn only where it differs from float64 by > {DTYPE_AGREEMENT:.0%}" + (
        f" ({left_out} float32 line(s) agree and are left out)." if left_out else ".")
    title = (f"{metric} vs NFE." if metric is not None else
             "Exact error vs NFE, one metric per panel (its axis): w2_exact_law, the W2 of the exact output law "
             "(Gaussian targets), or strong_error, the RMS distance to the exact flow / a float64 reference from the "
             "same noise.")
    _caption(figure, title + shown)
    return _save(figure, path)


def _nfe_ticks(axis) -> None:
    """Powers of two as plain numbers on a log NFE axis (NFEs between them, such as an adaptive solve's, need no label
    of their own), and no minor labels on either axis."""
    axis.xaxis.set_major_locator(ticker.LogLocator(base=2))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_locator(ticker.NullLocator())
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())  # decades only on the error axis: minor labels collide


def _caption(figure, text: str) -> None:
    """``text`` above the panels, wrapped to the figure's width."""
    width = max(40, int(figure.get_figwidth() * 14))
    figure.suptitle(textwrap.fill(text, width=width), fontsize=8)


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
    """Work-precision: each float64 analytic cell's exact error (one metric per panel, named on its axis) against its
    wall time — the median of its timed repeats, with their range as an error bar where it has repeats — and the
    Pareto front through the non-dominated cells."""
    ok = rows[(rows["status"] == "ok") & (rows["field"] == "analytic") & (rows["dtype"] == "float64")].copy()
    if ok.empty or "wall_s" not in ok:
        return None
    ok = ok.dropna(subset=["wall_s"])
    if ok.empty:
        return None
    colours, figure, panels = _styled_panels(ok)
    ranges = has_timed_repeats(ok)
    for axis, target, schedule, panel in panels:
        panel, name, missing = _panel_values(panel, None)
        for _, row in panel.iterrows():
            colour, marker = colours[row["key"]], MARKERS.get(row["grid"], "x")
            if ranges and pd.notna(row.get("wall_s_max")):
                spread = [[row["wall_s"] - row["wall_s_min"]], [row["wall_s_max"] - row["wall_s"]]]
                axis.errorbar(row["wall_s"], row["y"], xerr=spread, color=colour, marker=marker, ms=4, lw=0.8,
                              capsize=1.5)
            else:
                axis.scatter(row["wall_s"], row["y"], color=colour, marker=marker, s=14)
        front = pareto_front(panel, "y")
        if len(front):
            axis.step(front["wall_s"], front["y"], where="post", color="black", lw=0.8)
        note = f", {missing} cells without it" if missing else ""
        axis.set(xscale="log", yscale="log", title=f"{target} / {schedule} (float64{note})",
                 xlabel="wall time (s)" + (": median, range of repeats" if ranges else ": single runs"),
                 ylabel=name or "no exact metric")
        axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 3.0)))  # 1-3 steps, plain numbers
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    _legend(figure, colours, sorted(ok["grid"].unique()), [])
    _caption(figure, "Work-precision: each cell's exact error against its wall time ("
             + ("the median of its timed repeats; the bar spans their range" if ranges else
                "single runs: no repeats, so no spread to show") + "); the black steps are the Pareto front, the "
             "cells no other cell beats in both time and error.")
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
