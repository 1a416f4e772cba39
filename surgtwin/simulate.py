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
from .errors import SolverError
from .fileio import atomic_path
from .mesh import TetMesh
from .procedure import Procedure, Resection, plan_resection
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


def rehearse(mesh: TetMesh, labelmap: LabelMap | None, cfg: RunConfig, progress=None) -> Rehearsal:
    """Solve the pre-op equilibrium, apply the procedure's resection, re-equilibrate the remnant."""
    tick = time.perf_counter
    timings = {}
    procedure = Procedure.from_config(cfg.procedure)
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
    pre_strain, _ = element_strain(model, state)
    x_pre = state.positions()
    if progress:
        progress("pre-op equilibrium")

    removed = np.zeros(len(mesh.tets), bool)
    for step in procedure.steps:
        res = plan_resection(mesh, step, removed)
        removed = res.removed
    t = tick()
    post_spec = spec.with_alive(~removed)
    post_model, post_solver = make_solver(post_spec, cfg)
    post_state = post_model.state(x_pre)
    post_rep = post_solver.solve(post_state)
    if not post_rep.converged:
        raise SolverError(f"remnant did not re-equilibrate: relative residual {post_rep.relative_residual:.2e} "
                          f"after {post_rep.newton_iterations} Newton iterations")
    timings["postop_solve"] = tick() - t
    log.info("post-op equilibrium: %d Newton / %d CG iterations, relative residual %.2e",
             post_rep.newton_iterations, post_rep.cg_iterations, post_rep.relative_residual)
    post_strain, post_jac = element_strain(post_model, post_state)
    if progress:
        progress("resection re-equilibrated")
    return Rehearsal(mesh, post_spec, summary, procedure, res, x_pre / MM, post_state.positions() / MM, pre_strain,
                     post_strain, post_jac, pre_rep, post_rep, timings)
