"""Procedure steps as the viewer edits them (plain dicts, procedure-file key names) and their effect on
the element mask — small adapters so other step kinds (incision with node duplication, grasp) can be
wired in without touching the UI.

Step dicts (units mm):
    {"action": "resect", "target": "liver_tumor", "margin_mm": 10, "mode": "sphere"|"plane", "normal": [x,y,z]|None}
    {"action": "incision", "path": [[x, y, z], ...], "depth": d}     (rest configuration, LPS mm)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import ResectionStep
from ..errors import ConfigError
from ..fileio import write_text
from ..mesh import TetMesh
from ..procedure import Resection, plan_resection


def resect_step(target: str = "liver_tumor", margin_mm: float = 10.0, mode: str = "sphere",
                normal=None) -> dict:
    """A resection step dict (the fields of config.ResectionStep)."""
    if mode not in ("sphere", "plane"):
        raise ConfigError(f"resection mode '{mode}' must be 'sphere' or 'plane'")
    if margin_mm < 0:
        raise ConfigError("resection margin must be >= 0 mm")
    n = None if normal is None else [float(v) for v in np.asarray(normal, float).reshape(3)]
    return asdict(ResectionStep(target=target, margin_mm=float(margin_mm), mode=mode, normal=n))


def incision_step(path_mm, depth_mm: float) -> dict:
    """An incision along picked surface points ``path_mm`` (k >= 2, 3) to ``depth_mm`` below the surface."""
    path = np.asarray(path_mm, float).reshape(-1, 3)
    if len(path) < 2:
        raise ConfigError("an incision path needs at least two points")
    if not depth_mm > 0:
        raise ConfigError("incision depth must be > 0 mm")
    return {"action": "incision", "path": np.round(path, 3).tolist(), "depth": float(depth_mm)}


def describe(step: dict) -> str:
    """One line for the steps list."""
    if step.get("action") == "incision":
        path = np.asarray(step["path"], float)
        length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        return f"incision {length:.0f} mm long, {step['depth']:.0f} mm deep ({len(path)} points)"
    if step.get("mode") == "plane":
        return f"resect {step['target']}: plane, margin {step['margin_mm']:.0f} mm"
    return f"resect {step['target']}: margin {step['margin_mm']:.0f} mm"


@dataclass
class StepEffect:
    alive: np.ndarray                 # (m,) bool, elements left after the step
    resection: Resection | None       # set for resect steps (for the risk table)


def apply_step(mesh: TetMesh, alive: np.ndarray, step: dict) -> StepEffect:
    """The element mask after ``step``, planned on the rest configuration."""
    action = step.get("action", "resect")
    if action == "resect":
        fields = {k: v for k, v in step.items() if k in ResectionStep.__dataclass_fields__}
        res = plan_resection(mesh, ResectionStep(**fields), ~alive)
        return StepEffect(~res.removed, res)
    if action == "incision":
        return StepEffect(incision_slot(mesh, alive, step["path"], step["depth"]), None)
    raise ConfigError(f"procedure step '{action}' is not available in the viewer (resect, incision)")


def incision_slot(mesh: TetMesh, alive: np.ndarray, path_mm, depth_mm: float, spacing_mm: float | None = None):
    """Stand-in incision until node-duplicating cuts land: remove the elements the blade sweeps through.

    The blade is the ribbon from each path point inward (against the outer-surface normal there) to
    ``depth_mm``; samples on it every ``spacing_mm`` (default a quarter of the median edge) pick the
    containing elements. Returns the new alive mask (an element-wide slot along the path).
    """
    import pyvista as pv

    path = np.asarray(path_mm, float).reshape(-1, 3)
    pts, tets = mesh.points, mesh.tets
    edge = np.linalg.norm(pts[tets[:, 1]] - pts[tets[:, 0]], axis=1)
    h = spacing_mm or max(0.25 * float(np.median(edge)), 0.25)
    live = np.flatnonzero(alive)
    grid = pv.UnstructuredGrid({pv.CellType.TETRA: tets[live]}, pts)
    surf = grid.extract_surface(algorithm="dataset_surface").compute_normals(
        cell_normals=False, auto_orient_normals=True, consistent_normals=True)
    from scipy.spatial import cKDTree

    normals = surf.point_data["Normals"][cKDTree(surf.points).query(path)[1]]
    samples = []
    for a, b, na, nb in zip(path[:-1], path[1:], normals[:-1], normals[1:]):
        ns = max(2, int(np.ceil(np.linalg.norm(b - a) / h)) + 1)
        nt = max(2, int(np.ceil(depth_mm / h)) + 1)
        s = np.linspace(0.0, 1.0, ns)[:, None]
        base = a + s * (b - a)
        inward = -(na + s * (nb - na))
        inward /= np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-12)
        t = np.linspace(0.0, depth_mm, nt)
        samples.append((base[:, None, :] + t[None, :, None] * inward[:, None, :]).reshape(-1, 3))
    samples = np.concatenate(samples)
    hit = np.asarray(grid.find_containing_cell(samples))
    out = alive.copy()
    out[live[np.unique(hit[hit >= 0])]] = False
    if out.sum() == alive.sum():
        raise ConfigError("the incision path does not cross the organ (pick points on its surface)")
    return out


def save_plan(path: str | Path, name: str, steps: list[dict]) -> Path:
    """Write the plan as a procedure YAML (``name``, ``steps``): the format of configs/procedure/."""
    import yaml

    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError("save the plan as a .yaml file")
    if not steps:
        raise ConfigError("the plan has no steps to save")
    text = "# surgtwin procedure saved by the viewer (positions: LPS mm, rest configuration)\n"
    text += yaml.safe_dump({"name": name, "steps": [_plain(s) for s in steps]}, sort_keys=False)
    return write_text(path, text)


def load_plan(path: str | Path) -> tuple[str, list[dict]]:
    """(name, steps) of a procedure file written by ``save_plan`` or found in configs/procedure/."""
    import yaml

    from ..errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such procedure file: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise InputError(f"{path.name}: a procedure file needs 'name' and 'steps'")
    return str(data.get("name", path.stem)), [dict(s) for s in data["steps"]]


def _plain(step: dict) -> dict:
    out = {}
    for k, v in step.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out
