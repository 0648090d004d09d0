"""Synthetic histories for the history tests: records in the format of :mod:`fmbench.history.record`."""

from __future__ import annotations

import numpy as np


def synthetic_records(commits: int = 20, step_at: int = 12, machine: str = "Test CPU (2 CPUs)",
                      seed: int = 0, gpu: bool = False) -> list[dict]:
    """``commits`` sweep records, one per commit ``c00…``, with four cells:

    * ``exact``: w2_exact_law 0.25 (float64, exact) that moves to 0.2 at ``step_at``;
    * ``flat``: w2_exact_law 0.5 that moves by 1e-12 relative (within tolerance) at every commit;
    * ``timed``: wall_s_normalised log-normal noise (σ = 5 %) that doubles at ``step_at``;
    * ``noise``: wall_s_normalised log-normal noise only.
    With ``gpu`` a fifth cell on ``cuda:0``."""
    generator = np.random.default_rng(seed)
    records = []
    for index in range(commits):
        after = index >= step_at
        cells = {
            "exact": {"group": "gaussian · cond_ot", "label": "euler steps=8 float64", "dtype": "float64",
                      "device": "cpu", "status": "ok",
                      "metrics": {"w2_exact_law": [0.2 if after else 0.25, 0.0, "float64"], "nfe": [8.0, 0.0, "nfe"]}},
            "flat": {"group": "gaussian · cond_ot", "label": "heun steps=8 float64", "dtype": "float64",
                     "device": "cpu", "status": "ok",
                     "metrics": {"w2_exact_law": [0.5 * (1 + 1e-12 * index), 0.0, "float64"]}},
            "timed": {"group": "gaussian · cond_ot", "label": "euler steps=8 float64", "dtype": "float64",
                      "device": "cpu", "status": "ok",
                      "metrics": {"wall_s_normalised": [float((2.0 if after else 1.0) *
                                                              np.exp(0.05 * generator.standard_normal())),
                                                        0.02, "timing"]}},
            "noise": {"group": "gmm · vp", "label": "rk4 steps=8 float32", "dtype": "float32", "device": "cpu",
                      "status": "ok", "metrics": {"wall_s_normalised": [float(np.exp(0.05 * generator.standard_normal())),
                                                                       None, "timing"]}},
        }
        if gpu:
            cells["gpu"] = {"group": "gaussian · cond_ot", "label": "euler steps=8 float32 cuda", "dtype": "float32",
                            "device": "cuda:0", "status": "ok",
                            "metrics": {"w2_exact_law": [0.3, 0.0, "float32"]}}
        records.append({"format": 1, "kind": "sweep", "preset": "ci", "commit": f"c{index:02d}" + "0" * 37,
                        "commit_time": 1_700_000_000 + 60 * index, "commit_depth": 100 + index,
                        "subject": f"commit number {index}",
                        "dirty": False, "machine": machine, "executor": "in-process", "threads": 1,
                        "load_average": 0.1, "torch": "2.13.0+cpu", "time": f"2026-12-04T00:{index:02d}:00",
                        "cells": cells})
    return records
