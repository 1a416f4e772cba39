"""The rehearsal behind the viewer, without Qt: mesh, model, current state, planned and applied steps,
undo, and a recording of every solver iteration (for playback and movies).

    s = RehearsalSession.open("runs/run-…")        # a run folder, a case folder, or None (phantom)
    s.add_step(incision_step(path, depth=8))
    for progress in s.run_next():                  # one item per Newton iteration, state committed at the end
        print(progress.iteration, progress.relative_residual)

Thread use: a worker thread iterates ``run_next``/``equilibrate``; the UI thread reads only the frames
those yield (``Progress.frame``) until the generator is exhausted.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..biomech import MM, build_model_spec
from ..config import RunConfig
from ..errors import InputError, SolverError
from ..mesh import TetMesh
from ..sim import StaticSolver, element_strain
from .recording import Frame, Recording
from .steps import StepEffect, apply_step, describe

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


@dataclass
class _Snapshot:
    positions_mm: np.ndarray
    alive: np.ndarray
    applied: list
    pending: list
    resection: object


@dataclass
class RehearsalSession:
    mesh: TetMesh
    cfg: RunConfig
    labels: object = None                     # LabelMap (fixed boundary, vessel look-ups)
    volume: object = None                     # Volume (CT slice view)
    surfaces: dict = field(default_factory=dict)   # name -> pv.PolyData (context structures)
    report: object = None                     # RiskReport of the run folder, if any
    name: str = "rehearsal"
    positions_mm: np.ndarray | None = None    # (n, 3) current state
    equilibrated: bool = False

    def __post_init__(self):
        self.rest_mm = self.mesh.points
        if self.positions_mm is None:
            self.positions_mm = self.rest_mm.copy()
        self.alive = np.ones(len(self.mesh.tets), bool)
        self.strain = np.zeros(len(self.mesh.tets))
        self.applied: list[dict] = []
        self.pending: list[dict] = []
        self.resection = None
        self.recording = Recording()
        self.recording.append(Frame(self.positions_mm.copy(), self.alive.copy(), self.strain.copy(), "start"))
        self._undo: list[_Snapshot] = []
        self._spec = None

    # -- opening --
    @classmethod
    def open(cls, target: str | Path | None, cfg: RunConfig | None = None) -> "RehearsalSession":
        """A run folder (mesh/volume.vtu), a case folder (labels.nii.gz [+ ct.nii.gz]) or None: the phantom."""
        from .sources import load_target

        return load_target(cls, target, cfg)

    # -- the plan --
    def add_step(self, step: dict):
        self.pending.append(dict(step))

    def remove_pending(self, index: int):
        del self.pending[index]

    @property
    def plan(self) -> list[dict]:
        return self.applied + self.pending

    def set_material(self, tissue: str, youngs_kpa: float | None = None, poisson: float | None = None):
        """Override a tissue's E [kPa] / nu; applies from the next solve."""
        entry = dict(self.cfg.material.tissues.get(tissue, {}))
        if youngs_kpa is not None:
            entry["youngs_kpa"] = float(youngs_kpa)
        if poisson is not None:
            entry["poisson"] = float(poisson)
        self.cfg.material.tissues[tissue] = entry
        self._spec = None

    def materials(self) -> dict:
        """tissue -> {youngs_kpa, poisson, density_kg_m3} for the regions of the mesh (overrides applied)."""
        from ..biomech import region_materials

        return region_materials(self.mesh, self.cfg.material)[3]

    # -- solving (run these in a worker thread) --
    def model_spec(self):
        """The ModelSpec (materials, fixed nodes, supports) of the whole organ; built once — its distance
        map is the slow part — and again only after a material edit."""
        if self._spec is None:
            self._spec, _ = build_model_spec(self.mesh, self.labels, self.cfg.material, self.cfg.boundary)
        return self._spec

    def _solver(self, alive: np.ndarray):
        spec = self.model_spec().with_alive(alive)
        model = spec.finalize(self.cfg.solver.device)
        s = self.cfg.solver
        solver = StaticSolver(model, tol=s.tol, newton_max_iter=1, cg_max_iter=s.cg_max_iter, cg_tol=s.cg_tol)
        return model, solver

    def _iterate(self, label: str, alive: np.ndarray, start_mm: np.ndarray, gravity_scales=(1.0,),
                 should_stop=lambda: False):
        """Newton iterations one at a time (each yields a Progress); returns the final positions [mm]."""
        model, solver = self._solver(alive)
        state = model.state(start_mm * MM)
        t0, it = time.perf_counter(), 0
        for scale in gravity_scales:
            for _ in range(self.cfg.solver.newton_max_iter):
                rep = solver.solve(state, gravity_scale=scale)
                it += 1
                strain, _ = element_strain(model, state)
                frame = Frame(state.positions() / MM, alive.copy(), strain, label, rep.relative_residual)
                self.recording.append(frame)
                yield Progress(label, it, rep.relative_residual, rep.converged,
                               it / max(time.perf_counter() - t0, 1e-9), frame)
                if rep.converged or should_stop():
                    break
            if not rep.converged and not should_stop():
                raise SolverError(f"{label}: no equilibrium (relative residual {rep.relative_residual:.2e} "
                                  f"after {self.cfg.solver.newton_max_iter} Newton iterations)")
        self.strain = frame.strain
        return frame.positions_mm

    def equilibrate(self, should_stop=lambda: False):
        """The pre-operative equilibrium under gravity (load ramped), from the rest shape."""
        n = max(1, self.cfg.solver.load_steps)
        x = yield from self._iterate("equilibrium", self.alive, self.rest_mm, [(k + 1) / n for k in range(n)],
                                     should_stop)
        self.positions_mm = x
        self.equilibrated = True

    def run_next(self, should_stop=lambda: False):
        """Apply the first pending step and re-equilibrate; the state is committed when it converges."""
        if not self.pending:
            return
        step = self.pending[0]
        effect: StepEffect = apply_step(self.mesh, self.alive, step)
        if not effect.alive.any():
            raise InputError("this step removes the whole organ")
        snap = _Snapshot(self.positions_mm.copy(), self.alive.copy(), list(self.applied), list(self.pending),
                         self.resection)
        x = yield from self._iterate(describe(step), effect.alive, self.positions_mm, (1.0,), should_stop)
        self._undo.append(snap)
        self.positions_mm, self.alive = x, effect.alive
        if effect.resection is not None:
            self.resection = effect.resection
        self.applied.append(self.pending.pop(0))

    def undo(self) -> bool:
        """Return to the state before the last applied step (the step goes back to the pending list)."""
        if not self._undo:
            return False
        s = self._undo.pop()
        self.positions_mm, self.alive, self.applied, self.pending, self.resection = (
            s.positions_mm, s.alive, s.applied, s.pending, s.resection)
        self.recording.append(Frame(self.positions_mm.copy(), self.alive.copy(), self.strain.copy(), "undo"))
        return True

    # -- read-outs --
    def risk(self) -> dict:
        """Metrics and vessel crossings of the current resection (or of the run's report before any step)."""
        from dataclasses import asdict

        from ..risk import resection_metrics, vessel_crossings

        if self.resection is None:
            if self.report is not None:
                return {"metrics": self.report.metrics, "vessels": self.report.vessels, "source": "run report"}
            return {"metrics": {}, "vessels": [], "source": "no resection yet"}
        metrics = resection_metrics(self.mesh, self.resection, self.cfg.mesh.organ)
        vessels = [asdict(v) for v in vessel_crossings(self.mesh, self.resection, self.labels)]
        return {"metrics": metrics, "vessels": vessels, "source": "this rehearsal"}

    def region_nodes(self, names, alive_only: bool = True) -> np.ndarray:
        """Nodes of the (alive) elements of the named regions (tumour, vessels) — for distance overlays."""
        ids = [self.mesh.table.id_of(n) for n in names if n in self.mesh.table]
        sel = np.isin(self.mesh.labels, ids) & (self.alive if alive_only else True)
        return np.unique(self.mesh.tets[sel])
