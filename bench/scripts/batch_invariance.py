"""Batch and seed invariance of every sampler: ``python bench/scripts/batch_invariance.py`` writes
``results/batch_invariance.md``.

A sample is a function of its own noise: the output for one start must not depend on which other starts share its
batch, nor on their order, and the same seed must give the same output. For each registered sampler (ours and the
installed peers; adaptive ones with their default tolerances), on an 8-component mixture in d = 8 (cond_ot, analytic
field, float64, 16 steps, one generator seed): the largest difference between the first 8 rows of a batch of 64 and
the same 8 starts run alone, between the batch and the same batch in reverse order, and between two runs with the
same seed. 0 means bit for bit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fmbench.peers  # noqa: F401 — registers the peer adapters
import pandas as pd
import torch
from fmbench.peers import PeerUnavailable
from fmbench.reporting import markdown_table

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.solvers import METHODS, get_method, sample

BATCH, PART, STEPS, SEED = 64, 8, 16, 5


def _run(field, x0: torch.Tensor, name: str) -> torch.Tensor:
    method = get_method(name)
    options = {"steps": STEPS} if method.takes_steps else {}
    if method.draws_noise():
        options["generator"] = SEED
    return sample(field, x0, name, **options).x


def invariance_row(field, x0: torch.Tensor, name: str) -> dict:
    """The three differences for one sampler (module docstring)."""
    method = get_method(name)
    full = _run(field, x0, name)
    alone = _run(field, x0[:PART], name)
    reversed_order = _run(field, x0.flip(0), name).flip(0)
    again = _run(field, x0, name)
    batch = float((full[:PART] - alone).abs().max())
    order = float((full - reversed_order).abs().max())
    seed = float((full - again).abs().max())
    return {"method": name, "family": method.family, "draws noise": method.draws_noise(),
            f"batch {BATCH} → its first {PART}": batch, "reversed batch": order, "same seed twice": seed,
            "invariant": "yes" if batch == order == seed == 0.0 else ("to round-off" if max(batch, order, seed) < 1e-12
                                                                      else "no")}


def rows(n_methods: int | None = None) -> list[dict]:
    schedule = get_schedule("cond_ot")
    field = AnalyticField(get_target("gmm", K=8, d=8), schedule)
    x0 = torch.randn(BATCH, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = []
    names = [name for name, method in sorted(METHODS.items()) if not method.diffusion]  # Euler–Maruyama: sweeps
    for name in names[:n_methods]:
        try:
            out.append(invariance_row(field, x0, name))
        except PeerUnavailable as error:
            print(f"skipped {name}: {error}")
            continue
        except (ValueError, RuntimeError) as error:  # e.g. a float32-only peer: one row saying why
            out.append({"method": name, "family": get_method(name).family, "invariant": f"not run: {error}"})
        print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/batch_invariance.md"))
    args = parser.parse_args()
    table = pd.DataFrame(rows())
    text = ["# Batch and seed invariance", "",
            f"Written by `python bench/scripts/batch_invariance.py`: an 8-component mixture, d = 8, cond_ot, analytic "
            f"field, float64, {STEPS} steps, generator seed {SEED}. Columns: max |Δ| between the first {PART} rows of "
            f"a batch of {BATCH} and those {PART} starts alone; between the batch and the batch reversed; between two "
            "runs with the same seed.", "", markdown_table(table, ".3g"), ""]
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
