"""Side panels of the Qt viewer: structures, procedure, risk, materials, solver, CT slice, help."""
from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from .overlays import slice_rgb
from .steps import describe

SHORTCUTS = [
    ("Space", "run all pending steps"), ("N", "step: apply the next pending step"), ("Ctrl+Z", "undo the last step"),
    ("Esc", "stop the solver / clear the incision path"), ("I", "incision mode: click points on the organ"),
    ("Return", "add the drawn incision as a step"), ("G", "grasp mode: click the organ where the tool grasps"),
    ("mouse drag", "drag the grasped tool's green handle; the tissue follows when it is dropped"),
    ("Shift+arrows", "move the grasped tool in the view plane (one drag step per press)"),
    ("T", "add the tool moves as a retraction step"), ("P", "resection plane widget on/off"),
    ("M", "margin sphere on/off"), ("C", "clipping plane on/off"),
    ("0-5", "overlay: none, displacement, strain, distance, margin, von Mises stress"), ("R", "reset the camera"),
    ("Ctrl+P", "screenshot (PNG)"), ("Ctrl+E", "export a movie of the recording (mp4, else gif)"),
    ("Ctrl+S", "save the plan as a procedure YAML"), ("Left / Right", "timeline: previous / next frame"),
    ("F1", "this help"),
]
SHORTCUT_NOTE = "Plain keys act while the 3D view has the focus (click it); Ctrl+…, F1 and Esc anywhere."


class StructurePanel(QtWidgets.QTableWidget):
    """One row per structure: visible, opacity (%), colour."""

    changed = QtCore.Signal(str, dict)

    def __init__(self, props: dict, parent=None):
        super().__init__(len(props), 4, parent)
        self.setHorizontalHeaderLabels(["structure", "show", "opacity %", "colour"])
        self.verticalHeader().setVisible(False)
        order = {"organ": 0, "lesion": 1, "vessel": 2, "bone": 3}
        self.names = sorted(props, key=lambda n: (order.get(props[n]["category"], 4), n))
        for row, name in enumerate(self.names):
            p = props[name]
            self.setItem(row, 0, QtWidgets.QTableWidgetItem(f"{name} ({p['category']})"))
            box = QtWidgets.QCheckBox()
            box.setChecked(p["visible"])
            box.toggled.connect(lambda v, n=name: self.changed.emit(n, {"visible": v}))
            self.setCellWidget(row, 1, box)
            spin = QtWidgets.QSpinBox()
            spin.setRange(0, 100)
            spin.setValue(int(round(100 * p["opacity"])))
            spin.valueChanged.connect(lambda v, n=name: self.changed.emit(n, {"opacity": v / 100.0}))
            self.setCellWidget(row, 2, spin)
            btn = QtWidgets.QPushButton()
            btn.setStyleSheet(f"background:{p['color']}")
            btn.clicked.connect(lambda _=False, n=name, b=btn: self._pick_colour(n, b))
            self.setCellWidget(row, 3, btn)
        self.resizeColumnsToContents()

    def _pick_colour(self, name, button):
        col = QtWidgets.QColorDialog.getColor(parent=self)
        if col.isValid():
            button.setStyleSheet(f"background:{col.name()}")
            self.changed.emit(name, {"color": col.name()})


class ProcedurePanel(QtWidgets.QWidget):
    """Applied (✓) and pending steps; incision depth, resection mode and margin for new steps."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QtWidgets.QVBoxLayout(self)
        self.list = QtWidgets.QListWidget()
        lay.addWidget(self.list)
        row = QtWidgets.QHBoxLayout()
        self.run_btn, self.step_btn, self.undo_btn, self.stop_btn, self.remove_btn = (
            QtWidgets.QPushButton(t) for t in ("Run", "Step", "Undo", "Stop", "Remove"))
        self.remove_btn.setToolTip("remove the selected pending step")
        for b in (self.run_btn, self.step_btn, self.undo_btn, self.stop_btn, self.remove_btn):
            row.addWidget(b)
        lay.addLayout(row)
        form = QtWidgets.QFormLayout()
        self.incise_btn = QtWidgets.QPushButton("Draw incision (I)")
        self.incise_btn.setCheckable(True)
        self.depth = QtWidgets.QDoubleSpinBox()
        self.depth.setRange(0.5, 100.0)
        self.depth.setValue(10.0)
        self.depth.setSuffix(" mm")
        self.add_incision_btn = QtWidgets.QPushButton("Add incision step (Return)")
        form.addRow(self.incise_btn)
        form.addRow("incision depth", self.depth)
        form.addRow(self.add_incision_btn)
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems(["sphere", "plane"])
        self.margin = QtWidgets.QDoubleSpinBox()
        self.margin.setRange(0.0, 60.0)
        self.margin.setValue(10.0)
        self.margin.setSuffix(" mm")
        self.add_resect_btn = QtWidgets.QPushButton("Add resection step")
        form.addRow("resection", self.mode)
        form.addRow("margin", self.margin)
        form.addRow(self.add_resect_btn)
        self.grasp_btn = QtWidgets.QPushButton("Grasp (G)")
        self.grasp_btn.setCheckable(True)
        self.grasp_radius = QtWidgets.QDoubleSpinBox()
        self.grasp_radius.setRange(1.0, 30.0)
        self.grasp_radius.setValue(8.0)
        self.grasp_radius.setSuffix(" mm")
        self.drag_step = QtWidgets.QDoubleSpinBox()
        self.drag_step.setRange(0.5, 20.0)
        self.drag_step.setValue(3.0)
        self.drag_step.setSuffix(" mm")
        self.follow = QtWidgets.QCheckBox("tissue follows the dragged tool")
        self.follow.setChecked(True)
        self.follow.setToolTip("dropping the tool's green handle adds the moves as a retraction step and runs it")
        self.retract_btn = QtWidgets.QPushButton("Add retraction step (T)")
        self.release_btn = QtWidgets.QPushButton("Add release step")
        form.addRow(self.grasp_btn)
        form.addRow("grasp radius", self.grasp_radius)
        form.addRow("drag step (Shift+arrows)", self.drag_step)
        form.addRow(self.follow)
        form.addRow(self.retract_btn)
        form.addRow(self.release_btn)
        self.save_btn = QtWidgets.QPushButton("Save plan… (Ctrl+S)")
        form.addRow(self.save_btn)
        lay.addLayout(form)

    def show_steps(self, applied, pending):
        self.list.clear()
        for s in applied:
            self.list.addItem(f"✓ {describe(s)}")
        for s in pending:
            self.list.addItem(f"· {describe(s)}")


class RiskPanel(QtWidgets.QTableWidget):
    ROWS = [("remnant_percent", "remnant parenchyma", "{:.1f} %"), ("removed_volume_ml", "removed", "{:.0f} mL"),
            ("margin_achieved_mm", "margin achieved", "{:.1f} mm"), ("peak_strain", "peak strain", "{:.3f}"),
            ("max_shift_mm", "max shift", "{:.2f} mm")]

    def __init__(self, parent=None):
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["", "value"])
        self.verticalHeader().setVisible(False)

    def show_risk(self, risk: dict, extra: dict | None = None):
        rows = [(label, fmt.format(risk["metrics"][k])) for k, label, fmt in self.ROWS if k in risk["metrics"]]
        rows += list((extra or {}).items())
        rows += [(f"{v['structure']}", f"{v['diameter_mm']:.1f} mm — {v['risk']}") for v in risk["vessels"]]
        rows.append(("source", risk["source"]))
        self.setRowCount(len(rows))
        for r, (a, b) in enumerate(rows):
            self.setItem(r, 0, QtWidgets.QTableWidgetItem(a))
            item = QtWidgets.QTableWidgetItem(b)
            if b.endswith("high"):
                item.setForeground(QtGui.QColor("#d62728"))
            self.setItem(r, 1, item)
        self.resizeColumnsToContents()


class MaterialPanel(QtWidgets.QTableWidget):
    """E [kPa] and Poisson's ratio per tissue of the mesh (edits apply from the next solve)."""

    changed = QtCore.Signal(str, float, float)

    def __init__(self, materials: dict, parent=None):
        super().__init__(len(materials), 3, parent)
        self.setHorizontalHeaderLabels(["tissue", "E [kPa]", "ν"])
        self.verticalHeader().setVisible(False)
        self.spins = {}
        for row, (name, m) in enumerate(materials.items()):
            self.setItem(row, 0, QtWidgets.QTableWidgetItem(name))
            e = QtWidgets.QDoubleSpinBox()
            e.setRange(0.1, 1e5)
            e.setDecimals(2)
            e.setValue(float(m["youngs_kpa"]))
            nu = QtWidgets.QDoubleSpinBox()
            nu.setRange(0.0, 0.499)
            nu.setDecimals(3)
            nu.setSingleStep(0.005)
            nu.setValue(float(m["poisson"]))
            for w in (e, nu):
                w.valueChanged.connect(lambda _=0, n=name: self._emit(n))
            self.setCellWidget(row, 1, e)
            self.setCellWidget(row, 2, nu)
            self.spins[name] = (e, nu)
        self.resizeColumnsToContents()

    def _emit(self, name):
        e, nu = self.spins[name]
        self.changed.emit(name, e.value(), nu.value())


class SolverPanel(QtWidgets.QWidget):
    """Device choice and live solver status (step rate, residual, display fps)."""

    def __init__(self, devices: list[str], current: str, parent=None):
        super().__init__(parent)
        lay = QtWidgets.QFormLayout(self)
        self.device = QtWidgets.QComboBox()
        self.device.addItems(devices)
        self.device.setCurrentText(current)
        self.state = QtWidgets.QLabel("idle")
        self.rate = QtWidgets.QLabel("–")
        self.residual = QtWidgets.QLabel("–")
        self.fps = QtWidgets.QLabel("–")
        self.force = QtWidgets.QLabel("no tool")
        for label in (self.state, self.rate, self.residual, self.fps, self.force):   # long texts must not widen the dock
            label.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
        lay.addRow("device", self.device)
        lay.addRow("solver", self.state)
        lay.addRow("Newton iterations / s", self.rate)
        lay.addRow("relative residual", self.residual)
        lay.addRow("display", self.fps)
        lay.addRow("tool force", self.force)

    def show_forces(self, forces_n: dict):
        """tool -> |force| [N] of the tissue on the tool."""
        self.force.setText(", ".join(f"{k} {v:.3f} N" for k, v in forces_n.items()) if forces_n else "no tool")


class SlicePanel(QtWidgets.QWidget):
    """Axial CT slice with label outlines (coloured by the label table) and a slice slider."""

    def __init__(self, volume, labels, parent=None):
        super().__init__(parent)
        import SimpleITK as sitk

        self.ct = sitk.GetArrayFromImage(volume.image) if volume is not None else None
        self.lab = sitk.GetArrayFromImage(labels.image) if labels is not None else None
        if self.ct is None and self.lab is not None:
            self.ct = np.where(self.lab > 0, 60.0, -1000.0)
        self.colors = {i: tuple(l.color) for i, l in labels.table.labels.items()} if labels is not None else {}
        lay = QtWidgets.QVBoxLayout(self)
        self.image = QtWidgets.QLabel()
        self.image.setMinimumSize(200, 160)
        self.image.setAlignment(QtCore.Qt.AlignCenter)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        lay.addWidget(self.image)
        lay.addWidget(self.slider)
        if self.ct is None:
            self.image.setText("no CT or label map in this folder")
            self.slider.setEnabled(False)
            return
        self.slider.setRange(0, self.ct.shape[0] - 1)
        mid = self.ct.shape[0] // 2
        if self.lab is not None and (self.lab > 0).any():
            mid = int(np.median(np.nonzero(self.lab)[0]))
        self.slider.valueChanged.connect(self.show_slice)
        self.slider.setValue(mid)
        self.show_slice(mid)

    def rgb(self, k: int) -> np.ndarray:
        lab = self.lab[k] if self.lab is not None and self.lab.shape == self.ct.shape else None
        return np.ascontiguousarray(slice_rgb(self.ct[k], lab, self.colors)[::-1])  # superior slices, anterior up

    def show_slice(self, k: int):
        rgb = self.rgb(int(k))
        h, w, _ = rgb.shape
        self._buf = rgb
        img = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888)
        self.image.setPixmap(QtGui.QPixmap.fromImage(img).scaled(360, 300, QtCore.Qt.KeepAspectRatio))


def help_widget() -> QtWidgets.QWidget:
    text = "<h3>Keyboard shortcuts</h3><table>" + "".join(
        f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS) + f"</table><p>{SHORTCUT_NOTE}</p>"
    text += ("<p>Incision: press I, click points on the organ surface, set the depth, press Return; then Step. "
             "Resection: choose sphere (margin around the tumour) or plane (drag the plane widget, P), Add, Step. "
             "Retraction: press G, click where the tool grasps, then drag its green handle with the mouse (the "
             "tissue follows when it is dropped), or move it with Shift+arrows and press T, then Step "
             "(the force on the tool shows under the solver status).</p>")
    w = QtWidgets.QLabel(text)
    w.setWordWrap(True)
    w.setAlignment(QtCore.Qt.AlignTop)
    return w
