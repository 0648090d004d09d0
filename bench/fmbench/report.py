"""Reports from a sweep's rows: Markdown tables and seaborn figures (``docs/design.md``, "Reports").

* error vs NFE for every method (strong error for ODE methods, moment W2 for every method);
* the fitted convergence order of each fixed-step method (slope of log strong error against log step
  size over its largest step counts) next to the order of its tableau;
* the Pareto front of error against wall time;
* throughput per device and dtype;
* failures, with their errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from fmbench.store import export_parquet, load_rows  # noqa: E402
from fmcore.solvers import TABLEAUS  # noqa: E402

GROUP = ["target", "schedule", "dtype", "device", "field"]


def _label(frame: pd.DataFrame) -> pd.Series:
    """method, plus grid / diffusion / tolerance where they distinguish rows."""
    label = frame["method"].astype(str)
    grid = frame.get("grid", pd.Series("uniform", index=frame.index)).fillna("uniform")
    label = label.where(grid == "uniform", label + "[" + grid + "]")
    diffusion = frame.get("diffusion", pd.Series(None, index=frame.index))
    parameters = frame.get("diffusion_params", pd.Series("{}", index=frame.index)).fillna("{}")
    described = diffusion.astype(str) + parameters.where(parameters == "{}", parameters).replace("{}", "")
    label = label.where(diffusion.isna(), label + "[" + described + "]")
    field = frame.get("field", pd.Series("analytic", index=frame.index)).fillna("analytic")
    return label.where(field == "analytic", label + " (" + field + ")")


def convergence_orders(rows: pd.DataFrame, points: int = 3) -> pd.DataFrame:
    """Slope of log(strong error) vs log(1/steps) over the ``points`` largest step counts, uniform grids,
    analytic fields (for a learned field the error against the analytic reference levels off at the model's
    own error, which the per-configuration tables show)."""
    if "strong_error" not in rows or rows.empty:
        return pd.DataFrame()
    fixed = rows[(rows["status"] == "ok") & rows["method"].isin(list(TABLEAUS)) & (rows["grid"] == "uniform")
                 & (rows["field"] == "analytic")]  # a learned field's error plateaus at the model error
    fixed = fixed.dropna(subset=["strong_error"])
    records = []
    for keys, group in fixed.groupby(GROUP + ["method"]):
        group = group.sort_values("steps").tail(points)
        if len(group) < 2 or (group["strong_error"] <= 0).any():
            continue
        slope = np.polyfit(np.log(1.0 / group["steps"]), np.log(group["strong_error"]), 1)[0]
        records.append({**dict(zip(GROUP + ["method"], keys, strict=True)), "fitted_order": slope,
                        "tableau_order": TABLEAUS[keys[-1]].order, "steps": list(group["steps"].astype(int))})
    return pd.DataFrame(records)


def pareto_front(frame: pd.DataFrame, error: str, cost: str = "wall_s") -> pd.DataFrame:
    """Rows not dominated in (cost, error): no other row is at least as cheap and strictly more accurate."""
    ordered = frame.dropna(subset=[error, cost]).sort_values([cost, error])
    front, best = [], np.inf
    for _, row in ordered.iterrows():
        if row[error] < best:
            front.append(row)
            best = row[error]
    return pd.DataFrame(front)


def _markdown(frame: pd.DataFrame, floatfmt: str = ".3g") -> str:
    if frame.empty:
        return "_none_"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    lines = [header, "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_vs_nfe_figure(rows: pd.DataFrame, error: str, path: Path) -> Path | None:
    if error not in rows:
        return None
    ok = rows[(rows["status"] == "ok")].dropna(subset=[error]).copy()
    ok = ok[ok[error] > 0]
    if ok.empty:
        return None
    ok["method"] = _label(ok)
    grid = sns.relplot(data=ok, x="nfe", y=error, hue="method", style="dtype", row="target", col="schedule",
                       kind="line", marker="o", height=3.2, aspect=1.2, facet_kws={"sharey": False})
    grid.set(xscale="log", yscale="log")
    grid.figure.suptitle(f"{error} vs NFE", y=1.02)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def write_report(out: str | Path) -> Path:
    """Read the run's rows and write ``<out>/report.md``, its figures and the ``rows.parquet`` export.

    Works on any state of a run: partial, interrupted, or one whose every cell failed."""
    out = Path(out)
    rows = load_rows(out)
    if (out / "rows.sqlite").exists():
        export_parquet(out)
    if rows.empty:
        rows = pd.DataFrame({"status": pd.Series(dtype=str)})
    environment = json.loads((out / "environment.json").read_text()) if (out / "environment.json").exists() else {}
    ok = rows[rows["status"] == "ok"].copy()
    ok["label"] = _label(ok) if len(ok) else pd.Series(dtype=str)
    lines = [f"# Sweep report: {out.name}", ""]
    if environment:
        packages = ", ".join(f"{k} {v}" for k, v in environment.get("packages", {}).items() if v)
        lines += [f"Commit `{environment.get('git_commit')}`{' (dirty)' if environment.get('git_dirty') else ''}; "
                  f"{environment.get('processor')}, {environment.get('cpu_count')} CPUs, torch threads per cell "
                  f"{environment.get('cell_threads', environment.get('torch_threads'))}, "
                  f"{environment.get('executor', 'in-process')}, load average at start {environment.get('load_average')}; "
                  f"CUDA: {environment.get('cuda_devices') or 'none'}; "
                  f"{packages}.", ""]
    failed = rows[rows["status"] == "failed"]
    skipped = rows[rows["status"] == "skipped"]
    lines += [f"{len(rows)} cells: {len(ok)} ok, {len(failed)} failed, {len(skipped)} skipped.", ""]

    orders = convergence_orders(rows)
    lines += ["## Fitted convergence orders (strong error vs step size, uniform grid)", "",
              _markdown(orders[GROUP + ["method", "tableau_order", "fitted_order", "steps"]] if len(orders) else orders), ""]

    for keys, group in ok.groupby(GROUP):
        title = ", ".join(f"{k}={v}" for k, v in zip(GROUP, keys, strict=True))
        columns = [c for c in ["label", "steps", "rtol", "nfe", "strong_error", "gaussian_fit_w2", "w2_sliced",
                               "w2_sliced_floor", "mode_tv", "wall_s"] if c in group and group[c].notna().any()]
        table = group.sort_values(["label", "nfe"])[columns]
        lines += [f"## {title}", "", _markdown(table), ""]
        error = "strong_error" if "strong_error" in group and group["strong_error"].notna().any() else "gaussian_fit_w2"
        front = pareto_front(group, error)
        if len(front):
            points = [f"{r['label']}@{int(r['nfe'])} NFE ({r[error]:.2g} in {r['wall_s'] * 1e3:.1f} ms)"
                      for _, r in front.iterrows()]
            lines += [f"Pareto front ({error} vs wall time): " + ", ".join(points), ""]

    if len(ok):
        throughput = ok.groupby(["device", "dtype", "method"], as_index=False)["nfe_per_s"].median()
        lines += ["## Throughput (median NFE per second over cells)", "", _markdown(throughput), ""]
    for title, frame in (("Failed cells", failed), ("Skipped cells", skipped)):
        if len(frame):
            columns = [c for c in ["target", "schedule", "method", "steps", "device", "dtype", "error"] if c in frame]
            lines += [f"## {title}", "", _markdown(frame[columns]), ""]

    figures = []
    for error in ("strong_error", "gaussian_fit_w2"):
        if error in rows:
            figure = error_vs_nfe_figure(rows, error, out / f"{error}_vs_nfe.png")
            if figure is not None:
                figures.append(figure)
    lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
