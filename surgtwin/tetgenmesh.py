"""The optional TetGen volume mesher (``pip install surgtwin[tetgen]``) and the mesher choice with its fallback.

TetGen (H. Si) and its Python wrapper ``tetgen`` are AGPL-3.0: surgtwin (Apache-2.0) never needs them, imports
them only here and only when ``mesh.mesher=tetgen`` asks. The grid mesher (``surgtwin.tetgrid``) is the default
and the fallback.

TetGen path: the repaired, watertight surface of the meshed region (``mask_surface``: flying edges on the
blurred mask, largest shell, Taubin smoothing) is offset along its normals until it holds the label volume,
tetrahedralized with a radius-edge / dihedral bound and TetGen's sliver optimisation, and the slivers TetGen
leaves are repaired here: a sliver with two faces on the boundary is peeled off (a flat tet lying on the
surface), and the interior nodes of the others are moved to the position of best star quality. Each tet takes
the label at its centroid, as in the grid mesher. The result is then measured; an inverted element, a
dihedral angle under ``MIN_DIHEDRAL_DEG`` or a region volume off by more than ``MAX_VOLUME_ERROR_PERCENT``
makes the caller fall back to the grid mesher, with the reason recorded.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import SimpleITK as sitk

from .errors import MeshError
from .meshquality import dihedral_angles
from .sim.blocks import signed_volumes
from .volume import LabelMap

log = logging.getLogger(__name__)

MIN_DIHEDRAL_DEG = 10.0
MAX_VOLUME_ERROR_PERCENT = 2.0


def tetgen_version() -> str | None:
    """The installed ``tetgen`` package version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tetgen")
    except PackageNotFoundError:
        return None


def _fitted_surface(mask: sitk.Image, name: str, volume_mm3: float, smoothing_iterations: int, iterations: int = 4):
    """``mask_surface`` with its iso-level set by secant steps until it encloses ``volume_mm3`` (0.2 %)."""
    from .mesh import mask_surface

    levels, gaps = [0.5], []
    surf = None
    for _ in range(iterations):
        surf = mask_surface(mask, name, smoothing_iterations=smoothing_iterations, level=levels[-1])
        gaps.append(abs(surf.volume) - volume_mm3)
        if abs(gaps[-1]) < 2e-3 * volume_mm3:
            break
        if len(gaps) == 1:
            levels.append(0.5 + (0.05 if gaps[-1] > 0 else -0.05))
        else:
            slope = (gaps[-1] - gaps[-2]) / (levels[-1] - levels[-2])
            levels.append(float(np.clip(levels[-1] - gaps[-1] / slope if slope else levels[-1], 0.2, 0.8)))
    return surf


def _decimated(surf, size_mm: float, volume_tolerance: float = 0.005):
    """Decimations of the surface towards triangles of edge about ``size_mm`` (quadric, volume-preserving, then
    20 Taubin steps to even out the thin triangles decimation leaves), for 100, 90, 75, 50, 25 % of that
    reduction, those that stay closed, manifold and within ``volume_tolerance`` of the volume (a slab cut by
    the field of view loses its sharp rims otherwise), most reduced first; then the surface itself."""
    target = surf.area / (np.sqrt(3.0) / 4.0 * size_mm ** 2)
    if surf.n_cells <= 1.25 * target:
        yield surf
        return
    for share in (1.0, 0.9, 0.75, 0.5, 0.25):
        out = surf.decimate(share * (1.0 - target / surf.n_cells), volume_preservation=True)
        if out.n_open_edges or not out.is_manifold:
            continue
        out = out.smooth_taubin(n_iter=20, pass_band=0.05)
        if abs(abs(out.volume) - abs(surf.volume)) <= volume_tolerance * abs(surf.volume):
            yield out
    yield surf


def _incidence(tets: np.ndarray, n_points: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(tets)), 4)
    return sp.csr_matrix((np.ones(len(rows), bool), (tets.ravel(), rows)), shape=(n_points, len(tets)))


def _boundary(tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number of boundary faces of each tet, and the boundary-node mask."""
    from .mesh import tet_faces

    faces, owner = tet_faces(tets)
    _, inv, counts = np.unique(np.sort(faces, 1), axis=0, return_inverse=True, return_counts=True)
    single = counts[inv.ravel()] == 1
    on = np.zeros(int(tets.max()) + 1, bool)
    on[faces[single].ravel()] = True
    return np.bincount(owner[single], minlength=len(tets)), on


def _star_quality(x: np.ndarray) -> np.ndarray:
    """Min dihedral angle [deg] of stars given as (c, k, 4, 3) corner coordinates -> (c,); -1 if any tet inverts."""
    c, k = x.shape[:2]
    flat = x.reshape(-1, 3)
    t = np.arange(len(flat)).reshape(-1, 4)
    ang = dihedral_angles(flat, t).min(1).reshape(c, k)
    ok = (signed_volumes(flat, t).reshape(c, k) > 0).all(1)
    return np.where(ok, ang.min(1), -1.0)


def _peel(points, tets, min_deg):
    """Drop slivers with two or more boundary faces (flat tets lying on the surface) while there are any."""
    while True:
        quality = dihedral_angles(points, tets).min(1)
        n_boundary, on_boundary = _boundary(tets)
        peel = (quality < min_deg) & (n_boundary >= 2)
        if not peel.any():
            return tets, quality, on_boundary
        tets = tets[~peel]


def _smooth(points, tets, quality, on_boundary, min_deg, sweeps, boundary_step, rng):
    """Move the nodes of slivers to the best candidate position by the min dihedral of their star (in place)."""
    inc = _incidence(tets, len(points))
    for _ in range(sweeps):
        bad = quality < min_deg
        if not bad.any():
            return
        for v in np.unique(tets[bad]):
            star = inc[v].indices
            if quality[star].min() >= min_deg:
                continue
            x = points[tets[star]]
            here = tets[star] == v
            nbrs = np.unique(tets[star][~here])
            h = float(np.linalg.norm(points[nbrs] - points[v], axis=1).mean())
            cands = [points[nbrs].mean(0)] + list(points[v] + h * np.repeat([0.03, 0.1, 0.2], 8)[:, None]
                                                  * rng.standard_normal((24, 3)))
            if on_boundary[v]:  # and the centroid of its boundary neighbours (tangential smoothing)
                cands.append(points[nbrs[on_boundary[nbrs]]].mean(0))
            for s in np.flatnonzero(quality[star] < min_deg):
                opp = x[s][~here[s]]
                nrm = np.cross(opp[1] - opp[0], opp[2] - opp[0])
                nrm /= max(np.linalg.norm(nrm), 1e-300)
                nrm *= np.sign(np.dot(points[v] - opp[0], nrm)) or 1.0
                cands += [points[v] + a * h * nrm for a in (0.05, 0.1, 0.2, 0.35, 0.5)]
            cands = np.array(cands)
            if on_boundary[v]:  # a boundary node stays near the surface
                d = cands - points[v]
                cands = points[v] + d * np.minimum(1.0, boundary_step * h / np.maximum(np.linalg.norm(d, axis=1), 1e-300))[:, None]
            trial = np.repeat(x[None], len(cands), 0)
            trial[:, here] = cands[:, None, :]
            score = _star_quality(trial)
            best = int(np.argmax(score))
            if score[best] > quality[star].min():
                points[v] = cands[best]
                quality[star] = dihedral_angles(points, tets[star]).min(1)


def _ring(tets, ring_ids, a, b):
    """The vertices around edge (a, b) in cyclic order, or None if the edge is on the boundary."""
    pairs = [[w for w in tets[t] if w != a and w != b] for t in ring_ids]
    nxt = {}
    for x, y in pairs:
        nxt.setdefault(x, []).append(y)
        nxt.setdefault(y, []).append(x)
    if any(len(v) != 2 for v in nxt.values()):
        return None
    order = [pairs[0][0], pairs[0][1]]
    while len(order) < len(pairs):
        order.append(next(w for w in nxt[order[-1]] if w != order[-2]))
    return order if order[0] in nxt[order[-1]] else None


def _remove_edge(points, tets, ring_ids, a, b, old_quality):
    """Edge removal: the ``ring_ids`` tets around interior edge (a, b) replaced by the best fan triangulation
    of their ring polygon joined to a and to b; returns the new (positive) tets, or None if none is better."""
    ring = _ring(tets, ring_ids, a, b)
    if ring is None or len(ring) > 7:
        return None
    n = len(ring)
    best, best_q = None, old_quality
    for apex in range(n):
        tri = np.array([[ring[apex], ring[(apex + k) % n], ring[(apex + k + 1) % n]] for k in range(1, n - 1)])
        cand = np.vstack([np.c_[np.full(len(tri), a), tri], np.c_[np.full(len(tri), b), tri[:, ::-1]]])
        vol = signed_volumes(points, cand)
        if not ((vol > 0).all() or (vol < 0).all()):
            continue
        if vol[0] < 0:
            cand = cand[:, [0, 2, 1, 3]]
        q = float(dihedral_angles(points, cand).min())
        if q > best_q:
            best, best_q = cand, q
    return best


def _remove_face(points, tets, t, u, old_quality):
    """Face removal (2-3 flip): tets ``t`` and ``u`` sharing a face replaced by three tets around the segment
    joining their opposite nodes; returns the new (positive) tets, or None if invalid or not better."""
    d = [w for w in tets[t] if w not in tets[u]]
    e = [w for w in tets[u] if w not in tets[t]]
    if len(d) != 1 or len(e) != 1:
        return None
    x, y, z = [w for w in tets[t] if w != d[0]]
    cand = np.array([[d[0], e[0], x, y], [d[0], e[0], y, z], [d[0], e[0], z, x]])
    vol = signed_volumes(points, cand)
    if not ((vol > 0).all() or (vol < 0).all()):
        return None
    if vol[0] < 0:
        cand = cand[:, [0, 2, 1, 3]]
    return cand if float(dihedral_angles(points, cand).min()) > old_quality else None


def _flip(points, tets, quality, min_deg):
    """One round of edge removal (each edge of a sliver), then face removal (each face), on the slivers;
    each tet is changed at most once a round."""
    from .tetgrid import EDGES

    inc = _incidence(tets, len(points))
    alive = np.ones(len(tets), bool)
    new = []
    for t in np.flatnonzero(quality < min_deg):
        options = [(tets[t, i], tets[t, j], np.intersect1d(inc[tets[t, i]].indices, inc[tets[t, j]].indices))
                   for i, j in EDGES]
        for k in range(4):
            face = np.delete(tets[t], k)
            shared = np.intersect1d(np.intersect1d(inc[face[0]].indices, inc[face[1]].indices), inc[face[2]].indices)
            if len(shared) == 2:          # an interior face: the other tet across it
                options.append((None, None, shared))
        for a, b, ids in options:
            if not alive[ids].all():
                continue
            old = float(quality[ids].min())
            done = (_remove_face(points, tets, ids[0], ids[1], old) if a is None
                    else _remove_edge(points, tets, ids, a, b, old))
            if done is not None:
                alive[ids] = False
                new.append(done)
                break
    if not new:
        return tets, False
    return np.vstack([tets[alive], *new]), True


def repair_slivers(points: np.ndarray, tets: np.ndarray, min_deg: float = MIN_DIHEDRAL_DEG, *, sweeps: int = 8,
                   boundary_step: float = 0.1, rounds: int = 4):
    """Remove the slivers (min dihedral < ``min_deg``) a Delaunay mesher leaves. A sliver with two or more
    faces on the boundary (a flat tet lying on the surface) is peeled off (its removal keeps the boundary
    closed). The nodes of the others are moved to the best of a few candidate positions (the centroid of
    their neighbours, steps away from the opposite face of each sliver, small jitters) by the min dihedral
    of their star, a move kept only if that improves; a boundary node moves at most ``boundary_step`` of its
    mean edge length (the surface moves by that). Slivers left then get edge removal (the tets around one
    of their interior edges re-triangulated) or face removal (a 2-3 flip with a neighbour), when that
    improves the worst angle there, up to ``rounds`` times, each followed by peeling and smoothing again;
    the nodes of any still left are smoothed with 2 and then 4 times the boundary step. Positive tets in; (points, tets) out, positive."""
    points = np.array(points, dtype=np.float64)
    rng = np.random.default_rng(0)
    for _ in range(rounds + 1):
        tets, quality, on_boundary = _peel(points, tets, min_deg)
        _smooth(points, tets, quality, on_boundary, min_deg, sweeps, boundary_step, rng)
        if (quality >= min_deg).all():
            break
        tets, changed = _flip(points, tets, quality, min_deg)
        if not changed:
            break
    for step in (2 * boundary_step, 4 * boundary_step):  # the few left: their boundary nodes move further
        tets, quality, on_boundary = _peel(points, tets, min_deg)
        if (quality >= min_deg).all():
            break
        _smooth(points, tets, quality, on_boundary, min_deg, sweeps, step, rng)
    used, inverse = np.unique(tets, return_inverse=True)
    return points[used], inverse.reshape(-1, 4)


def _run_tetgen(points: np.ndarray, faces: np.ndarray, options: dict):
    """TetGen on a closed triangle surface (in a child process: see ``_tetrahedralize``)."""
    import tetgen

    nodes, elems, *_ = tetgen.TetGen(points, faces).tetrahedralize(**options)
    return np.asarray(nodes, np.float64), np.asarray(elems, np.int64)


def _tetrahedralize(surf, size_mm: float, name: str, keep_surface: bool):
    """TetGen on a closed surface: radius-edge 1.5, dihedral 10 deg, sliver optimisation up to 160 deg, tets of
    at most ``size_mm``^3 / 6; ``keep_surface``: no Steiner points on the surface (TetGen's -Y). TetGen runs
    in a child process, so that a crash inside it (it segfaults on some inputs) is a ``MeshError`` here, not
    the end of the run. Positive tets."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    options = dict(quality=True, minratio=1.5, mindihedral=MIN_DIHEDRAL_DEG, optmaxdihedral=160.0,
                   maxvolume=size_mm ** 3 / 6.0, steinerleft=-1, nobisect=keep_surface)
    faces = surf.faces.reshape(-1, 4)[:, 1:].astype(np.int32)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            points, tets = pool.submit(_run_tetgen, np.asarray(surf.points, np.float64), faces, options).result()
    except Exception as exc:  # the wrapper's RuntimeError, a crashed child: one line for the fallback reason
        why = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        raise MeshError(f"tetgen failed on '{name}': {why}") from None
    if len(tets) == 0:
        raise MeshError(f"tetgen gave no tetrahedra for '{name}'")
    flip = signed_volumes(points, tets) < 0
    tets[flip] = tets[flip][:, [0, 2, 1, 3]]
    return points, tets


def mesh_tetgen(labelmap: LabelMap, name: str, *, size_mm: float, surface_smoothing: int = 40, max_tries: int = 8):
    """(points [mm], tets) of one structure by TetGen (see the module docstring): its surface fitted to the
    label volume and decimated towards edges of ``size_mm`` (``_decimated``), tetrahedralized and the
    slivers repaired. Tried, at most ``max_tries`` TetGen runs, until the repaired mesh has no dihedral
    angle under ``MIN_DIHEDRAL_DEG``: for each surface, kept as it is (fewest and largest elements), then
    split where TetGen needs (small elements near the surface), unless TetGen found it self-intersecting;
    the last mesh is returned.

    Raises ``ImportError`` without the ``tetgen`` package and ``MeshError`` when no TetGen run succeeds."""
    mask = labelmap.image == labelmap.table.id_of(name)
    voxel_mm3 = float(np.prod(labelmap.image.GetSpacing()))
    surf = _fitted_surface(mask, name, float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_mm3, surface_smoothing)
    result, error, tries = None, None, 0
    for surface in _decimated(surf, size_mm):
        for keep in (True, False):
            tries += 1
            try:
                points, tets = _tetrahedralize(surface, size_mm, name, keep)
            except MeshError as exc:
                error = error or exc
                if "self-intersect" in str(exc):
                    break              # the same surface with splitting fails the same way: the next one
                continue
            result = repair_slivers(points, tets)
            if dihedral_angles(*result).min() >= MIN_DIHEDRAL_DEG or tries >= max_tries:
                return result
        if tries >= max_tries:
            break
    if result is None:
        raise error
    return result


def quality_failure(mesh, labels: LabelMap) -> str | None:
    """Why a mesh misses the meshing goals (an inverted element, a dihedral angle under ``MIN_DIHEDRAL_DEG``,
    a region volume off the label volume by more than ``MAX_VOLUME_ERROR_PERCENT``), or None."""
    inverted = int((mesh.tet_volumes_mm3() <= 0).sum())
    if inverted:
        return f"{inverted} inverted elements"
    worst = float(dihedral_angles(mesh.points, mesh.tets).min())
    if worst < MIN_DIHEDRAL_DEG:
        return f"min dihedral angle {worst:.2f} deg < {MIN_DIHEDRAL_DEG:g}"
    label_ml = labels.volumes_ml()
    for name, ml in mesh.volumes_ml().items():
        error = 100.0 * (ml - label_ml[name]) / label_ml[name]
        if abs(error) > MAX_VOLUME_ERROR_PERCENT:
            return f"'{name}' volume {error:+.2f} % off the label map"
    return None


def tetgen_volume_mesh(labels: LabelMap, structures, cfg, size_mm: float):
    """(TetMesh, None) when TetGen meshes ``structures`` as a MeshConfig ``cfg`` asks and meets the goals,
    else (None, the one-line reason): not installed, several structures (regions), refinement or a joint
    mesh asked, TetGen failed, or ``quality_failure``."""
    from .mesh import TetMesh

    version = tetgen_version()
    if version is None:
        return None, "tetgen is not installed (pip install surgtwin[tetgen])"
    if len(structures) > 1 or cfg.joint:
        return None, (f"tetgen meshes one structure here; {', '.join(structures)} as tagged regions of one "
                      "mesh need the grid mesher")
    if cfg.refine_near and int(cfg.refine_ratio) > 1:
        return None, "mesh.refine_near needs the grid mesher"
    name = structures[0]
    try:
        points, tets = mesh_tetgen(labels, name, size_mm=size_mm, surface_smoothing=cfg.surface_smoothing)
    except MeshError as exc:
        return None, str(exc)
    mesh = TetMesh.from_arrays(points, tets, np.full(len(tets), labels.table.id_of(name)), labels.table)
    failure = quality_failure(mesh, labels)
    if failure is not None:
        return None, f"tetgen mesh of '{name}': {failure}"
    mesh.grid.field_data["mesher"] = np.array([f"tetgen {version}+sliver-repair"])
    mesh.grid.field_data["size_mm"] = np.array([size_mm])
    return mesh, None
