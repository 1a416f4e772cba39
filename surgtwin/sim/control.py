"""Control: what the user drives between steps without rebuilding the Model.

    control = Control(model)
    control.prescribe(nodes, positions)              # Dirichlet nodes (must be fixed in the model) [m]
    t = control.add_tool(Sphere(0.005), position=[0, 0, 0.05])
    control.set_tool_pose(t, [0, 0, 0.049])           # move the tool for the next step
    ids = control.add_anchors(points)                 # moving anchor points of attachment springs [m]
    control.set_anchors(ids, new_points)

Everything lives in device arrays that the terms read at launch time, so a solver's captured graph (CUDA
or CPU) sees new targets and poses. A step moves from the state's positions and the tools' current positions to
the targets along a straight line: ``begin(x)`` records the start, ``advance(x, s)`` writes the pose at
fraction s in [0, 1] (prescribed nodes into x, tool positions into the tool set). Tool rotations change at
once when set. Add tools and anchors before building a solver: adding one reallocates the arrays (and
bumps ``revision``, on which ExplicitSolver recaptures its graph).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import warp as wp

from kernels import boundary as kb
from kernels import contact as kc

from .model import Model


@dataclass(frozen=True)
class Sphere:
    """Rigid sphere of ``radius`` [m] centred at the tool position."""

    radius: float


@dataclass(frozen=True)
class Capsule:
    """Segment of half length ``half_length`` [m] along the tool's local z, swept by ``radius`` [m]."""

    radius: float
    half_length: float


@dataclass(frozen=True)
class Plane:
    """Rigid half-space: solid below the tool's local z = 0 plane (e.g. a table or a retractor blade face)."""


@dataclass(frozen=True, eq=False)
class TriangleMeshTool:
    """Closed, outward-oriented triangle surface in the tool frame: ``vertices`` (k, 3) [m], ``triangles`` (t, 3)."""

    vertices: np.ndarray
    triangles: np.ndarray


def _rotation(rotation) -> np.ndarray:
    r = np.eye(3) if rotation is None else np.asarray(rotation, np.float64).reshape(3, 3)
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) <= 0:
        raise ValueError("tool rotation must be a proper 3x3 rotation matrix")
    return r


class Control:
    """Prescribed node targets, rigid tool poses and attachment anchors of one Model (device arrays).

    ``revision`` counts reallocations of those arrays (a new tool or anchors), so that a captured graph
    that refers to them (ExplicitSolver) is captured again."""

    def __init__(self, model: Model):
        self.model = model
        d, n = model.device, model.node_count
        self._mask = np.zeros(n, np.int32)
        self._target = model.spec.points.copy()
        self.prescribed_mask = wp.array(self._mask, dtype=wp.int32, device=d)
        self.target = wp.array(self._target, dtype=wp.vec3d, device=d)
        self.start = wp.array(self._target, dtype=wp.vec3d, device=d)
        self.shapes: list = []
        self._meshes: list = []
        self._kind, self._size, self._mesh_ids = [], [], []
        self._pos, self._rot = np.zeros((0, 3)), np.zeros((0, 3, 3))
        self.tools = kc.ToolSet()
        self._anchor_points = np.zeros((0, 3))
        self.revision = 0
        self._alloc_tools()
        self.anchors = wp.zeros(0, dtype=wp.vec3d, device=d)

    # ------------------------------------------------------------ prescribed displacements
    def prescribe(self, nodes, positions) -> None:
        """Targets [m] (k, 3) for ``nodes`` (k,), reached at the end of the next step. Nodes must be fixed."""
        nodes = np.asarray(nodes, np.int64).ravel()
        pos = np.asarray(positions, np.float64).reshape(len(nodes), 3)
        fixed = self.model.spec.fixed
        if len(nodes) and (nodes.min() < 0 or nodes.max() >= len(fixed)):
            raise ValueError("prescribed node index out of range")
        if not fixed[nodes].all():
            raise ValueError(f"{int((~fixed[nodes]).sum())} prescribed node(s) are not fixed in the model: "
                             "mark them fixed in the ModelSpec")
        self._mask[nodes] = 1
        self._target[nodes] = pos
        self.prescribed_mask.assign(self._mask)
        self.target.assign(self._target)

    # ------------------------------------------------------------ tools
    def _alloc_tools(self):
        d = self.model.device
        t = self.tools
        k = len(self._kind)
        t.kind = wp.array(np.asarray(self._kind, np.int32).reshape(k), dtype=wp.int32, device=d)
        t.pos = wp.array(self._pos.reshape(k, 3), dtype=wp.vec3d, device=d)
        t.rot = wp.array(self._rot.reshape(k, 3, 3), dtype=wp.mat33d, device=d)
        t.size = wp.array(np.asarray(self._size, np.float64).reshape(k, 3), dtype=wp.vec3d, device=d)
        t.mesh = wp.array(np.asarray(self._mesh_ids, np.uint64).reshape(k), dtype=wp.uint64, device=d)
        self.tool_target = wp.array(self._pos.reshape(k, 3), dtype=wp.vec3d, device=d)
        self.tool_start = wp.array(self._pos.reshape(k, 3), dtype=wp.vec3d, device=d)
        self.revision += 1

    def add_tool(self, shape, position, rotation=None) -> int:
        """Add a rigid tool (Sphere, Capsule, Plane, TriangleMeshTool) at a pose; returns its index."""
        size, mesh_id = np.zeros(3), 0
        if isinstance(shape, Sphere):
            kind, size[0] = kc.SPHERE, shape.radius
        elif isinstance(shape, Capsule):
            kind, size[:2] = kc.CAPSULE, (shape.radius, shape.half_length)
        elif isinstance(shape, Plane):
            kind = kc.PLANE
        elif isinstance(shape, TriangleMeshTool):
            kind = kc.MESH
            v = np.asarray(shape.vertices, np.float32).reshape(-1, 3)
            tri = np.asarray(shape.triangles, np.int32).reshape(-1, 3)
            mesh = wp.Mesh(points=wp.array(v, dtype=wp.vec3, device=self.model.device),
                           indices=wp.array(tri.ravel(), dtype=wp.int32, device=self.model.device))
            self._meshes.append(mesh)
            mesh_id = mesh.id
            size[0] = 2.0 * float(np.linalg.norm(v.max(0) - v.min(0)))  # query reach: inside points too
        else:
            raise ValueError(f"unknown tool shape {type(shape).__name__}")
        if kind in (kc.SPHERE, kc.CAPSULE) and size[0] <= 0:
            raise ValueError("tool radius must be positive")
        self.shapes.append(shape)
        self._kind.append(kind)
        self._size.append(size)
        self._mesh_ids.append(mesh_id)
        self._pos = np.vstack([self._pos, np.asarray(position, np.float64).reshape(1, 3)])
        self._rot = np.concatenate([self._rot, _rotation(rotation)[None]])
        self._alloc_tools()
        return len(self._kind) - 1

    def set_tool_pose(self, tool: int, position, rotation=None) -> None:
        """Target position [m] of ``tool`` for the next step; ``rotation`` (3x3, local->world) applies at once."""
        self._pos[tool] = np.asarray(position, np.float64).reshape(3)
        self.tool_target.assign(self._pos)
        if rotation is not None:
            self._rot[tool] = _rotation(rotation)
            self.tools.rot.assign(self._rot)

    def place_tool(self, tool: int, position) -> None:
        """Put ``tool`` at ``position`` [m] now (quasi-static use: no interpolation over a step)."""
        self.set_tool_pose(tool, position)
        wp.copy(self.tools.pos, self.tool_target)
        wp.copy(self.tool_start, self.tool_target)

    def tool_pose(self, tool: int) -> tuple[np.ndarray, np.ndarray]:
        """(target position [m], rotation) of ``tool``."""
        return self._pos[tool].copy(), self._rot[tool].copy()

    # ------------------------------------------------------------ attachment anchors
    def add_anchors(self, points) -> np.ndarray:
        """New anchor points [m] (k, 3); returns their ids."""
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        first = len(self._anchor_points)
        self._anchor_points = np.vstack([self._anchor_points, pts])
        self.anchors = wp.array(self._anchor_points, dtype=wp.vec3d, device=self.model.device)
        self.revision += 1
        return np.arange(first, first + len(pts))

    def set_anchors(self, ids, points) -> None:
        """Move anchors ``ids`` to ``points`` [m] (applies at once)."""
        self._anchor_points[np.asarray(ids, np.int64)] = np.asarray(points, np.float64).reshape(-1, 3)
        self.anchors.assign(self._anchor_points)

    # ------------------------------------------------------------ stepping
    def begin(self, x: wp.array) -> None:
        """Record the start of a step: current positions and tool positions (no host sync)."""
        wp.copy(self.start, x)
        if len(self._kind):
            wp.copy(self.tool_start, self.tools.pos)

    def advance(self, x: wp.array, s: float) -> None:
        """Prescribed nodes and tool positions at fraction ``s`` of the step (written into x and the tool set)."""
        d = self.model.device
        wp.launch(kb.apply_prescribed, dim=self.model.node_count,
                  inputs=[self.prescribed_mask, self.start, self.target, float(s), x], device=d)
        if len(self._kind):
            wp.launch(kb.lerp_points, dim=len(self._kind),
                      inputs=[self.tool_start, self.tool_target, float(s), self.tools.pos], device=d)

    @property
    def has_prescribed(self) -> bool:
        return bool(self._mask.any())
