"""Model (rest geometry, materials, boundary conditions) and State (positions), SI units inside.

Convert once at the edge: meshes are in millimetres, the simulator works in metres, pascals and
kilograms. A Model never changes during a solve; topology changes (resection) edit the host-side
ModelSpec and finalize a new Model.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import warp as wp

from kernels.elasticity import TetModel
from kernels.materials import LAW_NAMES

from ..errors import MeshError

VOLUMETRIC = ("standard", "anp")


def law_ids(law, count: int) -> np.ndarray:
    """Per-element material law ids (count,) from ids or names (kernels.materials.LAW_NAMES)."""
    arr = np.asarray(law)
    if arr.dtype.kind in "US" or arr.dtype == object:
        names = np.broadcast_to(arr, (count,))
        bad = sorted(set(str(n) for n in names) - set(LAW_NAMES))
        if bad:
            raise MeshError(f"unknown material law '{bad[0]}' (known: {', '.join(LAW_NAMES)})")
        return np.array([LAW_NAMES.index(str(n)) for n in names], dtype=np.int32)
    ids = np.broadcast_to(arr.astype(np.int32), (count,)).copy()
    if ids.min() < 0 or ids.max() >= len(LAW_NAMES):
        raise MeshError(f"material law id out of range 0..{len(LAW_NAMES) - 1}")
    return ids


def mooney_rivlin_constants(c10, c01, bulk):
    """(youngs [Pa], poisson, c01_ratio) of a Mooney-Rivlin solid with C10, C01, bulk modulus K [Pa]:
    mu = 2 (C10 + C01), E = 9 K mu / (3 K + mu), nu = (3 K - 2 mu) / (2 (3 K + mu)), ratio = C01 / (C10 + C01)."""
    c10, c01, k = (np.asarray(v, dtype=np.float64) for v in (c10, c01, bulk))
    mu = 2.0 * (c10 + c01)
    return 9.0 * k * mu / (3.0 * k + mu), (3.0 * k - 2.0 * mu) / (2.0 * (3.0 * k + mu)), c01 / (c10 + c01)


def law_parameters(law, youngs, poisson, c01_ratio) -> np.ndarray:
    """(m, 3) kernel parameters [Pa] per element (see kernels.materials) from the small-strain constants:
    stable Neo-Hookean (mu, lambda + mu, 0); co-rotational (mu, lambda, 0); Mooney-Rivlin (C10, C01, K) with
    C10 + C01 = mu / 2 split by c01_ratio and K = E / (3 (1 - 2 nu))."""
    mu, lam = lame_parameters(youngs, poisson)
    out = np.zeros((len(law), 3))
    out[:, 0], out[:, 1] = mu, lam + mu
    co = law == 1
    out[co, 1] = lam[co]
    mr = law == 2
    out[mr, 0] = (1.0 - c01_ratio[mr]) * mu[mr] / 2.0
    out[mr, 1] = c01_ratio[mr] * mu[mr] / 2.0
    out[mr, 2] = lam[mr] + 2.0 * mu[mr] / 3.0
    return out


def lame_parameters(youngs_pa, poisson):
    """Lame (mu, lambda) from Young's modulus [Pa] and Poisson's ratio."""
    e = np.asarray(youngs_pa, dtype=np.float64)
    nu = np.asarray(poisson, dtype=np.float64)
    return e / (2.0 * (1.0 + nu)), e * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))


@dataclass
class ModelSpec:
    """Host-side model description.

    points [m] (n, 3); tets (m, 4) node indices; region (m,) label ids; youngs [Pa], poisson [-],
    density [kg/m^3] per element; fixed (n,) bool; spring_k [N/m] per node with anchors [m] (n, 3)
    (defaults to the rest positions); gravity [m/s^2]; alive (m,) bool.

    Materials: ``law`` (m,) per element, ids or names of kernels.materials.LAW_NAMES (default 0, stable
    Neo-Hookean). youngs/poisson are the small-strain constants of every law; Mooney-Rivlin splits the
    shear modulus as C01 = c01_ratio mu/2, C10 = (1 - c01_ratio) mu/2 (``mooney_rivlin_constants`` converts
    literature C10, C01, K). ``volumetric``: "standard" (per element) or "anp" (average nodal pressure,
    Bonet & Burton 1998: the volumetric energy kappa/2 (J - 1)^2 on nodal volumes, free of the volumetric
    locking of linear tets at nu -> 0.5; see surgtwin.sim.terms.NodalPressureElasticity).
    """

    points: np.ndarray
    tets: np.ndarray
    region: np.ndarray
    youngs: np.ndarray
    poisson: np.ndarray
    density: np.ndarray
    fixed: np.ndarray
    spring_k: np.ndarray
    gravity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    anchors: np.ndarray | None = None
    alive: np.ndarray | None = None
    law: np.ndarray | int | str = 0
    c01_ratio: np.ndarray | float = 0.0
    volumetric: str = "standard"

    def __post_init__(self):
        self.points = np.ascontiguousarray(self.points, dtype=np.float64).reshape(-1, 3)
        self.tets = np.ascontiguousarray(self.tets, dtype=np.int32).reshape(-1, 4)
        m, n = len(self.tets), len(self.points)
        self.region = np.broadcast_to(np.asarray(self.region, dtype=np.int32), (m,)).copy()
        for name in ("youngs", "poisson", "density"):
            setattr(self, name, np.broadcast_to(np.asarray(getattr(self, name), dtype=np.float64), (m,)).copy())
        self.fixed = np.broadcast_to(np.asarray(self.fixed, dtype=bool), (n,)).copy()
        self.spring_k = np.broadcast_to(np.asarray(self.spring_k, dtype=np.float64), (n,)).copy()
        self.gravity = np.asarray(self.gravity, dtype=np.float64).reshape(3)
        self.anchors = self.points.copy() if self.anchors is None else np.asarray(self.anchors, np.float64)
        self.alive = np.ones(m, bool) if self.alive is None else np.asarray(self.alive, bool).copy()
        if m == 0:
            raise MeshError("model has no elements")
        self.law = law_ids(self.law, m)
        self.c01_ratio = np.broadcast_to(np.asarray(self.c01_ratio, dtype=np.float64), (m,)).copy()
        if np.any(self.c01_ratio < 0.0) or np.any(self.c01_ratio > 1.0):
            raise MeshError("c01_ratio out of range (need 0 <= C01 / (C10 + C01) <= 1)")
        if self.volumetric not in VOLUMETRIC:
            raise MeshError(f"unknown volumetric formulation '{self.volumetric}' ({' or '.join(VOLUMETRIC)})")
        if self.tets.min() < 0 or self.tets.max() >= n:
            raise MeshError("element node index out of range")
        if np.any(self.poisson >= 0.5) or np.any(self.poisson <= -1.0) or np.any(self.youngs <= 0):
            raise MeshError("material parameters out of range (need E > 0, -1 < nu < 0.5)")

    def with_alive(self, alive: np.ndarray) -> "ModelSpec":
        """A copy with another element mask (resection): the one explicit topology change."""
        return replace(self, alive=np.asarray(alive, bool).copy(), anchors=self.anchors.copy(), law=self.law.copy(),
                       c01_ratio=self.c01_ratio.copy())

    def rest_geometry(self):
        """(Dm_inv (m,3,3), signed rest volume (m,)) from the rest positions."""
        x = self.points[self.tets]
        dm = np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]], axis=2)
        det = np.linalg.det(dm)
        return dm, det / 6.0

    def finalize(self, device: str = "cpu") -> "Model":
        return Model(self, device)


class Model:
    """Immutable device arrays for one topology. Build with ``ModelSpec.finalize(device)``."""

    def __init__(self, spec: ModelSpec, device: str = "cpu"):
        self.spec = spec
        self.device = wp.get_device(device)
        dm, vol = spec.rest_geometry()
        bad = np.flatnonzero(spec.alive & (vol <= 1e-18))
        if len(bad):
            raise MeshError(f"{len(bad)} degenerate or inverted rest element(s), first is element {bad[0]}")
        dm_inv = np.zeros_like(dm)
        dm_inv[spec.alive] = np.linalg.inv(dm[spec.alive])
        mu, lam = lame_parameters(spec.youngs, spec.poisson)
        n = len(spec.points)
        mass = np.zeros(n)
        live = spec.tets[spec.alive]
        np.add.at(mass, live.ravel(), np.repeat(vol[spec.alive] * spec.density[spec.alive] / 4.0, 4))
        used = np.zeros(n, bool)
        used[live.ravel()] = True
        free = (~spec.fixed) & used
        if not free.any():
            raise MeshError("every node is fixed: nothing to simulate")
        self.rest_volume = np.where(spec.alive, vol, 0.0)
        self.node_mass = mass
        self.node_used = used
        self.node_free = free
        self.tet_count = int(spec.alive.sum())
        self.node_count = n
        d = self.device
        self.elements = TetModel()
        self.elements.tets = wp.array(spec.tets, dtype=wp.vec4i, device=d)
        self.elements.dm_inv = wp.array(dm_inv, dtype=wp.mat33d, device=d)
        self.elements.vol = wp.array(self.rest_volume, dtype=wp.float64, device=d)
        self.elements.mu = wp.array(mu, dtype=wp.float64, device=d)
        self.elements.lam = wp.array(lam + mu, dtype=wp.float64, device=d)  # stable Neo-Hookean lambda
        self.elements.alive = wp.array(spec.alive.astype(np.int32), dtype=wp.int32, device=d)
        self.law_params = law_parameters(spec.law, spec.youngs, spec.poisson, spec.c01_ratio)
        self.elements.law = wp.array(spec.law, dtype=wp.int32, device=d)
        self.elements.params = wp.array(self.law_params, dtype=wp.vec3d, device=d)
        self.mass = wp.array(mass, dtype=wp.float64, device=d)
        self.free = wp.array(free.astype(np.float64), dtype=wp.float64, device=d)
        self.spring_k = wp.array(np.where(used, spec.spring_k, 0.0), dtype=wp.float64, device=d)
        self.anchors = wp.array(spec.anchors, dtype=wp.vec3d, device=d)

    def element_range(self, lo: int, hi: int) -> TetModel:
        """The element arrays of elements lo..hi-1 as views (no copy), for a launch over that range."""
        part = TetModel()
        for name in TetModel.vars:
            setattr(part, name, getattr(self.elements, name)[lo:hi])
        return part

    def gravity_vector(self, scale: float = 1.0) -> wp.vec3d:
        """Gravity [m/s^2] scaled by ``scale`` (load ramping) as a kernel argument."""
        return wp.vec3d(*(self.spec.gravity * float(scale)))

    def state(self, positions: np.ndarray | None = None) -> "State":
        """A State at the rest shape, or at ``positions`` [m] (n, 3)."""
        x = self.spec.points if positions is None else np.asarray(positions, np.float64)
        return State(wp.array(x, dtype=wp.vec3d, device=self.device))


@dataclass
class State:
    """Mutable simulation state: node positions [m] (and, for dynamics, velocities v [m/s]) on the device."""

    x: wp.array
    v: wp.array | None = None

    def positions(self) -> np.ndarray:
        return self.x.numpy().astype(np.float64)

    def copy(self) -> "State":
        return State(wp.clone(self.x), None if self.v is None else wp.clone(self.v))
