"""Dynamic implicit time stepping: backward Euler as an energy minimisation.

x_{n+1} = argmin  E(x) + sum_i m_i/(2 dt^2) |x_i - xhat_i|^2,   xhat = x_n + dt v_n,
v_{n+1} = (x_{n+1} - x_n) / dt.
The inertia is one more Term, so the same Newton + Jacobi-PCG (StaticSolver) solves it, with every
other term (elasticity, gravity, contact, pressure, attachments) unchanged. Backward Euler is
unconditionally stable and dissipates energy (numerical damping grows with dt). A step that does not
converge or inverts elements is cut back into two half steps (recursively, ``max_cutbacks`` times).
"""
from __future__ import annotations

import numpy as np
import warp as wp

from kernels import integrate as ki

from ..errors import SolverError
from .control import Control
from .model import Model, State
from .static import StaticSolver
from .stepping import StepReport, begin_terms, element_health, ensure_velocity
from .terms import Term


class Inertia(Term):
    """m/(2 dt^2) |x - xhat|^2 on the free nodes (``set(xhat, dt)`` before each solve)."""

    def __init__(self, model: Model, mass: wp.array | None = None):
        super().__init__(model)
        self.mass = model.mass if mass is None else mass
        self.xhat = wp.zeros(model.node_count, dtype=wp.vec3d, device=model.device)
        self.inv_dt2 = 0.0

    def set(self, x: wp.array, v: wp.array, dt: float) -> None:
        self.inv_dt2 = 1.0 / (dt * dt)
        self._nodes(ki.predict_positions, x, v, self.model.free, float(dt), self.xhat)

    def add_energy(self, x, e, load_scale=1.0):
        self._nodes(ki.eval_inertia_energy, x, self.xhat, self.mass, self.model.free, self.inv_dt2, e)

    def add_forces(self, x, f, load_scale=1.0):
        self._nodes(ki.eval_inertia_forces, x, self.xhat, self.mass, self.model.free, self.inv_dt2, f)

    def add_hessian_product(self, x, v, out):
        self._nodes(ki.add_mass_product, self.mass, self.model.free, self.inv_dt2, v, out)

    def add_diagonal(self, x, diag):
        self._nodes(ki.add_mass_diagonal, self.mass, self.model.free, self.inv_dt2, diag)


class _IncrementalNewton(StaticSolver):
    """StaticSolver whose residual is relative to max(weight, residual at the predictor)."""

    scale_hint = 0.0

    def _external_scale(self, gravity_scale):
        return self.scale_hint if self.scale_hint > 0 else super()._external_scale(gravity_scale)


class ImplicitEulerSolver:
    """Backward Euler: ``step(state_in, state_out, control, dt)``; states carry velocities (zeros if absent)."""

    def __init__(self, model: Model, *, extra_terms: list[Term] = (), max_cutbacks: int = 4, **static_kw):
        self.model = model
        self.inertia = Inertia(model)
        self.newton = _IncrementalNewton(model, extra_terms=list(extra_terms) + [self.inertia], **static_kw)
        self.terms = self.newton.terms
        self.potential_terms = [t for t in self.terms if t is not self.inertia]
        self.max_cutbacks = int(max_cutbacks)
        d, n = model.device, model.node_count
        self._x0, self._v0 = wp.zeros(n, dtype=wp.vec3d, device=d), wp.zeros(n, dtype=wp.vec3d, device=d)
        self._e = wp.zeros(1, dtype=wp.float64, device=d)

    def potential_energy(self, x: wp.array) -> float:
        """Sum of the non-inertial terms' energies [J] at x."""
        self._e.zero_()
        for t in self.potential_terms:
            t.add_energy(x, self._e, 1.0)
        return float(self._e.numpy()[0])

    def _substep(self, x_cur, v_cur, state_out, control, s_end, h, inverted_before):
        """One backward-Euler solve of length h from (x_cur, v_cur) into state_out; (ok, why, report)."""
        m = self.model
        x = state_out.x
        self.inertia.set(x_cur, v_cur, h)
        wp.copy(x, self.inertia.xhat)                       # predictor as the initial guess
        if control is not None:
            control.advance(x, s_end)
        begin_terms(self.terms, x_cur)
        # residual scale: the inertial + elastic imbalance at the predictor
        f = self.newton.forces(x)
        weight = np.linalg.norm(m.node_mass[m.node_free]) * np.linalg.norm(m.spec.gravity)
        self.newton.scale_hint = max(np.sqrt(max(self.newton._dot(f, f), 0.0)), weight, 1e-300)
        try:
            rep = self.newton.solve(state_out)
        except SolverError as err:
            return False, str(err), None
        if not rep.converged:
            return False, f"Newton stopped at relative residual {rep.relative_residual:.2e}", rep
        inv, nan = element_health(m, x)
        if nan:
            return False, f"{nan} element(s) with non-finite positions", rep
        if inv > inverted_before:
            return False, f"{inv} inverted element(s) (had {inverted_before})", rep
        wp.launch(ki.finite_difference_velocity, dim=m.node_count,
                  inputs=[x, x_cur, 1.0 / h, ensure_velocity(state_out)], device=m.device)
        return True, "", rep

    def step(self, state_in: State, state_out: State, control: Control | None, dt: float) -> StepReport:
        """Advance by dt [s], cutting the step into halves where a solve fails."""
        if not dt > 0:
            raise SolverError(f"time step must be positive, got {dt}")
        ensure_velocity(state_in)
        ensure_velocity(state_out)
        wp.copy(self._x0, state_in.x)
        wp.copy(self._v0, state_in.v)
        inverted_before, _ = element_health(self.model, self._x0)
        if control is not None:
            control.begin(self._x0)
        t, h, cuts, n_inc, newton, cg, rep = 0.0, float(dt), 0, 0, 0, 0, None
        while t < dt * (1.0 - 1e-12):
            h = min(h, dt - t)
            ok, why, rep = self._substep(self._x0, self._v0, state_out, control, (t + h) / dt, h, inverted_before)
            if rep is not None:
                newton, cg = newton + rep.newton_iterations, cg + rep.cg_iterations
            if ok:
                t, n_inc = t + h, n_inc + 1
                wp.copy(self._x0, state_out.x)
                wp.copy(self._v0, state_out.v)
                continue
            cuts += 1
            if cuts > self.max_cutbacks:
                raise SolverError(f"implicit step failed at t + {t:.3g} s with sub-step {h:.3g} s after "
                                  f"{cuts - 1} cut-backs: {why}")
            h *= 0.5
        wp.copy(state_out.x, self._x0)
        wp.copy(state_out.v, self._v0)
        inv, _ = element_health(self.model, state_out.x)
        return StepReport(n_inc, cuts, newton, cg, inv, rep.relative_residual if rep else 0.0)
