"""Energy terms of a Model: the one seam every solver goes through.

A term adds its contribution to the total potential at positions x [m]:
    add_energy(x, e, load_scale)        e: wp.array(1, float64) accumulator [J]
    add_forces(x, f, load_scale)        f += -dE/dx [N]
    add_hessian_product(x, v, out)      out += d^2E/dx^2 v
    add_diagonal(x, diag)               diag += diagonal of d^2E/dx^2 (>= 0, for Jacobi)
    begin_step(x)                       optional: update lagged state (friction anchors) between solves
``load_scale`` ramps external loads (gravity); internal terms ignore it. Solvers (static, dynamic,
explicit) sum a list of terms, so new physics (contact, pressure, attachments) is one new class here
or beside it, and no solver changes.
"""
from __future__ import annotations

import numpy as np
import warp as wp

from kernels import elasticity as ke
from kernels import loads as kn
from kernels import nodal_pressure as kp

from .model import Model


class Term:
    """Base: a term contributes nothing unless it overrides a method."""

    def __init__(self, model: Model):
        self.model = model

    def _tets(self, kernel, *inputs):
        wp.launch(kernel, dim=len(self.model.spec.tets), inputs=[self.model.elements, *inputs],
                  device=self.model.device)

    def _nodes(self, kernel, *inputs):
        wp.launch(kernel, dim=self.model.node_count, inputs=list(inputs), device=self.model.device)

    def add_energy(self, x, e, load_scale=1.0):
        pass

    def add_forces(self, x, f, load_scale=1.0):
        pass

    def add_hessian_product(self, x, v, out):
        pass

    def add_diagonal(self, x, diag):
        pass

    def begin_step(self, x):
        """Called by solvers before each solve/step at positions x (e.g. friction anchor updates)."""


class Elasticity(Term):
    """Hyperelastic tetrahedra (kernels.elasticity)."""

    def add_energy(self, x, e, load_scale=1.0):
        self._tets(ke.eval_tet_energy, x, e)

    def add_forces(self, x, f, load_scale=1.0):
        self._tets(ke.eval_tet_forces, x, f)

    def add_hessian_product(self, x, v, out):
        self._tets(ke.eval_tet_hessian_product, x, v, out)

    def add_diagonal(self, x, diag):
        self._tets(ke.eval_tet_hessian_diagonal, x, diag)


class NodalPressureElasticity(Term):
    """Hyperelastic tetrahedra with the average-nodal-pressure volumetric energy (kernels.nodal_pressure):
    locking-free near incompressibility for linear tets. Selected by ``ModelSpec(volumetric="anp")``.

    Co-rotational elements take kappa/2 (J - 1)^2, kappa = Lame lambda, as their volumetric energy here.
    """

    def __init__(self, model: Model):
        super().__init__(model)
        spec, n, d = model.spec, model.node_count, model.device
        live = spec.alive
        v4 = np.repeat(model.rest_volume[live] / 4.0, 4)
        k = model.law_params[live]
        kappa_e = np.where(spec.law[live] == 2, k[:, 2], k[:, 1])
        rest, stiff = np.zeros(n), np.zeros(n)
        idx = spec.tets[live].ravel()
        np.add.at(rest, idx, v4)
        np.add.at(stiff, idx, v4 * np.repeat(kappa_e, 4))
        self.node_rest_volume = rest                                   # V_a [m^3]
        self.node_kappa = np.divide(stiff, rest, out=np.zeros(n), where=rest > 0)   # kappa_a [Pa]
        self._rest = wp.array(rest, dtype=wp.float64, device=d)
        self._kappa = wp.array(self.node_kappa, dtype=wp.float64, device=d)
        self._vol = wp.zeros(n, dtype=wp.float64, device=d, requires_grad=True)   # wp.Tape flows through it
        self._q, self._dvol, self._dq = (wp.zeros(n, dtype=wp.float64, device=d) for _ in range(3))
        self._scratch = wp.zeros(1, dtype=wp.float64, device=d)

    def nodal_pressure(self, x, e=None) -> wp.array:
        """q_a = kappa_a (v_a / V_a - 1) [Pa] at x (adds the volumetric energy to ``e`` when given)."""
        self._vol.zero_()
        self._tets(kp.accumulate_nodal_volume, x, self._vol)
        if e is None:
            self._scratch.zero_()
        self._nodes(kp.eval_nodal_pressure, self._rest, self._kappa, self._vol, self._q,
                    self._scratch if e is None else e)
        return self._q

    def add_energy(self, x, e, load_scale=1.0):
        self._tets(kp.eval_anp_dev_energy, x, e)
        self.nodal_pressure(x, e)

    def add_forces(self, x, f, load_scale=1.0):
        self._tets(kp.eval_anp_forces, x, self.nodal_pressure(x), f)

    def add_hessian_product(self, x, v, out):
        q = self.nodal_pressure(x)
        self._dvol.zero_()
        self._tets(kp.accumulate_nodal_volume_differential, x, v, self._dvol)
        self._nodes(kp.eval_nodal_pressure_differential, self._rest, self._kappa, self._dvol, self._dq)
        self._tets(kp.eval_anp_hessian_product, x, v, q, self._dq, out)

    def add_diagonal(self, x, diag):
        self._tets(kp.eval_anp_hessian_diagonal, x, self._rest, self._kappa, diag)


class NodeLoads(Term):
    """Gravity on the lumped mass (scaled by load_scale) and zero-length support springs."""

    def _args(self, x, load_scale):
        m = self.model
        return [x, m.mass, m.gravity_vector(load_scale), m.spring_k, m.anchors]

    def add_energy(self, x, e, load_scale=1.0):
        self._nodes(kn.eval_node_load_energy, *self._args(x, load_scale), e)

    def add_forces(self, x, f, load_scale=1.0):
        self._nodes(kn.eval_node_loads, *self._args(x, load_scale), f)

    def add_hessian_product(self, x, v, out):
        self._nodes(kn.add_spring_hessian_product, self.model.spring_k, v, out)

    def add_diagonal(self, x, diag):
        self._nodes(kn.add_spring_diagonal, self.model.spring_k, diag)


def elasticity_term(model: Model) -> Term:
    """The elastic term the model asks for: ``NodalPressureElasticity`` if spec.volumetric == "anp"."""
    return NodalPressureElasticity(model) if model.spec.volumetric == "anp" else Elasticity(model)


def default_terms(model: Model) -> list[Term]:
    """Elasticity (standard or average nodal pressure, per ModelSpec.volumetric) plus the nodal loads."""
    return [elasticity_term(model), NodeLoads(model)]
