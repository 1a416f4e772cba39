"""Risk-assessment benchmark: the per-element stress kernel and the geometric risk measures.

    python benchmarks/risk.py --device cpu --sizes 8,16,24

Prints a table and writes JSON (default benchmarks/results/risk-<device>.json): the element_stress
launch (von Mises + principal strain) per cube size, and on the phantom label map (2.5 mm) the
structure surfaces, the closest approach of a 100 mm tool path to every structure and the tumour-share
measure of a sphere against a plane.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import warp as wp

if hasattr(wp, "LOG_WARNING"):
    wp.config.log_level = wp.LOG_WARNING

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--sizes", default="8,16,24")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import pyvista as pv

    from surgtwin.config import PhantomConfig
    from surgtwin.phantom import make_phantom
    from surgtwin.risk_geom import ToolPath, closest_approaches, structure_surfaces, tumour_margin_share
    from surgtwin.sim import ModelSpec
    from surgtwin.sim.blocks import box_mesh
    from surgtwin.sim.diagnostics import element_stress

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        pts, tets = box_mesh(n, (0.1, 0.1, 0.1))
        model = ModelSpec(pts, tets, 1, 6e3, 0.47, 1e3, False, 0.0).finalize(args.device)
        state = model.state(pts * 1.05)
        element_stress(model, state)  # compile / warm up
        ms = 1e3 * best_of(lambda: element_stress(model, state))
        rows.append({"what": "element_stress (incl. copy to host)", "size": f"{len(tets)} tets", "ms": round(ms, 3)})
    _, labels = make_phantom(PhantomConfig())
    t = time.perf_counter()
    surfaces = structure_surfaces(labels, exclude=("liver",))
    rows.append({"what": "structure_surfaces (phantom 2.5 mm)", "size": f"{len(surfaces)} structures",
                 "ms": round(1e3 * (time.perf_counter() - t), 1)})
    path = ToolPath("needle", np.array([[-120.0, -150.0, 0.0], [-62.0, -40.0, 2.0]]))
    ms = 1e3 * best_of(lambda: closest_approaches("needle", path.samples(1.25), labels, surfaces), 3)
    rows.append({"what": "closest_approaches, tool path", "size": f"{len(path.samples(1.25))} samples", "ms": round(ms, 1)})
    sphere = pv.Sphere(radius=15.0, theta_resolution=120, phi_resolution=120).triangulate()
    plane = pv.Plane(center=(0, 0, 20.0), direction=(0, 0, 1), i_size=200, j_size=200).triangulate()
    ms = 1e3 * best_of(lambda: tumour_margin_share(np.asarray(sphere.points), sphere.faces.reshape(-1, 4)[:, 1:],
                                                   plane.faces.reshape(-1, 4)[:, 1:], 10.0,
                                                   cut_points_mm=np.asarray(plane.points)), 3)
    rows.append({"what": "tumour_margin_share r 15 mm, 1 mm tiles", "size": f"{sphere.n_cells} triangles", "ms": round(ms, 1)})
    print(f"{'what':42s} {'size':>16s} {'ms':>10s}")
    for r in rows:
        print(f"{r['what']:42s} {r['size']:>16s} {r['ms']:>10}")
    out = args.json or RESULTS / f"risk-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device, "rows": rows}, indent=2) + "\n")
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
