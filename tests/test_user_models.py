"""Bring your own model and sampler: the shipped example (bench/examples/tiny_epsilon.py) in its three uses — scored
from Python, swept from TOML, baselined and compared — and the errors a user meets on the way."""

import importlib.util
import textwrap
from pathlib import Path

import fmbench
import pytest
import torch
from fmbench.cli import main
from fmbench.user_models import forget_networks

from fmcore import get_schedule
from fmcore.solvers import sample

EXAMPLES = Path(__file__).resolve().parents[1] / "bench" / "examples"
QUICK_TRAINING = "300"  # steps: a network good enough to sample, trained in about a second


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The example module, saving its network under tmp_path, with a short training."""
    monkeypatch.setenv("FMBENCH_EXAMPLE_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("FMBENCH_EXAMPLE_STEPS", QUICK_TRAINING)
    spec = importlib.util.spec_from_file_location("tiny_epsilon_example", EXAMPLES / "tiny_epsilon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    forget_networks()
    yield module
    forget_networks()


def test_the_example_in_python_sweep_and_compare(example, tmp_path, monkeypatch, capsys):
    # 1. Python: the network, saved by the example itself, scored in one call beside a user's own sampler.
    network = example.network()
    assert (tmp_path / "weights" / f"tiny_epsilon-{QUICK_TRAINING}.pt").exists()

    def my_ddim(field, x0, grid):  # DDIM (η = 0) written from its definition: x' = α' D + σ' E
        x, schedule = x0, field.schedule
        for t, t_next in zip(grid[:-1], grid[1:], strict=True):
            data, values = field.data_prediction(t, x), schedule(t)
            noise = (x - values.alpha * data) / values.sigma
            following = schedule(t_next)
            x = following.alpha * data + following.sigma * noise
        return x

    rows = fmbench.evaluate([my_ddim, "ddim"], targets=["seed000"], schedules=["vp"], nfe=[5, 10], field=network,
                            dtype="float32", n=500)
    assert (rows["status"] == "ok").all(), rows["error"].tolist()
    mine, theirs = (rows[rows["method"] == name].sort_values("nfe") for name in ("user:my_ddim", "ddim"))
    assert mine["strong_error"].tolist() == pytest.approx(theirs["strong_error"].tolist(), rel=1e-4)
    assert rows["model_velocity_loss"].notna().all() and rows["model_fingerprint"].nunique() == 1
    assert fmbench.report(rows).exists()

    # 2. The sweep file, run as a user runs it: the same network, by name.
    run, baseline, changed = tmp_path / "run", tmp_path / "baseline", tmp_path / "changed"
    assert main(["run", str(EXAMPLES / "tiny_epsilon.toml"), "--out", str(run), "--quiet"]) == 0
    swept = fmbench.store.load_rows(run)
    assert (swept["status"] == "ok").all() and set(swept["model_fingerprint"]) == {network.fingerprint()}

    # 3. A baseline; then the network changes (trained for fewer steps) and compare fails.
    assert main(["baseline", str(run), str(baseline)]) == 0
    assert main(["compare", str(baseline), str(run)]) == 0
    monkeypatch.setenv("FMBENCH_EXAMPLE_STEPS", "40")
    forget_networks()
    assert main(["run", str(EXAMPLES / "tiny_epsilon.toml"), "--out", str(changed), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(baseline), str(changed)]) == 1
    output = capsys.readouterr().out
    assert "worse" in output and "the network changed in 9 cell(s): model_fingerprint" in output


def test_a_network_handed_over_is_sampled_without_autograd(example):
    field = example.network().field(get_schedule("vp"))
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    result = sample(field, x0, "dpmpp_2m", steps=5)
    assert result.x.grad_fn is None and torch.isfinite(result.x).all()


def test_module_fields_that_name_nothing_say_so(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    (tmp_path / "models.py").write_text("def not_a_network():\n    return 3\n")
    sweep.write_text(textwrap.dedent("""
        plugins = ["models.py"]
        [sweep]
        target = ["seed000"]
        schedule = ["vp"]
        field = ["module:models.not_a_network", "module:models.absent", "module:nowhere.network", "module:nodot"]
        [[solver]]
        method = ["ddim"]
        steps = [4]
    """))
    assert main(["run", str(sweep), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "models.not_a_network() must return fmcore.model_field.TrainedNetwork" in error
    assert "module 'models' has no function 'absent'" in error
    assert "module 'nowhere' cannot be imported" in error and "plugins = [\"nowhere.py\"]" in error
    assert "write module:<module>.<factory>" in error
    assert not (tmp_path / "run").exists()  # nothing ran
