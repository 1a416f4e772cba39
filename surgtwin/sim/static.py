"""Quasi-static equilibrium: Newton's method with a matrix-free Jacobi-PCG and a backtracking line search.

Each Newton step solves K(x) dx = f(x) inexactly (Eisenstat-Walker style relative tolerance) with
kernels from ``kernels.linalg``; CG stops early on non-positive curvature, in which case the
preconditioned residual is used as a descent direction. The line search accepts a step only if the
total potential energy decreases (Armijo). Stable Neo-Hookean energy stays finite for inverted
elements, so inversion is not prevented here: callers count inverted elements after a solve.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import warp as wp

from kernels import elasticity as ke
from kernels import linalg as kl

from ..errors import SolverError
from .model import Model, State
from .terms import Term, default_terms


@dataclass
class SolveReport:
    """What a solve did: residual history [N], iterations, and whether it met the tolerance."""

    converged: bool
    newton_iterations: int
    cg_iterations: int
    residual_norm: float
    relative_residual: float
    residual_history: list = field(default_factory=list)
    load_steps: int = 1

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("converged", "newton_iterations", "cg_iterations",
                                              "residual_norm", "relative_residual", "load_steps",
                                              "residual_history")}


class StaticSolver:
    """Find x with f_int(x) + f_ext(x) = 0 on the free nodes of ``model``.

    ``terms`` (default: elasticity + gravity + support springs) are the energy terms summed; pass
    ``extra_terms`` to add physics (contact, pressure, attachments) without changing the solver.
    """

    def __init__(self, model: Model, *, tol: float = 1e-6, newton_max_iter: int = 40,
                 cg_max_iter: int = 400, cg_tol: float = 1e-2, cg_check_every: int = 10,
                 terms: list[Term] | None = None, extra_terms: list[Term] = ()):
        self.model = model
        self.terms = (list(terms) if terms is not None else default_terms(model)) + list(extra_terms)
        self.tol, self.newton_max_iter = tol, newton_max_iter
        self.cg_max_iter, self.cg_tol, self.cg_check_every = cg_max_iter, cg_tol, cg_check_every
        n, d = model.node_count, model.device
        vec = lambda: wp.zeros(n, dtype=wp.vec3d, device=d)  # noqa: E731
        self._f, self._dx, self._r, self._z, self._p, self._q = vec(), vec(), vec(), vec(), vec(), vec()
        self._diag, self._minv, self._trial = vec(), vec(), vec()
        self._rz, self._rz_new, self._pq, self._energy = (wp.zeros(1, dtype=wp.float64, device=d) for _ in range(4))
        self._flag = wp.zeros(1, dtype=wp.int32, device=d)

    def _launch_nodes(self, kernel, inputs):
        wp.launch(kernel, dim=self.model.node_count, inputs=inputs, device=self.model.device)

    def forces(self, x: wp.array, gravity_scale: float = 1.0) -> wp.array:
        """Total nodal force (sum of the terms) at positions x, unmasked [N]."""
        self._f.zero_()
        for term in self.terms:
            term.add_forces(x, self._f, gravity_scale)
        return self._f

    def energy(self, x: wp.array, gravity_scale: float = 1.0) -> float:
        """Total potential energy [J] at positions x."""
        self._energy.zero_()
        for term in self.terms:
            term.add_energy(x, self._energy, gravity_scale)
        return float(self._energy.numpy()[0])

    def _dot(self, a, b) -> float:
        self._energy.zero_()
        self._launch_nodes(kl.dot_masked, [a, b, self.model.free, self._energy])
        return float(self._energy.numpy()[0])

    def _hessian_product(self, x, v, out):
        out.zero_()
        for term in self.terms:
            term.add_hessian_product(x, v, out)

    def _pcg(self, x, rhs) -> tuple[int, bool]:
        """Solve K(x) dx = rhs approximately into self._dx. Returns (iterations, hit_negative_curvature)."""
        m = self.model
        self._diag.zero_()
        for term in self.terms:
            term.add_diagonal(x, self._diag)
        self._launch_nodes(kl.jacobi_inverse, [self._diag, m.free, self._minv])
        wp.copy(self._r, rhs)
        for a in (self._rz, self._rz_new, self._pq):
            a.zero_()
        self._flag.zero_()
        self._launch_nodes(kl.cg_start, [self._r, m.free, self._minv, self._dx, self._z, self._p, self._rz])
        rz0 = float(self._rz.numpy()[0])
        if rz0 <= 0.0:
            return 0, False
        it = 0
        while it < self.cg_max_iter:
            for _ in range(self.cg_check_every):
                self._hessian_product(x, self._p, self._q)
                self._launch_nodes(kl.dot_masked, [self._p, self._q, m.free, self._pq])
                self._launch_nodes(kl.cg_advance, [self._rz, self._pq, self._flag, m.free, self._minv, self._q,
                                                   self._p, self._dx, self._r, self._z, self._rz_new])
                self._launch_nodes(kl.cg_direction, [self._rz, self._rz_new, self._flag, self._z, self._p])
                wp.launch(kl.cg_roll_scalars, dim=1, inputs=[self._rz, self._rz_new, self._pq, self._flag],
                          device=m.device)
                it += 1
            rz, flag = float(self._rz.numpy()[0]), int(self._flag.numpy()[0])
            if flag or rz <= (self.cg_tol ** 2) * rz0:
                return it, bool(flag)
        return it, False

    def solve(self, state: State, *, gravity_scale: float = 1.0) -> SolveReport:
        """Newton iterations from ``state`` (updated in place) to equilibrium."""
        m = self.model
        x = state.x
        ext = self._external_scale(gravity_scale)
        history, cg_total = [], 0
        for it in range(self.newton_max_iter + 1):
            f = self.forces(x, gravity_scale)
            rnorm = np.sqrt(max(self._dot(f, f), 0.0))
            history.append(rnorm)
            if not np.isfinite(rnorm):
                raise SolverError(f"residual became non-finite at Newton iteration {it}")
            if rnorm <= self.tol * ext:
                return SolveReport(True, it, cg_total, rnorm, rnorm / ext, history)
            if it == self.newton_max_iter:
                break
            cg_it, _ = self._pcg(x, f)
            cg_total += cg_it
            slope = self._dot(f, self._dx)
            if slope <= 0.0:
                # no descent direction (negative curvature from the start): use the preconditioned residual
                self._launch_nodes(kl.cg_start, [f, m.free, self._minv, self._trial, self._dx, self._p, self._rz])
                slope = self._dot(f, self._dx)
            if not self._line_search(x, gravity_scale, slope) and not self._residual_step(x, gravity_scale, rnorm):
                break
        rel = history[-1] / ext
        return SolveReport(rel <= self.tol, len(history) - 1, cg_total, history[-1], rel, history)

    def _line_search(self, x, gravity_scale, slope) -> bool:
        e0 = self.energy(x, gravity_scale)
        step = 1.0
        for _ in range(30):
            self._launch_nodes(kl.axpy_masked, [step, self._dx, self.model.free, x, self._trial])
            e1 = self.energy(self._trial, gravity_scale)
            if np.isfinite(e1) and e1 <= e0 - 1e-4 * step * slope + 1e-14 * abs(e0):
                wp.copy(x, self._trial)
                return True
            step *= 0.5
        return False

    def _residual_step(self, x, gravity_scale, rnorm) -> bool:
        """Fallback when no step passes the energy test (energy changes below its round-off, e.g. near
        equilibrium of an energy that is ~0 at rest): take the full step if it lowers the residual norm."""
        self._launch_nodes(kl.axpy_masked, [1.0, self._dx, self.model.free, x, self._trial])
        f = self.forces(self._trial, gravity_scale)
        r1 = np.sqrt(max(self._dot(f, f), 0.0))
        if np.isfinite(r1) and r1 < rnorm:
            wp.copy(x, self._trial)
            return True
        return False

    def _external_scale(self, gravity_scale: float) -> float:
        """Norm used to make the residual relative: weight of the free mass (or 1 N without gravity)."""
        g = np.linalg.norm(self.model.spec.gravity) * abs(gravity_scale)
        w = np.linalg.norm(self.model.node_mass[self.model.node_free]) * g
        return float(w) if w > 0 else 1.0

    def solve_ramped(self, state: State, steps: int) -> SolveReport:
        """Ramp gravity in ``steps`` increments (large deformation robustness); report of the last."""
        total_cg, history, newton = 0, [], 0
        for s in range(1, max(1, steps) + 1):
            rep = self.solve(state, gravity_scale=s / max(1, steps))
            total_cg += rep.cg_iterations
            newton += rep.newton_iterations
            history += rep.residual_history
            if not rep.converged:
                raise SolverError(f"no equilibrium at load step {s}/{steps}: relative residual "
                                  f"{rep.relative_residual:.2e} after {rep.newton_iterations} Newton iterations")
        return SolveReport(True, newton, total_cg, rep.residual_norm, rep.relative_residual, history, steps)


def element_strain(model: Model, state: State) -> tuple[np.ndarray, np.ndarray]:
    """Max principal Green-Lagrange strain and volume ratio J per element (numpy)."""
    n = len(model.spec.tets)
    strain = wp.zeros(n, dtype=wp.float64, device=model.device)
    jac = wp.zeros(n, dtype=wp.float64, device=model.device)
    wp.launch(ke.eval_tet_strain, dim=n, inputs=[model.elements, state.x, strain, jac], device=model.device)
    return strain.numpy(), jac.numpy()
