"""Display rate of the Qt viewer while the solver works in its worker thread (the phantom liver at
about 20k tets), printed as a table and written as JSON.

The display loop rotates the camera by one degree and redraws on every timer tick (as while a user
drags the view), so the figure is what the UI sustains, not how often the solver delivers frames.
Measured: draws per second during the pre-op equilibrium, Newton iterations per second with and
without the display running, the longest pause of the UI event loop, and idle draws per second.

    python benchmarks/viewer_fps.py [--tets 20000] [--json benchmarks/results/viewer_fps.json]

Needs a display; without one it re-runs itself under xvfb-run (software OpenGL: the numbers are a
floor for any machine with a GPU driver).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


GL_RENDERER = ["unknown"]


def measure(session_factory, opacity: float, seconds_idle: float = 3.0) -> dict:
    from PySide6 import QtCore, QtWidgets

    from surgtwin.viewer.app import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    s = session_factory()
    win = MainWindow(s, "displacement")
    win.timer.stop()
    win.resize(1280, 800)
    win.show()
    organ = s.cfg.mesh.organ
    win.scene.set_structure(organ, opacity=opacity)
    for _ in range(20):
        app.processEvents()
    caps = [l for l in win.plotter.ren_win.ReportCapabilities().splitlines() if "renderer string" in l]
    GL_RENDERER[0] = caps[0].split(":", 1)[1].strip() if caps else "unknown"
    draws = []
    win.plotter.ren_win.AddObserver("EndEvent", lambda *_: draws.append(time.perf_counter()))

    def tick():
        frame = win.buffer.take()
        if frame is not None:
            win.scene.show_frame(frame)
        win.plotter.camera.azimuth += 1.0
        win.plotter.render()

    timer = QtCore.QTimer()
    timer.timeout.connect(tick)
    timer.start(int(1000 / 60))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds_idle:
        app.processEvents()
    idle_fps = len(draws) / (time.perf_counter() - t0)
    draws.clear()
    frames0 = len(s.recording)
    gaps, last = [], time.perf_counter()
    t0 = time.perf_counter()
    win.start_job("equilibrate")
    while win.busy:
        app.processEvents()
        now = time.perf_counter()
        gaps.append((now - last, last - t0))
        last = now
    solve_s = time.perf_counter() - t0
    timer.stop()
    iterations = range(len(s.recording) - frames0)
    result = {"organ_opacity": opacity, "idle_draws_per_s": round(idle_fps, 1),
              "draws_per_s_while_solving": round(len([d for d in draws if d >= t0]) / solve_s, 1),
              "solve_s": round(solve_s, 2), "newton_iterations": len(iterations),
              "newton_per_s_with_display": round(len(iterations) / solve_s, 2),
              "max_event_loop_pause_s": round(max(gaps)[0], 3),
              "max_pause_ends_s_before_done": round(solve_s - sum(max(gaps)), 2)}
    win.close()
    app.processEvents()
    return result


def solver_alone(session_factory) -> dict:
    from surgtwin.viewer.worker import run_job

    s = session_factory()
    n = []
    t0 = time.perf_counter()
    run_job(s, "equilibrate", lambda p: n.append(1))
    dt = time.perf_counter() - t0
    return {"solve_s": round(dt, 2), "newton_iterations": len(n), "newton_per_s": round(len(n) / dt, 2),
            "tets": int(len(s.mesh.tets)), "nodes": int(len(s.rest_mm))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tets", type=int, default=20000)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "viewer_fps.json")
    args = p.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("_VIEWER_FPS_CHILD"):
        xvfb = shutil.which("xvfb-run")
        if not xvfb:
            sys.exit("no display and no xvfb-run")
        env = dict(os.environ, _VIEWER_FPS_CHILD="1")
        sys.exit(subprocess.call([xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, __file__,
                                  "--tets", str(args.tets), "--json", str(args.json)], env=env))

    from surgtwin.config import RunConfig
    from surgtwin.viewer.session import RehearsalSession

    cfg = RunConfig()
    cfg.mesh.max_tets = args.tets
    base = RehearsalSession.open(None, cfg)

    def fresh():
        s = RehearsalSession(base.mesh, cfg, labels=base.labels, volume=base.volume, surfaces=base.surfaces,
                             name="phantom")
        s._base_spec = base.model_spec()
        return s

    alone = solver_alone(fresh)
    rows = [measure(fresh, 0.55), measure(fresh, 1.0)]
    import vtk

    out = {"machine": f"{os.cpu_count()}-core CPU, no GPU; OpenGL: {GL_RENDERER[0]}",
           "vtk": vtk.vtkVersion.GetVTKVersion(), "load_average_1min": round(os.getloadavg()[0], 2),
           "solver_alone": alone, "display": rows}
    print(f"phantom liver: {alone['tets']} tets, {alone['nodes']} nodes; pre-op equilibrium "
          f"{alone['newton_iterations']} Newton iterations, {alone['newton_per_s']:.2f}/s without display")
    print(f"{'organ opacity':>14} {'idle fps':>9} {'fps solving':>12} {'Newton/s':>9} {'max UI pause s':>15}")
    for r in rows:
        print(f"{r['organ_opacity']:>14} {r['idle_draws_per_s']:>9} {r['draws_per_s_while_solving']:>12} "
              f"{r['newton_per_s_with_display']:>9} {r['max_event_loop_pause_s']:>15}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"json: {args.json}")


if __name__ == "__main__":
    main()
