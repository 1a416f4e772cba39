"""Drives the Qt viewer in its own process (under Xvfb) for tests/test_viewer.py; writes result.json.

    python tests/viewer_driver.py RUN_FOLDER OUT_FOLDER

Kept out of the pytest process so a Qt/X failure cannot take the test session down.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import vtk
from PySide6 import QtCore, QtWidgets


def pump(app, seconds=0.2):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def pick_surface_point(win, x, y):
    """A real VTK pick at display position (x, y) on the rendered organ, as a mouse click would do."""
    picker = vtk.vtkCellPicker()
    picker.SetTolerance(0.0005)
    picker.PickFromListOn()
    picker.AddPickList(win.scene.actors[win.s.cfg.mesh.organ])
    if picker.Pick(x, y, 0, win.plotter.renderer) and picker.GetCellId() >= 0:
        return np.array(picker.GetPickPosition())
    return None


def drag(widget, points, app):
    """A left-button mouse drag over ``widget`` through ``points`` (widget pixels), the event loop turning
    after every move (as between the moves of a hand)."""
    from PySide6 import QtGui

    button = QtCore.Qt.LeftButton

    def send(kind, pos, buttons):
        QtWidgets.QApplication.sendEvent(widget, QtGui.QMouseEvent(kind, pos, widget.mapToGlobal(pos), button, buttons,
                                                                   QtCore.Qt.NoModifier))
        pump(app, 0.05)
    points = [QtCore.QPointF(float(x), float(y)) for x, y in points]
    send(QtCore.QEvent.MouseButtonPress, points[0], button)
    for p in points[1:]:
        send(QtCore.QEvent.MouseMove, p, button)
    send(QtCore.QEvent.MouseButtonRelease, points[-1], QtCore.Qt.NoButton)


def widget_xy(win, point):
    """Widget pixel position of a world point [mm] (Qt: y down)."""
    ren = win.plotter.renderer
    ren.SetWorldPoint(*point, 1.0)
    ren.WorldToDisplay()
    x, y, _ = ren.GetDisplayPoint()
    return x, win.plotter.ren_win.GetSize()[1] - 1 - y


def live_volume(session) -> float:
    return float(session.mesh.tet_volumes_mm3()[session.alive].sum())


def main(run: str, out: str):
    out = Path(out)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    from surgtwin.viewer.app import MainWindow
    from surgtwin.viewer.session import RehearsalSession

    res = {}
    session = RehearsalSession.open(run)
    session.pending.clear()
    win = MainWindow(session, "displacement")
    win.resize(1100, 800)
    win.show()
    pump(app, 0.5)
    res["tabs"] = [win.tabs.tabText(i) for i in range(win.tabs.count())]

    # the display: nothing drawn while nothing changes; a mouse drag turns the camera, one render per frame shown
    renders, shown = [], []
    win.plotter.ren_win.AddObserver("EndEvent", lambda *_: renders.append(1))
    win.plotter.frameSwapped.connect(lambda: shown.append(1))
    pump(app, 0.5)
    res["idle_renders"] = len(renders)
    position = np.array(win.plotter.camera.position)
    cx, cy = win.plotter.width() / 2, win.plotter.height() / 2
    drag(win.plotter, [(cx, cy), (cx + 20, cy), (cx + 40, cy + 5), (cx + 60, cy + 10)], app)
    res["drag_renders"], res["drag_frames_shown"] = len(renders), len(shown)
    res["drag_camera_moved_mm"] = float(np.linalg.norm(np.array(win.plotter.camera.position) - position))
    win.plotter.camera.position = tuple(position)
    win.scene.reset_camera()
    pump(app, 0.1)
    res["structures"] = list(win.structures.names)
    from PySide6.QtTest import QTest

    win.activateWindow()
    win.plotter.interactor.setFocus()
    pump(app, 0.2)
    QTest.keyClick(win.plotter.interactor, QtCore.Qt.Key_2)   # shortcut: strain overlay
    pump(app, 0.1)
    res["overlay_after_key_2"] = win.overlay_box.currentText()
    QTest.keyClick(win.plotter.interactor, QtCore.Qt.Key_1)
    pump(app, 0.1)
    res["overlay_after_key_1"] = win.overlay_box.currentText()
    QTest.keyClick(win.plotter.interactor, QtCore.Qt.Key_5)
    pump(app, 0.1)
    res["overlay_after_key_5"] = win.overlay_box.currentText()
    QTest.keyClick(win.plotter.interactor, QtCore.Qt.Key_1)
    pump(app, 0.1)
    res["slice_rgb_colours"] = int(len(np.unique(win.slice.rgb(win.slice.slider.value()).reshape(-1, 3), axis=0)))

    # incision path: picks across the middle of the rendered organ
    w, h = win.plotter.renderer.GetSize()
    picks = [pick_surface_point(win, int(w * fx), int(h * 0.55)) for fx in (0.36, 0.5, 0.64)]
    picks = [p for p in picks if p is not None]
    res["picked"] = len(picks)
    for p in picks:
        win.add_path_point(p)
    win.procedure.depth.setValue(15.0)     # the test mesh is coarse (12 mm elements)
    res["committed"] = win.commit_incision()
    res["pending_after_commit"] = [s["action"] for s in session.pending]
    res["incision_keys"] = sorted(session.pending[0]) if session.pending else []

    cells_before = int(win.scene.organ_surface().n_cells)
    nodes_before, elements_before = len(session.rest_mm), len(session.mesh.tets)
    volume_before = live_volume(session)
    x_before = session.positions_mm.copy()
    win.set_overlay("none")
    win.screenshot(out / "none.png")
    win.set_overlay("displacement")

    # run the step; a 10 ms UI timer counts event-loop turns while the worker solves
    ticks = {"during_solve": 0}
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.__setitem__("during_solve", ticks["during_solve"] + (1 if win.busy else 0)))
    timer.start(10)
    res["started"] = win.start_job("step")
    res["second_start_refused"] = not win.start_job("step")
    frames_shown = 0
    while win.busy:
        app.processEvents()
        frames_shown = len(session.recording)
        time.sleep(0.002)
    pump(app, 0.3)
    timer.stop()
    res["ticks_during_solve"] = ticks["during_solve"]
    res["recorded_frames"] = frames_shown
    res["status"] = win.statusBar().currentMessage()
    res["nodes_before"], res["nodes_after"] = nodes_before, len(session.rest_mm)
    res["elements_before"], res["elements_after"] = elements_before, len(session.mesh.tets)
    res["volume_before"], res["volume_after"] = volume_before, live_volume(session)
    res["cells_before"], res["cells_after"] = cells_before, int(win.scene.organ_surface().n_cells)
    res["scene_points"] = int(win.scene.organ_surface().n_points)
    res["scene_on_cut_mesh"] = win.scene.mesh is session.mesh
    res["duplicated_nodes"] = int(len(session.surgery.twins))
    res["wound_opening_mm"] = session.surgery.wound_opening_mm()
    res["incision_seconds"] = session.surgery.log[-1].seconds if session.surgery.log else None
    res["max_node_move_mm"] = float(np.abs(session.positions_mm[:nodes_before] - x_before).max())
    res["applied"] = [s["action"] for s in session.applied]
    win.screenshot(out / "displacement.png")
    win.set_overlay("strain")
    win.screenshot(out / "strain.png")
    win.set_overlay("stress")                  # von Mises of the solver's last iteration
    win.screenshot(out / "stress.png")
    kpa, style = win.scene.overlay_values()
    res["stress_kpa_max"], res["stress_title"] = float(np.nanmax(kpa)), style.title
    res["stress_frame_pa_max"] = float(session.stress_pa.max())
    win.set_overlay("displacement")

    # grasp and drag: a grasp point picked on the organ, three Shift+Up moves, the retraction added and run
    gp = pick_surface_point(win, int(w * 0.45), int(h * 0.5))
    res["grasp_added"] = gp is not None and win.add_grasp_point(gp)
    win.plotter.interactor.setFocus()
    pump(app, 0.05)
    for _ in range(3):
        QTest.keyClick(win.plotter.interactor, QtCore.Qt.Key_Up, QtCore.Qt.ShiftModifier)
    pump(app, 0.1)
    res["tool_moves"] = len(win.tool_path)
    res["tool_move_mm"] = float(np.linalg.norm(win.tool_path[-1] - win.tool_tip)) if win.tool_path else 0.0
    res["retraction_added"] = win.commit_retraction()
    res["tool_pending"] = [s["action"] for s in session.pending]
    win.start_job("run")
    while win.busy:
        app.processEvents()
        time.sleep(0.002)
    pump(app, 0.2)
    res["tool_status"] = win.statusBar().currentMessage()
    res["tool_force_text"] = win.solver.force.text()
    forces = session.tool_forces()
    res["tool_force_n"] = float(np.linalg.norm(forces["grasper"])) if "grasper" in forces else 0.0
    res["applied_after_tool"] = [s["action"] for s in session.applied]

    # the tool's handle dragged 40 px up the screen with the mouse: dropped, the retraction runs at once
    held = session.surgery.tools["grasper"].nodes.copy()
    x_held = session.positions_mm[held].mean(axis=0)
    c0 = np.array(win.tool_handle.GetCenter())
    res["handle_at_tool_tip"] = bool(np.allclose(c0, win.tool_tip))
    x, y = widget_xy(win, c0)
    drag(win.plotter, [(x, y), (x, y - 10), (x, y - 20), (x, y - 30), (x, y - 40)], app)
    res["mouse_drag_started_job"] = win.busy
    while win.busy:
        app.processEvents()
        time.sleep(0.002)
    pump(app, 0.2)
    moved = np.asarray(win.tool_tip) - c0
    res["handle_drag_mm"] = float(np.linalg.norm(moved))
    res["handle_drag_up"] = float(moved @ np.asarray(win.plotter.camera.up) / max(np.linalg.norm(moved), 1e-9))
    res["held_follow_mm"] = float((session.positions_mm[held].mean(axis=0) - x_held) @ moved / max(np.linalg.norm(moved), 1e-9))
    res["applied_after_mouse_drag"] = [s["action"] for s in session.applied]
    res["mouse_drag_status"] = win.statusBar().currentMessage()
    res["new_handle_at_drop"] = bool(np.allclose(win.tool_handle.GetCenter(), win.tool_tip))

    # plane widget: through the tumour the plan is refused; moved 40 mm back from the removed side it is added
    win.toggle_plane()
    res["plane_through_tumour_refused"] = not win.add_resection()
    res["plane_refusal_message"] = win.statusBar().currentMessage()
    normal, origin = win.plane
    win._plane_moved(normal, origin - 40.0 * normal / np.linalg.norm(normal))
    res["plane_added"] = win.add_resection()
    res["plane_step"] = dict(session.pending[-1]) if session.pending else {}
    win.toggle_plane()
    if res["plane_added"]:
        win.procedure.list.setCurrentRow(win.procedure.list.count() - 1)
        res["plane_removed"] = win.remove_selected_step()
        res["pending_after_remove"] = [s["action"] for s in session.pending]

    # resection (sphere, 10 mm), run, then undo it
    win.procedure.mode.setCurrentText("sphere")
    win.procedure.margin.setValue(10.0)
    res["resection_added"] = win.add_resection()
    win.start_job("run")
    while win.busy:
        app.processEvents()
        time.sleep(0.002)
    pump(app, 0.2)
    res["volume_after_resection"] = live_volume(session)
    res["risk_rows"] = [win.risk.item(r, 0).text() for r in range(win.risk.rowCount())]
    win.toggle_margin_sphere()
    win.toggle_clip()
    win.screenshot(out / "resection.png")
    win.toggle_clip()
    win.toggle_margin_sphere()
    win.save_plan_dialog(str(out / "plans" / "procedure" / "viewer_plan.yaml"))
    win.undo()
    res["volume_after_undo"] = live_volume(session)
    res["nodes_after_undo"] = len(session.rest_mm)
    res["pending_after_undo"] = [s["action"] for s in session.pending]

    # playback: first recorded frame vs last
    win.timeline.setValue(0)
    pump(app, 0.1)
    win.screenshot(out / "frame0.png")
    res["timeline_max"] = win.timeline.maximum()
    movie = win.export_movie(out / "rehearsal.mp4", fps=5)
    res["movie"] = str(movie)
    win.close()
    pump(app, 0.1)
    (out / "result.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
