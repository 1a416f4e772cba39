"""surgtwin batch: a real Hydra multirun (joblib launcher) over 3 phantom cases x 3 margins + a broken case."""
from __future__ import annotations

import csv
import json

import pytest

from surgtwin.batch import discover_cases, run_batch
from surgtwin.cli import main
from surgtwin.config import PhantomConfig
from surgtwin.errors import InputError
from surgtwin.phantom import make_phantom

pytestmark = pytest.mark.slow

SMALL = ["procedure=resect_plane", "mesh.size_mm=16", "mesh.surface_smoothing=0", "solver.load_steps=1",
         "report.images=false", "report.plots=false"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    for seed in (1, 2, 3):
        volume, labels = make_phantom(PhantomConfig(spacing_mm=6.0, seed=seed, noise_hu=0.0))
        volume.save(root / f"case{seed}" / "ct.nii.gz")
        labels.save(root / f"case{seed}" / "labels.nii.gz")
    (root / "broken").mkdir()
    (root / "broken" / "ct.nii.gz").write_bytes(b"this is not a NIfTI file")
    (root / "notes").mkdir()  # a folder without a scan or case.yaml is not a case
    return root


def test_discover_cases(cases, tmp_path):
    found = discover_cases(cases)
    assert list(found) == ["broken", "case1", "case2", "case3"]
    assert found["case1"]["image"].endswith("ct.nii.gz") and found["case1"]["labels"].endswith("labels.nii.gz")
    assert found["broken"]["labels"] is None
    (tmp_path / "ph" ).mkdir()
    (tmp_path / "ph" / "case.yaml").write_text("case:\n  phantom:\n    seed: 4\n")
    assert discover_cases(tmp_path)["ph"] == {"image": None, "labels": None, "config": {"case": {"phantom": {"seed": 4}}}}
    (tmp_path / "series" / "dicom").mkdir(parents=True)         # a DICOM series in dicom/
    (tmp_path / "loose").mkdir()                                 # DICOM files in the case folder itself
    (tmp_path / "loose" / "IM0001.dcm").write_bytes(b"")
    (tmp_path / "loose" / "seg_labels.nii.gz").write_bytes(b"")
    found = discover_cases(tmp_path)
    assert found["series"]["image"] == str((tmp_path / "series" / "dicom").resolve())
    assert found["loose"]["image"] == str((tmp_path / "loose").resolve())
    assert found["loose"]["labels"].endswith("seg_labels.nii.gz")
    with pytest.raises(InputError, match="no case folders"):
        discover_cases(cases / "notes")


def test_batch_three_cases_three_margins_with_a_failure_and_a_rerun(cases, tmp_path, capsys):
    from surgtwin.report import validate_report

    out = tmp_path / "batch"
    rc = main(["batch", str(cases), "-o", str(out), "--jobs", "2", "procedure.steps.0.margin_mm=5,10,15", *SMALL])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "12 run(s), 9 ok, 3 failed" in printed and str(out / "summary.csv") in printed
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 12
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["case"] for r in ok} == {"case1", "case2", "case3"} and {r["case"] for r in failed} == {"broken"}
    assert all("cannot be read as an image" in r["error"] for r in failed)
    for case in ("case1", "case2", "case3"):
        by_margin = {float(r["margin_planned_mm"]): r for r in ok if r["case"] == case}
        assert sorted(by_margin) == [5.0, 10.0, 15.0]
        for m, r in by_margin.items():
            assert float(r["margin_achieved_mm"]) >= m - 1e-6       # plane mode keeps the margin
        remnant = [float(by_margin[m]["remnant_percent"]) for m in (5.0, 10.0, 15.0)]
        assert remnant[0] > remnant[1] > remnant[2]                  # a wider margin takes more liver
    html = (out / "summary.html").read_text()
    assert "12 run(s), 9 ok, 3 failed" in html and html.count("<tr>") == 13 and "<svg" in html
    reports = sorted(out.glob("runs/*/run/report.json"))
    assert len(reports) == 9
    for path in reports:
        assert validate_report(json.loads(path.read_text())) == []
        assert (path.parent / "config.yaml").is_file()
    # the variant is recorded in each run's resolved config
    cfg_text = (reports[0].parent / "config.yaml").read_text()
    assert "size_mm: 16" in cfg_text and "mode: plane" in cfg_text

    # re-running skips the finished runs (their reports untouched) and retries the failed ones
    stamps = {p: p.stat().st_mtime_ns for p in reports}
    path = run_batch(cases, out, ["procedure.steps.0.margin_mm=5,10,15", *SMALL], jobs=2)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    again = list(csv.DictReader(path.open()))
    assert [(r["case"], r["status"]) for r in again] == [(r["case"], r["status"]) for r in rows]


def test_batch_bad_override_fails_before_any_job(cases, tmp_path, capsys):
    rc = main(["batch", str(cases), "-o", str(tmp_path / "b"), "procedure.steps.0.margin_mmm=5,10"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "margin_mmm" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "runs").exists()


def test_slurm_launcher_config_is_found_and_needs_its_plugin(cases, tmp_path, capsys):
    """configs/hydra/launcher/slurm.yaml is what Hydra loads for --launcher slurm; without the submitit
    plugin installed (not a default dependency) the batch stops with a one-line how-to."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
        pytest.skip("submitit launcher installed: this checks the message without it")
    rc = main(["batch", str(cases), "-o", str(tmp_path / "s"), "--launcher", "slurm", "procedure.steps.0.margin_mm=5"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    assert "hydra/launcher/slurm" in err and "surgtwin[cluster]" in err
