"""The risk report on the shared real CT (reference labels imported, a planned lesion): every metric, the
JSON schema, the HTML with its renders and plots; and the schema catching a broken report."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from surgtwin.config import RunConfig
from surgtwin.pipeline import plan
from surgtwin.report import validate_report

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct_abdomen_3mm"
LESION = {"name": "liver_tumor", "center_mm": [-80.0, -185.0, 150.0], "radius_mm": 12.0}
NEEDLE = {"name": "needle", "points_mm": [[-80.0, -260.0, 150.0], [-80.0, -185.0, 150.0]]}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip("shared real data not present")
    cfg = RunConfig()
    cfg.case.image = str(DATA / "ct.nii.gz")
    cfg.case.labels = str(DATA / "reference_seg.nii.gz")
    cfg.case.lesions = [LESION]
    cfg.mesh.size_mm = 9.0
    cfg.mesh.surface_smoothing = 5
    cfg.solver.load_steps = 1
    cfg.report.image_size = [400, 300]
    cfg.risk.height_cm, cfg.risk.weight_kg = 175.0, 72.0
    cfg.risk.liver_condition = "chemotherapy"
    cfg.risk.tool_paths = [NEEDLE]
    out = tmp_path_factory.mktemp("real") / "run"
    return out, plan(cfg, out)


def test_real_ct_report_has_every_metric(real_run):
    out, report = real_run
    data = json.loads((out / "report.json").read_text())
    assert validate_report(data) == []
    assert data["schema_version"] == "2.0"
    cats = {r["category"] for r in report.summary}
    assert cats == {"oncological", "functional", "vessels", "structures", "mechanical", "model"}
    assert all(r["status"] in ("ok", "warning", "critical", "n/a") and r["explanation"] for r in report.summary)
    # oncological: a 10 mm sphere-mode margin, nothing of the tumour surface under it
    o = report.oncological
    assert o["margin_planned_mm"] == 10.0 and 9.0 <= o["margin_achieved_mm"] < 10.0 + 9.0 * np.sqrt(3)
    assert 0.0 <= o["tumour_surface_under_margin_share"] < 0.05
    # functional: FLR against the measured liver and the Vauthey volume of a 175 cm / 72 kg adult
    f = report.functional
    bsa = np.sqrt(175.0 * 72.0 / 3600.0)
    assert f["bsa_m2"] == pytest.approx(bsa) and f["standardized_tlv_ml"] == pytest.approx(-794.41 + 1267.28 * bsa)
    assert f["flr_percent_standardized"] == pytest.approx(100 * f["remnant_ml"] / f["standardized_tlv_ml"])
    assert f["flr_min_percent"] == 30.0 and 80.0 < f["flr_percent_measured"] < 99.0
    # structures: the needle ends in the lesion centre; the resection surface is ~ the margin from the tumour
    d = {(r["source"], r["structure"]): r for r in report.distances}
    assert d[("tool path needle", "liver_tumor")]["distance_mm"] == 0.0
    assert d[("resection surface", "liver_tumor")]["distance_mm"] == pytest.approx(o["margin_achieved_mm"], abs=3.0)
    names = {s for _, s in d}
    assert {"inferior_vena_cava", "aorta", "spleen"} <= names and "liver" not in names
    for r in report.distances:
        assert r["distance_mm"] == pytest.approx(np.linalg.norm(np.subtract(r["at_mm"], r["structure_mm"])), abs=0.02)
    # mechanical: stress everywhere in the remnant, the liver assessed against its sourced threshold
    mech = report.mechanical
    liver = mech["regions"]["liver"]
    assert liver["assessed"] and "Brunon" in liver["source"] and liver["peak_von_mises_kpa"] > 0
    assert mech["peak_von_mises_kpa"] == report.metrics["peak_von_mises_kpa"] > 0
    assert len(report.steps) == 2 and report.steps[1]["remnant_percent"] == pytest.approx(report.metrics["remnant_percent"])


def test_real_ct_report_html_is_self_contained(real_run):
    out, report = real_run
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 8            # 5 renders + 3 plots
    assert "src=\"http" not in html and "<script" not in html
    for text in ("Summary", "Oncological", "Functional", "Critical structures", "Mechanical",
                 "Liver Transpl 2002;8:233-240", "HPB (Oxford) 2013", "tool path needle", "R1 risk below"):
        assert text in html, text
    for row in report.summary:
        assert row["explanation"].replace("'", "&#x27;").replace(">", "&gt;") in html or row["explanation"] in html
    assert set(report.images) == {"anatomy", "deformation", "risk", "strain", "stress"}
    import pyvista as pv

    px = np.asarray(pv.read(out / "images" / "stress.png").active_scalars)[:, :3].astype(int)
    assert (np.abs(px - px.mean(axis=1, keepdims=True)).sum(axis=1) > 60).mean() > 0.02   # coloured organ
    assert "ct.nii.gz" not in html and str(DATA) not in html                               # no input paths


def test_schema_rejects_broken_reports(real_run):
    out, _ = real_run
    good = json.loads((out / "report.json").read_text())
    for mutate, where in ((lambda d: d.pop("summary"), "summary"),
                          (lambda d: d["summary"][0].update(status="fine"), "summary/0/status"),
                          (lambda d: d.update(schema_version="1.0"), "schema_version"),
                          (lambda d: d["distances"][0].update(distance_mm=-1.0), "distances/0/distance_mm"),
                          (lambda d: d["oncological"].update(tumour_surface_under_margin_share=1.5),
                           "oncological/tumour_surface_under_margin_share")):
        bad = copy.deepcopy(good)
        mutate(bad)
        errors = validate_report(bad)
        assert errors and any(e.startswith(where) or (where == "summary" and "summary" in e) for e in errors), errors
