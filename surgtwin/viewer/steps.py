"""Procedure steps as the viewer edits them: plain dicts with the key names of procedure files
(``surgtwin.procedure``), so a saved plan replays with ``surgtwin simulate``. The session applies them
through ``surgtwin.surgery.Surgery``.

Step dicts (units mm, LPS):
    {"action": "resect", "target": "liver_tumor", "margin_mm": 10, "mode": "sphere"|"plane", "normal": [x,y,z]|None}
    {"action": "incision", "path_mm": [[x, y, z], ...], "depth_mm": d}   (where the tissue is when it runs)
    {"action": "grasp", "tool": "grasper", "at_mm": [x, y, z], "radius_mm": r}
    {"action": "retract", "tool": "grasper", "path_mm": [[x, y, z], ...]}
    {"action": "release", "tool": "grasper"}
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..config import ResectionStep
from ..errors import ConfigError
from ..fileio import write_text


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
    return {"action": "incision", "path_mm": np.round(path, 3).tolist(), "depth_mm": float(depth_mm)}


def grasp_step(at_mm, radius_mm: float = 6.0, tool: str = "grasper") -> dict:
    """Grasp the surface within ``radius_mm`` of ``at_mm`` (a picked surface point)."""
    if not radius_mm > 0:
        raise ConfigError("grasp radius must be > 0 mm")
    at = np.asarray(at_mm, float).reshape(3)
    return {"action": "grasp", "tool": tool, "at_mm": np.round(at, 3).tolist(), "radius_mm": float(radius_mm)}


def retract_step(path_mm, tool: str = "grasper") -> dict:
    """Move the tool tip through the waypoints ``path_mm`` (k >= 1, 3)."""
    path = np.asarray(path_mm, float).reshape(-1, 3)
    if len(path) == 0:
        raise ConfigError("a retraction needs at least one waypoint")
    return {"action": "retract", "tool": tool, "path_mm": np.round(path, 3).tolist()}


def release_step(tool: str = "grasper") -> dict:
    return {"action": "release", "tool": tool}


def describe(step: dict) -> str:
    """One line for the steps list."""
    action = step.get("action", "resect")
    if action == "incision":
        path = np.asarray(step["path_mm"], float)
        length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        return f"incision {length:.0f} mm long, {float(step['depth_mm']):.0f} mm deep ({len(path)} points)"
    if action == "grasp":
        return f"grasp ({step.get('tool', 'grasper')}) at {np.round(step['at_mm'], 0).tolist()} mm"
    if action == "retract":
        path = np.asarray(step["path_mm"], float).reshape(-1, 3)
        return f"retract ({step.get('tool', 'grasper')}) to {np.round(path[-1], 0).tolist()} mm"
    if action != "resect":
        return action
    if step.get("mode") == "plane":
        return f"resect {step['target']}: plane, margin {step['margin_mm']:.0f} mm"
    return f"resect {step['target']}: margin {step['margin_mm']:.0f} mm"


def save_plan(path: str | Path, name: str, steps: list[dict]) -> Path:
    """Write the plan as a procedure YAML (``name``, ``steps``): the format of configs/procedure/."""
    import yaml

    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError("save the plan as a .yaml file")
    if not steps:
        raise ConfigError("the plan has no steps to save")
    text = ("# surgtwin procedure saved by the viewer (LPS mm; incision and grasp points where the tissue is "
            "when the step runs, resections on the labels)\n")
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
