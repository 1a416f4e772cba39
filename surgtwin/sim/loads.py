"""Boundary loads as energy terms: surface pressure (dead load) and spring attachments to moving anchors.

Prescribed displacements are not a term: they are fixed nodes whose targets live in the Control
(``Control.prescribe``) and that every solver moves before it solves for the free nodes.
"""
from __future__ import annotations

import numpy as np
import warp as wp

from kernels import boundary as kb

from .control import Control
from .model import Model
from .terms import Term

# outward faces of a positively oriented tet (0, 1, 2, 3)
_TET_FACES = np.array([(1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1)])


def boundary_faces(tets: np.ndarray, alive: np.ndarray | None = None) -> np.ndarray:
    """Boundary triangles (k, 3) of positively oriented tets, wound so their normal points outward."""
    tets = np.asarray(tets)
    if alive is not None:
        tets = tets[np.asarray(alive, bool)]
    faces = tets[:, _TET_FACES].reshape(-1, 3)
    key = np.sort(faces, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inv.ravel()] == 1]


def boundary_nodes(model: Model) -> np.ndarray:
    """Indices of the nodes on the boundary of the live elements."""
    return np.unique(boundary_faces(model.spec.tets, model.spec.alive))


class SurfacePressure(Term):
    """Dead-load pressure [Pa] on triangles ``faces`` (k, 3) (outward winding), positive pushing inward.

    Nodal forces f = -p A n / 3 per face vertex use the rest geometry (a dead load: constant direction and
    magnitude), so the energy is -f.x and the Hessian is zero. Scaled by the solver's load ramp.
    """

    def __init__(self, model: Model, faces, pressure):
        super().__init__(model)
        self.faces = np.asarray(faces, np.int64).reshape(-1, 3)
        self.f_ext = wp.zeros(model.node_count, dtype=wp.vec3d, device=model.device)
        self.set_pressure(pressure)

    def set_pressure(self, pressure) -> None:
        """New pressure [Pa] (scalar or one per face); applies from the next evaluation."""
        p = np.broadcast_to(np.asarray(pressure, np.float64), (len(self.faces),))
        x = self.model.spec.points[self.faces]
        area_vec = 0.5 * np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0])
        f = np.zeros((self.model.node_count, 3))
        np.add.at(f, self.faces.ravel(), np.repeat(-p[:, None] * area_vec / 3.0, 3, axis=0))
        self.nodal_force = f
        self.f_ext.assign(f)

    def add_energy(self, x, e, load_scale=1.0):
        self._nodes(kb.eval_dead_load_energy, self.f_ext, float(load_scale), x, e)

    def add_forces(self, x, f, load_scale=1.0):
        self._nodes(kb.add_scaled_forces, self.f_ext, float(load_scale), f)


class Attachments(Term):
    """Zero-length springs [N/m] from ``nodes`` to moving anchors in the Control (ligaments, grasping).

    Anchors start at ``points`` [m] (default: the nodes' rest positions); move them with
    ``control.set_anchors(term.anchor_ids, new_points)``.
    """

    def __init__(self, model: Model, control: Control, nodes, stiffness, points=None):
        super().__init__(model)
        nodes = np.asarray(nodes, np.int64).ravel()
        if len(nodes) == 0:
            raise ValueError("attachments need at least one node")
        pts = model.spec.points[nodes] if points is None else np.asarray(points, np.float64).reshape(-1, 3)
        self.control = control
        self.anchor_ids = control.add_anchors(pts)
        d = model.device
        self.node = wp.array(nodes.astype(np.int32), dtype=wp.int32, device=d)
        self.anchor = wp.array(self.anchor_ids.astype(np.int32), dtype=wp.int32, device=d)
        self.k = wp.array(np.broadcast_to(np.asarray(stiffness, np.float64), (len(nodes),)).copy(),
                          dtype=wp.float64, device=d)
        self._total = wp.zeros(1, dtype=wp.vec3d, device=d)

    def _springs(self, kernel, *inputs):
        wp.launch(kernel, dim=len(self.node), inputs=list(inputs), device=self.model.device)

    def add_energy(self, x, e, load_scale=1.0):
        self._springs(kb.eval_attachment_energy, self.node, self.anchor, self.k, self.control.anchors, x, e)

    def add_forces(self, x, f, load_scale=1.0):
        self._springs(kb.eval_attachment_forces, self.node, self.anchor, self.k, self.control.anchors, x, f)

    def add_hessian_product(self, x, v, out):
        self._springs(kb.add_attachment_hessian_product, self.node, self.k, v, out)

    def add_diagonal(self, x, diag):
        self._springs(kb.add_attachment_diagonal, self.node, self.k, diag)

    def node_stiffness(self) -> np.ndarray:
        """Summed spring stiffness [N/m] per model node (for the explicit stable step)."""
        k = np.zeros(self.model.node_count)
        np.add.at(k, self.node.numpy(), self.k.numpy())
        return k

    def force(self, x: wp.array) -> np.ndarray:
        """Total spring force on the tissue [N] (3,) at positions x (minus the pull on the anchors)."""
        self._total.zero_()
        self._springs(kb.sum_attachment_forces, self.node, self.anchor, self.k, self.control.anchors, x,
                      self._total)
        return self._total.numpy()[0].copy()


class Rollers(Term):
    """Nodes held on the plane n.x = offset [m] by a stiff normal penalty ``stiffness`` [N/m], free to slide
    in it: roller supports and symmetry planes (a per-direction Dirichlet condition)."""

    def __init__(self, model: Model, nodes, normal, stiffness, offset: float | None = None):
        super().__init__(model)
        nodes = np.asarray(nodes, np.int64).ravel()
        if len(nodes) == 0:
            raise ValueError("rollers need at least one node")
        n = np.asarray(normal, np.float64).reshape(3)
        n = n / np.linalg.norm(n)
        self.normal = wp.vec3d(*n)
        self.offset = float((model.spec.points[nodes] @ n).mean()) if offset is None else float(offset)
        d = model.device
        self.node = wp.array(nodes.astype(np.int32), dtype=wp.int32, device=d)
        self.k = wp.array(np.broadcast_to(np.asarray(stiffness, np.float64), (len(nodes),)).copy(),
                          dtype=wp.float64, device=d)

    def _launch(self, kernel, *inputs):
        wp.launch(kernel, dim=len(self.node), inputs=[self.node, self.k, self.normal, *inputs],
                  device=self.model.device)

    def add_energy(self, x, e, load_scale=1.0):
        self._launch(kb.eval_roller_energy, self.offset, x, e)

    def add_forces(self, x, f, load_scale=1.0):
        self._launch(kb.eval_roller_forces, self.offset, x, f)

    def add_hessian_product(self, x, v, out):
        self._launch(kb.add_roller_hessian_product, v, out)

    def add_diagonal(self, x, diag):
        self._launch(kb.add_roller_diagonal, diag)

    def node_stiffness(self) -> np.ndarray:
        k = np.zeros(self.model.node_count)
        np.add.at(k, self.node.numpy(), self.k.numpy())
        return k
