"""Closest approach between the plan (resection surface, tool paths) and the anatomy.

All coordinates are physical LPS millimetres in the rest (pre-operative imaging) configuration.
Structures come from the label map: each is represented by the centres of its voxel faces that
separate it from another label (its voxelised surface), so a distance is exact to the label map's
staircase surface within half a face diagonal; a point inside a structure is at distance 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial import cKDTree

from .errors import ConfigError
from .procedure import sample_triangles

#: Label categories that wrap everything (body outline, fat): never "approached" in a useful sense.
IGNORED_CATEGORIES = ("tissue",)


@dataclass
class ToolPath:
    """A tool trajectory: a polyline of points [mm] (LPS), e.g. a needle, trocar or dissector path."""

    name: str
    points_mm: np.ndarray  # (k, 3), k >= 2

    @classmethod
    def from_config(cls, entry, index: int = 0) -> "ToolPath":
        """``{name: str, points_mm: [[x, y, z], ...]}`` (at least two points)."""
        try:
            d = dict(entry)
            pts = np.asarray(d["points_mm"], dtype=float)
        except (KeyError, TypeError, ValueError):
            raise ConfigError("a tool path needs points_mm: [[x, y, z], [x, y, z], ...]") from None
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 2 or not np.all(np.isfinite(pts)):
            raise ConfigError(f"tool path '{d.get('name', index)}': points_mm must be at least two [x, y, z] points")
        return cls(str(d.get("name", f"tool path {index + 1}")), pts)

    def samples(self, spacing_mm: float = 0.5) -> np.ndarray:
        """Points along the polyline no further apart than ``spacing_mm`` (ends included)."""
        out = [self.points_mm[:1]]
        for a, b in zip(self.points_mm[:-1], self.points_mm[1:]):
            n = max(1, int(np.ceil(np.linalg.norm(b - a) / spacing_mm)))
            t = np.arange(1, n + 1)[:, None] / n
            out.append(a + t * (b - a))
        return np.concatenate(out)


def structure_surfaces(labelmap, exclude=()) -> dict:
    """Label name -> (label id, voxel-face centres [mm] (f, 3)) of every present structure but
    ``exclude`` and the wrapping categories (body, fat)."""
    img = labelmap.image
    arr = sitk.GetArrayViewFromImage(img)  # (z, y, x)
    pos, lab = [], []
    for axis_zyx, axis_xyz in ((2, 0), (1, 1), (0, 2)):
        for sign in (-1, 1):
            nb = np.full_like(arr, 0)
            src = [slice(None)] * 3
            dst = [slice(None)] * 3
            if sign > 0:
                dst[axis_zyx], src[axis_zyx] = slice(0, -1), slice(1, None)
            else:
                dst[axis_zyx], src[axis_zyx] = slice(1, None), slice(0, -1)
            nb[tuple(dst)] = arr[tuple(src)]
            face = (arr != nb) & (arr != 0)
            zyx = np.argwhere(face)
            if not len(zyx):
                continue
            ijk = zyx[:, ::-1].astype(float)
            ijk[:, axis_xyz] += 0.5 * sign
            pos.append(ijk)
            lab.append(arr[face])
    if not pos:
        return {}
    from .mesh import index_to_physical

    pos = index_to_physical(img, np.concatenate(pos))
    lab = np.concatenate(lab)
    out = {}
    table = labelmap.table
    skip = set(exclude)
    for lid in np.unique(lab):
        name = table.name_of(int(lid))
        if name in skip or _category(table, int(lid)) in IGNORED_CATEGORIES:
            continue
        out[name] = (int(lid), pos[lab == lid])
    return out


def _category(table, lid: int) -> str:
    lab = table.labels.get(int(lid))
    return lab.category if lab is not None else ""


def closest_approaches(source: str, samples_mm: np.ndarray, labelmap, surfaces: dict) -> list[dict]:
    """Minimum distance from a sampled source (resection surface, tool path) to each structure.

    Returns one dict per structure, closest first: source, structure, category, distance_mm, the
    point on the source (``at_mm``) and on the structure (``structure_mm``) where it occurs, the
    deepest penetration into the structure (``penetration_mm``, 0 when outside) and ``crossed``: the
    source goes deeper than one voxel into it (a shallower contact is within the resolution of the
    label map and of the boundary-fitted mesh, whose surface is within about a voxel of the labels)."""
    from .mesh import sample_labels

    if len(samples_mm) == 0:
        return []
    inside = sample_labels(labelmap, samples_mm)
    voxel = float(max(labelmap.image.GetSpacing()))
    out = []
    for name, (lid, faces) in surfaces.items():
        hit = np.flatnonzero(inside == lid)
        tree = cKDTree(faces)
        depth = 0.0
        if len(hit):
            depths = tree.query(samples_mm[hit])[0]
            i = int(hit[np.argmax(depths)])
            depth = float(depths.max())
            d, at, on = 0.0, samples_mm[i], samples_mm[i]
        else:
            dist, j = tree.query(samples_mm)
            i = int(np.argmin(dist))
            d, at, on = float(dist[i]), samples_mm[i], faces[j[i]]
        out.append({"source": source, "structure": name, "category": _category(labelmap.table, lid),
                    "distance_mm": round(d, 3), "at_mm": np.round(at, 2).tolist(),
                    "structure_mm": np.round(on, 2).tolist(), "penetration_mm": round(depth, 3),
                    "crossed": bool(depth > voxel)})
    return sorted(out, key=lambda r: r["distance_mm"])


def surface_samples(points_mm: np.ndarray, faces: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Samples on a triangulated surface no further apart than ``spacing_mm`` (plus the vertices)."""
    if len(faces) == 0:
        return np.zeros((0, 3))
    s = sample_triangles(points_mm, faces, spacing_mm)[0]
    return np.concatenate([s, points_mm[np.unique(faces)]])


def tumour_margin_share(points_mm: np.ndarray, target_faces: np.ndarray, cut_faces: np.ndarray,
                        planned_mm: float, spacing_mm: float = 1.0, cut_points_mm: np.ndarray | None = None,
                        tolerance_mm: float = 0.0):
    """Share of the tumour surface closer to the resection surface than the planned margin.

    The tumour surface (triangles ``target_faces`` on ``points_mm``) is tiled into sub-triangles of
    edge <= ``spacing_mm``; each one's centroid gets its exact distance to the resection surface
    (``cut_faces`` on ``cut_points_mm``, default the same points); a sample counts when it is closer
    than ``planned_mm - tolerance_mm``. Returns (area share in [0, 1],
    minimum distance [mm], point on the tumour where it occurs)."""
    import pyvista as pv

    cp = points_mm if cut_points_mm is None else cut_points_mm
    if len(cut_faces) == 0 or len(target_faces) == 0:
        return 0.0, float("inf"), None
    samples, _, area = sample_triangles(points_mm, target_faces, spacing_mm)
    cut = pv.PolyData(cp, np.hstack([np.full((len(cut_faces), 1), 3), cut_faces]).ravel())
    # unsigned distance to the closest point of the surface, evaluated inside VTK for all samples at once
    d = np.abs(np.asarray(pv.PolyData(samples).compute_implicit_distance(cut)["implicit_distance"], float))
    i = int(np.argmin(d))
    return float(area[d < planned_mm - tolerance_mm].sum() / area.sum()), float(d[i]), samples[i]
