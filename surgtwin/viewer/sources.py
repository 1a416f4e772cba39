"""What ``surgtwin view`` can open: a run folder, a case folder (label map [+ CT]) or the phantom."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..errors import InputError

log = logging.getLogger("surgtwin")


def run_config(folder: Path, cfg: RunConfig | None) -> RunConfig:
    """The run's own config.yaml (when there is one and no cfg is given), else cfg or the defaults."""
    if cfg is not None:
        return cfg
    path = folder / "config.yaml" if folder is not None else None
    if path is not None and path.is_file():
        from omegaconf import OmegaConf

        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path)))
        except Exception as exc:  # a config from another version: say so, use the defaults
            log.warning("%s: not used (%s); default configuration", path, str(exc).splitlines()[0])
    return RunConfig()


def _surfaces(folder: Path) -> dict:
    import pyvista as pv

    d = folder / "mesh" / "surfaces"
    if not d.is_dir():
        d = folder / "surfaces"
    return {p.stem: pv.read(p) for p in sorted(d.glob("*.vtp"))} if d.is_dir() else {}


def bone_surface(labels, max_cells: int = 12000):
    """All bone-category labels (vertebrae, ribs, …) as one display surface [mm], or None."""
    from ..mesh import labelmap_to_image_data

    ids = [i for i in labels.present_ids() if labels.table.labels.get(i) is not None
           and labels.table.labels[i].category == "bone"]
    if not ids:
        return None
    img = labelmap_to_image_data(labels)
    img.point_data["bone"] = np.isin(img.point_data["label"], ids).astype(np.float32)
    surf = img.contour([0.5], scalars="bone", method="flying_edges").triangulate()
    if surf.n_cells > max_cells:
        surf = surf.decimate_pro(1.0 - max_cells / surf.n_cells, preserve_topology=True)
    return surf if surf.n_cells else None


def add_bones(session):
    """Add the bones of the session's label map to its display surfaces (once)."""
    if session.labels is not None and "bones" not in session.surfaces:
        bones = bone_surface(session.labels)
        if bones is not None:
            session.surfaces["bones"] = bones


def load_target(cls, target, cfg: RunConfig | None):
    """Build a RehearsalSession (``cls``) from ``target``, its model ready to solve."""
    session = _load(cls, target, cfg)
    session.model_spec()  # here, not in the solver thread: the distance map would hold the interpreter
    return session


def _load(cls, target, cfg: RunConfig | None):
    from ..mesh import TetMesh
    from ..volume import LabelMap, Volume

    if target is None:
        return _from_phantom(cls, cfg or RunConfig())
    folder = Path(target)
    if not folder.is_dir():
        raise InputError(f"no such run or case folder: {folder}")
    cfg = run_config(folder, cfg)
    labels = LabelMap.load(folder / "labels.nii.gz") if (folder / "labels.nii.gz").is_file() else None
    volume = Volume.load(folder / "ct.nii.gz") if (folder / "ct.nii.gz").is_file() else None
    vtu = folder / "mesh" / "volume.vtu"
    if not vtu.is_file() and (folder / "volume.vtu").is_file():
        vtu = folder / "volume.vtu"
    if vtu.is_file():
        mesh = TetMesh.load(vtu)
        if labels is None:
            cfg.boundary.fix_near = []  # without the label map the organ is held by its surface support
        session = cls(mesh, cfg, labels=labels, volume=volume, surfaces=_surfaces(folder), name=folder.name)
        _load_run_state(session, folder)
        return session
    if labels is None:
        raise InputError(f"{folder}: neither a run folder (mesh/volume.vtu) nor a case folder (labels.nii.gz)")
    from ..pipeline import mesh_structures

    mesh, surfaces = mesh_structures(labels, cfg.mesh)
    return cls(mesh, cfg, labels=labels, volume=volume, surfaces={k: s.mesh for k, s in surfaces.items()},
               name=folder.name)


def _load_run_state(session, folder: Path):
    """Pre-op state, the run's procedure (as pending steps) and report from a simulated run folder.

    The run's states are on its final (cut) mesh, whose first nodes are the nodes of mesh/volume.vtu:
    the pre-op state starts the rehearsal; the post-op state is recorded with its own topology."""
    import pyvista as pv

    from ..mesh import TetMesh
    from ..risk import RiskReport
    from .recording import Frame, Topology
    from .steps import load_plan

    n, m = len(session.rest_mm), len(session.mesh.tets)
    pre = folder / "sim" / "preop.vtu"
    if pre.is_file():
        g = pv.read(pre)
        x = np.asarray(g.points, float)
        rest = x - np.asarray(g.point_data["displacement_mm"], float) if "displacement_mm" in g.point_data else None
        if g.n_points >= n and rest is not None and np.allclose(rest[:n], session.rest_mm, atol=1e-6):
            strain = np.asarray(g.cell_data["max_principal_strain"], float) if g.n_cells == m else None
            from ..risk import element_diagnostics

            stress, _ = element_diagnostics(session.model_spec(), x[:n], session.cfg.solver.device)
            session.set_start(x[:n], strain, "pre-op (run)", stress_pa=stress)   # before any worker runs
            session.equilibrated = True
            post = folder / "sim" / "postop.vtu"
            if post.is_file():
                p = pv.read(post)
                if p.n_points == g.n_points and p.n_cells == g.n_cells and "alive" in p.cell_data:
                    mesh = TetMesh.from_arrays(rest, p.cells_dict[pv.CellType.TETRA], p.cell_data["label"],
                                               session.mesh.table)
                    session.recording.append(Frame(np.asarray(p.points, float), np.asarray(p.cell_data["alive"], bool),
                                                   np.asarray(p.cell_data["max_principal_strain"], float), "post-op (run)",
                                                   topology=Topology(mesh, x), stress_pa=_risk_stress(folder, p.n_cells)))
    proc = folder / "sim" / "procedure.json"
    if proc.is_file():
        _, steps = load_plan(proc)
        for s in steps:
            session.add_step(s)
    if (folder / "report.json").is_file():
        session.report = RiskReport.load(folder / "report.json")


def _risk_stress(folder: Path, n_cells: int):
    """Post-op von Mises stress [Pa] on all ``n_cells`` elements from the run's ``sim/risk.vtu`` (the
    remnant's cells, with their original ids); None where the run has none."""
    import pyvista as pv

    path = folder / "sim" / "risk.vtu"
    if not path.is_file():
        return None
    g = pv.read(path)
    ids = np.asarray(g.cell_data["vtkOriginalCellIds"]) if "vtkOriginalCellIds" in g.cell_data else None
    if ids is None or "von_mises_kpa" not in g.cell_data or (len(ids) and ids.max() >= n_cells):
        return None
    out = np.zeros(n_cells)
    out[ids] = np.asarray(g.cell_data["von_mises_kpa"], float) * 1e3
    return out


def _from_phantom(cls, cfg: RunConfig):
    from ..pipeline import mesh_structures, prepare_case

    case = prepare_case(cfg)
    mesh, surfaces = mesh_structures(case.labels, cfg.mesh)
    session = cls(mesh, cfg, labels=case.labels, volume=case.volume,
                  surfaces={k: s.mesh for k, s in surfaces.items()}, name="phantom")
    for s in cfg.procedure.steps:
        from dataclasses import asdict, is_dataclass

        session.add_step(asdict(s) if is_dataclass(s) else dict(s))
    return session
