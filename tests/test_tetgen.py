"""mesh.mesher: the built-in grid mesher, the optional TetGen extra and the fallback from one to the other."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import surgtwin.tetgenmesh as tgm
from surgtwin.config import MeshConfig, PhantomConfig
from surgtwin.errors import ConfigError
from surgtwin.labels import LabelTable
from surgtwin.phantom import make_phantom
from surgtwin.pipeline import mesh_quality
from surgtwin.tetgrid import volume_mesh
from surgtwin.volume import LabelMap

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig(spacing_mm=4.0))[1]


def _mesh(labels, structures, mesher, **kw):
    cfg = MeshConfig(organ=structures[0], structures=list(structures), size_mm=9.0, mesher=mesher, **kw)
    mesh = volume_mesh(labels, structures, cfg, cfg.size_mm)
    return mesh, mesh_quality(mesh, labels)


def test_surgtwin_never_imports_tetgen_unless_asked():
    import subprocess
    import sys

    code = ("import sys, surgtwin, surgtwin.cli, surgtwin.pipeline, surgtwin.tetgrid, surgtwin.tetgenmesh\n"
            "surgtwin.tetgenmesh.tetgen_version()\nprint('tetgen' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr[-1000:]


def test_auto_and_grid_are_the_grid_mesher(phantom):
    for mesher in ("auto", "grid"):
        mesh, q = _mesh(phantom, ["kidney_right"], mesher)
        assert q["mesher"] == "surgtwin-kuhn-grid+snap" and q["mesher_requested"] == mesher
        assert "fallback_reason" not in q and q["inverted_elements"] == 0


def test_unknown_mesher_is_a_config_error(phantom):
    with pytest.raises(ConfigError, match="mesh.mesher must be one of auto, grid, tetgen"):
        _mesh(phantom, ["kidney_right"], "fTetWild")


def test_tetgen_not_installed_falls_back_to_grid(phantom, monkeypatch, caplog):
    monkeypatch.setattr(tgm, "tetgen_version", lambda: None)
    with caplog.at_level(logging.WARNING, logger="surgtwin.tetgrid"):
        mesh, q = _mesh(phantom, ["kidney_right"], "tetgen")
    assert q["mesher"] == "surgtwin-kuhn-grid+snap" and q["mesher_requested"] == "tetgen"
    assert q["fallback_reason"] == "tetgen is not installed (pip install surgtwin[tetgen])"
    assert q["inverted_elements"] == 0 and q["min_dihedral_deg"] >= 10.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "using the grid mesher" in warnings[0]


@pytest.mark.parametrize("corners, reason", [
    ([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0.5, 0.02]], "min dihedral angle"),   # a flat sliver
    ([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], "inverted elements"),            # negative orientation
    ([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], "volume"),                       # good tet, wrong volume
])
def test_tetgen_result_missing_the_goals_falls_back(phantom, monkeypatch, corners, reason):
    monkeypatch.setattr(tgm, "tetgen_version", lambda: "0.0-test")
    one_tet = (np.array(corners, float) * 30.0, np.array([[0, 1, 2, 3]]), np.array([phantom.table.id_of("kidney_right")]))
    monkeypatch.setattr(tgm, "mesh_tetgen", lambda *a, **k: one_tet)
    mesh, q = _mesh(phantom, ["kidney_right"], "tetgen")
    assert q["mesher"] == "surgtwin-kuhn-grid+snap" and reason in q["fallback_reason"]
    assert q["fallback_reason"].startswith("tetgen mesh of 'kidney_right'")
    assert abs(q["regions"]["kidney_right"]["error_percent"]) <= 2.0


def _crash(*args):
    os._exit(139)   # the child dies at once, as when TetGen segfaults


def test_a_crash_inside_tetgen_is_a_mesh_error(monkeypatch, tmp_path):
    import multiprocessing

    import pyvista as pv

    from surgtwin.errors import MeshError

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the patched child needs the fork start method")
    monkeypatch.setattr(tgm, "_run_tetgen", _crash)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(MeshError, match=r"tetgen failed on 'kidney_right': it crashed \(exit code 139\)"):
        tgm._tetrahedralize([pv.Cube().triangulate()], [], 6.0, "kidney_right", True)
    assert list(tmp_path.iterdir()) == []          # the child's working folder is removed after a crash


def test_joint_and_refined_meshes_use_the_grid_mesher(phantom, monkeypatch):
    monkeypatch.setattr(tgm, "tetgen_version", lambda: "0.0-test")
    monkeypatch.setattr(tgm, "mesh_tetgen", lambda *a, **k: pytest.fail("tetgen must not run here"))
    _, q = _mesh(phantom, ["liver", "kidney_right"], "tetgen", joint=True)
    assert q["fallback_reason"] == "joint meshes (mesh.joint) need the grid mesher"
    assert set(q["regions"]) == {"liver", "kidney_right"}
    _, q = _mesh(phantom, ["kidney_right"], "tetgen", refine_near=["kidney_right"])
    assert q["fallback_reason"] == "mesh.refine_near needs the grid mesher"


def test_liver_with_tumour_by_tetgen_has_conforming_regions():
    pytest.importorskip("tetgen")
    phantom = make_phantom(PhantomConfig())[1]   # 2.5 mm: at 3-4 mm the tumour touches the liver's surface
    cfg = MeshConfig(organ="liver", structures=["liver", "liver_tumor"], size_mm=6.0, mesher="tetgen")
    mesh = volume_mesh(phantom, cfg.structures, cfg, cfg.size_mm)
    q = mesh_quality(mesh, phantom)
    assert q["mesher"].startswith("tetgen ") and "fallback_reason" not in q, q.get("fallback_reason")
    assert q["inverted_elements"] == 0 and q["min_dihedral_deg"] >= 10.0
    assert set(q["regions"]) == {"liver", "liver_tumor"}
    assert all(abs(r["error_percent"]) <= 2.0 for r in q["regions"].values()), q["regions"]
    from surgtwin.mesh import boundary_faces

    tumour = mesh.labels == phantom.table.id_of("liver_tumor")
    around = boundary_faces(mesh.tets[tumour])                  # the tumour's surface inside the mesh ...
    outer = {tuple(sorted(f)) for f in boundary_faces(mesh.tets)}
    corners = [[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]]
    liver = {tuple(sorted(f)) for f in mesh.tets[~tumour][:, corners].reshape(-1, 3)}
    shared = {tuple(sorted(f)) for f in around}
    assert shared and not shared & outer and shared <= liver   # ... is all faces shared with liver elements


def test_vessels_leaving_the_liver_fall_back_to_the_grid(phantom):
    pytest.importorskip("tetgen")
    _, q = _mesh(phantom, ["liver", "portal_vein_and_splenic_vein"], "tetgen")
    assert q["mesher"] == "surgtwin-kuhn-grid+snap" and "self-intersections" in q["fallback_reason"]
    assert "does one leave the organ?" in q["fallback_reason"]


def test_repair_slivers_peels_a_flat_boundary_tet_and_moves_an_interior_node():
    from scipy.spatial import Delaunay

    from surgtwin.mesh import boundary_faces
    from surgtwin.sim.blocks import orient_positive, signed_volumes

    corners = np.array([[i, j, k] for k in (0, 1) for j in (0, 1) for i in (0, 1)], float)
    pts = np.vstack([corners, [[0.5, 0.5, 0.5]]])
    tets = Delaunay(pts).simplices                   # 12 tets: the cube's face triangles coned to the centre
    pts[8] = [0.5, 0.5, 0.03]                        # centre pushed almost onto the bottom: 2 interior slivers
    top = next(f for f in boundary_faces(orient_positive(pts, tets)[0]) if pts[f, 2].min() == 1.0)
    apex = len(pts)                                  # a flat tet glued onto a top triangle (3 boundary faces)
    pts = np.vstack([pts, [pts[top].mean(0) + [0, 0, 0.01]]])
    tets, _ = orient_positive(pts, np.vstack([tets, [[*top, apex]]]))
    assert tgm.dihedral_angles(pts, tets).min(1)[-1] < 2.0 and (tgm.dihedral_angles(pts, tets).min(1) < 10).sum() >= 3
    for step in (0.0, 0.1):                          # boundary nodes fixed / free to move 0.1 x their edges
        new_pts, new_tets, _ = tgm.repair_slivers(pts, tets, boundary_step=step)
        assert tgm.dihedral_angles(new_pts, new_tets).min() >= 10.0 and (signed_volumes(new_pts, new_tets) > 0).all()
        assert len(new_tets) == len(tets) - 1 and len(new_pts) == len(pts) - 1   # the glued sliver peeled
        assert np.linalg.norm(new_pts[:8] - corners, axis=1).max() <= 0.15 * step / 0.1
    new_pts, _, _ = tgm.repair_slivers(pts, tets, boundary_step=0.0)
    assert new_pts[8, 2] > 0.2                       # with the boundary fixed, the centre node moved up


def test_edge_removal_turns_three_tets_with_a_sliver_into_two_good_ones():
    # ring triangle r0 r1 r2 around edge (a, b); the edge passes just inside r0 r1, so tet (a, b, r0, r1) is flat
    pts = np.array([[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, 0.02, 1], [0.5, 0.02, -1]], float)
    from surgtwin.sim.blocks import orient_positive, signed_volumes

    tets, vol = orient_positive(pts, np.array([[3, 4, 0, 1], [3, 4, 1, 2], [3, 4, 2, 0]]))
    q = tgm.dihedral_angles(pts, tets).min(1)
    assert q.min() < 3.0
    new = tgm._remove_edge(pts, tets, np.arange(3), 3, 4, float(q.min()))
    assert new.shape == (2, 4) and (signed_volumes(pts, new) > 0).all()
    assert signed_volumes(pts, new).sum() == pytest.approx(np.abs(vol).sum(), rel=1e-12)
    assert tgm.dihedral_angles(pts, new).min() > 20.0
    assert {tuple(sorted(t)) for t in new} == {(0, 1, 2, 3), (0, 1, 2, 4)}


def test_real_kidney_by_tetgen(tmp_path):
    pytest.importorskip("tetgen")
    path = DATA / "ct_abdomen_3mm" / "reference_seg.nii.gz"
    if not path.is_file():
        pytest.skip(f"real test data not found: {path}")
    from surgtwin.cli import main

    ids = json.loads((DATA / "reference_label_ids.json").read_text())["total"]
    labels = LabelMap.load(path, table=LabelTable.from_json_dict(ids))
    assert main(["mesh", str(path), "-o", str(tmp_path / "out"), "--organs", "kidney_right", "--size", "8",
                 "--mesher", "tetgen"]) in (0, None)
    q = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert q["mesher"].startswith("tetgen ") and q["mesher_requested"] == "tetgen" and "fallback_reason" not in q
    assert q["inverted_elements"] == 0 and q["min_dihedral_deg"] >= 10.0
    assert abs(q["regions"]["kidney_right"]["error_percent"]) <= 2.0
    assert q["regions"]["kidney_right"]["label_ml"] == pytest.approx(labels.volumes_ml()["kidney_right"], abs=1e-3)
    assert q["boundary_hd95_mm"] <= q["voxel_mm"]
    from surgtwin.mesh import TetMesh, tet_faces

    mesh = TetMesh.load(tmp_path / "out" / "volume.vtu")
    _, counts = np.unique(np.sort(tet_faces(mesh.tets)[0], 1), axis=0, return_counts=True)
    assert counts.max() == 2                                   # conforming: no face shared by three tets
    surface = mesh.grid.extract_surface(algorithm="dataset_surface")
    assert surface.n_open_edges == 0 and surface.is_manifold   # one closed boundary
