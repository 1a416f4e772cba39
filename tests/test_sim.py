"""Verification of the simulation core (surgtwin.sim + kernels): consistency, closed forms, patch test.

Energy density under test (kernels/elasticity.py), with mu, lam = Lame lambda + mu as stored by Model:
    Psi(F) = mu/2 (tr F^T F - 3) + lam/2 (J - alpha)^2,  alpha = 1 + mu/lam,
    P(F)   = mu F + lam (J - alpha) cof(F),             cof(F) = J F^-T.
Note Psi(I) = lam/2 (1 - alpha)^2 = mu^2 / (2 lam) != 0: the rest state is stress free but carries a
constant energy offset, so "zero energy at rest" is checked as E(rest) = sum_e V_e mu^2 / (2 lam) and as
E(rigid motion) - E(rest) = 0.
"""
from __future__ import annotations

import numpy as np
import pytest
import warp as wp
from scipy.optimize import brentq
from scipy.spatial.transform import Rotation

from surgtwin.errors import MeshError, SolverError
from surgtwin.sim import ModelSpec, StaticSolver, element_strain, lame_parameters
from surgtwin.sim.blocks import box_mesh
from termeval import rel, warr


E_PA, NU, RHO = 5000.0, 0.45, 1000.0
MU, LAMBDA = (float(v) for v in lame_parameters(E_PA, NU))
LAM_S = LAMBDA + MU                      # the stable Neo-Hookean "lam"
ALPHA = 1.0 + MU / LAM_S

# a deliberately irregular single tetrahedron [m]
TET_X = np.array([[0.0, 0.0, 0.0], [0.010, 0.001, 0.002], [0.002, 0.012, 0.001], [0.001, 0.002, 0.011]])


def make_spec(points, tets, *, youngs=E_PA, poisson=NU, density=RHO, fixed=False, spring_k=0.0,
              gravity=(0.0, 0.0, 0.0)):
    return ModelSpec(points, tets, 1, youngs, poisson, density, fixed, spring_k, gravity=gravity)


def build(points, tets, device, **kw):
    model = make_spec(points, tets, **kw).finalize(device)
    return model, StaticSolver(model)


def forces(solver, x, device):
    return solver.forces(warr(x, device)).numpy().copy()


def energy(solver, x, device):
    return solver.energy(warr(x, device))


def hessian_product(solver, x, v, device):
    out = wp.zeros(len(x), dtype=wp.vec3d, device=device)
    solver._hessian_product(warr(x, device), warr(v, device), out)
    return out.numpy().copy()


def small_block():
    """2 x 2 x 2 cubes (48 tets), non-cubic box [m]."""
    return box_mesh((2, 2, 2), (0.02, 0.03, 0.025))


def tet_stress(solver, x, device):
    """First Piola-Kirchhoff stress of the single tet recovered from the solver's nodal forces.

    f_a = -V P g_a with [g_1 g_2 g_3] = Dm^-T, hence P = -[f_1 f_2 f_3] Dm^T / V.
    """
    f = forces(solver, x, device)
    dm = (TET_X[1:] - TET_X[0]).T
    vol = np.linalg.det(dm) / 6.0
    return -f[1:].T @ dm.T / vol


def snh_p(f):
    """Reference P(F) = dPsi/dF, derived by hand from Psi (independent of the kernels)."""
    j = np.linalg.det(f)
    return MU * f + LAM_S * (j - ALPHA) * j * np.linalg.inv(f).T


# ---------------------------------------------------------------- 1. rest state and rigid motions
@pytest.mark.parametrize("mesh", ["tet", "block"])
def test_rest_and_rigid_rotation(device, mesh):
    pts, tets = (TET_X, np.array([[0, 1, 2, 3]])) if mesh == "tet" else small_block()
    model, solver = build(pts, tets, device)
    h = np.cbrt(model.rest_volume[model.spec.alive].mean() * 6.0)
    fscale = MU * h * h                               # nodal force of a unit strain
    e_rest = energy(solver, pts, device)
    e_offset = float(np.sum(model.rest_volume) * MU ** 2 / (2.0 * LAM_S))
    assert abs(e_rest - e_offset) <= 1e-12 * e_offset
    assert np.abs(forces(solver, pts, device)).max() <= 1e-12 * fscale

    rot = Rotation.from_rotvec([0.7, -1.1, 0.4]).as_matrix()
    c = pts.mean(0)
    rigid = (pts - c) @ rot.T + c + np.array([0.3, -0.2, 0.1])
    assert np.abs(forces(solver, rigid, device)).max() <= 1e-10 * fscale
    assert abs(energy(solver, rigid, device) - e_rest) <= 1e-10 * e_offset

    # a deformed state: energy invariant and forces objective under a further rotation
    rng = np.random.default_rng(3)
    x = pts + 0.1 * h * rng.standard_normal(pts.shape)
    xr = (x - c) @ rot.T + c
    e_def = energy(solver, x, device) - e_rest
    assert e_def > 1e-3 * e_offset                   # the perturbation is not negligible
    assert abs(energy(solver, xr, device) - e_rest - e_def) <= 1e-9 * e_def
    fx = forces(solver, x, device)
    assert rel(forces(solver, xr, device), fx @ rot.T) <= 1e-10


def perturbed_case(mesh: str, device, *, seed: int):
    """A single tet or a small block, its solver, element size h, an rng and a randomly deformed state."""
    pts, tets = (TET_X, np.array([[0, 1, 2, 3]])) if mesh == "tet" else small_block()
    model, solver = build(pts, tets, device)
    h = np.cbrt(model.rest_volume[model.spec.alive].mean() * 6.0)
    rng = np.random.default_rng(seed)
    return pts, solver, h, rng, pts + 0.15 * h * rng.standard_normal(pts.shape)


# ---------------------------------------------------------------- 2. forces = -grad E
@pytest.mark.parametrize("mesh", ["tet", "block"])
def test_forces_are_minus_energy_gradient(device, mesh):
    pts, solver, h, rng, x = perturbed_case(mesh, device, seed=7)
    f = forces(solver, x, device)
    step = 1e-5 * h
    grad = np.zeros_like(x)
    for i in range(x.shape[0]):
        for k in range(3):
            xp, xm = x.copy(), x.copy()
            xp[i, k] += step
            xm[i, k] -= step
            grad[i, k] = (energy(solver, xp, device) - energy(solver, xm, device)) / (2 * step)
    err = rel(f, -grad)
    assert np.linalg.norm(f) > 1e-2 * MU * h * h     # a genuinely loaded state
    assert err < 1e-6, err


# ---------------------------------------------------------------- 3. tangent product and Jacobi diagonal
@pytest.mark.parametrize("mesh", ["tet", "block"])
def test_tangent_product_matches_force_difference(device, mesh):
    pts, solver, h, rng, x = perturbed_case(mesh, device, seed=11)
    for trial in range(3):
        v = rng.standard_normal(pts.shape)
        eps = 1e-6 * h / np.abs(v).max()
        fd = -(forces(solver, x + eps * v, device) - forces(solver, x - eps * v, device)) / (2 * eps)
        kv = hessian_product(solver, x, v, device)
        assert rel(kv, fd) < 1e-6, (trial, rel(kv, fd))


def test_jacobi_diagonal_is_tangent_diagonal(device):
    model, solver = build(TET_X, [[0, 1, 2, 3]], device)
    rng = np.random.default_rng(5)
    for trial in range(3):
        # from mild to strong (possibly inverting) deformations
        x = TET_X + (0.002 + 0.004 * trial) * rng.standard_normal(TET_X.shape)
        k = np.zeros((12, 12))
        for i in range(12):
            e = np.zeros(12)
            e[i] = 1.0
            k[:, i] = hessian_product(solver, x, e.reshape(4, 3), device).ravel()
        assert np.abs(k - k.T).max() <= 1e-10 * np.abs(k).max()     # symmetric tangent
        xa = warr(x, device)
        diag = wp.zeros(4, dtype=wp.vec3d, device=device)
        solver.terms[0].add_diagonal(xa, diag)
        kd = diag.numpy().ravel()
        assert np.allclose(kd, np.maximum(np.diag(k), 0.0), rtol=1e-12, atol=1e-12 * np.abs(k).max())
        # det F is affine along rank-one directions e_i g^T, so the exact diagonal is
        # V (mu |g_a|^2 + lam (cof(F) g_a)_i^2) >= 0 and the kernel's clamp never binds for this energy
        dm = (TET_X[1:] - TET_X[0]).T
        vol = np.linalg.det(dm) / 6.0
        f = (x[1:] - x[0]).T @ np.linalg.inv(dm)
        g = np.vstack([-np.linalg.inv(dm).sum(0), np.linalg.inv(dm)])
        cof = np.linalg.det(f) * np.linalg.inv(f).T
        ref = vol * (MU * (g ** 2).sum(1)[:, None] + LAM_S * (g @ cof.T) ** 2)
        assert np.allclose(kd, ref.ravel(), rtol=1e-10, atol=0.0)


# ---------------------------------------------------------------- 4. closed forms and the patch test
def uniaxial_reference(stretch):
    """Lateral stretch s and nominal stress P11 for F = diag(stretch, s, s) with P22 = P33 = 0.

    From P = mu F + lam (J - alpha) cof F, cof diag(l, s, s) = diag(s^2, l s, l s), J = l s^2:
        P22(s) = mu s + lam (l s^2 - alpha) l s = 0  ->  s^2 = (alpha - mu / (lam l)) / l
        P11    = mu l + lam (l s^2 - alpha) s^2 = mu (l - s^2 / l)
    The lateral equation is solved numerically (scipy) and checked against its explicit root.
    """
    p22 = lambda s: MU * s + LAM_S * (stretch * s * s - ALPHA) * stretch * s  # noqa: E731
    s = brentq(p22, 1e-3, 10.0, xtol=1e-15, rtol=1e-15)
    assert abs(s - np.sqrt((ALPHA - MU / (LAM_S * stretch)) / stretch)) <= 1e-12
    p11 = MU * stretch + LAM_S * (stretch * s * s - ALPHA) * s * s
    assert abs(p11 - MU * (stretch - s * s / stretch)) <= 1e-10 * MU
    return s, p11


@pytest.mark.parametrize("stretch", [0.7, 1.3, 2.0])
def test_uniaxial_stretch_closed_form(device, stretch):
    s_ref, p11_ref = uniaxial_reference(stretch)

    # single tet: lateral equilibrium found from the solver's own forces
    _, solver = build(TET_X, [[0, 1, 2, 3]], device)

    def p_code(s):
        return tet_stress(solver, TET_X @ np.diag([stretch, s, s]), device)

    s_code = brentq(lambda s: p_code(s)[1, 1], 0.3, 3.0, xtol=1e-14, rtol=1e-14)
    p = p_code(s_code)
    assert abs(s_code - s_ref) <= 1e-9 * s_ref
    assert abs(p[0, 0] - p11_ref) <= 1e-6 * abs(p11_ref)
    assert abs(p[2, 2]) <= 1e-9 * abs(p11_ref)
    assert np.abs(p - np.diag(np.diag(p))).max() <= 1e-9 * abs(p11_ref)

    # small block: homogeneous state, resultant on the x = L face is -P11 A, interior nodes unloaded
    pts, tets = small_block()
    lx, ly, lz = pts.max(0)
    _, solver = build(pts, tets, device)
    f = forces(solver, pts @ np.diag([stretch, s_ref, s_ref]), device)
    face = pts[:, 0] > lx - 1e-12
    assert abs(-f[face, 0].sum() / (ly * lz) - p11_ref) <= 1e-6 * abs(p11_ref)
    top = pts[:, 1] > ly - 1e-12
    assert abs(f[top, 1].sum()) <= 1e-9 * abs(p11_ref) * lx * lz            # lateral traction free
    inner = np.all((pts > 1e-12) & (pts < pts.max(0) - 1e-12), axis=1)
    assert inner.any() and np.abs(f[inner]).max() <= 1e-9 * abs(p11_ref) * lx * lz


@pytest.mark.parametrize("gamma", [0.05, 0.4])
def test_simple_shear_closed_form(device, gamma):
    """F = I + gamma e1 e2^T: J = 1, cof F = F^-T = I - gamma e2 e1^T, so P = mu (F - F^-T):
    P12 = P21 = mu gamma and every other component vanishes (no normal stresses in P)."""
    _, solver = build(TET_X, [[0, 1, 2, 3]], device)
    f = np.eye(3)
    f[0, 1] = gamma
    p = tet_stress(solver, TET_X @ f.T, device)
    ref = np.zeros((3, 3))
    ref[0, 1] = ref[1, 0] = MU * gamma
    assert np.allclose(snh_p(f), ref, rtol=0, atol=1e-12 * MU)           # derivation check
    assert abs(p[0, 1] - MU * gamma) <= 1e-6 * MU * gamma
    assert np.abs(p - ref).max() <= 1e-6 * MU * gamma


def test_linear_patch_test(device):
    """Affine displacement u = A X + b, |A| ~ 1e-7, on the boundary; the interior must follow it.

    |u| ~ 1e-8 m while one ulp of a 0.04 m coordinate is 7e-18 m, so 1e-8 relative is ~15 ulp."""
    pts, tets = box_mesh((3, 4, 3), (0.06, 0.08, 0.05))
    pts = pts - pts.max(0) / 2                                             # centred: smaller round-off
    lo, hi = pts.min(0), pts.max(0)
    bnd = np.any((pts < lo + 1e-12) | (pts > hi - 1e-12), axis=1)
    rng = np.random.default_rng(2)
    grad_u = 1e-7 * rng.standard_normal((3, 3))
    u = pts @ grad_u.T + 1e-7 * 0.08 * rng.standard_normal(3)
    model = make_spec(pts, tets, fixed=bnd).finalize(device)
    solver = StaticSolver(model, tol=1e-13, cg_tol=1e-8)
    x0 = pts.copy()
    x0[bnd] += u[bnd]
    state = model.state(x0)
    rep = solver.solve(state)
    assert rep.converged and rep.relative_residual <= 1e-13
    x = state.positions()
    err = np.abs(x[~bnd] - pts[~bnd] - u[~bnd]).max() / np.abs(u[~bnd]).max()
    assert (~bnd).sum() == 12 and err < 1e-8, err
    assert np.array_equal(x[bnd], x0[bnd])                                  # fixed nodes never move


# ---------------------------------------------------------------- 5. hanging bar
def hanging_bar_error(nz, device):
    length, rho, g, youngs = 0.1, 1000.0, 9.81, 1e6                       # max strain rho g L / E ~ 1e-3
    pts, tets = box_mesh((1, 1, nz), (0.02, 0.02, length))
    model = make_spec(pts, tets, youngs=youngs, poisson=0.0, density=rho, fixed=pts[:, 2] > length - 1e-12,
                      gravity=(0.0, 0.0, -g)).finalize(device)
    state = model.state()
    rep = StaticSolver(model, tol=1e-10).solve(state)
    assert rep.converged
    tip = pts[:, 2] < 1e-12
    u_tip = -(state.positions()[tip, 2] - pts[tip, 2]).mean()
    return u_tip / (rho * g * length ** 2 / (2 * youngs)) - 1.0


def test_hanging_bar_tip_displacement(device):
    e4, e8 = hanging_bar_error(4, device), hanging_bar_error(8, device)
    assert abs(e8) < 0.02 and abs(e8) < 1e-3, (e4, e8)
    assert abs(e8) < abs(e4) / 3.0, (e4, e8)                               # ~h^2 convergence


# ---------------------------------------------------------------- 6. solver report and input errors
def cantilever(device, **solver_kw):
    pts, tets = box_mesh((4, 2, 2), (0.08, 0.02, 0.02))
    model = make_spec(pts, tets, fixed=pts[:, 0] < 1e-12, gravity=(0.0, 0.0, -9.81)).finalize(device)
    return model, StaticSolver(model, **solver_kw)


def test_solver_report(device):
    model, solver = cantilever(device, tol=1e-8)
    state = model.state()
    rep = solver.solve_ramped(state, 2)
    assert rep.converged and rep.load_steps == 2
    assert rep.relative_residual <= 1e-8
    hist = np.array(rep.residual_history)
    assert np.all(np.isfinite(hist)) and len(hist) == rep.newton_iterations + 2
    assert hist[-1] < 1e-6 * hist.max()
    one = StaticSolver(model, tol=1e-8)
    rep1 = one.solve(model.state())
    h1 = np.array(rep1.residual_history)
    assert rep1.converged and h1[-1] <= 1e-8 * one._external_scale(1.0)
    # energy-decreasing steps may raise the residual early on; overall and in the Newton tail it falls
    assert h1[-1] < 1e-6 * h1[0]
    assert len(h1) >= 5 and np.all(np.diff(h1[-4:]) < 0.0)
    assert state.positions()[:, 2].min() < -1e-3                           # it really sagged
    with pytest.raises(SolverError):
        cantilever(device, tol=1e-8, newton_max_iter=1)[1].solve_ramped(model.state(), 1)


def test_model_rejects_bad_input(device):
    pts, tets = box_mesh(1)
    for nu in (0.5, 0.6):
        with pytest.raises(MeshError):
            make_spec(pts, tets, poisson=nu)
    flat = np.array([[0.0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [0.01, 0.01, 0]])
    with pytest.raises(MeshError):
        make_spec(flat, [[0, 1, 2, 3]]).finalize(device)
    with pytest.raises(MeshError):
        make_spec(TET_X, [[0, 2, 1, 3]]).finalize(device)                    # inverted
    with pytest.raises(MeshError):
        make_spec(pts, tets, fixed=True).finalize(device)
    make_spec(pts, tets, poisson=0.499).finalize(device)                   # still accepted


# ---------------------------------------------------------------- 7. element strain
def test_element_strain(device):
    pts, tets = small_block()
    model = make_spec(pts, tets).finalize(device)
    rot = Rotation.from_rotvec([0.3, 0.5, -0.2]).as_matrix()
    for stretch in (1.25, 0.8):
        f = rot @ np.diag([stretch, 0.95, 1.02])
        strain, jac = element_strain(model, model.state(pts @ f.T))
        emax = max((stretch ** 2 - 1) / 2, (0.95 ** 2 - 1) / 2, (1.02 ** 2 - 1) / 2)
        assert np.allclose(strain, emax, rtol=1e-10, atol=1e-13)
        assert np.allclose(jac, np.linalg.det(f), rtol=1e-12)
    strain, jac = element_strain(model, model.state(pts @ np.diag([1.1, 1.0, 1.0])))
    assert np.allclose(strain, (1.1 ** 2 - 1) / 2, rtol=1e-10) and np.allclose(jac, 1.1, rtol=1e-12)


# ---------------------------------------------------------------- 8. element removal
def test_with_alive_recomputes_mass_and_free_nodes(device):
    pts, tets = box_mesh((4, 2, 2), (0.08, 0.02, 0.02))
    spec = make_spec(pts, tets, fixed=pts[:, 0] < 1e-12, gravity=(0.0, 0.0, -9.81))
    full = spec.finalize(device)
    alive = pts[tets].mean(1)[:, 0] < 0.04                                # keep the half x < 4 cm
    cut_spec = spec.with_alive(alive)
    assert spec.alive.all()                                               # the original is untouched
    cut = cut_spec.finalize(device)
    assert np.isclose(full.node_mass.sum(), RHO * 0.08 * 0.02 * 0.02, rtol=1e-12)
    assert np.isclose(cut.node_mass.sum(), RHO * 0.04 * 0.02 * 0.02, rtol=1e-12)
    assert np.isclose(cut.node_mass.sum(), RHO * cut.rest_volume.sum(), rtol=1e-12)
    gone = pts[:, 0] > 0.04 + 1e-12
    assert gone.any()
    assert not cut.node_used[gone].any() and not cut.node_free[gone].any()
    assert np.all(cut.node_mass[gone] == 0.0)
    assert cut.node_free[~gone & (pts[:, 0] > 1e-12)].all()
    assert cut.tet_count == int(alive.sum())
    state = cut.state()
    rep = StaticSolver(cut, tol=1e-8).solve(state)
    assert rep.converged
    x = state.positions()
    assert np.array_equal(x[gone], pts[gone])                              # orphaned nodes stay put
    assert x[~gone, 2].min() < -1e-4
    strain, jac = element_strain(cut, state)
    assert np.all(strain[~alive] == 0.0) and np.all(jac[~alive] == 1.0)    # dead elements report rest
    assert strain[alive].max() > 1e-3
