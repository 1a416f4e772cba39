"""The rehearsal behind the viewer, without Qt: an organ being operated on (``surgtwin.surgery.Surgery``:
real incisions with node duplication, split-element resections, grasp and retract), the planned and
applied steps, undo, and a recording of every solver iteration (for playback and movies).

    s = RehearsalSession.open("runs/run-…")        # a run folder, a case folder, or None (phantom)
    s.add_step(incision_step(path, depth_mm=8))
    s.run_next(on_progress=lambda p: print(p.iteration, p.relative_residual))

A step that cuts changes the topology: ``mesh``, ``alive``, ``rest_mm`` and ``positions_mm`` then
have more nodes/elements; each frame carries the ``Topology`` its arrays index.

Thread use: a worker thread calls ``run_next``/``equilibrate``; the UI thread reads only the frames
handed to ``on_progress`` (``Progress.frame``) until the call returns.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..biomech import MM, build_model_spec
from ..config import RunConfig
from ..errors import SolverError
from ..mesh import TetMesh
from ..procedure import Procedure, parse_step
from ..sim.diagnostics import element_stress
from ..surgery import Surgery
from .recording import Frame, Recording, Topology
from .steps import describe

log = logging.getLogger("surgtwin")


@dataclass
class Progress:
    """One Newton iteration of a solve in progress."""

    step: str                    # what is being solved ("equilibrium", a step description)
    iteration: int
    relative_residual: float
    converged: bool
    iterations_per_s: float
    frame: Frame
    tool_forces_n: dict = field(default_factory=dict)   # tool -> |force| [N] of the tissue on it


class Stopped(Exception):
    """The user stopped a step: the session went back to the state before it."""


class LiveSurgery(Surgery):
    """A Surgery whose re-equilibrations run one Newton iteration at a time (its solver is built with
    ``newton_max_iter=1``) and report each to ``on_iteration(state, iteration, report)``."""

    def __init__(self, *args, max_iter: int = 50, **kwargs):
        self.max_iter = max_iter
        self.on_iteration = lambda state, it, rep: None
        self.should_stop = lambda: False
        super().__init__(*args, **kwargs)

    def solve(self):
        state = self.model.state(self.x)
        total = 0
        for it in range(1, self.max_iter + 1):
            rep = self.solver.solve(state)
            total += rep.newton_iterations
            self.on_iteration(state, it, rep)
            if rep.converged:
                break
            if self.should_stop():
                raise Stopped()
        x = state.positions()
        if not rep.converged or not np.isfinite(x).all():
            raise SolverError(f"no equilibrium after step {len(self.log) + 1}: relative residual "
                              f"{rep.relative_residual:.2e} after {total} Newton iterations")
        self.x = x
        self.last_report = replace(rep, newton_iterations=total)
        return self.last_report


_SURGERY_STATE = ("spec", "x", "tools", "clipped", "clips", "log", "changes", "twins", "carried")


@dataclass
class _Snapshot:
    surgery: dict
    resection: object
    topology: Topology
    positions_mm: np.ndarray
    strain: np.ndarray
    stress_pa: np.ndarray | None
    applied: list
    pending: list


@dataclass
class RehearsalSession:
    mesh: TetMesh                             # the organ as opened; then the current topology (all elements)
    cfg: RunConfig
    labels: object = None                     # LabelMap (fixed boundary, vessel look-ups)
    volume: object = None                     # Volume (CT slice view)
    surfaces: dict = field(default_factory=dict)   # name -> pv.PolyData (context structures)
    report: object = None                     # RiskReport of the run folder, if any
    name: str = "rehearsal"
    positions_mm: np.ndarray | None = None    # (n, 3) current state
    equilibrated: bool = False

    def __post_init__(self):
        if self.positions_mm is None:
            self.positions_mm = self.mesh.points.copy()
        self._op: LiveSurgery | None = None
        self.topology = Topology(self.mesh, self.positions_mm.copy())
        self.strain = np.zeros(len(self.mesh.tets))
        self.stress_pa = np.zeros(len(self.mesh.tets))     # von Mises [Pa] per element (None: not known)
        self.applied: list[dict] = []
        self.pending: list[dict] = []
        self.resection = None
        self.recording = Recording()
        self.recording.append(self.frame("start"))
        self._undo: list[_Snapshot] = []
        self._mesh0 = self.mesh               # the organ as opened
        self._base_spec = None                # its ModelSpec

    # -- opening --
    @classmethod
    def open(cls, target: str | Path | None, cfg: RunConfig | None = None) -> "RehearsalSession":
        """A run folder (mesh/volume.vtu), a case folder (labels.nii.gz [+ ct.nii.gz]) or None: the phantom."""
        from .sources import load_target

        return load_target(cls, target, cfg)

    def set_start(self, positions_mm: np.ndarray, strain: np.ndarray | None = None, label: str = "start",
                  stress_pa: np.ndarray | None = None):
        """The state the rehearsal starts from (a run's pre-op equilibrium, with its element strain and
        von Mises stress [Pa] where known); only before any step."""
        self.positions_mm = np.asarray(positions_mm, float).copy()
        self.topology.start_mm = self.positions_mm.copy()
        if strain is not None:
            self.strain = np.asarray(strain, float).copy()
        self.stress_pa = None if stress_pa is None else np.asarray(stress_pa, float).copy()
        self.recording.append(self.frame(label))

    # -- the current state --
    @property
    def alive(self) -> np.ndarray:
        """(m,) live elements of the current topology."""
        return self._op.spec.alive if self._op is not None else np.ones(len(self.mesh.tets), bool)

    @property
    def rest_mm(self) -> np.ndarray:
        return self.mesh.points

    @property
    def surgery(self) -> LiveSurgery:
        """The Surgery the steps run through (built on first use)."""
        if self._op is None:
            s = self.cfg.solver
            self._op = LiveSurgery(self.model_spec(), self.positions_mm * MM, table=self.mesh.table, device=s.device,
                                   carried={"start": self.topology.start_mm}, max_iter=s.newton_max_iter,
                                   solver_options=dict(tol=s.tol, newton_max_iter=1, cg_max_iter=s.cg_max_iter,
                                                       cg_tol=s.cg_tol))
        return self._op

    def frame(self, label: str, residual: float = float("nan")) -> Frame:
        return Frame(self.positions_mm.copy(), self.alive.copy(), self.strain.copy(), label, residual, self.topology,
                     _copy(self.stress_pa))

    def stress_of(self, frame: Frame) -> np.ndarray | None:
        """Von Mises stress [Pa] per element of ``frame``: recorded with it, or computed now (and kept
        with the frame, never with the session's state, which the worker owns) for a state on the mesh as
        opened (e.g. a recording saved without stress); None otherwise."""
        if frame.stress_pa is None and frame.topology is not None and frame.topology.mesh is self._mesh0:
            from ..risk import element_diagnostics

            frame.stress_pa, _ = element_diagnostics(self.model_spec().with_alive(frame.alive), frame.positions_mm,
                                                     self.cfg.solver.device)
        return frame.stress_pa

    # -- the plan --
    def add_step(self, step: dict):
        self.pending.append(dict(step))

    def remove_pending(self, index: int):
        del self.pending[index]

    @property
    def plan(self) -> list[dict]:
        return self.applied + self.pending

    def set_material(self, tissue: str, youngs_kpa: float | None = None, poisson: float | None = None):
        """Override a tissue's E [kPa] / nu; applies from the next solve (cuts made so far are kept)."""
        entry = dict(self.cfg.material.tissues.get(tissue, {}))
        if youngs_kpa is not None:
            entry["youngs_kpa"] = float(youngs_kpa)
        if poisson is not None:
            entry["poisson"] = float(poisson)
        self.cfg.material.tissues[tissue] = entry
        self._base_spec = None
        if self._op is not None:
            spec = self.model_spec()
            for change in self._op.changes:
                spec = change.apply_to_spec(spec)
            self._op.spec = spec
            self._op._build()

    def materials(self) -> dict:
        """tissue -> {youngs_kpa, poisson, density_kg_m3} for the regions of the mesh (overrides applied)."""
        from ..biomech import region_materials

        return region_materials(self.topology.mesh, self.cfg.material)[3]

    # -- solving (run these in a worker thread) --
    def model_spec(self):
        """The ModelSpec (materials, fixed nodes, supports) of the organ as opened; built once — its
        distance map is the slow part — and again only after a material edit."""
        if self._base_spec is None:
            self._base_spec, _ = build_model_spec(self._mesh0, self.labels, self.cfg.material, self.cfg.boundary)
        return self._base_spec

    def _watch(self, label: str, on_progress, should_stop):
        """Route the surgery's Newton iterations to ``on_progress`` as recorded frames."""
        op = self.surgery
        t0 = time.perf_counter()
        count = [0]

        def on_iteration(state, it, rep):
            count[0] += 1
            if len(op.x) != len(self.topology.mesh.points):
                self._adopt_topology()
            self.positions_mm = state.positions() / MM
            self.stress_pa, self.strain = element_stress(op.model, state)
            frame = self.frame(label, rep.relative_residual)
            self.recording.append(frame)
            x = state.positions()
            forces = {name: float(np.linalg.norm(op.terms[name].tool_force(x))) for name in op.tools if name in op.terms}
            on_progress(Progress(label, it, rep.relative_residual, rep.converged,
                                 count[0] / max(time.perf_counter() - t0, 1e-9), frame, forces))

        op.on_iteration, op.should_stop = on_iteration, should_stop

    def _adopt_topology(self):
        """The surgery cut the mesh: the session's mesh, rest shape and start state follow."""
        op = self.surgery
        self.mesh = op.full_mesh()
        self.topology = Topology(self.mesh, op.carried["start"])

    def equilibrate(self, on_progress=lambda p: None, should_stop=lambda: False):
        """The pre-operative equilibrium under gravity (load ramped), from the rest shape."""
        op = self.surgery
        self._watch("equilibrium", on_progress, should_stop)
        n = max(1, self.cfg.solver.load_steps)
        state = op.model.state(op.spec.points)
        for k in range(n):
            for it in range(1, self.cfg.solver.newton_max_iter + 1):
                rep = op.solver.solve(state, gravity_scale=(k + 1) / n)
                op.on_iteration(state, it, rep)
                if rep.converged or should_stop():
                    break
            if should_stop():
                break
            if not rep.converged:
                raise SolverError(f"equilibrium: no equilibrium (relative residual {rep.relative_residual:.2e} "
                                  f"after {self.cfg.solver.newton_max_iter} Newton iterations)")
        op.x = state.positions()
        self.positions_mm = op.x / MM
        self.equilibrated = True

    def run_next(self, on_progress=lambda p: None, should_stop=lambda: False) -> dict | None:
        """Apply the first pending step through the surgery and re-equilibrate; the state is committed
        when it converges. On an error or a stop the session returns to the state before the step
        (it stays pending) and the error (or ``Stopped``) is raised. Returns the step's record."""
        if not self.pending:
            return None
        step = self.pending[0]
        parsed = parse_step(step, len(self.applied))
        op = self.surgery
        op.x = self.positions_mm * MM
        snap = self._snapshot()
        self._watch(describe(step), on_progress, should_stop)
        try:
            op.run(Procedure(self.name, [parsed]))
        except BaseException:
            self._restore(snap)
            raise
        if len(op.x) != len(self.topology.mesh.points):
            self._adopt_topology()
        self.positions_mm = op.x / MM
        self.resection = getattr(op, "resection", None)
        self._undo.append(snap)
        self.applied.append(self.pending.pop(0))
        return op.log[-1].to_dict()

    def _snapshot(self) -> _Snapshot:
        op = self.surgery
        state = {k: copy.deepcopy(getattr(op, k)) if k in ("tools", "clips", "log", "carried") else
                 (list(getattr(op, k)) if k == "changes" else getattr(op, k)) for k in _SURGERY_STATE}
        state["clipped"] = op.clipped.copy()
        return _Snapshot(state, self.resection, self.topology, self.positions_mm.copy(), self.strain.copy(),
                         _copy(self.stress_pa), list(self.applied), list(self.pending))

    def _restore(self, s: _Snapshot):
        op = self.surgery
        for k, v in s.surgery.items():
            setattr(op, k, v)
        op.resection = s.resection
        op._build()
        self.resection, self.topology, self.mesh = s.resection, s.topology, s.topology.mesh
        self.positions_mm, self.strain, self.stress_pa = s.positions_mm, s.strain, s.stress_pa
        self.applied, self.pending = s.applied, s.pending

    def undo(self) -> bool:
        """Return to the state before the last applied step (the step goes back to the pending list)."""
        if not self._undo:
            return False
        self._restore(self._undo.pop())
        self.recording.append(self.frame("undo"))
        return True

    # -- read-outs --
    def tool_forces(self) -> dict:
        """tool -> force (3,) [N] of the tissue on each tool holding tissue now."""
        op = self._op
        return {} if op is None else {name: op.tool_force(name) for name in op.tools}

    def risk(self) -> dict:
        """Metrics and vessel crossings of the current resection (or of the run's report before any step)."""
        from dataclasses import asdict

        from ..risk import resection_metrics, vessel_crossings

        if self.resection is None:
            if self.report is not None:
                return {"metrics": self.report.metrics, "vessels": self.report.vessels, "source": "run report"}
            return {"metrics": {}, "vessels": [], "source": "no resection yet"}
        mesh = self.resection.mesh
        metrics = resection_metrics(mesh, self.resection, self.cfg.mesh.organ)
        vessels = [asdict(v) for v in vessel_crossings(mesh, self.resection, self.labels)]
        return {"metrics": metrics, "vessels": vessels, "source": "this rehearsal"}

    def region_nodes(self, names, alive_only: bool = True, mesh: TetMesh | None = None,
                     alive: np.ndarray | None = None) -> np.ndarray:
        """Nodes of the (alive) elements of the named regions (tumour, vessels) — for distance overlays;
        on ``mesh`` (default the current one) with its ``alive`` mask."""
        mesh = self.mesh if mesh is None else mesh
        alive = self.alive if alive is None else alive
        ids = [mesh.table.id_of(n) for n in names if n in mesh.table]
        sel = np.isin(mesh.labels, ids) & (alive if alive_only else True)
        return np.unique(mesh.tets[sel])


def _copy(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a.copy()
