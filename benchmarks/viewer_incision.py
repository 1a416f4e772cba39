"""Latency of a real incision in the viewer on the phantom liver (about 20k tets): the cut (node
duplication, ``cutting.apply_incision``), the re-equilibration (Newton iterations through the session's
``Surgery``), and the scene rebuild on the new topology (off-screen renderer), printed as a table and
written as JSON.

    python benchmarks/viewer_incision.py [--tets 20000] [--depth 15] [--json benchmarks/results/viewer_incision.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def top_path(session, n=3):
    """Picked-like points across the top of the organ surface as it is now [mm]."""
    import pyvista as pv

    grid = pv.UnstructuredGrid({pv.CellType.TETRA: session.mesh.tets[session.alive]}, session.positions_mm)
    p = np.asarray(grid.extract_surface(algorithm="dataset_surface").points)
    top = p[np.argsort(p[:, 2])[-200:]]
    order = np.argsort(top[:, 0])
    k = len(order)
    return top[order[[k // 5, k // 2, 4 * k // 5]]][:n]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tets", type=int, default=20000)
    p.add_argument("--depth", type=float, default=15.0)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "viewer_incision.json")
    args = p.parse_args(argv)

    import pyvista as pv

    from surgtwin.config import RunConfig
    from surgtwin.report import headless_rendering
    from surgtwin.viewer.scene import Scene
    from surgtwin.viewer.session import RehearsalSession
    from surgtwin.viewer.steps import incision_step
    from surgtwin.viewer.worker import run_job

    headless_rendering()
    cfg = RunConfig()
    cfg.mesh.max_tets = args.tets
    t = time.perf_counter()
    s = RehearsalSession.open(None, cfg)
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    run_job(s, "equilibrate", lambda p: None)
    equilibrate_s = time.perf_counter() - t
    pl = pv.Plotter(off_screen=True, window_size=[1280, 800])
    scene = Scene(pl, s)
    pl.render()
    s.pending.clear()
    s.add_step(incision_step(top_path(s), args.depth))
    n0, m0 = len(s.rest_mm), len(s.mesh.tets)
    iterations = []
    t = time.perf_counter()
    msg = run_job(s, "step", lambda pr: iterations.append(pr.frame))
    step_s = time.perf_counter() - t
    rec = s.surgery.log[-1]
    t = time.perf_counter()
    scene.show_frame(s.frame("current"))
    pl.render()
    rebuild_s = time.perf_counter() - t
    t = time.perf_counter()
    scene.show_frame(s.frame("current"))          # same topology: points and scalars only
    pl.render()
    move_s = time.perf_counter() - t
    pl.close()
    out = {"machine": f"{os.cpu_count()}-core CPU, no GPU", "load_average_1min": round(os.getloadavg()[0], 2),
           "tets_before": m0, "nodes_before": n0, "tets_after": int(len(s.mesh.tets)), "nodes_after": int(len(s.rest_mm)),
           "depth_mm": args.depth, "path_length_mm": round(float(np.linalg.norm(np.diff(
               np.asarray(s.applied[-1]["path_mm"]), axis=0), axis=1).sum()), 1),
           "split_elements": rec.detail["split_elements"], "duplicated_nodes": rec.detail["duplicated_nodes"],
           "wound_opening_mm": rec.detail.get("wound_opening_mm"), "newton_iterations": len(iterations),
           "topology_s": rec.detail["topology_seconds"], "step_s": round(step_s, 3),
           "scene_rebuild_s": round(rebuild_s, 3), "scene_move_s": round(move_s, 4),
           "incision_latency_s": round(step_s + rebuild_s, 3), "open_s": round(open_s, 1),
           "equilibrate_s": round(equilibrate_s, 1), "summary": msg}
    print(f"phantom liver {m0} tets / {n0} nodes -> {out['tets_after']} / {out['nodes_after']} after a "
          f"{out['path_length_mm']} mm x {args.depth} mm incision")
    for k in ("split_elements", "duplicated_nodes", "topology_s", "newton_iterations", "step_s", "scene_rebuild_s",
              "scene_move_s", "incision_latency_s", "wound_opening_mm"):
        print(f"{k:>20} {out[k]}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"json: {args.json}")


if __name__ == "__main__":
    main()
