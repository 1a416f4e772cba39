"""RiskReport: the numbers a surgeon signs off on, computed from mesh, resection and solved states.

``assess(mesh, labels, cfg, rehearsal)`` gathers every risk: mechanical (``risk_mech``), critical
structures (``risk_geom``), oncological (margin, tumour surface under the planned margin), functional
(``risk_func``) and one summary table (``risk_summary``). ``report.json`` follows the versioned JSON
Schema ``assets/report.schema.json`` (``schema_version``).
All lengths in mm, volumes in mL, stress in kPa, strain is max principal Green-Lagrange (dimensionless).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from .errors import InputError
from .fileio import write_json
from .mesh import TetMesh, triangle_areas
from .procedure import Resection, margin_samples, sample_triangles

SCHEMA_VERSION = "2.0"
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
    schema_version: str = SCHEMA_VERSION
    summary: list = field(default_factory=list)      # one row per risk (risk_summary.summary_table)
    oncological: dict = field(default_factory=dict)
    functional: dict = field(default_factory=dict)
    mechanical: dict = field(default_factory=dict)
    distances: list = field(default_factory=list)    # closest approach per (source, structure)
    tool_paths: list = field(default_factory=list)   # [{name, points_mm}] checked against the anatomy
    steps: list = field(default_factory=list)        # per procedure step: remnant and margin

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
    """Smallest distance between the resection surface (sampled every 1 mm) and the target's surface."""
    if len(res.cut_faces) == 0:
        return float("inf")
    return float(margin_samples(points, res)[2].min())


def vessel_crossings(mesh: TetMesh, res: Resection, labelmap=None) -> list[VesselCrossing]:
    """Vessels cut by the resection surface, one entry per crossing, largest first.

    With the label map, the rest-configuration resection surface is sampled at half the voxel size
    and the vessel label is looked up at each sample; samples of one vessel label closer than two
    sample spacings form one crossing. Its lumen area is the sampled area projected on the plane normal
    to the vessel (principal axis of its voxels there; so a staircase cut does not inflate it) and its
    diameter 2 sqrt(A / pi).
    Without a label map, the cut faces owned by vessel-tagged elements are used the same way.
    """
    vessel_ids = np.array(mesh.table.ids_in_category("vessel"))
    pts = mesh.points
    if len(res.cut_faces) == 0:
        return []
    spacing = 0.5 * float(min(labelmap.image.GetSpacing())) if labelmap is not None else 1.0
    samples, face, area = sample_triangles(pts, res.cut_faces, spacing)
    if labelmap is not None:
        from .mesh import sample_labels

        lab = sample_labels(labelmap, samples)
    else:
        lab = res.cut_face_region[face]
    normals = np.cross(pts[res.cut_faces[:, 1]] - pts[res.cut_faces[:, 0]],
                       pts[res.cut_faces[:, 2]] - pts[res.cut_faces[:, 0]])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    out = []
    for lid in np.intersect1d(np.unique(lab), vessel_ids):
        hit = np.flatnonzero(lab == lid)
        pairs = cKDTree(samples[hit]).query_pairs(2.0 * spacing, output_type="ndarray")
        graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(hit), len(hit)))
        ncomp, comp = sp.csgraph.connected_components(graph, directed=False)
        for c in range(ncomp):
            idx = hit[comp == c]
            n = normals[face[idx]]
            centre = samples[idx].mean(axis=0)
            axis = None
            if labelmap is not None:
                reach = 2.0 * np.sqrt(area[idx].sum() / np.pi) + 4.0 * spacing
                axis = _local_axis(labelmap, int(lid), centre, reach)
            if axis is None:  # no label map: the crossing's mean surface normal
                axis = (area[idx, None] * n).sum(0)
                axis /= max(np.linalg.norm(axis), 1e-12)
            lumen = float((area[idx] * np.abs(n @ axis)).sum())
            if lumen < 2.0 * spacing ** 2:  # under half a voxel's cross-section: a graze, not resolved
                continue
            diameter = 2.0 * np.sqrt(lumen / np.pi)
            risk = "high" if diameter >= VESSEL_HIGH_MM else "moderate" if diameter >= VESSEL_MODERATE_MM else "low"
            out.append(VesselCrossing(mesh.table.name_of(lid), lumen, float(diameter),
                                      centre.round(1).tolist(), risk))
    return sorted(out, key=lambda v: -v.diameter_mm)


def _local_axis(labelmap, label_id: int, centre_mm: np.ndarray, reach_mm: float):
    """Direction of a vessel near a point: principal axis of its voxels within ``reach_mm``."""
    import SimpleITK as sitk

    from .mesh import index_to_physical, physical_to_index

    img = labelmap.image
    c = physical_to_index(img, centre_mm[None])[0]
    r = reach_mm / np.asarray(img.GetSpacing())
    lo = np.maximum(np.floor(c - r).astype(int), 0)
    hi = np.minimum(np.ceil(c + r).astype(int) + 1, np.array(img.GetSize()))
    if np.any(hi <= lo):
        return None
    sub = sitk.GetArrayViewFromImage(img)[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    zyx = np.argwhere(sub == label_id)
    if len(zyx) < 8:
        return None
    xyz = index_to_physical(img, zyx[:, ::-1] + lo)
    xyz = xyz[np.linalg.norm(xyz - centre_mm, axis=1) <= reach_mm]
    if len(xyz) < 8:
        return None
    w, v = np.linalg.eigh(np.cov((xyz - xyz.mean(0)).T))
    return v[:, -1] if w[-1] > 1.5 * w[-2] else None  # elongated: a tube; else (bifurcation) no axis


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


def step_metrics(mesh: TetMesh, procedure, organ: str, final: dict | None = None) -> list[dict]:
    """Remnant and achieved margin after each procedure step. Resections are replayed on ``mesh`` (the last
    one is ``final``, the resection_metrics already computed); other steps (incision, grasp, retract,
    clip, ...) remove nothing and carry the previous values."""
    from .resection import plan_resection

    removed = np.zeros(len(mesh.tets), bool)
    total = float(np.abs(mesh.tet_volumes_mm3())[mesh.labels == mesh.table.id_of(organ)].sum() / 1000.0)
    row = {"step": 0, "label": "pre-op", "remnant_parenchyma_ml": total, "remnant_percent": 100.0,
           "margin_achieved_mm": None, "margin_planned_mm": None}
    out = [row]
    resects = [i for i, s in enumerate(procedure.steps, 1) if s.action == "resect"]
    for i, step in enumerate(procedure.steps, 1):
        row = dict(row, step=i, label=step.action + (f" {step.tool}" if hasattr(step, "tool") else ""))
        if step.action == "resect":
            if i == resects[-1] and final is not None:
                m = final
            else:
                res = plan_resection(mesh, step, removed)
                removed = res.removed
                m = resection_metrics(mesh, res, organ)
            row.update(label=f"resect {step.target} ({step.mode}, {step.margin_mm:g} mm)",
                       remnant_parenchyma_ml=m["remnant_parenchyma_ml"], remnant_percent=m["remnant_percent"],
                       margin_achieved_mm=m["margin_achieved_mm"], margin_planned_mm=float(step.margin_mm))
        out.append(row)
    return out


def element_diagnostics(spec, positions_mm: np.ndarray, device: str):
    """Von Mises stress [Pa] and max principal Green strain per element of ``spec`` at ``positions_mm``."""
    from .biomech import MM
    from .sim.diagnostics import element_stress

    model = spec.finalize(device)
    return element_stress(model, model.state(positions_mm * MM))


def assess(mesh: TetMesh, labels, cfg, reh, *, case_name: str, files: dict | None = None,
           tool_paths=None) -> tuple["RiskReport", dict]:
    """Every risk of a rehearsal (``simulate.Rehearsal``) as a RiskReport, plus per-element fields
    (``von_mises_kpa``, ``max_principal_strain``, ``over_threshold`` for the remnant; pre-op ones too).

    ``labels`` (LabelMap, optional) gives the named structures for the closest-approach distances;
    ``tool_paths`` (list of ``risk_geom.ToolPath`` or config dicts; default ``cfg.risk.tool_paths``)
    are checked against them too.
    """
    from dataclasses import asdict

    from .risk_func import functional_metrics
    from .risk_geom import ToolPath, closest_approaches, structure_surfaces, surface_samples, tumour_margin_share
    from .risk_mech import mechanical_risk
    from .risk_summary import MARGIN_TOLERANCE_MM, summary_table

    rc = cfg.risk
    organ = cfg.mesh.organ
    res, last = reh.resection, reh.procedure.resections[-1]
    planned = float(last.margin_mm)
    metrics = resection_metrics(mesh, res, organ)
    metrics["margin_planned_mm"] = planned
    metrics.update(deformation_metrics(mesh.points, reh.preop_mm, reh.postop_mm, reh.remnant_nodes,
                                       reh.postop_strain, reh.postop_jacobian, ~res.removed,
                                       cfg.report.strain_threshold))
    vessels = vessel_crossings(mesh, res, labels)

    # mechanical: stress and strain per element, pre-op (whole organ) and post-op (remnant)
    alive = ~res.removed
    vm_post, strain_post = element_diagnostics(reh.spec, reh.postop_mm, cfg.solver.device)
    vm_pre, strain_pre = element_diagnostics(reh.spec.with_alive(np.ones(len(alive), bool)), reh.preop_mm,
                                             cfg.solver.device)
    names = np.array([mesh.table.name_of(i) for i in mesh.labels])
    vol_ml = np.abs(mesh.tet_volumes_mm3()) / 1000.0
    mech = mechanical_risk(names, alive, vol_ml, reh.postop_mm[mesh.tets].mean(axis=1), vm_post, strain_post)
    over = mech.pop("over_threshold_mask")
    pre = mechanical_risk(names, np.ones(len(alive), bool), vol_ml, reh.preop_mm[mesh.tets].mean(axis=1),
                          vm_pre, strain_pre)
    pre.pop("over_threshold_mask")
    mech["preop"] = {k: pre[k] for k in ("peak_von_mises_kpa", "von_mises_p99_kpa", "over_threshold_ml")}
    metrics["peak_von_mises_kpa"] = mech["peak_von_mises_kpa"]

    # oncological: margin and the share of the tumour surface under the planned margin
    share, dmin, at = tumour_margin_share(mesh.points, res.target_faces, res.cut_faces, planned,
                                          tolerance_mm=MARGIN_TOLERANCE_MM)
    # the tighter of the two sampled measures: cut samples -> tumour surface, tumour samples -> cut surface
    onc = {"margin_planned_mm": planned, "margin_achieved_mm": min(metrics["margin_achieved_mm"], dmin),
           "r1_margin_mm": float(rc.r1_margin_mm), "tumour_surface_under_margin_share": share,
           "closest_tumour_point_mm": None if at is None else np.round(at, 2).tolist(),
           "target": last.target, "mode": last.mode}
    if last.mode == "territory":
        onc["at_mm"] = [round(float(v), 1) for v in last.at_mm]

    # functional
    par_total = metrics["parenchyma_volume_ml"]
    func = functional_metrics(organ, metrics["remnant_parenchyma_ml"], par_total, liver_condition=rc.liver_condition,
                              height_cm=rc.height_cm, weight_kg=rc.weight_kg)

    # critical structures: resection surface and tool paths against every named structure
    paths = [p if isinstance(p, ToolPath) else ToolPath.from_config(p, i)
             for i, p in enumerate(rc.tool_paths if tool_paths is None else tool_paths)]
    distances = []
    if labels is not None:
        surfaces = structure_surfaces(labels, exclude=(organ,))
        spacing = 0.5 * float(min(labels.image.GetSpacing()))
        cut_samples = surface_samples(mesh.points, res.cut_faces, spacing)
        distances += closest_approaches("resection surface", cut_samples, labels, surfaces)
        for p in paths:
            distances += closest_approaches(f"tool path {p.name}", p.samples(spacing), labels, surfaces)

    summary = summary_table(oncological=onc, functional=func, vessels=[asdict(v) for v in vessels],
                            distances=distances, mechanical=mech, metrics=metrics, organ=organ,
                            remnant_min_percent=cfg.report.remnant_min_percent,
                            structure_warning_mm=float(rc.structure_warning_mm),
                            organ_structures=tuple(cfg.mesh.structures))
    flags = [f"{r['risk']}: {r['explanation']}" for r in summary if r["status"] in ("warning", "critical")]
    report = RiskReport(case=case_name, organ=organ, target=last.target, metrics=metrics,
                        vessels=[asdict(v) for v in vessels], flags=flags,
                        solver={"device": cfg.solver.device, "preop": reh.preop_report.to_dict(),
                                "postop": reh.postop_report.to_dict(), "timings_s": reh.timings_s},
                        model=reh.model_summary, files=dict(files or {}), summary=summary, oncological=onc,
                        functional=func, mechanical=mech, distances=distances,
                        tool_paths=[{"name": p.name, "points_mm": p.points_mm.round(2).tolist()} for p in paths],
                        steps=step_metrics(mesh, reh.procedure, organ, final=metrics))
    fields = {"von_mises_kpa": vm_post / 1e3, "max_principal_strain": strain_post, "over_threshold": over,
              "preop_von_mises_kpa": vm_pre / 1e3}
    return report, fields


def save_risk_fields(mesh: TetMesh, reh, fields: dict, path: str | Path) -> Path:
    """The post-op remnant (deformed, mm) with per-element risk fields as a VTU (``sim/risk.vtu``)."""
    from .fileio import atomic_path

    g = mesh.grid.copy()
    g.points = reh.postop_mm
    for k, v in fields.items():
        if not k.startswith("preop"):
            g.cell_data[k] = np.asarray(v, dtype=np.uint8 if v.dtype == bool else np.float64)
    g = g.extract_cells(np.flatnonzero(~reh.resection.removed))
    with atomic_path(path) as tmp:
        g.save(tmp)
    return Path(path)
