"""Rehearse a procedure on an organ: pre-operative equilibrium, resection, re-equilibrated remnant.

Python API: ``rehearse(mesh, labelmap, cfg) -> Rehearsal``; ``Rehearsal.save(folder)`` writes the
model, the states (VTU with displacement and strain) and the resection surface.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvista as pv

from .biomech import MM, build_model_spec, save_model
from .config import RunConfig
from .fileio import atomic_path, write_json
from .mesh import TetMesh, boundary_faces
from .procedure import Procedure, Resection
from .sim import ModelSpec, SolveReport, StaticSolver, element_strain
from .volume import LabelMap

log = logging.getLogger("surgtwin")


@dataclass
class Rehearsal:
    mesh: TetMesh
    spec: ModelSpec
    model_summary: dict
    procedure: Procedure
    resection: Resection
    preop_mm: np.ndarray           # (n, 3) equilibrium before the resection
    postop_mm: np.ndarray          # (n, 3) equilibrium of the remnant (removed nodes keep pre-op positions)
    preop_strain: np.ndarray
    postop_strain: np.ndarray
    postop_jacobian: np.ndarray
    preop_report: SolveReport
    postop_report: SolveReport
    timings_s: dict
    log: list = None               # StepRecord.to_dict() of every step
    original_volume_mm3: float = 0.0

    @property
    def remnant_nodes(self) -> np.ndarray:
        return np.unique(self.mesh.tets[~self.resection.removed])

    def save(self, folder: str | Path) -> dict:
        """Write model.vtu/json, the States preop.vtu and postop.vtu (cell array ``alive`` marks the
        remnant; both load with ``biomech.load_state``), removed.vtu and cut_surface.vtp."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {"model": save_model(self.spec, folder / "model.vtu"),
                 "procedure": self.procedure.save(folder / "procedure.json")}
        rest = self.mesh.points
        pre = self._grid(self.preop_mm, rest, self.preop_strain)
        post = self._grid(self.postop_mm, rest, self.postop_strain)
        post.point_data["shift_mm"] = np.linalg.norm(self.postop_mm - self.preop_mm, axis=1)
        post.cell_data["volume_ratio"] = self.postop_jacobian
        keep = ~self.resection.removed
        pre.cell_data["alive"] = np.ones(len(keep), np.uint8)
        post.cell_data["alive"] = keep.astype(np.uint8)  # the post-op State: all nodes, removed cells dead
        files["preop"] = _save(pre, folder / "preop.vtu")
        files["postop"] = _save(post, folder / "postop.vtu")
        files["removed"] = _save(pre.extract_cells(np.flatnonzero(~keep)), folder / "removed.vtu")
        cut = self.resection.cut_faces
        surf = pv.PolyData(self.postop_mm, np.hstack([np.full((len(cut), 1), 3), cut]).ravel()).clean()
        files["cut_surface"] = _save(surf, folder / "cut_surface.vtp")
        if self.log is not None:
            files["steps"] = write_json(folder / "steps.json", {"procedure": self.procedure.name, "steps": self.log})
        if (folder / "procedure.pvd").is_file():
            files["recording"] = folder / "procedure.pvd"
        return {k: str(Path(v).name) for k, v in files.items()}

    def _grid(self, x_mm, rest, strain) -> pv.UnstructuredGrid:
        g = self.mesh.grid.copy()
        g.points = x_mm
        g.point_data["displacement_mm"] = x_mm - rest
        g.point_data["displacement_magnitude_mm"] = np.linalg.norm(x_mm - rest, axis=1)
        g.cell_data["max_principal_strain"] = strain
        return g


def _save(mesh, path: Path) -> Path:
    with atomic_path(path) as tmp:
        mesh.save(tmp)
    return path


def make_solver(spec: ModelSpec, cfg: RunConfig):
    model = spec.finalize(cfg.solver.device)
    s = cfg.solver
    return model, StaticSolver(model, tol=s.tol, newton_max_iter=s.newton_max_iter, cg_max_iter=s.cg_max_iter,
                               cg_tol=s.cg_tol)


def rehearse(mesh: TetMesh, labelmap: LabelMap | None, cfg: RunConfig, progress=None,
             record_dir: str | Path | None = None) -> Rehearsal:
    """Solve the pre-op equilibrium, then run the procedure's steps, each re-equilibrated."""
    from .recording import Recorder
    from .resection import _resection_surface
    from .surgery import Surgery

    tick = time.perf_counter
    timings = {}
    procedure = Procedure.from_config(cfg.procedure).require_resection()
    procedure.check_targets(mesh)
    spec, summary = build_model_spec(mesh, labelmap, cfg.material, cfg.boundary)
    log.info("model: %d tets, %d nodes, %d fixed, device %s", summary["tets"], summary["nodes"],
             summary["fixed_nodes"], cfg.solver.device)
    t = tick()
    model, solver = make_solver(spec, cfg)
    state = model.state()
    pre_rep = solver.solve_ramped(state, cfg.solver.load_steps)
    timings["preop_solve"] = tick() - t
    log.info("pre-op equilibrium: %d Newton / %d CG iterations, relative residual %.2e",
             pre_rep.newton_iterations, pre_rep.cg_iterations, pre_rep.relative_residual)
    x_pre = state.positions()
    if progress:
        progress("pre-op equilibrium")

    t = tick()
    s = cfg.solver
    recorder = Recorder(record_dir) if record_dir is not None else None
    op = Surgery(spec, x_pre, table=mesh.table, device=s.device, recorder=recorder, carried={"preop": x_pre},
                 solver_options=dict(tol=s.tol, newton_max_iter=s.newton_max_iter, cg_max_iter=s.cg_max_iter,
                                     cg_tol=s.cg_tol))
    if recorder is not None:
        recorder.state(op, "00_preop")
    op.run(procedure, progress=lambda a: log.info("step done: %s", a))
    timings["procedure"] = timings["postop_solve"] = tick() - t
    for rec in op.log:
        timings[f"step_{rec.index:02d}_{rec.action}"] = rec.seconds
    post_rep = op.last_report
    log.info("post-op equilibrium: %d Newton / %d CG iterations, relative residual %.2e",
             post_rep.newton_iterations, post_rep.cg_iterations, post_rep.relative_residual)
    final = op.full_mesh()
    last = procedure.resections[-1]
    tid = final.table.id_of(last.target)
    removed = ~op.spec.alive
    res = _resection_surface(final, removed, boundary_faces(final.tets[final.labels == tid]), op.resection.plane)
    res.mesh = final
    post_spec = op.spec
    post_model = op.model
    post_strain, post_jac = element_strain(post_model, op.model.state(op.x))
    pre_all = post_spec.with_alive(np.ones(len(post_spec.tets), bool)).finalize(s.device)
    pre_strain, _ = element_strain(pre_all, pre_all.state(op.carried["preop"]))
    if progress:
        progress("resection re-equilibrated")
    return Rehearsal(final, post_spec, summary, procedure, res, op.carried["preop"] / MM, op.x / MM, pre_strain,
                     post_strain, post_jac, pre_rep, post_rep, timings, [r.to_dict() for r in op.log],
                     float(np.abs(mesh.tet_volumes_mm3()).sum()))
