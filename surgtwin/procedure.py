"""Procedures: ordered surgical steps as data (``configs/procedure/*.yaml``), validated on load.

Steps (lengths in mm, LPS patient space; forces in N):

    - {action: incision, path_mm: [[x, y, z], ...], depth_mm: 15, direction: null}
    - {action: grasp, tool: grasper, at_mm: [x, y, z], radius_mm: 6, stiffness_n_per_mm: 0.5}
    - {action: retract, tool: grasper, path_mm: [[x, y, z], ...], step_mm: 1.0, record_every: 2}
    - {action: release, tool: grasper}
    - {action: resect, target: liver_tumor, margin_mm: 10, mode: sphere | plane, normal: null}
    - {action: resect, target: portal_vein_and_splenic_vein, mode: territory, at_mm: [x, y, z]}
    - {action: clip, target: portal_vein_and_splenic_vein, at_mm: [x, y, z], jaw_mm: 5}
    - {action: settle}                     # re-equilibrate (e.g. after releasing a tool)

``margin: 10mm`` is accepted for ``margin_mm: 10``. Every problem is a one-line ConfigError naming
the step. Resection planning lives in ``surgtwin.resection`` (re-exported here).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .config import ProcedureConfig, ResectionStep
from .errors import ConfigError, InputError, LabelError
from .fileio import write_json
from .mesh import TetMesh
from .resection import (Resection, margin_samples, plan_resection, sample_triangles,
                        target_signed_distance)

__all__ = ["Procedure", "parse_step", "STEP_TYPES", "IncisionStep", "GraspStep", "RetractStep", "ReleaseStep",
           "ClipStep", "SettleStep", "ResectionStep", "Resection", "margin_samples", "plan_resection",
           "sample_triangles", "target_signed_distance"]


@dataclass
class IncisionStep:
    action: str = "incision"
    path_mm: list = field(default_factory=list)   # >= 2 points on (or just over) the organ surface
    depth_mm: float = 10.0                        # blade depth under the path
    direction: Optional[list] = None              # blade sweep direction; None = into the tissue
    above_mm: Optional[float] = None              # blade reach above the path (default: depth_mm)


@dataclass
class GraspStep:
    action: str = "grasp"
    tool: str = "grasper"
    at_mm: list = field(default_factory=list)     # tool tip; surface nodes within radius_mm are held
    radius_mm: float = 6.0
    stiffness_n_per_mm: float = 0.5               # per held node


@dataclass
class RetractStep:
    action: str = "retract"
    tool: str = "grasper"
    path_mm: list = field(default_factory=list)   # tool tip waypoints after the grasp point
    step_mm: float = 1.0                          # largest tool move per quasi-static increment
    record_every: int = 0                         # also record every N increments (0: only the end)


@dataclass
class ReleaseStep:
    action: str = "release"
    tool: str = "grasper"


@dataclass
class ClipStep:
    action: str = "clip"
    target: str = "portal_vein_and_splenic_vein"  # vessel label
    at_mm: list = field(default_factory=list)
    jaw_mm: float = 5.0                           # clip reach: vessel elements this close are clipped


@dataclass
class SettleStep:
    action: str = "settle"


@dataclass
class PressStep:
    action: str = "press"
    tool: str = "probe"
    path_mm: list = field(default_factory=list)   # probe centre: start (clear of the tissue), then deeper points
    radius_mm: float = 5.0                        # rigid spherical probe tip
    step_mm: float = 0.5                          # largest probe move per quasi-static increment
    friction: float = 0.0                         # Coulomb coefficient tissue-probe


STEP_TYPES = {"resect": ResectionStep, "incision": IncisionStep, "grasp": GraspStep, "retract": RetractStep,
              "release": ReleaseStep, "clip": ClipStep, "settle": SettleStep, "press": PressStep}


def _points(value, what: str, minimum: int) -> list:
    try:
        p = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a list of [x, y, z] points in mm") from None
    if p.ndim == 1 and minimum == 1:
        p = p.reshape(1, -1)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < minimum or not np.isfinite(p).all():
        raise ConfigError(f"{what} must be {'a point' if minimum == 1 else f'at least {minimum} points'} [x, y, z] in mm")
    return p.tolist()


def _mm(value, what: str) -> float:
    if isinstance(value, str):
        v = value.strip().lower()
        v = v[:-2] if v.endswith("mm") else v
        try:
            return float(v)
        except ValueError:
            raise ConfigError(f"{what} '{value}' is not a length in mm") from None
    return float(value)


def parse_step(raw, index: int):
    """One step (dict or step dataclass) -> validated step dataclass."""
    s = dict(raw) if not hasattr(raw, "__dataclass_fields__") else asdict(raw)
    action = s.get("action", "resect")
    where = f"step {index + 1} ({action})"
    if action not in STEP_TYPES:
        raise ConfigError(f"{where}: unknown action; use one of {', '.join(STEP_TYPES)}")
    cls = STEP_TYPES[action]
    if action == "resect" and "margin" in s:
        s["margin_mm"] = _mm(s.pop("margin"), f"{where}: margin")
    unknown = set(s) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    step = cls(**s)
    if action == "resect":
        if step.mode not in ("sphere", "plane", "territory"):
            raise ConfigError(f"resection mode '{step.mode}' must be 'sphere', 'plane' or 'territory'")
        if step.mode == "territory":
            step.at_mm = _points(step.at_mm, f"{where}: at_mm (where the branch is divided)", 1)[0]
            if not step.jaw_mm > 0:
                raise ConfigError(f"{where}: jaw_mm must be > 0")
        step.margin_mm = _mm(step.margin_mm, f"{where}: margin")
        if step.margin_mm < 0:
            raise ConfigError("resection margin must be >= 0 mm")
    elif action == "incision":
        step.path_mm = _points(step.path_mm, f"{where}: path_mm", 2)
        step.depth_mm = _mm(step.depth_mm, f"{where}: depth_mm")
        if step.depth_mm <= 0:
            raise ConfigError(f"{where}: depth_mm must be > 0")
        if step.direction is not None:
            d = np.asarray(step.direction, float)
            if d.shape != (3,) or not np.linalg.norm(d) > 0:
                raise ConfigError(f"{where}: direction must be a non-zero [x, y, z] vector")
    elif action == "grasp":
        step.at_mm = _points(step.at_mm, f"{where}: at_mm", 1)[0]
        if not step.radius_mm > 0 or not step.stiffness_n_per_mm > 0:
            raise ConfigError(f"{where}: radius_mm and stiffness_n_per_mm must be > 0")
    elif action == "retract":
        step.path_mm = _points(step.path_mm, f"{where}: path_mm", 1)
        if not step.step_mm > 0 or int(step.record_every) < 0:
            raise ConfigError(f"{where}: step_mm must be > 0 and record_every >= 0")
    elif action == "press":
        step.path_mm = _points(step.path_mm, f"{where}: path_mm", 2)
        if not step.radius_mm > 0 or not step.step_mm > 0 or step.friction < 0:
            raise ConfigError(f"{where}: radius_mm and step_mm must be > 0, friction >= 0")
    elif action == "clip":
        step.at_mm = _points(step.at_mm, f"{where}: at_mm", 1)[0]
        if not step.jaw_mm > 0:
            raise ConfigError(f"{where}: jaw_mm must be > 0")
    return step


@dataclass
class Procedure:
    name: str
    steps: list = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: ProcedureConfig) -> "Procedure":
        steps = [parse_step(s, i) for i, s in enumerate(cfg.steps)]
        if not steps:
            raise ConfigError(f"procedure '{cfg.name}' has no steps")
        tools = set()
        for i, s in enumerate(steps):  # tools must be grasped before they retract or release
            if s.action == "grasp":
                tools.add(s.tool)
            elif s.action in ("retract", "release") and s.tool not in tools:
                raise ConfigError(f"step {i + 1} ({s.action}): tool '{s.tool}' holds nothing (grasp first)")
            if s.action == "release":
                tools.discard(s.tool)
        return cls(cfg.name, steps)

    @property
    def resections(self) -> list:
        return [s for s in self.steps if s.action == "resect"]

    def require_resection(self) -> "Procedure":
        """A rehearsal reports on a resection: ConfigError if the procedure has none."""
        if not self.resections:
            raise ConfigError(f"procedure '{self.name}' has no resect step (a rehearsal reports a resection)")
        return self

    def save(self, path: str | Path) -> Path:
        return write_json(path, {"name": self.name, "steps": [asdict(s) for s in self.steps]})

    @classmethod
    def load(cls, path: str | Path) -> "Procedure":
        """A procedure file: YAML (as in configs/procedure/) or the JSON ``save`` writes."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such procedure file: {path}")
        try:
            data = yaml.safe_load(path.read_text())  # JSON is YAML
        except yaml.YAMLError as exc:
            raise InputError(f"{path.name}: not a procedure file ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict) or "steps" not in data:
            raise InputError(f"{path.name}: a procedure file needs 'name' and 'steps'")
        return cls.from_config(ProcedureConfig(name=str(data.get("name", path.stem)), steps=list(data["steps"])))

    def check_targets(self, mesh: TetMesh):
        """Fail early (before any solve) if a step's target is not a region of the mesh."""
        present = {mesh.table.name_of(i) for i in np.unique(mesh.labels)}
        for step in self.steps:
            if step.action in ("resect", "clip") and step.target not in present:
                kind = "resection" if step.action == "resect" else "clip"
                raise LabelError(f"{kind} target '{step.target}' is not in the mesh")
