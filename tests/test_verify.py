"""The verification problem set (surgtwin.verify) runs end to end on the CPU and every case passes."""
from __future__ import annotations

import math

import pytest

from surgtwin import verify

CASES = ["patch_linear", "patch_finite", "uniaxial_tet_l0.7", "uniaxial_tet_l1.3", "uniaxial_tet_l2",
         "uniaxial_block_l0.7", "uniaxial_block_l1.3", "uniaxial_block_l2", "simple_shear_g0.05",
         "simple_shear_g0.4", "rigid_rotation_tet", "rigid_rotation_block", "hanging_bar_nz4", "hanging_bar_nz8",
         "hanging_bar_nz16", "hanging_bar_rate", "corotational_l0.7", "corotational_l1.5", "mr_isochoric_l0.7",
         "mr_isochoric_l1.5", "mr_nearly_incompressible_l1.5", "rigid_rotation_corotational",
         "rigid_rotation_mooney_rivlin", "locking_shell_nu0.3_standard", "locking_shell_nu0.499_standard",
         "locking_shell_nu0.499_anp", "locking_shell_ratio", "cantilever_n16", "cantilever_richardson",
         "cantilever_rate", "skfem_stable_neo_hookean", "skfem_corotational", "skfem_mooney_rivlin"]


@pytest.fixture(scope="module")
def results():
    return verify.run_all("cpu")


def test_every_case_present_and_passing(results):
    names = {r.name for r in results}
    assert set(CASES) <= names, set(CASES) - names
    failed = [r for r in results if not r.passed]
    assert not failed, verify.format_table(failed)


def test_rel_errors_finite_and_within_tolerance(results):
    for r in results:
        assert isinstance(r, verify.VerifyResult)
        assert math.isfinite(r.rel_error) and math.isfinite(r.computed), r
        assert r.rel_error <= r.tolerance, r


def test_hanging_bar_convergence_rate(results):
    rate = [r for r in results if r.name == "hanging_bar_rate"]
    assert len(rate) == 1 and rate[0].reference == 2.0
    assert 1.5 <= rate[0].computed <= 2.5, rate[0]
    finest = next(r for r in results if r.name == "hanging_bar_nz16")
    assert finest.tolerance <= 0.01 and finest.rel_error <= 0.01


def test_cantilever_and_locking(results):
    by = {r.name: r for r in results}
    assert by["cantilever_richardson"].rel_error <= 0.01 and 1.5 <= by["cantilever_rate"].computed <= 2.5
    assert by["cantilever_n16"].rel_error < by["cantilever_n8"].rel_error < by["cantilever_n4"].rel_error
    assert by["cantilever_n16"].tolerance == 0.01 and by["cantilever_n16"].rel_error <= 0.01
    assert by["cantilever_n16"].computed < by["cantilever_n16"].reference     # conforming tets are too stiff
    locked, anp = by["locking_shell_nu0.499_standard"], by["locking_shell_nu0.499_anp"]
    assert locked.computed > locked.reference and locked.rel_error >= 3 * anp.rel_error and anp.rel_error <= 0.04
    for law in ("stable_neo_hookean", "corotational", "mooney_rivlin"):
        assert by[f"skfem_{law}"].rel_error <= 1e-5


def test_cantilever_reference_is_plane_elasticity():
    """nu = 0 makes the 3-D cantilever a plane problem; P3 triangles (scikit-fem) on it converge to
    verify.cantilever_reference (Euler-Bernoulli + Timoshenko shear) to 1e-4, not to Euler-Bernoulli alone."""
    skfem = pytest.importorskip("skfem")
    import numpy as np
    from skfem.models.elasticity import linear_elasticity

    length, depth, youngs, g = 0.08, 0.01, 1e9, 9.81
    mesh = skfem.MeshTri.init_tensor(np.linspace(0, length, 33), np.linspace(0, depth, 5))
    elem = skfem.ElementVector(skfem.ElementTriP3())
    basis = skfem.Basis(mesh, elem)
    stiff = skfem.asm(linear_elasticity(0.0, youngs / 2), basis)      # lambda = 0: plane stress = plane strain

    @skfem.LinearForm
    def weight(v, w):
        return -verify.RHO * g * v[1]

    u = skfem.solve(*skfem.condense(stiff, skfem.asm(weight, basis), D=basis.get_dofs(lambda x: x[0] < 1e-12)))
    tip = skfem.FacetBasis(mesh, elem, facets=mesh.facets_satisfying(lambda x: x[0] > length - 1e-12))

    @skfem.Functional
    def deflection(w):
        return -w["u"][1] / depth

    mean_tip = deflection.assemble(tip, u=tip.interpolate(u))
    ref, eb = verify.cantilever_reference(length, depth, youngs, g)
    assert abs(mean_tip / ref - 1) < 1e-4 and mean_tip / eb - 1 > 0.012


def test_five_tet_split_conforms():
    """box_mesh(five=True): positive tets filling the box, every face shared by two tets or on the boundary."""
    import numpy as np

    from surgtwin.sim.blocks import box_mesh, signed_volumes

    pts, tets = box_mesh((3, 2, 4), (3.0, 2.0, 4.0), five=True)
    assert len(tets) == 5 * 24 and (signed_volumes(pts, tets) > 0).all()
    assert np.isclose(signed_volumes(pts, tets).sum(), 24.0)
    faces = np.sort(tets[:, [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]].reshape(-1, 3), axis=1)
    uniq, count = np.unique(faces, axis=0, return_counts=True)
    assert count.max() == 2
    x = pts[uniq[count == 1]]
    area = 0.5 * np.linalg.norm(np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]), axis=1).sum()
    assert np.isclose(area, 2 * (3 * 2 + 3 * 4 + 2 * 4))       # boundary faces only on the box surface


def test_skfem_case_reports_missing_dependency(monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_skfem(name, *a, **k):
        if name.startswith("skfem"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_skfem)
    assert verify.skfem_comparison(device="cpu") == []
    assert "scikit-fem is not installed" in capsys.readouterr().out


def test_format_table(results):
    table = verify.format_table(results)
    for header in ("case", "quantity", "computed", "reference", "rel. error", "tolerance", "PASS/FAIL"):
        assert header in table
    for name in CASES:
        assert name in table
    assert "FAIL" not in table.replace("PASS/FAIL", "")
    assert f"{len(results)}/{len(results)} passed" in table


def test_wrong_reference_fails():
    ok = verify._compare("x", "q", 1.0, 1.0 + 1e-9, 1e-6)
    assert ok.passed
    bad = verify._compare("x", "q", 1.0, 1.0 + 1e-3, 1e-6)
    assert not bad.passed and bad.rel_error > bad.tolerance
    assert "FAIL" in verify.format_table([bad])
    assert not verify._compare("x", "q", 1e-3, 0.0, 1e-6, scale=1.0).passed
    assert not verify._compare("x", "q", float("nan"), 1.0, 1e-6).passed
    assert not verify._compare("x", "q", 1.0, 1.0, 1e-6, valid=False).passed    # unconverged solve


def test_case_detects_perturbed_closed_form(monkeypatch):
    """A real case re-run against a deliberately wrong closed form must report failures."""
    good = verify.uniaxial_reference
    monkeypatch.setattr(verify, "uniaxial_reference", lambda l: (good(l)[0] * 1.001, good(l)[1] * 1.001))
    res = verify.uniaxial_stretch(device="cpu", stretches=(1.3,))
    assert res and not any(r.passed for r in res if r.name.startswith("uniaxial_tet"))


def test_verify_cli_writes_table_and_json(tmp_path, capsys, monkeypatch):
    """The CLI path (the fixture above already ran every case through run_all): a subset keeps it quick."""
    import json

    from surgtwin.cli import main

    monkeypatch.setattr(verify, "CASES", (verify.hanging_bar, verify.material_laws))
    assert main(["verify", "-o", str(tmp_path / "v")]) == 0
    rows = json.loads((tmp_path / "v" / "verify.json").read_text())["results"]
    assert rows and all(r["passed"] for r in rows)
    out = capsys.readouterr().out
    assert "hanging_bar_rate" in out and "mr_isochoric_l1.5" in out
    assert {r["name"] for r in rows} >= {"hanging_bar_rate", "corotational_l1.5"}
