"""Cutting a simulated organ: incisions that open and level-set resections, as explicit topology changes.

    change = apply_incision(spec, x, path_mm, depth_mm)     # -> TopologyChange
    spec, x = change.spec, change.positions                  # finalize a new Model, re-equilibrate

An incision sweeps the blade (the picked polyline) along a direction (default: into the tissue, against
the local surface normal) to a depth; the crossed elements are split by the blade surface
(``surgtwin.tetsplit``) and the faces on the blade are separated by duplicating their nodes, so the
wound opens under tissue tension while its ends (the crack front) stay attached. A resection splits by
a signed-distance field and marks the negative side dead. Nothing is deleted and every split is exact:
the volume of the live plus dead elements is unchanged to round-off. Lengths: paths in mm in the same
configuration as ``x``; ModelSpec in metres (the simulator's units).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree

from .errors import ConfigError, MeshError
from .sim import ModelSpec
from .sim.blocks import signed_volumes
from .tetsplit import (TET_FACES, boundary_of, count4, duplicate_nodes, face_keys, interior_faces, largest_face_piece,
                       non_manifold_edges, split_by_level_set)

MM = 1e-3


@dataclass
class TopologyChange:
    """One cut. New node i interpolates old nodes: ``(1 - node_t[i]) a + node_t[i] b`` with
    ``(a, b) = node_src[i]`` (a copy when a == b); new element j is part of old element ``parent[j]``.
    ``removed`` marks the new elements the cut took away (resection); ``cut_faces`` (k, 3) are the
    new boundary triangles the cut made (both lips of an incision, the remnant side of a resection)."""

    kind: str
    node_src: np.ndarray
    node_t: np.ndarray
    parent: np.ndarray
    tets: np.ndarray
    removed: np.ndarray
    cut_faces: np.ndarray
    split_elements: int = 0
    duplicated_nodes: int = 0
    seconds: float = 0.0
    spec: ModelSpec | None = None
    positions: np.ndarray | None = None
    twin: np.ndarray | None = None       # (duplicated_nodes,) node (new numbering) each copy was made from

    def transfer_nodes(self, values: np.ndarray) -> np.ndarray:
        """Nodal values (n_old, ...) -> (n_new, ...) by the interpolation of the cut (exact for P1 fields)."""
        v = np.asarray(values)
        t = self.node_t.reshape((-1,) + (1,) * (v.ndim - 1))
        return (1.0 - t) * v[self.node_src[:, 0]] + t * v[self.node_src[:, 1]]

    def transfer_elements(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[self.parent]

    def apply_to_spec(self, spec: ModelSpec) -> ModelSpec:
        """The ModelSpec after the cut: split nodes interpolate, copies share support stiffness equally,
        elements inherit materials; dead = dead before or removed by this cut."""
        a, b = self.node_src[:, 0], self.node_src[:, 1]
        copy = a == b
        k = np.where(copy, spec.spring_k[a], 0.0)          # split points add no surface support
        share = np.bincount(a[copy], minlength=len(spec.points)).astype(float)
        k[copy] /= share[a[copy]]
        return replace(spec, points=self.transfer_nodes(spec.points), tets=self.tets,
                       region=spec.region[self.parent], youngs=spec.youngs[self.parent],
                       poisson=spec.poisson[self.parent], density=spec.density[self.parent],
                       law=spec.law[self.parent], c01_ratio=spec.c01_ratio[self.parent],
                       fixed=spec.fixed[a] & spec.fixed[b], spring_k=k, anchors=self.transfer_nodes(spec.anchors),
                       alive=spec.alive[self.parent] & ~self.removed)


def _change(kind, n_old, split, tets, dup_src, removed, cut_faces, t0) -> TopologyChange:
    src = np.concatenate([np.stack([np.arange(n_old), np.arange(n_old)], 1), split.edge_nodes])
    tt = np.concatenate([np.zeros(n_old), split.edge_t])
    src = np.concatenate([src, src[dup_src]])
    tt = np.concatenate([tt, tt[dup_src]])
    return TopologyChange(kind, src.astype(np.int64), tt, split.parent, tets, removed, cut_faces,
                          split.split_count, len(dup_src), time.perf_counter() - t0, twin=np.asarray(dup_src, np.int64))


# ---------------------------------------------------------------------------------------------- incision
def blade_level_set(x_mm: np.ndarray, path_mm, depth_mm: float, direction, above_mm: float,
                    end_slack_mm: float = 0.0):
    """Signed distance [mm] of nodes to the swept blade (the polyline extruded along ``direction``),
    and the mask of nodes inside the swept band (between the path ends, widened by ``end_slack_mm``, from
    ``above_mm`` over the path to ``depth_mm`` under it). Outside the band the field is 0 (no cut there)."""
    path = np.asarray(path_mm, float)
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    e1 = np.cross(d, [1.0, 0, 0] if abs(d[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    P = np.stack([path @ e1, path @ e2], 1)
    Q = np.stack([x_mm @ e1, x_mm @ e2], 1)
    seg = P[1:] - P[:-1]
    L2 = (seg ** 2).sum(1)
    if np.any(L2 < 1e-12):
        raise ConfigError("incision path has repeated points (or runs along the blade direction)")
    raw = ((Q[:, None] - P[None, :-1]) * seg[None]).sum(2) / L2[None]          # (n, s)
    t = np.clip(raw, 0.0, 1.0)
    close = P[None, :-1] + t[..., None] * seg[None]
    dist = np.linalg.norm(Q[:, None] - close, axis=2)
    k = np.argmin(dist, axis=1)
    r = np.arange(len(Q))
    tk, rk = t[r, k], raw[r, k]
    nrm = np.stack([-seg[:, 1], seg[:, 0]], 1) / np.sqrt(L2)[:, None]
    vn = np.zeros((len(P), 2))
    vn[:-1] += nrm
    vn[1:] += nrm
    normal = np.where((tk <= 0)[:, None], vn[k], np.where((tk >= 1)[:, None], vn[k + 1], nrm[k]))
    sign = np.sign(((Q - close[r, k]) * normal).sum(1))
    phi = np.where(sign == 0, 0.0, sign) * dist[r, k]
    p3 = path[k] + tk[:, None] * (path[k + 1] - path[k])
    u = (x_mm - p3) @ d
    inside = (u >= -above_mm) & (u <= depth_mm)
    slack = end_slack_mm / np.sqrt(L2)          # in segment parameter units
    inside &= ~((k == 0) & (rk < -slack[0])) & ~((k == len(seg) - 1) & (rk > 1 + slack[-1]))
    return np.where(inside, phi, 0.0), inside


def inward_direction(x_mm: np.ndarray, tets: np.ndarray, alive: np.ndarray, path_mm) -> np.ndarray:
    """Into the tissue at the path: minus the area-weighted outward normal of the nearby surface."""
    path = np.asarray(path_mm, float)
    t = tets[alive]
    h = float(np.median(np.linalg.norm(x_mm[t[:200, 0]] - x_mm[t[:200, 1]], axis=1)))
    reach = 3.0 * h + 5.0                        # faces within reach - h of the path are classified right
    near = cKDTree(path).query(x_mm, distance_upper_bound=reach + h)[0] < np.inf
    faces = boundary_of(t[count4(near[t]) == 4], len(x_mm))
    a, b, c = (x_mm[faces[:, i]] for i in range(3))
    nrm = np.cross(b - a, c - a)                    # outward for positive tets, |n| = 2 area
    cen = (a + b + c) / 3.0
    if len(faces) == 0:
        raise ConfigError("the incision path is not near the organ surface")
    _, idx = cKDTree(cen).query(path, k=min(12, len(faces)), distance_upper_bound=reach)
    idx = idx[idx < len(faces)]
    if len(idx) == 0:
        raise ConfigError("the incision path is not near the organ surface")
    n = nrm[np.unique(idx)].sum(0)
    if np.linalg.norm(n) == 0:
        raise ConfigError("cannot tell the incision direction here: give it explicitly")
    return -n / np.linalg.norm(n)


def incise_topology(tets: np.ndarray, alive: np.ndarray, phi: np.ndarray, band: np.ndarray, *,
                    alpha: float = 0.15):
    """Split by the blade field and separate the faces lying on the blade inside the band.

    Returns (split, tets after separation, source node of each duplicated node, separated faces (k, 3)
    in the split numbering)."""
    n = len(phi)
    split = split_by_level_set(tets, phi, active=alive, alpha=alpha)
    n1 = n + len(split.edge_t)
    live = np.concatenate([alive[split.parent]])
    blade = split.on_surface & np.concatenate([band, np.ones(len(split.edge_t), bool)])
    lid = np.flatnonzero(live & (count4(blade[split.tets]) >= 3))    # only these can hold a blade face
    faces, ta, tb = interior_faces(split.tets[lid], n1)
    ta, tb = lid[ta], lid[tb]
    cut = (split.side[ta] * split.side[tb] == -1) & blade[faces].all(1)
    cut_faces = faces[cut]
    while True:  # separate; drop cut faces that would leave a non-manifold boundary edge (ends: each round drops)
        new_tets, src = duplicate_nodes(split.tets, live, cut_faces, n1)
        touched = np.concatenate([np.unique(cut_faces), n1 + np.arange(len(src))])
        bad = non_manifold_edges(new_tets[live], n1 + len(src), touched) if len(cut_faces) else []
        if len(bad) == 0:
            return split, new_tets, src, cut_faces
        orig = np.concatenate([np.arange(n1), src])
        bad = np.sort(orig[bad], axis=1)
        has = np.zeros(len(cut_faces), bool)
        for i, j in ((0, 1), (1, 2), (0, 2)):
            e = cut_faces[:, [i, j]]
            has |= np.isin(e[:, 0] * n1 + e[:, 1], bad[:, 0] * n1 + bad[:, 1])
        if not has.any():
            raise MeshError("the incision cannot be opened along this path without a non-manifold wound edge "
                            "(try a path further from earlier cuts, or another depth)")
        cut_faces = cut_faces[~has]


def apply_incision(spec: ModelSpec, positions: np.ndarray | None, path_mm, depth_mm: float, *,
                   direction=None, above_mm: float | None = None, alpha: float = 0.15) -> TopologyChange:
    """Cut along ``path_mm`` (k >= 2 points, mm, in the configuration ``positions`` [m], default rest)
    to ``depth_mm`` below it, sweeping along ``direction`` (default: into the tissue).

    Returns the TopologyChange with ``spec`` and ``positions`` after the cut (duplicated nodes start
    where their original is; the wound opens when the new state is re-equilibrated)."""
    t0 = time.perf_counter()
    path = np.asarray(path_mm, float)
    if path.ndim != 2 or path.shape[1] != 3 or len(path) < 2:
        raise ConfigError("an incision path needs at least two [x, y, z] points (mm)")
    if not depth_mm > 0:
        raise ConfigError("incision depth must be > 0 mm")
    x = spec.points if positions is None else np.asarray(positions, float)
    x_mm = x / MM
    d = inward_direction(x_mm, spec.tets, spec.alive, path) if direction is None else np.asarray(direction, float)
    if d.shape != (3,) or not np.linalg.norm(d) > 0:
        raise ConfigError("incision direction must be a non-zero [x, y, z] vector")
    above = float(depth_mm if above_mm is None else above_mm)
    live = spec.tets[spec.alive]
    h = float(np.median(np.linalg.norm(x_mm[live[:, 0]] - x_mm[live[:, 1]], axis=1)))
    # the band reaches half an element past the path ends, so the cut resolves up to its end and a
    # later incision from that end joins it
    phi, band = blade_level_set(x_mm, path, depth_mm, d, above, end_slack_mm=0.5 * h)
    split, tets, src, cut = incise_topology(spec.tets, spec.alive, phi, band, alpha=alpha)
    n1 = len(phi) + len(split.edge_t)
    lips = _lip_faces(split.tets, tets, cut, n1)
    ch = _change("incision", len(phi), split, tets, src, np.zeros(len(tets), bool), lips, t0)
    ch.spec = ch.apply_to_spec(spec)
    ch.positions = ch.transfer_nodes(x)
    ch.seconds = time.perf_counter() - t0
    return ch


def _lip_faces(before: np.ndarray, after: np.ndarray, cut_faces: np.ndarray, n: int) -> np.ndarray:
    """Both sides of each separated face, in the numbering after separation."""
    if len(cut_faces) == 0:
        return np.zeros((0, 3), np.int64)
    mask = np.zeros(n, bool)
    mask[cut_faces.ravel()] = True
    near = count4(mask[before]) >= 3
    before, after = before[near], after[near]
    faces = np.concatenate([before[:, list(f)] for f in TET_FACES])
    new = np.concatenate([after[:, list(f)] for f in TET_FACES])
    hit = np.isin(face_keys(faces, n), face_keys(cut_faces, n))
    return new[hit]


# --------------------------------------------------------------------------------------------- resection
def resect_topology(tets: np.ndarray, alive: np.ndarray, phi: np.ndarray, volumes_fn, *, alpha: float = 0.15):
    """Split the live tets by ``phi`` (kept side phi > 0) and choose what goes: the negative side, any
    live piece not face-connected to the largest one, and the tets at a boundary edge that would be
    shared by more than two boundary faces. Returns (split, removed (new elements,) bool)."""
    split = split_by_level_set(tets, phi, active=alive, alpha=alpha)
    live = alive[split.parent]
    n1 = len(phi) + len(split.edge_t)
    keep = live & (split.side > 0)
    for _ in range(20):
        if not keep.any():
            break
        keep = largest_face_piece(split.tets, keep, lambda: volumes_fn(split), n1)
        gone = np.unique(split.tets[live & ~keep])                   # the boundary changed only here
        bad = non_manifold_edges(split.tets[keep], n1, gone)
        if len(bad) == 0:
            break
        key = bad[:, 0] * n1 + bad[:, 1]
        t = split.tets
        touch = np.zeros(len(t), bool)
        for i, j in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)):
            lo, hi = np.minimum(t[:, i], t[:, j]), np.maximum(t[:, i], t[:, j])
            touch |= np.isin(lo * n1 + hi, key)
        keep &= ~touch
    return split, live & ~keep


def apply_resection(spec: ModelSpec, positions: np.ndarray | None, phi_mm: np.ndarray, *,
                    alpha: float = 0.15) -> TopologyChange:
    """Remove the side phi < 0 of a nodal signed distance [mm] (rest configuration) from the live
    elements of ``spec``; the removed elements stay in the ModelSpec as dead elements."""
    t0 = time.perf_counter()
    x = spec.points if positions is None else np.asarray(positions, float)

    def vols(split):
        pts = np.concatenate([spec.points, (1 - split.edge_t)[:, None] * spec.points[split.edge_nodes[:, 0]]
                              + split.edge_t[:, None] * spec.points[split.edge_nodes[:, 1]]])
        return signed_volumes(pts, split.tets)

    split, removed = resect_topology(spec.tets, spec.alive, np.asarray(phi_mm, float), vols, alpha=alpha)
    n1 = len(spec.points) + len(split.edge_t)
    cut = resection_faces(split.tets, spec.alive[split.parent], removed, n1)
    ch = _change("resection", len(spec.points), split, split.tets, np.zeros(0, np.int64), removed, cut, t0)
    ch.spec = ch.apply_to_spec(spec)
    ch.positions = ch.transfer_nodes(x)
    ch.seconds = time.perf_counter() - t0
    return ch


def resection_faces(tets: np.ndarray, live: np.ndarray, removed: np.ndarray, n: int) -> np.ndarray:
    """Faces between live kept tets and tets ``removed`` now, oriented out of the kept side."""
    mask = np.zeros(n, bool)
    mask[tets[live & removed].ravel()] = True
    loc = np.flatnonzero(live & (count4(mask[tets]) >= 3))
    faces = np.concatenate([tets[loc][:, list(f)] for f in TET_FACES])
    owner = np.tile(loc, 4)
    key = face_keys(faces, n)
    gone = np.isin(key, key[removed[owner]])
    return faces[gone & ~removed[owner]]


def live_volume(spec: ModelSpec) -> float:
    """Volume [m^3] of the live elements (rest configuration)."""
    return float(signed_volumes(spec.points, spec.tets[spec.alive]).sum())


def total_volume(spec: ModelSpec) -> float:
    """Volume [m^3] of live and dead elements together (unchanged by any cut)."""
    return float(signed_volumes(spec.points, spec.tets).sum())


def cut_defect(before: ModelSpec, change, v0: float) -> str | None:
    """Why a cut (``change``, from ``before``) broke the mesh, or None: a non-finite position, an inverted
    or flat element, a sliver (< 1e-3 of its parent's volume), the total volume changed by more than 1e-12
    relative to ``v0``, or a live boundary edge not shared by exactly two boundary faces."""
    s = change.spec
    vol = signed_volumes(s.points, s.tets)
    if not (np.isfinite(s.points).all() and np.isfinite(change.positions).all()):
        return "non-finite position"
    if vol.min() <= 0:
        return "inverted element"
    if (vol / signed_volumes(before.points, before.tets)[change.parent]).min() <= 1e-3:
        return "sliver element"
    if abs(total_volume(s) - v0) > 1e-12 * v0:
        return "volume bookkeeping"
    if s.alive.any() and len(non_manifold_edges(s.tets[s.alive], len(s.points))):
        return "non-manifold boundary"
    return None
