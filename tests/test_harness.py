"""The harness as a user meets it: the ``fmbench`` command, sweeps checked before they start, interrupted runs
resumed exactly, the same rows from every executor, and parameters that reach their cells."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fmbench.cli import main
from fmbench.store import RowStore, load_rows
from fmbench.sweepfile import SweepError, check_cells, expand, load_sweep

ACCURACY = ["cell", "status", "nfe", "strong_error", "gaussian_fit_w2"]

# Eight cells of ~0.3–0.7 s each: long enough to interrupt a run in the middle.
SLOW_SWEEP = """
[sweep]
target = ["gaussian"]
schedule = ["cond_ot", "cosine"]
n = 20000

[[solver]]
method = ["heun", "rk4"]
steps = [32, 64]
"""

QUICK_SWEEP = """
[sweep]
target = ["seed000", "gaussian"]
schedule = ["cosine"]
n = 256
target_params = { gaussian = { d = 3 } }

[[solver]]
method = ["euler", "rk4"]
steps = [4, 8]

[[solver]]
method = ["euler_maruyama"]
steps = [8]
diffusion = ["constant"]
diffusion_params = { constant = { c = 0.5 } }
"""


def _write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _command(sweep: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fmbench", "run", str(sweep), "--out", str(out), "--quiet", *extra]


def _accuracy(out: Path) -> pd.DataFrame:
    rows = load_rows(out)
    return rows[ACCURACY].sort_values("cell").reset_index(drop=True)


def _saved(out: Path) -> int:
    try:
        with sqlite3.connect(out / "rows.sqlite", timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _start_and_wait_for_rows(command: list[str], out: Path, rows: int) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _saved(out) < rows:
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the sweep saved no rows in time"
        time.sleep(0.05)
    return process


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("reference")
    sweep = _write(tmp, SLOW_SWEEP)
    assert main(["run", str(sweep), "--out", str(tmp / "run"), "--quiet"]) == 0
    return _accuracy(tmp / "run")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_sweep_resumes_to_the_uninterrupted_rows(tmp_path, uninterrupted, stop):
    sweep, out = _write(tmp_path, SLOW_SWEEP), tmp_path / "run"
    process = _start_and_wait_for_rows(_command(sweep, out), out, rows=2)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    saved = _saved(out)
    assert 2 <= saved < 8, "the signal should land in the middle of the sweep"
    if stop != signal.SIGKILL:  # SIGTERM is handled as Ctrl-C is
        assert process.returncode == 130 and "Run the same command again to resume" in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    with RowStore(out) as store:  # readable, never corrupt, no duplicates
        assert len(store.frame()["cell"].unique()) == saved
    finished = subprocess.run(_command(sweep, out), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    resumed = _accuracy(out)
    assert len(resumed) == 8 and resumed["cell"].is_unique
    pd.testing.assert_frame_equal(resumed, uninterrupted)


def test_sigkill_leaves_no_worker_processes(tmp_path):
    sweep, out = _write(tmp_path, SLOW_SWEEP), tmp_path / "run"
    process = _start_and_wait_for_rows(_command(sweep, out, "--workers", "2"), out, rows=1)
    children = [pid for pid in _children(process.pid)]
    assert children, "a pool of 2 should have worker processes"
    process.kill()
    process.wait()
    deadline = time.time() + 20
    while any(_alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children), "workers outlived a SIGKILLed parent"


def _children(parent: int) -> list[int]:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(parent):
            children.append(int(status.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def test_every_executor_gives_the_same_accuracy_columns(tmp_path):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    sweep = _write(tmp_path, QUICK_SWEEP)
    results = {}
    for name, extra in {"in-process": [], "workers": ["--workers", "2"], "dask": ["--dask", "local:2"]}.items():
        assert main(["run", str(sweep), "--out", str(tmp_path / name), "--quiet", *extra]) == 0
        results[name] = _accuracy(tmp_path / name)
    pd.testing.assert_frame_equal(results["workers"], results["in-process"])
    pd.testing.assert_frame_equal(results["dask"], results["in-process"])


def test_parameter_maps_reach_their_cells_wherever_they_are_written():
    cells = expand(load_sweep("default"))
    constant = [cell for cell in cells if cell.diffusion == "constant"]
    assert constant and all(cell.diffusion_params == {"c": 0.5} for cell in constant)
    config = {
        "sweep": {"target": ["gaussian"], "schedule": "cond_ot", "target_params": {"gaussian": {"d": 8}}},
        "solver": [{"method": "euler", "steps": 2, "target_params": {"gaussian": {"d": 2}}},
                   {"method": "rk4", "steps": 2}],
    }
    by_method = {cell.method: cell for cell in expand(config)}
    assert by_method["euler"].target_params == {"d": 2} and by_method["rk4"].target_params == {"d": 8}


def test_a_row_records_the_parameters_it_ran_with(tmp_path):
    sweep = _write(tmp_path, QUICK_SWEEP)
    assert main(["run", str(sweep), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    rows = load_rows(tmp_path / "run")
    em = rows[rows["method"] == "euler_maruyama"]
    assert len(em) == 2 and (em["diffusion_params"] == json.dumps({"c": 0.5})).all()
    assert (rows["threads"] == 1).all()


BAD_SWEEPS = {
    "unknown method": ('method = ["rk5"]\nsteps = [4]', "unknown method 'rk5' (did you mean 'rk4'?); "),
    "string steps": ('method = ["euler"]\nsteps = ["4"]', "steps must be an integer ≥ 1"),
    "zero steps": ('method = ["euler"]\nsteps = [0]', "steps must be an integer ≥ 1"),
    "steps on adaptive": ('method = ["dopri5"]\nsteps = [4]', "steps do not apply to adaptive method 'dopri5'"),
    "rtol on fixed": ('method = ["euler"]\nsteps = [4]\nrtol = [1e-3]', "rtol/atol do not apply to fixed-step method"),
    "negative tolerance": ('method = ["dopri5"]\nrtol = [-1e-3]', "rtol must be a number > 0"),
    "diffusion on an ODE": ('method = ["euler"]\nsteps = [4]\ndiffusion = ["constant"]',
                            "a diffusion applies to reverse-SDE methods only"),
    "bad diffusion value": ('method = ["euler_maruyama"]\nsteps = [4]\ndiffusion = ["constant"]\n'
                            'diffusion_params = { constant = { c = -1.0 } }', "c must be a finite number"),
    "unknown parameter": ('method = ["euler"]\nsteps = [4]\ntarget_params = { seed000 = { d = 2 } }',
                          "takes no parameter(s) ['d']"),
    "unknown objective": ('method = ["euler"]\nsteps = [4]\nfield = ["learned:ddpm"]', "learned:<objective>"),
    "n = 0": ('method = ["euler"]\nsteps = [4]\nn = 0', "n must be an integer ≥ 1"),
    "unknown method option": ('method = ["ddim"]\nsteps = [4]\nmethod_params = { ddim = { churn = 1.0 } }',
                              "method 'ddim' takes no option(s) ['churn']; its options: ['eta']"),
    "negative method option": ('method = ["ddim"]\nsteps = [4]\nmethod_params = { ddim = { eta = -1.0 } }',
                               "method option eta must be a number ≥ 0"),
}


@pytest.mark.parametrize("entry, message", BAD_SWEEPS.values(), ids=BAD_SWEEPS.keys())
def test_a_bad_sweep_is_refused_before_any_cell_runs_and_leaves_the_run_untouched(tmp_path, capsys, entry, message):
    good = _write(tmp_path, QUICK_SWEEP, "good.toml")
    out = tmp_path / "run"
    assert main(["run", str(good), "--out", str(out), "--quiet"]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    bad = _write(tmp_path, f'[sweep]\ntarget = ["seed000"]\nschedule = ["cond_ot"]\n\n[[solver]]\n{entry}\n', "bad.toml")
    capsys.readouterr()
    assert main(["run", str(bad), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert message in error and "nothing was run" in error
    after = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "text, message",
    [
        ('[sweep]\ntarget = ["seed000"\n', "is not valid TOML"),
        ('[sweep]\ntarget = "seed000"\n[[solvers]]\nmethod = "euler"\n', "unknown table(s) ['solvers']"),
        ('[sweep]\ntarget = "seed000"\nschedule = "cond_ot"\n[solver]\nmethod = "euler"\n', "written [[solver]]"),
        ('[sweep]\ntarget = "moons"\nschedule = "cond_ot"\nmethod = "euler"\nsteps = 2\n', "unknown target 'moons'"),
        ('[sweep]\ntarget = "seed000"\ntarget_params = { seed00 = { d = 2 } }\n', "unknown target(s) ['seed00']"),
    ],
)
def test_malformed_sweep_files_say_what_is_wrong(tmp_path, capsys, text, message):
    assert main(["run", str(_write(tmp_path, text)), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_toml_error_names_the_line(tmp_path):
    with pytest.raises(SweepError, match="line 3"):
        load_sweep(_write(tmp_path, '[sweep]\ntarget = "seed000"\nschedule = = 1\n'))


def test_an_output_directory_of_another_sweep_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, QUICK_SWEEP, "a.toml")), "--out", str(out), "--quiet"]) == 0
    other = QUICK_SWEEP.replace("n = 256", "n = 128")
    assert main(["run", str(_write(tmp_path, other, "b.toml")), "--out", str(out), "--quiet"]) == 2
    assert "holds 10 cell(s) of another sweep" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "b.toml"), "--out", str(out), "--quiet", "--force"]) == 0
    assert (load_rows(out)["n"] == 128).all()
    assert len(list(tmp_path.glob("run.old-*"))) == 1


def test_an_unwritable_output_is_an_error_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", str(_write(tmp_path, QUICK_SWEEP)), "--out", str(blocker / "run"), "--quiet"]) == 2
    assert "cannot write to the output directory" in capsys.readouterr().err


def test_failed_cells_give_exit_1_a_report_and_are_retried(tmp_path, capsys):
    # poly(n = 0.5) has an infinite velocity at t = 0: every cell fails at run time (not a spec error).
    text = '[sweep]\ntarget = "seed000"\nschedule = "poly"\nschedule_params = { poly = { n = 0.5 } }\n' \
           'method = ["euler", "rk4"]\nsteps = 2\nn = 16\n'
    out = tmp_path / "run"
    sweep = _write(tmp_path, text)
    assert main(["run", str(sweep), "--out", str(out), "--quiet"]) == 1
    report = (out / "report.md").read_text()
    assert "0 ok, 2 failed" in report and "velocity is infinite" in report
    capsys.readouterr()
    assert main(["run", str(sweep), "--out", str(out)]) == 1
    assert "2 to run (2 retried)" in capsys.readouterr().err


def test_cuda_cells_are_skipped_rows_with_a_reason(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the cells would run")
    text = '[sweep]\ntarget = "seed000"\nschedule = "cond_ot"\nmethod = "euler"\nsteps = 2\nn = 16\ndevice = ["cpu", "cuda"]\n'
    assert main(["run", str(_write(tmp_path, text)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    rows = load_rows(tmp_path / "run").set_index("device")
    assert rows.loc["cpu", "status"] == "ok"
    assert rows.loc["cuda", "status"] == "skipped" and "no CUDA device" in rows.loc["cuda", "error"]


def test_list_and_export(tmp_path, capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in ("seed000", "cond_ot", "rk4", "karras", "forward", "learned:cfm", "default"):
        assert name in listing
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, QUICK_SWEEP)), "--out", str(out), "--quiet"]) == 0
    assert main(["export", str(out), "--csv", str(tmp_path / "rows.csv")]) == 0
    exported = pd.read_csv(tmp_path / "rows.csv")
    assert exported["cell"].tolist() == [cell.key() for cell in expand(load_sweep(tmp_path / "sweep.toml"))]


def test_unknown_preset_message_is_not_quoted_twice(capsys):
    assert main(["run", "no_such_preset", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "unknown preset 'no_such_preset'" in error and "\"unknown" not in error


def test_every_preset_passes_its_own_check():
    for name in ("default", "smoke"):
        check_cells(expand(load_sweep(name)))


def test_the_console_script_is_installed():
    result = subprocess.run(["fmbench", "list"], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0 and "methods" in result.stdout


FAULTY = '''
"""Methods that fail as no exception can: a process killed (as the out-of-memory killer does), a hang the in-cell
timer can end, a hang it cannot (SIGALRM blocked, as in a native loop), an allocation past the address-space limit."""
import os
import signal
import time

import torch

from fmcore.solvers import Method, get_method, register_method


def dies(request):
    os.kill(os.getpid(), signal.SIGKILL)


def hangs(request):
    time.sleep(10**6)


def hangs_deaf(request):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(10**6)


def hogs(request):
    torch.empty(2**36, dtype=torch.uint8)  # 64 GiB, past the test's ulimit -v
    return get_method("euler").integrate(request)


for name, integrate in (("dies", dies), ("hangs", hangs), ("hangs_deaf", hangs_deaf), ("hogs", hogs)):
    register_method(Method(name, integrate, stages=1))
'''

INNOCENTS = """
[sweep]
target = ["gaussian"]
schedule = ["cosine"]
n = 256
target_params = { gaussian = { d = 3 } }

[[solver]]
method = ["euler", "rk4"]
steps = [4, 8]
"""


def _faulty_sweep(tmp_path: Path, culprits: list[str], time_limit: float | None = None) -> Path:
    """Four innocent cells and one cell of each culprit method, with the culprits first in sweep order."""
    (tmp_path / "faulty.py").write_text(FAULTY)
    header = 'plugins = ["faulty.py"]\n' + (f"time_limit_s = {time_limit}\n" if time_limit else "")
    culprit_entry = f"[[solver]]\nmethod = {json.dumps(culprits)}\nsteps = [4]\n"
    sweep, solvers = INNOCENTS.split("[[solver]]")
    return _write(tmp_path, header + sweep + culprit_entry + "[[solver]]" + solvers)


def _by_method(out: Path) -> pd.DataFrame:
    return load_rows(out).set_index("method")


def _run_faulty(command: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **options)


def test_a_cell_that_kills_its_worker_is_one_failed_row_and_is_retried_once(tmp_path):
    out = tmp_path / "run"
    command = _command(_faulty_sweep(tmp_path, ["dies"]), out, "--workers", "2")
    first = _run_faulty(command)
    assert first.returncode == 1, first.stderr  # cells failed; the sweep went on
    rows = _by_method(out)
    assert rows.loc["dies", "status"] == "failed" and rows.loc["dies", "fault"] == "died"
    assert "killed by SIGKILL (what the out-of-memory killer sends)" in rows.loc["dies", "error"]
    assert (rows.drop("dies")["status"] == "ok").all() and len(rows) == 5
    second = _run_faulty(command[:-3] + ["--workers", "2"])  # retried once: only the culprit runs, and dies again
    assert second.returncode == 1 and "1 to run (1 retried)" in second.stderr
    assert (_by_method(out).drop("dies")["status"] == "ok").all()
    third = _run_faulty(command[:-3] + ["--workers", "2"])  # then kept failed: nothing runs
    assert third.returncode == 1 and "0 to run; 1 kept failed" in third.stderr and "--retry-failed" in third.stderr


def test_a_cell_that_takes_the_process_down_in_process_is_named_by_the_next_run(tmp_path):
    out = tmp_path / "run"
    command = _command(_faulty_sweep(tmp_path, ["dies"]), out)
    first = _run_faulty(command)
    assert first.returncode == -signal.SIGKILL and _saved(out) == 0  # the culprit is first in sweep order
    second = _run_faulty(command)  # names it, runs the innocents first, then retries it once: it dies again
    assert second.returncode == -signal.SIGKILL and "the last run died in 1 cell(s)" in second.stderr
    rows = _by_method(out)
    assert (rows.drop("dies")["status"] == "ok").all() and len(rows) == 5
    third = _run_faulty(command)  # kept failed now: the run finishes
    assert third.returncode == 1, third.stderr
    row = _by_method(out).loc["dies"]
    assert row["fault"] == "died" and "the run died while this cell was running in process (start 2" in row["error"]
    assert "kept failed" in third.stdout and (out / "report.md").exists()
    again = _run_faulty(command + ["--retry-failed"])  # asked for: run again (and here, die again)
    assert again.returncode == -signal.SIGKILL
    with RowStore(out) as store:
        assert store.attempts()[row["cell"]] == 3 and store.died_running() == [row["cell"]]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_cell_past_its_time_limit_is_one_failed_row(tmp_path, workers):
    out = tmp_path / "run"
    culprits = ["hangs"] if workers == "1" else ["hangs", "hangs_deaf"]  # a deaf hang can only be killed by a pool
    started = time.perf_counter()
    result = _run_faulty(_command(_faulty_sweep(tmp_path, culprits, time_limit=2), out, "--workers", workers))
    elapsed = time.perf_counter() - started
    assert result.returncode == 1, result.stderr
    rows = _by_method(out)
    assert (rows.drop(culprits)["status"] == "ok").all() and len(rows) == 4 + len(culprits)
    assert rows.loc["hangs", "fault"] == "time_limit" and "exceeded its time limit of 2 s" in rows.loc["hangs", "error"]
    assert (rows["time_limit_s"] == 2).all()
    if workers == "2":
        assert rows.loc["hangs_deaf", "fault"] == "time_limit"
        assert "hard limit of 7.2 s" in rows.loc["hangs_deaf", "error"]  # 1.1 × 2 s + 5 s
    assert elapsed < 120


def test_a_cell_past_the_memory_limit_is_one_failed_row(tmp_path):
    import resource

    out = tmp_path / "run"
    limit = 16 * 2**30  # virtual memory: far above what torch needs to start, far below the culprit's 64 GiB

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = _run_faulty(_command(_faulty_sweep(tmp_path, ["hogs"]), out), preexec_fn=limit_memory)
    assert result.returncode == 1, result.stderr
    rows = _by_method(out)
    assert (rows.drop("hogs")["status"] == "ok").all()
    assert rows.loc["hogs", "fault"] == "memory" and rows.loc["hogs", "error"].startswith("out of memory: ")


@pytest.mark.parametrize(("arguments", "message"), [
    (["--dask", "local:abc"], "--dask local:N needs a whole number N ≥ 1 of workers, got 'local:abc'"),
    (["--dask", "local:0"], "--dask local:N needs a whole number N ≥ 1 of workers, got 'local:0'"),  # hung with 0 rows
    (["--threads", "100000"], "--threads must be between 1 and this machine's"),  # libgomp ran out of memory
    (["--workers", "0"], "--workers must be ≥ 1, got 0"),
])
def test_bad_executor_options_exit_2_before_anything_runs(tmp_path, capsys, arguments, message):
    assert main(["run", "smoke", "--out", str(tmp_path / "run"), "--quiet", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "rows.sqlite").exists()


def test_an_unreachable_dask_scheduler_exits_2(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    import fmbench.sweep

    monkeypatch.setattr(fmbench.sweep, "DASK_CONNECT_TIMEOUT_S", 1)
    assert main(["run", "smoke", "--out", str(tmp_path / "run"), "--quiet", "--dask", "tcp://127.0.0.1:1"]) == 2
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:1' within 1 s" in capsys.readouterr().err


def test_a_target_too_large_to_build_is_a_sweep_error(tmp_path, capsys):
    """d = 10⁷ asks the allocator for 800 TB (beyond any 47-bit address space, whatever the overcommit policy) while
    the sweep is checked: a problem of the sweep (exit 2), not a crash."""
    sweep = tmp_path / "big.toml"
    sweep.write_text('[sweep]\ntarget = "gaussian"\ntarget_params = { gaussian = { d = 10000000 } }\nschedule = "cond_ot"\n'
                     '[[solver]]\nmethod = ["euler"]\nsteps = [4]\n')
    assert main(["run", str(sweep), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "target 'gaussian' with {'d': 10000000} cannot be built on this machine" in capsys.readouterr().err


@pytest.mark.parametrize("chosen, expected", [(None, "1"), ("0", "0")])
def test_the_harness_asks_for_huge_pages_unless_told_otherwise_and_records_it(chosen, expected):
    """``import fmbench`` sets ``THP_MEM_ALLOC_ENABLE=1`` only where the variable is unset (fmbench.allocator), and a
    run's environment records the value."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if chosen is not None:
        env["THP_MEM_ALLOC_ENABLE"] = chosen
    code = ("import os, fmbench; from fmbench.sweep import environment; "
            "print(os.environ['THP_MEM_ALLOC_ENABLE'], environment()['huge_pages'])")
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert shown.split() == [expected, expected]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="heap reuse is glibc's (mallopt)")
@pytest.mark.parametrize("chosen", [None, "65536"])
def test_the_harness_keeps_freed_memory_unless_told_otherwise_and_records_it(chosen):
    """``import fmbench`` before torch sets glibc's heap variables only where neither is set (fmbench.allocator), and
    a run's environment records them. With them, a loop that allocates a 64 MB result per iteration reuses mapped
    pages once warm (the heap first grows by a few blocks: an aligned request does not fit a freed block of its own
    size until freed neighbours merge, measured 8 blocks at most here, reached within 10 iterations); with glibc's
    default (the user's ``MALLOC_MMAP_MAX_=65536``) every result is new memory: 2²³·8 bytes / 4 KiB = 16 384 faults
    per iteration (4 KiB pages: huge pages off)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["THP_MEM_ALLOC_ENABLE"] = "0"
    if chosen is not None:
        env["MALLOC_MMAP_MAX_"] = chosen
    code = ("import os, resource, fmbench, torch; from fmbench.sweep import environment\n"
            "x = torch.ones(2**23, dtype=torch.float64)\n"
            "for _ in range(20): y = x * 2.0\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(5): y = x * 2.0\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, os.environ.get('MALLOC_MMAP_MAX_'), "
            "os.environ.get('MALLOC_TRIM_THRESHOLD_'), environment()['heap_reuse'], sep='|')")
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    faults, *variables = shown.strip().split("|")
    if chosen is None:
        assert int(faults) < 100
        assert variables == ["0", "2147483647", "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647"]
    else:
        assert int(faults) >= 5 * 16_000
        assert variables == ["65536", "None", "MALLOC_MMAP_MAX_=65536"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="heap reuse is glibc's (mallopt, malloc_trim)")
def test_freed_memory_kept_for_reuse_is_released_after_a_cell():
    """Under heap reuse a freed 256 MB block stays resident (the next cell would start with it);
    ``release_freed_memory``, which ``run_cell`` calls at its end, gives it back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["THP_MEM_ALLOC_ENABLE"] = "0"
    code = ("import fmbench, torch\nfrom fmbench.allocator import release_freed_memory\n"
            "def resident(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "a = torch.ones(2**25, dtype=torch.float64); b = torch.ones(10)\n"
            "held = resident(); del a; freed = resident(); release_freed_memory()\n"
            "print(held - freed, freed - resident())")
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    kept, released = (float(value) for value in shown.split())
    assert kept < 16 and released > 200  # MB: kept while reusable, then given back
