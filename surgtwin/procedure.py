"""Procedures: ordered surgical steps as data, and the functions that apply them to a mesh.

A Procedure is a reviewable list of steps (``configs/procedure/*.yaml``). This module plans a
resection: which elements go, which faces become the resection surface. Removal is by whole
elements (a jagged surface at element scale); element splitting arrives with the cutting issue.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .config import ProcedureConfig, ResectionStep
from .errors import ConfigError, InputError, LabelError
from .fileio import write_json
from .mesh import TetMesh, boundary_faces, largest_piece


@dataclass
class Procedure:
    name: str
    steps: list[ResectionStep] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: ProcedureConfig) -> "Procedure":
        steps = []
        for s in cfg.steps:
            s = dict(s) if not isinstance(s, ResectionStep) else asdict(s)
            if s.get("action", "resect") != "resect":
                raise ConfigError(f"procedure step '{s.get('action')}' is not available yet (resect)")
            unknown = set(s) - set(ResectionStep.__dataclass_fields__)
            if unknown:
                raise ConfigError(f"unknown resection field(s): {', '.join(sorted(unknown))}")
            step = ResectionStep(**s)
            if step.mode not in ("sphere", "plane"):
                raise ConfigError(f"resection mode '{step.mode}' must be 'sphere' or 'plane'")
            if step.margin_mm < 0:
                raise ConfigError("resection margin must be >= 0 mm")
            steps.append(step)
        if not steps:
            raise ConfigError(f"procedure '{cfg.name}' has no steps")
        return cls(cfg.name, steps)

    def save(self, path: str | Path) -> Path:
        return write_json(path, {"name": self.name, "steps": [asdict(s) for s in self.steps]})

    @classmethod
    def load(cls, path: str | Path) -> "Procedure":
        """A procedure file: YAML (as in configs/procedure/) or the JSON ``save`` writes."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such procedure file: {path}")
        try:
            data = yaml.safe_load(path.read_text())  # JSON is YAML
        except yaml.YAMLError as exc:
            raise InputError(f"{path.name}: not a procedure file ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict) or "steps" not in data:
            raise InputError(f"{path.name}: a procedure file needs 'name' and 'steps'")
        return cls.from_config(ProcedureConfig(name=str(data.get("name", path.stem)), steps=list(data["steps"])))

    def check_targets(self, mesh: TetMesh):
        """Fail early (before any solve) if a step's target is not a region of the mesh."""
        present = {mesh.table.name_of(i) for i in np.unique(mesh.labels)}
        for step in self.steps:
            if step.target not in present:
                raise LabelError(f"resection target '{step.target}' is not in the mesh")


@dataclass
class Resection:
    """The outcome of planning one resection on a mesh (rest configuration, mm)."""

    removed: np.ndarray          # (m,) bool, elements removed (target + margin + detached islands)
    cut_faces: np.ndarray        # (k, 3) node triangles of the resection surface (kept side)
    cut_face_region: np.ndarray  # (k,) label of the kept element owning each cut face
    target_faces: np.ndarray     # (t, 3) node triangles of the target's surface
    plane: tuple | None = None   # (normal, offset) in plane mode
    cut_face_owner: np.ndarray | None = None  # (k,) kept element owning each cut face

    @property
    def target_nodes(self) -> np.ndarray:
        return np.unique(self.target_faces)


def plan_resection(mesh: TetMesh, step: ResectionStep, removed_before: np.ndarray | None = None) -> Resection:
    """Remove the target and every element with a node closer than the margin (sphere mode) or on the
    target side of a plane at ``margin`` from the target (plane mode); keep the largest remnant piece.
    ``removed_before`` (elements taken by earlier steps) is removed too."""
    tets, pts, labels = mesh.tets, mesh.points, mesh.labels
    try:
        tid = mesh.table.id_of(step.target)
    except LabelError:
        tid = -1
    target = labels == tid
    if not target.any():
        raise LabelError(f"resection target '{step.target}' is not in the mesh")
    tfaces = boundary_faces(tets[target])
    tnodes = np.unique(tfaces)
    plane = None
    if step.mode == "sphere":
        dist, _ = cKDTree(pts[tnodes]).query(pts)
        inside_target = np.zeros(len(pts), bool)
        inside_target[np.unique(tets[target])] = True
        dist[inside_target] = 0.0
        removed = target | np.any(dist[tets] < step.margin_mm, axis=1)
    else:
        normal = _plane_normal(mesh, target, step)
        offset = float((pts[tnodes] @ normal).min() - step.margin_mm)
        removed = target | np.any(pts[tets] @ normal > offset, axis=1)
        plane = (normal, offset)
    if removed_before is not None:
        removed |= removed_before
    removed |= ~largest_piece(tets, ~removed, mesh.tet_volumes_mm3(), connectivity="node")
    _check_remnant(removed, step)
    res = _resection_surface(mesh, removed, tfaces, plane)
    for _ in range(50):  # sphere mode: faces between far vertices can still pass inside the margin
        if step.mode != "sphere" or len(res.cut_faces) == 0:
            break
        face, dist = margin_samples(pts, res)[1:3]
        close = np.unique(face[dist < step.margin_mm - 1e-9])
        if len(close) == 0:
            break
        removed = removed.copy()
        removed[res.cut_face_owner[close]] = True
        removed |= ~largest_piece(tets, ~removed, mesh.tet_volumes_mm3(), connectivity="node")
        _check_remnant(removed, step)
        res = _resection_surface(mesh, removed, tfaces, plane)
    return res


def _check_remnant(removed: np.ndarray, step: ResectionStep):
    if removed.all():
        raise ConfigError(f"resection of '{step.target}' with margin {step.margin_mm} mm removes the whole organ")


def _resection_surface(mesh: TetMesh, removed: np.ndarray, tfaces: np.ndarray, plane) -> Resection:
    tets = mesh.tets
    kept = np.flatnonzero(~removed)
    faces, owner = boundary_faces(tets[kept], return_owner=True)
    owner = kept[owner]
    n = len(mesh.points)
    is_cut = np.isin(_face_keys(faces, n), _face_keys(boundary_faces(tets[removed]), n))
    return Resection(removed, faces[is_cut], mesh.labels[owner[is_cut]], tfaces, plane, owner[is_cut])


def sample_triangles(points: np.ndarray, faces: np.ndarray, spacing: float):
    """Dense samples on triangles: the centroids of a uniform n x n subdivision of each face, with
    n chosen so sub-triangle edges are at most ``spacing``. Returns (samples (s, 3), face index (s,),
    area of each sample's sub-triangle (s,)) — the sub-triangles tile the faces exactly."""
    a, b, c = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
    edge = np.max([np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1), np.linalg.norm(a - c, axis=1)], 0)
    nsub = np.maximum(1, np.ceil(edge / spacing).astype(int))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    out_p, out_f, out_a = [], [], []
    for n in np.unique(nsub):
        sel = np.flatnonzero(nsub == n)
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        up = (i + j) < n                          # upward sub-triangles: centroid (i+1/3, j+1/3)
        down = (i + j) < n - 1                    # downward ones: centroid (i+2/3, j+2/3)
        uv = np.concatenate([np.c_[i[up] + 1 / 3, j[up] + 1 / 3], np.c_[i[down] + 2 / 3, j[down] + 2 / 3]]) / n
        pts = a[sel, None] + uv[None, :, :1] * (b - a)[sel, None] + uv[None, :, 1:] * (c - a)[sel, None]
        out_p.append(pts.reshape(-1, 3))
        out_f.append(np.repeat(sel, len(uv)))
        out_a.append(np.repeat(area[sel] / n ** 2, len(uv)))
    return np.concatenate(out_p), np.concatenate(out_f), np.concatenate(out_a)


def margin_samples(points: np.ndarray, res: Resection, spacing: float = 1.0):
    """Samples on the resection surface with their exact distance to the target's surface.

    Returns (samples, cut-face index, distance [mm], sample area)."""
    import pyvista as pv

    samples, face, area = sample_triangles(points, res.cut_faces, spacing)
    tf = res.target_faces
    surf = pv.PolyData(points, np.hstack([np.full((len(tf), 1), 3), tf]).ravel())
    _, closest = surf.find_closest_cell(samples, return_closest_point=True)
    return samples, face, np.linalg.norm(np.atleast_2d(closest) - samples, axis=1), area


def _plane_normal(mesh: TetMesh, target: np.ndarray, step: ResectionStep) -> np.ndarray:
    if step.normal is not None:
        n = np.asarray(step.normal, dtype=float)
        if n.shape != (3,) or np.linalg.norm(n) == 0:
            raise ConfigError("resection normal must be a non-zero [x, y, z] vector")
        return n / np.linalg.norm(n)
    vol = np.abs(mesh.tet_volumes_mm3())
    cent = mesh.points[mesh.tets].mean(axis=1)
    organ_c = np.average(cent, axis=0, weights=vol)
    target_c = np.average(cent[target], axis=0, weights=vol[target])
    d = target_c - organ_c
    if np.linalg.norm(d) < 1e-6:
        raise ConfigError("target is at the organ centre: give resection normal explicitly")
    return d / np.linalg.norm(d)  # remove the peripheral side holding the target


def _face_keys(faces: np.ndarray, n: int) -> np.ndarray:
    """Orientation-independent integer key per triangle."""
    f = np.sort(faces, axis=1).astype(np.int64)
    return (f[:, 0] * n + f[:, 1]) * n + f[:, 2]
