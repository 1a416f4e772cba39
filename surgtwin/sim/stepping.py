"""Shared by the stepping solvers: step reports, state health checks, and the quasi-static stepper.

Every solver here has one signature, ``step(state_in, state_out, control, dt) -> StepReport`` (the
caller may pass the same State as in and out). A step moves the Control's prescribed nodes and tools
from where they are to their targets. When a step fails (no convergence, non-finite positions, or more
inverted elements than it started with) it is cut back: restarted from its start with a smaller
increment, up to ``max_cutbacks`` times, then a SolverError says why.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import warp as wp

from kernels import integrate as ki

from ..errors import SolverError
from .control import Control
from .model import Model, State
from .static import StaticSolver
from .terms import Term


@dataclass
class StepReport:
    """What a step did: increments (sub-steps) taken, cut-backs, Newton/CG iterations, inverted elements."""

    increments: int
    cutbacks: int
    newton_iterations: int = 0
    cg_iterations: int = 0
    inverted: int = 0
    relative_residual: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def element_health(model: Model, x: wp.array, j_min: float = 0.0) -> tuple[int, int]:
    """(elements with J <= j_min, elements with non-finite J) at positions x (one host sync)."""
    bad = wp.zeros(2, dtype=wp.int32, device=model.device)
    wp.launch(ki.check_elements, dim=len(model.spec.tets), inputs=[model.elements, x, float(j_min), bad],
              device=model.device)
    inv, nan = (int(v) for v in bad.numpy())
    return inv, nan


def ensure_velocity(state: State) -> wp.array:
    """The state's velocities [m/s], allocated as zeros if it has none."""
    if state.v is None:
        state.v = wp.zeros_like(state.x)
    return state.v


def kinetic_energy(model: Model, state: State, mass: wp.array | None = None) -> float:
    """sum m/2 |v|^2 [J] (lumped mass; 0 without velocities)."""
    if state.v is None:
        return 0.0
    e = wp.zeros(1, dtype=wp.float64, device=model.device)
    wp.launch(ki.eval_kinetic_energy, dim=model.node_count, inputs=[state.v, model.mass if mass is None else mass, e],
              device=model.device)
    return float(e.numpy()[0])


def begin_terms(terms: list[Term], x: wp.array) -> None:
    for term in terms:
        getattr(term, "begin_step", lambda _x: None)(x)


def has_friction(terms: list[Term]) -> bool:
    return any(getattr(t, "mu", 0.0) > 0.0 for t in terms)


class QuasiStaticSolver:
    """Quasi-static steps: equilibrium at the Control's targets, reached in load increments.

    Each increment moves prescribed nodes and tools a fraction of the way and solves with the
    StaticSolver (Newton + PCG); with friction, ``friction_passes`` extra solves follow anchor updates.
    A failed increment is halved (cut-back). ``dt`` is accepted for the common signature and ignored.
    """

    def __init__(self, model: Model, *, extra_terms: list[Term] = (), increments: int = 1,
                 max_cutbacks: int = 6, friction_passes: int = 2, **static_kw):
        self.model = model
        self.static = StaticSolver(model, extra_terms=extra_terms, **static_kw)
        self.terms = self.static.terms
        self.increments, self.max_cutbacks = max(1, int(increments)), int(max_cutbacks)
        self.friction_passes = int(friction_passes) if has_friction(self.terms) else 0
        self._save = wp.zeros(model.node_count, dtype=wp.vec3d, device=model.device)

    def _solve(self, state: State, inverted_before: int):
        newton = cg = 0
        rep = None
        for _ in range(1 + self.friction_passes):
            begin_terms(self.terms, state.x)
            try:
                rep = self.static.solve(state)
            except SolverError as err:
                return False, str(err), newton, cg, rep
            newton, cg = newton + rep.newton_iterations, cg + rep.cg_iterations
            if not rep.converged:
                return False, (f"Newton stopped at relative residual {rep.relative_residual:.2e} "
                               f"after {rep.newton_iterations} iterations"), newton, cg, rep
        inv, nan = element_health(self.model, state.x)
        if nan:
            return False, f"{nan} element(s) with non-finite positions", newton, cg, rep
        if inv > inverted_before:
            return False, f"{inv} inverted element(s) (had {inverted_before})", newton, cg, rep
        return True, "", newton, cg, rep

    def step(self, state_in: State, state_out: State, control: Control | None = None, dt=None) -> StepReport:
        x = state_out.x
        if state_out is not state_in:
            wp.copy(x, state_in.x)
        inverted_before, _ = element_health(self.model, x)
        if control is not None:
            control.begin(x)
        done, inc, cuts, n_inc, newton, cg, rep = 0.0, 1.0 / self.increments, 0, 0, 0, 0, None
        while done < 1.0 - 1e-12:
            s = min(1.0, done + inc)
            wp.copy(self._save, x)
            if control is not None:
                control.advance(x, s)
            ok, why, nw, ncg, rep = self._solve(state_out, inverted_before)
            newton, cg = newton + nw, cg + ncg
            if ok:
                done, n_inc = s, n_inc + 1
                continue
            wp.copy(x, self._save)
            if control is not None:
                control.advance(x, done)
            cuts += 1
            if cuts > self.max_cutbacks:
                raise SolverError(f"quasi-static step failed at {100 * s:.1f} % of the load after {cuts - 1} "
                                  f"cut-backs: {why}")
            inc *= 0.5
        inv, _ = element_health(self.model, x)
        return StepReport(n_inc, cuts, newton, cg, inv, rep.relative_residual if rep else 0.0)
