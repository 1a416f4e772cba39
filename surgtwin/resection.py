"""Resection planning: the target plus a margin (sphere) or one side of a plane, cut by element splitting.

The cut surface is the zero set of a nodal signed distance [mm] (to the target's surface minus the
margin, or to a plane at the margin from the target): crossed elements are split on it
(``surgtwin.tetsplit``), near-node crossings snapped, so the remnant has a clean planar-per-element cut
surface instead of an element staircase. The margin is measured on that surface (sampled every 1 mm)
and, where it falls short (a distance field interpolated linearly, a snapped node), the cut moves out
until it holds. Nothing is deleted: ``Resection.mesh`` is the split mesh and ``removed`` marks its
elements that go, so remnant + removed = original volume to round-off.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ResectionStep
from .errors import ConfigError, LabelError
from .mesh import TetMesh, boundary_faces
from .tetsplit import face_keys

@dataclass
class Resection:
    """The outcome of planning one resection on a mesh (rest configuration, mm)."""

    removed: np.ndarray          # (m,) bool, elements removed (target + margin + detached islands)
    cut_faces: np.ndarray        # (k, 3) node triangles of the resection surface (kept side)
    cut_face_region: np.ndarray  # (k,) label of the kept element owning each cut face
    target_faces: np.ndarray     # (t, 3) node triangles of the target's surface
    plane: tuple | None = None   # (normal, offset) in plane mode
    cut_face_owner: np.ndarray | None = None  # (k,) kept element owning each cut face
    mesh: TetMesh | None = None  # the split mesh the masks and faces index
    change: object | None = None  # cutting.TopologyChange from the mesh planned on to ``mesh``

    @property
    def target_nodes(self) -> np.ndarray:
        return np.unique(self.target_faces)


def target_signed_distance(mesh: TetMesh, target: np.ndarray, tfaces: np.ndarray) -> np.ndarray:
    """Signed distance [mm] of every node to the target's surface (negative inside the target)."""
    import pyvista as pv

    surf = pv.PolyData(mesh.points, np.hstack([np.full((len(tfaces), 1), 3), tfaces]).ravel())
    _, closest = surf.find_closest_cell(mesh.points, return_closest_point=True)
    d = np.linalg.norm(np.atleast_2d(closest) - mesh.points, axis=1)
    inside = np.zeros(len(mesh.points), bool)
    inside[np.unique(mesh.tets[target])] = True
    inside[np.unique(tfaces)] = False
    return np.where(inside, -d, d)


def plan_resection(mesh: TetMesh, step: ResectionStep, removed_before: np.ndarray | None = None, *,
                   alpha: float = 0.15) -> Resection:
    """Split ``mesh`` on the cut surface at ``step.margin_mm`` from the target (sphere mode: distance
    to the target's surface; plane mode: a plane that far on the organ side of the target) and remove
    the target side, any piece no longer attached by faces to the largest remnant, and the elements
    ``removed_before`` (earlier steps). Returns the Resection on the split mesh (``res.mesh``)."""
    from .cutting import resect_topology

    tets, pts, labels = mesh.tets, mesh.points, mesh.labels
    alive = np.ones(len(tets), bool) if removed_before is None else ~np.asarray(removed_before, bool)
    try:
        tid = mesh.table.id_of(step.target)
    except LabelError:
        tid = -1
    target = labels == tid           # removed by an earlier step or not, the margin is from it
    if not target.any():
        raise LabelError(f"resection target '{step.target}' is not in the mesh")
    plane = None
    if step.mode == "territory":
        return _plan_territory(mesh, step, target, alive, alpha)
    tfaces = boundary_faces(tets[target])
    if step.mode == "sphere":
        base = target_signed_distance(mesh, target, tfaces) - step.margin_mm
    else:
        normal = _plane_normal(mesh, target, step)
        offset = float((pts[np.unique(tfaces)] @ normal).min() - step.margin_mm)
        base = offset - pts @ normal
        plane = (normal, offset)
    h = float(np.median(np.abs(mesh.tet_volumes_mm3())) ** (1 / 3))
    delta = 0.0
    vols = _split_volumes(pts)
    for _ in range(12):  # move the cut out until the margin holds on the cut surface itself
        split, removed = resect_topology(tets, alive, base - delta, vols, alpha=alpha)
        removed |= ~alive[split.parent]
        if removed.all():
            raise ConfigError(f"resection of '{step.target}' with margin {step.margin_mm} mm removes the whole organ")
        res = _split_resection(mesh, split, removed, target, plane)
        if len(res.cut_faces) == 0:
            return res
        achieved = float(margin_samples(res.mesh.points, res)[2].min())
        if achieved >= step.margin_mm - 1e-9:
            return res
        delta += step.margin_mm - achieved + 0.02 * h
    raise ConfigError(f"resection of '{step.target}': no cut keeps a {step.margin_mm} mm margin on this mesh")


def _split_volumes(pts: np.ndarray):
    """Signed volumes of a split's tets (new nodes interpolated on their edges) — resect_topology's check."""
    from .sim.blocks import signed_volumes

    def vols(split):
        p = np.concatenate([pts, (1 - split.edge_t)[:, None] * pts[split.edge_nodes[:, 0]]
                            + split.edge_t[:, None] * pts[split.edge_nodes[:, 1]]])
        return signed_volumes(p, split.tets)
    return vols


def vessel_branch(mesh: TetMesh, vessel: np.ndarray, at_mm, jaw_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Divide the vessel tree (element mask ``vessel``) at ``at_mm``: the elements within ``jaw_mm`` of it
    are the division; of what is left, the largest face-connected piece is the trunk and the pieces that
    touched the division are the branch it feeds. Returns (branch, trunk) element masks."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cen = mesh.points[mesh.tets].mean(1)
    jaw = vessel & (np.linalg.norm(cen - np.asarray(at_mm, float), axis=1) <= jaw_mm)
    if not jaw.any():
        d = np.linalg.norm(cen[vessel] - np.asarray(at_mm, float), axis=1).min() if vessel.any() else np.inf
        raise ConfigError(f"territory: no vessel within {jaw_mm} mm of {np.round(at_mm, 1).tolist()} mm "
                          f"(nearest {d:.1f} mm)")
    rest = np.flatnonzero(vessel & ~jaw)
    keys = np.sort(mesh.tets[rest][:, [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]], axis=2).reshape(-1, 3)
    owner = np.repeat(np.arange(len(rest)), 4)
    k = face_keys(keys, len(mesh.points))
    order = np.argsort(k)
    same = np.flatnonzero(k[order][1:] == k[order][:-1])
    a, b = owner[order][same], owner[order][same + 1]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(rest), len(rest)))
    _, comp = connected_components(graph, directed=False)
    trunk_id = np.argmax(np.bincount(comp))
    near = np.linalg.norm(cen[rest] - np.asarray(at_mm, float), axis=1) <= jaw_mm + 2.0 * np.cbrt(
        np.median(np.abs(mesh.tet_volumes_mm3())))
    sizes = np.bincount(comp)
    small = sizes < max(10, 0.02 * len(rest))       # fragments of the divided segment itself
    fed = {c for c in np.unique(comp[near]).tolist() if c != trunk_id and not small[c]}
    if not fed:
        raise ConfigError(f"territory: dividing the vessel at {np.round(at_mm, 1).tolist()} mm separates no branch "
                          "from the trunk (choose a point on a side branch)")
    branch, trunk = np.zeros(len(vessel), bool), np.zeros(len(vessel), bool)
    branch[rest[np.isin(comp, list(fed))]] = True
    branch |= jaw
    branch[rest[small[comp]]] = True
    trunk[rest[comp == trunk_id]] = True
    return branch, trunk


def _plan_territory(mesh: TetMesh, step: ResectionStep, vessel: np.ndarray, alive: np.ndarray,
                    alpha: float) -> Resection:
    """The vascular territory of the branch divided at ``step.at_mm``: the tissue nearer to that branch
    than to the rest of the tree (a nearest-vessel partition), cut on the equidistance surface."""
    from scipy.spatial import cKDTree

    from .cutting import resect_topology

    branch, trunk = vessel_branch(mesh, vessel, step.at_mm, step.jaw_mm)
    pts, tets = mesh.points, mesh.tets
    d_branch, _ = cKDTree(pts[np.unique(tets[branch])]).query(pts)
    d_trunk, _ = cKDTree(pts[np.unique(tets[trunk])]).query(pts)
    phi = d_branch - d_trunk                     # negative (removed) where the branch is nearer
    split, removed = resect_topology(tets, alive, phi, _split_volumes(pts), alpha=alpha)
    removed |= ~alive[split.parent]
    if removed.all():
        raise ConfigError(f"the territory of the branch at {np.round(step.at_mm, 1).tolist()} mm is the whole organ")
    return _split_resection(mesh, split, removed, branch, None)


def _split_resection(mesh: TetMesh, split, removed: np.ndarray, target: np.ndarray, plane) -> Resection:
    """The Resection on the split mesh: its TopologyChange, the cut faces, and the surface of ``target``
    (an element mask of the mesh before the split)."""
    from .cutting import _change

    change = _change("resection", len(mesh.points), split, split.tets, np.zeros(0, np.int64), removed,
                     np.zeros((0, 3), np.int64), 0.0)
    new = TetMesh.from_arrays(change.transfer_nodes(mesh.points), split.tets, mesh.labels[split.parent], mesh.table)
    res = _resection_surface(new, removed, boundary_faces(split.tets[target[split.parent]]), plane)
    res.mesh, res.change = new, change
    change.cut_faces = res.cut_faces
    return res


def _resection_surface(mesh: TetMesh, removed: np.ndarray, tfaces: np.ndarray, plane) -> Resection:
    tets = mesh.tets
    kept = np.flatnonzero(~removed)
    faces, owner = boundary_faces(tets[kept], return_owner=True)
    owner = kept[owner]
    n = len(mesh.points)
    is_cut = np.isin(face_keys(faces, n), face_keys(boundary_faces(tets[removed]), n))
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
