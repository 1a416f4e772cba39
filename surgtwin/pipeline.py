"""The end-to-end Python API: case -> labels -> meshes -> rehearsal -> RiskReport, into a run folder.

    from surgtwin.pipeline import plan
    report = plan(RunConfig(), "runs/demo")      # the built-in phantom, resected with a 10 mm margin

Each stage function also stands alone (the CLI subcommands call them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .config import MeshConfig, RunConfig
from .errors import ConfigError, LabelError
from .mesh import SurfaceMesh, TetMesh
from .volume import LabelMap, Volume

log = logging.getLogger("surgtwin")

#: Structures drawn around the organ in reports and the viewer when present.
CONTEXT_STRUCTURES = ("inferior_vena_cava", "aorta", "gallbladder", "kidney_right", "spleen")


@dataclass
class Case:
    volume: Volume
    labels: LabelMap
    source: str          # "phantom" or "files"


def prepare_case(cfg: RunConfig, folder: Path | None = None) -> Case:
    """Load (or generate) the image and its label map; save them into ``folder`` if given.

    The phantom is written as NIfTI and as a DICOM series, and read back through the DICOM loader.
    """
    c = cfg.case
    if c.image is None:
        if folder is not None:
            _, labels = write_phantom(c.phantom, folder)
            volume = Volume.load(folder / "dicom")
        else:
            from .phantom import make_phantom

            volume, labels = make_phantom(c.phantom)
        log.info("phantom: %s voxels at %.2f mm", "x".join(map(str, volume.shape)), c.phantom.spacing_mm)
        case = Case(volume, labels, "phantom")
    else:
        volume = Volume.load(c.image, modality=c.modality, series=c.series)
        if c.labels is not None:
            labels = resample_labels(LabelMap.load(c.labels), volume)
        else:
            from .segment import segment

            labels = segment(volume, cfg.segment)
        case = Case(volume, labels, "files")
    for lesion in c.lesions:
        add_spherical_lesion(case.labels, lesion)
    if folder is not None:
        from .qc import qc_overlay

        case.labels.save(folder / "labels.nii.gz")
        qc_overlay(case.volume, case.labels, folder / "labels_qc.png")
    return case


def write_phantom(cfg, folder: Path):
    """Generate the phantom (PhantomConfig) and write its CT as ``ct.nii.gz`` and a ``dicom/`` series."""
    from .dicom import write_dicom_series
    from .phantom import make_phantom

    volume, labels = make_phantom(cfg)
    volume.save(folder / "ct.nii.gz")
    write_dicom_series(volume, folder / "dicom")
    return volume, labels


def add_spherical_lesion(labels: LabelMap, lesion: dict) -> int:
    """Paint a sphere ``{name, center_mm: [x, y, z] (LPS), radius_mm}`` into the label map (in place).

    Returns the number of voxels painted; for planning on scans whose lesion is not segmented.
    """
    unknown = set(dict(lesion)) - {"name", "center_mm", "radius_mm"}
    if unknown:
        raise ConfigError(f"unknown lesion field(s): {', '.join(sorted(unknown))} (name, center_mm, radius_mm)")
    try:
        name = str(lesion.get("name", "liver_tumor"))
        center = np.asarray(lesion["center_mm"], dtype=float).reshape(3)
        radius = float(lesion["radius_mm"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("a lesion needs center_mm: [x, y, z] and radius_mm") from None
    if radius <= 0:
        raise ConfigError("lesion radius_mm must be positive")
    img = labels.image
    arr = sitk.GetArrayFromImage(img)
    zyx = np.indices(arr.shape).reshape(3, -1).T
    from .mesh import index_to_physical

    inside = np.linalg.norm(index_to_physical(img, zyx[:, ::-1]) - center, axis=1) <= radius
    if not inside.any():
        raise ConfigError(f"lesion at {center.tolist()} mm (r {radius} mm) lies outside the image")
    arr.reshape(-1)[inside] = labels.table.id_of(name)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    labels.image = out
    log.info("added lesion '%s': r %.1f mm, %d voxels", name, radius, int(inside.sum()))
    return int(inside.sum())


def resample_labels(labels: LabelMap, volume: Volume) -> LabelMap:
    """Bring a label map stored on another grid onto the image grid, in physical space."""
    a, b = labels.image, volume.image
    same = (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5))
    if same:
        return labels
    out = sitk.Resample(a, b, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    log.info("label map resampled onto the image grid (physical space)")
    return LabelMap(out, labels.table)


def mesh_structures(labels: LabelMap, cfg: MeshConfig, folder: Path | None = None):
    """Tagged volume mesh of the organ and display surfaces of it and its context."""
    present = set(labels.table.name_of(i) for i in labels.present_ids())
    if cfg.organ not in present:
        raise LabelError(f"structure '{cfg.organ}' is absent from the label map")
    if cfg.joint:   # every listed structure is an organ of the joint mesh: none may be missing
        missing = [s for s in cfg.structures if s not in present]
        if missing:
            raise LabelError(f"structure '{missing[0]}' is absent from the label map")
    structures = [s for s in cfg.structures if s in present] or [cfg.organ]
    size_mm = cfg.size_mm
    if cfg.max_tets:  # a tet budget: cubes of the size that gives about that many tets (6 per cube)
        if cfg.max_tets < 6:
            raise ConfigError("mesh.max_tets must be at least 6")
        volumes = labels.volumes_ml()
        volume_mm3 = sum(volumes[s] for s in structures) * 1000.0
        size_mm = (volume_mm3 * 6.0 / cfg.max_tets) ** (1.0 / 3.0)
    from .tetgrid import volume_mesh

    mesh = volume_mesh(labels, structures, cfg, size_mm)
    surfaces = {}
    for name in list(cfg.structures) + list(CONTEXT_STRUCTURES):
        if name in present and name not in surfaces:
            surfaces[name] = SurfaceMesh.from_labelmap(labels, name, smoothing_iterations=cfg.surface_smoothing)
    if folder is not None:
        mesh.save(folder / "volume.vtu")
        for name, s in surfaces.items():
            s.save(folder / "surfaces" / f"{name}.vtp")
            if cfg.stl:
                s.save(folder / "surfaces" / f"{name}.stl")
    log.info("mesh: %d tets, %d nodes at %.1f mm; %d surfaces", mesh.grid.n_cells, mesh.grid.n_points,
             size_mm, len(surfaces))
    return mesh, surfaces


def mesh_quality(mesh: TetMesh, labels: LabelMap | None, surfaces: dict | None = None) -> dict:
    """Element counts and quality (dihedral angles, radius ratio, scaled Jacobian, the explicit stable
    time step it implies for liver tissue), and region volumes vs label-map volumes."""
    from .biomech import tissue_library
    from .mesh import tet_quality
    from .sim import lame_parameters

    vol = mesh.tet_volumes_mm3()
    tq = tet_quality(mesh.points, mesh.tets)
    liver = tissue_library()["liver"]
    mu, lam = lame_parameters(liver["youngs_kpa"] * 1e3, liver["poisson"])
    wave_speed = float(np.sqrt((lam + 2 * mu) / liver["density_kg_m3"]))  # dilatational, m/s
    q = {"tets": int(mesh.grid.n_cells), "nodes": int(mesh.grid.n_points),
         "mesher": str(mesh.grid.field_data["mesher"][0]) if "mesher" in mesh.grid.field_data else "unknown",
         **{key: str(mesh.grid.field_data[key][0]) for key in ("mesher_requested", "fallback_reason")
            if key in mesh.grid.field_data},
         "inverted_elements": int((vol <= 0).sum()),
         "min_dihedral_deg": round(float(tq["min_dihedral_deg"].min()), 2),
         "median_min_dihedral_deg": round(float(np.median(tq["min_dihedral_deg"])), 2),
         "max_dihedral_deg": round(float(tq["max_dihedral_deg"].max()), 2),
         "min_radius_ratio": round(float(tq["radius_ratio"].min()), 4),
         "min_scaled_jacobian": round(float(tq["scaled_jacobian"].min()), 4),
         "explicit_stable_dt_liver_s": float(tq["min_altitude_mm"].min() * 1e-3 / wave_speed),
         "regions": {}}
    from .meshquality import dihedral_distribution, explicit_time_step

    q["explicit_dt_liver"] = explicit_time_step(mesh.points, mesh.tets, liver)
    q["dihedral_distribution"] = dihedral_distribution(mesh.points, mesh.tets)
    label_vol = labels.volumes_ml() if labels is not None else {}
    for name, v in mesh.volumes_ml().items():
        entry = {"mesh_ml": round(v, 3)}
        if name in label_vol:
            entry["label_ml"] = round(label_vol[name], 3)
            entry["error_percent"] = round(100.0 * (v - label_vol[name]) / label_vol[name], 2)
        q["regions"][name] = entry
    if labels is not None:
        from .mesh import surface_hd95_mm

        names = [n for n in q["regions"] if n in label_vol]
        q["boundary_hd95_mm"] = round(surface_hd95_mm(mesh.grid.extract_surface(algorithm="dataset_surface"),
                                                      labels, names), 3)
        q["voxel_mm"] = round(float(min(labels.image.GetSpacing())), 3)
        q["surfaces"] = {}
        for name, surf in (surfaces or {}).items():
            q["surfaces"][name] = {"watertight": surf.mesh.n_open_edges == 0, "manifold": bool(surf.mesh.is_manifold),
                                   "volume_ml": round(surf.volume_ml, 3),
                                   "hd95_mm": round(surface_hd95_mm(surf.mesh, labels, [name]), 3)}
    return q


def simulate_case(mesh: TetMesh, labels: LabelMap | None, cfg: RunConfig, run: Path, *, case_name: str,
                  progress=None):
    """Rehearse the procedure; states go to ``run/sim``, the RiskReport to ``run/report.json``."""

    from .risk import assess, save_risk_fields
    from .simulate import rehearse

    reh = rehearse(mesh, labels, cfg, progress=progress, record_dir=run / "sim")
    files = reh.save(run / "sim")
    mesh = reh.mesh  # after the cuts: split elements, duplicated wound nodes, removed elements marked
    report, fields = assess(mesh, labels, cfg, reh, case_name=case_name, files=files)
    report.metrics["cut_volume_error_ml"] = abs(float(np.abs(mesh.tet_volumes_mm3()).sum())
                                                - reh.original_volume_mm3) / 1000.0
    report.solver["steps"] = reh.log
    report.files["risk"] = save_risk_fields(mesh, reh, fields, run / "sim" / "risk.vtu").name
    report.save(run / "report.json")
    return report, reh


def plan(cfg: RunConfig, folder: str | Path, *, progress=None):
    """The whole job into ``folder``: case, labels, mesh (+quality.json), rehearsal, report.html/json.

    ``progress`` (optional) is called with a stage name after each stage. Returns the RiskReport.
    """
    from .fileio import write_json
    from .report import render_report

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda name: None)
    case = prepare_case(cfg, folder)
    tick("labels")
    mesh, surfaces = mesh_structures(case.labels, cfg.mesh, folder / "mesh")
    write_json(folder / "mesh" / "quality.json", mesh_quality(mesh, case.labels, surfaces))
    tick("mesh")
    simulate_case(mesh, case.labels, cfg, folder, case_name=case.source, progress=tick)
    render_report(folder, cfg.report)
    tick("report")
    from .risk import RiskReport

    return RiskReport.load(folder / "report.json")
