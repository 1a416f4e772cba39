"""Topology primitives (numpy): split tetrahedra by a nodal level set, separate faces by duplicating nodes.

Splitting is conforming by construction: a new node sits on every mesh edge whose two ends have
opposite level-set signs (at the linear zero crossing), and each cut tet is decomposed by a *pulling*
triangulation (cone from the lowest-numbered vertex over the faces not containing it, each face coned
from its own lowest vertex) — a rule that depends only on global vertex numbers, so two tets sharing a
face always triangulate it the same way. Edge nodes are numbered in the lexicographic order of their
edge's end nodes, which makes the decomposition of a tet a function of (sign pattern, order of its 4
node numbers): 81 x 24 cases, tabulated once. Sub-tets partition their parent exactly (the volumes
add up to round-off) and keep its orientation; near-vertex crossings (edge parameter within
``alpha`` of an end) are snapped to that node, so no piece is thinner than ``alpha`` of its parent.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

LOCAL_EDGES = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
TET_FACES = ((1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1))   # face k is opposite vertex k
PERMS = list(itertools.permutations(range(4)))
_PERM_CODE = np.full(256, -1, np.int64)
for _i, _p in enumerate(PERMS):
    _PERM_CODE[_p[0] * 64 + _p[1] * 16 + _p[2] * 4 + _p[3]] = _i
MAX_CHILDREN = 6


def any4(b: np.ndarray) -> np.ndarray:
    """Row-wise any of an (m, 4) bool array (column ops: much faster than a reduce over axis 1)."""
    return b[:, 0] | b[:, 1] | b[:, 2] | b[:, 3]


def count4(b: np.ndarray) -> np.ndarray:
    """Row-wise count of an (m, 4) bool array."""
    return b[:, 0].astype(np.int8) + b[:, 1] + b[:, 2] + b[:, 3]


def straddles(st: np.ndarray):
    """(has a positive node, has a negative node) per row of (m, 4) node signs."""
    hi = np.maximum(np.maximum(st[:, 0], st[:, 1]), np.maximum(st[:, 2], st[:, 3]))
    lo = np.minimum(np.minimum(st[:, 0], st[:, 1]), np.minimum(st[:, 2], st[:, 3]))
    return hi > 0, lo < 0


def _ref_points(signs):
    """Reference tet and its 6 edge midpoints (the zero crossings for node values in {-1, 0, 1})."""
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    mids = np.array([(v[i] + v[j]) / 2 for i, j in LOCAL_EDGES])
    return np.concatenate([v, mids])


def _vol(p, t):
    a, b, c, d = (p[i] for i in t)
    return np.linalg.det(np.stack([b - a, c - a, d - a], 1)) / 6.0


def _decompose(signs, ranks):
    """Sub-tets (local ids 0-3 nodes, 4-9 edge points) and their side for one case."""
    key = list(ranks) + [4 + [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)].index(
        (min(ranks[i], ranks[j]), max(ranks[i], ranks[j]))) for i, j in LOCAL_EDGES]
    edge_of = {}
    for e, (i, j) in enumerate(LOCAL_EDGES):
        edge_of[(i, j)] = edge_of[(j, i)] = 4 + e
    p = _ref_points(signs)
    crossing = [4 + e for e, (i, j) in enumerate(LOCAL_EDGES) if signs[i] * signs[j] < 0]
    zeros = [i for i in range(4) if signs[i] == 0]
    cut = zeros + crossing
    out = []
    for side in (1, -1):
        faces = []
        for f in TET_FACES:
            poly = []
            for u, v in zip(f, f[1:] + f[:1]):
                if signs[u] * side >= 0:
                    poly.append(u)
                if signs[u] * signs[v] < 0:
                    poly.append(edge_of[(u, v)])
            if len(poly) >= 3:
                faces.append(poly)
        c = p[cut].mean(0)
        n = np.cross(p[cut[1]] - p[cut[0]], p[cut[2]] - p[cut[0]])
        if np.linalg.norm(n) < 1e-12:
            n = np.cross(p[cut[1]] - p[cut[0]], p[cut[-1]] - p[cut[0]])
        e1 = (p[cut[0]] - c) / np.linalg.norm(p[cut[0]] - c)
        e2 = np.cross(n, e1)
        ang = [np.arctan2((p[q] - c) @ e2, (p[q] - c) @ e1) for q in cut]
        faces.append([cut[i] for i in np.argsort(ang)])
        verts = sorted({q for f in faces for q in f}, key=lambda q: key[q])
        apex = verts[0]
        for f in faces:
            if apex in f:
                continue
            w = min(range(len(f)), key=lambda i: key[f[i]])
            f = f[w:] + f[:w]
            for i in range(1, len(f) - 1):
                t = [apex, f[0], f[i], f[i + 1]]
                vol = _vol(p, t)
                if abs(vol) < 1e-12:
                    raise AssertionError("degenerate sub-tet in the split table")
                out.append(((t if vol > 0 else [t[0], t[2], t[1], t[3]]), side))
    return out


@lru_cache(maxsize=1)
def split_table():
    """(children (81*24, 6, 4) local ids or -1, side (81*24, 6)) for every split case."""
    children = np.full((81 * 24, MAX_CHILDREN, 4), -1, np.int64)
    sides = np.zeros((81 * 24, MAX_CHILDREN), np.int8)
    for code in range(81):
        signs = [(code // 3 ** i) % 3 - 1 for i in range(4)]
        if not (1 in signs and -1 in signs):
            continue
        for pi, ranks in enumerate(PERMS):
            subs = _decompose(signs, ranks)
            for k, (t, s) in enumerate(subs):
                children[code * 24 + pi, k] = t
                sides[code * 24 + pi, k] = s
    return children, sides


@dataclass
class Split:
    """Result of ``split_by_level_set``. New node ``n_old + i`` sits at ``(1 - t_i) x[a_i] + t_i x[b_i]``
    for ``(a_i, b_i) = edge_nodes[i]``; element ``j`` is part of old element ``parent[j]``; ``side``
    is the level-set side of each element (+1, -1, or 0 for elements with every node on the surface
    or outside the active set); ``on_surface`` marks nodes on the zero set (n_old + new,)."""

    tets: np.ndarray
    parent: np.ndarray
    side: np.ndarray
    edge_nodes: np.ndarray
    edge_t: np.ndarray
    on_surface: np.ndarray
    split_count: int


def snap_signs(tets: np.ndarray, phi: np.ndarray, alpha: float) -> np.ndarray:
    """Level set with near-vertex crossings snapped: a node closer than ``alpha`` (edge fraction) to the
    zero crossing of any edge it shares with an opposite-sign node gets phi = 0."""
    phi = np.array(phi, dtype=np.float64)
    for _ in range(20):
        s = np.sign(phi)
        pos, neg = straddles(s[tets])
        cross = pos & neg
        if not cross.any():
            break
        t4 = tets[cross]
        a, b = t4[:, LOCAL_EDGES[:, 0]].ravel(), t4[:, LOCAL_EDGES[:, 1]].ravel()
        c = s[a] * s[b] < 0
        a, b = a[c], b[c]
        t = phi[a] / (phi[a] - phi[b])
        snap = np.union1d(a[t < alpha], b[t > 1.0 - alpha])
        if len(snap) == 0:
            break
        phi[snap] = 0.0
    return phi


def split_by_level_set(tets: np.ndarray, phi: np.ndarray, *, active: np.ndarray | None = None,
                       alpha: float = 0.15, phi_true: np.ndarray | None = None) -> Split:
    """Split the ``active`` tets crossed by the zero set of the nodal field ``phi`` (n,).

    Nodes with phi == 0 lie on the surface (the caller sets phi = 0 on nodes outside the region a
    cut should reach: tets are split only where they hold both a positive and a negative node).
    ``phi_true`` (default phi) decides the side of tets whose nodes all end on the surface.
    """
    tets = np.asarray(tets, np.int64)
    n, m = len(phi), len(tets)
    active = np.ones(m, bool) if active is None else np.asarray(active, bool)
    phi = snap_signs(tets[active], phi, alpha)
    s = np.sign(phi).astype(np.int8)
    st = s[tets]
    pos, neg = straddles(st)
    split = active & pos & neg
    side = np.where(pos, 1, np.where(neg, -1, 0))
    flat = active & (side == 0)
    if flat.any():
        ref = np.asarray(phi if phi_true is None else phi_true)[tets[flat]].sum(1)
        side[flat] = np.sign(ref)
    side[~active] = 0
    idx = np.flatnonzero(split)
    ts = tets[idx]
    a, b = ts[:, LOCAL_EDGES[:, 0]], ts[:, LOCAL_EDGES[:, 1]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    crossing = s[lo] * s[hi] < 0
    keys = np.unique(lo[crossing] * n + hi[crossing])
    ea, eb = keys // n, keys % n
    edge_t = phi[ea] / (phi[ea] - phi[eb])
    local = np.full((len(idx), 10), -1, np.int64)
    local[:, :4] = ts
    ekey = lo * n + hi
    pos = np.searchsorted(keys, ekey)
    local[:, 4:] = np.where(crossing, n + np.minimum(pos, len(keys) - 1), -1)
    sp4 = st[idx].astype(np.int64) + 1
    pattern = sp4[:, 0] + 3 * sp4[:, 1] + 9 * sp4[:, 2] + 27 * sp4[:, 3]
    ranks = np.argsort(np.argsort(ts, axis=1), axis=1)
    perm = _PERM_CODE[ranks[:, 0] * 64 + ranks[:, 1] * 16 + ranks[:, 2] * 4 + ranks[:, 3]]
    table, table_side = split_table()
    case = pattern * 24 + perm
    loc = table[case]                                   # (k, 6, 4)
    valid = loc[:, :, 0] >= 0
    child = np.take_along_axis(local, np.where(loc < 0, 0, loc).reshape(len(idx), MAX_CHILDREN * 4), 1).reshape(loc.shape)
    children = child[valid]
    child_parent = np.repeat(idx, valid.sum(1))
    child_side = table_side[case][valid].astype(np.int64)
    keep = ~split
    on_surface = np.concatenate([phi == 0, np.ones(len(keys), bool)])
    return Split(np.concatenate([tets[keep], children]), np.concatenate([np.flatnonzero(keep), child_parent]),
                 np.concatenate([side[keep], child_side]), np.stack([ea, eb], 1), edge_t, on_surface, len(idx))


def face_keys(faces: np.ndarray, n: int) -> np.ndarray:
    """Orientation-independent int64 key per triangle (n: node count bound)."""
    f = np.sort(faces, axis=1).astype(np.int64)
    return (f[:, 0] * n + f[:, 1]) * n + f[:, 2]


def interior_faces(tets: np.ndarray, n: int):
    """Faces shared by two of ``tets``: (faces (k, 3) sorted, tet a (k,), tet b (k,))."""
    faces = np.concatenate([tets[:, list(f)] for f in TET_FACES])
    owner = np.tile(np.arange(len(tets)), 4)
    key = face_keys(faces, n)
    order = np.argsort(key)
    ks = key[order]
    same = np.flatnonzero(ks[1:] == ks[:-1])
    return np.sort(faces[order[same]], axis=1), owner[order[same]], owner[order[same + 1]]


def duplicate_nodes(tets: np.ndarray, active: np.ndarray, cut_faces: np.ndarray, n: int):
    """Separate the ``active`` tets across ``cut_faces`` (k, 3): every node of a cut face gets one copy
    per group of its tets still connected through uncut faces around it (so crack fronts stay joined).

    Returns (new tets (m, 4), source node of each new node (d,)); new nodes are numbered from ``n``.
    """
    tets = np.array(tets, np.int64)
    affected = np.unique(cut_faces)
    if len(affected) == 0:
        return tets, np.zeros(0, np.int64)
    aff = np.zeros(n, bool)
    aff[affected] = True
    loc = np.flatnonzero(active & any4(aff[tets]))
    lt = tets[loc]
    faces, ta, tb = interior_faces(lt, n)
    uncut = ~np.isin(face_keys(faces, n), face_keys(cut_faces, n))
    faces, ta, tb = faces[uncut], ta[uncut], tb[uncut]
    rows, cols = [], []
    for k in range(3):
        v = faces[:, k]
        hit = aff[v]
        ca = ta[hit] * 4 + np.argmax(lt[ta[hit]] == v[hit, None], axis=1)
        cb = tb[hit] * 4 + np.argmax(lt[tb[hit]] == v[hit, None], axis=1)
        rows.append(ca)
        cols.append(cb)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    nc = 4 * len(lt)
    graph = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(nc, nc))
    _, comp = sp.csgraph.connected_components(graph, directed=False)
    node = lt.ravel()
    corners = np.flatnonzero(aff[node])
    pair = np.stack([node[corners], comp[corners]], 1)
    uniq, inv = np.unique(pair, axis=0, return_inverse=True)
    inv = inv.ravel()
    first = np.ones(len(uniq), bool)
    first[1:] = uniq[1:, 0] != uniq[:-1, 0]
    new_id = np.where(first, uniq[:, 0], 0)
    extra = np.flatnonzero(~first)
    new_id[extra] = n + np.arange(len(extra))
    node = node.copy()
    node[corners] = new_id[inv]
    tets[loc] = node.reshape(-1, 4)
    return tets, uniq[extra, 0]


def boundary_edge_counts(tets: np.ndarray, n: int, nodes: np.ndarray | None = None):
    """(edges (k, 2), number of boundary faces on each) of the boundary of ``tets``; with ``nodes``,
    only the edges touching those nodes."""
    if nodes is not None:  # every face on an edge touching ``nodes`` belongs to a tet holding that node
        mask = np.zeros(n, bool)
        mask[nodes] = True
        tets = tets[any4(mask[tets])]
    bf = boundary_of(tets, n)
    e = np.concatenate([bf[:, [0, 1]], bf[:, [1, 2]], bf[:, [2, 0]]])
    e = np.sort(e, axis=1)
    if nodes is not None:
        e = e[mask[e].any(1)]
    if len(e) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    return uniq, counts


def non_manifold_edges(tets: np.ndarray, n: int, nodes: np.ndarray | None = None) -> np.ndarray:
    """Boundary edges (k, 2) not shared by exactly two boundary faces."""
    e, c = boundary_edge_counts(tets, n, nodes)
    return e[c != 2]


def boundary_of(tets: np.ndarray, n: int) -> np.ndarray:
    """Faces (k, 3) used by exactly one of ``tets`` (outward for positive tets)."""
    faces = np.concatenate([tets[:, list(f)] for f in TET_FACES])
    key = face_keys(faces, n)
    order = np.argsort(key)
    ks = key[order]
    single = np.ones(len(ks), bool)
    dup = ks[1:] == ks[:-1]
    single[1:] &= ~dup
    single[:-1] &= ~dup
    return faces[order[single]]


def largest_face_piece(tets: np.ndarray, keep: np.ndarray, volumes, n: int) -> np.ndarray:
    """Mask of the kept tets in the face-connected piece of largest volume (``volumes``: (m,) array or
    a callable returning it, called only when there are several pieces)."""
    idx = np.flatnonzero(keep)
    out = np.zeros(len(tets), bool)
    if len(idx) == 0:
        return out
    _, a, b = interior_faces(tets[idx], n)
    graph = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(len(idx), len(idx)))
    ncomp, comp = sp.csgraph.connected_components(graph, directed=False)
    if ncomp == 1:
        out[idx] = True
        return out
    volumes = volumes() if callable(volumes) else volumes
    best = np.argmax(np.bincount(comp, weights=np.abs(volumes[idx])))
    out[idx[comp == best]] = True
    return out
