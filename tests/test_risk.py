"""Risk metrics against geometry and mechanics with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import pyvista as pv
import SimpleITK as sitk

from surgtwin.errors import ConfigError
from surgtwin.labels import LabelTable
from surgtwin.risk_func import functional_metrics, mosteller_bsa, vauthey_tlv_ml
from surgtwin.risk_geom import ToolPath, closest_approaches, structure_surfaces, tumour_margin_share
from surgtwin.risk_mech import green_from_nominal, mechanical_risk
from surgtwin.risk_summary import summary_table
from surgtwin.sim import ModelSpec, lame_parameters
from surgtwin.sim.blocks import box_mesh
from surgtwin.sim.diagnostics import element_stress
from surgtwin.volume import LabelMap


def snh_cauchy_von_mises(f, e_pa, nu):
    """Closed-form von Mises of sigma = P F^T / J for the stable Neo-Hookean law (numpy)."""
    mu, lam = lame_parameters(e_pa, nu)
    lam_s = lam + mu
    j = np.linalg.det(f)
    p = mu * f + lam_s * (j - 1.0 - mu / lam_s) * j * np.linalg.inv(f).T
    sigma = p @ f.T / j
    s = sigma - np.trace(sigma) / 3.0 * np.eye(3)
    return np.sqrt(1.5 * np.sum(s * s))


def test_element_stress_matches_closed_form_and_vanishes_under_rotation(device):
    pts, tets = box_mesh(2, (0.01, 0.01, 0.01))
    model = ModelSpec(pts, tets, 1, 6000.0, 0.47, 1000.0, False, 0.0).finalize(device)
    f = np.array([[1.2, 0.1, 0.0], [0.0, 0.9, 0.05], [0.0, 0.0, 1.05]])   # stretch + shear
    vm, strain = element_stress(model, model.state(pts @ f.T))
    assert np.allclose(vm, snh_cauchy_von_mises(f, 6000.0, 0.47), rtol=1e-10)
    green = 0.5 * (f.T @ f - np.eye(3))
    assert np.allclose(strain, np.linalg.eigvalsh(green).max(), rtol=1e-10)
    c, s = np.cos(0.7), np.sin(0.7)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    vm, strain = element_stress(model, model.state(pts @ rot.T + 0.02))
    assert np.abs(vm).max() < 1e-9 and np.abs(strain).max() < 1e-12
    dead = ModelSpec(pts, tets, 1, 6000.0, 0.47, 1000.0, False, 0.0, alive=np.arange(len(tets)) % 2 == 0)
    vm, _ = element_stress(dead.finalize(device), dead.finalize(device).state(pts @ f.T))
    assert np.all(vm[1::2] == 0.0) and np.all(vm[::2] > 0.0)


def test_tumour_share_and_margin_for_a_sphere_near_a_plane():
    """Sphere R = 10 at the origin, cut plane z = 12: margin 2 mm; with a planned margin of 5 mm the
    tumour surface within 5 mm of the plane is the cap z > 7, whose area share is (R - 7) / 2R = 0.15."""
    sphere = pv.Sphere(radius=10.0, theta_resolution=240, phi_resolution=240).triangulate()
    plane = pv.Plane(center=(0, 0, 12.0), direction=(0, 0, 1), i_size=80, j_size=80, i_resolution=8,
                     j_resolution=8).triangulate()
    tf = sphere.faces.reshape(-1, 4)[:, 1:]
    cf = plane.faces.reshape(-1, 4)[:, 1:]
    share, dmin, at = tumour_margin_share(np.asarray(sphere.points), tf, cf, 5.0, spacing_mm=0.5,
                                          cut_points_mm=np.asarray(plane.points))
    assert share == pytest.approx(0.15, abs=0.004)
    assert dmin == pytest.approx(2.0, abs=0.01)
    assert at[2] == pytest.approx(10.0, abs=0.05)
    share, dmin, _ = tumour_margin_share(np.asarray(sphere.points), tf, cf, 1.5, spacing_mm=0.5,
                                         cut_points_mm=np.asarray(plane.points))
    assert share == 0.0 and dmin > 1.5


def _label_map():
    """1 mm grid: a tumour sphere (r 8, centre (20, 20, 20)) and a hepatic-vein bar along x at y=z=32."""
    table = LabelTable.default()
    arr = np.zeros((48, 48, 48), np.uint16)            # (z, y, x)
    z, y, x = np.indices(arr.shape)
    arr[(x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 64] = table.id_of("liver_tumor")
    arr[(np.abs(y - 32) <= 1) & (np.abs(z - 32) <= 1)] = table.id_of("hepatic_vein")
    arr[:2] = table.id_of("body")                       # a wrapping tissue: ignored
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 1.0))
    return LabelMap(img, table)


def test_closest_approach_of_a_tool_path_to_structures():
    labels = _label_map()
    surfaces = structure_surfaces(labels)
    assert set(surfaces) == {"liver_tumor", "hepatic_vein"}
    # a needle along x at y = 20, z = 40: 20 mm from the tumour centre, passing 8 mm from the vein's axis in z
    needle = ToolPath("needle", np.array([[2.0, 20.0, 40.0], [44.0, 20.0, 40.0]]))
    rows = {r["structure"]: r for r in closest_approaches("tool path needle", needle.samples(0.5), labels, surfaces)}
    # tumour voxels reach z = 28 -> voxel face at 28.5: 11.5 mm (the analytic sphere is 12 mm away)
    assert rows["liver_tumor"]["distance_mm"] == pytest.approx(11.5, abs=0.01)
    assert rows["liver_tumor"]["at_mm"][0] == pytest.approx(20.0, abs=0.5)
    assert rows["liver_tumor"]["structure_mm"] == pytest.approx([20.0, 20.0, 28.5], abs=0.5)
    # the bar occupies y 31..33, z 31..33: nearest face at y = 30.5 / z = 33.5 -> sqrt(10.5^2 + 6.5^2)
    assert rows["hepatic_vein"]["distance_mm"] == pytest.approx(np.hypot(10.5, 6.5), abs=0.75)
    # a path through the vein is at distance 0 there
    through = ToolPath("probe", np.array([[10.0, 32.0, 10.0], [10.0, 32.0, 45.0]]))
    rows = {r["structure"]: r for r in closest_approaches("probe", through.samples(0.5), labels, surfaces)}
    assert rows["hepatic_vein"]["distance_mm"] == 0.0
    assert 31.0 <= rows["hepatic_vein"]["at_mm"][2] <= 33.5
    with pytest.raises(ConfigError, match="at least two"):
        ToolPath.from_config({"name": "x", "points_mm": [[0, 0, 0]]})


def test_flr_with_vauthey_and_mosteller():
    assert mosteller_bsa(180.0, 80.0) == pytest.approx(2.0)
    assert vauthey_tlv_ml(2.0) == pytest.approx(-794.41 + 2 * 1267.28)
    tlv = vauthey_tlv_ml(2.0)                           # 1740.15 mL
    statuses = {}
    for condition in ("normal", "chemotherapy", "cirrhosis"):
        f = functional_metrics("liver", 0.28 * tlv, 1500.0, liver_condition=condition, height_cm=180, weight_kg=80)
        assert f["flr_percent_standardized"] == pytest.approx(28.0)
        assert f["flr_percent_measured"] == pytest.approx(100 * 0.28 * tlv / 1500.0)
        assert "Vauthey" in f["sources"]["tlv"] and "2002;8:233-240" in f["sources"]["tlv"]
        rows = _summary(functional=f)
        statuses[condition] = next(r["status"] for r in rows if r["risk"] == "future liver remnant (standardized TLV)")
    assert statuses == {"normal": "ok", "chemotherapy": "critical", "cirrhosis": "critical"}
    f = functional_metrics("liver", 350.0, 1500.0, liver_condition="normal")   # no height/weight
    rows = _summary(functional=f)
    assert next(r for r in rows if r["risk"] == "future liver remnant (standardized TLV)")["status"] == "n/a"
    assert next(r for r in rows if r["risk"] == "future liver remnant (measured liver)")["status"] == "warning"  # 23.3 %
    with pytest.raises(ConfigError, match="liver_condition"):
        functional_metrics("liver", 1.0, 2.0, liver_condition="fatty")


def _summary(**kw):
    args = dict(oncological={"margin_achieved_mm": 10.0, "margin_planned_mm": 10.0, "r1_margin_mm": 1.0,
                             "tumour_surface_under_margin_share": 0.0},
                functional=functional_metrics("liver", 800.0, 1000.0), vessels=[], distances=[],
                mechanical=mechanical_risk(np.array(["liver"]), np.array([True]), np.array([1.0]),
                                           np.zeros((1, 3)), np.array([10.0]), np.array([0.01])),
                metrics={"inverted_elements": 0}, organ="liver", remnant_min_percent=30.0,
                structure_warning_mm=5.0, organ_structures=("liver", "liver_tumor"))
    args["mechanical"].pop("over_threshold_mask")
    args.update(kw)
    return summary_table(**args)


def test_margin_statuses_r1_and_warning():
    def margin_status(achieved, planned=10.0):
        onc = {"margin_achieved_mm": achieved, "margin_planned_mm": planned, "r1_margin_mm": 1.0,
               "tumour_surface_under_margin_share": 0.2 if achieved < planned else 0.0}
        rows = _summary(oncological=onc)
        return rows[0]["status"], rows[0]["explanation"], rows[1]["status"]
    assert margin_status(0.5)[0] == "critical" and "R1" in margin_status(0.5)[1]
    assert margin_status(7.0)[0] == "warning" and margin_status(7.0)[2] == "warning"
    assert margin_status(10.5)[0::2] == ("ok", "ok") and margin_status(9.8)[0] == "ok"  # within 0.25 mm
    # a vascular territory resection has no tumour margin: one n/a row, not an R1 alarm
    onc = {"margin_achieved_mm": 0.0, "margin_planned_mm": 10.0, "r1_margin_mm": 1.0, "target": "portal_vein",
           "tumour_surface_under_margin_share": 1.0, "mode": "territory", "at_mm": [1.0, 2.0, 3.0]}
    rows = [r for r in _summary(oncological=onc) if r["category"] == "oncological"]
    assert len(rows) == 1 and rows[0]["status"] == "n/a" and "territory" in rows[0]["explanation"]


def test_structure_rows_skip_the_organ_and_grade_distance():
    d = [{"source": "resection surface", "structure": "liver_tumor", "category": "lesion", "distance_mm": 3.0,
          "at_mm": [0, 0, 0], "structure_mm": [0, 0, 3]},
         {"source": "resection surface", "structure": "gallbladder", "category": "organ", "distance_mm": 4.0,
          "at_mm": [0, 0, 0], "structure_mm": [0, 0, 4]},
         {"source": "tool path needle", "structure": "aorta", "category": "vessel", "distance_mm": 0.0,
          "at_mm": [1, 1, 1], "structure_mm": [1, 1, 1]}]
    rows = {r["risk"]: r for r in _summary(distances=d)}
    cut = rows["closest structure to the resection surface"]
    assert cut["value"] == 4.0 and cut["status"] == "warning" and "gallbladder" in cut["explanation"]
    tool = rows["closest structure to the tool path needle"]
    assert tool["status"] == "critical" and "crossed" in tool["explanation"]


def test_volume_and_location_over_damage_threshold():
    thr = {"liver": {"strain_nominal": 0.18, "source": "test"}}
    g = green_from_nominal(0.18)
    assert g == pytest.approx(0.5 * (1.18 ** 2 - 1))
    names = np.array(["liver"] * 4 + ["liver_tumor"])
    strain = np.array([g + 0.01, g + 0.02, g - 0.01, 0.5, 0.9])
    alive = np.array([True, True, True, False, True])
    vol = np.array([1.0, 3.0, 2.0, 5.0, 1.0])
    cent = np.array([[0, 0, 0], [4, 0, 0], [9, 9, 9], [50, 50, 50], [70, 70, 70]], float)
    out = mechanical_risk(names, alive, vol, cent, np.array([100.0, 200, 50, 900, 1000]), strain, thr)
    assert out["over_threshold_ml"] == 4.0 and out["over_threshold_elements"] == 2
    assert out["over_threshold_centroid_mm"] == [3.0, 0.0, 0.0]        # volume-weighted
    assert out["over_threshold_percent"] == pytest.approx(100 * 4.0 / 7.0)
    assert out["regions"]["liver_tumor"]["assessed"] is False and out["unassessed_regions"] == ["liver_tumor"]
    assert out["peak_von_mises_kpa"] == pytest.approx(1.0) and out["peak_von_mises_at_mm"] == [70.0, 70.0, 70.0]
    assert out["over_threshold_mask"].tolist() == [True, True, False, False, False]
    thr["liver"]["von_mises_kpa"] = 0.06                   # a stress criterion above every alive stress
    out = mechanical_risk(names, alive, vol, cent, np.array([100.0, 200, 50, 900, 1000]), strain, thr)
    assert out["over_threshold_elements"] == 2             # 50 Pa < 60 Pa: still two
    thr["liver"]["von_mises_kpa"] = 0.04
    out = mechanical_risk(names, alive, vol, cent, np.array([100.0, 200, 50, 900, 1000]), strain, thr)
    assert out["over_threshold_elements"] == 3 and out["over_threshold_ml"] == 6.0


def test_tissue_library_thresholds_have_sources():
    from surgtwin.biomech import tissue_library
    from surgtwin.risk_mech import damage_thresholds

    thr = damage_thresholds()
    assert "liver" in thr and 0.0 < thr["liver"]["strain_nominal"] < 1.0
    assert all(len(t["source"]) > 20 for t in thr.values())
    assert set(thr) <= set(tissue_library())   # every threshold belongs to a tissue of the library


def test_contact_within_a_voxel_is_not_a_crossing():
    labels = _label_map()
    surfaces = structure_surfaces(labels)
    # grazes the tumour: 0.3 mm inside its top face (z = 28.5)
    graze = ToolPath("graze", np.array([[14.0, 20.0, 28.2], [26.0, 20.0, 28.2]]))
    row = next(r for r in closest_approaches("graze", graze.samples(0.5), labels, surfaces) if r["structure"] == "liver_tumor")
    assert row["distance_mm"] == 0.0 and not row["crossed"] and row["penetration_mm"] == pytest.approx(0.3, abs=0.05)
    deep = ToolPath("deep", np.array([[20.0, 20.0, 40.0], [20.0, 20.0, 20.0]]))
    row = next(r for r in closest_approaches("deep", deep.samples(0.5), labels, surfaces) if r["structure"] == "liver_tumor")
    assert row["crossed"] and 7.0 < row["penetration_mm"] <= 8.5   # the centre, r = 8 staircase sphere
    rows = {r["risk"]: r for r in _summary(distances=[dict(row, structure="aorta", source="deep")])}
    assert rows["closest structure to the deep"]["status"] == "critical"


@pytest.mark.parametrize("override, message", [
    ("risk.liver_condition=fatty", "liver_condition 'fatty' must be one of normal, chemotherapy, cirrhosis"),
    ("risk.tool_paths=[{name:n,points_mm:[[0,0,0]]}]", "at least two"),
])
def test_cli_refuses_a_bad_risk_setting_before_any_stage(tmp_path, capsys, override, message):
    from surgtwin.cli import main

    out = tmp_path / "run"
    assert main(["run", "-o", str(out), override]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
