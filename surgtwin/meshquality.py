"""Mesh quality figures for quality.json: the dihedral-angle distribution and the explicit time step.

An explicit (central-difference) integrator is stable for a linear tetrahedron while the time step stays
below the time a dilatational wave needs to cross the element: dt_e = l_e / c with c = sqrt((lambda +
2 mu) / rho) and l_e the element's characteristic length, here its shortest altitude (the diameter of
the largest ball the element's faces can confine, a lower bound of the usual estimates). The mesh's
stable step is the minimum over the elements.
"""
from __future__ import annotations

import numpy as np

from .mesh import tet_quality

PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)


def dihedral_angles(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """(m, 6) interior dihedral angles [deg] of each tetrahedron (at its 6 edges)."""
    x = points[tets]
    n = np.stack([np.cross(x[:, b] - x[:, a], x[:, c] - x[:, a]) for a, b, c in ((1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1))], 1)
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-300)
    cos = np.stack([(n[:, k] * n[:, l]).sum(1) for k in range(4) for l in range(k + 1, 4)], 1)
    return 180.0 - np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def dihedral_distribution(points: np.ndarray, tets: np.ndarray, *, bin_deg: float = 10.0) -> dict:
    """Percentiles of the per-element minimum and maximum dihedral angle [deg] and a histogram of all
    dihedral angles (``bin_deg`` wide bins over 0-180 degrees)."""
    ang = dihedral_angles(points, tets)
    edges = np.arange(0.0, 180.0 + bin_deg, bin_deg)
    counts, _ = np.histogram(ang.ravel(), bins=edges)
    pct = lambda v: {f"p{p}": round(float(np.percentile(v, p)), 2) for p in PERCENTILES}  # noqa: E731
    return {"min_per_element_percentiles_deg": pct(ang.min(1)),
            "max_per_element_percentiles_deg": pct(ang.max(1)),
            "histogram_all_angles": {"bin_edges_deg": edges.tolist(), "counts": counts.astype(int).tolist()}}


def wave_speed_m_s(youngs_pa: float, poisson: float, density_kg_m3: float) -> float:
    """Dilatational (P-) wave speed sqrt((lambda + 2 mu) / rho) [m/s]."""
    mu = youngs_pa / (2.0 * (1.0 + poisson))
    lam = youngs_pa * poisson / ((1.0 + poisson) * (1.0 - 2.0 * poisson))
    return float(np.sqrt((lam + 2.0 * mu) / density_kg_m3))


def explicit_time_step(points: np.ndarray, tets: np.ndarray, tissue: dict) -> dict:
    """Stable explicit step [s] for ``tissue`` ({youngs_kpa, poisson, density_kg_m3}) on this mesh [mm]:
    min over elements of shortest altitude / wave speed, with the per-element percentiles."""
    c = wave_speed_m_s(tissue["youngs_kpa"] * 1e3, tissue["poisson"], tissue["density_kg_m3"])
    length_mm = tet_quality(points, tets)["min_altitude_mm"]
    dt = length_mm * 1e-3 / c
    return {"stable_dt_s": float(dt.min()), "wave_speed_m_s": round(c, 4),
            "characteristic_length": "shortest altitude", "min_length_mm": round(float(length_mm.min()), 4),
            "element_dt_percentiles_s": {f"p{p}": float(np.percentile(dt, p)) for p in (1, 5, 50)}}
