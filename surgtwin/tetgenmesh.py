"""The optional TetGen volume mesher (``pip install surgtwin[tetgen]``), its sliver repair and fallback.

TetGen (H. Si) and its Python wrapper ``tetgen`` are AGPL-3.0: surgtwin (Apache-2.0) never needs them, imports
them only here, in a child process, and only when ``mesh.mesher=tetgen`` asks. The grid mesher
(``surgtwin.tetgrid``) is the default and the fallback (``tetgrid.volume_mesh`` chooses).

TetGen path (``mesh_tetgen``): the watertight surfaces of the meshed region (``mask_surface``: flying edges on
the blurred mask, largest shell, Taubin smoothing; one for the organ and what lies inside its envelope, one
per inner structure, which becomes an internal surface and a tagged region) with iso-levels fitted to the
label volumes, decimated towards the element size, tetrahedralized with a radius-edge / dihedral bound and
TetGen's sliver optimisation; the slivers TetGen leaves are repaired here (``repair_slivers``: peeling,
node smoothing, edge and face removal). The result is then measured (``quality_failure``): an inverted
element, a dihedral angle under ``MIN_DIHEDRAL_DEG`` or a region volume off by more than
``MAX_VOLUME_ERROR_PERCENT`` makes the caller fall back to the grid mesher, with the reason recorded.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import SimpleITK as sitk

from .errors import MeshError
from .meshquality import dihedral_angles
from .sim.blocks import orient_positive, signed_volumes
from .volume import LabelMap

log = logging.getLogger(__name__)

MIN_DIHEDRAL_DEG = 10.0
MAX_VOLUME_ERROR_PERCENT = 2.0
TETGEN_TIMEOUT_S = 600.0                # one TetGen run; past it the child is killed and the grid mesher runs


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


def _boundary(tets: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number of boundary faces of each tet, and the mask of the nodes on the boundary or on a face between
    two labels (region interfaces: kept in place like the boundary)."""
    from .mesh import tet_faces

    faces, owner = tet_faces(tets)
    _, inv, counts = np.unique(np.sort(faces, 1), axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    single = counts[inv] == 1
    first = np.full(len(counts), -1)
    first[inv[::-1]] = labels[owner[::-1]]                 # the label of one tet at each face
    interface = ~single & (labels[owner] != first[inv])
    on = np.zeros(int(tets.max()) + 1, bool)
    on[faces[single | interface].ravel()] = True
    return np.bincount(owner[single], minlength=len(tets)), on


def _star_quality(x: np.ndarray) -> np.ndarray:
    """Min dihedral angle [deg] of stars given as (c, k, 4, 3) corner coordinates -> (c,); -1 if any tet inverts."""
    c, k = x.shape[:2]
    flat = x.reshape(-1, 3)
    t = np.arange(len(flat)).reshape(-1, 4)
    ang = dihedral_angles(flat, t).min(1).reshape(c, k)
    ok = (signed_volumes(flat, t).reshape(c, k) > 0).all(1)
    return np.where(ok, ang.min(1), -1.0)


def _peel(points, tets, labels, min_deg):
    """Drop slivers with two or more boundary faces (flat tets lying on the surface) while there are any."""
    while True:
        quality = dihedral_angles(points, tets).min(1)
        n_boundary, on_boundary = _boundary(tets, labels)
        peel = (quality < min_deg) & (n_boundary >= 2)
        if not peel.any():
            return tets, labels, quality, on_boundary
        tets, labels = tets[~peel], labels[~peel]


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
                scale = np.minimum(1.0, boundary_step * h / np.maximum(np.linalg.norm(d, axis=1), 1e-300))
                cands = points[v] + d * scale[:, None]
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


def _consistent(points, cand):
    """Candidate tets, all positive (flipped together when all negative), or None when their orientations
    differ or one is flat (the re-triangulation would fold)."""
    cand, vol = orient_positive(points, cand)
    return cand if (vol > 0).all() or (vol < 0).all() else None


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
        cand = _consistent(points, np.vstack([np.c_[np.full(len(tri), a), tri],
                                              np.c_[np.full(len(tri), b), tri[:, ::-1]]]))
        if cand is None:
            continue
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
    cand = _consistent(points, np.array([[d[0], e[0], x, y], [d[0], e[0], y, z], [d[0], e[0], z, x]]))
    return cand if cand is not None and float(dihedral_angles(points, cand).min()) > old_quality else None


def _flip(points, tets, labels, quality, min_deg):
    """One round of edge removal (each edge of a sliver), then face removal (each face), on the slivers;
    each tet is changed at most once a round, and only tets of one label together."""
    from .tetgrid import EDGES

    inc = _incidence(tets, len(points))
    alive = np.ones(len(tets), bool)
    new, new_labels = [], []
    for t in np.flatnonzero(quality < min_deg):
        options = [(tets[t, i], tets[t, j], np.intersect1d(inc[tets[t, i]].indices, inc[tets[t, j]].indices))
                   for i, j in EDGES]
        for k in range(4):
            face = np.delete(tets[t], k)
            shared = np.intersect1d(np.intersect1d(inc[face[0]].indices, inc[face[1]].indices), inc[face[2]].indices)
            if len(shared) == 2:          # an interior face: the other tet across it
                options.append((None, None, shared))
        for a, b, ids in options:
            if not alive[ids].all() or (labels[ids] != labels[t]).any():
                continue
            old = float(quality[ids].min())
            done = (_remove_face(points, tets, ids[0], ids[1], old) if a is None
                    else _remove_edge(points, tets, ids, a, b, old))
            if done is not None:
                alive[ids] = False
                new.append(done)
                new_labels.append(np.full(len(done), labels[t]))
                break
    if not new:
        return tets, labels, False
    return np.vstack([tets[alive], *new]), np.concatenate([labels[alive], *new_labels]), True


def repair_slivers(points: np.ndarray, tets: np.ndarray, labels: np.ndarray | None = None,
                   min_deg: float = MIN_DIHEDRAL_DEG, *, sweeps: int = 8, boundary_step: float = 0.1, rounds: int = 4):
    """Remove the slivers (min dihedral < ``min_deg``) a Delaunay mesher leaves. A sliver with two or more
    faces on the boundary (a flat tet lying on the surface) is peeled off (its removal keeps the boundary
    closed). The nodes of the others are moved to the best of a few candidate positions (the centroid of
    their neighbours, steps away from the opposite face of each sliver, small jitters) by the min dihedral
    of their star, a move kept only if that improves; a boundary node moves at most ``boundary_step`` of its
    mean edge length (the surface moves by that). Slivers left then get edge removal (the tets around one
    of their interior edges re-triangulated) or face removal (a 2-3 flip with a neighbour), when that
    improves the worst angle there, up to ``rounds`` times, each followed by peeling and smoothing again;
    the nodes of any still left are smoothed with 2 and then 4 times the boundary step. With ``labels`` (per
    tet), nodes on faces between labels move like boundary nodes and flips keep to one label. Positive tets
    in; (points, tets, labels) out, positive."""
    points = np.array(points, dtype=np.float64)
    labels = np.zeros(len(tets), np.int32) if labels is None else np.asarray(labels, np.int32)
    rng = np.random.default_rng(0)
    for _ in range(rounds + 1):
        tets, labels, quality, on_boundary = _peel(points, tets, labels, min_deg)
        _smooth(points, tets, quality, on_boundary, min_deg, sweeps, boundary_step, rng)
        if (quality >= min_deg).all():
            break
        tets, labels, changed = _flip(points, tets, labels, quality, min_deg)
        if not changed:
            break
    for step in (2 * boundary_step, 4 * boundary_step):  # the few left: their boundary nodes move further
        tets, labels, quality, on_boundary = _peel(points, tets, labels, min_deg)
        if (quality >= min_deg).all():
            break
        _smooth(points, tets, quality, on_boundary, min_deg, sweeps, step, rng)
    used, inverse = np.unique(tets, return_inverse=True)
    return points[used], inverse.reshape(-1, 4), labels


def _run_tetgen(points: np.ndarray, faces: np.ndarray, regions, options: dict):
    """TetGen on closed triangle surfaces (in a child process: see ``_tetrahedralize``)."""
    import tetgen

    gen = tetgen.TetGen(points, faces)
    for label, inside in regions:
        gen.add_region(int(label), inside)
    nodes, elems, attr, *_ = gen.tetrahedralize(**options, regionattrib=bool(regions))
    labels = np.asarray(attr, np.float64).ravel().astype(np.int32) if regions else None
    return np.asarray(nodes, np.float64), np.asarray(elems, np.int64), labels


def _child(conn, workdir: str, *args):
    """Child process: TetGen in ``workdir`` (it writes its ``_skipped.node/.face`` diagnostics to the
    working directory); sends ("ok", result) or ("error", one line)."""
    import os

    try:
        os.chdir(workdir)
        conn.send(("ok", _run_tetgen(*args)))
    except Exception as exc:  # the wrapper's RuntimeError and the like: one line for the fallback reason
        conn.send(("error", (str(exc).splitlines() or [""])[0] or type(exc).__name__))
    finally:
        conn.close()


def _tetrahedralize(surfaces, regions, size_mm: float, name: str, keep_surface: bool):
    """TetGen on closed, disjoint surfaces (the outer one first): radius-edge 1.5, dihedral 10 deg, sliver
    optimisation up to 160 deg, tets of at most ``size_mm``^3 / 6; ``keep_surface``: no Steiner points on the
    surfaces (TetGen's -Y); ``regions``: (label, point inside) per region, each tet tagged by its region.
    TetGen runs in a child process (fork on Linux, spawn elsewhere) in a temporary folder removed afterwards,
    so that a crash (it segfaults on some inputs) or a run past TETGEN_TIMEOUT_S is a ``MeshError`` here,
    not the end of the run. Positive tets; (points, tets, labels or None)."""
    import multiprocessing
    import shutil
    import sys
    import tempfile

    options = dict(quality=True, minratio=1.5, mindihedral=MIN_DIHEDRAL_DEG, optmaxdihedral=160.0,
                   maxvolume=size_mm ** 3 / 6.0, steinerleft=-1, nobisect=keep_surface)
    offsets = np.cumsum([0] + [s.n_points for s in surfaces])
    points = np.vstack([np.asarray(s.points, np.float64) for s in surfaces])
    faces = np.vstack([s.faces.reshape(-1, 4)[:, 1:] + o for s, o in zip(surfaces, offsets)]).astype(np.int32)
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    receive, send = context.Pipe(duplex=False)
    work = tempfile.mkdtemp(prefix="surgtwin-tetgen-")
    child = context.Process(target=_child, args=(send, work, points, faces, list(regions), options), daemon=True)
    try:
        child.start()
        send.close()
        if not receive.poll(TETGEN_TIMEOUT_S):
            raise MeshError(f"tetgen failed on '{name}': no result in {TETGEN_TIMEOUT_S:g} s")
        try:
            status, result = receive.recv()
        except EOFError:                      # the child died without a word: a crash inside TetGen
            child.join()
            raise MeshError(f"tetgen failed on '{name}': it crashed (exit code {child.exitcode})") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
        shutil.rmtree(work, ignore_errors=True)
    if status != "ok":
        raise MeshError(f"tetgen failed on '{name}': {result}")
    points, tets, labels = result
    if len(tets) == 0:
        raise MeshError(f"tetgen gave no tetrahedra for '{name}'")
    return points, orient_positive(points, tets)[0], labels


def _inside_point(labelmap: LabelMap, mask: sitk.Image) -> list:
    """The physical point of a mask farthest from its boundary (a seed for a TetGen region)."""
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(mask, insideIsPositive=True, squaredDistance=False,
                                                                useImageSpacing=True))
    k, j, i = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return list(labelmap.image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))


def _region_masks(labelmap: LabelMap, structures, envelope_mm: float):
    """(name, mask) of the meshed region (the organ ``structures[0]`` and the others inside its closed
    envelope) and of each other structure inside that envelope."""
    from .mesh import organ_envelope

    table = labelmap.table
    organ = structures[0]
    arr = sitk.GetArrayViewFromImage(labelmap.image)
    env = organ_envelope(labelmap, table.id_of(organ), envelope_mm)
    env = sitk.Resample(env, labelmap.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    env = sitk.GetArrayViewFromImage(env) > 0
    out = []
    for name in structures[1:]:
        inner = (arr == table.id_of(name)) & env
        if inner.any():
            out.append((name, inner))
    union = (arr == table.id_of(organ)) | np.any([m for _, m in out], axis=0) if out else arr == table.id_of(organ)
    masks = [(organ, union)] + out
    images = []
    for name, m in masks:
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.CopyInformation(labelmap.image)
        images.append((name, img))
    return images


def mesh_tetgen(labelmap: LabelMap, structures, *, size_mm: float, surface_smoothing: int = 40,
                envelope_mm: float = 8.0, max_tries: int = 8):
    """(points [mm], tets, labels) of ``structures`` (names; one, or an organ first and structures inside it)
    by TetGen (see the module docstring): each surface fitted to its label volume and decimated towards edges
    of ``size_mm`` (``_decimated``), the outer one bounding the organ with the others inside its envelope,
    the others becoming internal surfaces and tagged regions; tetrahedralized, the slivers repaired. Tried,
    at most ``max_tries`` TetGen runs, until the repaired mesh has no dihedral angle under
    ``MIN_DIHEDRAL_DEG``: for each set of surfaces, kept as they are (fewest and largest elements), then
    split where TetGen needs (small elements near them), unless TetGen found them intersecting; the last
    mesh is returned.

    Raises ``ImportError`` without the ``tetgen`` package and ``MeshError`` when no TetGen run succeeds."""
    structures = [structures] if isinstance(structures, str) else list(structures)
    table = labelmap.table
    voxel_mm3 = float(np.prod(labelmap.image.GetSpacing()))
    masks = (_region_masks(labelmap, structures, envelope_mm) if len(structures) > 1
             else [(structures[0], labelmap.image == table.id_of(structures[0]))])
    candidates = []
    for name, mask in masks:
        surf = _fitted_surface(mask, name, float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_mm3, surface_smoothing)
        candidates.append(_decimated(surf, size_mm))
    regions = []
    if len(masks) > 1:   # the organ's own voxels seed the organ region; each inner structure its own
        organ_only = labelmap.image == table.id_of(structures[0])
        regions = [(table.id_of(structures[0]), _inside_point(labelmap, organ_only))]
        regions += [(table.id_of(name), _inside_point(labelmap, mask)) for name, mask in masks[1:]]
    result, error, tries, current = None, None, 0, [None] * len(masks)
    while tries < max_tries:
        fresh = [next(c, None) for c in candidates]     # the next decimation of each surface
        if all(f is None for f in fresh):
            break
        current = [f if f is not None else c for f, c in zip(fresh, current)]
        for keep in (True, False):
            tries += 1
            try:
                points, tets, labels = _tetrahedralize(current, regions, size_mm, structures[0], keep)
            except MeshError as exc:
                if "self-intersect" in str(exc) and len(masks) > 1:
                    exc = MeshError(f"{exc} ({', '.join(n for n, _ in masks)} cross: does one leave the organ?)")
                error = error or exc
                if "self-intersect" in str(exc):
                    break              # the same surfaces with splitting fail the same way: the next ones
                continue
            if labels is None:
                labels = np.full(len(tets), table.id_of(structures[0]), np.int32)
            elif (labels == 0).any():
                raise MeshError(f"tetgen left {int((labels == 0).sum())} elements of '{structures[0]}' in no region")
            result = repair_slivers(points, tets, labels)
            if dihedral_angles(*result[:2]).min() >= MIN_DIHEDRAL_DEG or tries >= max_tries:
                return result
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
    for name, error in mesh.volume_errors_percent(labels).items():
        if abs(error) > MAX_VOLUME_ERROR_PERCENT:
            return f"'{name}' volume {error:+.2f} % off the label map"
    return None


def tetgen_volume_mesh(labels: LabelMap, structures, cfg, size_mm: float):
    """(TetMesh, None) when TetGen meshes ``structures`` as a MeshConfig ``cfg`` asks and meets the goals,
    else (None, the one-line reason): not installed, refinement or a joint mesh asked, TetGen failed (e.g.
    a vessel leaving the organ: its surface crosses the organ's), or ``quality_failure``."""
    from .mesh import TetMesh

    version = tetgen_version()
    if version is None:
        return None, "tetgen is not installed (pip install surgtwin[tetgen])"
    if cfg.joint:
        return None, "joint meshes (mesh.joint) need the grid mesher"
    if cfg.refine_near and int(cfg.refine_ratio) > 1:
        return None, "mesh.refine_near needs the grid mesher"
    try:
        points, tets, tags = mesh_tetgen(labels, structures, size_mm=size_mm, surface_smoothing=cfg.surface_smoothing)
        mesh = TetMesh.from_arrays(points, tets, tags, labels.table)
    except (MeshError, ValueError, IndexError, RuntimeError) as exc:   # any failure on this path: fall back
        return None, (str(exc).splitlines() or [""])[0] or type(exc).__name__
    failure = quality_failure(mesh, labels)
    if failure is not None:
        return None, f"tetgen mesh of '{structures[0]}': {failure}"
    mesh.grid.field_data["mesher"] = np.array([f"tetgen {version}+sliver-repair"])
    mesh.grid.field_data["size_mm"] = np.array([size_mm])
    return mesh, None
