"""Meshing (surgtwin.mesh): Kuhn-grid tet meshes and surfaces from a real liver and the phantom."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from surgtwin.config import PhantomConfig
from surgtwin.errors import InputError, LabelError, MeshError
from surgtwin.labels import Label, LabelTable
from surgtwin.mesh import SurfaceMesh, TetMesh, boundary_faces, distance_to_labels_mm, tet_quality
from surgtwin.phantom import make_phantom
from surgtwin.volume import LabelMap

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEPATIC = ["liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein"]


@pytest.fixture(scope="module")
def real_liver():
    path = DATA / "ct_abdomen_3mm" / "reference_seg.nii.gz"
    if not path.is_file():
        pytest.skip(f"real test data not found: {path}")
    lm = LabelMap.load(path)
    return lm, TetMesh.from_labelmap(lm, ["liver"], size_mm=5.0)


@pytest.fixture(scope="module")
def phantom():
    _, lm = make_phantom(PhantomConfig(spacing_mm=4.0))
    return lm, TetMesh.from_labelmap(lm, HEPATIC, size_mm=8.0, organ="liver")


def _face_components(tets: np.ndarray) -> int:
    """Number of face-connected components (independent of the mesher's own check)."""
    faces = np.sort(np.concatenate([tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]]), 1)
    owner = np.tile(np.arange(len(tets)), 4)
    _, inv = np.unique(faces, axis=0, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    same = inv[order][1:] == inv[order][:-1]
    a, b = owner[order][:-1][same], owner[order][1:][same]
    g = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(len(tets), len(tets)))
    return sp.csgraph.connected_components(g, directed=False)[0]


def _label_centroid_mm(lm: LabelMap, label_id: int) -> np.ndarray:
    zyx = np.argwhere(lm.array() == label_id)
    img = lm.image
    pts = [img.TransformContinuousIndexToPhysicalPoint([float(i), float(j), float(k)]) for k, j, i in zyx[::7]]
    return np.mean(pts, axis=0)


def test_real_liver_mesh(real_liver, tmp_path):
    lm, mesh = real_liver
    label_ml = lm.volumes_ml()["liver"]                          # 1043.1 mL
    vols = mesh.volumes_ml()
    assert set(vols) == {"liver"}
    assert vols["liver"] == pytest.approx(label_ml, rel=0.01)     # measured +0.1 %
    tv = mesh.tet_volumes_mm3()
    assert (tv > 0).all()                                          # no inverted (or flat) tets
    assert np.median(tv) == pytest.approx(5.0 ** 3 / 6, rel=1e-6)  # interior tets are 1/6 of a 5 mm cube
    assert np.mean(np.isclose(tv, 5.0 ** 3 / 6)) > 0.45             # the rest: fitted to the boundary (0.52)
    assert tet_quality(mesh.points, mesh.tets)["min_dihedral_deg"].min() >= 10.0 - 1e-9
    assert _face_components(mesh.tets) == 1
    assert mesh.grid.connectivity().cell_data["RegionId"].max() == 0
    assert mesh.grid.n_cells > 40000
    # physical placement (LPS, this image has a flipped x/y direction): centroids agree
    cent = np.average(mesh.points[mesh.tets].mean(1), axis=0, weights=tv)
    assert np.linalg.norm(cent - _label_centroid_mm(lm, 5)) < 2.0

    path = mesh.save(tmp_path / "liver.vtu")
    back = TetMesh.load(path)
    assert back.grid.n_cells == mesh.grid.n_cells and np.allclose(back.points, mesh.points)
    assert np.array_equal(back.labels, mesh.labels) and np.array_equal(back.tets, mesh.tets)
    assert back.table.name_of(5) == "liver" and back.volumes_ml() == pytest.approx(vols)
    assert str(back.grid.field_data["mesher"][0]) == "surgtwin-kuhn-grid+snap"
    assert float(back.grid.field_data["size_mm"][0]) == 5.0
    assert [p.name for p in tmp_path.iterdir()] == ["liver.vtu"]   # atomic write: no temp file left


def test_vtu_round_trip_keeps_custom_label_names(tmp_path):
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], float)
    tets = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    table = LabelTable({5: Label(5, "leber"), 300: Label(300, "herd", "lesion")})
    mesh = TetMesh.from_arrays(pts, tets, [5, 300], table)
    back = TetMesh.load(mesh.save(tmp_path / "m.vtu"))
    assert back.labels.tolist() == [5, 300]
    assert back.table.name_of(5) == "leber" and back.table.name_of(300) == "herd"
    assert set(back.volumes_ml()) == {"leber", "herd"}
    with pytest.raises(InputError):
        mesh.save(tmp_path / "m.stl")
    with pytest.raises(InputError):
        TetMesh.load(tmp_path / "missing.vtu")
    (tmp_path / "junk.vtu").write_text("not a mesh")
    with pytest.raises(InputError, match="junk.vtu"):
        TetMesh.load(tmp_path / "junk.vtu")
    good = (tmp_path / "m.vtu").read_bytes()
    (tmp_path / "cut.vtu").write_bytes(good[: len(good) // 2])   # truncated download
    with pytest.raises(InputError, match="cut.vtu"):
        TetMesh.load(tmp_path / "cut.vtu")
    (tmp_path / "junk.vtp").write_text("not a surface")
    with pytest.raises(InputError, match="junk.vtp"):
        SurfaceMesh.load(tmp_path / "junk.vtp")


def test_phantom_regions_and_volumes(phantom):
    lm, mesh = phantom
    lv, mv = lm.volumes_ml(), mesh.volumes_ml()
    assert set(mv) == set(HEPATIC)                                 # tumour and both vessel trees are regions
    assert mv["liver_tumor"] == pytest.approx(lv["liver_tumor"], rel=0.15)   # 14.3 mL, measured +5 %
    assert mv["liver"] == pytest.approx(lv["liver"], rel=0.05)    # 1413 mL, measured -0.7 %
    union_labels = sum(lv[n] for n in HEPATIC)
    assert sum(mv.values()) == pytest.approx(union_labels, rel=0.05)  # 1473 mL, measured -1.0 %
    assert (mesh.tet_volumes_mm3() > 0).all()
    assert _face_components(mesh.tets) == 1
    # the tumour is a conforming region inside the liver: it has no face on the outer surface
    outer = np.unique(mesh.boundary_faces())
    tumour_nodes = np.unique(mesh.tets[mesh.labels == lm.table.id_of("liver_tumor")])
    assert not np.isin(tumour_nodes, outer).any()


def test_vessels_outside_envelope_dropped(phantom):
    lm, mesh = phantom
    pv_id = lm.table.id_of("portal_vein_and_splenic_vein")
    cent = mesh.points[mesh.tets].mean(1)
    d = distance_to_labels_mm(lm, "liver", cent[mesh.labels == pv_id])
    assert len(d) > 100
    assert d.max() <= 10.0                                        # measured 5.7 mm at 8 mm elements
    # without the organ envelope the splenic vein, far outside the liver, is meshed too
    loose = TetMesh.from_labelmap(lm, HEPATIC, size_mm=8.0)
    cent = loose.points[loose.tets].mean(1)
    assert distance_to_labels_mm(lm, "liver", cent[loose.labels == pv_id]).max() > 20.0
    assert loose.volumes_ml()["portal_vein_and_splenic_vein"] > mesh.volumes_ml()["portal_vein_and_splenic_vein"]


def test_phantom_liver_surface(phantom):
    lm, _ = phantom
    label_ml = lm.volumes_ml()["liver"]
    for iters in (0, 20):
        surf = SurfaceMesh.from_labelmap(lm, "liver", smoothing_iterations=iters)
        assert surf.volume_ml == pytest.approx(label_ml, rel=0.03)  # measured +1.8 % at 4 mm voxels
        assert surf.label == 5 and surf.name == "liver"
        edges = surf.mesh.extract_feature_edges(boundary_edges=True, feature_edges=False,
                                                manifold_edges=False, non_manifold_edges=True)
        assert edges.n_cells == 0 and surf.mesh.is_manifold            # watertight and manifold
    lo, hi = np.array(surf.mesh.bounds).reshape(3, 2).T
    zyx = np.argwhere(lm.mask("liver"))
    img = lm.image
    vlo = np.array(img.TransformIndexToPhysicalPoint([int(v) for v in zyx.min(0)[::-1]]))
    vhi = np.array(img.TransformIndexToPhysicalPoint([int(v) for v in zyx.max(0)[::-1]]))
    assert np.allclose(lo, vlo, atol=4.0) and np.allclose(hi, vhi, atol=4.0)  # in physical mm


def test_real_liver_surface(real_liver, tmp_path):
    lm, _ = real_liver
    surf = SurfaceMesh.from_labelmap(lm, "liver", smoothing_iterations=0)
    assert surf.volume_ml == pytest.approx(lm.volumes_ml()["liver"], rel=0.03)
    path = surf.save(tmp_path / "liver.vtp")
    back = SurfaceMesh.load(path, label=5, name="liver")
    assert back.mesh.n_cells == surf.mesh.n_cells and back.volume_ml == pytest.approx(surf.volume_ml)
    with pytest.raises(InputError):
        surf.save(tmp_path / "liver.vtu")


def test_absent_structure_named(real_liver, phantom):
    lm, _ = real_liver
    with pytest.raises(LabelError, match="liver_tumor"):
        TetMesh.from_labelmap(lm, ["liver_tumor"], size_mm=9.0)
    with pytest.raises(LabelError, match="liver_tumor"):
        SurfaceMesh.from_labelmap(lm, "liver_tumor")
    with pytest.raises(LabelError, match="no_such_organ"):
        TetMesh.from_labelmap(lm, ["no_such_organ"], size_mm=9.0)
    plm, _ = phantom
    with pytest.raises(MeshError):
        TetMesh.from_labelmap(plm, ["liver"], size_mm=0.0)


def test_boundary_faces_single_tet():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    tet = np.array([[0, 1, 2, 3]])
    faces = boundary_faces(tet)
    assert faces.shape == (4, 3)
    assert {tuple(sorted(f)) for f in faces} == {(1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2)}
    centre = pts.mean(0)
    for f in faces:
        n = np.cross(pts[f[1]] - pts[f[0]], pts[f[2]] - pts[f[0]])
        assert n @ (pts[f].mean(0) - centre) > 0                   # outward
    # two tets sharing a face: the shared face is interior
    assert len(boundary_faces(np.array([[0, 1, 2, 3], [1, 2, 3, 4]]))) == 6


def test_boundary_of_kuhn_cube_is_closed_and_outward():
    from surgtwin.sim.blocks import box_mesh

    pts, tets = box_mesh(2, (2.0, 3.0, 4.0))
    mesh = TetMesh.from_arrays(pts, tets, np.full(len(tets), 5), LabelTable.default())
    faces = mesh.boundary_faces()
    assert len(faces) == 6 * 4 * 2                                 # 6 sides x 4 squares x 2 triangles
    a, b, c = pts[faces[:, 0]], pts[faces[:, 1]], pts[faces[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()
    assert area == pytest.approx(2 * (2 * 3 + 3 * 4 + 2 * 4))
    # divergence theorem with outward faces gives the box volume
    signed = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert signed == pytest.approx(24.0)
    assert mesh.volumes_ml() == {"liver": pytest.approx(0.024)}
    sub = mesh.boundary_faces(mesh.tets[:, 0] == 0)                # a subset: still a closed surface
    assert len(sub) > 0 and len(sub) % 2 == 0


def test_mesh_from_closed_surfaces(tmp_path):
    """An STL organ with an STL tumour inside becomes a tagged label map and a conforming tet mesh."""
    import pyvista as pv

    from surgtwin.cli import main
    from surgtwin.mesh import SurfaceMesh, labelmap_from_surfaces

    pv.Sphere(radius=40.0, theta_resolution=90, phi_resolution=90).save(tmp_path / "liver.stl")
    pv.Sphere(radius=10.0, center=(10.0, 0.0, 0.0), theta_resolution=60, phi_resolution=60).save(
        tmp_path / "liver_tumor.stl")
    surfaces = [SurfaceMesh.load(tmp_path / f"{n}.stl", name=n) for n in ("liver", "liver_tumor")]
    lm = labelmap_from_surfaces(surfaces, 1.0)
    vol = lm.volumes_ml()
    tumour = 4 / 3 * np.pi * 10.0 ** 3 / 1000
    assert vol["liver_tumor"] == pytest.approx(tumour, rel=0.03)
    assert vol["liver"] + vol["liver_tumor"] == pytest.approx(4 / 3 * np.pi * 40.0 ** 3 / 1000, rel=0.01)

    out = tmp_path / "mesh"
    assert main(["mesh", str(tmp_path / "liver.stl"), str(tmp_path / "liver_tumor.stl"), "mesh.size_mm=4",
                 "-o", str(out)]) == 0
    mesh = TetMesh.load(out / "volume.vtu")
    mv = mesh.volumes_ml()
    assert mv["liver_tumor"] == pytest.approx(tumour, rel=0.08)
    assert (mesh.tet_volumes_mm3() > 0).all()

    pv.Plane().save(tmp_path / "open.stl")
    with pytest.raises(MeshError, match="not closed"):
        labelmap_from_surfaces([SurfaceMesh.load(tmp_path / "open.stl")], 1.0)


@pytest.mark.parametrize("name", ["liver", "spleen", "kidney_left", "kidney_right", "aorta"])
def test_real_surfaces_are_watertight_manifold(real_liver, name):
    """The shared reference labels (non-manifold as voxels) give closed, manifold surfaces."""
    lm, _ = real_liver
    surf = SurfaceMesh.from_labelmap(lm, name)
    assert surf.mesh.n_open_edges == 0 and surf.mesh.is_manifold
    assert surf.volume_ml == pytest.approx(lm.volumes_ml()[name], rel=0.08)


def test_tet_quality_measures():
    from surgtwin.mesh import tet_quality

    regular = np.array([[1, 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]], float)
    q = tet_quality(regular, np.array([[0, 1, 2, 3]]))
    assert q["min_dihedral_deg"][0] == pytest.approx(np.degrees(np.arccos(1 / 3)), abs=1e-9)  # 70.53
    assert q["radius_ratio"][0] == pytest.approx(1.0) and q["scaled_jacobian"][0] == pytest.approx(1.0)
    sliver = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0.5, 1e-3]], float)
    qs = tet_quality(sliver, np.array([[0, 1, 2, 3]]))
    assert qs["min_dihedral_deg"][0] < 1.0 and qs["radius_ratio"][0] < 0.05


def test_quality_of_the_liver_mesh(real_liver):
    from surgtwin.pipeline import mesh_quality

    lm, mesh = real_liver
    q = mesh_quality(mesh, lm)
    assert q["inverted_elements"] == 0 and q["min_dihedral_deg"] >= 10.0 and q["min_scaled_jacobian"] > 0
    assert 1e-5 < q["explicit_stable_dt_liver_s"] < 1e-2
    # dt = shortest altitude / dilatational wave speed of liver (E 6 kPa, nu 0.47, rho 1060 kg/m3)
    e, nu, rho = 6000.0, 0.47, 1060.0
    c = np.sqrt(e * (1 - nu) / ((1 + nu) * (1 - 2 * nu)) / rho)          # sqrt((lambda + 2 mu) / rho)
    dt = q["explicit_dt_liver"]
    assert dt["wave_speed_m_s"] == pytest.approx(c, rel=1e-4)
    assert dt["stable_dt_s"] == pytest.approx(dt["min_length_mm"] * 1e-3 / c, rel=1e-3)
    assert dt["stable_dt_s"] == pytest.approx(q["explicit_stable_dt_liver_s"])
    assert dt["stable_dt_s"] <= dt["element_dt_percentiles_s"]["p1"]
    dist = q["dihedral_distribution"]
    hist = dist["histogram_all_angles"]
    assert sum(hist["counts"]) == 6 * q["tets"] and hist["counts"][0] == 0    # no angle below 10 degrees
    pct = dist["min_per_element_percentiles_deg"]
    assert pct["p0"] == pytest.approx(q["min_dihedral_deg"], abs=0.01) and pct["p50"] > 40.0
    assert abs(q["regions"]["liver"]["error_percent"]) < 2.0


def test_surface_distance_to_label_boundary(real_liver):
    """Surfaces within a voxel of the label boundary (HD95); the measure sees a shifted surface."""
    from surgtwin.mesh import surface_hd95_mm

    lm, _ = real_liver
    voxel = min(lm.image.GetSpacing())
    surf = SurfaceMesh.from_labelmap(lm, "liver").mesh
    assert surface_hd95_mm(surf, lm, ["liver"]) <= voxel                  # measured 0.58 voxel
    assert surface_hd95_mm(surf.translate((0, 0, 2 * voxel), inplace=False), lm, ["liver"]) > 1.5 * voxel


def test_boundary_snapping_fits_the_label_boundary(tmp_path):
    """A ball label meshed at 6 mm: snapping brings the boundary within a voxel (HD95) and keeps the
    volume and element quality."""
    import SimpleITK as sitk

    from surgtwin.mesh import surface_hd95_mm

    n, sp = 48, 2.0
    ref = sitk.Image((n, n, n), sitk.sitkUInt8)
    ref.SetSpacing((sp,) * 3)
    g = sp * (np.arange(n) - n / 2 + 0.5)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    table = LabelTable.default()
    lm = LabelMap.from_array(np.where(x ** 2 + y ** 2 + z ** 2 <= 35.0 ** 2, table.id_of("liver"), 0), ref, table)
    hd = {}
    for snap in (False, True):
        mesh = TetMesh.from_labelmap(lm, ["liver"], size_mm=6.0, snap=snap)
        hd[snap] = surface_hd95_mm(mesh.grid.extract_surface(algorithm="dataset_surface"), lm, ["liver"])
        assert mesh.volumes_ml()["liver"] == pytest.approx(lm.volumes_ml()["liver"], rel=0.02)
        assert tet_quality(mesh.points, mesh.tets)["min_dihedral_deg"].min() >= 10.0 - 1e-9
        assert (mesh.tet_volumes_mm3() > 0).all()
    assert hd[True] <= sp < hd[False]


def _reference(case: str, key: str) -> LabelMap:
    import json

    from surgtwin.labels import LabelTable

    path = DATA / case / "reference_seg.nii.gz"
    if not path.is_file():
        pytest.skip(f"real test data not found: {path}")
    ids = json.loads((DATA / "reference_label_ids.json").read_text())
    return LabelMap.load(path, table=LabelTable.from_json_dict(ids[key]))


@pytest.mark.parametrize("case,key,name,size", [("mr_abdomen_3mm", "total_mr", "liver", 6.0),
                                                ("ct_abdomen_3mm", "total", "aorta", 4.0),
                                                ("ct_abdomen_3mm", "total", "kidney_left", 6.0)])
def test_volume_kept_on_thin_and_cut_structures(case, key, name, size):
    """The former outliers (MR liver with a lobe cut off by the field of view -3.6 %, aorta -2.3 %,
    kidney -2.0 %) now hold the label volume within 2 % (measured within 0.2 %), fitted within a voxel."""
    from surgtwin.mesh import surface_hd95_mm

    lm = _reference(case, key)
    mesh = TetMesh.from_labelmap(lm, [name], size_mm=size, organ=name)
    assert mesh.volumes_ml()[name] == pytest.approx(lm.volumes_ml()[name], rel=0.02)
    assert (mesh.tet_volumes_mm3() > 0).all()
    assert tet_quality(mesh.points, mesh.tets)["min_dihedral_deg"].min() >= 10.0 - 1e-9
    hd = surface_hd95_mm(mesh.grid.extract_surface(algorithm="dataset_surface"), lm, [name])
    assert hd <= min(lm.image.GetSpacing())
    if name == "liver":                                            # both pieces of the MR liver are meshed
        assert _face_components(mesh.tets) == 2


def test_refinement_near_the_tumour_is_graded_and_conforming(phantom):
    from surgtwin.mesh import triangle_areas

    lm, _ = phantom
    kw = dict(size_mm=8.0, organ="liver", snap=False)
    coarse = TetMesh.from_labelmap(lm, HEPATIC, **kw)
    fine = TetMesh.from_labelmap(lm, HEPATIC, refine_near=["liver_tumor"], refine_ratio=2, refine_band_mm=8.0, **kw)
    assert len(coarse.tets) < len(fine.tets) < 3 * len(coarse.tets)
    # conforming: no hanging node, so the boundary is the coarse one (same area, nothing exposed inside)
    area = [triangle_areas(m.points, m.boundary_faces()).sum() for m in (coarse, fine)]
    assert area[1] == pytest.approx(area[0], rel=1e-9)
    assert sum(fine.volumes_ml().values()) == pytest.approx(sum(coarse.volumes_ml().values()), rel=1e-9)
    # graded: Kuhn tets of half the size at the tumour, the coarse size in the bulk
    vol = fine.tet_volumes_mm3()
    tid = lm.table.id_of("liver_tumor")
    assert np.median(vol[fine.labels == tid]) == pytest.approx(4.0 ** 3 / 6, rel=1e-6)
    assert np.median(vol) == pytest.approx(8.0 ** 3 / 6, rel=1e-6)
    assert tet_quality(fine.points, fine.tets)["min_dihedral_deg"].min() >= 45.0 - 1e-6   # bisected Kuhn tets
    assert fine.volumes_ml()["liver_tumor"] == pytest.approx(lm.volumes_ml()["liver_tumor"], rel=0.15)
    snapped = TetMesh.from_labelmap(lm, HEPATIC, size_mm=8.0, organ="liver", refine_near=["liver_tumor"],
                                    refine_band_mm=8.0)
    assert tet_quality(snapped.points, snapped.tets)["min_dihedral_deg"].min() >= 10.0 - 1e-9
    assert (snapped.tet_volumes_mm3() > 0).all() and "+bisect" in str(snapped.grid.field_data["mesher"][0])
    with pytest.raises(MeshError, match="refine ratio"):
        TetMesh.from_labelmap(lm, HEPATIC, size_mm=8.0, refine_near=["liver_tumor"], refine_ratio=3)


def test_joint_organs_share_interface_faces(tmp_path, capsys):
    """Liver and right kidney of the CT reference meshed together: one node set, faces shared at the
    interface, each cell tagged by organ, both volumes within 2 % of the labels (CLI --joint)."""
    import json

    from surgtwin.cli import main
    from surgtwin.mesh import tet_faces

    lm = _reference("ct_abdomen_3mm", "total")
    lm.save(tmp_path / "labels.nii.gz")
    out = tmp_path / "joint"
    assert main(["mesh", str(tmp_path / "labels.nii.gz"), "--organs", "liver,kidney_right", "--joint",
                 "--size", "6", "-o", str(out)]) == 0
    mesh = TetMesh.load(out / "volume.vtu")
    names = {mesh.table.name_of(i) for i in np.unique(mesh.labels)}
    assert names == {"liver", "kidney_right"}
    faces, owner = tet_faces(mesh.tets)
    _, inv, counts = np.unique(np.sort(faces, 1), axis=0, return_inverse=True, return_counts=True)
    assert counts.max() == 2                                       # every face in at most two tets
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    pair = inv[order][1:] == inv[order][:-1]
    la, lb = mesh.labels[owner[order][:-1][pair]], mesh.labels[owner[order][1:][pair]]
    assert (la != lb).sum() > 50                                   # liver-kidney faces shared (130)
    assert len(np.unique(np.round(mesh.points, 6), axis=0)) == len(mesh.points)   # no duplicate nodes
    q = json.loads((out / "quality.json").read_text())
    for name in ("liver", "kidney_right"):
        assert abs(q["regions"][name]["error_percent"]) < 2.0
    assert q["inverted_elements"] == 0 and q["min_dihedral_deg"] >= 10.0
    assert main(["mesh", str(tmp_path / "labels.nii.gz"), "--organs", "liver,liver_tumor", "--joint",
                 "-o", str(tmp_path / "bad")]) == 2                 # an absent organ: one-line error
    assert "liver_tumor" in capsys.readouterr().err
