"""Rigid tool contact as an energy term: penalty on the signed distance, plus Coulomb-like friction.

    control = Control(model)
    tool = control.add_tool(Sphere(0.01), position=[0.05, 0.05, 0.11])
    contact = ToolContact(model, control, tool, friction=0.3)
    solver = StaticSolver(model, extra_terms=[contact])
    ... contact.force(state.x)      # total force of the tool on the tissue [N]

Penalty stiffness per candidate node (boundary nodes by default) is ``stiffness`` [N/m], or by default
``stiffness_factor * E * h`` with E the node's mean Young's modulus and h = cbrt(nodal volume): a node
pushed with the local elastic force of a unit strain penetrates 1/stiffness_factor of its element size.
Friction (``friction`` = mu > 0): a node in contact is held to its stick anchor by a tangential spring of
``tangential_ratio`` times the penalty stiffness whose force is capped at mu times the (lagged) normal
force, beyond which it slides; anchors and normal forces are updated between solves/steps
(``begin_step``).
See kernels/contact.py for the formulas.
"""
from __future__ import annotations

import numpy as np
import warp as wp

from kernels import contact as kc

from .control import Control
from .loads import boundary_nodes
from .model import Model
from .terms import Term


def default_contact_stiffness(model: Model, nodes: np.ndarray, factor: float) -> np.ndarray:
    """factor * E_node * cbrt(V_node) [N/m] for ``nodes`` (E averaged over the node's elements)."""
    spec = model.spec
    live = spec.tets[spec.alive]
    n = model.node_count
    vol = np.zeros(n)
    np.add.at(vol, live.ravel(), np.repeat(model.rest_volume[spec.alive] / 4.0, 4))
    e_sum = np.zeros(n)
    np.add.at(e_sum, live.ravel(), np.repeat(spec.youngs[spec.alive] * model.rest_volume[spec.alive] / 4.0, 4))
    e_node = np.divide(e_sum, vol, out=np.zeros(n), where=vol > 0)
    return factor * e_node[nodes] * np.cbrt(vol[nodes])


class ToolContact(Term):
    """Contact of the model's boundary nodes with tool ``tool`` of ``control`` (frictionless if friction=0)."""

    def __init__(self, model: Model, control: Control, tool: int, *, stiffness=None,
                 stiffness_factor: float = 100.0, friction: float = 0.0, tangential_ratio: float = 1.0,
                 nodes=None):
        super().__init__(model)
        if not 0 <= tool < len(control.shapes):
            raise ValueError(f"no tool {tool} in the control ({len(control.shapes)} tools)")
        if friction < 0 or tangential_ratio <= 0:
            raise ValueError("friction must be >= 0 and tangential_ratio > 0")
        nodes = boundary_nodes(model) if nodes is None else np.asarray(nodes, np.int64).ravel()
        k = (default_contact_stiffness(model, nodes, stiffness_factor) if stiffness is None
             else np.broadcast_to(np.asarray(stiffness, np.float64), (len(nodes),)).copy())
        self.control, self.tool = control, int(tool)
        self.mu, self.kt = float(friction), float(tangential_ratio)
        self.node_ids = nodes
        d = model.device
        c = kc.ContactSet()
        c.nodes = wp.array(nodes.astype(np.int32), dtype=wp.int32, device=d)
        c.k = wp.array(k, dtype=wp.float64, device=d)
        c.stick = wp.zeros(len(nodes), dtype=wp.int32, device=d)
        c.anchor_local = wp.zeros(len(nodes), dtype=wp.vec3d, device=d)
        c.normal_local = wp.zeros(len(nodes), dtype=wp.vec3d, device=d)
        c.fn = wp.zeros(len(nodes), dtype=wp.float64, device=d)
        self.cset = c
        self._total = wp.zeros(1, dtype=wp.vec3d, device=d)
        self._count = wp.zeros(1, dtype=wp.int32, device=d)

    def _launch(self, kernel, *inputs):
        wp.launch(kernel, dim=len(self.node_ids), inputs=[self.control.tools, self.tool, self.cset, *inputs],
                  device=self.model.device)

    def add_energy(self, x, e, load_scale=1.0):
        self._launch(kc.eval_contact_energy, self.kt, self.mu, x, e)

    def add_forces(self, x, f, load_scale=1.0):
        self._launch(kc.eval_contact_forces, self.kt, self.mu, x, f, self._total)

    def add_hessian_product(self, x, v, out):
        self._launch(kc.eval_contact_hessian_product, self.kt, self.mu, x, v, out)

    def add_diagonal(self, x, diag):
        self._launch(kc.eval_contact_diagonal, self.kt, self.mu, x, diag)

    def begin_step(self, x):
        """Update stick anchors (friction) at positions x; no-op without friction."""
        if self.mu > 0.0:
            self._launch(kc.update_friction, self.kt, self.mu, x)

    def force(self, x: wp.array) -> np.ndarray:
        """Total force of the tool on the tissue [N] (3,) at positions x (normal + friction)."""
        scratch = wp.zeros(self.model.node_count, dtype=wp.vec3d, device=self.model.device)
        self._total.zero_()
        self.add_forces(x, scratch)
        return self._total.numpy()[0].copy()

    def contact_count(self, x: wp.array) -> int:
        """Candidate nodes inside the tool at positions x."""
        self._count.zero_()
        self._launch(kc.count_contacts, x, self._count)
        return int(self._count.numpy()[0])

    def node_stiffness(self) -> np.ndarray:
        """Largest penalty stiffness [N/m] per model node (for the explicit stable step)."""
        k = np.zeros(self.model.node_count)
        np.maximum.at(k, self.node_ids, self.cset.k.numpy() * max(1.0, self.kt))
        return k

    def sticking(self) -> np.ndarray:
        """Node ids currently held by friction."""
        return self.node_ids[self.cset.stick.numpy() != 0]
