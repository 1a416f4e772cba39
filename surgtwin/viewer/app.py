"""The Qt rehearsal window: 3D scene (pyvistaqt) + side panels, solver in a QThread, live display loop.

    surgtwin view [RUN or CASE]        # no argument: the built-in phantom
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ..errors import ConfigError, SurgtwinError
from ..fileio import atomic_path
from . import panels as pn
from .display import View
from .overlays import OVERLAY_KEYS, OVERLAYS, over_threshold
from .scene import Scene
from .session import RehearsalSession
from .sources import add_bones
from .steps import grasp_step, incision_step, release_step, resect_step, retract_step, save_plan
from .worker import FrameBuffer, make_thread_class


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, session: RehearsalSession, overlay: str = "displacement", display_hz: float = 60.0):
        super().__init__()
        self.s = session
        self.setWindowTitle(f"surgtwin – {session.name}")
        self.resize(1500, 950)
        self.plotter = View(self)
        self.setCentralWidget(self._central())
        add_bones(session)
        self.statusBar().showMessage("ready (F1: keyboard shortcuts)")
        self.scene = Scene(self.plotter, session)
        self.scene.set_overlay(overlay if overlay in OVERLAYS else "displacement")
        self.buffer = FrameBuffer()
        self.thread = None
        self.path: list[np.ndarray] = []
        self.tool_tip = None                  # where the planned tool is (after its grasp/moves so far) [mm]
        self.tool_path: list[np.ndarray] = []  # tool moves not yet added as a retraction
        self.tool_handle = None               # the sphere widget on the tool tip (mouse drag)
        self._drag_waiting = False
        self.plane = None                     # (normal, origin) of the resection plane widget
        self.clip_on = False
        self._draws: list[float] = []
        self.plotter.frameSwapped.connect(lambda: self._draws.append(time.perf_counter()))
        self._build_panels()
        self._shortcuts()
        self.timer = QtCore.QTimer(self)       # the display loop: never waits on the solver
        self.timer.timeout.connect(self._tick)
        self.timer.start(int(1000 / display_hz))
        self.play_timer = QtCore.QTimer(self)
        self.play_timer.timeout.connect(self._play_tick)
        self.refresh()
        if not session.equilibrated:
            QtCore.QTimer.singleShot(0, lambda: self.start_job("equilibrate"))

    # -- layout --
    def _central(self):
        w = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(w)
        lay.addWidget(self.plotter.interactor, 1)
        row = QtWidgets.QHBoxLayout()
        self.play_btn = QtWidgets.QPushButton("▶")
        self.play_btn.setCheckable(True)
        self.play_btn.toggled.connect(lambda on: self.play_timer.start(80) if on else self.play_timer.stop())
        self.timeline = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.timeline.valueChanged.connect(self.show_recorded)
        self.frame_label = QtWidgets.QLabel()
        self.overlay_box = QtWidgets.QComboBox()
        self.overlay_box.addItems(OVERLAYS)
        self.overlay_box.currentTextChanged.connect(self.set_overlay)
        self.ref_box = QtWidgets.QComboBox()
        self.ref_box.addItems(["from start", "from rest"])
        self.ref_box.currentIndexChanged.connect(lambda i: self._redraw(self.scene.set_reference(("start", "rest")[i])))
        for x in (self.play_btn, self.timeline, self.frame_label, QtWidgets.QLabel("overlay"), self.overlay_box,
                  self.ref_box):
            row.addWidget(x, 1 if x is self.timeline else 0)
        lay.addLayout(row)
        return w

    def _build_panels(self):
        s = self.s
        self.structures = pn.StructurePanel(self.scene.props)
        self.structures.changed.connect(lambda n, kw: self._redraw(self.scene.set_structure(n, **kw)))
        self.procedure = pn.ProcedurePanel()
        p = self.procedure
        p.run_btn.clicked.connect(lambda: self.start_job("run"))
        p.step_btn.clicked.connect(lambda: self.start_job("step"))
        p.undo_btn.clicked.connect(self.undo)
        p.stop_btn.clicked.connect(self.stop)
        p.remove_btn.clicked.connect(self.remove_selected_step)
        p.incise_btn.toggled.connect(self.set_incision_mode)
        p.add_incision_btn.clicked.connect(self.commit_incision)
        p.add_resect_btn.clicked.connect(self.add_resection)
        p.save_btn.clicked.connect(lambda: self.save_plan_dialog())
        p.grasp_btn.toggled.connect(self.set_grasp_mode)
        p.retract_btn.clicked.connect(self.commit_retraction)
        p.release_btn.clicked.connect(self.add_release)
        p.margin.valueChanged.connect(lambda _: self._margin_preview())
        self.risk = pn.RiskPanel()
        self.materials = pn.MaterialPanel(s.materials())
        self.materials.changed.connect(lambda n, e, nu: s.set_material(n, e, nu))
        import warp as wp

        devices = ["cpu"] + [f"cuda:{i}" for i in range(wp.get_cuda_device_count())]
        self.solver = pn.SolverPanel(devices, str(s.cfg.solver.device))
        self.solver.device.currentTextChanged.connect(lambda d: setattr(s.cfg.solver, "device", d))
        self.slice = pn.SlicePanel(s.volume, s.labels)
        tabs = QtWidgets.QTabWidget()
        for widget, title in ((p, "Procedure"), (self.structures, "Structures"), (self.risk, "Risk"),
                              (self.materials, "Materials"), (self.slice, "CT slice"), (pn.help_widget(), "Help")):
            tabs.addTab(widget, title)
        self.tabs = tabs
        side = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(side)
        lay.addWidget(tabs, 1)
        lay.addWidget(self.solver)
        dock = QtWidgets.QDockWidget("Rehearsal", self)
        dock.setWidget(side)
        dock.setMinimumWidth(430)
        self.addDockWidget(QtCore.Qt.RightDockWidgetArea, dock)

    def _shortcuts(self):
        keys = {"Space": lambda: self.start_job("run"), "N": lambda: self.start_job("step"), "Ctrl+Z": self.undo,
                "Esc": self.escape, "I": lambda: self.procedure.incise_btn.toggle(), "Return": self.commit_incision,
                "G": lambda: self.procedure.grasp_btn.toggle(), "T": self.commit_retraction,
                "Shift+Up": lambda: self.move_tool(0, 1), "Shift+Down": lambda: self.move_tool(0, -1),
                "Shift+Left": lambda: self.move_tool(-1, 0), "Shift+Right": lambda: self.move_tool(1, 0),
                "P": self.toggle_plane, "M": self.toggle_margin_sphere, "C": self.toggle_clip,
                "R": lambda: self._redraw(self.scene.reset_camera()), "Ctrl+P": lambda: self.screenshot_dialog(),
                "Ctrl+E": lambda: self.movie_dialog(), "Ctrl+S": lambda: self.save_plan_dialog(),
                "Left": lambda: self.timeline.setValue(self.timeline.value() - 1),
                "Right": lambda: self.timeline.setValue(self.timeline.value() + 1),
                "F1": lambda: self.tabs.setCurrentIndex(self.tabs.count() - 1)}
        for name, key in OVERLAY_KEYS.items():
            keys[key] = lambda n=name: self.overlay_box.setCurrentText(n)
        self._shortcut_objs = []
        for key, fn in keys.items():
            # plain keys act while the 3D view has the focus (they would steal typing in the panels);
            # Ctrl+…, F1 and Esc act anywhere in the window
            window_wide = key.startswith("Ctrl+") or key in ("F1", "Esc")
            sc = QtGui.QShortcut(QtGui.QKeySequence(key), self if window_wide else self.plotter.interactor,
                                 activated=fn)
            sc.setContext(QtCore.Qt.WindowShortcut if window_wide else QtCore.Qt.WidgetShortcut)
            self._shortcut_objs.append(sc)

    # -- display loop --
    def _tick(self):
        frame = self.buffer.take()
        if frame is not None:
            self.scene.show_frame(frame)
            self.plotter.request_draw()
        now = time.perf_counter()
        self._draws = [t for t in self._draws if now - t <= 1.0]

    def display_fps(self) -> int:
        now = time.perf_counter()
        return sum(1 for t in self._draws if now - t <= 1.0)

    def _redraw(self, _=None):
        self.plotter.request_draw()

    # -- jobs --
    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def start_job(self, job: str) -> bool:
        if self.busy:
            self.statusBar().showMessage("the solver is busy (Esc stops it)")
            return False
        if job in ("step", "run") and not self.s.pending:
            self.statusBar().showMessage("no pending step: add an incision or a resection first")
            return False
        self.thread = make_thread_class()(self.s, job, self.buffer, self)
        self.thread.progress.connect(self._on_progress)
        self.thread.done.connect(self._on_done)
        self.thread.failed.connect(self._on_failed)
        self.solver.state.setText(f"running: {job}")
        self.solver.device.setEnabled(False)
        self.thread.start()
        return True

    def stop(self):
        self._drag_waiting = False          # Esc also cancels a tool move waiting for the solver
        if self.busy:
            self.thread.stop()

    def _on_progress(self, p):
        self.solver.rate.setText(f"{p.iterations_per_s:.1f}")
        self.solver.residual.setText(f"{p.relative_residual:.2e} (iteration {p.iteration}, {p.step})")
        self.solver.fps.setText(f"{self.display_fps()} fps")
        if p.tool_forces_n:
            self.solver.show_forces(p.tool_forces_n)

    def _on_done(self, msg):
        self.statusBar().showMessage(msg)
        self._finish()

    def _on_failed(self, msg):
        self.statusBar().showMessage(f"error: {msg}")
        self._drag_waiting = False          # no automatic re-run after a failure; the move stays pending
        self._finish()

    def _finish(self):
        if self.thread is not None:
            self.thread.wait()
        self.solver.state.setText("idle")
        self.solver.device.setEnabled(True)
        self.buffer.take()
        self.scene.show_frame(_current(self.s))
        self.refresh()
        if self._drag_waiting:              # the tool was dragged while the solver was busy
            self._drag_waiting = False
            QtCore.QTimer.singleShot(0, lambda: self.commit_retraction() and self.start_job("run"))

    def refresh(self):
        s = self.s
        self.procedure.show_steps(s.applied, s.pending)
        self.solver.show_forces({k: float(np.linalg.norm(f)) for k, f in s.tool_forces().items()})
        extra = {"elements": f"{int(s.alive.sum())} of {len(s.alive)}", "nodes": f"{len(s.positions_mm)}",
                 "strain over threshold": f"{over_threshold(s.strain, s.alive, s.cfg.report.strain_threshold)} elements"}
        try:
            self.risk.show_risk(s.risk(), extra)
        except SurgtwinError as exc:
            self.statusBar().showMessage(str(exc))
        n = len(s.recording)
        self.timeline.blockSignals(True)
        self.timeline.setRange(0, max(0, n - 1))
        self.timeline.setValue(n - 1)
        self.timeline.blockSignals(False)
        self.frame_label.setText(f"frame {n}/{n}")
        self._redraw()

    def undo(self):
        if self.busy:
            return
        if self.s.undo():
            self.scene.show_frame(_current(self.s))
            self.statusBar().showMessage("undone")
        self.refresh()

    def remove_selected_step(self) -> bool:
        """Drop the selected pending step (applied steps are taken back with Undo)."""
        row = self.procedure.list.currentRow() - len(self.s.applied)
        if self.busy or not 0 <= row < len(self.s.pending):
            self.statusBar().showMessage("select a pending step (·) to remove; applied steps (✓) go with Undo")
            return False
        self.s.remove_pending(row)
        self.refresh()
        return True

    def escape(self):
        if self.busy:
            self.stop()
        else:
            self.clear_path()

    # -- playback --
    def show_recorded(self, i: int):
        if self.busy or not len(self.s.recording):
            return
        i = int(np.clip(i, 0, len(self.s.recording) - 1))
        f = self.s.recording[i]
        self.scene.show_frame(f)
        self.frame_label.setText(f"frame {i + 1}/{len(self.s.recording)} {f.label}")
        self._redraw()

    def _play_tick(self):
        v = self.timeline.value() + 1
        self.timeline.setValue(0 if v > self.timeline.maximum() else v)

    def set_overlay(self, name: str):
        self.scene.set_overlay(name)
        if self.overlay_box.currentText() != name:
            self.overlay_box.setCurrentText(name)
        self._redraw()

    # -- incision --
    def set_incision_mode(self, on: bool):
        if on:
            self.plotter.enable_surface_point_picking(callback=self.add_path_point, show_point=False,
                                                      left_clicking=True, show_message=False, picker="cell")
            self.statusBar().showMessage("incision: click points on the organ surface, Return adds the step")
        else:
            self.plotter.disable_picking()

    def add_path_point(self, point):
        if point is None:
            return
        self.path.append(np.asarray(point, float))
        self.scene.set_path(self.path)
        self._redraw()

    def clear_path(self):
        self.path = []
        self.scene.set_path([])
        self._redraw()

    def commit_incision(self) -> bool:
        """The drawn path (picked on the tissue as it is now: incisions cut where the tissue is when they
        run) as a pending incision step."""
        try:
            self.s.add_step(incision_step(np.array(self.path), self.procedure.depth.value()))
        except (ConfigError, ValueError) as exc:
            self.statusBar().showMessage(str(exc))
            return False
        self.clear_path()
        if self.procedure.incise_btn.isChecked():
            self.procedure.incise_btn.setChecked(False)
        self.refresh()
        return True

    # -- grasp and retract --
    def set_grasp_mode(self, on: bool):
        if on:
            if self.procedure.incise_btn.isChecked():
                self.procedure.incise_btn.setChecked(False)
            self.plotter.enable_surface_point_picking(callback=self.add_grasp_point, show_point=False,
                                                      left_clicking=True, show_message=False, picker="cell")
            self.statusBar().showMessage("grasp: click the organ where the tool takes hold")
        else:
            self.plotter.disable_picking()

    def add_grasp_point(self, point) -> bool:
        """A grasp step at the picked surface point (tissue within the grasp radius is held)."""
        if point is None:
            return False
        try:
            self.s.add_step(grasp_step(point, self.procedure.grasp_radius.value()))
        except ConfigError as exc:
            self.statusBar().showMessage(str(exc))
            return False
        self.tool_tip, self.tool_path = np.asarray(point, float), []
        self._show_tool()
        if self.procedure.grasp_btn.isChecked():
            self.procedure.grasp_btn.setChecked(False)
        self.statusBar().showMessage("grasped: drag the green handle with the mouse (or Shift+arrows, then T)")
        self.refresh()
        return True

    def move_tool(self, right: float, up: float) -> bool:
        """Move the planned tool tip one drag step in the view plane (camera right / up)."""
        if self.tool_tip is None:
            self.statusBar().showMessage("grasp the organ first (G, then click it)")
            return False
        cam = self.plotter.camera
        view = np.subtract(cam.focal_point, cam.position)
        view /= np.linalg.norm(view)
        upv = np.asarray(cam.up, float)
        upv = upv - (upv @ view) * view
        upv /= np.linalg.norm(upv)
        rightv = np.cross(view, upv)
        last = self.tool_path[-1] if self.tool_path else self.tool_tip
        self.tool_path.append(last + self.procedure.drag_step.value() * (right * rightv + up * upv))
        self._show_tool()
        return True

    def drag_tool_to(self, point) -> bool:
        """The tool's handle dropped at ``point`` (a mouse drag): one more tool move. With *tissue follows
        the tool* on, the moves so far become a retraction step and the pending steps run at once (or as
        soon as the solver is free)."""
        if self.tool_tip is None:
            return False
        self.tool_path.append(np.asarray(point, float))
        self._show_tool()
        if self.procedure.follow.isChecked():
            if self.busy:
                self._drag_waiting = True
                self.statusBar().showMessage("the tool move runs when the solver is free")
            elif self.commit_retraction():
                self.start_job("run")
        return True

    def _show_tool(self):
        """The planned tool (tip, moves) and its handle, a sphere widget the mouse drags in the view plane."""
        self.scene.set_tool(self.tool_tip, self.tool_path)
        self.plotter.clear_sphere_widgets()
        self.tool_handle = None
        if self.tool_tip is not None:
            at = self.tool_path[-1] if self.tool_path else self.tool_tip
            radius = max(4.0, 0.02 * self.scene.organ_surface().length)
            self.tool_handle = self.plotter.add_sphere_widget(self._handle_dropped, center=at, radius=radius,
                                                              color="#2ca02c", selected_color="#98df8a",
                                                              test_callback=False)
        self._redraw()

    def _handle_dropped(self, centre):
        # handled after the widget's own event has finished (it replaces the widget)
        QtCore.QTimer.singleShot(0, lambda: self.drag_tool_to(centre))

    def commit_retraction(self) -> bool:
        """The tool moves so far as a pending retraction step."""
        try:
            self.s.add_step(retract_step(np.array(self.tool_path)))
        except ConfigError as exc:
            self.statusBar().showMessage(f"{exc}: grasp (G) and move the tool (Shift+arrows) first")
            return False
        self.tool_tip, self.tool_path = self.tool_path[-1], []
        self._show_tool()
        self.refresh()
        return True

    def add_release(self):
        self.s.add_step(release_step())
        self.tool_tip, self.tool_path = None, []
        self._show_tool()
        self.refresh()

    # -- resection --
    def toggle_plane(self):
        if self.plane is not None:
            self.plotter.clear_plane_widgets()
            self.plane = None
            if self.clip_on:
                self.clip_on = False
                self.scene.set_clip(None)
        else:
            c, _ = self.scene.tumour_sphere()
            origin = c if c is not None else np.array(self.scene.organ_surface().center)
            self.plane = (np.array([1.0, 0.0, 0.0]), origin)
            self.plotter.add_plane_widget(self._plane_moved, normal=self.plane[0], origin=origin,
                                          bounds=self.scene.organ_surface().bounds, color="#f2c14e",
                                          implicit=False, outline_translation=False)
            self.procedure.mode.setCurrentText("plane")
        self._redraw()

    def _plane_moved(self, normal, origin):
        self.plane = (np.asarray(normal, float), np.asarray(origin, float))
        if self.clip_on:  # the clipping plane follows the resection plane while both are shown
            self.scene.set_clip(-self.plane[0], self.plane[1])

    def add_resection(self) -> bool:
        mode, margin = self.procedure.mode.currentText(), self.procedure.margin.value()
        try:
            if mode == "plane":
                if self.plane is None:
                    raise ConfigError("show the resection plane (P) and place it first")
                normal, origin = self.plane
                margin = plane_margin(self.s, normal, origin)
                self.s.add_step(resect_step("liver_tumor", margin, "plane", normal))
            else:
                self.s.add_step(resect_step("liver_tumor", margin, "sphere"))
        except ConfigError as exc:
            self.statusBar().showMessage(str(exc))
            return False
        self.refresh()
        return True

    def toggle_margin_sphere(self):
        self.procedure.mode.setCurrentText("sphere")
        if "margin_sphere" in self.plotter.actors:
            self.scene.hide("margin_sphere")
        else:
            self.scene.show_margin_sphere(self.procedure.margin.value())
        self._redraw()

    def _margin_preview(self):
        if "margin_sphere" in self.plotter.actors:
            self.scene.show_margin_sphere(self.procedure.margin.value())
            self._redraw()

    def toggle_clip(self):
        self.clip_on = not self.clip_on
        if self.clip_on and self.plane is not None:
            self.scene.set_clip(-self.plane[0], self.plane[1])
        elif self.clip_on:
            c = np.array(self.scene.organ_surface().center)
            self.scene.set_clip([0.0, 1.0, 0.0], c)  # anterior half away: see inside
        else:
            self.scene.set_clip(None)
        self._redraw()

    # -- export --
    def screenshot(self, path) -> Path:
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ConfigError("screenshots are .png files")
        self.plotter.render()
        with atomic_path(path) as tmp:
            self.plotter.screenshot(str(tmp))
        return path

    def screenshot_dialog(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Screenshot", "surgtwin.png", "PNG (*.png)")
        if path:
            self._report(lambda: self.screenshot(path), "screenshot")

    def export_movie(self, path, fps: int = 10) -> Path:
        """Every recorded frame rendered into ``path`` (.mp4 with imageio-ffmpeg, else .gif)."""
        from .movie import write_movie

        frames = []
        for f in self.s.recording.frames:
            self.scene.show_frame(f)
            self.plotter.render()
            frames.append(self.plotter.screenshot(None))
        self.scene.show_frame(_current(self.s))
        self._redraw()
        return write_movie(path, frames, fps)

    def movie_dialog(self):
        from .movie import movie_suffix

        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Movie", f"surgtwin{movie_suffix()}",
                                                        "Movie (*.mp4 *.gif)")
        if path:
            self._report(lambda: self.export_movie(path), "movie")

    def save_plan_dialog(self, path=None):
        if path is None:
            path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save plan", "plans/procedure/rehearsal.yaml",
                                                            "Procedure (*.yaml)")
        if path:
            self._report(lambda: save_plan(path, Path(path).stem, self.s.plan), "plan")
        return path

    def _report(self, fn, what):
        try:
            out = fn()
            self.statusBar().showMessage(f"{what} written: {out}")
        except (SurgtwinError, OSError) as exc:
            self.statusBar().showMessage(f"{what} not written: {exc}")

    def closeEvent(self, event):
        self.timer.stop()
        self.play_timer.stop()
        if self.busy:
            self.thread.stop()
            self.thread.wait()
        self.plotter.close()
        super().closeEvent(event)


def _current(session):
    return session.frame("current")


def _to_rest(session, points: np.ndarray) -> np.ndarray:
    """Picked points (current configuration) to the rest configuration by the nearest node's displacement."""
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return points.reshape(0, 3)
    _, idx = cKDTree(session.positions_mm).query(points)
    return points - (session.positions_mm[idx] - session.rest_mm[idx])


def plane_margin(session, normal, origin) -> float:
    """The margin [mm] a plane through ``origin`` keeps from the tumour (plane mode of a resection:
    the side the normal points to, holding the tumour, is removed)."""
    mesh = session.mesh
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    tumour = mesh.labels == mesh.table.id_of("liver_tumor")
    nodes = np.unique(mesh.tets[tumour])
    margin = float((session.rest_mm[nodes] @ n).min() - _to_rest(session, np.asarray(origin, float)[None])[0] @ n)
    if margin < 0:
        raise ConfigError(f"the plane cuts the tumour ({-margin:.1f} mm inside): move it away or flip its normal")
    return margin


def run_app(target=None, *, cfg=None, overlay: str = "displacement") -> None:
    """Open the viewer on ``target`` and run the Qt event loop until the window closes."""
    overlay = {"shift_mm": "displacement", "max_principal_strain": "strain", "risk": "margin",
               "von_mises_kpa": "stress"}.get(overlay, overlay)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    session = RehearsalSession.open(target, cfg)
    win = MainWindow(session, overlay)
    win.show()
    app.exec()
