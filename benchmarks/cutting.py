"""Cutting benchmark: robustness of 10,000 random cuts and the cut-step latency on a ~100k-tet mesh.

    python benchmarks/cutting.py                  # 10,000 cuts + latency, JSON to benchmarks/results/cutting.json
    python benchmarks/cutting.py --cuts 500       # a quick run

Robustness: random incisions (2-4 point polylines, oblique blades, random depths) and random plane /
sphere resections, one to three in a row (so cuts extend and intersect earlier ones) on random box
meshes of 8-750 tets (half with jittered interior nodes) in a random deformed state. A cut fails if it
raises, leaves a non-finite position, an inverted element or a sliver (< 1e-3 of its parent's volume),
changes the total volume by more than 1e-12 relative, or leaves a boundary edge not shared by
exactly two boundary faces. Latency: topology update + state transfer (``apply_incision`` /
``apply_resection`` wall time, new ModelSpec and positions included) on a 101,400-tet block.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from surgtwin.cutting import apply_incision, apply_resection, cut_defect, total_volume
from surgtwin.tetsplit import split_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_cutting import block_spec as block, random_cut  # noqa: E402  (the tests' random cuts and blocks)

RESULTS = Path(__file__).resolve().parent / "results"
MM = 1e-3


def robustness(cuts: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    failures, done, kinds, meshes = [], 0, {"incision": 0, "resection": 0}, 0
    t0 = time.perf_counter()
    while done < cuts:
        meshes += 1
        spec = block(rng.integers(1, 6, 3) + np.array([1, 1, 0]), 10.0, 0.2 * (meshes % 2), rng)
        x = spec.points + rng.normal(0, 0.3 * MM, spec.points.shape)
        v0 = total_volume(spec)
        for _ in range(int(rng.integers(1, 4))):
            try:
                ch = random_cut(spec, x, rng)
                why = cut_defect(spec, ch, v0)
            except Exception as exc:  # a crash is a failure, recorded with its cause
                ch, why = None, f"exception: {exc!r} {traceback.format_exc(limit=2).splitlines()[-1]}"
            done += 1
            if why:
                failures.append({"cut": done, "mesh": meshes, "why": why})
                break
            kinds[ch.kind] += 1
            spec, x = ch.spec, ch.positions
            if not spec.alive.any() or done >= cuts:
                break
    return {"cuts": done, "meshes": meshes, "failures": len(failures), "first_failures": failures[:10],
            "by_kind": kinds, "seconds": time.perf_counter() - t0}


def latency(repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    spec = block((26, 26, 25), 4.0, 0.0, rng)            # 104 x 104 x 100 mm, 101,400 tets
    x = spec.points + rng.normal(0, 0.2 * MM, spec.points.shape)
    cases = {
        "incision 60 mm x 20 mm deep": lambda: apply_incision(spec, x, [[22.0, 30.0, 100.0], [52.0, 52.0, 100.0],
                                                                         [82.0, 60.0, 100.0]], 20.0,
                                                              direction=[0, 0, -1.0]),
        "incision, default direction": lambda: apply_incision(spec, x, [[30.0, 50.0, 100.0], [70.0, 54.0, 100.0]], 15.0),
        "plane resection": lambda: apply_resection(spec, x, 71.3 - spec.points[:, 0] / MM),
        "sphere resection r 20 mm": lambda: apply_resection(
            spec, x, np.linalg.norm(spec.points / MM - [52.0, 52.0, 80.0], axis=1) - 20.0),
    }
    rows = []
    for name, fn in cases.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            ch = fn()
            times.append(time.perf_counter() - t)
        rows.append({"case": name, "tets": int(len(spec.tets)), "median_ms": 1e3 * float(np.median(times)),
                     "min_ms": 1e3 * float(np.min(times)), "split_elements": int(ch.split_elements),
                     "duplicated_nodes": int(ch.duplicated_nodes), "tets_after": int(len(ch.tets))})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=RESULTS / "cutting.json")
    args = ap.parse_args(argv)
    split_table()  # built once per process (~0.5 s), not part of a cut
    rob = robustness(args.cuts, args.seed)
    print(f"robustness: {rob['cuts']} cuts on {rob['meshes']} meshes ({rob['by_kind']}), "
          f"{rob['failures']} failures, {rob['seconds']:.0f} s")
    for f in rob["first_failures"]:
        print("  ", f)
    rows = latency(args.repeats)
    print(f"\ncut step latency, topology update + state transfer, CPU ({os.cpu_count()} cores), median of {args.repeats}")
    print(f"{'case':32s} {'tets':>8s} {'median ms':>10s} {'min ms':>8s} {'split':>6s} {'dup':>5s}")
    for r in rows:
        print(f"{r['case']:32s} {r['tets']:8d} {r['median_ms']:10.1f} {r['min_ms']:8.1f} "
              f"{r['split_elements']:6d} {r['duplicated_nodes']:5d}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"robustness": rob, "latency": rows, "machine": platform.platform(),
                                     "device": "cpu (numpy topology update)"}, indent=2))
    print(f"\nJSON: {args.json}")
    return 0 if rob["failures"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
