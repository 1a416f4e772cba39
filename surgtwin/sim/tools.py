"""A grasping tool as an energy Term: stiff zero-length springs from held nodes to points on the tool.

A node held at grasp time at ``attach`` [m] is pulled toward ``attach + offset`` where ``offset`` [m]
is how far the tool tip has moved since the grasp; moving the tool = ``move_to(offset)`` then a solve.
The force on the tool [N] is the sum of the spring forces, ``sum_i k_i (x_i - anchor_i)``.
"""
from __future__ import annotations

import numpy as np
import warp as wp

from kernels import loads as kn

from .model import Model
from .terms import Term


class ToolSprings(Term):
    """Springs of stiffness ``stiffness`` [N/m] on ``nodes`` (k,) held at ``attach`` (k, 3) [m]."""

    def __init__(self, model: Model, nodes: np.ndarray, stiffness: float, attach: np.ndarray):
        super().__init__(model)
        n, d = model.node_count, model.device
        self.nodes = np.asarray(nodes, np.int64)
        self.attach = np.asarray(attach, np.float64).reshape(-1, 3)
        self.stiffness = float(stiffness)
        k = np.zeros(n)
        k[self.nodes] = self.stiffness
        self._k = wp.array(k, dtype=wp.float64, device=d)
        self._zero_mass = wp.zeros(n, dtype=wp.float64, device=d)
        self._anchor_host = np.zeros((n, 3))
        self._anchors = wp.zeros(n, dtype=wp.vec3d, device=d)
        self.offset = np.zeros(3)
        self.move_to(self.offset)

    def move_to(self, offset_m) -> None:
        """Put the tool tip ``offset_m`` (3,) [m] from where it grasped."""
        self.offset = np.asarray(offset_m, np.float64).reshape(3)
        self._anchor_host[self.nodes] = self.attach + self.offset
        self._anchors.assign(self._anchor_host)

    def anchors(self) -> np.ndarray:
        return self.attach + self.offset

    def tool_force(self, x: np.ndarray) -> np.ndarray:
        """Force (3,) [N] the tissue exerts on the tool at node positions ``x`` (n, 3) [m]."""
        return (self.stiffness * (x[self.nodes] - self.anchors())).sum(0)

    def _args(self, x):
        return [x, self._zero_mass, wp.vec3d(0.0, 0.0, 0.0), self._k, self._anchors]

    def add_energy(self, x, e, load_scale=1.0):
        self._nodes(kn.eval_node_load_energy, *self._args(x), e)

    def add_forces(self, x, f, load_scale=1.0):
        self._nodes(kn.eval_node_loads, *self._args(x), f)

    def add_hessian_product(self, x, v, out):
        self._nodes(kn.add_spring_hessian_product, self._k, v, out)

    def add_diagonal(self, x, diag):
        self._nodes(kn.add_spring_diagonal, self._k, diag)
