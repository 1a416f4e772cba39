"""An organ being operated on: one method per surgical action, each a topology or tool change followed
by a quasi-static re-equilibration.

    op = Surgery(spec, x, table=mesh.table)               # x: pre-op equilibrium [m]
    op.incise([[x0, y0, z0], [x1, y1, z1]], depth_mm=15)   # the wound opens under tissue tension
    op.grasp("grasper", at_mm=[...], radius_mm=6)
    op.retract("grasper", [[...]])                          # -> force on the tool at each increment
    op.resect(ResectionStep(target="liver_tumor", margin_mm=10))
    op.clip("portal_vein_and_splenic_vein", at_mm=[...])
    op.press("probe", [[...], [...]], radius_mm=5)          # rigid probe in, force readout, lifted off

Incisions and grasps act where the tissue is now (current configuration, mm); resections are planned
on the labels in the rest configuration. Every step appends a ``StepRecord`` to ``op.log`` and, with a
``recorder`` (``surgtwin.recording``), writes the state (and the topology after each cut).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .cutting import MM, TopologyChange, apply_incision, total_volume
from .errors import ConfigError, LabelError, SolverError
from .mesh import TetMesh, boundary_faces
from .sim import ModelSpec, StaticSolver
from .sim.tools import ToolSprings


@dataclass
class Tool:
    """A grasping tool: held nodes, where they were held [m], spring stiffness [N/m], tip offset [m]."""

    name: str
    nodes: np.ndarray
    attach: np.ndarray
    stiffness: float
    tip_mm: np.ndarray
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class StepRecord:
    index: int
    action: str
    detail: dict
    seconds: float
    files: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"index": self.index, "action": self.action, "seconds": round(self.seconds, 4),
                "files": self.files, **self.detail}


class Surgery:
    """ModelSpec + positions [m] + tools + clips; ``carried`` nodal arrays follow every topology change."""

    def __init__(self, spec: ModelSpec, positions: np.ndarray | None = None, *, table=None,
                 device: str = "cpu", solver_options: dict | None = None, recorder=None,
                 carried: dict | None = None):
        self.spec = spec
        self.x = np.array(spec.points if positions is None else positions, dtype=np.float64)
        self.table = table
        self.device = device
        self.solver_options = dict(solver_options or {})
        self.recorder = recorder
        self.carried = dict(carried or {})
        self.tools: dict[str, Tool] = {}
        self.clipped = np.zeros(len(spec.tets), bool)
        self.clips: list[dict] = []
        self.log: list[StepRecord] = []
        self.changes: list[TopologyChange] = []
        self.volume_m3 = total_volume(spec)
        self.twins = np.zeros((0, 2), np.int64)   # (copy, original) node pairs made by incisions
        self.last_report = None
        self._build()

    # ------------------------------------------------------------------ model, solve, readout
    def _build(self):
        self.model = self.spec.finalize(self.device)
        self.terms = {name: ToolSprings(self.model, t.nodes, t.stiffness, t.attach) for name, t in self.tools.items()}
        for name, term in self.terms.items():
            term.move_to(self.tools[name].offset)
        self.solver = StaticSolver(self.model, extra_terms=list(self.terms.values()), **self.solver_options)

    def solve(self):
        """Re-equilibrate in place; SolverError if it does not converge or leaves non-finite positions."""
        state = self.model.state(self.x)
        rep = self.solver.solve(state)
        x = state.positions()
        if not rep.converged or not np.isfinite(x).all():
            raise SolverError(f"no equilibrium after step {len(self.log) + 1}: relative residual "
                              f"{rep.relative_residual:.2e} after {rep.newton_iterations} Newton iterations")
        self.x = x
        self.last_report = rep
        return rep

    def tool_force(self, name: str) -> np.ndarray:
        """Force (3,) [N] of the tissue on tool ``name`` at the current state."""
        return self.terms[name].tool_force(self.x)

    def live_mesh(self) -> TetMesh:
        """The live elements in the rest configuration (mm) with their labels."""
        from .labels import LabelTable

        keep = self.spec.alive
        return TetMesh.from_arrays(self.spec.points / MM, self.spec.tets[keep], self.spec.region[keep],
                                   self.table or LabelTable.default())

    # ------------------------------------------------------------------ topology
    def apply(self, change: TopologyChange):
        """Adopt a cut: new spec and positions; carried arrays, tools and clips follow it."""
        src = change.node_src
        used = np.zeros(len(src), bool)
        used[change.spec.tets[change.spec.alive].ravel()] = True
        for tool in self.tools.values():
            held = np.full(len(self.spec.points), -1)
            held[tool.nodes] = np.arange(len(tool.nodes))
            copy = (src[:, 0] == src[:, 1]) & (held[src[:, 0]] >= 0) & used
            idx = np.flatnonzero(copy)
            tool.attach = tool.attach[held[src[idx, 0]]]
            tool.nodes = idx
        for k, v in self.carried.items():
            self.carried[k] = change.transfer_nodes(v)
        self.clipped = change.transfer_elements(self.clipped)
        self.spec, self.x = change.spec, change.positions
        if change.twin is not None and len(change.twin):   # old node numbers survive every change
            made = np.arange(len(src) - len(change.twin), len(src))
            self.twins = np.vstack([self.twins, np.stack([made, change.twin], 1)])
        self.changes.append(change)
        self._build()

    def wound_opening_mm(self) -> float:
        """Largest distance [mm] between a wound node and its twin on the other lip (live nodes only)."""
        used = np.zeros(len(self.x), bool)
        used[self.spec.tets[self.spec.alive].ravel()] = True
        t = self.twins[used[self.twins].all(1)]
        return float(np.linalg.norm(self.x[t[:, 0]] - self.x[t[:, 1]], axis=1).max() / MM) if len(t) else 0.0

    def _record(self, action: str, detail: dict, t0: float, *, topology: bool = False) -> StepRecord:
        if len(self.twins):
            detail["wound_opening_mm"] = round(self.wound_opening_mm(), 3)
        rec = StepRecord(len(self.log) + 1, action, detail, time.perf_counter() - t0)
        if self.recorder is not None:
            rec.files.append(self.recorder.state(self, f"{rec.index:02d}_{action}"))
            if topology:
                rec.files.append(self.recorder.topology(self, f"{rec.index:02d}_{action}"))
        self.log.append(rec)
        return rec

    def _cut_detail(self, ch: TopologyChange) -> dict:
        vol = total_volume(self.spec)
        return {"split_elements": int(ch.split_elements), "duplicated_nodes": int(ch.duplicated_nodes),
                "topology_seconds": round(ch.seconds, 4), "elements": int(self.spec.alive.sum()),
                "nodes": int(len(self.spec.points)), "volume_error_mm3": abs(vol - self.volume_m3) / MM ** 3}

    # ------------------------------------------------------------------ actions
    def incise(self, path_mm, depth_mm: float, *, direction=None, above_mm=None) -> StepRecord:
        t0 = time.perf_counter()
        ch = apply_incision(self.spec, self.x, path_mm, depth_mm, direction=direction, above_mm=above_mm)
        if ch.duplicated_nodes == 0:
            raise ConfigError(f"incision along {np.round(np.asarray(path_mm), 1).tolist()} mm to {depth_mm} mm "
                              "cuts no tissue (is the path on the organ surface?)")
        self.apply(ch)
        detail = self._cut_detail(ch)
        rep = self.solve()
        detail.update({"wound_faces": int(len(ch.cut_faces)), "newton_iterations": rep.newton_iterations})
        return self._record("incision", detail, t0, topology=True)

    def grasp(self, name: str, at_mm, *, radius_mm: float = 6.0, stiffness_n_per_mm: float = 0.5) -> StepRecord:
        t0 = time.perf_counter()
        at = np.asarray(at_mm, float).reshape(3)
        surf = np.unique(boundary_faces(self.spec.tets[self.spec.alive]))
        dist = np.linalg.norm(self.x[surf] / MM - at, axis=1)
        nodes = surf[dist <= radius_mm]
        if len(nodes) == 0:
            raise ConfigError(f"grasp at {at.round(1).tolist()} mm holds no tissue: the nearest surface node is "
                              f"{dist.min():.1f} mm away (radius {radius_mm} mm)")
        self.tools[name] = Tool(name, nodes, self.x[nodes].copy(), stiffness_n_per_mm / MM, at)
        self._build()
        return self._record("grasp", {"tool": name, "held_nodes": int(len(nodes)), "tool_force_n": [0.0, 0.0, 0.0]}, t0)

    def retract(self, name: str, path_mm, *, step_mm: float = 1.0, record_every: int = 0) -> StepRecord:
        """Move the tool tip through ``path_mm`` waypoints in increments of at most ``step_mm``."""
        t0 = time.perf_counter()
        if name not in self.tools:
            raise ConfigError(f"tool '{name}' holds nothing (grasp first)")
        tool = self.tools[name]
        start = tool.tip_mm + tool.offset / MM
        way = np.vstack([start, np.asarray(path_mm, float).reshape(-1, 3)])
        forces, files, inc = [], [], 0
        for a, b in zip(way[:-1], way[1:]):
            n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_mm)))
            for i in range(1, n + 1):
                tool.offset = ((a + (b - a) * i / n) - tool.tip_mm) * MM
                self.terms[name].move_to(tool.offset)
                self.solve()
                inc += 1
                forces.append(self.tool_force(name))
                if self.recorder is not None and record_every and inc % record_every == 0:
                    files.append(self.recorder.state(self, f"{len(self.log) + 1:02d}_retract_{inc:03d}"))
        f = np.array(forces)
        rec = self._record("retract", {"tool": name, "increments": inc, "tool_force_n": f[-1].round(4).tolist(),
                                       "max_tool_force_n": float(np.linalg.norm(f, axis=1).max()),
                                       "force_history_n": np.linalg.norm(f, axis=1).round(4).tolist()}, t0)
        rec.files = files + rec.files
        return rec

    def release(self, name: str, *, step_mm: float = 2.0) -> StepRecord:
        """Ease the tool back to where it grasped (increments of at most ``step_mm``), then let go."""
        t0 = time.perf_counter()
        if name not in self.tools:
            raise ConfigError(f"tool '{name}' holds nothing (grasp first)")
        tool = self.tools[name]
        force = self.tool_force(name)
        start = tool.offset.copy()
        n = max(1, int(np.ceil(np.linalg.norm(start) / MM / step_mm)))
        for i in range(1, n + 1):
            tool.offset = start * (1.0 - i / n)
            self.terms[name].move_to(tool.offset)
            self.solve()
        del self.tools[name]
        self._build()
        self.solve()
        return self._record("release", {"tool": name, "tool_force_before_n": force.round(4).tolist(),
                                        "increments": n}, t0)

    def press(self, name: str, path_mm, *, radius_mm: float = 5.0, step_mm: float = 0.5,
              friction: float = 0.0) -> StepRecord:
        """Push a rigid spherical probe (contact, ``sim.ToolContact``) along ``path_mm`` (probe centre,
        current configuration) in increments of at most ``step_mm``; report the force on the probe at each
        increment, then lift it off (the tissue settles back)."""
        from .sim import Control, Sphere, ToolContact

        t0 = time.perf_counter()
        way = np.asarray(path_mm, float).reshape(-1, 3)
        control = Control(self.model)
        probe = control.add_tool(Sphere(radius_mm * MM), way[0] * MM)
        contact = ToolContact(self.model, control, probe, friction=friction)
        solver = StaticSolver(self.model, extra_terms=list(self.terms.values()) + [contact], **self.solver_options)
        state = self.model.state(self.x)
        if contact.contact_count(state.x):
            raise ConfigError(f"press '{name}': the probe starts inside the tissue at {way[0].round(1).tolist()} mm "
                              "(start the path clear of the surface)")
        forces = []
        for a, b in zip(way[:-1], way[1:]):
            n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_mm)))
            for i in range(1, n + 1):
                control.place_tool(probe, (a + (b - a) * i / n) * MM)
                contact.begin_step(state.x)
                rep = solver.solve(state)
                if not rep.converged or not np.isfinite(state.positions()).all():
                    raise SolverError(f"press '{name}': no equilibrium at increment {len(forces) + 1} "
                                      f"(relative residual {rep.relative_residual:.2e})")
                forces.append(-contact.force(state.x))         # the tissue's push on the probe
        self.x = state.positions()
        touching = contact.contact_count(state.x)
        f = np.array(forces)
        detail = {"tool": name, "increments": len(forces), "tool_force_n": f[-1].round(5).tolist(),
                  "max_tool_force_n": float(np.linalg.norm(f, axis=1).max()), "contact_nodes": int(touching),
                  "force_history_n": np.linalg.norm(f, axis=1).round(5).tolist()}
        rec = self._record("press", detail, t0)
        self.solve()                                           # probe lifted off
        return rec

    def settle(self) -> StepRecord:
        t0 = time.perf_counter()
        rep = self.solve()
        return self._record("settle", {"newton_iterations": rep.newton_iterations,
                                       "relative_residual": float(rep.relative_residual)}, t0)

    def resect(self, step) -> StepRecord:
        """Resect (``ResectionStep``) on the labels, rest configuration; the remnant re-equilibrates."""
        from .resection import plan_resection

        t0 = time.perf_counter()
        mesh = self.full_mesh()
        res = plan_resection(mesh, step, ~self.spec.alive)
        ch = res.change
        ch.spec = ch.apply_to_spec(self.spec)
        ch.positions = ch.transfer_nodes(self.x)
        ch.seconds = time.perf_counter() - t0
        self.apply(ch)
        self.resection = res
        detail = self._cut_detail(ch)
        detail.update({"target": step.target, "margin_mm": step.margin_mm, "mode": step.mode,
                       "removed_elements": int((~self.spec.alive).sum())})
        if self.tools:
            detail["tool_force_n"] = {k: self.tool_force(k).round(4).tolist() for k in self.tools}
        rep = self.solve()
        detail["newton_iterations"] = rep.newton_iterations
        return self._record("resect", detail, t0, topology=True)

    def clip(self, target: str, at_mm, *, jaw_mm: float = 5.0) -> StepRecord:
        """Mark the live ``target`` vessel elements within ``jaw_mm`` of ``at_mm`` (current configuration) clipped."""
        t0 = time.perf_counter()
        if self.table is None or target not in self.table:
            raise LabelError(f"clip target '{target}' is not a known label")
        vid = self.table.id_of(target)
        vessel = np.flatnonzero(self.spec.alive & (self.spec.region == vid))
        if len(vessel) == 0:
            raise LabelError(f"clip target '{target}' is not in the mesh")
        at = np.asarray(at_mm, float).reshape(3)
        cen = self.x[self.spec.tets[vessel]].mean(1) / MM
        dist = np.linalg.norm(cen - at, axis=1)
        hit = vessel[dist <= jaw_mm]
        if len(hit) == 0:
            raise ConfigError(f"clip at {at.round(1).tolist()} mm misses '{target}': nearest vessel element "
                              f"{dist.min():.1f} mm away (jaw {jaw_mm} mm)")
        self.clipped[hit] = True
        seg = {"target": target, "at_mm": at.tolist(), "elements": int(len(hit)),
               "centre_mm": cen[dist <= jaw_mm].mean(0).round(2).tolist()}
        self.clips.append(seg)
        return self._record("clip", seg, t0)

    def full_mesh(self) -> TetMesh:
        """All elements (live and removed) in the rest configuration (mm)."""
        from .labels import LabelTable

        return TetMesh.from_arrays(self.spec.points / MM, self.spec.tets, self.spec.region,
                                   self.table or LabelTable.default())

    def run(self, procedure, progress=None):
        """Apply every step of a ``Procedure`` in order."""
        for step in procedure.steps:
            a = step.action
            if a == "incision":
                self.incise(step.path_mm, step.depth_mm, direction=step.direction, above_mm=step.above_mm)
            elif a == "grasp":
                self.grasp(step.tool, step.at_mm, radius_mm=step.radius_mm, stiffness_n_per_mm=step.stiffness_n_per_mm)
            elif a == "retract":
                self.retract(step.tool, step.path_mm, step_mm=step.step_mm, record_every=int(step.record_every))
            elif a == "release":
                self.release(step.tool)
            elif a == "resect":
                self.resect(step)
            elif a == "clip":
                self.clip(step.target, step.at_mm, jaw_mm=step.jaw_mm)
            elif a == "settle":
                self.settle()
            elif a == "press":
                self.press(step.tool, step.path_mm, radius_mm=step.radius_mm, step_mm=step.step_mm,
                           friction=step.friction)
            if progress:
                progress(a)
        return self.log
