"""Time stepping (surgtwin.sim.explicit / dynamic / stepping): stable time step, energy behaviour of
undamped explicit and backward-Euler dynamics, dynamic relaxation vs the static solver, prescribed
displacements through the Control, and failure detection."""
from __future__ import annotations

import numpy as np
import pytest
import warp as wp

from surgtwin.errors import SolverError
from surgtwin.sim import (Control, ExplicitSolver, ImplicitEulerSolver, ModelSpec, QuasiStaticSolver,
                          StaticSolver, element_health, element_time_steps, lame_parameters, stable_time_step)
from surgtwin.sim.blocks import box_mesh

E_PA, NU, RHO = 5000.0, 0.45, 1000.0


def block_model(device, n=(3, 3, 3), size=(0.03, 0.03, 0.03), gravity=(0.0, 0.0, -9.81), poisson=NU, fixed=None):
    pts, tets = box_mesh(n, size)
    fixed = pts[:, 2] < 1e-12 if fixed is None else fixed(pts)
    return ModelSpec(pts, tets, 1, E_PA, poisson, RHO, fixed, 0.0, gravity=gravity).finalize(device)


def static_equilibrium(model):
    state = model.state()
    assert StaticSolver(model, tol=1e-10).solve(state).converged
    return state.positions()


# ---------------------------------------------------------------- stable time step
def critical_step_exact(model):
    """2 / omega_max of the lumped-mass generalized eigenproblem K u = omega^2 M u (K from tangent products)."""
    solver = StaticSolver(model)
    n = model.node_count
    x = model.state().x
    k = np.zeros((3 * n, 3 * n))
    for j in range(3 * n):
        e = np.zeros((n, 3))
        e.flat[j] = 1.0
        out = wp.zeros(n, dtype=wp.vec3d, device=model.device)
        solver._hessian_product(x, wp.array(e, dtype=wp.vec3d, device=model.device), out)
        k[:, j] = out.numpy().ravel()
    minv = 1.0 / np.sqrt(np.repeat(model.node_mass, 3))
    w2 = np.linalg.eigvalsh(minv[:, None] * k * minv[None, :]).max()
    return 2.0 / np.sqrt(w2)


@pytest.mark.parametrize("nu", [0.3, 0.45, 0.49])
def test_stable_time_step_single_element(device, nu):
    a = 0.01
    reg = np.array([[0, 0, 0], [a, 0, 0], [a / 2, a * np.sqrt(3) / 2, 0], [a / 2, a * np.sqrt(3) / 6, a * np.sqrt(2 / 3)]])
    irregular = np.array([[0.0, 0.0, 0.0], [0.010, 0.001, 0.002], [0.002, 0.012, 0.001], [0.001, 0.002, 0.011]])
    mu, lam = (float(v) for v in lame_parameters(E_PA, nu))
    for pts, exact_bound in ((reg, 1.0 - 1e-9), (irregular, 0.9)):
        model = ModelSpec(pts, [[0, 1, 2, 3]], 1, E_PA, nu, RHO, False, 0.0).finalize(device)
        dt = element_time_steps(model)[0]
        if pts is reg:
            assert dt == pytest.approx(a / np.sqrt((6 * lam + 4 * mu) / RHO), rel=1e-12)
        exact = critical_step_exact(model)
        assert stable_time_step(model) == pytest.approx(dt, rel=1e-12)
        assert exact_bound * exact <= dt <= exact * (1 + 1e-9), (dt, exact)  # a bound, and a tight one


def test_unstable_time_step_refused_and_blow_up_recovered(device):
    model = block_model(device)
    stable = ExplicitSolver(model).dt_stable
    with pytest.raises(SolverError, match="exceeds the stable step"):
        ExplicitSolver(model, dt=2.0 * stable)
    # forced past the bound (as a user editing the attribute would): the step detects the blow-up
    # (inverted / non-finite elements) and cuts back to twice the sub-steps, then succeeds
    solver = ExplicitSolver(model, max_cutbacks=3)
    solver.dt = 2.2 * solver.dt_critical
    state = model.state()
    rep = solver.step(state, state, None, 200 * solver.dt)
    assert rep.cutbacks >= 1 and rep.increments >= 400
    assert np.isfinite(state.positions()).all() and element_health(model, state.x) == (0, 0)
    solver.max_cutbacks = 0
    with pytest.raises(SolverError, match="failed after 0 cut-backs"):
        solver.step(model.state(), model.state(), None, 200 * solver.dt)


# ---------------------------------------------------------------- energy behaviour
def test_explicit_undamped_conserves_energy(device):
    model = block_model(device)
    x_eq = static_equilibrium(model)
    solver = ExplicitSolver(model, safety=0.3)
    drop = solver.energy(model.state()) - solver.static.energy(model.state(x_eq).x)   # energy exchanged
    assert drop > 0
    state = model.state()
    e0 = solver.energy(state)
    energies, tip = [], []
    for _ in range(60):                                   # ~6 periods of the lowest mode
        solver.step(state, state, None, 1e-3)
        energies.append(solver.energy(state))
        tip.append(state.positions()[:, 2].max())
    dev = np.abs(np.array(energies) - e0) / drop
    assert dev.max() < 0.02, dev.max()
    assert np.ptp(tip) > 1.5 * (0.03 - x_eq[:, 2].max())        # it really oscillates (amplitude ~2x the sag)


def plain_central_difference(solver, x, v, count, h, c):
    """The reference: the terms' force sum (StaticSolver.forces, one unfused kernel per term) and the
    central-difference update in numpy, one sub-step at a time."""
    m = solver.mass.numpy()[:, None]
    free = solver.model.node_free[:, None] & (m > 0)
    for _ in range(count):
        f = solver.static.forces(wp.array(x, dtype=wp.vec3d, device=solver.model.device)).numpy()
        v = np.where(free, ((1 - 0.5 * c * h) * v + h / np.where(free, m, 1.0) * f) / (1 + 0.5 * c * h), 0.0)
        x = np.where(free, x + h * v, x)
    return x, v


@pytest.mark.parametrize("threads", [1, 2])
def test_explicit_fused_graph_and_threads_match_plain_reference(device, threads):
    """The fused sub-step (element forces into per-thread buffers; gravity, springs, update and clearing in
    one node kernel), replayed from a graph (threads=1) or split over two CPU threads, follows the plain
    sub-step loop to rounding, with mass scaling (gravity on the true mass) and springs; a graph captured
    for one sub-step count is reused with another dt and damping."""
    pts, tets = box_mesh((3, 3, 3), (0.03, 0.03, 0.03))
    springs = np.where(pts[:, 0] > 0.03 - 1e-12, 50.0, 0.0)
    model = ModelSpec(pts, tets, 1, E_PA, NU, RHO, pts[:, 2] < 1e-12, springs,
                      gravity=(0.0, -3.0, -9.81)).finalize(device)
    solver = ExplicitSolver(model, mass_scaling_dt=2.0 * ExplicitSolver(model).dt_stable, threads=threads)
    assert solver.threads == (threads if device == "cpu" else 1) and solver.added_mass_fraction > 0.1
    state = model.state()
    x, v = pts.copy(), np.zeros_like(pts)
    dt = solver.dt
    for how, count, h, c in (("count", 7, dt, 0.0), ("count", 7, dt, 40.0), ("step", 6, 5.5 * dt / 6, 0.0),
                             ("step", 6, dt, 0.0)):
        if how == "count":
            solver.step_count(state, None, count, c)
        else:
            assert solver.step(state, state, None, count * h).increments == count
        x, v = plain_central_difference(solver, x, v, count, h, c)
        assert np.abs(state.positions() - x).max() <= 1e-11 * np.abs(x - pts).max()
        assert np.abs(state.v.numpy() - v).max() <= 1e-11 * np.abs(v).max()
    assert len(solver._graphs) == (2 if solver.use_graph else 0)       # counts 7 and 6: one graph each


def test_explicit_threads_beyond_the_element_count(device):
    """More threads than elements: the split is clamped to one element per thread (no empty part) and the
    trajectory equals the one-thread one."""
    pts, tets = box_mesh((1, 1, 1), (0.01, 0.01, 0.01))
    model = ModelSpec(pts, tets, 1, E_PA, NU, RHO, pts[:, 2] < 1e-12, 0.0, gravity=(0.0, 0.0, -9.81)).finalize(device)
    many, one = ExplicitSolver(model, threads=len(tets) + 5), ExplicitSolver(model)
    assert many.threads == (len(tets) if device == "cpu" else 1)
    a, b = model.state(), model.state()
    many.step(a, a, None, 20 * one.dt)
    one.step(b, b, None, 20 * one.dt)
    assert np.abs(a.positions() - b.positions()).max() <= 1e-12 * np.abs(b.positions() - pts).max()


def test_backward_euler_dissipates_monotonically(device):
    model = block_model(device)
    x_eq = static_equilibrium(model)
    solver = ImplicitEulerSolver(model, tol=1e-9)
    state = model.state()
    energy = [solver.potential_energy(state.x)]
    for _ in range(25):
        rep = solver.step(state, state, None, 5e-3)
        v = state.v.numpy()
        energy.append(solver.potential_energy(state.x) + 0.5 * np.sum(model.node_mass[:, None] * v * v))
        assert rep.inverted == 0 and rep.cutbacks == 0
    de = np.diff(energy)
    assert (de <= 1e-12 * abs(energy[0])).all(), de
    assert energy[-1] < energy[0]
    # it settles towards the static equilibrium
    u = x_eq - model.spec.points
    assert np.linalg.norm(state.positions() - x_eq) < 0.2 * np.linalg.norm(u)


@pytest.mark.parametrize("scaled", [False, True])
def test_dynamic_relaxation_matches_static(device, scaled):
    model = block_model(device)
    x_eq = static_equilibrium(model)
    base = ExplicitSolver(model)
    kw = {"mass_scaling_dt": 3.0 * base.dt_stable} if scaled else {}
    solver = ExplicitSolver(model, **kw)
    if scaled:
        assert solver.dt >= 3.0 * base.dt_stable * (1 - 1e-9) and solver.added_mass_fraction > 0.5
    state = model.state()
    rep = solver.relax(state, tol=1e-7)
    u = x_eq - model.spec.points
    err = np.linalg.norm(state.positions() - x_eq) / np.linalg.norm(u)
    assert err <= 1e-3, (err, rep)


# ---------------------------------------------------------------- prescribed displacements
def test_prescribed_affine_patch_changes_between_steps(device):
    pts, tets = box_mesh((3, 3, 3), (0.03, 0.03, 0.03))
    lo, hi = pts.min(0), pts.max(0)
    bnd = np.any((pts < lo + 1e-12) | (pts > hi - 1e-12), axis=1)
    model = ModelSpec(pts, tets, 1, E_PA, NU, RHO, bnd, 0.0).finalize(device)
    control = Control(model)
    solver = QuasiStaticSolver(model, tol=1e-11, cg_tol=1e-8)
    state = model.state()
    rng = np.random.default_rng(4)
    for step in range(2):                                # new targets, same Model and solver
        f = np.eye(3) + 0.1 * rng.standard_normal((3, 3))
        exact = pts @ f.T + 0.002 * rng.standard_normal(3)
        control.prescribe(np.flatnonzero(bnd), exact[bnd])
        rep = solver.step(state, state, control)
        x = state.positions()
        assert np.abs(x[bnd] - exact[bnd]).max() < 1e-15
        assert np.abs(x[~bnd] - exact[~bnd]).max() < 1e-8 * np.abs(exact - pts).max(), step
        assert rep.inverted == 0
    with pytest.raises(ValueError, match="not fixed"):
        control.prescribe(np.flatnonzero(~bnd)[:1], pts[~bnd][:1])


def test_implicit_and_explicit_follow_prescribed_motion(device):
    """Top face pulled up 1 mm over a step: both dynamic solvers end with it there and stay healthy."""
    model = block_model(device, gravity=(0, 0, 0), fixed=lambda p: (p[:, 2] < 1e-12) | (p[:, 2] > 0.03 - 1e-12))
    pts = model.spec.points
    top = np.flatnonzero(pts[:, 2] > 0.03 - 1e-12)
    for solver in (ImplicitEulerSolver(model), ExplicitSolver(model)):
        control = Control(model)
        control.prescribe(top, pts[top] + [0, 0, 0.001])
        state = model.state()
        rep = solver.step(state, state, control, 0.01)
        x = state.positions()
        assert np.abs(x[top, 2] - pts[top, 2] - 0.001).max() < 1e-12
        mid = np.flatnonzero(np.abs(pts[:, 2] - 0.02) < 1e-12)
        assert 0 < (x[mid, 2] - pts[mid, 2]).mean() < 0.001                    # the interior followed
        assert rep.inverted == 0


def test_nan_state_fails_with_reason(device):
    model = block_model(device)
    x = model.spec.points.copy()
    x[5] = np.nan
    with pytest.raises(SolverError, match="non-finite"):
        ExplicitSolver(model, max_cutbacks=1).step(model.state(x), model.state(), None, 1e-3)
    with pytest.raises(SolverError):
        ImplicitEulerSolver(model, max_cutbacks=1).step(model.state(x), model.state(), None, 1e-3)
    inv = model.spec.points.copy()
    inv[:, 2] *= -1.0                                     # mirrored: every element inverted
    assert element_health(model, model.state(inv).x)[0] == len(model.spec.tets)


def test_quasi_static_cuts_back_a_step_that_fails(device):
    """A large prescribed shear + compression in one increment does not converge (Newton capped at 5
    iterations); the step is cut back into smaller increments and ends converged without inversion,
    and without cut-backs it fails with the reason."""
    model = block_model(device, gravity=(0, 0, 0), fixed=lambda p: (p[:, 2] < 1e-12) | (p[:, 2] > 0.03 - 1e-12))
    pts = model.spec.points
    top = np.flatnonzero(pts[:, 2] > 0.03 - 1e-12)
    control = Control(model)
    control.prescribe(top, pts[top] + [0.012, 0.0, -0.012])
    with pytest.raises(SolverError, match="after 0 cut-backs: Newton stopped"):
        QuasiStaticSolver(model, newton_max_iter=5, max_cutbacks=0, tol=1e-8).step(model.state(), model.state(),
                                                                                    control)
    state = model.state()
    rep = QuasiStaticSolver(model, newton_max_iter=5, max_cutbacks=6, tol=1e-8).step(state, state, control)
    assert rep.cutbacks >= 1 and rep.increments >= 2 and rep.inverted == 0
    assert rep.relative_residual <= 1e-8
    assert np.abs(state.positions()[top] - (pts[top] + [0.012, 0.0, -0.012])).max() < 1e-15


def test_explicit_with_tool_contact_relaxes_to_quasi_static(device):
    """A sphere moved into a block over one explicit step (tool interpolated across the sub-steps), then
    dynamic relaxation: the same equilibrium and contact force as the quasi-static solver."""
    from surgtwin.sim import Sphere, ToolContact

    results = {}
    for kind in ("static", "explicit"):
        model = block_model(device, gravity=(0, 0, 0))
        control = Control(model)
        tool = control.add_tool(Sphere(0.02), [0.015, 0.015, 0.05])
        contact = ToolContact(model, control, tool)
        state = model.state()
        control.set_tool_pose(tool, [0.015, 0.015, 0.0485])
        if kind == "static":
            QuasiStaticSolver(model, extra_terms=[contact], tol=1e-10).step(state, state, control)
        else:
            solver = ExplicitSolver(model, extra_terms=[contact])
            assert solver.dt_stable < ExplicitSolver(model).dt_stable        # penalty stiffness counted
            rep = solver.step(state, state, control, 0.02)
            assert rep.cutbacks == 0
            solver.relax(state, control, tol=1e-8)
        results[kind] = (state.positions(), contact.force(state.x))
    (xs, fs), (xe, fe) = results["static"], results["explicit"]
    u = np.linalg.norm(xs - model.spec.points)
    assert np.linalg.norm(xe - xs) <= 1e-3 * u
    assert fs[2] < 0 and np.allclose(fe, fs, rtol=1e-3, atol=1e-3 * abs(fs[2]))


def test_explicit_graph_recaptured_after_a_new_tool(device):
    """A tool added after a step reallocates the Control's tool arrays: the replayed graph must follow (the
    second step, pressing tool 0 deeper, equals the same steps without a graph)."""
    from surgtwin.sim import Sphere, ToolContact

    out = []
    for use_graph in (True, False):
        model = block_model(device, gravity=(0, 0, 0))
        control = Control(model)
        tool = control.add_tool(Sphere(0.02), [0.015, 0.015, 0.0505])
        solver = ExplicitSolver(model, extra_terms=[ToolContact(model, control, tool)], use_graph=use_graph)
        state = model.state()
        solver.step(state, state, control, 40 * solver.dt)
        control.add_tool(Sphere(0.005), [0.2, 0.2, 0.2])
        control.set_tool_pose(tool, [0.015, 0.015, 0.0485])
        solver.step(state, state, control, 40 * solver.dt)
        out.append(state.positions())
    assert np.abs(out[0] - out[1]).max() <= 1e-12 * np.abs(out[1] - model.spec.points).max()
    assert np.abs(out[1] - model.spec.points).max() > 1e-4                   # the tool did press in


def test_implicit_step_is_split_when_a_solve_fails(device):
    model = block_model(device, gravity=(0, 0, 0), fixed=lambda p: (p[:, 2] < 1e-12) | (p[:, 2] > 0.03 - 1e-12))
    pts = model.spec.points
    top = np.flatnonzero(pts[:, 2] > 0.03 - 1e-12)
    control = Control(model)
    control.prescribe(top, pts[top] + [0.012, 0.0, -0.012])
    with pytest.raises(SolverError, match="implicit step failed"):
        ImplicitEulerSolver(model, newton_max_iter=4, max_cutbacks=0).step(model.state(), model.state(), control, 1.0)
    state = model.state()
    rep = ImplicitEulerSolver(model, newton_max_iter=4, max_cutbacks=8).step(state, state, control, 1.0)
    assert rep.cutbacks >= 1 and rep.increments >= 2 and rep.inverted == 0
    assert np.abs(state.positions()[top] - (pts[top] + [0.012, 0.0, -0.012])).max() < 1e-15
