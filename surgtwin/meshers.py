"""Volume mesher selection: the built-in Kuhn-grid mesher, or TetGen / fTetWild as optional extras.

``mesh.mesher``: ``grid`` (built in, the default), ``tetgen`` (``pip install surgtwin[tetgen]``; TetGen
is AGPL-licensed, so it is never required), ``ftetwild`` (``pip install surgtwin[ftetwild]``, MPL-2.0), or
``auto`` (TetGen, else fTetWild, else the grid mesher). The external meshers fill the closed, smoothed
boundary surface of the meshed structures (decimated to about the element size); each element then takes
the label at its centroid (a centroid outside the label map's structures keeps the organ's label, or
the nearest structure's in a joint mesh), so regions are tagged as in the grid mesh. The surface is first
offset along its normals so that the mesh holds the label's volume. quality.json says which mesher ran.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pyvista as pv
import SimpleITK as sitk

from .config import MeshConfig
from .errors import ConfigError, MeshError
from .mesh import TetMesh, mask_surface, organ_envelope, sample_labels, sample_mask
from .volume import LabelMap

MESHERS = ("auto", "grid", "tetgen", "ftetwild")
_MODULE = {"tetgen": "tetgen", "ftetwild": "pytetwild"}


def installed(mesher: str) -> bool:
    """Whether an optional external mesher's package can be imported."""
    return importlib.util.find_spec(_MODULE[mesher]) is not None


def resolve_mesher(name: str) -> str:
    """The mesher that will run for ``mesh.mesher`` (``auto``: first installed of tetgen, ftetwild, grid)."""
    if name not in MESHERS:
        raise ConfigError(f"mesh.mesher must be one of {', '.join(MESHERS)}, not '{name}'")
    if name == "auto":
        return next((m for m in ("tetgen", "ftetwild") if installed(m)), "grid")
    if name != "grid" and not installed(name):
        raise ConfigError(f"mesh.mesher={name} needs the optional package '{_MODULE[name]}' "
                          f"(pip install surgtwin[{name}]); mesh.mesher=grid needs none")
    return name


def volume_mesh(labels: LabelMap, structures, cfg: MeshConfig, size_mm: float) -> TetMesh:
    """The tagged tetrahedral mesh of ``structures`` (names present in ``labels``) as ``cfg`` asks."""
    mesher = resolve_mesher(cfg.mesher)
    organ = None if cfg.joint else cfg.organ
    if mesher == "grid":
        return TetMesh.from_labelmap(labels, structures, size_mm=size_mm, organ=organ, snap=cfg.snap_boundary,
                                     refine_near=list(cfg.refine_near), refine_ratio=int(cfg.refine_ratio),
                                     refine_band_mm=float(cfg.refine_band_mm))
    return external_mesh(labels, structures, size_mm=size_mm, organ=organ, mesher=mesher)


def meshed_mask(labels: LabelMap, structures, organ: str | None, envelope_mm: float = 8.0) -> sitk.Image:
    """Binary image of what a mesh of ``structures`` covers: their union, restricted (with ``organ``) to
    the organ and the other structures inside its envelope (as in the grid mesher)."""
    table = labels.table
    ids = [table.id_of(n) for n in structures if n in table]
    union = sitk.GetImageFromArray(np.isin(sitk.GetArrayViewFromImage(labels.image), ids).astype(np.uint8))
    union.CopyInformation(labels.image)
    if organ is None:
        return union
    oid = table.id_of(organ)
    env = organ_envelope(labels, oid, envelope_mm)
    env = sitk.Resample(env, labels.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.Cast(sitk.Or(union * sitk.Cast(env > 0, sitk.sitkUInt8), labels.image == oid), sitk.sitkUInt8)


def boundary_surface(mask: sitk.Image, name: str, size_mm: float) -> pv.PolyData:
    """Closed surface of ``mask`` (every shell holding >= 1 % of its volume), decimated to about
    ``size_mm`` edges and offset along its normals to the mask's volume."""
    surf = mask_surface(mask, name, smoothing_iterations=40, min_shell_fraction=0.01)
    edge = np.sqrt(4.0 / np.sqrt(3.0) * surf.area / max(surf.n_cells, 1))      # mean edge of the surface
    reduction = 1.0 - (edge / size_mm) ** 2
    if reduction > 0.05:
        surf = surf.decimate_pro(float(min(reduction, 0.95)), preserve_topology=True, feature_angle=60.0)
        surf = surf.clean().triangulate()
    target = float(sitk.GetArrayViewFromImage(mask).astype(bool).sum() * np.prod(mask.GetSpacing()))
    for _ in range(3):   # offset = volume deficit / area (a free surface: dV = A dh)
        surf = surf.compute_normals(auto_orient_normals=True, consistent_normals=True, split_vertices=False,
                                    cell_normals=False)
        h = (target - abs(surf.volume)) / surf.area
        surf.points = surf.points + h * np.asarray(surf.point_data["Normals"])
    surf.point_data.clear()
    if surf.n_open_edges or not surf.is_manifold:
        raise MeshError(f"the surface of '{name}' is not closed and manifold after decimation: "
                        f"use mesh.mesher=grid")
    return surf


def external_mesh(labels: LabelMap, structures, *, size_mm: float, organ: str | None, mesher: str) -> TetMesh:
    """Tagged tet mesh by TetGen or fTetWild filling the structures' boundary surface."""
    if size_mm <= 0:
        raise MeshError("mesh size must be positive")
    table = labels.table
    present_ids = set(labels.present_ids())
    present = [table.id_of(n) for n in structures if n in table and table.id_of(n) in present_ids]
    if not present:
        from .errors import LabelError

        raise LabelError(f"structure '{structures[0]}' is absent from the label map")
    mask = meshed_mask(labels, structures, organ)
    surf = boundary_surface(mask, organ or structures[0], size_mm)
    target_volume = size_mm ** 3 / 6.0        # a Kuhn-grid tet of the same size
    try:
        if mesher == "tetgen":
            import tetgen

            tg = tetgen.TetGen(surf)
            points, tets, _, _ = tg.tetrahedralize(quality=True, minratio=1.5, mindihedral=12.0,
                                                   maxvolume=target_volume, steinerleft=10_000_000)
        else:
            import pytetwild

            grid = pytetwild.tetrahedralize_pv(surf, edge_length_abs=size_mm, quiet=True, num_threads=2)
            points, tets = np.asarray(grid.points), grid.cells_dict[pv.CellType.TETRA]
    except Exception as exc:   # the C++ meshers raise RuntimeError and friends with their own text
        raise MeshError(f"{mesher} could not mesh '{organ or structures[0]}': {str(exc).splitlines()[0][:120]}") from None
    points, tets = np.asarray(points, dtype=np.float64), np.asarray(tets, dtype=np.int64)
    if len(tets) == 0:
        raise MeshError(f"{mesher} gave no elements for '{organ or structures[0]}'")
    from .sim.blocks import orient_positive

    tets, _ = orient_positive(points, tets)
    cent = points[tets].mean(1)
    lab = sample_labels(labels, cent)
    ok = np.isin(lab, present)
    if organ is not None:
        oid = table.id_of(organ)
        env = organ_envelope(labels, oid, 8.0)
        ok &= (lab == oid) | sample_mask(env, cent)
        lab = np.where(ok, lab, oid)
    elif not ok.all():   # joint mesh: a centroid off every structure takes the nearest structure's label
        from scipy.spatial import cKDTree

        arr = sitk.GetArrayViewFromImage(labels.image)
        zyx = np.argwhere(np.isin(arr, present))
        from .mesh import index_to_physical

        vox = index_to_physical(labels.image, zyx[:, ::-1].astype(float))
        _, near = cKDTree(vox).query(cent[~ok])
        lab[~ok] = arr[tuple(zyx[near].T)]
    mesh = TetMesh.from_arrays(points, tets, lab, table)
    mesh.grid.field_data["mesher"] = np.array([mesher])
    mesh.grid.field_data["size_mm"] = np.array([size_mm])
    return mesh
