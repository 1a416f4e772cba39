"""NVIDIA Newton's SolverVBD on a mesh written by benchmarks/simulator.py (runs in Newton's own venv).

    <newton-venv>/bin/python benchmarks/newton_vbd.py case.npz out.json --device cpu --budget-s 60

Reads points [m], tets, fixed mask, gravity, Lame mu/lambda [Pa], density and the reference equilibrium
(surgtwin, tightly converged); steps Newton's VBD (implicit Euler by vertex block descent) with dt and
iterations and Rayleigh damping k_damp as given (``--sweep``: several settings, each from rest) until the
displacement is within 1 % of the reference or the time budget is spent, and writes per-step time and the error
history of every setting as JSON; the top-level keys repeat the best setting (first to 1 %, else lowest
error). Imports only numpy, warp and newton.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import warp as wp


def run_one(newton, model, pts, ref_u, fixed, device, dt, iterations, damping, budget):
    """Step from rest until within 1 % of the reference or ``budget`` seconds; per-step time and errors."""
    mat = model.tet_materials.numpy()
    mat[:, 2] = damping
    model.tet_materials.assign(mat)
    solver = newton.solvers.SolverVBD(model, iterations=iterations)
    s0, s1, ctrl = model.state(), model.state(), model.control()
    solver.step(s0, s1, ctrl, None, dt)                # compile / warm up, then restart from rest
    wp.synchronize_device(device)
    s0, s1 = model.state(), model.state()
    errors, times, reached = [], [], None
    t_start = time.perf_counter()
    while time.perf_counter() - t_start < budget:
        t = time.perf_counter()
        solver.step(s0, s1, ctrl, None, dt)
        wp.synchronize_device(device)
        times.append(time.perf_counter() - t)
        s0, s1 = s1, s0
        u = s0.particle_q.numpy().astype(np.float64) - pts
        err = float(np.linalg.norm(u - ref_u) / np.linalg.norm(ref_u))
        errors.append(err)
        if not np.isfinite(err):
            break
        if err <= 0.01 and reached is None:
            reached = len(errors)
            break
    q = s0.particle_q.numpy().astype(np.float64)
    finite = [e for e in errors if np.isfinite(e)]
    return {"dt": dt, "iterations": iterations, "k_damp": damping, "steps": len(errors),
            "step_ms_median": float(np.median(times) * 1e3) if times else None,
            "wall_s": float(np.sum(times)), "reached_1pct_at_step": reached,
            "time_to_1pct_s": float(np.sum(times[:reached])) if reached else None,
            "time_to_10pct_s": next((float(np.sum(times[:i + 1])) for i, e in enumerate(errors) if e <= 0.1), None),
            "final_rel_error": errors[-1] if errors else None, "min_rel_error": min(finite) if finite else None,
            "fixed_nodes_moved_m": float(np.abs(q[fixed] - pts[fixed]).max()),
            "max_displacement_mm": float(np.linalg.norm(q - pts, axis=1).max() * 1e3),
            "error_history": errors[:: max(1, len(errors) // 50)]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sweep", default="0.0166667:10:0",
                    help="comma-separated dt:iterations:k_damp settings, each run from rest with budget-s / count")
    ap.add_argument("--budget-s", type=float, default=60.0, help="wall-time budget for the whole sweep")
    args = ap.parse_args()
    import newton

    wp.config.quiet = True
    c = np.load(args.case)
    pts, tets, fixed = c["points"], c["tets"], c["fixed"].astype(bool)
    ref_u = c["reference"] - pts
    b = newton.ModelBuilder(up_axis=newton.Axis.Z, gravity=tuple(float(g) for g in c["gravity"]))
    b.add_soft_mesh(pos=(0.0, 0.0, 0.0), rot=wp.quat_identity(), scale=1.0, vel=(0.0, 0.0, 0.0),
                    vertices=[tuple(p) for p in pts], indices=tets.ravel().tolist(), density=float(c["density"]),
                    k_mu=float(c["mu"]), k_lambda=float(c["lam"]), k_damp=0.0)
    for i in np.flatnonzero(fixed):
        b.particle_mass[i] = 0.0                     # kinematic: VBD leaves zero-mass particles in place
    b.color()
    model = b.finalize(device=args.device)
    settings = [tuple(float(v) for v in item.split(":")) for item in args.sweep.split(",")]
    runs = [run_one(newton, model, pts, ref_u, fixed, args.device, dt, int(it), kd, args.budget_s / len(settings))
            for dt, it, kd in settings]
    done = [r for r in runs if r["time_to_1pct_s"] is not None]
    best = (min(done, key=lambda r: r["time_to_1pct_s"]) if done else
            min(runs, key=lambda r: r["min_rel_error"] if r["min_rel_error"] is not None else np.inf))
    out = {"solver": f"newton {newton.__version__} SolverVBD", "device": args.device, "tets": int(len(tets)),
           "reference_max_displacement_mm": float(np.linalg.norm(ref_u, axis=1).max() * 1e3),
           "sweep": runs, **{k: v for k, v in best.items() if k != "error_history"}}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
