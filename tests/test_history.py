"""The history of runs across commits: the store, records of real runs, series, step detection (exact and noisy,
against brute force and at its stated false-alarm rate), bisection, backfill in git worktrees, the dashboard files
and the command line."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fmbench.cli import main
from fmbench.compare import TOLERANCES
from fmbench.history.backfill import backfill, commits_in
from fmbench.history.bisect import narrow
from fmbench.history.record import benchmark_record, run_record
from fmbench.history.series import RUN_CELL, build_series
from fmbench.history.steps import _least_costs, detect_all, detect_steps, fit_levels, penalty, tolerance_steps, weighted_steps
from fmbench.history.store import HistoryWarning, append_record, read_history

from tests.history_helpers import synthetic_records

ROOT = Path(__file__).resolve().parents[1]


def _series(records, cell, metric):
    return next(one for one in build_series(records, metric=metric) if one.key.cell == cell)


# ---------------------------------------------------------------------- the store and the records


def test_store_appends_one_line_per_record_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "history" / "ci.jsonl"
    first, second = synthetic_records(commits=2)
    append_record(path, first)
    with open(path, "a") as handle:
        handle.write('{"cut short')  # a write the machine did not finish
    append_record(path, second)
    assert path.read_text().count("\n") == 3
    with pytest.warns(HistoryWarning, match="ci.jsonl:2 is not a whole record"):
        records = read_history(path)
    assert [record["commit"] for record in records] == [first["commit"], second["commit"]]


def test_store_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_history(tmp_path / "none.jsonl")
    with pytest.raises(ValueError, match="must be a history record"):
        append_record(tmp_path / "h.jsonl", {"commit": "x"})


def test_record_of_the_ci_baseline():
    record = run_record(ROOT / "results" / "baselines" / "ci", preset="ci", repository=ROOT)
    assert record["preset"] == "ci" and len(record["cells"]) == 400
    assert record["commit"] == json.loads((ROOT / "results/baselines/ci/environment.json").read_text())["git_commit"]
    cell = record["cells"]["c06a503c0fe8dcdd"]
    assert cell["group"] == "gaussian · cond_ot" and cell["status"] == "ok"
    value, spread, metric_class = cell["metrics"]["w2_exact_law"]
    assert (spread, metric_class) == (0.0, "float64") and value == pytest.approx(0.19085835989419797, rel=1e-11)
    assert cell["metrics"]["gaussian_fit_w2"][1] == pytest.approx(0.09185524528623189, rel=1e-11)  # its floor
    assert cell["metrics"]["wall_s_normalised"][1:] == [None, "timing"]  # a baseline keeps no repeats' range


def test_record_timing_spread_is_half_the_log_range_of_the_repeats(tmp_path):
    import pandas as pd

    rows = pd.read_csv(ROOT / "results/baselines/ci/rows.csv")
    rows["wall_s_min"], rows["wall_s_max"] = rows["wall_s"] * 0.9, rows["wall_s"] * 1.2
    rows.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "environment.json").write_text((ROOT / "results/baselines/ci/environment.json").read_text())
    cell = run_record(tmp_path, preset="ci")["cells"]["c06a503c0fe8dcdd"]
    assert cell["metrics"]["wall_s_normalised"][1] == pytest.approx(0.5 * math.log(1.2 / 0.9))


def test_record_of_a_stored_pytest_benchmark_run():
    path = next((ROOT / "results" / "benchmarks").rglob("*.json"))
    data = json.loads(path.read_text())
    record = benchmark_record(path)
    assert record["kind"] == "pytest-benchmark" and len(record["cells"]) == len(data["benchmarks"])
    first = data["benchmarks"][0]
    assert record["cells"][first["fullname"]]["metrics"]["median_s"][0] == pytest.approx(first["stats"]["median"])


# ---------------------------------------------------------------------- series


def test_series_follow_commit_order_and_merge_reruns():
    records = synthetic_records(commits=5)
    rerun = json.loads(json.dumps(records[2]))
    rerun["cells"]["timed"]["metrics"]["wall_s_normalised"][0] *= 1.1
    shuffled = [records[4], records[0], rerun, records[3], records[1], records[2]]
    series = _series(shuffled, "timed", "wall_s_normalised")
    assert series.commits == [record["commit"] for record in records]
    merged = series.points[2]
    assert merged.runs == 2 and merged.spread == pytest.approx(0.5 * math.log(1.1))
    run = _series(records, RUN_CELL, "cells_failed")
    assert run.values == [0.0] * 5 and run.metric_class == "nfe"


# ---------------------------------------------------------------------- exact series


def test_tolerance_steps_find_a_move_beyond_the_class_tolerance_and_a_drift_once_it_adds_up():
    tolerance = TOLERANCES["float64"]  # 1e-9 relative + 1e-12
    assert tolerance_steps([1.0, 1.0 + 1e-12, 1.0, 1.1, 1.1], tolerance) == [(3, 1.0)]
    drift = [1.0 + 3e-10 * index for index in range(10)]  # each move within tolerance; 1e-9 passed at index 4
    assert tolerance_steps(drift, tolerance) == [(4, 1.0), (8, drift[4])]


def test_synthetic_history_steps_at_the_known_commit():
    records = synthetic_records(commits=20, step_at=12)
    found = detect_all(build_series(records))
    by_series = {(step.series.key.cell, step.series.key.metric): step for step in found}
    assert set(by_series) == {("exact", "w2_exact_law"), ("timed", "wall_s_normalised"),
                              (RUN_CELL, "median_wall_s_normalised")}
    exact, timed = by_series[("exact", "w2_exact_law")], by_series[("timed", "wall_s_normalised")]
    assert exact.commit == records[12]["commit"] and exact.previous_commit == records[11]["commit"]
    assert (exact.before, exact.after, exact.kind) == (0.25, 0.2, "tolerance")
    assert timed.commit == records[12]["commit"] and timed.kind == "fit"
    assert timed.after / timed.before == pytest.approx(2.0, rel=0.05)


# ---------------------------------------------------------------------- the weighted fit against brute force


def _brute_force_levels(values, sigmas, gamma):
    """Every partition of the points into levels, each scored by the weighted Potts functional."""
    n, weights = len(values), 1 / sigmas**2
    best = (math.inf, None)
    for count in range(n):
        for starts in itertools.combinations(range(1, n), count):
            bounds = [0, *starts, n]
            cost = gamma * count
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                mean = np.sum(weights[a:b] * values[a:b]) / np.sum(weights[a:b])
                cost += np.sum(weights[a:b] * (values[a:b] - mean) ** 2)
            best = min(best, (cost, list(starts)), key=lambda item: item[0])
    return best[1]


@pytest.mark.parametrize("seed", range(6))
def test_fit_levels_is_the_exact_minimiser(seed):
    generator = np.random.default_rng(seed)
    values = generator.standard_normal(8) + np.repeat([0.0, 3.0, 1.0], [3, 3, 2])
    sigmas = generator.uniform(0.5, 1.5, 8)
    for gamma in (0.5, 4.0, 20.0):
        assert fit_levels(values, sigmas, gamma) == _brute_force_levels(values, sigmas, gamma)


def test_least_costs_equal_brute_force():
    generator = np.random.default_rng(3)
    values = generator.standard_normal((4, 7))
    least = _least_costs(values, 3)
    for row, costs in zip(values, least, strict=True):
        for steps in range(4):
            brute = min(sum(np.sum((row[a:b] - row[a:b].mean()) ** 2) for a, b in zip((0, *cut), (*cut, 7), strict=True))
                        for cut in itertools.combinations(range(1, 7), steps))
            assert costs[steps] == pytest.approx(brute, rel=1e-10, abs=1e-12)


def test_a_known_step_is_found_at_its_commit_among_noisy_points():
    generator = np.random.default_rng(7)
    sigmas = generator.uniform(0.5, 2.0, 40)
    values = generator.standard_normal(40) * sigmas + np.where(np.arange(40) >= 23, 8.0, 0.0)
    found = weighted_steps(list(values), list(sigmas), false_alarm=0.01)
    assert [index for index, *_ in found] == [23]
    index, before, after, z = found[0]
    assert after - before == pytest.approx(8.0, abs=1.0) and z > 5


def test_a_step_within_the_noise_is_not_reported():
    generator = np.random.default_rng(8)
    values = generator.standard_normal(30) + np.where(np.arange(30) >= 15, 0.3, 0.0)
    assert weighted_steps(list(values), [1.0] * 30, false_alarm=0.01) == []


@pytest.mark.parametrize(("length", "heteroscedastic"), [(12, False), (30, False), (30, True)])
def test_false_alarm_rate_on_pure_noise(length, heteroscedastic):
    """On pure Gaussian noise a step is reported in at most the stated fraction of series: 3 000 series at 1 %,
    bound = rate + 3 binomial standard errors (0.0155). The heteroscedastic case gives each point its own spread
    (0.5–2×), which the fit reads as σ_i = max(s_i, τ̂)."""
    rate, trials = 0.01, 3000
    generator = np.random.default_rng(length + heteroscedastic)
    alarms = 0
    for _ in range(trials):
        sigmas = generator.uniform(0.5, 2.0, length) if heteroscedastic else np.ones(length)
        values = generator.standard_normal(length) * sigmas * 3.7 + 11.0  # any scale and offset
        spreads = list(sigmas * 3.7) if heteroscedastic else [None] * length
        alarms += bool(weighted_steps(list(values), spreads, false_alarm=rate))
    assert alarms / trials <= rate + 3 * math.sqrt(rate * (1 - rate) / trials)


def test_false_alarm_rate_of_a_series_longer_than_the_calibrated_length():
    """Beyond 64 points the penalty is extrapolated on the high side: on 600 pure-noise series of 100 points, at
    most the stated 1 % + 3 standard errors (0.022) show a step."""
    rate, trials, generator = 0.01, 600, np.random.default_rng(100)
    alarms = sum(bool(weighted_steps(list(generator.standard_normal(100)), [None] * 100, false_alarm=rate))
                 for _ in range(trials))
    assert alarms / trials <= rate + 3 * math.sqrt(rate * (1 - rate) / trials)


def test_penalty_is_seeded_and_grows_as_the_rate_falls():
    assert penalty(20, 0.01) == penalty(20, 0.01)
    assert penalty(20, 0.001) > penalty(20, 0.01) > 0
    assert math.isinf(penalty(2, 0.01))


def test_sampled_metric_within_its_floor_is_no_step():
    records = synthetic_records(commits=10)
    for index, record in enumerate(records):
        value = 0.17 if index < 5 else 0.171  # moved by 1/90 of its floor
        record["cells"]["exact"]["metrics"]["gaussian_fit_w2"] = [value, 0.09, "sampled"]
    assert detect_steps(_series(records, "exact", "gaussian_fit_w2")) == []
    for record in records[5:]:
        record["cells"]["exact"]["metrics"]["gaussian_fit_w2"][0] = 1.5  # 15 floors away
    assert [step.index for step in detect_steps(_series(records, "exact", "gaussian_fit_w2"))] == [5]


# ---------------------------------------------------------------------- bisection and backfill


@pytest.mark.parametrize("first_new", range(0, 9))
def test_narrow_finds_the_first_commit_on_the_new_level(first_new):
    commits = [f"k{index}" for index in range(9)]
    measured = []

    def measure(commit):
        measured.append(commit)
        return 2.0 if commits.index(commit) >= first_new else 1.0

    index, runs = narrow(commits, measure, lambda value: value < 1.5)
    assert index == first_new and len(runs) <= math.ceil(math.log2(len(commits)))


def _git(repository, *arguments):
    subprocess.run(["git", *arguments], cwd=repository, check=True, capture_output=True)


def _make_repository(path: Path, commits: int) -> Path:
    """A git repository of ``commits`` commits, the k-th writing k into value.txt."""
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    for index in range(commits):
        (path / "value.txt").write_text(str(index))
        _git(path, "add", "value.txt")
        _git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"commit {index}")
    return path


@pytest.fixture
def repository(tmp_path):
    return _make_repository(tmp_path / "repo", 4)


def test_backfill_runs_each_commit_in_its_worktree_resumes_and_a_failure_costs_one_commit(repository, tmp_path):
    commits = commits_in("-4", repository)
    assert len(commits) == 4
    assert commits_in(f"{commits[0]}..{commits[-1]}", repository) == commits[1:]
    seen = []

    def runner(repo, commit, preset, work, timeout_s):
        worktree = Path(work) / "wt" / commit
        _git(repo, "worktree", "add", "--detach", str(worktree), commit)
        value = (worktree / "value.txt").read_text()
        _git(repo, "worktree", "remove", "--force", str(worktree))
        seen.append(value)
        if value == "2":
            raise RuntimeError("fmbench run exited 3: the store is damaged")
        run = Path(work) / "runs" / commit
        run.mkdir(parents=True)
        rows = (ROOT / "results/baselines/ci/rows.csv").read_text().splitlines()[:3]
        (run / "rows.csv").write_text("\n".join(rows) + "\n")
        environment = {"git_commit": commit, "git_dirty": False, "processor": "Test CPU", "cpu_count": 2,
                       "executor": "in-process", "cell_threads": 1}
        (run / "environment.json").write_text(json.dumps(environment))
        return run

    history = tmp_path / "history.jsonl"
    result = backfill(commits, "ci", history, repository=repository, work=tmp_path / "work",
                      machine="Test CPU (2 CPUs)", progress=lambda line: None, runner=runner)
    assert seen == ["0", "2", "1", "3"] and result.tracked == [commits[0], commits[1], commits[3]]  # interleaved
    assert list(result.failed) == [commits[2]] and "exited 3" in result.failed[commits[2]]
    records = read_history(history)
    assert [record["commit"] for record in records] == result.tracked
    assert records[1]["subject"] == "commit 1" and records[1]["commit_time"] >= records[0]["commit_time"]
    again = backfill(commits, "ci", history, repository=repository, work=tmp_path / "work",
                     machine="Test CPU (2 CPUs)", progress=lambda line: None, runner=runner)
    assert again.skipped == result.tracked and seen[4:] == ["2"]  # only the failed commit runs again
    backfill(commits[:1], "ci", history, repository=repository, work=tmp_path / "work", machine="Test CPU (2 CPUs)",
             progress=lambda line: None, runner=runner, rerun=True)
    assert seen[5:] == ["0"] and len(read_history(history)) == 4  # a rerun is one more record
    assert _series(read_history(history), "c06a503c0fe8dcdd", "nfe").points[0].runs == 2


def test_interleaved_order_samples_the_whole_range_early():
    from fmbench.history.backfill import interleaved

    assert interleaved(list(range(8))) == [0, 4, 2, 6, 1, 5, 3, 7]
    order = interleaved(list(range(20)))
    assert sorted(order) == list(range(20)) and max(order[:4]) - min(order[:4]) >= 10


def test_every_keeps_the_newest_commit():
    from fmbench.history.backfill import every

    assert every(list("abcdefg"), 3) == ["a", "d", "g"] and every(list("abcdef"), 4) == ["b", "f"]
    with pytest.raises(ValueError, match="--every must be a whole number ≥ 1, got 0"):
        every(["a"], 0)


def test_commits_in_refuses_a_bad_range(repository):
    with pytest.raises(ValueError, match="git rev-list"):
        commits_in("nosuch..HEAD", repository)


# ---------------------------------------------------------------------- the command line and the site


def _history_file(tmp_path, **options):
    path = tmp_path / "ci.jsonl"
    for record in synthetic_records(**options):
        append_record(path, record)
    return path


def test_history_command_prints_each_step_with_its_commit_and_size(tmp_path, capsys):
    path = _history_file(tmp_path)
    assert main(["history", str(path)]) == 0
    out = capsys.readouterr().out
    assert "c12000000" in out and "commit number 12" in out and "0.25 → 0.2 (-20 %)" in out
    assert "×2" in out and "flat" not in out and "[noise," not in out
    assert main(["history", str(path), "--metric", "w2_exact_law", "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)
    assert [(step["cell"], step["commit"][:3], step["previous_commit"][:3]) for step in steps] == [("exact", "c12", "c11")]


def test_history_command_errors(tmp_path, capsys):
    assert main(["history", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = _history_file(tmp_path, commits=3)
    assert main(["history", str(path), "--false-alarm", "2"]) == 2
    assert "--false-alarm must be a probability in (0, 0.5), got 2" in capsys.readouterr().err
    assert main(["track", str(tmp_path / "nothing")]) == 2
    assert "neither a run directory nor a pytest-benchmark JSON file" in capsys.readouterr().err


def test_track_command_appends_the_run(tmp_path, capsys):
    history = tmp_path / "h.jsonl"
    assert main(["track", str(ROOT / "results/baselines/ci"), "--history", str(history), "--preset", "ci",
                 "--machine", "baseline machine"]) == 0
    assert "tracked 400 cells of ci" in capsys.readouterr().out
    assert read_history(history)[0]["machine"] == "baseline machine"


def test_publish_writes_a_site_that_links_each_step_to_its_commits(tmp_path):
    pytest.importorskip("plotly")
    path = _history_file(tmp_path, gpu=True)
    site = tmp_path / "site"
    assert main(["publish", str(path), str(site), "--commit-url", "https://example.org/commit/{commit}"]) == 0
    names = sorted(file.name for file in site.iterdir())
    assert names == ["commits.html", "gaussian-cond-ot.html", "gmm-vp.html", "index.html", "plotly.min.js",
                     "run.html"]
    index = (site / "index.html").read_text()
    assert "https://example.org/commit/c12" + "0" * 37 in index and "gaussian-cond-ot.html" in index
    page = (site / "gaussian-cond-ot.html").read_text()
    assert '<script src="plotly.min.js"></script>' in page and "w2_exact_law (GPU)" in page
    assert "step at c120000000" in page and "0.25 → 0.2" in page


# ---------------------------------------------------------------------- bisection end to end


def _fake_run_of(first_new: int):
    """A runner (as :func:`fmbench.history.backfill.run_at_commit`) whose run's w2_exact_law of the first ci baseline
    cell drops by 20 % from the commit whose value.txt reads ``first_new`` on."""
    import pandas as pd

    def runner(repository, commit, preset, work, timeout_s):
        number = int(subprocess.run(["git", "show", f"{commit}:value.txt"], cwd=repository, capture_output=True,
                                    text=True, check=True).stdout)
        rows = pd.read_csv(ROOT / "results/baselines/ci/rows.csv").head(3)
        if number >= first_new:
            rows.loc[0, "w2_exact_law"] *= 0.8
        run = Path(work) / "runs" / commit
        run.mkdir(parents=True, exist_ok=True)
        rows.to_csv(run / "rows.csv", index=False)
        (run / "environment.json").write_text(json.dumps({"git_commit": commit, "git_dirty": False,
                                                          "processor": "Test CPU", "cpu_count": 2,
                                                          "executor": "in-process", "cell_threads": 1}))
        return run

    return runner


@pytest.fixture
def long_repository(tmp_path):
    return _make_repository(tmp_path / "long", 9)


def test_bisect_narrows_a_step_between_two_measured_commits_to_its_commit(long_repository, tmp_path):
    from fmbench.history.bisect import bisect_step

    commits = commits_in("-9", long_repository)
    history, runner, machine = tmp_path / "h.jsonl", _fake_run_of(first_new=6), "Test CPU (2 CPUs)"
    backfill([commits[0], commits[8]], "ci", history, repository=long_repository, work=tmp_path / "w",
             machine=machine, progress=lambda line: None, runner=runner)  # a sparse history: first and last only
    outcome = bisect_step(history, cell="c06a503c0fe8dcdd", metric="w2_exact_law", machine=machine,
                          repository=long_repository, work=tmp_path / "w", progress=lambda line: None, runner=runner)
    assert outcome.first_new == commits[6] and outcome.last_old == commits[5]
    assert len(outcome.measured) == 3  # 7 commits in between: ⌈log₂ 8⌉
    assert "first commit on the new level: " + commits[6] in str(outcome)
    assert all(point.runs == 1 for point in _series(read_history(history), "c06a503c0fe8dcdd", "w2_exact_law").points)
    series = _series(read_history(history), "c06a503c0fe8dcdd", "w2_exact_law")
    assert len(series.points) == 5 and [step.commit for step in detect_steps(series)] == [commits[6]]


def test_bisect_of_a_noisy_series_places_each_commit_by_the_median_of_three_runs(long_repository, tmp_path):
    """A timing step ×0.5 from commit 6; commit 4, the first the bisection runs, is ×0.6 on its first run (an
    outlier): one run would put it on the new level; the median of three keeps it on the old."""
    from fmbench.history.bisect import bisect_step

    commits, counts = commits_in("-9", long_repository), {}
    inner = _fake_run_of(first_new=99)

    def runner(repository, commit, preset, work, timeout_s):
        run = inner(repository, commit, preset, work, timeout_s)
        import pandas as pd

        rows = pd.read_csv(run / "rows.csv")
        number = commits.index(commit)
        counts[commit] = counts.get(commit, 0) + 1
        factor = (0.5 if number >= 6 else 1.0) * (0.6 if counts[commit] == 1 and number == 4 else 1.0)
        rows["wall_s_normalised"] = 0.2 * factor * (1 + 0.01 * counts[commit])
        rows["wall_s_min"], rows["wall_s_max"] = rows["wall_s"] * 0.99, rows["wall_s"] * 1.01
        rows.to_csv(run / "rows.csv", index=False)
        return run

    history, machine = tmp_path / "h.jsonl", "Test CPU (2 CPUs)"
    backfill([commits[index] for index in (0, 1, 7, 8)], "ci", history, repository=long_repository,
             work=tmp_path / "w", machine=machine, progress=lambda line: None, runner=runner)
    outcome = bisect_step(history, cell="c06a503c0fe8dcdd", metric="wall_s_normalised", machine=machine,
                          repository=long_repository, work=tmp_path / "w", progress=lambda line: None, runner=runner)
    assert outcome.first_new == commits[6] and counts[commits[4]] == 3
    assert [old for _, _, old in outcome.measured] == [True, True, False]  # commits 4, 5, 6


def test_bisect_command_errors_name_what_is_missing(tmp_path, capsys):
    path = _history_file(tmp_path, commits=4)
    assert main(["bisect", str(path), "--cell", "nosuch", "--metric", "w2_exact_law", "--machine", "Test CPU (2 CPUs)"]) == 2
    assert "has no series 'w2_exact_law' of cell 'nosuch'" in capsys.readouterr().err
    assert main(["bisect", str(path), "--cell", "flat", "--metric", "w2_exact_law", "--machine", "Test CPU (2 CPUs)"]) == 2
    assert "no step detected" in capsys.readouterr().err
    (tmp_path / "twenty").mkdir()
    stepped = _history_file(tmp_path / "twenty")  # 20 commits: a step at the 12th
    assert main(["bisect", str(stepped), "--cell", "exact", "--metric", "w2_exact_law", "--machine",
                 "Test CPU (2 CPUs)", "--step", "c99"]) == 2
    assert "no step of 'w2_exact_law' in cell 'exact' begins at 'c99'; its steps begin at c120000000" in \
        capsys.readouterr().err
