"""The roofline of the closed-form velocity: ``python bench/scripts/roofline.py [--device cuda] [--threads 1 2]``
writes ``results/roofline/<device>.md`` and ``.json``.

For each target size (the default sweep's two targets and the benchmark mixture K = 16, d = 16), batch size and
thread count: the measured GEMM and copy peaks of the device, and the checked, unchecked and compiled velocity
call placed against them (``fmbench.roofline`` gives the cost model). Runs unchanged on a CUDA device
(``--device cuda``; threads do not apply there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch
from fmbench.reporting import markdown_table
from fmbench.roofline import field_roofline, measure_peaks

from fmcore import get_schedule, get_target

TARGETS = {"seed000": {}, "gaussian": {"d": 8, "condition_number": 100}, "gmm": {"K": 16, "d": 16}}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="batch sizes (default: 2^14 2^17 on the "
                        "CPU, 2^14 2^17 2^20 on CUDA)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (CPU only)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=sorted(DTYPES))
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variant")
    parser.add_argument("--out", type=Path, default=Path("results/roofline"))
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    sizes = args.sizes or ([2**14, 2**17, 2**20] if cuda else [2**14, 2**17])
    schedule = get_schedule("cond_ot")
    peaks, rows = [], []
    for threads in ([torch.get_num_threads()] if cuda else args.threads):
        torch.set_num_threads(threads)
        for dtype_name in args.dtypes:
            peak = measure_peaks(args.device, DTYPES[dtype_name])
            peaks.append(peak.as_dict())
            print(f"{args.device} {dtype_name} {threads} thread(s): GEMM {peak.gemm_flops_per_s / 1e9:.1f} GFLOP/s, "
                  f"copy {peak.copy_bytes_per_s / 1e9:.1f} GB/s", flush=True)
            for name, params in TARGETS.items():
                for n in sizes:
                    for row in field_roofline(get_target(name, **params), schedule, n, peak, args.device,
                                              DTYPES[dtype_name], compiled=not args.no_compile):
                        rows.append({"target": name, **row})
                        print(f"  {name:8} n={n:8} {row['variant']:9} {row['seconds'] * 1e3:9.3f} ms "
                              f"{row['achieved_gflops']:7.2f} GFLOP/s = {row['fraction_of_gemm_peak']:.3f} of GEMM peak, "
                              f"{row['fraction_of_copy_bandwidth']:.3f} of copy bandwidth", flush=True)
    device_name = torch.cuda.get_device_name(args.device) if cuda else None
    write(args.out, "cuda" if cuda else "cpu", device_name, peaks, rows, args.device if cuda else None)


def write(out: Path, stem: str, device_name: str | None, peaks: list[dict], rows: list[dict], device_flag: str | None) -> None:
    """``<out>/<stem>.json`` (everything) and ``<out>/<stem>.md`` (the tables)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"device_name": device_name, "peaks": peaks, "rows": rows}, indent=2))
    columns = ["target", "K", "d", "n", "dtype", "threads", "variant", "seconds", "gflop_per_call", "gemm_share",
               "intensity_flop_per_byte", "achieved_gflops", "fraction_of_gemm_peak", "fraction_of_copy_bandwidth"]
    command = "python bench/scripts/roofline.py" + (f" --device {device_flag}" if device_flag else "")
    text = [f"# Roofline of the closed-form velocity on {device_name or stem}", "",
            f"Written by `{command}`. Cost model and method: `bench/fmbench/roofline.py`. `fraction_of_copy_bandwidth` "
            "counts the bytes the unfused implementation moves; above 1 they did not all come from DRAM (the CPU "
            "evaluates in L2-sized chunks) or compilation fused them away.", "", "## Measured peaks", "",
            markdown_table(pd.DataFrame(peaks), ".4g"), "", "## The velocity call", "",
            markdown_table(pd.DataFrame(rows)[columns], ".4g"), ""]
    (out / f"{stem}.md").write_text("\n".join(text))
    print(f"wrote {out / stem}.md and .json")

if __name__ == "__main__":
    main()
