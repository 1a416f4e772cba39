"""Structured tetrahedral blocks (numpy only): a grid of cubes, each split into tetrahedra.

Freudenthal/Kuhn split (the default): every cube is cut into 6 tetrahedra sharing its main diagonal. Five-tet
split: one tet on four alternate corners plus the four corner tets left over, mirrored in every other cube.
Both conform across neighbouring cubes. Used by the label-map mesher, the verification problems and the benchmarks.
"""
from __future__ import annotations

import numpy as np

# corner b of a cube has offset (b >> 2 & 1, b >> 1 & 1, b & 1)
KUHN = np.array([(0, 1, 3, 7), (0, 1, 5, 7), (0, 2, 3, 7), (0, 2, 6, 7), (0, 4, 5, 7), (0, 4, 6, 7)])


# the tet on the even corners (0, 3, 5, 6) and the four cut off at the odd corners 1, 2, 4, 7
FIVE = np.array([(0, 3, 5, 6), (1, 0, 3, 5), (2, 0, 3, 6), (4, 0, 5, 6), (7, 3, 5, 6)])


def _cube_corners(counts) -> np.ndarray:
    """(cubes, 8) node ids of the cubes of a node grid of ``counts``, corner b as above, cube (i, j, k) row-major."""
    nx, ny, nz = (int(c) for c in counts)
    node = np.arange(nx * ny * nz).reshape(nx, ny, nz)
    return np.stack([node[(b >> 2) & 1: nx - 1 + ((b >> 2) & 1), (b >> 1) & 1: ny - 1 + ((b >> 1) & 1),
                          b & 1: nz - 1 + (b & 1)].ravel() for b in range(8)], axis=1)


def kuhn_tets(counts) -> np.ndarray:
    """Tets (6 (nx-1)(ny-1)(nz-1), 4) over a node grid of ``counts`` = (nx, ny, nz), node id (i*ny + j)*nz + k."""
    return _cube_corners(counts)[:, KUHN].reshape(-1, 4)


def five_tets(counts) -> np.ndarray:
    """Tets (5 (nx-1)(ny-1)(nz-1), 4) over the same node grid: cubes with odd i + j + k use the split mirrored
    in z (corner b -> b ^ 1), so every face diagonal is shared with the neighbouring cube."""
    corners = _cube_corners(counts)
    i, j, k = np.indices([int(c) - 1 for c in counts]).reshape(3, -1)
    odd = ((i + j + k) % 2 == 1)[:, None]
    return np.where(odd, corners[:, np.arange(8) ^ 1], corners)[:, FIVE].reshape(-1, 4)


def signed_volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Signed volume of each tet (positive when nodes 1, 2, 3 turn right-handed seen from node 0)."""
    x = points[tets]
    return np.linalg.det(np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]], 2)) / 6.0


def orient_positive(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap two nodes of negatively oriented tets; returns (tets, signed volumes before the swap)."""
    vol = signed_volumes(points, tets)
    tets = tets.copy()
    neg = vol < 0
    tets[neg] = tets[neg][:, [0, 2, 1, 3]]
    return tets, vol


def box_mesh(n, lengths=(0.1, 0.1, 0.1), *, five=False) -> tuple[np.ndarray, np.ndarray]:
    """(points, tets) of a box [0, L] split into n = (nx, ny, nz) cubes (an int means n^3), 6 tets per cube
    (Kuhn) or 5 with ``five=True``."""
    n = (n, n, n) if np.isscalar(n) else tuple(n)
    axes = [np.linspace(0.0, float(l), int(k) + 1) for k, l in zip(n, lengths)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    tets, _ = orient_positive(pts, (five_tets if five else kuhn_tets)([k + 1 for k in n]))
    return pts, tets
