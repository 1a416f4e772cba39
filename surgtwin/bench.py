"""Solver speed on a cube of tetrahedra: kernel throughput and a full quasi-static solve.

Printed as a table and written as JSON. ``benchmarks/solver.py`` and ``surgtwin bench`` call this.
"""
from __future__ import annotations

import json
import platform
import time

import numpy as np
import warp as wp

from .fileio import write_json
from .sim import ModelSpec, StaticSolver
from .sim.blocks import box_mesh

def _time(fn, device, repeat=5):
    fn()
    wp.synchronize_device(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        wp.synchronize_device(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_case(n: int, device: str) -> dict:
    pts, tets = box_mesh(n)
    spec = ModelSpec(pts, tets, 1, 5000.0, 0.45, 1000.0, pts[:, 2] < 1e-9, 0.0, gravity=[0.0, 0.0, -9.81])
    model = spec.finalize(device)
    solver = StaticSolver(model)
    state = model.state()
    f_time = _time(lambda: solver.forces(state.x), device)
    hv = lambda: solver._hessian_product(state.x, state.x, solver._q)  # noqa: E731
    h_time = _time(hv, device)
    t = time.perf_counter()
    rep = solver.solve_ramped(state, 2)
    wp.synchronize_device(device)
    solve = time.perf_counter() - t
    return {"n": n, "tets": int(len(tets)), "nodes": int(len(pts)), "device": device,
            "force_ms": f_time * 1e3, "tangent_product_ms": h_time * 1e3, "solve_s": solve,
            "newton": rep.newton_iterations, "cg": rep.cg_iterations, "relative_residual": rep.relative_residual}


def run_bench(sizes, *, device: str = "cpu", json_path=None) -> list[dict]:
    rows = [bench_case(n, device) for n in sizes]
    head = f"{'tets':>9} {'nodes':>8} {'force [ms]':>11} {'K*v [ms]':>9} {'solve [s]':>10} {'Newton':>7} {'CG':>6} {'rel.res':>9}"
    print(f"surgtwin solver benchmark on {device} ({platform.processor() or platform.machine()})")
    print(head)
    for r in rows:
        print(f"{r['tets']:>9} {r['nodes']:>8} {r['force_ms']:>11.3f} {r['tangent_product_ms']:>9.3f} "
              f"{r['solve_s']:>10.2f} {r['newton']:>7} {r['cg']:>6} {r['relative_residual']:>9.1e}")
    if json_path is not None:
        write_json(json_path, {"device": device, "machine": platform.machine(), "warp": wp.__version__,
                               "rows": rows})
    return rows


if __name__ == "__main__":
    print(json.dumps(run_bench([8]), indent=1))
