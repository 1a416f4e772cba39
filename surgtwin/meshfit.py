"""Fit a grid tet mesh's outer boundary to the label boundary (the voxel-face level set).

The staircase nodes of the outer surface are projected onto a level of the label map's signed distance
(zero half-way between inside and outside voxel centres), at most half the shortest incident edge per
node. Any element the move would invert or flatten (dihedral angle below ``min_dihedral_deg``, or above
180 - 2 x that bound) gets its nodes moved back by halves until it is valid again, so the mesh never
degrades below those bounds. Nodes on a curved surface cut chords inside it, and backed-off nodes stay
short of it, so the level is then offset (a secant iteration on the mesh volume) until the mesh holds
the label's volume.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .mesh import boundary_faces, physical_to_index, triangle_areas
from .sim.blocks import signed_volumes


def signed_distance(mask: sitk.Image) -> np.ndarray:
    """(z, y, x) signed distance [mm], negative inside, zero on the voxel faces between in and out."""
    kw = dict(squaredDistance=False, useImageSpacing=True, insideIsPositive=False)
    out = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(mask, **kw))
    inside = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(sitk.Not(mask), **kw))
    return 0.5 * (out - inside)


def _sample(phi: np.ndarray, image: sitk.Image, xyz: np.ndarray) -> np.ndarray:
    ijk = physical_to_index(image, xyz)
    return ndimage.map_coordinates(phi, ijk[:, ::-1].T, order=1, mode="nearest")


def shortest_edges(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Length [mm] of the shortest edge at each node (inf for unused nodes)."""
    pairs = np.concatenate([tets[:, [a, b]] for a, b in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))])
    length = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    out = np.full(len(points), np.inf)
    np.minimum.at(out, pairs[:, 0], length)
    np.minimum.at(out, pairs[:, 1], length)
    return out


def _project(start, nodes, phi, mask, level, max_move, iterations):
    """Newton steps of the ``nodes`` onto phi = level along its gradient, each moved at most ``max_move``."""
    x = start.copy()
    h = 0.25 * float(min(mask.GetSpacing()))
    for _ in range(iterations):
        p = x[nodes]
        d = _sample(phi, mask, p) - level
        grad = np.stack([(_sample(phi, mask, p + h * e) - _sample(phi, mask, p - h * e)) / (2 * h)
                         for e in np.eye(3)], axis=1)
        norm = np.linalg.norm(grad, axis=1, keepdims=True)
        x[nodes] = p - d[:, None] * grad / np.maximum(norm, 1e-9) ** 2 * np.minimum(norm, 1.0)
    shift = x[nodes] - start[nodes]
    length = np.linalg.norm(shift, axis=1, keepdims=True)
    x[nodes] = start[nodes] + shift * np.minimum(1.0, max_move[:, None] / np.maximum(length, 1e-12))
    return x


def _invalid(x, tets, min_dihedral_deg):
    """Elements inverted, flat, or with a dihedral angle outside [min, 180 - 2 min] degrees."""
    p = x[tets]
    n = np.stack([np.cross(p[:, b] - p[:, a], p[:, c] - p[:, a]) for a, b, c in ((1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1))], 1)
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-300)
    cos = np.stack([(n[:, k] * n[:, l]).sum(1) for k in range(4) for l in range(k + 1, 4)], 1)
    # dihedral = 180 - angle between outward normals: below the bound <=> cos(normals) < -cos(bound)
    lo, hi = np.cos(np.radians(min_dihedral_deg)), np.cos(np.radians(2 * min_dihedral_deg))
    vol = np.einsum("ij,ij->i", p[:, 1] - p[:, 0], np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]))
    return (vol <= 0) | (cos.min(1) < -lo) | (cos.max(1) > hi)


def _back_off(x, start, tets, min_dihedral_deg):
    """Move the nodes of invalid elements back towards ``start`` by halves (then all the way)."""
    x = x.copy()
    check = np.arange(len(tets))
    for _ in range(30):
        bad = check[_invalid(x, tets[check], min_dihedral_deg)]
        if not len(bad):
            return x
        back = np.unique(tets[bad])
        x[back] = 0.5 * (x[back] + start[back])
        check = np.flatnonzero(np.isin(tets, back).any(1))
    back = np.unique(tets[bad])
    x[back] = start[back]
    return x


def snap_boundary(points: np.ndarray, tets: np.ndarray, mask: sitk.Image, size_mm: float | None = None, *,
                  min_dihedral_deg: float = 10.0, iterations: int = 3, volume_rounds: int = 4,
                  volume_tol: float = 0.002) -> np.ndarray:
    """New node positions [mm] with the outer boundary nodes on the mask's boundary, offset (at most half
    a voxel) so that the mesh volume is within ``volume_tol`` of the label's where the bounds allow.
    ``size_mm`` is unused (kept for callers; the move limit is half the shortest edge at each node)."""
    phi = signed_distance(mask)
    faces = boundary_faces(tets)
    nodes = np.unique(faces)
    max_move = 0.5 * shortest_edges(points, tets)[nodes]
    shell = np.isin(tets, nodes).any(1)     # only these elements change
    st = tets[shell]
    target = float(sitk.GetArrayViewFromImage(mask).astype(bool).sum() * np.prod(mask.GetSpacing()))
    fixed = float(np.abs(signed_volumes(points, tets[~shell])).sum())
    limit = 0.5 * float(min(mask.GetSpacing()))

    def fit(level):
        x = _back_off(_project(points, nodes, phi, mask, level, max_move, iterations), points, st, min_dihedral_deg)
        return x, fixed + float(np.abs(signed_volumes(x, st)).sum())

    level, (x, vol) = 0.0, fit(0.0)
    prev = None
    for _ in range(volume_rounds):
        if abs(vol - target) <= volume_tol * target:
            break
        if prev is None or abs(vol - prev[1]) < 1e-9 * target:
            slope = triangle_areas(x, faces).sum()   # d volume / d level for a free surface
        else:
            slope = max((vol - prev[1]) / (level - prev[0]), 0.1 * triangle_areas(x, faces).sum())
        new = float(np.clip(level + (target - vol) / slope, -limit, limit))
        if new == level:
            break
        prev = (level, vol)
        level, (x, vol) = new, fit(new)
    return x
