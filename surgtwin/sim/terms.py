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

import warp as wp

from kernels import elasticity as ke
from kernels import loads as kn

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


def default_terms(model: Model) -> list[Term]:
    """Elasticity plus the model's nodal loads."""
    return [Elasticity(model), NodeLoads(model)]
