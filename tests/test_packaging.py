"""The wheel carries kernels, configs and assets and works outside the checkout; no copyleft deps."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob("surgtwin-*.whl"))


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("kernels/elasticity.py", "kernels/linalg.py", "surgtwin/_configs/config.yaml",
                     "surgtwin/_configs/procedure/resect_tumor.yaml", "surgtwin/_assets/labels.json",
                     "surgtwin/_assets/tissues.json", "surgtwin/sim/static.py"):
        assert required in names, required
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import surgtwin, kernels, numpy as np\n"
        "from surgtwin.compose import compose_run_config\n"
        "from surgtwin.labels import LabelTable\n"
        "from surgtwin.sim import ModelSpec, StaticSolver\n"
        "from surgtwin.sim.blocks import box_mesh\n"
        "assert 'site' in surgtwin.__file__ and 'site' in kernels.__file__, surgtwin.__file__\n"
        "cfg, _ = compose_run_config(['procedure=resect_plane'])\n"
        "assert cfg.procedure.steps[0]['mode'] == 'plane'\n"
        "assert LabelTable.default().id_of('liver_tumor') == 203\n"
        "p, t = box_mesh(2)\n"
        "s = ModelSpec(p, t, 1, 5e3, 0.3, 1e3, p[:, 2] == 0, 0.0, gravity=[0, 0, -9.81]).finalize('cpu')\n"
        "r = StaticSolver(s).solve(s.state())\n"
        "assert r.converged, r\n"
        "print('ok')\n"
    )
    script = tmp_path / "check.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(site)!r})\n" + code)
    # -I: isolated mode, so neither the checkout nor PYTHONPATH is importable, only the extracted wheel
    res = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def _requirements(dist: str, seen: set):
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return
    for r in reqs:
        if "extra ==" in r:
            continue
        name = re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0].lower()
        if name and name not in seen:
            seen.add(name)
            _requirements(name, seen)


def test_default_install_has_no_copyleft_dependency():
    deps: set = set()
    _requirements("surgtwin", deps)
    assert {"warp-lang", "pyvista", "simpleitk", "hydra-core"} <= deps
    copyleft = []
    for d in sorted(deps):
        try:
            meta = metadata.metadata(d)
        except metadata.PackageNotFoundError:
            continue
        text = " ".join([meta.get("License-Expression") or "", (meta.get("License") or "")[:200]]
                        + [c for c in meta.get_all("Classifier") or [] if c.startswith("License")])
        if re.search(r"\b(A|L)?GPL|General Public License", text):
            copyleft.append(f"{d}: {text[:80]}")
    assert not copyleft, copyleft
