"""RiskReport: the numbers a surgeon signs off on, computed from mesh, resection and solved states.

All lengths in mm, volumes in mL, strain is max principal Green-Lagrange (dimensionless).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .errors import InputError
from .fileio import write_json
from .mesh import TetMesh, triangle_areas
from .procedure import Resection, closest_cut_faces

VESSEL_HIGH_MM = 5.0      # transected vessel diameter needing ligation / reconstruction
VESSEL_MODERATE_MM = 3.0


@dataclass
class VesselCrossing:
    structure: str
    area_mm2: float
    diameter_mm: float
    centroid_mm: list
    risk: str


@dataclass
class RiskReport:
    case: str
    organ: str
    target: str
    metrics: dict = field(default_factory=dict)
    vessels: list = field(default_factory=list)
    flags: list = field(default_factory=list)
    solver: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        return write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "RiskReport":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such report: {path}")
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputError(f"{path.name}: not a surgtwin report ({exc})") from None


def resection_metrics(mesh: TetMesh, res: Resection, organ: str) -> dict:
    """Volumes (remnant / removed / functional remnant %) and the achieved margin."""
    vol = np.abs(mesh.tet_volumes_mm3()) / 1000.0
    labels = mesh.labels
    organ_id = mesh.table.id_of(organ)
    parenchyma = labels == organ_id
    total = float(vol.sum())
    removed = float(vol[res.removed].sum())
    remnant = float(vol[~res.removed].sum())
    par_total = float(vol[parenchyma].sum())
    par_remnant = float(vol[parenchyma & ~res.removed].sum())
    return {
        "organ_volume_ml": total,
        "parenchyma_volume_ml": par_total,
        "remnant_volume_ml": remnant,
        "removed_volume_ml": removed,
        "volume_bookkeeping_error_ml": abs(total - remnant - removed),
        "remnant_parenchyma_ml": par_remnant,
        "remnant_percent": 100.0 * par_remnant / par_total if par_total > 0 else 0.0,
        "margin_achieved_mm": achieved_margin_mm(mesh.points, res),
        "cut_surface_area_mm2": float(triangle_areas(mesh.points, res.cut_faces).sum()),
    }


def achieved_margin_mm(points: np.ndarray, res: Resection) -> float:
    """Smallest distance from the target's surface nodes to the resection surface."""
    if len(res.cut_faces) == 0:
        return float("inf")
    return float(closest_cut_faces(points, res.cut_faces, points[res.target_nodes])[1].min())


def vessel_crossings(mesh: TetMesh, res: Resection, labelmap=None) -> list[VesselCrossing]:
    """Vessel cross-sections on the resection surface, one per connected patch of vessel faces.

    The diameter is twice the largest inscribed radius of the vessel in the label map near the
    crossing (robust to the element-scale staircase of the cut); without a label map it is the
    equivalent diameter of the crossing area.
    """
    vessel_ids = set(mesh.table.ids_in_category("vessel"))
    out = []
    pts = mesh.points
    for lid in sorted(set(np.unique(res.cut_face_region)) & vessel_ids):
        faces = res.cut_faces[res.cut_face_region == lid]
        rows = np.repeat(np.arange(len(faces)), 3)
        inc = sp.csr_matrix((np.ones(len(rows)), (rows, faces.ravel())), shape=(len(faces), len(pts)))
        ncomp, comp = sp.csgraph.connected_components(inc @ inc.T, directed=False)
        for c in range(ncomp):
            f = faces[comp == c]
            area = float(triangle_areas(pts, f).sum())
            centroid = pts[np.unique(f)].mean(axis=0)
            diameter = 2.0 * np.sqrt(area / np.pi)
            if labelmap is not None:
                samples = np.vstack([pts[np.unique(f)], pts[f].mean(axis=1)])
                reach = max(0.5 * _edge_length(pts, f), 2.0)
                diameter = 2.0 * _inscribed_radius_mm(labelmap, lid, samples, reach) or diameter
            risk = "high" if diameter >= VESSEL_HIGH_MM else "moderate" if diameter >= VESSEL_MODERATE_MM else "low"
            out.append(VesselCrossing(mesh.table.name_of(lid), area, float(diameter), centroid.round(1).tolist(), risk))
    return sorted(out, key=lambda v: -v.diameter_mm)


def deformation_metrics(rest_mm: np.ndarray, pre_mm: np.ndarray, post_mm: np.ndarray, nodes: np.ndarray,
                        strain: np.ndarray, jac: np.ndarray, alive: np.ndarray, strain_threshold: float) -> dict:
    """Shift of the remnant from pre-op to post-op equilibrium, gravity sag, and strain statistics."""
    shift = np.linalg.norm(post_mm[nodes] - pre_mm[nodes], axis=1)
    sag = np.linalg.norm(pre_mm - rest_mm, axis=1)
    s = strain[alive]
    return {
        "max_shift_mm": float(shift.max()),
        "mean_shift_mm": float(shift.mean()),
        "max_gravity_sag_mm": float(sag.max()),
        "peak_strain": float(s.max()),
        "strain_p99": float(np.percentile(s, 99)),
        "elements_over_strain_threshold": int((s > strain_threshold).sum()),
        "min_volume_ratio": float(jac[alive].min()),
        "inverted_elements": int((jac[alive] <= 0).sum()),
    }


def risk_flags(metrics: dict, vessels: list[VesselCrossing], planned_margin: float, *,
               remnant_min_percent: float, strain_threshold: float) -> list[str]:
    flags = []
    if metrics["remnant_percent"] < remnant_min_percent:
        flags.append(f"functional remnant {metrics['remnant_percent']:.1f}% is below {remnant_min_percent:.0f}%")
    if metrics["margin_achieved_mm"] < planned_margin - 1e-6:
        flags.append(f"achieved margin {metrics['margin_achieved_mm']:.1f} mm is below the planned {planned_margin:.1f} mm")
    for v in vessels:
        if v.risk == "high":
            flags.append(f"{v.structure} transected at {v.diameter_mm:.1f} mm diameter: plan ligation")
    if metrics["peak_strain"] > strain_threshold:
        flags.append(f"peak strain {metrics['peak_strain']:.2f} exceeds {strain_threshold:.2f}")
    if metrics["inverted_elements"]:
        flags.append(f"{metrics['inverted_elements']} inverted elements after re-equilibration")
    return flags


def _edge_length(points: np.ndarray, faces: np.ndarray) -> float:
    return float(np.linalg.norm(points[faces[:, 1]] - points[faces[:, 0]], axis=1).max())


def _inscribed_radius_mm(labelmap, label_id: int, samples_mm: np.ndarray, reach_mm: float) -> float:
    """Largest inscribed radius of the structure among its voxels within ``reach_mm`` of the samples."""
    import SimpleITK as sitk
    from scipy.spatial import cKDTree

    from .mesh import index_to_physical, physical_to_index

    img = labelmap.image
    idx = physical_to_index(img, samples_mm)
    r = reach_mm / np.asarray(img.GetSpacing())
    lo = np.maximum(np.floor(idx.min(0) - r).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(idx.max(0) + r).astype(int) + 2, np.array(img.GetSize()))
    if np.any(hi <= lo):
        return 0.0
    background = sitk.RegionOfInterest(img, (hi - lo).tolist(), lo.tolist()) != int(label_id)
    background = sitk.ConstantPad(background, [1, 1, 1], [1, 1, 1], 1)
    # distance of structure voxel centres to the nearest background voxel centre
    dist = sitk.SignedMaurerDistanceMap(background, insideIsPositive=False, squaredDistance=False,
                                        useImageSpacing=True)
    arr = sitk.GetArrayFromImage(dist)[1:-1, 1:-1, 1:-1]
    zyx = np.argwhere(arr > 0)
    if len(zyx) == 0:
        return 0.0
    phys = index_to_physical(img, zyx[:, ::-1] + lo)
    near = cKDTree(samples_mm).query(phys, distance_upper_bound=reach_mm)[0] <= reach_mm
    # The voxel-centre distance is itself the radius estimate: the true boundary lies half a voxel
    # beyond the last inside centre, and the deepest centre sits up to half a voxel off the axis.
    half_voxel = 0.5 * float(np.mean(img.GetSpacing()))
    return max(float(arr[tuple(zyx[near].T)].max()), half_voxel) if near.any() else 0.0
