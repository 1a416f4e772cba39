"""Overlay values (numpy, no rendering) and the CT slice picture with label outlines.

Every overlay is a function of the current frame: node values [mm] or element values [-], with the
colour map, range and legend the scene draws it with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

TUMOUR = ("liver_tumor",)
VESSELS = ("hepatic_vein", "portal_vein_and_splenic_vein", "inferior_vena_cava", "aorta")


@dataclass
class OverlayStyle:
    title: str
    cmap: str
    clim: tuple
    on: str                   # "point" | "cell"
    above_color: str | None = None
    below_color: str | None = None


OVERLAYS = ("displacement", "strain", "distance", "margin", "stress", "none")
OVERLAY_KEYS = {"displacement": "1", "strain": "2", "distance": "3", "margin": "4", "stress": "5", "none": "0"}
AUTO_RANGE = ("displacement", "stress")   # their colour range follows the frame on show


def style(name: str, *, strain_threshold: float = 0.2, margin_mm: float = 10.0, max_value: float = 1.0) -> OverlayStyle:
    if name == "displacement":
        return OverlayStyle("displacement [mm]", "viridis", (0.0, max(max_value, 1e-3)), "point")
    if name == "stress":
        return OverlayStyle("von Mises stress [kPa]", "plasma", (0.0, max(max_value, 1e-3)), "cell")
    if name == "strain":
        return OverlayStyle(f"max principal strain (magenta > {strain_threshold:.2f})", "YlOrBr",
                            (0.0, strain_threshold), "cell", above_color="magenta")
    if name == "distance":
        return OverlayStyle("distance to vessels / tumour [mm]", "RdYlGn", (0.0, 20.0), "point")
    if name == "margin":
        return OverlayStyle(f"distance to tumour [mm] (red < {margin_mm:.0f} mm margin)", "RdYlGn",
                            (0.0, 2.0 * margin_mm), "point", below_color="darkred")
    raise ValueError(f"unknown overlay '{name}' ({', '.join(OVERLAYS)})")


def displacement_mm(positions_mm: np.ndarray, reference_mm: np.ndarray) -> np.ndarray:
    """|x - x_ref| per node [mm]."""
    return np.linalg.norm(positions_mm - reference_mm, axis=1)


def distance_to_nodes_mm(positions_mm: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Distance [mm] from every node to the nearest of the ``targets`` nodes (current positions);
    +inf everywhere when there is no target."""
    if len(targets) == 0:
        return np.full(len(positions_mm), np.inf)
    d, _ = cKDTree(positions_mm[targets]).query(positions_mm)
    return d


def stress_range_kpa(stress_kpa: np.ndarray) -> float:
    """Top of the stress colour range [kPa]: the 99th percentile, so a few peak elements (at the fixed
    boundary, at a tool) do not wash out the rest; those show in the top colour."""
    known = stress_kpa[np.isfinite(stress_kpa)]
    return float(np.percentile(known, 99)) if len(known) else 0.0


def over_threshold(strain: np.ndarray, alive: np.ndarray, threshold: float) -> int:
    """Number of alive elements whose strain exceeds ``threshold``."""
    return int(np.count_nonzero((strain > threshold) & alive))


def slice_rgb(ct: np.ndarray, labels: np.ndarray | None, colors: dict, window=(-160.0, 240.0)) -> np.ndarray:
    """One CT slice (2D, HU) as RGB uint8 with the outline of every label drawn in its colour.

    ``labels`` is the label slice on the same grid; ``colors`` maps label id -> (r, g, b).
    """
    lo, hi = window
    grey = np.clip((ct.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    if labels is None:
        return rgb
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge &= labels > 0
    for lid in np.unique(labels[edge]):
        rgb[edge & (labels == lid)] = colors.get(int(lid), (255, 255, 0))
    return rgb
