"""The built-in volume mesher: a label-sampled Freudenthal (Kuhn) grid, graded by edge bisection.

The structures' bounding box is covered by cubes of edge ``size_mm``, each split into 6 tetrahedra along
the same main diagonal (conforming across cubes); each tetrahedron takes the label found at its centroid.
Near chosen structures (tumour, vessels) the tets are refined by conforming longest-edge bisection: on a
Kuhn grid three bisections give the Kuhn tets of the half-size grid, so one refinement level halves the
element size and the closure (every tet with a bisected edge is bisected too) grades the size smoothly
into the coarse bulk. Refined tets take the label at their own centroid, so internal region boundaries
follow the label map at the fine size. The outer boundary is then fitted to the label boundary
(``surgtwin.meshfit``). Coordinates are physical LPS millimetres, as in the label map.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import SimpleITK as sitk

from .errors import LabelError, MeshError
from .sim.blocks import kuhn_tets, orient_positive, signed_volumes
from .volume import LabelMap

EDGES = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
_KEY = np.int64(1) << 32
log = logging.getLogger(__name__)


def edge_keys(tets: np.ndarray) -> np.ndarray:
    """(n, 6) int64 key of each tet edge (smaller node id << 32 | larger id), the same from both sides."""
    a, b = tets[:, EDGES[:, 0]], tets[:, EDGES[:, 1]]
    return np.minimum(a, b) * _KEY + np.maximum(a, b)


def bisect_to(points: np.ndarray, tets: np.ndarray, want, *, max_rounds: int = 60):
    """Conforming longest-edge bisection until every tet has at least ``want(points, tets, gen)`` bisections.

    ``want`` returns the wanted generation per tet; a tet with a bisected (hanging) edge is bisected too,
    so the result is conforming. Returns (points, tets, gen, parent) with ``parent`` the index of each
    final tet's ancestor in the input. Orientation is kept (a node is replaced by an edge midpoint).
    """
    points = np.asarray(points, dtype=np.float64)
    gen = np.zeros(len(tets), np.int64)
    parent = np.arange(len(tets))
    done = np.empty(0, np.int64)                 # sorted keys of bisected edges
    done_mid = np.empty(0, np.int64)             # and the node id of each one's midpoint
    new_points = [points]
    n_pts = len(points)
    for _ in range(max_rounds):
        pts = np.concatenate(new_points) if len(new_points) > 1 else new_points[0]
        new_points = [pts]
        keys = edge_keys(tets)
        split = gen < want(pts, tets, gen)
        if len(done):
            split |= np.isin(keys, done).any(1)
        if not split.any():
            return pts, tets, gen, parent
        t, k = tets[split], keys[split]
        length = np.linalg.norm(pts[t[:, EDGES[:, 0]]] - pts[t[:, EDGES[:, 1]]], axis=2)
        longest = np.isclose(length, length.max(1, keepdims=True), rtol=1e-6)
        e = np.where(longest, k, np.iinfo(np.int64).max).argmin(1)   # ties: smallest key (deterministic)
        rows = np.arange(len(t))
        ia, ib = EDGES[e, 0], EDGES[e, 1]
        ekey = k[rows, e]
        uniq, inv = np.unique(ekey, return_inverse=True)
        pos = np.searchsorted(done, uniq)
        old = pos < len(done)
        old[old] = done[pos[old]] == uniq[old]               # edge bisected before: reuse its midpoint
        mids = np.empty(len(uniq), np.int64)
        mids[old] = done_mid[pos[old]]
        mids[~old] = n_pts + np.arange((~old).sum())
        a, b = t[rows, ia], t[rows, ib]
        first = np.zeros(len(uniq), np.int64)
        first[inv.ravel()] = rows
        new_points.append(0.5 * (pts[a[first[~old]]] + pts[b[first[~old]]]))
        n_pts += int((~old).sum())
        m = mids[inv.ravel()]
        c1, c2 = t.copy(), t.copy()
        c1[rows, ib] = m
        c2[rows, ia] = m
        done = np.concatenate([done, uniq[~old]])
        done_mid = np.concatenate([done_mid, mids[~old]])
        order = np.argsort(done, kind="stable")
        done, done_mid = done[order], done_mid[order]
        keep = ~split
        tets = np.concatenate([tets[keep], c1, c2])
        gen = np.concatenate([gen[keep], gen[split] + 1, gen[split] + 1])
        parent = np.concatenate([parent[keep], parent[split], parent[split]])
    raise MeshError("mesh refinement did not converge")


def keep_pieces(tets: np.ndarray, labels: np.ndarray, volumes: np.ndarray, primary, min_fraction: float) -> np.ndarray:
    """Mask of the tets in face-connected pieces that hold at least ``min_fraction`` of the meshed volume of
    some ``primary`` label (a liver lobe cut off by the field of view is kept, a stray voxel island is not)."""
    faces = np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]])
    owner = np.tile(np.arange(len(tets)), 4)
    _, inv = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    same = inv[order][1:] == inv[order][:-1]
    a, b = owner[order][:-1][same], owner[order][1:][same]
    graph = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(len(tets), len(tets)))
    n, comp = sp.csgraph.connected_components(graph, directed=False)
    vol = np.abs(volumes)
    keep = np.zeros(n, bool)
    for lab in primary:
        sel = labels == lab
        if not sel.any():
            continue
        per_piece = np.bincount(comp[sel], weights=vol[sel], minlength=n)
        keep |= per_piece >= min_fraction * per_piece.sum()
        keep[np.argmax(per_piece)] = True
    if not keep.any():
        keep[np.argmax(np.bincount(comp, weights=vol, minlength=n))] = True
    return keep[comp]


def _distance_mm(labelmap: LabelMap, ids) -> tuple[np.ndarray, sitk.Image]:
    """(z, y, x) unsigned distance [mm] to the voxels of ``ids`` (0 inside them)."""
    mask = sitk.GetImageFromArray(np.isin(sitk.GetArrayViewFromImage(labelmap.image), ids).astype(np.uint8))
    mask.CopyInformation(labelmap.image)
    dist = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(dist), 0.0), mask


def mesh_grid(labelmap: LabelMap, structures, *, size_mm: float = 6.0, organ: str | None = None,
              envelope_mm: float = 8.0, snap: bool = True, refine_near=(), refine_band_mm: float = 10.0,
              refine_ratio: int = 2, min_piece_fraction: float = 0.01):
    """(points [mm], tets, labels) of the union of ``structures`` (names) as one conforming, tagged mesh.

    ``organ``: the other structures are kept only inside the organ's envelope (its mask closed by
    ``envelope_mm``, holes filled), and pieces are kept by their share of the organ; without it every
    structure is an organ of its own (neighbours share faces). ``refine_near``: structures around which
    (within ``refine_band_mm`` of their voxels, and inside them) elements are ``refine_ratio`` (1, 2, 4, 8)
    times smaller.
    """
    from .mesh import index_to_physical, organ_envelope, sample_labels, sample_mask

    if size_mm <= 0:
        raise MeshError("mesh size must be positive")
    levels = int(round(np.log2(refine_ratio))) if refine_ratio >= 1 else -1
    if levels < 0 or 2 ** levels != refine_ratio:
        raise MeshError(f"mesh refine ratio must be 1, 2, 4 or 8, not {refine_ratio}")
    table = labelmap.table
    ids = [table.id_of(n) for n in structures if n in table]
    arr = sitk.GetArrayViewFromImage(labelmap.image)
    present = [i for i in ids if np.any(arr == i)]
    if not present:
        raise LabelError(f"structure '{structures[0]}' is absent from the label map")
    zyx = np.argwhere(np.isin(arr, present))
    lo, hi = zyx.min(0)[::-1] - 1, zyx.max(0)[::-1] + 1  # (i, j, k) bounds with a one-voxel pad
    step = size_mm / np.asarray(labelmap.image.GetSpacing())  # grid step in voxel units
    counts = np.maximum(np.ceil((hi - lo) / step).astype(int), 1) + 1
    if np.prod(counts - 1) * 6 > 20_000_000:
        raise MeshError(f"mesh size {size_mm} mm is too fine for this structure (> 20M tets)")
    axes = [lo[a] + step[a] * np.arange(counts[a]) for a in range(3)]
    gi, gj, gk = np.meshgrid(*axes, indexing="ij")
    # nodes are clamped to the scanned volume: a liver cut by the field of view stays cut there
    size = np.array(labelmap.image.GetSize())
    points = index_to_physical(labelmap.image, np.clip(np.c_[gi.ravel(), gj.ravel(), gk.ravel()], -0.5, size - 0.5))
    tets = kuhn_tets(counts)
    labels = sample_labels(labelmap, points[tets].mean(axis=1))
    keep = np.isin(labels, present)
    _, signed = orient_positive(points, tets)
    keep &= np.abs(signed) > 1e-3 * size_mm ** 3 / 6.0  # flattened by the clamp: dropped
    envelope = None
    if organ is not None:
        oid = table.id_of(organ)
        envelope = organ_envelope(labelmap, oid, envelope_mm)
        keep &= (labels == oid) | sample_mask(envelope, points[tets].mean(axis=1))
    tets, labels = tets[keep], labels[keep]
    if len(tets) == 0:
        raise MeshError(f"'{structures[0]}' is thinner than the mesh size {size_mm} mm: nothing to mesh")
    tets, vol = orient_positive(points, tets)
    primary = [table.id_of(organ)] if organ is not None else present
    main = keep_pieces(tets, labels, vol, primary, min_piece_fraction)
    tets, labels = tets[main], labels[main]
    near = [table.id_of(n) for n in refine_near if n in table and table.id_of(n) in present]
    if levels > 0 and near:
        points, tets, labels = _refine(labelmap, points, tets, labels, near, present, 3 * levels,
                                       refine_band_mm, organ, envelope)
    used, inverse = np.unique(tets, return_inverse=True)
    points, tets = points[used], inverse.reshape(-1, 4)
    if snap:
        from .meshfit import snap_boundary

        union = sitk.GetImageFromArray(np.isin(arr, present).astype(np.uint8))
        union.CopyInformation(labelmap.image)
        points = snap_boundary(points, tets, union, size_mm)
    return points, tets, labels


def _refine(labelmap, points, tets, labels, near, present, generations, band_mm, organ, envelope):
    """Bisect the tets within ``band_mm`` of the ``near`` labels ``generations`` times (conforming closure);
    children take the label at their centroid where it is a meshed structure (else their parent's)."""
    from .mesh import physical_to_index, sample_labels, sample_mask

    dist, _ = _distance_mm(labelmap, near)
    hi = np.array(dist.shape)[::-1] - 1

    def want(pts, t, gen):
        ijk = np.clip(np.rint(physical_to_index(labelmap.image, pts[t].mean(1))).astype(np.int64), 0, hi)
        return np.where(dist[ijk[:, 2], ijk[:, 1], ijk[:, 0]] <= band_mm, generations, 0)

    points, tets, gen, parent = bisect_to(points, tets, want)
    cent = points[tets].mean(1)
    child = sample_labels(labelmap, cent)
    ok = np.isin(child, present)
    if organ is not None:
        oid = labelmap.table.id_of(organ)
        ok &= (child == oid) | sample_mask(envelope, cent)
    labels = np.where(ok, child, labels[parent]).astype(np.int32)
    if (signed_volumes(points, tets) <= 0).any():
        raise MeshError("mesh refinement produced an inverted element")
    return points, tets, labels


def volume_mesh(labels: LabelMap, structures, cfg, size_mm: float):
    """The tagged TetMesh of ``structures`` (names) as a MeshConfig ``cfg`` asks: organ envelope or joint
    organs, graded refinement, boundary fitting. ``cfg.mesher``: ``auto`` and ``grid`` are this grid mesher;
    ``tetgen`` tries the optional TetGen mesher (``surgtwin.tetgenmesh``) and falls back to this one, with
    a one-line warning, when it is not installed, fails or misses the quality goals. The mesh's field data
    record the mesher asked for, the one that ran and the reason for a fallback."""
    from .mesh import TetMesh
    from .config import check_mesher
    from .tetgenmesh import tetgen_volume_mesh

    asked = check_mesher(getattr(cfg, "mesher", "auto"))
    mesh = reason = None
    if asked == "tetgen":
        mesh, reason = tetgen_volume_mesh(labels, structures, cfg, size_mm)
        if mesh is None:
            log.warning("mesh.mesher=tetgen: %s; using the grid mesher", reason)
    if mesh is None:
        mesh = TetMesh.from_labelmap(labels, structures, size_mm=size_mm, organ=None if cfg.joint else cfg.organ,
                                     snap=cfg.snap_boundary, refine_near=list(cfg.refine_near),
                                     refine_ratio=int(cfg.refine_ratio), refine_band_mm=float(cfg.refine_band_mm))
        if reason is not None:
            mesh.grid.field_data["fallback_reason"] = np.array([reason])
    mesh.grid.field_data["mesher_requested"] = np.array([asked])
    return mesh
