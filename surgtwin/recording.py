"""Recording a procedure for playback: one VTU per recorded state plus a ParaView ``.pvd`` time series,
and the rest-configuration topology after each cut.

    rec = Recorder("runs/x/sim")        # writes steps/*.vtu, procedure.pvd, topology/*.vtu
    Surgery(spec, x, recorder=rec)

Open ``procedure.pvd`` in ParaView and press play: each frame holds the live elements at their
current positions [mm] with ``displacement_mm`` (from the rest shape), ``held`` (grasped nodes),
cell ``label`` and ``clipped`` (and ``shift_mm`` from the pre-op state when the session carries it). The mesh changes from frame to frame when the topology does.
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pyvista as pv

from .fileio import atomic_path

MM = 1e-3


def _grid(points_mm, tets) -> pv.UnstructuredGrid:
    cells = np.hstack([np.full((len(tets), 1), 4), tets]).ravel()
    return pv.UnstructuredGrid(cells, np.full(len(tets), pv.CellType.TETRA, np.uint8), np.asarray(points_mm, float))


def _save(mesh, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        mesh.save(tmp)
    return path


class Recorder:
    """Writes states and topologies under ``folder``; ``frames`` lists (name, relative file)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.frames: list[tuple[str, str]] = []

    def state(self, op, name: str) -> str:
        spec = op.spec
        live = spec.alive
        g = _grid(op.x / MM, spec.tets[live])
        g.point_data["displacement_mm"] = (op.x - spec.points) / MM
        if "preop" in op.carried:
            g.point_data["shift_mm"] = np.linalg.norm(op.x - op.carried["preop"], axis=1) / MM
        held = np.zeros(len(op.x), np.uint8)
        for tool in op.tools.values():
            held[tool.nodes] = 1
        g.point_data["held"] = held
        g.cell_data["label"] = spec.region[live]
        g.cell_data["clipped"] = op.clipped[live].astype(np.uint8)
        g.field_data["step"] = np.array([name])
        rel = f"steps/{name}.vtu"
        _save(g, self.folder / rel)
        self.frames.append((name, rel))
        self.write_pvd()
        return rel

    def topology(self, op, name: str) -> str:
        """The whole mesh after a cut in the rest configuration [mm] (cell ``alive``, ``label``) and the
        faces the cut opened (``topology/<name>_cut.vtp``)."""
        spec = op.spec
        g = _grid(spec.points / MM, spec.tets)
        g.cell_data["alive"] = spec.alive.astype(np.uint8)
        g.cell_data["label"] = spec.region
        rel = f"topology/{name}.vtu"
        _save(g, self.folder / rel)
        ch = op.changes[-1] if op.changes else None
        if ch is not None and len(ch.cut_faces):
            f = ch.cut_faces
            surf = pv.PolyData(spec.points / MM, np.hstack([np.full((len(f), 1), 3), f]).ravel())
            _save(surf, self.folder / f"topology/{name}_cut.vtp")
        return rel

    def write_pvd(self) -> Path:
        lines = ['<?xml version="1.0"?>', '<VTKFile type="Collection" version="0.1">', "  <Collection>"]
        for i, (name, rel) in enumerate(self.frames):
            lines.append(f'    <DataSet timestep="{i}" part="0" name={quoteattr(name)} file={quoteattr(rel)}/>')
        lines += ["  </Collection>", "</VTKFile>", ""]
        path = self.folder / "procedure.pvd"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text("\n".join(lines))
        return path


def render_frame(frame: str | Path, png: str | Path, *, focus_mm=None, zoom: float = 1.0,
                 view_from=(0.6, -1.0, -0.6), cut: str | Path | None = None, size=(900, 700),
                 title: str = "", scalars: str = "shift_mm", section_normal=None) -> Path:
    """Off-screen picture of a recorded frame: the live surface coloured by ``scalars`` [mm], held
    nodes as dots, optionally a cut surface (``topology/*_cut.vtp`` or ``cut_surface.vtp``) in yellow,
    seen from ``view_from`` (a direction, patient LPS) toward ``focus_mm``; with ``section_normal`` the
    organ is cut open by the plane through ``focus_mm`` with that normal (the half it points to removed)."""
    from .report import headless_rendering

    headless_rendering()
    grid = pv.read(frame)
    if section_normal is not None:
        grid = grid.clip(normal=tuple(section_normal), origin=tuple(focus_mm), crinkle=True)
    shell = grid.extract_surface(algorithm="dataset_surface")
    pl = pv.Plotter(off_screen=True, window_size=list(size))
    pl.set_background("white")
    scalars = scalars if scalars in shell.point_data else "displacement_mm"
    title_bar = "shift from pre-op [mm]" if scalars == "shift_mm" else "displacement [mm]"
    pl.add_mesh(shell, scalars=scalars, cmap="viridis", show_edges=True, edge_color="#555555",
                line_width=0.3, scalar_bar_args={"title": title_bar, "fmt": "%.1f", "color": "black"})
    if cut is not None and Path(cut).is_file():
        pl.add_mesh(pv.read(cut), color="#f2c14e", opacity=0.9)
    if "held" in grid.point_data and grid.point_data["held"].any():
        pl.add_mesh(pv.PolyData(grid.points[grid.point_data["held"] > 0]), color="#d62728", point_size=12,
                    render_points_as_spheres=True)
    focus = np.asarray(shell.center if focus_mm is None else focus_mm, float)
    d = np.asarray(view_from, float)
    pl.camera.focal_point = focus
    pl.camera.position = focus + d / np.linalg.norm(d) * shell.length
    pl.camera.up = (0, 0, 1)
    pl.reset_camera_clipping_range()
    pl.camera.zoom(zoom)
    if title:
        pl.add_text(title, font_size=11, color="black")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    pl.screenshot(str(png))
    pl.close()
    return png
