"""Research API: a simulation Model from a pyvista tetrahedral grid (or numpy arrays) in millimetres, and the
results back as a pyvista grid. Kept outside ``surgtwin.sim`` (whose core imports only numpy, scipy, warp).

    spec = spec_from_grid(grid, materials={1: {"youngs_kpa": 6, "poisson": 0.49, "density_kg_m3": 1060}},
                          fixed=grid.points[:, 2] < 1.0, gravity=[0, 0, -9.81], volumetric="anp")
    model = spec.finalize("cpu"); state = model.state(); StaticSolver(model).solve_ramped(state, 3)
    out = result_grid(model, state)   # displacement_mm, von_mises_pa, max_principal_strain, volume_ratio

Materials per element come from cell arrays of the grid (``youngs_pa``, ``poisson``, ``density_kg_m3`` and
optionally ``law`` (ids of kernels.materials.LAW_NAMES) and ``c01_ratio``), or from ``materials``: region label ->
{youngs_kpa, poisson, density_kg_m3[, law, c01_ratio]} (the assets/tissues.json format) over the cell array
``label``.
"""
from __future__ import annotations

import numpy as np
import pyvista as pv
import warp as wp

from kernels import elasticity as ke

from .errors import InputError
from .sim import Model, ModelSpec, State, element_strain
from .sim.blocks import orient_positive

MM = 1e-3


def spec_from_arrays(points_mm, tets, labels=1, *, materials: dict | None = None, youngs_pa=None, poisson=None,
                     density=None, law=0, c01_ratio=0.0, fixed=None, spring_k=0.0, gravity=(0.0, 0.0, 0.0),
                     volumetric: str = "standard") -> ModelSpec:
    """ModelSpec (SI) from points [mm] (n, 3), tets (m, 4), region labels (m,) and either per-element
    youngs_pa [Pa] / poisson / density [kg/m^3] (/ law / c01_ratio) or ``materials`` by label. Tets are
    re-oriented to positive volume; fixed: (n,) bool; gravity [m/s^2]."""
    pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    tets = np.asarray(tets, dtype=np.int64).reshape(-1, 4)
    labels = np.broadcast_to(np.asarray(labels), (len(tets),))
    if materials is not None:
        youngs_pa, poisson, density = (np.zeros(len(tets)) for _ in range(3))
        law, c01_ratio = np.zeros(len(tets), np.int32), np.zeros(len(tets))
        from kernels.materials import LAW_NAMES
        for lid in np.unique(labels):
            t = materials.get(int(lid), materials.get(str(lid)))
            if t is None or not {"youngs_kpa", "poisson", "density_kg_m3"} <= set(t):
                raise InputError(f"no material (youngs_kpa, poisson, density_kg_m3) for region label {lid}")
            sel = labels == lid
            youngs_pa[sel], poisson[sel], density[sel] = t["youngs_kpa"] * 1e3, t["poisson"], t["density_kg_m3"]
            name = t.get("law", "stable_neo_hookean")
            if name not in LAW_NAMES:
                raise InputError(f"unknown material law '{name}' for region label {lid} ({', '.join(LAW_NAMES)})")
            law[sel], c01_ratio[sel] = LAW_NAMES.index(name), t.get("c01_ratio", 0.0)
    elif youngs_pa is None or poisson is None or density is None:
        raise InputError("give youngs_pa, poisson and density (per element or scalars) or materials by label")
    tets, _ = orient_positive(pts, tets)
    fixed = np.zeros(len(pts), bool) if fixed is None else np.asarray(fixed, bool)
    return ModelSpec(pts * MM, tets, labels.astype(np.int32), youngs_pa, poisson, density, fixed, spring_k,
                     gravity=np.asarray(gravity, np.float64), law=law, c01_ratio=c01_ratio, volumetric=volumetric)


def spec_from_grid(grid: pv.UnstructuredGrid, *, materials: dict | None = None, fixed=None, spring_k=0.0,
                   gravity=(0.0, 0.0, 0.0), volumetric: str = "standard") -> ModelSpec:
    """ModelSpec from a tetrahedral pyvista grid in mm (see the module docstring for the cell arrays)."""
    if not isinstance(grid, pv.UnstructuredGrid):
        grid = grid.cast_to_unstructured_grid()
    cells = grid.cells_dict
    if set(cells) != {pv.CellType.TETRA}:
        raise InputError("the grid must hold linear tetrahedra only (triangulate it: grid.triangulate())")
    cd = grid.cell_data
    labels = np.asarray(cd["label"]) if "label" in cd else 1
    kw = {}
    if materials is None:
        need = {"youngs_pa", "poisson", "density_kg_m3"}
        if not need <= set(cd.keys()):
            raise InputError(f"no materials given and the grid lacks cell arrays {sorted(need - set(cd.keys()))}")
        kw = {"youngs_pa": cd["youngs_pa"], "poisson": cd["poisson"], "density": cd["density_kg_m3"],
              "law": cd["law"] if "law" in cd else 0, "c01_ratio": cd["c01_ratio"] if "c01_ratio" in cd else 0.0}
    if fixed is None and "fixed" in grid.point_data:
        fixed = grid.point_data["fixed"].astype(bool)
    return spec_from_arrays(grid.points, cells[pv.CellType.TETRA], labels, materials=materials, fixed=fixed,
                            spring_k=spring_k, gravity=gravity, volumetric=volumetric, **kw)


def element_cauchy_stress(model: Model, state: State) -> np.ndarray:
    """Cauchy stress per element (m, 3, 3) [Pa] from each element's own law (for volumetric="anp" models the
    element pressure differs from the nodal one; the von Mises stress of stable Neo-Hookean and Mooney-Rivlin
    does not depend on it)."""
    sig = wp.zeros(len(model.spec.tets), dtype=wp.mat33d, device=model.device)
    wp.launch(ke.eval_tet_cauchy_stress, dim=len(model.spec.tets), inputs=[model.elements, state.x, sig],
              device=model.device)
    return sig.numpy().astype(np.float64)


def von_mises(sigma: np.ndarray) -> np.ndarray:
    """sqrt(3/2 s:s) of the deviatoric part s of (..., 3, 3) stresses [Pa]."""
    s = sigma - np.trace(sigma, axis1=-2, axis2=-1)[..., None, None] * np.eye(3) / 3.0
    return np.sqrt(1.5 * np.einsum("...ij,...ij->...", s, s))


def result_grid(model: Model, state: State, *, deformed: bool = False) -> pv.UnstructuredGrid:
    """Tet grid [mm] (rest shape, or deformed) with point array ``displacement_mm`` (n, 3) and cell arrays
    ``von_mises_pa`` [Pa], ``max_principal_strain`` (Green-Lagrange) and ``volume_ratio`` (J), plus
    ``label`` and ``alive``. Dead elements report 0, 0 and 1."""
    spec = model.spec
    x = state.positions()
    cells = np.hstack([np.full((len(spec.tets), 1), 4), spec.tets]).ravel()
    grid = pv.UnstructuredGrid(cells, np.full(len(spec.tets), pv.CellType.TETRA, np.uint8),
                               (x if deformed else spec.points) / MM)
    grid.point_data["displacement_mm"] = (x - spec.points) / MM
    strain, jac = element_strain(model, state)
    grid.cell_data["von_mises_pa"] = np.where(spec.alive, von_mises(element_cauchy_stress(model, state)), 0.0)
    grid.cell_data["max_principal_strain"] = strain
    grid.cell_data["volume_ratio"] = jac
    grid.cell_data["label"] = spec.region
    grid.cell_data["alive"] = spec.alive.astype(np.uint8)
    return grid
