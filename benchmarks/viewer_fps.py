"""Display rate of the Qt viewer while the solver works in its worker thread (the phantom liver at
about 20k tets), printed as a table and written as JSON.

A user rotates the view with the mouse the whole time: a 60 Hz timer sends left-button drag events
to the 3D view (VTK's trackball style turns the camera and asks for a draw), as a hand on the mouse
would. Counted are the frames actually shown (the view's ``frameSwapped``), not renders: the two
differ where a widget renders a frame more than once. Measured: frames shown per second with the
solver idle and during the pre-op equilibrium, VTK renders per frame shown, CPU time per frame shown
(solver idle), Newton iterations per second with and without the display, the longest pause of the
UI event loop.

    python benchmarks/viewer_fps.py [--tets 20000] [--label after] [--json benchmarks/results/viewer_fps.json]

Needs a display; without one it re-runs itself under xvfb-run (software OpenGL: the numbers are a
floor for any machine with a GPU driver). With ``--label`` the row is added to (or replaces the row of
that label in) the JSON file, so two code versions can be compared on one machine.
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


def _drag(widget):
    """A 60 Hz mouse drag on ``widget`` (left button held, back and forth); returns the timer."""
    from PySide6 import QtCore, QtGui, QtWidgets

    centre = QtCore.QPointF(widget.width() / 2, widget.height() / 2)
    state = {"i": 0}

    def send(kind, pos, buttons):
        ev = QtGui.QMouseEvent(kind, pos, widget.mapToGlobal(pos), QtCore.Qt.LeftButton, buttons,
                               QtCore.Qt.NoModifier)
        QtWidgets.QApplication.sendEvent(widget, ev)

    def move():
        state["i"] += 1
        dx = 4.0 * ((state["i"] // 40) % 2 * 2 - 1)          # 40 moves right, 40 left, ...
        send(QtCore.QEvent.MouseMove, centre + QtCore.QPointF(dx * (state["i"] % 40), 0), QtCore.Qt.LeftButton)

    send(QtCore.QEvent.MouseButtonPress, centre, QtCore.Qt.LeftButton)
    timer = QtCore.QTimer()
    timer.timeout.connect(move)
    timer.start(int(1000 / 60))
    return timer


def measure(session_factory, opacity: float, seconds_idle: float = 4.0) -> dict:
    from PySide6 import QtWidgets

    from surgtwin.viewer.app import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    s = session_factory()
    win = MainWindow(s, "displacement")
    win.resize(1280, 800)
    win.show()
    win.scene.set_structure(s.cfg.mesh.organ, opacity=opacity)
    for _ in range(20):
        app.processEvents()
    caps = [line for line in win.plotter.ren_win.ReportCapabilities().splitlines() if "renderer string" in line]
    shown, renders = [], []
    win.plotter.frameSwapped.connect(lambda: shown.append(time.perf_counter()))
    win.plotter.ren_win.AddObserver("EndEvent", lambda *_: renders.append(time.perf_counter()))
    drag = _drag(win.plotter)
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds_idle:
        app.processEvents()
    idle_s, idle_cpu = time.perf_counter() - t0, time.process_time() - c0
    idle = {"fps": len(shown) / idle_s, "renders_per_frame": len(renders) / max(len(shown), 1),
            "cpu_ms_per_frame": 1e3 * idle_cpu / max(len(shown), 1)}
    shown.clear()
    renders.clear()
    frames0 = len(s.recording)
    gaps, last = [], time.perf_counter()
    t0 = time.perf_counter()
    win.start_job("equilibrate")
    while win.busy:
        app.processEvents()
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    solve_s = time.perf_counter() - t0
    drag.stop()
    iterations = len(s.recording) - frames0
    shown_solving = len([t for t in shown if t <= t0 + solve_s])
    result = {"organ_opacity": opacity, "opengl": caps[0].split(":", 1)[1].strip() if caps else "unknown",
              "fps_idle": round(idle["fps"], 1), "renders_per_frame": round(idle["renders_per_frame"], 2),
              "cpu_ms_per_frame": round(idle["cpu_ms_per_frame"], 1),
              "fps_while_solving": round(shown_solving / solve_s, 1), "solve_s": round(solve_s, 2),
              "newton_iterations": iterations, "newton_per_s_with_display": round(iterations / solve_s, 2),
              "max_event_loop_pause_s": round(max(gaps), 3)}
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
    p.add_argument("--opacity", type=float, default=0.55, help="organ opacity (the viewer's default: 0.55)")
    p.add_argument("--label", default="current", help="name of this row (e.g. the code version)")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "viewer_fps.json")
    args = p.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("_VIEWER_FPS_CHILD"):
        xvfb = shutil.which("xvfb-run")
        if not xvfb:
            sys.exit("no display and no xvfb-run")
        env = dict(os.environ, _VIEWER_FPS_CHILD="1")
        sys.exit(subprocess.call([xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, __file__,
                                  *sys.argv[1:]], env=env))

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
    row = {"label": args.label, "load_average_1min": round(os.getloadavg()[0], 2), "solver_alone": alone,
           **measure(fresh, args.opacity)}
    import vtk

    old = json.loads(args.json.read_text()) if args.json.is_file() else {}
    rows = [r for r in old.get("rows", []) if r.get("label") != args.label] + [row]
    out = {"machine": f"{os.cpu_count()}-core CPU, no GPU", "vtk": vtk.vtkVersion.GetVTKVersion(),
           "window": "1280x800, mouse drag at 60 Hz", "rows": rows}
    print(f"phantom liver: {alone['tets']} tets, {alone['nodes']} nodes; pre-op equilibrium "
          f"{alone['newton_iterations']} Newton iterations, {alone['newton_per_s']:.2f}/s without display; "
          f"OpenGL: {row['opengl']}")
    cols = [("label", "label"), ("load", "load_average_1min"), ("fps idle", "fps_idle"),
            ("renders/frame", "renders_per_frame"), ("CPU ms/frame", "cpu_ms_per_frame"),
            ("fps solving", "fps_while_solving"), ("Newton/s", "newton_per_s_with_display"),
            ("Newton/s alone", None), ("max UI pause s", "max_event_loop_pause_s")]
    print(" | ".join(c for c, _ in cols))
    for r in rows:
        print(" | ".join(str(r["solver_alone"]["newton_per_s"] if k is None else r[k]) for _, k in cols))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"json: {args.json}")


if __name__ == "__main__":
    main()
