"""Simulator benchmark: static, implicit and explicit solvers on the phantom liver, and NVIDIA Newton's VBD.

    python benchmarks/simulator.py                                  # sizes ~10k, 40k, 100k tets, CPU
    python benchmarks/simulator.py --sizes-mm 9.6,6 --newton-python /tmp/nvenv/bin/python
    python benchmarks/simulator.py --only explicit                  # the explicit rows alone (seconds)

The phantom liver (surgtwin phantom, liver label) is meshed at each element size; material: liver
(E = 6 kPa, nu = 0.47, rho = 1060 kg/m^3, assets/tissues.json); load: gravity -z with the superior 10 % of
the nodes fixed (a hanging liver: the same model in both codes, which have no support springs in common).
Columns:
  static 1%     wall time of the cheapest fresh Newton-PCG solve (1 or 2 gravity steps, residual tolerance
                1e-2 .. 1e-4, tried in order of cost) whose displacement is within 1 % of a tightly
                converged reference (rel. residual REF_TOL, 3 steps)
  static full   the default solve (rel. residual 1e-6, 3 gravity steps)
  BE step       one backward-Euler step of 10 ms from rest
  explicit      time per central-difference sub-step at the stable step (median of 3 runs of 200, or 50
                above 50k tets, sub-steps replayed from a graph), element-steps per second, and the ratio to a
                copy roofline: bytes per sub-step from the model below divided by the copy bandwidth
                measured in the same run (best of 20 wp.copy: 256 MB on CUDA, 64 MB on the CPU). On CPU the
                JSON also holds ``explicit_threads`` (ExplicitSolver(threads=2): the element range split
                over two threads).
Bytes per explicit sub-step (float64, each array touched once; two launches, surgtwin.sim.explicit):
per element tets 16 + Dm^-1 72 + volume 8 + law 4 + law parameters 24 + alive 4 = 128 B; per node
positions gathered 24 + force accumulate (read, write) 48 + force read and clear 48 + true mass, spring
k, anchor 40 + free / (scaled) mass 8 + x, v read/write 96 = 264 B. The two-thread run moves more (a
second force buffer) and is held to the same model.
Newton VBD runs in a virtual environment with ``newton`` (``--newton-python``; any python where
``import newton`` works, e.g. on the GPU machine the same one) as a subprocess on the same mesh, from rest, for
each setting of ``--newton-sweep`` (dt:iterations:k_damp; default 1/60 s with 10 and 50 iterations, 1/600 s
with 10) until within 1 % of the same reference or out of its share of ``--newton-budget-s``; the table shows
the best setting. Every kernel module is compiled before any timing (``warm_up``). ``--mesh-cache DIR`` reads
``liver_<size>mm.npz`` meshes (written there on a machine with the meshing stack), so the benchmark also runs
where only numpy, scipy and warp are installed. Warp's CPU kernels run on one thread: every CPU figure here
but ``explicit_threads`` uses one core. Writes benchmarks/results/simulator-<device>.json
(simulator-explicit-<device>.json with --only explicit).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import warp as wp

if hasattr(wp, "LOG_WARNING"):
    wp.config.log_level = wp.LOG_WARNING
else:
    wp.config.quiet = True

from surgtwin.errors import SurgtwinError  # noqa: E402
from surgtwin.sim import (ExplicitSolver, ImplicitEulerSolver, ModelSpec, StaticSolver,  # noqa: E402
                          lame_parameters)

RESULTS = Path(__file__).resolve().parent / "results"
E_PA, NU, RHO = 6000.0, 0.47, 1060.0
BYTES_PER_ELEMENT, BYTES_PER_NODE = 128, 264
REF_TOL = 1e-7          # reference: relative residual (the float64 round-off floor is ~2e-8 at 1M tets)


def liver_mesh(size_mm: float, cache: Path | None = None):
    """Phantom liver meshed at ``size_mm``: points [m], tets. With ``cache``, read ``liver_<size>mm.npz`` from
    it when present (so a GPU machine without pyvista/SimpleITK can run the benchmark), else mesh and write it."""
    path = None if cache is None else Path(cache) / f"liver_{size_mm:g}mm.npz"
    if path is not None and path.exists():
        with np.load(path) as f:
            return np.asarray(f["points"], np.float64), np.asarray(f["tets"], np.int64)
    from surgtwin.config import PhantomConfig
    from surgtwin.mesh import TetMesh
    from surgtwin.phantom import make_phantom

    _, labels = make_phantom(PhantomConfig())
    mesh = TetMesh.from_labelmap(labels, ["liver"], size_mm=size_mm, organ="liver")
    points, tets = np.asarray(mesh.points, np.float64) * 1e-3, np.asarray(mesh.tets, np.int64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".part.npz")        # then renamed: a killed run leaves no torn file
        np.savez_compressed(tmp, points=points, tets=tets.astype(np.int32))
        os.replace(tmp, path)
    return points, tets


def build(points, tets, device):
    z = points[:, 2]
    fixed = z >= z.max() - 0.1 * np.ptp(z)
    spec = ModelSpec(points, tets, 1, E_PA, NU, RHO, fixed, 0.0, gravity=[0.0, 0.0, -9.81])
    return spec.finalize(device)


def timed(fn, device):
    wp.synchronize_device(device)
    t = time.perf_counter()
    out = fn()
    wp.synchronize_device(device)
    return time.perf_counter() - t, out


def copy_bandwidth(device) -> float:
    """Best bytes per second of wp.copy between two float64 arrays (read + write counted) over 20 copies:
    256 MB on CUDA (five times the H100's L2), 64 MB on the CPU."""
    n = (32 if wp.get_device(device).is_cuda else 8) * 1024 * 1024
    a = wp.ones(n, dtype=wp.float64, device=device)
    b = wp.zeros(n, dtype=wp.float64, device=device)
    wp.copy(b, a)
    ts = [timed(lambda: wp.copy(b, a), device)[0] for _ in range(20)]
    return 2 * 8 * n / float(np.min(ts))


def warm_up(device):
    """Compile (or load) every kernel module the timed solvers launch, on a one-cube model, before any timing."""
    from surgtwin.sim.blocks import box_mesh

    pts, tets = box_mesh((1, 1, 1), (0.01, 0.01, 0.01))
    model = build(pts, tets, device)
    st = model.state()
    StaticSolver(model).solve(st)
    ImplicitEulerSolver(model).step(st, st, None, 0.01)
    ex = ExplicitSolver(model)
    ex.step(st, st, None, 2 * ex.dt)
    wp.synchronize_device(device)


def bench_size(size_mm, cache, device, bandwidth, newton_python, newton_budget, newton_sweep, only=None):
    points, tets = liver_mesh(size_mm, cache)
    model = build(points, tets, device)
    row = {"size_mm": size_mm, "tets": model.tet_count, "nodes": model.node_count, "device": device}
    for key, threads in (("explicit", 1), ("explicit_threads", 2)):
        if threads == 1 or device == "cpu":
            row[key] = bench_explicit(model, device, bandwidth, threads)
    if only == "explicit":
        return row
    ref = model.state()
    t_ref, rep = timed(lambda: StaticSolver(model, tol=REF_TOL).solve_ramped(ref, 3), device)
    x_ref = ref.positions()
    u_ref = np.linalg.norm(x_ref - points)
    row["reference"] = {"seconds": t_ref, "newton": rep.newton_iterations, "cg": rep.cg_iterations,
                        "max_displacement_mm": float(np.linalg.norm(x_ref - points, axis=1).max() * 1e3)}
    # quasi-static to 1 %: the cheapest (load steps, tolerance) whose displacement is within 1 %
    for steps, tol in ((1, 1e-2), (2, 1e-2), (1, 1e-3), (2, 1e-3), (2, 1e-4)):
        st = model.state()
        try:
            t, rep = timed(lambda: StaticSolver(model, tol=tol).solve_ramped(st, steps), device)
        except SurgtwinError:
            continue
        err = float(np.linalg.norm(st.positions() - x_ref) / u_ref)
        if err <= 0.01:                                   # settings are in order of cost: the first one wins
            row["static_1pct"] = {"seconds": t, "load_steps": steps, "tol": tol, "rel_error": err,
                                  "newton": rep.newton_iterations, "cg": rep.cg_iterations}
            break
    st = model.state()
    t, rep = timed(lambda: StaticSolver(model).solve_ramped(st, 3), device)
    row["static_full"] = {"seconds": t, "newton": rep.newton_iterations, "cg": rep.cg_iterations}
    # implicit backward Euler
    be = ImplicitEulerSolver(model)
    st = model.state()
    t, rep = timed(lambda: be.step(st, st, None, 0.01), device)
    row["implicit_step"] = {"seconds": t, "dt": 0.01, "newton": rep.newton_iterations, "cg": rep.cg_iterations}
    if newton_python:
        row["newton_vbd"] = run_newton(newton_python, points, tets, model, x_ref, device, newton_budget,
                                       newton_sweep)
    return row


def bench_explicit(model, device, bandwidth, threads):
    """Central-difference sub-steps from rest (gravity) at the stable step: median time per sub-step."""
    ex = ExplicitSolver(model, threads=threads)
    st = model.state()
    count = 200 if model.tet_count < 50_000 else 50
    ex.step(st, st, None, count * ex.dt)                  # warm up: the graph of this count is captured
    sub = float(np.median([timed(lambda: ex.step(st, st, None, count * ex.dt), device)[0] for _ in range(3)])) / count
    bytes_step = BYTES_PER_ELEMENT * model.tet_count + BYTES_PER_NODE * model.node_count
    return {"threads": ex.threads, "dt_stable_s": ex.dt_stable, "substep_ms": sub * 1e3,
            "element_steps_per_s": model.tet_count / sub, "bytes_per_substep": bytes_step,
            "roofline_ms": bytes_step / bandwidth * 1e3, "ratio_to_roofline": sub * bandwidth / bytes_step}


def run_newton(python, points, tets, model, x_ref, device, budget, sweep):
    mu, lam = (float(v) for v in lame_parameters(E_PA, NU))
    script = Path(__file__).resolve().parent / "newton_vbd.py"
    with tempfile.TemporaryDirectory() as tmp:
        case, out = Path(tmp) / "case.npz", Path(tmp) / "out.json"
        np.savez(case, points=points, tets=tets, fixed=model.spec.fixed, gravity=model.spec.gravity,
                 mu=mu, lam=lam, density=RHO, reference=x_ref)
        try:
            proc = subprocess.run([python, str(script), str(case), str(out), "--device", device,
                                   "--budget-s", str(budget), "--sweep", sweep], capture_output=True, text=True,
                                  timeout=budget + 600)
        except (OSError, subprocess.TimeoutExpired) as err:
            return {"error": f"could not run Newton: {err}"}
        if proc.returncode != 0 or not out.exists():
            return {"error": "Newton run failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]}
        return json.loads(out.read_text())


def print_table(rows):
    head = (f"{'tets':>8} {'static 1% [s]':>13} {'static full [s]':>15} {'BE step [s]':>11} "
            f"{'expl. [ms]':>10} {'Melem-steps/s':>13} {'x roofline':>10} {'VBD step [ms]':>13} {'VBD to 1% [s]':>13}")
    print(head)
    for r in rows:
        nv = r.get("newton_vbd", {})
        vbd_step = f"{nv['step_ms_median']:.1f}" if nv.get("step_ms_median") else "-"
        vbd_1 = (f"{nv['time_to_1pct_s']:.1f}" if nv.get("time_to_1pct_s") else
                 (f">{nv['wall_s']:.0f} ({nv['final_rel_error']:.0%})" if nv.get("wall_s") else "-"))
        s1, full, be = (f"{r[k]['seconds']:.2f}" if k in r else "-"
                        for k in ("static_1pct", "static_full", "implicit_step"))
        print(f"{r['tets']:>8} {s1:>13} {full:>15} "
              f"{be:>11} {r['explicit']['substep_ms']:>10.2f} "
              f"{r['explicit']['element_steps_per_s'] / 1e6:>13.1f} {r['explicit']['ratio_to_roofline']:>10.1f} "
              f"{vbd_step:>13} {vbd_1:>13}")
        if "explicit_threads" in r:
            e = r["explicit_threads"]
            print(f"{'':>8} {'explicit, ' + str(e['threads']) + ' threads:':>41} {e['substep_ms']:>10.2f} "
                  f"{e['element_steps_per_s'] / 1e6:>13.1f} {e['ratio_to_roofline']:>10.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--sizes-mm", default="9.6,6,4.4", help="liver element sizes [mm] (~10k, 40k, 100k tets)")
    ap.add_argument("--newton-python", default=os.environ.get("NEWTON_PYTHON"),
                    help="python of a virtual environment with `newton` installed (none: Newton is skipped)")
    ap.add_argument("--newton-budget-s", type=float, default=60.0, help="wall-time budget per size (all settings)")
    ap.add_argument("--newton-sweep", default="0.0166667:10:0,0.0166667:50:0,0.00166667:10:0",
                    help="Newton VBD settings dt:iterations:k_damp, each from rest (see newton_vbd.py)")
    ap.add_argument("--mesh-cache", type=Path, default=None,
                    help="folder of liver_<size>mm.npz meshes: read when present, else written")
    ap.add_argument("--only", choices=["explicit"], default=None, help="run only these rows")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    wp.init()
    warm_up(args.device)
    bandwidth = copy_bandwidth(args.device)
    rows = []
    for s in (float(v) for v in args.sizes_mm.split(",")):
        rows.append(bench_size(s, args.mesh_cache, args.device, bandwidth, args.newton_python,
                               args.newton_budget_s, args.newton_sweep, args.only))
        print_table(rows[-1:])
    print()
    print_table(rows)
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "warp": wp.__version__},
              "copy_bandwidth_GB_s": bandwidth / 1e9, "material": {"E": E_PA, "nu": NU, "rho": RHO},
              "bytes_model": {"per_element": BYTES_PER_ELEMENT, "per_node": BYTES_PER_NODE}, "rows": rows}
    if not args.newton_python:
        result["newton_vbd"] = "not run: pass --newton-python (a venv with `pip install newton`)"
    path = args.json or RESULTS / f"simulator-{args.only + '-' if args.only else ''}{args.device}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".part").write_text(json.dumps(result, indent=1))
    os.replace(path.with_suffix(".part"), path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
