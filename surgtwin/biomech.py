"""From a tagged TetMesh to a simulation ModelSpec: materials per region, fixed nodes, support springs.

Millimetres become metres here (the one unit conversion into the simulator); kPa become Pa.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyvista as pv

from .config import BoundaryConfig, MaterialConfig
from .errors import ConfigError, InputError, LabelError
from .fileio import atomic_path, write_json
from .mesh import TetMesh, distance_to_labels_mm, triangle_areas
from .resources import assets_dir
from .sim import ModelSpec
from .sim.model import LAW_NAMES
from .volume import LabelMap

MM = 1e-3


def tissue_library() -> dict:
    """Tissue name -> {youngs_kpa, poisson, density_kg_m3, source} from assets/tissues.json."""
    return json.loads((assets_dir() / "tissues.json").read_text())["tissues"]


def region_materials(mesh: TetMesh, cfg: MaterialConfig):
    """Per-element (E [Pa], nu, rho [kg/m^3]) and the table actually used (for the report)."""
    lib = {k: dict(v) for k, v in tissue_library().items()}
    for name, override in (cfg.tissues or {}).items():
        lib.setdefault(name, {}).update(dict(override))
    if cfg.model not in LAW_NAMES:
        raise ConfigError(f"material model '{cfg.model}' is not available ({', '.join(LAW_NAMES)})")
    labels = mesh.labels
    e, nu, rho = (np.zeros(len(labels)) for _ in range(3))
    used = {}
    for lid in np.unique(labels):
        name = mesh.table.name_of(lid)
        t = lib.get(name)
        if t is None or not {"youngs_kpa", "poisson", "density_kg_m3"} <= set(t):
            raise ConfigError(f"no tissue parameters for '{name}': add +material.tissues.{name}.youngs_kpa=... (and poisson, density_kg_m3)")
        sel = labels == lid
        e[sel], nu[sel], rho[sel] = t["youngs_kpa"] * 1e3, t["poisson"], t["density_kg_m3"]
        used[name] = {k: t[k] for k in ("youngs_kpa", "poisson", "density_kg_m3")} | {"source": t.get("source", "")}
    return e, nu, rho, used


def region_laws(mesh: TetMesh, cfg: MaterialConfig, used: dict):
    """Per-element law ids and Mooney-Rivlin c01_ratio: a tissue's ``law`` (default ``cfg.model``); ``used`` (the
    report's table) gains the law of each tissue."""
    lib = {k: dict(v) for k, v in tissue_library().items()}
    for name, override in (cfg.tissues or {}).items():
        lib.setdefault(name, {}).update(dict(override))
    law, c01 = np.zeros(len(mesh.labels), np.int32), np.zeros(len(mesh.labels))
    for lid in np.unique(mesh.labels):
        name = mesh.table.name_of(lid)
        t = lib[name]
        lname = t.get("law", cfg.model)
        if lname not in LAW_NAMES:
            raise ConfigError(f"tissue '{name}': unknown material law '{lname}' ({', '.join(LAW_NAMES)})")
        sel = mesh.labels == lid
        law[sel], c01[sel] = LAW_NAMES.index(lname), float(t.get("c01_ratio", 0.0))
        used[name]["law"] = lname
    return law, c01


def surface_node_areas_mm2(mesh: TetMesh) -> np.ndarray:
    """Area [mm^2] of the outer surface lumped to its nodes (one third of each boundary triangle)."""
    pts = mesh.points
    faces = mesh.boundary_faces()
    area = triangle_areas(pts, faces)
    out = np.zeros(len(pts))
    np.add.at(out, faces.ravel(), np.repeat(area / 3.0, 3))
    return out


def build_model_spec(mesh: TetMesh, labelmap: LabelMap | None, material: MaterialConfig,
                     boundary: BoundaryConfig) -> tuple[ModelSpec, dict]:
    """ModelSpec in SI units and a summary (materials used, fixed node count, support stiffness)."""
    e, nu, rho, used = region_materials(mesh, material)
    law, c01 = region_laws(mesh, material, used)
    pts = mesh.points
    fixed = np.zeros(len(pts), bool)
    if boundary.fix_near:
        if labelmap is None:
            raise InputError("boundary.fix_near needs the label map the mesh came from")
        try:
            dist = distance_to_labels_mm(labelmap, list(boundary.fix_near), pts)
        except LabelError:
            raise LabelError(f"structure '{boundary.fix_near[0]}' (boundary.fix_near) is absent from the label map") from None
        fixed = dist <= boundary.fix_distance_mm
    # support by neighbouring tissue: pressure per displacement [kPa/mm] = 1e6 Pa/m
    k = surface_node_areas_mm2(mesh) * (MM * MM) * boundary.support_kpa_per_mm * 1e6
    if not fixed.any() and not np.any(k > 0):
        raise ConfigError("the organ is neither fixed nor supported: set boundary.fix_near or boundary.support_kpa_per_mm")
    spec = ModelSpec(pts * MM, mesh.tets, mesh.labels, e, nu, rho, fixed, k, gravity=boundary.gravity_m_s2,
                     law=law, c01_ratio=c01, volumetric=material.volumetric)
    summary = {"materials": used, "fixed_nodes": int(fixed.sum()), "supported_nodes": int((k > 0).sum()),
               "support_kpa_per_mm": boundary.support_kpa_per_mm, "gravity_m_s2": list(boundary.gravity_m_s2),
               "tets": int(len(mesh.tets)), "nodes": int(len(pts))}
    return spec, summary


def save_model(spec: ModelSpec, path: str | Path) -> Path:
    """Model as VTU (mm geometry, per-element E/nu/rho/alive, per-node fixed/spring) + JSON sidecar."""
    path = Path(path)
    cells = np.hstack([np.full((len(spec.tets), 1), 4), spec.tets]).ravel()
    grid = pv.UnstructuredGrid(cells, np.full(len(spec.tets), pv.CellType.TETRA, np.uint8), spec.points / MM)
    grid.cell_data["label"] = spec.region
    grid.cell_data["youngs_pa"] = spec.youngs
    grid.cell_data["poisson"] = spec.poisson
    grid.cell_data["density_kg_m3"] = spec.density
    grid.cell_data["alive"] = spec.alive.astype(np.uint8)
    grid.cell_data["law"] = spec.law
    grid.cell_data["c01_ratio"] = spec.c01_ratio
    grid.point_data["fixed"] = spec.fixed.astype(np.uint8)
    grid.point_data["spring_n_per_m"] = spec.spring_k
    laws = sorted({LAW_NAMES[i] for i in np.unique(spec.law)})
    with atomic_path(path) as tmp:
        grid.save(tmp)
    write_json(path.with_suffix(".json"), {"units": {"length": "mm in file, m in solver", "stress": "Pa"},
                                           "gravity_m_s2": spec.gravity.tolist(),
                                           "material": laws[0] if len(laws) == 1 else "per element (cell array law)",
                                           "laws": laws,
                                           "volumetric": spec.volumetric})
    return path


def load_model(path: str | Path) -> ModelSpec:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such model file: {path}")
    grid = pv.read(path)
    need = {"label", "youngs_pa", "poisson", "density_kg_m3"}
    if not need <= set(grid.cell_data.keys()):
        raise InputError(f"{path.name}: not a surgtwin model (missing {sorted(need - set(grid.cell_data.keys()))})")
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.is_file() else {}
    gravity = meta.get("gravity_m_s2", [0.0, 0.0, 0.0])
    tets = grid.cells_dict[pv.CellType.TETRA]
    return ModelSpec(np.asarray(grid.points) * MM, tets, grid.cell_data["label"], grid.cell_data["youngs_pa"],
                     grid.cell_data["poisson"], grid.cell_data["density_kg_m3"], grid.point_data["fixed"].astype(bool),
                     grid.point_data["spring_n_per_m"], gravity=gravity,
                     alive=grid.cell_data["alive"].astype(bool) if "alive" in grid.cell_data else None,
                     law=grid.cell_data["law"] if "law" in grid.cell_data else 0,
                     c01_ratio=grid.cell_data["c01_ratio"] if "c01_ratio" in grid.cell_data else 0.0,
                     volumetric=meta.get("volumetric", "standard"))


def save_state(spec: ModelSpec, positions_m: np.ndarray, path: str | Path) -> Path:
    """A State as VTU: deformed node positions [mm] with ``displacement_mm`` and the element mask."""
    positions_m = np.asarray(positions_m, dtype=np.float64)
    if positions_m.shape != spec.points.shape:
        raise InputError(f"state has {len(positions_m)} nodes, the model {len(spec.points)}")
    cells = np.hstack([np.full((len(spec.tets), 1), 4), spec.tets]).ravel()
    grid = pv.UnstructuredGrid(cells, np.full(len(spec.tets), pv.CellType.TETRA, np.uint8), positions_m / MM)
    grid.point_data["displacement_mm"] = (positions_m - spec.points) / MM
    grid.cell_data["alive"] = spec.alive.astype(np.uint8)
    with atomic_path(path) as tmp:
        grid.save(tmp)
    return Path(path)


def load_state(path: str | Path, spec: ModelSpec | None = None) -> np.ndarray:
    """Node positions [m] of a saved State (checked against ``spec`` when given)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such state file: {path}")
    grid = pv.read(path)
    if "displacement_mm" not in grid.point_data:
        raise InputError(f"{path.name}: not a surgtwin state (no displacement_mm)")
    x = np.asarray(grid.points, dtype=np.float64) * MM
    if spec is not None and x.shape != spec.points.shape:
        raise InputError(f"{path.name}: {len(x)} nodes, the model has {len(spec.points)}")
    return x
