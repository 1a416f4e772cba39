"""The 3D scene of a rehearsal on any pyvista plotter (the Qt window's QtInteractor, or an off-screen
Plotter): deformed organ and inner structures, context surfaces, overlays with colour bars, the
incision path, resection plane / margin sphere previews and a clipping plane.

``show_frame`` only moves points and swaps scalars (no new actors), so the display loop stays cheap;
the surfaces are re-extracted (new actors) only when elements were removed or a cut changed the
topology (the frame's ``Topology``).
"""
from __future__ import annotations

import numpy as np
import pyvista as pv

from . import overlays as ov
from .recording import Frame

INNER = ("liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein")
DEFAULT_COLORS = {"bones": "#efe8d8", "liver": "#d9a38c", "liver_tumor": "#f5e342", "hepatic_vein": "#2878e6",
                  "portal_vein_and_splenic_vein": "#7b2fbe", "inferior_vena_cava": "#1f4e9c",
                  "aorta": "#d62728"}


class Scene:
    max_context_cells = 2500     # context surfaces (not simulated) are decimated to this many triangles

    def __init__(self, plotter, session):
        self.pl, self.s = plotter, session
        self.overlay = "displacement"
        self.reference = "start"           # displacement from the "start" (loaded) state or "rest"
        self.props: dict[str, dict] = {}   # structure -> {visible, opacity, color}
        self.actors: dict[str, object] = {}
        self.meshes: dict[str, pv.PolyData] = {}
        self._ids: dict[str, tuple] = {}    # name -> (original point ids, original cell ids)
        self._embedding: dict[str, tuple] = {}  # smooth surfaces carried by the tets: (nodes, weights, cell)
        self._full: dict[str, pv.PolyData] = {}
        self._alive_key = None
        self.topology = None                # the Topology the surfaces were extracted from
        self.frame = session.frame("start")
        self.path_points: list[np.ndarray] = []
        self.clip_normal, self.clip_origin = None, None
        self._targets = {}
        plotter.set_background("white")
        self._init_props()
        self._add_context()
        self.show_frame(self.frame, rebuild=True)
        self._camera()

    # -- structures --
    def _init_props(self):
        table = self.s.mesh.table
        names = [table.name_of(i) for i in np.unique(self.s.mesh.labels)]
        for name in names + [n for n in self.s.surfaces if n not in names]:
            col = DEFAULT_COLORS.get(name)
            if col is None and name in table:
                col = "#%02x%02x%02x" % tuple(table.labels[table.id_of(name)].color)
            self.props[name] = {"visible": True, "opacity": 1.0,
                                "color": col or "#bbbbbb",
                                "category": table.labels[table.id_of(name)].category if name in table
                                else "bone" if name == "bones" else "organ",
                                "simulated": name in names}
        organ = self.s.cfg.mesh.organ
        if organ in self.props:
            self.props[organ]["opacity"] = 0.55

    def _add_context(self):
        for name, mesh in self.s.surfaces.items():
            if self.props[name]["simulated"]:
                continue  # drawn from the deforming tet mesh instead
            mesh = mesh.triangulate()
            if mesh.n_cells > self.max_context_cells and self.props[name]["category"] != "bone":  # context only: keep the display loop cheap
                mesh = mesh.decimate_pro(1.0 - self.max_context_cells / mesh.n_cells, preserve_topology=True)
            self.meshes[name] = mesh
            self.actors[name] = self.pl.add_mesh(mesh, color=self.props[name]["color"], opacity=self.props[name]["opacity"],
                                                 name=name, reset_camera=False)

    def set_structure(self, name: str, *, visible=None, opacity=None, color=None):
        p = self.props[name]
        if visible is not None:
            p["visible"] = bool(visible)
        if opacity is not None:
            p["opacity"] = float(opacity)
        if color is not None:
            p["color"] = color
        actor = self.actors.get(name)
        if actor is not None:
            actor.SetVisibility(p["visible"])
            actor.GetProperty().SetOpacity(p["opacity"])
            if name != self.s.cfg.mesh.organ or self.overlay == "none":
                actor.GetProperty().SetColor(pv.Color(p["color"]).float_rgb)

    # -- the deforming mesh --
    @property
    def mesh(self):
        """The tet mesh (rest, all elements) of the frame on show."""
        return self.topology.mesh

    @property
    def _ref_mm(self) -> np.ndarray:
        """Displacement reference on the shown topology: the state the viewer opened on, or the rest shape."""
        return self.mesh.points if self.reference == "rest" else self.topology.start_mm

    def _extract(self, name: str, alive: np.ndarray):
        mesh = self.mesh
        sel = alive.copy()
        if name != self.s.cfg.mesh.organ:
            sel &= mesh.labels == mesh.table.id_of(name)
        cells = np.flatnonzero(sel)
        if len(cells) == 0:
            return None
        grid = pv.UnstructuredGrid({pv.CellType.TETRA: mesh.tets[cells]}, mesh.points)
        grid.cell_data["cid"] = cells
        grid.point_data["pid"] = np.arange(grid.n_points)
        surf = grid.extract_surface(algorithm="dataset_surface")
        self._ids[name] = (np.asarray(surf.point_data["pid"]), np.asarray(surf.cell_data["cid"]))
        return surf

    def show_frame(self, frame: Frame, rebuild: bool = False):
        """Move the deforming surfaces to ``frame`` (re-extracted only when elements were removed or
        the topology changed)."""
        self.frame = frame
        topo = frame.topology or self.s.topology
        if topo is not self.topology:
            self.topology = topo
            self._embedding, self._targets = {}, {}   # both index the previous topology
            rebuild = True
        key = (len(frame.alive), int(frame.alive.sum()), hash(np.packbits(frame.alive).tobytes()))
        if rebuild or key != self._alive_key:
            self._alive_key = key
            organ = self.s.cfg.mesh.organ
            for name in [organ] + [n for n in INNER if n in self.props]:
                surf = self._embedded_surface(name, frame.alive) if name in self.s.surfaces and name != organ \
                    else self._extract(name, frame.alive)
                if surf is None:
                    self.pl.remove_actor(name)
                    self.actors.pop(name, None)
                    continue
                self.meshes[name] = surf
                self._update_points(name)
                if name == organ:
                    self._add_organ()
                else:
                    self.actors[name] = self.pl.add_mesh(surf, color=self.props[name]["color"], name=name,
                                                         opacity=self.props[name]["opacity"], reset_camera=False)
                self.set_structure(name)
            self._apply_clip()
        else:
            for name in self.meshes:
                if name in self._ids:
                    self._update_points(name)
            self._update_overlay_values()

    def _update_points(self, name):
        if name in self._embedding:
            nodes, weights, _ = self._embedding[name]
            self.meshes[name].points = np.einsum("kj,kjd->kd", weights, self.frame.positions_mm[nodes])
            return
        pid, _ = self._ids[name]
        self.meshes[name].points = self.frame.positions_mm[pid]

    def _embedded_surface(self, name: str, alive: np.ndarray):
        """The structure's smooth surface carried by the tet mesh (barycentric in its rest element; the
        nearest node outside the mesh), without the triangles that lie in removed elements."""
        if name not in self._embedding:
            surf = self.s.surfaces[name].triangulate()
            pts = np.asarray(surf.points, float)
            grid = self.mesh.grid
            cell = np.asarray(grid.find_containing_cell(pts))
            tets = self.mesh.tets
            nodes = np.zeros((len(pts), 4), np.int64)
            weights = np.zeros((len(pts), 4))
            inside = cell >= 0
            x = self.mesh.points[tets[cell[inside]]]                      # (k, 4, 3)
            t = np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]], axis=2)
            lam = np.linalg.solve(t, (pts[inside] - x[:, 0])[..., None])[..., 0]
            weights[inside] = np.c_[1.0 - lam.sum(1), lam]
            nodes[inside] = tets[cell[inside]]
            from scipy.spatial import cKDTree

            nodes[~inside, 0] = cKDTree(self.mesh.points).query(pts[~inside])[1]
            weights[~inside, 0] = 1.0
            self._embedding[name] = (nodes, weights, cell)
            self._full[name] = surf
        nodes, weights, cell = self._embedding[name]
        surf = self._full[name]
        dead = (cell >= 0) & ~alive[np.maximum(cell, 0)]
        faces = surf.faces.reshape(-1, 4)
        keep = faces[~dead[faces[:, 1:]].any(axis=1)]
        if len(keep) == 0:
            return None
        out = pv.PolyData(surf.points.copy(), keep.ravel())
        self._ids[name] = (None, None)
        return out

    # -- overlays --
    def overlay_values(self, name: str | None = None):
        """(values on the organ surface, style) of an overlay for the current frame."""
        name = name or self.overlay
        organ = self.s.cfg.mesh.organ
        pid, cid = self._ids[organ]
        x = self.frame.positions_mm
        thr = self.s.cfg.report.strain_threshold
        margin = float(self._planned_margin())
        if name == "displacement":
            v = ov.displacement_mm(x[pid], self._ref_mm[pid])
            return v, ov.style(name, max_value=max(float(v.max()), 0.5))
        if name == "strain":
            return self.frame.strain[cid], ov.style(name, strain_threshold=thr)
        if name == "stress":
            pa = self.s.stress_of(self.frame)
            v = np.full(len(cid), np.nan) if pa is None else pa[cid] / 1e3   # not known: grey
            return v, ov.style(name, max_value=ov.stress_range_kpa(v))
        if name in ("distance", "margin"):
            groups = ov.VESSELS + ov.TUMOUR if name == "distance" else ov.TUMOUR
            if groups not in self._targets:
                self._targets[groups] = self.s.region_nodes(groups, alive_only=False, mesh=self.mesh)  # also once resected
            d = ov.distance_to_nodes_mm(x, self._targets[groups])[pid]
            return np.minimum(d, 1e3), ov.style(name, margin_mm=margin)
        raise ValueError(name)

    def _planned_margin(self) -> float:
        for step in reversed(self.s.plan):
            if step.get("action", "resect") == "resect":
                return float(step.get("margin_mm", 10.0))
        return 10.0

    def set_overlay(self, name: str):
        if name not in ov.OVERLAYS:
            raise ValueError(f"unknown overlay '{name}'")
        self.overlay = name
        self._add_organ()
        self.set_structure(self.s.cfg.mesh.organ)

    def set_reference(self, which: str):
        """Displacement from the state the viewer opened on ("start") or from the rest shape ("rest")."""
        self.reference = which
        self._update_overlay_values()

    def _add_organ(self):
        organ = self.s.cfg.mesh.organ
        surf = self.meshes[organ]
        for bar in list(self.pl.scalar_bars.keys()):
            self.pl.remove_scalar_bar(bar)
        p = self.props[organ]
        if self.overlay == "none":
            self.pl.remove_actor(["closest-points", "closest-labels"])
            self.actors[organ] = self.pl.add_mesh(surf, color=p["color"], opacity=p["opacity"], name=organ,
                                                  reset_camera=False)
            return
        vals, st = self.overlay_values()
        if st.on == "point":
            surf.point_data["overlay"] = vals
        else:
            surf.cell_data["overlay"] = vals
        self.actors[organ] = self.pl.add_mesh(
            surf, scalars="overlay", preference=st.on, cmap=st.cmap, clim=list(st.clim), opacity=p["opacity"],
            name=organ, reset_camera=False, above_color=st.above_color, below_color=st.below_color,
            scalar_bar_args={"title": st.title, "fmt": "%.2f" if st.on == "cell" else "%.1f", "color": "black",
                             "vertical": False, "position_x": 0.25, "position_y": 0.04, "width": 0.5,
                             "height": 0.08})
        self._closest_marker(vals)
        self._apply_clip()

    def _closest_marker(self, values: np.ndarray):
        """Distance overlays: mark the organ-surface point closest to (but outside) the target."""
        self.pl.remove_actor(["closest-points", "closest-labels"])
        if self.overlay not in ("distance", "margin"):
            return
        outside = np.flatnonzero(values > 1e-6)
        if len(outside) == 0 or values[outside].min() >= 1e3:
            return
        i = outside[np.argmin(values[outside])]
        point = np.asarray(self.meshes[self.s.cfg.mesh.organ].points[i])[None]
        self.pl.add_point_labels(point, [f"closest {values[i]:.1f} mm"], name="closest", font_size=12,
                                 point_size=14, point_color="black", render_points_as_spheres=True,
                                 always_visible=True, shape_opacity=0.7, reset_camera=False)

    def _update_overlay_values(self):
        if self.overlay == "none":
            return
        organ = self.s.cfg.mesh.organ
        vals, st = self.overlay_values()
        surf = self.meshes[organ]
        (surf.point_data if st.on == "point" else surf.cell_data)["overlay"] = vals
        self._closest_marker(vals)
        if self.overlay in ov.AUTO_RANGE:  # the colour range follows the frame (largest displacement, stress)
            actor = self.actors.get(organ)
            if actor is not None:
                actor.mapper.scalar_range = st.clim

    # -- rehearsal widgets --
    def set_path(self, points):
        """Draw the incision path (picked points, mm) as spheres joined by a line."""
        self.path_points = [np.asarray(p, float) for p in points]
        self.pl.remove_actor("incision_path")
        self.pl.remove_actor("incision_points")
        if not self.path_points:
            return
        pts = np.array(self.path_points)
        self.pl.add_mesh(pv.PolyData(pts), color="black", point_size=12, render_points_as_spheres=True,
                         name="incision_points", reset_camera=False, pickable=False)
        if len(pts) > 1:
            self.pl.add_mesh(pv.lines_from_points(pts), color="black", line_width=5, name="incision_path",
                             reset_camera=False, pickable=False)

    def set_tool(self, tip, path):
        """Draw the grasping tool's tip (a sphere) and its planned moves (a line), or hide them (tip None)."""
        self.pl.remove_actor(["tool_tip", "tool_path"])
        if tip is None:
            return
        pts = np.vstack([np.asarray(tip, float)[None]] + [np.asarray(p, float)[None] for p in path])
        self.pl.add_mesh(pv.Sphere(radius=2.5, center=pts[-1]), color="#2ca02c", name="tool_tip",
                         reset_camera=False, pickable=False)
        if len(pts) > 1:
            self.pl.add_mesh(pv.lines_from_points(pts), color="#2ca02c", line_width=5, name="tool_path",
                             reset_camera=False, pickable=False)

    def show_plane(self, origin, normal, *, name="resection_plane"):
        size = float(self.meshes[self.s.cfg.mesh.organ].length) * 0.6
        plane = pv.Plane(center=origin, direction=normal, i_size=size, j_size=size)
        self.pl.add_mesh(plane, color="#f2c14e", opacity=0.5, name=name, reset_camera=False, pickable=False)

    def show_margin_sphere(self, margin_mm: float):
        """The margin around the tumour as a translucent sphere (equivalent-volume tumour radius + margin)."""
        c, r = self.tumour_sphere()
        if c is None:
            return
        self.pl.add_mesh(pv.Sphere(radius=r + margin_mm, center=c, theta_resolution=40, phi_resolution=40),
                         color="#f2c14e", opacity=0.3, name="margin_sphere", reset_camera=False, pickable=False)

    def hide(self, name: str):
        self.pl.remove_actor(name)

    def tumour_sphere(self):
        """(centre [mm], equivalent radius [mm]) of the tumour in the current frame, or (None, 0)."""
        mesh = self.mesh
        if "liver_tumor" not in mesh.table:
            return None, 0.0
        sel = mesh.labels == mesh.table.id_of("liver_tumor")
        if not sel.any():
            return None, 0.0
        vol = np.abs(mesh.tet_volumes_mm3()[sel])
        cent = self.frame.positions_mm[mesh.tets[sel]].mean(axis=1)
        return np.average(cent, axis=0, weights=vol), float((3 * vol.sum() / (4 * np.pi)) ** (1 / 3))

    def set_clip(self, normal=None, origin=None):
        """Clip the simulated structures by the plane (normal, origin); None removes the clip."""
        self.clip_normal = None if normal is None else np.asarray(normal, float)
        self.clip_origin = None if origin is None else np.asarray(origin, float)
        self._apply_clip()

    def _apply_clip(self):
        import vtk

        for name in self._ids:
            actor = self.actors.get(name)
            if actor is None:
                continue
            mapper = actor.GetMapper()
            mapper.RemoveAllClippingPlanes()
            if self.clip_normal is not None:
                plane = vtk.vtkPlane()
                plane.SetOrigin(*self.clip_origin)
                plane.SetNormal(*self.clip_normal)
                mapper.AddClippingPlane(plane)

    def _camera(self):
        shell = self.meshes[self.s.cfg.mesh.organ]
        c = np.array(shell.center)
        self.pl.camera.up = (0, 0, 1)
        self.pl.camera.position = tuple(c + np.array([0.0, -3.0 * shell.length, 0.0]))
        self.pl.camera.focal_point = tuple(c)
        self.pl.reset_camera()
        self.pl.camera.zoom(1.3)

    def reset_camera(self):
        self._camera()

    def organ_surface(self) -> pv.PolyData:
        return self.meshes[self.s.cfg.mesh.organ]
