"""The speed race: ``python bench/scripts/speed_race.py`` writes ``results/speed_race.md``.

The same model (seed 000's network: ``SinusoidalMLP(2)``, float32), the same method and NFE, on the CPU with the
harness's one torch thread (``--threads`` to change), at n = 1, 16, 256, 4096, 65 536: ours (``fmcore.solvers.sample``,
the checked path users call) against each peer called the way its users call it — torchdiffeq's ``odeint``,
flow_matching's ``ODESolver``, torchdyn's ``NeuralODE``, torchode's fixed-step solver. Medians of interleaved
repeats (every contender once per round, so a slow spell hits all alike), the ratio of the fastest peer's time to
ours, the max |difference| of each output from ours, and our solver overhead: time ÷ (NFE × one bare network call).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fmbench.peers  # noqa: F401 — registers the peer adapters
import pandas as pd
import torch
from fmbench.reporting import markdown_table
from fmbench.speed_race import STEPS, race


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 256, 4096, 65536])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("results/speed_race.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = pd.DataFrame(race(args.sizes, args.repeats, args.device))
    text = ["# The speed race: our RK engine against the peers, same model, method and NFE", "",
            f"Written by `python bench/scripts/speed_race.py` ({args.threads} torch thread(s), float32, {args.device}, "
            f"{STEPS} steps, "
            f"medians of {args.repeats} interleaved rounds). `fastest peer / ours` > 1 means ours is faster.", "",
            markdown_table(table, ".3g"), ""]
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
