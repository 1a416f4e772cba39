"""Solver benchmark: kernel throughput and a full quasi-static solve on cubes of tetrahedra.

    python benchmarks/solver.py --device cpu --sizes 8,16,24
    python benchmarks/solver.py --device cuda --json benchmarks/results/solver-cuda.json

Prints a table (surgtwin.bench.run_bench) and writes the rows as JSON
(default benchmarks/results/solver-<device>.json).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import warp as wp

# no start-up banner or module-load lines (Warp >= 1.10 uses log_level, older versions config.quiet)
if hasattr(wp, "LOG_WARNING"):
    wp.config.log_level = wp.LOG_WARNING
else:
    wp.config.quiet = True

from surgtwin.bench import run_bench  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes wants comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes wants positive integers, got {text!r}")
    return sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Warp device (default cpu)")
    ap.add_argument("--sizes", type=parse_sizes, default=[8, 16, 24],
                    help="cubes per box edge, comma separated (default 8,16,24; n gives 6 n^3 tets)")
    ap.add_argument("--json", type=Path, default=None,
                    help="JSON output (default benchmarks/results/solver-<device>.json)")
    args = ap.parse_args(argv)
    wp.init()
    if args.device == "cuda" and not wp.get_cuda_devices():
        ap.error("--device cuda: no CUDA device is available to Warp")
    json_path = args.json if args.json is not None else RESULTS / f"solver-{args.device}.json"
    run_bench(args.sizes, device=args.device, json_path=json_path)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
