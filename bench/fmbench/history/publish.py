"""``fmbench publish HISTORY DIR``: the history as a static site — no server, it opens from disk.

Pages: ``index.html`` (every detected step, newest first, and the groups), one page per group (a target and its
schedule, and ``run`` for the run as a whole), ``commits.html`` (every commit measured, with its subject and
machines). On a group page, each metric is one chart: a line per cell and machine over the commits, in commit
order, its hover giving commit, subject, value and uncertainty; detected steps marked by a red ✕ at their first
commit, and listed under the chart with links to the commits each step spans. Series of CUDA cells are drawn in
charts of their own.

Charts are drawn by Plotly (a maintained library whose HTML output is self-contained: hover, zoom and pan with no
server and no network). Its script is written once into ``DIR/plotly.min.js`` and every page loads it from there,
so the site works offline and from a ``file://`` URL; this is the only dependency a published site has
(``pip install fmbench[publish]``).
"""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from pathlib import Path

from fmbench.history.series import Series, build_series, commit_order
from fmbench.history.steps import DEFAULT_FALSE_ALARM, Step, detect_steps

__all__ = ["publish"]

METRIC_ORDER = ("cells_failed", "median_wall_s", "median_wall_s_normalised", "w2_exact_law", "strong_error_exact", "strong_error",
                "gaussian_fit_w2", "w2_sliced", "mode_tv", "wall_s_normalised", "wall_s", "median_s", "nfe")
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:.25em .6em;
text-align:left;font-size:90%}th{background:#f4f4f4}code{font-size:95%}.worse{color:#b00}.better{color:#070}
nav a{margin-right:1em}"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "group"


def _page(title: str, body: str, charts: bool = False) -> str:
    script = '<script src="plotly.min.js"></script>' if charts else ""
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>{script}"
            f"<style>{STYLE}</style></head><body><nav><a href=index.html>fmbench history</a>"
            f"<a href=commits.html>commits</a></nav><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _commit_link(commit: str, commit_url: str | None) -> str:
    target = commit_url.replace("{commit}", commit) if commit_url else f"commits.html#c{commit}"
    return f'<a href="{html.escape(target)}"><code>{commit[:10]}</code></a>'


def _span_links(step: Step, order: list[str], commit_url: str | None) -> str:
    """Links to the commits a step spans: after its last point on the old level, up to its first on the new."""
    start, end = order.index(step.previous_commit), order.index(step.commit)
    return " ".join(_commit_link(commit, commit_url) for commit in order[start + 1:end + 1])


def _size(step: Step) -> str:
    if step.series.is_timing and step.before > 0:
        return f"×{step.after / step.before:.3g}"
    return f"{100 * step.relative:+.3g} %" if math.isfinite(step.relative) else "from 0"


def _short_label(series: Series) -> str:
    """The label without what its page already says: the group's target (with its parameters) and schedule."""
    target, _, schedule = series.group.partition(" · ")
    words = series.label.split(" ")
    if words and (words[0] == target or words[0].startswith(target + "(")):
        words = words[1:]
    if words and words[0] == schedule:
        words = words[1:]
    return " ".join(words) or series.label


def _device(series: Series) -> str:
    return "GPU" if series.device.startswith("cuda") else "CPU"


def _error_bars(series: Series) -> dict | None:
    spreads = [point.spread or 0.0 for point in series.points]
    if not any(spreads):
        return None
    if series.is_timing:
        up = [point.value * (math.exp(spread) - 1) for point, spread in zip(series.points, spreads, strict=True)]
        down = [point.value * (1 - math.exp(-spread)) for point, spread in zip(series.points, spreads, strict=True)]
        return dict(type="data", array=up, arrayminus=down, visible=True, thickness=1)
    return dict(type="data", array=spreads, visible=True, thickness=1)


def _chart(title: str, members: list[Series], steps: dict, order: list[str], machines: int) -> str:
    import plotly.graph_objects as go

    figure = go.Figure()
    for series in members:
        name = _short_label(series) + (f" · {series.key.machine}" if machines > 1 else "")
        unit = "log-units" if series.is_timing else ""
        hover = [f"<b>{point.commit[:10]}</b> {html.escape(point.subject[:70])}<br>{html.escape(name)}<br>"
                 f"value {point.value:.6g}" + (f" ± {point.spread:.3g} {unit}" if point.spread else
                                               " (exact)" if point.spread == 0 else " (spread not measured)")
                 + (f"<br>{point.runs} runs" if point.runs > 1 else "")
                 + (f"<br>load average {point.load:.2f}" if point.load is not None else "") for point in series.points]
        figure.add_trace(go.Scatter(x=[point.commit[:10] for point in series.points], y=series.values,
                                    mode="lines+markers", name=name, hovertext=hover, hoverinfo="text",
                                    error_y=_error_bars(series), marker=dict(size=5)))
        marked = steps.get(series.key, [])
        if marked:
            figure.add_trace(go.Scatter(
                x=[step.commit[:10] for step in marked], y=[step.after for step in marked], mode="markers",
                marker=dict(symbol="x", size=13, color="#d00", line=dict(width=1)), showlegend=False, hoverinfo="text",
                hovertext=[f"<b>step at {step.commit[:10]}</b><br>{html.escape(name)}<br>{step.before:.6g} → "
                           f"{step.after:.6g} ({_size(step)})" for step in marked]))
    values = [value for series in members for value in series.values]
    logarithmic = min(values) > 0 and max(values) > 10 * min(values)  # a log axis only over a decade or more
    figure.update_layout(title=title, height=460, margin=dict(l=60, r=20, t=50, b=60), hovermode="closest",
                         legend=dict(font=dict(size=10)), template="plotly_white")
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=[commit[:10] for commit in order],
                        title="commit (oldest first)")
    figure.update_yaxes(type="log" if logarithmic else "linear", title=title.split(" ")[0])
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _steps_table(found: list[Step], order: list[str], commit_url: str | None, with_group: bool = False) -> str:
    if not found:
        return "<p>No steps detected.</p>"
    rows = []
    for step in found:
        group = (f"<td><a href='{_slug(step.series.group)}.html'>{html.escape(step.series.group)}</a></td>"
                 if with_group else "")
        kind = "beyond CI tolerance" if step.kind == "tolerance" else f"fit, z = {step.z:.1f}"
        chart = f"{_slug(step.series.group)}.html#{_slug(step.series.key.metric + '-' + _device(step.series))}"
        rows.append(f"<tr>{group}<td><a href='{chart}'>{html.escape(step.series.key.metric)}</a></td>"
                    f"<td>{html.escape(step.series.label)}</td><td>{step.before:.6g} → {step.after:.6g}</td>"
                    f"<td>{_size(step)}</td><td>{kind}</td>"
                    f"<td>{_span_links(step, order, commit_url)}</td><td>{html.escape(step.series.key.machine)}</td></tr>")
    head = "<th>group</th>" if with_group else ""
    return (f"<table><tr>{head}<th>metric</th><th>cell</th><th>level</th><th>size</th><th>found by</th>"
            f"<th>commits spanned</th><th>machine</th></tr>{''.join(rows)}</table>")


def publish(records: list[dict], directory: str | Path, commit_url: str | None = None,
            false_alarm: float = DEFAULT_FALSE_ALARM) -> list[Path]:
    """Write the site of ``records`` into ``directory``; the pages written."""
    try:
        import plotly.offline
    except ImportError as error:
        raise ValueError("fmbench publish draws with Plotly: pip install 'fmbench[publish]' (or plotly)") from error
    if not records:
        raise ValueError("the history holds no records: nothing to publish")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plotly.min.js").write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
    ordered = commit_order(records)
    order = list(dict.fromkeys(record.get("commit") for record in ordered))
    all_series = build_series(records)
    steps = {series.key: detect_steps(series, false_alarm) for series in all_series}
    machines = len({series.key.machine for series in all_series})
    groups: dict[str, list[Series]] = defaultdict(list)
    for series in all_series:
        groups[series.group].append(series)
    pages = []
    for group, members in sorted(groups.items(), key=lambda item: (item[0] != "run", item[0])):
        body = []
        by_panel: dict[tuple[str, str], list[Series]] = defaultdict(list)
        for series in members:
            by_panel[(series.key.metric, _device(series))].append(series)
        rank = {metric: position for position, metric in enumerate(METRIC_ORDER)}
        for (metric, device) in sorted(by_panel, key=lambda key: (key[1] == "GPU", rank.get(key[0], 99), key[0])):
            panel = sorted(by_panel[(metric, device)], key=lambda series: (series.label, series.key.machine))
            found = [step for series in panel for step in steps[series.key]]
            body.append(f"<h2 id='{_slug(metric + '-' + device)}'>{html.escape(metric)} ({device})</h2>")
            body.append(_chart(f"{metric} — {group} ({device})", panel, steps, order, machines))
            body.append(_steps_table(found, order, commit_url))
        path = directory / f"{_slug(group)}.html"
        path.write_text(_page(f"{group}", "".join(body), charts=True), encoding="utf-8")
        pages.append(path)
    found = sorted((step for series_steps in steps.values() for step in series_steps),
                   key=lambda step: (-order.index(step.commit), step.series.group, step.series.key.metric))
    group_rows = "".join(
        f"<tr><td><a href='{_slug(group)}.html'>{html.escape(group)}</a></td><td>{len(members)}</td>"
        f"<td>{sum(len(steps[series.key]) for series in members)}</td></tr>"
        for group, members in sorted(groups.items(), key=lambda item: (item[0] != "run", item[0])))
    summary = (f"<p>{len(records)} runs of {len({record.get('preset') for record in records})} preset(s) at "
               f"{len(order)} commits on {machines} machine(s): {len(all_series)} series, {len(found)} steps "
               f"(exact series: beyond the CI tolerance of their class; noisy ones: a weighted step fit with "
               f"{100 * false_alarm:g} % false alarms per series on pure noise).</p>")
    index = (summary + "<h2>Steps, newest first</h2>" + _steps_table(found, order, commit_url, with_group=True)
             + f"<h2>Groups</h2><table><tr><th>group</th><th>series</th><th>steps</th></tr>{group_rows}</table>")
    pages.append(directory / "index.html")
    pages[-1].write_text(_page("fmbench history", index), encoding="utf-8")
    commit_rows = []
    for commit in order:
        runs = [record for record in ordered if record.get("commit") == commit]
        shown = _commit_link(commit, commit_url) if commit_url else f"<code>{commit[:10]}</code>"
        commit_rows.append(f"<tr id='c{commit}'><td>{shown}</td><td>{html.escape(runs[0].get('subject', ''))}</td>"
                           f"<td>{html.escape(', '.join(sorted({str(run.get('machine')) for run in runs})))}</td></tr>")
    pages.append(directory / "commits.html")
    pages[-1].write_text(_page("Commits measured", "<table><tr><th>commit</th><th>subject</th><th>machines</th></tr>"
                               + "".join(commit_rows) + "</table>"), encoding="utf-8")
    return pages
