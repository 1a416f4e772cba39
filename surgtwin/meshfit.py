"""Fit a grid tet mesh's outer boundary to the label boundary (the voxel-face level set).

The staircase nodes of the outer surface are projected onto the zero level of the label map's signed
distance (half-way between inside and outside voxel centres), at most half an element per node. Any
element the move would invert or flatten (dihedral angle below ``min_dihedral_deg``) gets its nodes
moved back by halves until it is valid again (also no dihedral angle above 180 - 2 x that bound), so
the mesh never degrades below those bounds.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .mesh import boundary_faces, physical_to_index, tet_quality, triangle_areas
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


def snap_boundary(points: np.ndarray, tets: np.ndarray, mask: sitk.Image, size_mm: float, *,
                  min_dihedral_deg: float = 10.0, iterations: int = 3) -> np.ndarray:
    """New node positions [mm] with the outer boundary nodes on the mask's boundary (the last step offset
    by the volume deficit over the area, at most half a voxel, so the mesh keeps the label's volume)."""
    phi = signed_distance(mask)
    nodes = np.unique(boundary_faces(tets))
    start = points.copy()
    x = points.copy()
    step = 0.25 * float(min(mask.GetSpacing()))
    target_mm3 = float(sitk.GetArrayViewFromImage(mask).astype(bool).sum() * np.prod(mask.GetSpacing()))
    level = 0.0
    for k in range(iterations + 1):  # Newton steps on phi - level along its gradient
        p = x[nodes]
        d = _sample(phi, mask, p) - level
        grad = np.stack([(_sample(phi, mask, p + step * e) - _sample(phi, mask, p - step * e)) / (2 * step)
                         for e in np.eye(3)], axis=1)
        norm = np.linalg.norm(grad, axis=1, keepdims=True)
        x[nodes] = p - d[:, None] * grad / np.maximum(norm, 1e-9) ** 2 * np.minimum(norm, 1.0)
        if k == iterations - 1:
            # nodes on a curved surface cut chords inside it: offset the level so the volume is kept
            faces = boundary_faces(tets)
            area = triangle_areas(x, faces).sum()
            vol = np.abs(signed_volumes(x, tets)).sum()
            level = float(np.clip((target_mm3 - vol) / max(area, 1e-9), -0.5 * step * 4, 0.5 * step * 4))
    shift = x[nodes] - start[nodes]
    length = np.linalg.norm(shift, axis=1, keepdims=True)
    x[nodes] = start[nodes] + shift * np.minimum(1.0, 0.5 * size_mm / np.maximum(length, 1e-12))
    for _ in range(30):  # back off where an element became invalid
        q = tet_quality(x, tets)
        bad = (signed_volumes(x, tets) <= 0) | (q["min_dihedral_deg"] < min_dihedral_deg) | (q["max_dihedral_deg"] > 180.0 - 2 * min_dihedral_deg)
        if not bad.any():
            return x
        back = np.unique(tets[bad])
        x[back] = 0.5 * (x[back] + start[back])
    bad_nodes = np.unique(tets[bad])
    x[bad_nodes] = start[bad_nodes]
    return x
