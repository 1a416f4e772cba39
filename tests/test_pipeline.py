"""The whole pipeline, small: phantom -> labels -> mesh -> rehearsal -> report, via API and CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from surgtwin.cli import main
from surgtwin.config import PhantomConfig, RunConfig
from surgtwin.pipeline import plan

pytestmark = pytest.mark.slow


def small_config(**solver) -> RunConfig:
    cfg = RunConfig()
    cfg.case.phantom = PhantomConfig(spacing_mm=4.0)
    cfg.mesh.size_mm = 9.0
    cfg.report.image_size = [480, 360]
    for k, v in solver.items():
        setattr(cfg.solver, k, v)
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "case"
    report = plan(small_config(), out)
    return out, report


def test_report_numbers(run_dir):
    out, report = run_dir
    m = report.metrics
    assert m["volume_bookkeeping_error_ml"] < 1e-9
    assert m["removed_volume_ml"] + m["remnant_volume_ml"] == pytest.approx(m["organ_volume_ml"], rel=1e-12)
    # the phantom tumour (r = 15 mm) plus a 10 mm margin is a small wedge of a ~1.5 L liver
    assert 1200 < m["parenchyma_volume_ml"] < 1800
    tumour_and_margin_ml = 4 / 3 * np.pi * 25.0 ** 3 / 1000
    assert 0.8 * tumour_and_margin_ml < m["removed_volume_ml"] < 3.0 * tumour_and_margin_ml
    assert 80.0 < m["remnant_percent"] < 99.0
    assert m["margin_achieved_mm"] >= m["margin_planned_mm"] == 10.0
    assert m["margin_achieved_mm"] < 10.0 + 9.0 * np.sqrt(3)  # within one element diagonal
    assert m["inverted_elements"] == 0
    assert 0.0 < m["max_shift_mm"] < 30.0 and 0.0 < m["peak_strain"] < 1.0
    for solve in ("preop", "postop"):
        s = report.solver[solve]
        assert s["converged"] and s["relative_residual"] <= 1e-6
        assert s["residual_history"][-1] < 1e-3 * s["residual_history"][0]
    assert report.model["fixed_nodes"] > 0 and report.model["materials"]["liver"]["youngs_kpa"] == 6.0


def test_run_folder_contents(run_dir):
    out, report = run_dir
    for rel in ("ct.nii.gz", "labels.nii.gz", "labels.json", "labels_qc.png", "dicom", "mesh/volume.vtu", "mesh/quality.json",
                "mesh/surfaces/liver_tumor.vtp", "sim/model.vtu", "sim/preop.vtu", "sim/postop.vtu",
                "sim/removed.vtu", "sim/cut_surface.vtp", "report.json", "report.html", "images/risk.png"):
        assert (out / rel).exists(), rel
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 8  # 5 renders + 3 plots
    assert f"{report.metrics['remnant_percent']:.1f} %" in html
    quality = json.loads((out / "mesh" / "quality.json").read_text())
    assert quality["inverted_elements"] == 0
    assert abs(quality["regions"]["liver"]["error_percent"]) < 5.0


def test_report_images_show_the_organ(run_dir):
    import pyvista as pv

    out, _ = run_dir
    imgs = {n: np.asarray(pv.read(out / "images" / f"{n}.png").active_scalars) for n in ("deformation", "risk", "strain")}
    for name, px in imgs.items():
        rgb = px[:, :3].astype(int)
        coloured = np.abs(rgb - rgb.mean(axis=1, keepdims=True)).sum(axis=1) > 60  # not white/grey
        assert coloured.mean() > 0.03, f"{name}: organ not visible"
    assert not np.array_equal(imgs["deformation"], imgs["strain"])


def test_cli_run_view_report_simulate(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "-o", str(out), "case.phantom.spacing_mm=4", "mesh=coarse", "report.images=false",
               "procedure=resect_plane"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and "remnant" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["margin_achieved_mm"] >= 10.0
    assert (out / "config.yaml").read_text().count("resect_plane") >= 1
    assert "surgtwin run" in (out / "surgtwin.log").read_text()

    shot = tmp_path / "view.png"
    assert main(["view", str(out), "--screenshot", str(shot), "--overlay", "risk"]) == 0
    assert shot.stat().st_size > 10_000
    assert main(["report", str(out), "report.image_size=[320,240]"]) == 0
    assert (out / "images" / "strain.png").is_file()

    sim = tmp_path / "sim"
    assert main(["simulate", str(out / "mesh"), "--labels", str(out / "labels.nii.gz"), "-o", str(sim),
                 "procedure=resect_tumor"]) == 0
    again = json.loads((sim / "report.json").read_text())
    assert again["metrics"]["organ_volume_ml"] == pytest.approx(report["metrics"]["organ_volume_ml"])
    assert again["metrics"]["removed_volume_ml"] < report["metrics"]["removed_volume_ml"]  # sphere < plane


def test_saved_model_and_state_reload_in_equilibrium(run_dir):
    """Model and post-op State written by the run reload into a solve that is already converged."""
    from surgtwin.biomech import load_model, load_state
    from surgtwin.sim import StaticSolver

    out, report = run_dir
    spec = load_model(out / "sim" / "model.vtu")
    assert spec.alive.sum() < len(spec.alive)  # the saved model is the remnant's
    x = load_state(out / "sim" / "postop.vtu", spec)
    model = spec.finalize("cpu")
    solver = StaticSolver(model, tol=1e-6)
    rep = solver.solve(model.state(x))
    assert rep.newton_iterations <= 1 and rep.relative_residual <= 1e-6
    pre = load_state(out / "sim" / "preop.vtu", spec)
    shift_mm = np.linalg.norm(x - pre, axis=1).max() * 1e3
    assert shift_mm == pytest.approx(report.metrics["max_shift_mm"], rel=1e-6)


def test_cli_bench_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--sizes", "3,4", "-o", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["tets"] for r in rows] == [6 * 27, 6 * 64]
    assert all(r["relative_residual"] <= 1e-6 and r["force_ms"] > 0 for r in rows)
    assert "K*v [ms]" in capsys.readouterr().out


def test_real_ct_with_reference_labels_and_a_planned_lesion(tmp_path):
    """Real CT + TotalSegmentator-style labels + a lesion given by centre and radius, end to end."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct_abdomen_3mm"
    if not data.is_dir():
        pytest.skip("shared real data not present")
    cfg = RunConfig()
    cfg.case.image = str(data / "ct.nii.gz")
    cfg.case.labels = str(data / "reference_seg.nii.gz")
    cfg.case.lesions = [{"name": "liver_tumor", "center_mm": [-80.0, -185.0, 150.0], "radius_mm": 12.0}]
    cfg.mesh.size_mm = 8.0
    cfg.report.images = False
    report = plan(cfg, tmp_path / "real")
    m = report.metrics
    assert 900 < m["parenchyma_volume_ml"] < 1100          # reference liver is 1043 mL, minus the lesion
    assert m["margin_achieved_mm"] >= 10.0
    assert 80.0 < m["remnant_percent"] < 99.0
    assert report.model["fixed_nodes"] > 0                  # fixed near the real IVC (label 63)
    assert report.solver["postop"]["converged"]


def test_crossings_and_margin_against_phantom_truth(run_dir):
    """The branch the phantom runs past the tumour is found where it is, at its true calibre, and the
    achieved margin holds against the analytic tumour sphere within the mesh's resolution."""
    import pyvista as pv

    from surgtwin.phantom import phantom_truth

    out, report = run_dir
    truth = phantom_truth(PhantomConfig(spacing_mm=4.0))
    seg = truth["near_vessel"]
    p0, p1 = np.asarray(seg["p0"]), np.asarray(seg["p1"])

    def along(c):
        t = np.clip(np.dot(c - p0, p1 - p0) / np.dot(p1 - p0, p1 - p0), 0.0, 1.0)
        return np.linalg.norm(p0 + t * (p1 - p0) - c), seg["r0"] + t * (seg["r1"] - seg["r0"])

    hits = [(v, *along(np.asarray(v["centroid_mm"]))) for v in report.vessels]
    on_branch = [(v, r) for v, d, r in hits if d < 4.0]
    assert on_branch, report.vessels
    for v, r in on_branch:
        assert abs(v["diameter_mm"] - 2 * r) <= 4.0  # within one 4 mm voxel
    # margin against the analytic sphere: the cut surface (rest configuration) sampled densely
    from surgtwin.mesh import TetMesh
    from surgtwin.procedure import sample_triangles

    mesh = TetMesh.load(out / "mesh" / "volume.vtu")
    cut = pv.read(out / "sim" / "cut_surface.vtp")
    assert cut.n_cells > 0
    tum = truth["tumor"]
    model = pv.read(out / "sim" / "model.vtu")       # the mesh after the cuts (split elements), rest mm
    from surgtwin.mesh import boundary_faces

    tets = model.cells_dict[pv.CellType.TETRA]
    assert np.abs(model.compute_cell_sizes().cell_data["Volume"]).sum() == pytest.approx(
        np.abs(mesh.tet_volumes_mm3()).sum(), rel=1e-12)                      # cutting keeps the volume
    faces = boundary_faces(tets[model.cell_data["alive"] == 1])
    samples, _, _ = sample_triangles(np.asarray(model.points), faces, 1.0)
    d = np.linalg.norm(samples - tum["center"], axis=1) - tum["radius"]
    assert d.min() >= report.metrics["margin_planned_mm"] - 9.0 / 2  # mesh of 9 mm vs the true sphere
