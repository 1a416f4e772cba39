"""The ``surgtwin`` command line, run as a user would (subprocess): help, phantom, mesh, and bad inputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from surgtwin.mesh import TetMesh
from surgtwin.volume import LabelMap, Volume

_EXE = shutil.which("surgtwin", path=str(Path(sys.executable).parent))
CMD = [_EXE] if _EXE else [sys.executable, "-m", "surgtwin.cli"]

PURPOSE = {                     # subcommand -> words of its one-line purpose
    "run": "end to end",
    "phantom": "synthetic abdominal CT phantom",
    "segment": "segment a CT",
    "mesh": "tetrahedral mesh",
    "simulate": "rehearse the procedure",
    "report": "report.html",
    "view": "3D window",
    "bench": "solver speed",
}


def surgtwin(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SURGTWIN_VERBOSE", "SURGTWIN_DEBUG")}
    env["PYVISTA_OFF_SCREEN"] = "true"
    return subprocess.run(CMD + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".partial-", ".tmp-")))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def phantom_run(work):
    out = work / "ph"
    proc = surgtwin("phantom", "-o", out, "case.phantom.spacing_mm=5", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def mesh_run(work, phantom_run):
    ph, _ = phantom_run
    out = work / "M"
    proc = surgtwin("mesh", ph / "labels.nii.gz", "-o", out, "mesh.size_mm=9", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_top_level_help(tmp_path):
    proc = surgtwin("--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "Surgical planning" in proc.stdout
    for cmd in PURPOSE:
        assert cmd in proc.stdout
    assert surgtwin("--version", cwd=tmp_path).stdout.startswith("surgtwin ")
    assert list(tmp_path.iterdir()) == []                           # help writes nothing


@pytest.mark.parametrize("cmd", sorted(PURPOSE))
def test_subcommand_help(cmd, tmp_path):
    proc = surgtwin(cmd, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(f"usage: surgtwin {cmd}")
    body = proc.stdout.split("\n\n", 1)[1]                           # after the usage block
    assert PURPOSE[cmd] in " ".join(body.split()), f"'surgtwin {cmd} --help' does not say what it does"


def test_phantom_command(phantom_run, work):
    out, proc = phantom_run
    assert proc.stderr == ""
    assert proc.stdout.strip() == f"phantom: outputs in {out}"
    names = {p.name for p in out.iterdir()}
    assert {"ct.nii.gz", "labels.nii.gz", "labels.json", "dicom", "config.yaml", "surgtwin.log"} <= names
    assert not [n for n in names if n.startswith(".")]
    assert _leftovers(work) == []
    ct = Volume.load(out / "ct.nii.gz")
    assert ct.spacing == (5.0, 5.0, 5.0) and ct.shape == (72, 56, 40)   # 360 x 280 x 200 mm at 5 mm
    dicom = sorted((out / "dicom").iterdir())
    assert len(dicom) == 40
    from_dicom = Volume.load(out / "dicom")
    assert from_dicom.shape == ct.shape and np.allclose(from_dicom.image.GetOrigin(), ct.image.GetOrigin(), atol=1e-3)
    assert np.abs(from_dicom.array() - ct.array()).max() <= 0.5 + 1e-3
    labels = LabelMap.load(out / "labels.nii.gz")
    vols = labels.volumes_ml()
    assert 1300 < vols["liver"] < 1500 and 12 < vols["liver_tumor"] < 17
    table = json.loads((out / "labels.json").read_text())
    assert {"liver", "liver_tumor", "portal_vein_and_splenic_vein"} <= {l["name"] for l in table["labels"]}
    cfg = (out / "config.yaml").read_text()
    assert "spacing_mm: 5" in cfg and "size_mm" in cfg
    assert "phantom" in (out / "surgtwin.log").read_text()


def test_mesh_command(mesh_run, phantom_run, work):
    out, proc = mesh_run
    assert proc.stderr == ""
    assert {"volume.vtu", "quality.json", "config.yaml", "surgtwin.log", "surfaces"} <= {p.name for p in out.iterdir()}
    assert _leftovers(work) == [] and _leftovers(out) == []
    q = json.loads((out / "quality.json").read_text())
    mesh = TetMesh.load(out / "volume.vtu")
    assert q["tets"] == mesh.grid.n_cells > 5000 and q["nodes"] == mesh.grid.n_points
    assert q["inverted_elements"] == 0 and q["mesher"] == "surgtwin-kuhn-grid+snap"
    assert q["min_dihedral_deg"] >= 10.0 and q["boundary_hd95_mm"] <= 1.0 * q["voxel_mm"]
    regions = q["regions"]
    assert {"liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein"} == set(regions)
    for name, r in regions.items():
        assert {"mesh_ml", "label_ml", "error_percent"} <= set(r), name
        assert r["error_percent"] == pytest.approx(100 * (r["mesh_ml"] - r["label_ml"]) / r["label_ml"], abs=0.02)
        assert r["mesh_ml"] == pytest.approx(mesh.volumes_ml()[name], abs=1e-3)
    assert abs(regions["liver"]["error_percent"]) < 5.0             # measured -1.4 %
    assert abs(regions["liver_tumor"]["error_percent"]) < 15.0      # measured -4.5 %
    assert "liver" in proc.stdout and "% vs labels" in proc.stdout
    assert (out / "surfaces" / "liver.vtp").is_file()
    assert "size_mm: 9" in (out / "config.yaml").read_text()


@pytest.fixture(scope="module")
def bad_inputs(work, phantom_run, mesh_run):
    folder = work / "bad"
    folder.mkdir()
    (folder / "labels.txt").write_text("5 5 5\n")
    (folder / "fake.nii.gz").write_text("not an image\n")
    empty = sitk.Image((8, 8, 8), sitk.sitkUInt8)
    sitk.WriteImage(empty, str(folder / "empty.nii.gz"))
    (folder / "junk.vtu").write_text("not a mesh\n")
    # a label map without a tumour: the default resection target is absent
    lm = LabelMap.load(phantom_run[0] / "labels.nii.gz")
    arr = lm.array()
    arr[arr == lm.table.id_of("liver_tumor")] = lm.table.id_of("liver")
    LabelMap.from_array(arr, lm.image, lm.table).save(folder / "no_tumour" / "labels.nii.gz")
    proc = surgtwin("mesh", folder / "no_tumour" / "labels.nii.gz", "-o", folder / "no_tumour_mesh",
                    "mesh.size_mm=9", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return folder


BAD = {                        # case -> (command, inputs, overrides, words the message must contain)
    "missing file": ("mesh", ["@bad/nothere.nii.gz"], [], "no such file"),
    "wrong format (.txt)": ("mesh", ["@bad/labels.txt"], [], "unsupported image format"),
    "not an image (.nii.gz)": ("mesh", ["@bad/fake.nii.gz"], [], "cannot be read"),
    "empty label map": ("mesh", ["@bad/empty.nii.gz"], [], "empty"),
    "bad override": ("mesh", ["@ph/labels.nii.gz"], ["mesh.bogus=1"], "bogus"),
    "bad override value": ("mesh", ["@ph/labels.nii.gz"], ["mesh.size_mm=fine"], "size_mm"),
    "organ absent": ("mesh", ["@ph/labels.nii.gz"], ["mesh.organ=pancreas"], "pancreas"),
    "resection target absent": ("simulate", ["@bad/no_tumour_mesh"], [], "liver_tumor"),
    "resection target not meshed": ("simulate", ["@M/volume.vtu"], ["procedure.steps=[{target: gallbladder}]"],
                                    "gallbladder"),
    "margin removes everything": ("simulate", ["@M/volume.vtu"], ["procedure.steps=[{margin_mm: 500}]"],
                                  "whole organ"),
    "corrupt mesh": ("simulate", ["@bad/junk.vtu"], [], "junk.vtu"),
    "missing image": ("segment", ["@bad/nothere"], [], "no such file"),
    "import without a path": ("segment", ["@ph/ct.nii.gz", "--method", "import"], [], "import PATH"),
    "seed with two coordinates": ("segment", ["@ph/ct.nii.gz", "--seeds", "liver=1,2"], [], "NAME=X,Y,Z"),
    "unknown method": ("segment", ["@ph/ct.nii.gz", "--method", "magic"], [], "magic"),
    "report without run": ("report", ["@bad"], [], "no report.json"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_one_line_error_no_output(case, bad_inputs, phantom_run, mesh_run, work):
    cmd, inputs, overrides, words = BAD[case]
    paths = {"@bad": bad_inputs, "@ph": phantom_run[0], "@M": mesh_run[0]}
    for key, folder in paths.items():
        inputs = [a.replace(key, str(folder)) for a in inputs]
    parent = work / f"out-{cmd}"
    parent.mkdir(exist_ok=True)
    out = parent / case.replace(" ", "_").replace("(", "").replace(")", "")
    before = sorted(p.name for p in work.iterdir())
    out_args = [] if cmd == "report" else ["-o", out]
    proc = surgtwin(cmd, *inputs, *out_args, *overrides, cwd=work)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith(f"surgtwin {cmd}: error: "), lines[0]
    assert words in lines[0]
    assert not out.exists()                                          # no partial output ...
    assert _leftovers(parent) == [] and _leftovers(work) == []       # ... and no hidden staging folder
    assert sorted(p.name for p in work.iterdir()) == before          # nothing else (e.g. runs/) either
    assert "Traceback" not in proc.stdout + proc.stderr


def test_segment_auto_and_import_on_real_ct(work):
    """`surgtwin segment CT` (auto by default) and `--method import REF` on the shared non-contrast CT."""
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct_abdomen_3mm"
    if not data.is_dir():
        pytest.skip("shared real data not present")
    out = work / "seg-auto"
    proc = surgtwin("segment", data / "ct.nii.gz", "-o", out, cwd=work)
    assert proc.returncode == 0, proc.stderr
    labels = LabelMap.load(out / "labels.nii.gz")
    names = {labels.table.labels[i].name for i in labels.present_ids()}
    assert {"liver", "spleen", "kidney_left", "kidney_right", "aorta", "body", "bone"} <= names
    assert (out / "qc.png").stat().st_size > 10_000 and (out / "labels.json").is_file()
    assert "method: auto" in (out / "config.yaml").read_text()
    out = work / "seg-import"
    proc = surgtwin("segment", data / "ct.nii.gz", "--method", "import", data / "reference_seg.nii.gz", "-o", out,
                    cwd=work)
    assert proc.returncode == 0, proc.stderr
    got, ref = LabelMap.load(out / "labels.nii.gz").array(), LabelMap.load(data / "reference_seg.nii.gz").array()
    assert np.array_equal(got, ref)
    assert "method: import" in (out / "config.yaml").read_text()


def test_input_then_override_order(phantom_run, work):
    out = work / "order"
    proc = surgtwin("mesh", phantom_run[0] / "labels.nii.gz", "mesh.size_mm=9", "-o", out, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (out / "volume.vtu").is_file()


def test_user_folder_is_never_replaced(work):
    mine = work / "precious"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    proc = surgtwin("phantom", "-o", mine, cwd=work)
    assert proc.returncode != 0 and "did not write" in proc.stderr
    assert (mine / "thesis.txt").read_text() == "years of work" and len(list(mine.iterdir())) == 1


@pytest.mark.parametrize("args, words", [
    (["run", "solver.device=cuda"], "no CUDA"),
    (["run", "solver.device=tpu"], "not cpu, cuda"),
    (["run", "case.lesions=[{center_mm:[0,0,0],radius_mm:5,shape:cube}]"], "shape"),
    (["run", "procedure.steps=[{mode:cube}]"], "cube"),
    (["run", "mesh.mesher=fTetWild"], "mesh.mesher must be one of auto, grid, tetgen"),
    (["bench", "--sizes", "abc"], "--sizes"),
    (["view"], "no display"),
])
def test_config_and_usage_errors_are_one_line_and_early(work, args, words):
    proc = surgtwin(*args, "-o", work / "never", cwd=work) if args[0] != "view" else surgtwin(*args, cwd=work)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and words in lines[0], proc.stderr
    assert not (work / "never").exists()


def test_input_paths_with_special_characters(phantom_run, work):
    odd = work / "CT (1), a=b's"
    shutil.copytree(phantom_run[0] / "dicom", odd / "dicom")
    shutil.copy(phantom_run[0] / "labels.nii.gz", odd / "labels.nii.gz")
    out = work / "odd-run"
    proc = surgtwin("run", "--image", odd / "dicom", "--labels", odd / "labels.nii.gz", "-o", out,
                    "mesh=coarse", "report.images=false", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "CT (1), a=b's" in (out / "config.yaml").read_text()


def test_mesh_options_organs_budget_stl(phantom_run, work):
    out = work / "spleen-mesh"
    proc = surgtwin("mesh", phantom_run[0] / "labels.nii.gz", "--organs", "spleen", "--max-tets", "8000", "--stl",
                    "-o", out, cwd=work)
    assert proc.returncode == 0, proc.stderr
    q = json.loads((out / "quality.json").read_text())
    assert set(q["regions"]) == {"spleen"} and 0.5 * 8000 < q["tets"] < 1.6 * 8000
    assert (out / "surfaces" / "spleen.stl").is_file() and (out / "surfaces" / "spleen.vtp").is_file()
    assert q["min_dihedral_deg"] >= 10.0 and q["max_dihedral_deg"] <= 160.0 + 1e-6
