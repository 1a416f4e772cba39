"""SurfaceMesh and TetMesh: organ surfaces (VTP/STL) and tagged, conforming tetrahedral meshes (VTU).

The first volume mesher is a label-sampled Freudenthal (Kuhn) grid: the organ's bounding box is
covered by cubes of edge ``size_mm``, each split into 6 tetrahedra along the same main diagonal
(conforming across cubes), and each tetrahedron takes the label found at its centroid. Internal
structures (tumour, vessels) are element regions of the same conforming mesh, tagged in the cell
array ``label``. Coordinates are physical LPS millimetres, as in the label map.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvista as pv
import scipy.sparse as sp
import SimpleITK as sitk

from .errors import InputError, LabelError, MeshError
from .fileio import atomic_path
from .labels import LabelTable
from .sim.blocks import signed_volumes
from .volume import LabelMap


def index_to_physical(image: sitk.Image, ijk: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) voxel indices (n, 3) -> physical LPS mm (n, 3)."""
    d = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (np.asarray(ijk) * np.asarray(image.GetSpacing())) @ d.T


def physical_to_index(image: sitk.Image, xyz: np.ndarray) -> np.ndarray:
    d = np.array(image.GetDirection()).reshape(3, 3)
    return ((np.asarray(xyz) - np.asarray(image.GetOrigin())) @ d) / np.asarray(image.GetSpacing())


def sample_nearest(image: sitk.Image, xyz: np.ndarray, outside=0) -> np.ndarray:
    """Nearest-voxel values of an image at physical points (``outside`` beyond the image)."""
    arr = sitk.GetArrayViewFromImage(image)
    ijk = np.rint(physical_to_index(image, xyz)).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.array(image.GetSize())), axis=1)
    out = np.full(len(xyz), outside, dtype=arr.dtype)
    i, j, k = ijk[inside].T
    out[inside] = arr[k, j, i]
    return out


def sample_labels(labelmap: LabelMap, xyz: np.ndarray) -> np.ndarray:
    """Nearest-voxel label at physical points (0 outside the image)."""
    return sample_nearest(labelmap.image, xyz).astype(np.int32)


def sample_mask(mask: sitk.Image, xyz: np.ndarray) -> np.ndarray:
    """Nearest-voxel value of a binary image at physical points (False outside)."""
    return sample_nearest(mask, xyz) > 0


def organ_envelope(labelmap: LabelMap, organ_id: int, closing_mm: float) -> sitk.Image:
    """The organ mask closed by ``closing_mm`` and hole-filled (cropped to the organ, padded)."""
    organ = labelmap.image == int(organ_id)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(organ)
    if not stats.HasLabel(1):
        raise LabelError(f"structure '{labelmap.table.name_of(organ_id)}' is absent from the label map")
    box = stats.GetBoundingBox(1)
    roi = sitk.RegionOfInterest(organ, box[3:], box[:3])
    radius = [max(1, int(np.ceil(closing_mm / s))) for s in labelmap.image.GetSpacing()]
    roi = sitk.ConstantPad(roi, radius, radius, 0)
    return sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(roi, radius))


def distance_to_labels_mm(labelmap: LabelMap, names, xyz: np.ndarray) -> np.ndarray:
    """Unsigned distance [mm] from physical points to the nearest voxel of the named structures."""
    mask = sitk.GetImageFromArray(labelmap.mask(names).astype(np.uint8))
    mask.CopyInformation(labelmap.image)
    dist = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    arr = np.maximum(sitk.GetArrayViewFromImage(dist), 0.0)
    ijk = np.rint(physical_to_index(labelmap.image, xyz)).astype(np.int64)
    ijk = np.clip(ijk, 0, np.array(labelmap.image.GetSize()) - 1)
    return arr[ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.float64)


@dataclass
class SurfaceMesh:
    """A triangulated structure surface (pyvista PolyData, LPS mm) with its label id and name."""

    mesh: pv.PolyData
    label: int
    name: str

    @classmethod
    def from_labelmap(cls, labelmap: LabelMap, name: str, *, smoothing_iterations: int = 40) -> "SurfaceMesh":
        """Closed, manifold surface of one structure: flying edges at 0.5 on its mask blurred by 0.6
        voxel (which removes the label map's diagonal-contact non-manifold spots), the largest shell
        kept, then ``smoothing_iterations`` of Taubin smoothing (no shrinkage)."""
        lid = labelmap.table.id_of(name)
        surf = mask_surface(labelmap.image == lid, name, smoothing_iterations=smoothing_iterations)
        return cls(surf, lid, name)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix.lower() not in (".vtp", ".stl", ".ply", ".obj"):
            raise InputError(f"{path.name}: surface format must be .vtp, .stl, .ply or .obj")
        with atomic_path(path) as tmp:
            self.mesh.save(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, *, label: int = 0, name: str | None = None) -> "SurfaceMesh":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such surface file: {path}")
        try:
            mesh = _read_quietly(path)
        except Exception:
            raise InputError(f"{path.name}: cannot be read as a surface mesh") from None
        if not isinstance(mesh, pv.PolyData) or mesh.n_cells == 0:
            raise InputError(f"{path.name}: not a non-empty surface mesh")
        return cls(mesh.triangulate(), label, name or path.stem)

    @property
    def volume_ml(self) -> float:
        return float(abs(self.mesh.volume)) / 1000.0


def mask_surface(mask: sitk.Image, name: str, *, smoothing_iterations: int = 40, level: float = 0.5) -> pv.PolyData:
    """Closed, manifold surface of a binary mask (LPS mm): flying edges at ``level`` on the mask blurred by
    0.6 voxel, the largest shell, then Taubin smoothing. ``name`` only names the structure in errors."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        raise LabelError(f"structure '{name}' is absent from the label map")
    box = stats.GetBoundingBox(1)
    roi = sitk.Cast(sitk.RegionOfInterest(mask > 0, box[3:], box[:3]), sitk.sitkFloat32)
    roi = sitk.ConstantPad(roi, [2, 2, 2], [2, 2, 2], 0.0)
    roi = sitk.SmoothingRecursiveGaussian(roi, sigma=0.6 * float(min(mask.GetSpacing())))
    grid = pv.ImageData(dimensions=roi.GetSize(), spacing=roi.GetSpacing(), origin=roi.GetOrigin(),
                        direction_matrix=np.array(roi.GetDirection()).reshape(3, 3))
    grid.point_data["mask"] = sitk.GetArrayViewFromImage(roi).ravel()
    surf = grid.contour([level], scalars="mask", method="flying_edges").triangulate().clean()
    if surf.n_cells == 0:
        raise MeshError(f"structure '{name}' is too thin to give a surface")
    surf = surf.connectivity("largest")
    surf = surf.extract_surface(algorithm="dataset_surface").clean()
    if smoothing_iterations > 0:
        surf = surf.smooth_taubin(n_iter=smoothing_iterations, pass_band=0.05)
    surf.point_data.clear()
    surf.cell_data.clear()
    return surf


def _read_quietly(path: Path):
    """``pv.read`` without VTK's console, logging and warning output (a bad file is the caller's one error)."""
    import contextlib
    import logging
    import warnings

    verbosity = getattr(pv, "vtk_verbosity", None)
    with warnings.catch_warnings(), (verbosity("off") if verbosity else contextlib.nullcontext()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            return pv.read(path)
        finally:
            logging.disable(previous)


SURFACE_SUFFIXES = (".stl", ".vtp", ".obj", ".ply")


def labelmap_from_surfaces(surfaces, spacing_mm: float = 1.0, table: LabelTable | None = None) -> LabelMap:
    """Voxelise closed surfaces (SurfaceMesh, named by structure) into one label map (LPS mm grid).

    Later surfaces overwrite earlier ones, so list the organ before its tumour and vessels. A name
    missing from the label table gets a new id (>= 1000) in the returned table.
    """
    if spacing_mm <= 0:
        raise MeshError("voxel spacing must be positive")
    table = LabelTable(dict((table or LabelTable.default()).labels))
    for s in surfaces:
        if s.mesh.n_open_edges:
            raise MeshError(f"surface '{s.name}' is not closed ({s.mesh.n_open_edges} open edges): repair it first")
    bounds = np.array([s.mesh.bounds for s in surfaces])
    lo = bounds[:, 0::2].min(0) - 2 * spacing_mm
    hi = bounds[:, 1::2].max(0) + 2 * spacing_mm
    dims = np.ceil((hi - lo) / spacing_mm).astype(int) + 1
    if np.prod(dims) > 400_000_000:
        raise MeshError(f"voxel spacing {spacing_mm} mm is too fine for these surfaces")
    ref = pv.ImageData(dimensions=dims, spacing=(spacing_mm,) * 3, origin=lo)
    labels = np.zeros(int(np.prod(dims)), np.uint16)
    for s in surfaces:
        if s.name not in table:
            from .labels import Label
            new_id = max([999, *table.labels]) + 1
            table.labels[new_id] = Label(new_id, s.name)
        mask = s.mesh.voxelize_binary_mask(reference_volume=ref).point_data["mask"]
        labels[np.asarray(mask) > 0] = table.id_of(s.name)
    img = sitk.GetImageFromArray(labels.reshape(dims[2], dims[1], dims[0]))
    img.SetOrigin(tuple(lo))
    img.SetSpacing((spacing_mm,) * 3)
    lm = LabelMap(img, table)
    if not lm.present_ids():
        raise MeshError("the surfaces enclose no voxel at this spacing")
    return lm


def labelmap_to_image_data(labelmap: LabelMap) -> pv.ImageData:
    img = labelmap.image
    grid = pv.ImageData(dimensions=img.GetSize(), spacing=img.GetSpacing(), origin=img.GetOrigin(),
                        direction_matrix=np.array(img.GetDirection()).reshape(3, 3))
    grid.point_data["label"] = sitk.GetArrayViewFromImage(img).ravel().astype(np.int32)  # x fastest
    return grid


class TetMesh:
    """A tetrahedral mesh (pyvista UnstructuredGrid, LPS mm) with a per-cell ``label`` array."""

    def __init__(self, grid: pv.UnstructuredGrid, table: LabelTable):
        if grid.n_cells == 0:
            raise MeshError("tetrahedral mesh is empty")
        if "label" not in grid.cell_data:
            raise MeshError("tetrahedral mesh has no 'label' cell array")
        if not np.all(grid.celltypes == pv.CellType.TETRA):
            raise MeshError("volume mesh must contain only linear tetrahedra")
        self.grid = grid
        self.table = table

    @classmethod
    def from_arrays(cls, points_mm, tets, labels, table: LabelTable) -> "TetMesh":
        tets = np.asarray(tets, dtype=np.int64)
        cells = np.hstack([np.full((len(tets), 1), 4), tets]).ravel()
        grid = pv.UnstructuredGrid(cells, np.full(len(tets), pv.CellType.TETRA, np.uint8),
                                   np.asarray(points_mm, dtype=np.float64))
        grid.cell_data["label"] = np.asarray(labels, dtype=np.int32)
        return cls(grid, table)

    @classmethod
    def from_labelmap(cls, labelmap: LabelMap, structures, *, size_mm: float = 6.0,
                      organ: str | None = None, envelope_mm: float = 8.0, snap: bool = True,
                      refine_near=(), refine_band_mm: float = 10.0, refine_ratio: int = 2,
                      min_piece_fraction: float = 0.01) -> "TetMesh":
        """Mesh the union of ``structures`` (names) as one conforming, label-tagged tet mesh (the built-in
        Kuhn-grid mesher, ``surgtwin.tetgrid.mesh_grid``).

        With ``organ``, the other structures (tumour, vessels) are kept only inside the organ's
        envelope (the organ mask closed by ``envelope_mm`` with holes filled), so a vessel that
        leaves the organ is cut where it leaves; without it every structure is meshed as an organ of
        its own and neighbours share faces. Pieces holding at least ``min_piece_fraction`` of an organ's
        volume are kept. ``refine_near``: structures around which (within ``refine_band_mm``) elements
        are ``refine_ratio`` times smaller. With ``snap`` the outer boundary nodes are fitted to the label
        boundary (``surgtwin.meshfit``; no element below 10 degrees or inverted).
        """
        from .tetgrid import mesh_grid

        points, tets, labels = mesh_grid(labelmap, structures, size_mm=size_mm, organ=organ,
                                         envelope_mm=envelope_mm, snap=snap, refine_near=refine_near,
                                         refine_band_mm=refine_band_mm, refine_ratio=refine_ratio,
                                         min_piece_fraction=min_piece_fraction)
        mesh = cls.from_arrays(points, tets, labels, labelmap.table)
        refined = bool(refine_near) and refine_ratio > 1
        mesh.grid.field_data["mesher"] = np.array(["surgtwin-kuhn-grid" + ("+bisect" if refined else "")
                                                   + ("+snap" if snap else "")])
        mesh.grid.field_data["size_mm"] = np.array([size_mm])
        return mesh

    # -- IO --
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix.lower() != ".vtu":
            raise InputError(f"{path.name}: tetrahedral meshes are saved as .vtu")
        self.grid.field_data["label_ids"] = np.array(sorted(self.table.labels), dtype=np.int32)
        self.grid.field_data["label_names"] = np.array([self.table.name_of(i) for i in sorted(self.table.labels)])
        with atomic_path(path) as tmp:
            self.grid.save(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TetMesh":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such mesh file: {path}")
        if path.suffix.lower() not in (".vtu", ".vtk"):
            raise InputError(f"{path.name}: tetrahedral mesh must be .vtu or .vtk")
        try:
            grid = _read_quietly(path)
        except Exception:
            raise InputError(f"{path.name}: cannot be read as a mesh") from None
        if not isinstance(grid, pv.UnstructuredGrid):
            raise InputError(f"{path.name}: not an unstructured (tetrahedral) grid")
        if grid.n_cells == 0:  # VTK readers return an empty grid for a corrupt file
            raise InputError(f"{path.name}: cannot be read as a mesh (corrupt or empty)")
        table = LabelTable.default()
        if "label_ids" in grid.field_data:
            names = dict(zip(grid.field_data["label_ids"].tolist(), grid.field_data["label_names"].tolist()))
            table = LabelTable({i: lab for i, lab in table.labels.items()})
            for i, n in names.items():
                if i not in table.labels or table.labels[i].name != n:
                    from .labels import Label
                    table.labels[i] = Label(int(i), str(n))
        return cls(grid, table)

    # -- geometry --
    @property
    def points(self) -> np.ndarray:
        return np.asarray(self.grid.points, dtype=np.float64)

    @property
    def tets(self) -> np.ndarray:
        return self.grid.cells_dict[pv.CellType.TETRA].astype(np.int64)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.grid.cell_data["label"], dtype=np.int32)

    def tet_volumes_mm3(self) -> np.ndarray:
        return signed_volumes(self.points, self.tets)

    def volumes_ml(self) -> dict[str, float]:
        vol = np.abs(self.tet_volumes_mm3())
        return {self.table.name_of(l): float(vol[self.labels == l].sum() / 1000.0) for l in np.unique(self.labels)}

    def volume_errors_percent(self, labels: LabelMap) -> dict[str, float]:
        """Per region: 100 (mesh volume - label volume) / label volume, against the label map ``labels``."""
        label_ml = labels.volumes_ml()
        return {name: 100.0 * (ml - label_ml[name]) / label_ml[name] for name, ml in self.volumes_ml().items()}

    def boundary_faces(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Triangles (k, 3) on the boundary of the selected tets (faces used by exactly one of them)."""
        return boundary_faces(self.tets if mask is None else self.tets[mask])


def tet_faces(tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All 4 m faces of ``tets`` (outward for positive tets) and the index of the tet owning each."""
    faces = np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 3, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 1]]])
    return faces, np.tile(np.arange(len(tets)), 4)


def boundary_faces(tets: np.ndarray, *, return_owner: bool = False):
    """Faces of ``tets`` that belong to exactly one tetrahedron, oriented outward for positive tets
    (and, with ``return_owner``, the index of the tet owning each)."""
    faces, owner = tet_faces(tets)
    _, idx, counts = np.unique(np.sort(faces, axis=1), axis=0, return_index=True, return_counts=True)
    single = idx[counts == 1]
    return (faces[single], owner[single]) if return_owner else faces[single]


def surface_hd95_mm(surface: pv.PolyData, labelmap: LabelMap, names) -> float:
    """Symmetric 95% Hausdorff distance [mm] between a surface and the boundary of the named structures.

    Label boundary = faces between inside and outside voxels, represented by the midpoints of those
    voxel pairs; the surface is sampled at half the voxel size. Distances on the label side use an
    exact point-to-triangle search, on the surface side the distance map of the boundary points.
    """
    from scipy.spatial import cKDTree

    from .procedure import sample_triangles

    mask = np.pad(labelmap.mask(names), 1)  # a structure cut by the field of view is bounded there
    mids = []
    for axis in range(3):  # (z, y, x) array axes: inside/outside voxel pairs, midpoint of each pair
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        pair = np.argwhere(mask[tuple(lo)] != mask[tuple(hi)]).astype(float)
        pair[:, axis] += 0.5
        mids.append(pair)
    zyx = np.concatenate(mids) - 1.0
    boundary = index_to_physical(labelmap.image, zyx[:, ::-1])
    tri = surface.triangulate()
    faces = tri.faces.reshape(-1, 4)[:, 1:]
    samples, _, _ = sample_triangles(np.asarray(tri.points), faces, 0.5 * float(min(labelmap.image.GetSpacing())))
    _, closest = tri.find_closest_cell(boundary, return_closest_point=True)
    d_label = np.linalg.norm(closest - boundary, axis=1)
    d_surf = cKDTree(boundary).query(samples)[0]
    return float(np.percentile(np.concatenate([d_label, d_surf]), 95))


def tet_quality(points: np.ndarray, tets: np.ndarray) -> dict:
    """Per-element quality: min and max dihedral angle [deg], radius ratio 3 r_in / r_circ (1 for a
    regular tet), scaled Jacobian (min corner det(e1, e2, e3) / (|e1||e2||e3|), sqrt(2)-normalised so a
    regular tet gives 1) and the shortest altitude [mm] (for explicit time-step estimates)."""
    x = points[tets]
    faces = [(1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1)]            # face k is opposite vertex k
    n = np.stack([np.cross(x[:, b] - x[:, a], x[:, c] - x[:, a]) for a, b, c in faces], 1)
    area2 = np.linalg.norm(n, axis=2)                                # twice the face areas
    nu = n / np.maximum(area2[..., None], 1e-300)
    dihedral = [np.degrees(np.pi - np.arccos(np.clip((nu[:, k] * nu[:, l]).sum(1), -1, 1)))
                for k in range(4) for l in range(k + 1, 4)]
    dihedral = np.stack(dihedral, 1)
    vol = signed_volumes(points, tets)
    r_in = 3.0 * np.abs(vol) / np.maximum(0.5 * area2.sum(1), 1e-300)
    a, b, c = x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]
    la, lb, lc = (np.sum(v * v, 1) for v in (a, b, c))
    num = la[:, None] * np.cross(b, c) + lb[:, None] * np.cross(c, a) + lc[:, None] * np.cross(a, b)
    r_circ = np.linalg.norm(num, axis=1) / np.maximum(12.0 * np.abs(vol), 1e-300)
    corners = []
    for v in range(4):
        e = [x[:, w] - x[:, v] for w in range(4) if w != v]
        det = np.linalg.det(np.stack(e, 2)) * (1 if v % 2 == 0 else -1)
        corners.append(det / np.maximum(np.prod([np.linalg.norm(q, axis=1) for q in e], 0), 1e-300))
    return {"min_dihedral_deg": dihedral.min(1), "max_dihedral_deg": dihedral.max(1),
            "radius_ratio": 3.0 * r_in / np.maximum(r_circ, 1e-300),
            "scaled_jacobian": np.sqrt(2.0) * np.min(corners, axis=0),
            "min_altitude_mm": 3.0 * np.abs(vol) / np.maximum(0.5 * area2.max(1), 1e-300)}


def triangle_areas(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of each triangle (k,) in the units of ``points`` squared."""
    if len(faces) == 0:
        return np.zeros(0)
    a, b, c = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def largest_piece(tets: np.ndarray, keep: np.ndarray, volumes: np.ndarray, *, connectivity: str = "face") -> np.ndarray:
    """Mask of the kept tets in the connected piece of largest volume.

    ``connectivity="face"``: tets touching through a shared face; ``"node"``: through any shared node.
    """
    idx = np.flatnonzero(keep)
    out = np.zeros(len(tets), bool)
    if len(idx) == 0:
        return out
    sub = tets[idx]
    if connectivity == "face":
        faces, owner = tet_faces(sub)
        _, inv = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True)
        inv = inv.ravel()
        order = np.argsort(inv, kind="stable")
        same = inv[order][1:] == inv[order][:-1]
        a, b = owner[order][:-1][same], owner[order][1:][same]
        graph = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(len(idx), len(idx)))
    else:
        rows = np.repeat(np.arange(len(idx)), 4)
        inc = sp.csr_matrix((np.ones(len(rows)), (rows, sub.ravel())), shape=(len(idx), int(tets.max()) + 1))
        graph = inc @ inc.T
    _, comp = sp.csgraph.connected_components(graph, directed=False)
    best = np.argmax(np.bincount(comp, weights=np.abs(volumes[idx])))
    out[idx[comp == best]] = True
    return out
