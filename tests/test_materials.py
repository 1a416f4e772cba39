"""Material laws per element (co-rotational, Mooney-Rivlin beside stable Neo-Hookean) and the average nodal
pressure term: forces = -grad E (wp.Tape and finite differences), symmetric tangents, rigid motions, closed
forms, parameter plumbing."""
from __future__ import annotations

import numpy as np
import pytest
import warp as wp
from scipy.spatial.transform import Rotation

from kernels import elasticity as ke
from surgtwin import verify
from surgtwin.errors import MeshError
from surgtwin.sim import ModelSpec, StaticSolver, elasticity_term, lame_parameters, mooney_rivlin_constants
from surgtwin.sim.blocks import box_mesh
from termeval import rel, warr
from termeval import term_energy as energy
from termeval import term_forces as forces
from termeval import term_hv as hessian_product


E_PA, NU = 5000.0, 0.45
MU = E_PA / (2 * (1 + NU))
TET_X = np.array([[0.0, 0.0, 0.0], [0.010, 0.001, 0.002], [0.002, 0.012, 0.001], [0.001, 0.002, 0.011]])
LAWS = ["stable_neo_hookean", "corotational", "mooney_rivlin", "mixed"]
FORMS = ["standard", "anp"]


def case(law, device, *, mesh="block", volumetric="standard", poisson=NU, seed=0, amp=0.12):
    """Model, its elasticity term, element size h and a randomly deformed (non-inverted) state."""
    pts, tets = (TET_X, np.array([[0, 1, 2, 3]])) if mesh == "tet" else box_mesh((2, 2, 2), (0.02, 0.03, 0.025))
    laws = np.arange(len(tets)) % 3 if law == "mixed" else law
    youngs = np.where(np.arange(len(tets)) % 2, E_PA, 3 * E_PA) if law == "mixed" else E_PA
    spec = ModelSpec(pts, tets, 1, youngs, poisson, 1000.0, False, 0.0, law=laws, c01_ratio=0.3,
                     volumetric=volumetric)
    model = spec.finalize(device)
    h = np.cbrt(model.rest_volume.mean() * 6.0)
    rng = np.random.default_rng(seed)
    return model, elasticity_term(model), pts, h, pts + amp * h * rng.standard_normal(pts.shape)


@pytest.mark.parametrize("volumetric", FORMS)
@pytest.mark.parametrize("law", LAWS)
def test_forces_are_minus_energy_gradient_tape_and_fd(device, law, volumetric):
    model, term, pts, h, x = case(law, device, volumetric=volumetric, seed=7)
    f = forces(term, x, device)
    assert np.linalg.norm(f) > 1e-2 * MU * h * h
    # reverse mode through the energy kernels
    xa = warr(x, device, grad=True)
    e = wp.zeros(1, dtype=wp.float64, device=device, requires_grad=True)
    tape = wp.Tape()
    with tape:
        term.add_energy(xa, e)
    tape.backward(loss=e)
    assert rel(-xa.grad.numpy(), f) < 1e-10
    # central differences of the energy along random directions
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        eps = 1e-6 * h / np.abs(v).max()
        de = (energy(term, x + eps * v, device) - energy(term, x - eps * v, device)) / (2 * eps)
        assert abs(de + np.sum(f * v)) <= 1e-6 * np.abs(f * v).sum()


@pytest.mark.parametrize("volumetric", FORMS)
@pytest.mark.parametrize("law", LAWS)
def test_tangent_symmetric_and_consistent(device, law, volumetric):
    model, term, pts, h, x = case(law, device, volumetric=volumetric, seed=11)
    n = 3 * len(pts)
    k = np.zeros((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        k[:, i] = hessian_product(term, x, e.reshape(-1, 3), device).ravel()
    assert np.abs(k - k.T).max() <= 1e-9 * np.abs(k).max()
    rng = np.random.default_rng(2)
    v = rng.standard_normal(pts.shape)
    eps = 1e-6 * h / np.abs(v).max()
    fd = -(forces(term, x + eps * v, device) - forces(term, x - eps * v, device)) / (2 * eps)
    assert rel(k @ v.ravel(), fd) < 1e-6
    diag = wp.zeros(len(pts), dtype=wp.vec3d, device=device)
    term.add_diagonal(warr(x, device), diag)
    d = diag.numpy().ravel()
    assert np.all(d >= 0.0) and np.all(d > 0.0)
    if volumetric == "standard":     # element diagonals, each clamped at 0, summed: >= the exact diagonal
        assert np.all(d >= np.diag(k) - 1e-10 * np.abs(k).max())
        if law == "stable_neo_hookean":                 # whose element diagonals are never negative
            assert np.allclose(d, np.diag(k), rtol=1e-10, atol=1e-12 * np.abs(k).max())


@pytest.mark.parametrize("volumetric", FORMS)
@pytest.mark.parametrize("law", LAWS)
def test_rigid_motion_is_force_free(device, law, volumetric):
    model, term, pts, h, x = case(law, device, volumetric=volumetric, seed=3)
    fscale = MU * h * h
    assert np.abs(forces(term, pts, device)).max() <= 1e-12 * fscale
    rot = Rotation.from_rotvec([0.7, -1.1, 0.4]).as_matrix()
    c = pts.mean(0)
    assert np.abs(forces(term, (pts - c) @ rot.T + c + 0.1, device)).max() <= 1e-10 * fscale
    # objectivity of a deformed state
    e0 = energy(term, x, device) - energy(term, pts, device)
    er = energy(term, (x - c) @ rot.T + c, device) - energy(term, pts, device)
    assert e0 > 0 and abs(er - e0) <= 1e-9 * e0
    assert rel(forces(term, (x - c) @ rot.T + c, device), forces(term, x, device) @ rot.T) < 1e-9


def test_anp_equals_standard_under_homogeneous_deformation(device):
    """Under an affine map every nodal J equals the element J, so the nodal-pressure energy is the element
    one (exactly for Mooney-Rivlin's decoupled split; up to the constant mu^2 / (2 lam_s) otherwise), and the
    resultant on a face agrees."""
    f = Rotation.from_rotvec([0.2, 0.1, -0.3]).as_matrix() @ np.diag([1.2, 0.9, 1.05])
    for law in ("mooney_rivlin", "stable_neo_hookean", "corotational"):
        std, t_std, pts, _, _ = case(law, device)
        _, t_anp, _, _, _ = case(law, device, volumetric="anp")
        x = pts @ f.T
        if law == "corotational":          # anp uses lam/2 (J - 1)^2, standard lam/2 (tr S - 3)^2: compare W
            continue
        d_std = energy(t_std, x, device) - energy(t_std, pts, device)
        d_anp = energy(t_anp, x, device) - energy(t_anp, pts, device)
        assert abs(d_anp - d_std) <= 1e-10 * abs(d_std)
        face = pts[:, 0] > pts[:, 0].max() - 1e-12
        assert rel(forces(t_anp, x, device)[face].sum(0), forces(t_std, x, device)[face].sum(0)) < 1e-10


def test_anp_rest_stable_across_material_interfaces(device):
    """Two stiffness regions and all three laws: zero nodal force at rest with nodal averaging."""
    _, term, pts, h, _ = case("mixed", device, volumetric="anp", poisson=0.49)
    assert np.abs(forces(term, pts, device)).max() <= 1e-12 * MU * h * h


def test_cauchy_stress_kernel(device):
    for law in ("stable_neo_hookean", "corotational", "mooney_rivlin"):
        model, term, pts, h, x = case(law, device, mesh="tet", seed=5, amp=0.1)
        sig = wp.zeros(1, dtype=wp.mat33d, device=device)
        wp.launch(ke.eval_tet_cauchy_stress, dim=1, inputs=[model.elements, warr(x, device), sig], device=device)
        f = forces(term, x, device)
        dm = (pts[1:] - pts[0]).T
        p = -f[1:].T @ dm.T / (np.linalg.det(dm) / 6.0)
        fdef = (x[1:] - x[0]).T @ np.linalg.inv(dm)
        ref = p @ fdef.T / np.linalg.det(fdef)
        assert np.allclose(sig.numpy()[0], ref, rtol=0, atol=1e-9 * np.abs(ref).max())
        assert np.allclose(sig.numpy()[0], sig.numpy()[0].T, atol=1e-9 * np.abs(ref).max())   # symmetric


def test_law_parameters_and_errors():
    pts, tets = box_mesh(1)
    spec = ModelSpec(pts, tets, 1, E_PA, NU, 1000.0, False, 0.0, law=["corotational"] * 3 + ["mooney_rivlin"] * 3,
                     c01_ratio=0.25)
    assert spec.law.tolist() == [1, 1, 1, 2, 2, 2]
    model = spec.finalize("cpu")
    mu, lam = lame_parameters(E_PA, NU)
    assert np.allclose(model.law_params[0], [mu, lam, 0.0])
    c10, c01, k = model.law_params[3]
    assert np.isclose(2 * (c10 + c01), mu) and np.isclose(c01 / (c10 + c01), 0.25)
    assert np.isclose(k, lam + 2 * mu / 3)
    e, nu, r = mooney_rivlin_constants(c10, c01, k)                     # round trip
    assert np.isclose(e, E_PA) and np.isclose(nu, NU) and np.isclose(r, 0.25)
    assert np.allclose(model.elements.params.numpy(), model.law_params)
    cut = spec.with_alive(np.arange(6) < 3)
    assert cut.law.tolist() == spec.law.tolist() and cut.c01_ratio[0] == 0.25
    for bad in ({"law": "ogden"}, {"law": 5}, {"c01_ratio": 1.5}, {"volumetric": "fbar"}):
        with pytest.raises(MeshError):
            ModelSpec(pts, tets, 1, E_PA, NU, 1000.0, False, 0.0, **bad)


def test_default_law_unchanged():
    """The default remains stable Neo-Hookean with the original (mu, lam + mu) parameters."""
    pts, tets = box_mesh(1)
    model = ModelSpec(pts, tets, 1, E_PA, NU, 1000.0, False, 0.0).finalize("cpu")
    mu, lam = lame_parameters(E_PA, NU)
    assert np.all(model.spec.law == 0) and np.allclose(model.law_params, [mu, lam + mu, 0.0])
    assert model.spec.volumetric == "standard"
    assert type(elasticity_term(model)).__name__ == "Elasticity"


def test_mooney_rivlin_closed_forms_and_perturbation(monkeypatch):
    rows = verify.material_laws(device="cpu", stretches=(1.3,))
    assert rows and all(r.passed for r in rows), verify.format_table(rows)
    good = verify.mooney_rivlin_uniaxial
    monkeypatch.setattr(verify, "mooney_rivlin_uniaxial", lambda l, a, b: good(l, a, b) * 1.001)
    rows = verify.material_laws(device="cpu", stretches=(1.3,))
    assert not any(r.passed for r in rows if r.name.startswith("mr_isochoric"))


def test_nearly_incompressible_solve_keeps_volume(device):
    """nu = 0.499 block squeezed 10 % between clamped plates: with ANP the volume is kept to ~(1 - 2 nu)."""
    pts, tets = box_mesh((3, 3, 3), (0.02, 0.02, 0.02))
    top, bottom = pts[:, 2] > 0.02 - 1e-12, pts[:, 2] < 1e-12
    for law in ("stable_neo_hookean", "mooney_rivlin"):
        spec = ModelSpec(pts, tets, 1, E_PA, 0.499, 1000.0, top | bottom, 0.0, law=law, volumetric="anp")
        model = spec.finalize(device)
        x0 = pts.copy()
        x0[top, 2] -= 0.002
        state = model.state(x0)
        solver = StaticSolver(model, tol=1e-8, cg_tol=1e-3)
        rep = solver.solve(state)
        assert rep.converged
        x = state.positions()
        v = np.abs(np.linalg.det(np.stack([x[tets[:, k]] - x[tets[:, 0]] for k in (1, 2, 3)], 2))).sum() / 6
        assert abs(v / 0.02 ** 3 - 1.0) < 5e-3
        assert x[~(top | bottom), 0].max() > 0.02 + 5e-4                # it bulged


@pytest.mark.parametrize("law", ["stable_neo_hookean", "corotational"])
def test_inverted_element_is_consistent(device, law):
    """An inverted tet (det F < 0; co-rotational takes its sign-corrected SVD branch): finite energy, forces
    = -grad E and a tangent that matches the force differences; it pushes the element back (E decreases along f)."""
    model, term, pts, h, _ = case(law, device, mesh="tet")
    x = pts.copy()
    x[3] = pts[3] - 1.4 * np.array([0.0, 0.0, pts[3, 2]]) + np.array([0.001, -0.0005, 0.0])
    dm = (pts[1:] - pts[0]).T
    assert np.linalg.det((x[1:] - x[0]).T @ np.linalg.inv(dm)) < -0.1
    f = forces(term, x, device)
    assert np.isfinite(energy(term, x, device)) and np.all(np.isfinite(f))
    rng = np.random.default_rng(4)
    for _ in range(2):
        v = rng.standard_normal(x.shape)
        eps = 1e-6 * h / np.abs(v).max()
        de = (energy(term, x + eps * v, device) - energy(term, x - eps * v, device)) / (2 * eps)
        assert abs(de + np.sum(f * v)) <= 1e-6 * np.abs(f * v).sum()
        fd = -(forces(term, x + eps * v, device) - forces(term, x - eps * v, device)) / (2 * eps)
        assert rel(hessian_product(term, x, v, device), fd) < 1e-5
    step = 1e-3 * h / np.abs(f).max()
    assert energy(term, x + step * f, device) < energy(term, x, device)
