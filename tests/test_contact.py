"""Loads and rigid tool contact (surgtwin.sim.loads / contact / control): signed distances against closed
forms, forces = -grad energy and tangent = d force for every tool kind (friction included), force
readout in equilibrium, Coulomb friction cap, pressure and attachment springs against closed forms,
and a coarse Hertz indentation (the 5 % one runs in `surgtwin verify`)."""
from __future__ import annotations

import numpy as np
import pytest
import warp as wp

from surgtwin import verify
from surgtwin.sim import (Attachments, Capsule, Control, ModelSpec, Plane, QuasiStaticSolver, Sphere,
                          StaticSolver, SurfacePressure, ToolContact, TriangleMeshTool, boundary_faces)
from surgtwin.sim.blocks import box_mesh
from surgtwin.sim.loads import Rollers
from termeval import term_diag, term_energy, term_forces, term_hv, warr

E_PA, NU, RHO = 5000.0, 0.45, 1000.0


def cube_mesh_tool(half: float) -> TriangleMeshTool:
    """Closed cube [-half, half]^3, outward-wound triangles."""
    v = np.array([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = []
    for a, b, c, d in quads:
        tris += [(a, b, c), (a, c, d)]
    tris = np.array(tris)
    # orient outward: the normal must point away from the centre
    for t in tris:
        n = np.cross(v[t[1]] - v[t[0]], v[t[2]] - v[t[0]])
        if np.dot(n, v[t].mean(0)) < 0:
            t[[1, 2]] = t[[2, 1]]
    return TriangleMeshTool(v, tris)


def rot_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def block(device, n=(3, 3, 3), size=(0.03, 0.03, 0.03), fixed=None, gravity=(0, 0, 0), poisson=NU):
    pts, tets = box_mesh(n, size)
    fixed = pts[:, 2] < 1e-12 if fixed is None else fixed(pts)
    return ModelSpec(pts, tets, 1, E_PA, poisson, RHO, fixed, 0.0, gravity=gravity).finalize(device)


# the tools of the tests: (shape, position, rotation, exact signed distance in numpy)
def tool_cases():
    r, h = 0.012, 0.008
    axis_rot = rot_x(0.4)
    axis = axis_rot[:, 2]
    c0 = np.array([0.015, 0.016, 0.036])

    def sphere_phi(x):
        return np.linalg.norm(x - c0, axis=1) - r

    def capsule_phi(x):
        s = np.clip((x - c0) @ axis, -h, h)
        return np.linalg.norm(x - (c0 + s[:, None] * axis), axis=1) - r

    plane_rot = rot_x(np.pi - 0.3)                 # solid above a tilted plane through c1
    c1 = np.array([0.015, 0.015, 0.026])

    def plane_phi(x):
        return (x - c1) @ plane_rot[:, 2]

    half = 0.01
    c2 = np.array([0.015, 0.014, 0.037])

    def cube_phi(x):                                # exact box SDF, axis-aligned cube centred at c2
        q = np.abs(x - c2) - half
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)

    return {"sphere": (Sphere(r), c0, None, sphere_phi), "capsule": (Capsule(r, h), c0, axis_rot, capsule_phi),
            "plane": (Plane(), c1, plane_rot, plane_phi), "mesh": (cube_mesh_tool(half), c2, None, cube_phi)}


@pytest.mark.parametrize("kind", ["sphere", "capsule", "plane", "mesh"])
def test_signed_distance_energy_matches_closed_form(device, kind):
    model = block(device)
    shape, pos, rot, phi = tool_cases()[kind]
    control = Control(model)
    t = control.add_tool(shape, pos, rot)
    nodes = np.arange(model.node_count)
    k = 7.0
    term = ToolContact(model, control, t, stiffness=k, nodes=nodes)
    rng = np.random.default_rng(1)
    x = model.spec.points + 0.002 * rng.standard_normal(model.spec.points.shape)
    ph = phi(x)
    inside = ph < 0
    assert 3 <= inside.sum() < len(x)                                   # some in, some out
    ref = 0.5 * k * np.sum(ph[inside] ** 2)
    tol = 1e-5 if kind == "mesh" else 1e-12                             # meshes are queried in float32
    assert term_energy(term, x, device) == pytest.approx(ref, rel=tol)
    assert term.contact_count(warr(x, device)) == inside.sum()
    f = term_forces(term, x, device)
    assert np.abs(f[~inside]).max() == 0.0


@pytest.mark.parametrize("kind", ["sphere", "capsule", "plane", "mesh"])
@pytest.mark.parametrize("friction", [0.0, 0.4])
def test_contact_forces_gradient_and_tangent(device, kind, friction):
    model = block(device)
    shape, pos, rot, _ = tool_cases()[kind]
    control = Control(model)
    t = control.add_tool(shape, pos, rot)
    term = ToolContact(model, control, t, friction=friction)
    rng = np.random.default_rng(2)
    x = model.spec.points + 0.002 * rng.standard_normal(model.spec.points.shape)
    term.begin_step(warr(x, device))                        # stick anchors where in contact now
    x = x + 0.0003 * rng.standard_normal(x.shape)           # then slide a little: friction loaded
    if friction:
        assert len(term.sticking()) >= 3
    f = term_forces(term, x, device)
    assert np.linalg.norm(f) > 0
    step = 1e-7 if kind != "mesh" else 1e-6
    grad = np.zeros_like(x)
    for i in np.flatnonzero(np.linalg.norm(f, axis=1) > 0):
        for c in range(3):
            xp, xm = x.copy(), x.copy()
            xp[i, c] += step
            xm[i, c] -= step
            grad[i, c] = (term_energy(term, xp, device) - term_energy(term, xm, device)) / (2 * step)
    tol = 1e-6 if kind != "mesh" else 1e-3
    assert np.linalg.norm(f + grad) <= tol * np.linalg.norm(f)
    for _ in range(2):
        v = rng.standard_normal(x.shape)
        eps = 1e-8 if kind != "mesh" else 1e-6
        fd = -(term_forces(term, x + eps * v, device) - term_forces(term, x - eps * v, device)) / (2 * eps)
        hv = term_hv(term, x, v, device)
        # meshes: flat-face Hessian (exact on face interiors; nodes near the cube's edges see curvature)
        assert np.linalg.norm(hv - fd) <= (1e-5 if kind != "mesh" else 1e-2) * np.linalg.norm(fd)
    # Jacobi diagonal: the Hessian's diagonal, clamped at 0
    d = term_diag(term, x, device)
    for i in np.flatnonzero(np.linalg.norm(f, axis=1) > 0)[:4]:
        for c in range(3):
            e = np.zeros_like(x)
            e[i, c] = 1.0
            assert d[i, c] == pytest.approx(max(term_hv(term, x, e, device)[i, c], 0.0), rel=1e-9, abs=1e-12)


def test_contact_force_balances_support_reaction(device):
    """Sphere pressed into a block fixed at its base: tool force = support reaction (and points down)."""
    model = block(device, n=(4, 4, 3))
    control = Control(model)
    tool = control.add_tool(Sphere(0.01), [0.015, 0.015, 0.04])
    contact = ToolContact(model, control, tool)
    solver = QuasiStaticSolver(model, extra_terms=[contact], increments=2, tol=1e-9)
    state = model.state()
    control.set_tool_pose(tool, [0.015, 0.015, 0.0385])
    rep = solver.step(state, state, control)
    fz = contact.force(state.x)
    f_el = wp.zeros(model.node_count, dtype=wp.vec3d, device=device)
    solver.terms[0].add_forces(state.x, f_el)
    reaction = -f_el.numpy()[model.spec.fixed].sum(0)
    assert fz[2] < -1e-4 and rep.inverted == 0
    assert np.allclose(fz + reaction, 0.0, atol=1e-6 * abs(fz[2]))
    assert np.linalg.norm(state.positions()[0] - model.spec.points[0]) == 0.0   # base stays


def test_friction_sticks_below_and_slides_at_the_coulomb_cap(device):
    """A block resting on a frictional plane under gravity, pulled sideways by soft springs."""
    mu = 0.3
    spec_pts, tets = box_mesh((2, 2, 2), (0.02, 0.02, 0.02))
    results = {}
    for pull in (0.5, 3.0):                                     # spring pull as a multiple of mu * weight
        model = ModelSpec(spec_pts, tets, 1, E_PA, NU, RHO, False, 0.0, gravity=[0, 0, -9.81]).finalize(device)
        weight = model.node_mass.sum() * 9.81
        control = Control(model)
        floor = control.add_tool(Plane(), [0, 0, 0])
        contact = ToolContact(model, control, floor, friction=mu)
        top = np.flatnonzero(spec_pts[:, 2] > 0.02 - 1e-12)
        k = 0.02 * weight / 0.001 / len(top)                        # soft: 2 % of the weight per mm, in all
        springs = Attachments(model, control, top, k)
        solver = QuasiStaticSolver(model, extra_terms=[contact, springs], friction_passes=4, tol=1e-9)
        state = model.state()
        solver.step(state, state, control)                          # settle on the floor
        shift = pull * mu * weight / (k * len(top))
        control.set_anchors(springs.anchor_ids, spec_pts[top] + [shift, 0, 0])
        solver.step(state, state, control)
        fc, fs = contact.force(state.x), springs.force(state.x)
        assert np.allclose(fc + fs + [0, 0, -weight], 0.0, atol=1e-6 * weight)   # global equilibrium
        results[pull] = (fc, fs, state.positions()[:, 0].mean() - spec_pts[:, 0].mean(), shift)
    fc, fs, slide, shift = results[0.5]
    assert 0.4 * mu * fc[2] < -fc[0] < 0.6 * mu * fc[2]              # sticks: friction = pull < mu N
    assert slide < 0.1 * shift                                       # (elastic shear and penalty only)
    fc, fs, slide, shift = results[3.0]
    assert abs(fc[0]) == pytest.approx(mu * fc[2], rel=2e-2)        # slides: friction capped at mu N
    assert slide > 0.5 * shift


def test_mesh_tool_matches_plane(device):
    """A large cube mesh tool pressing down and the equivalent plane give the same equilibrium."""
    xs = {}
    for kind in ("plane", "mesh"):
        model = block(device)
        control = Control(model)
        if kind == "plane":
            t = control.add_tool(Plane(), [0.015, 0.015, 0.0295], rot_x(np.pi))   # solid above z = 0.0295
        else:
            t = control.add_tool(cube_mesh_tool(0.05), [0.015, 0.015, 0.0295 + 0.05])
        contact = ToolContact(model, control, t)
        state = model.state()
        QuasiStaticSolver(model, extra_terms=[contact], tol=1e-9).step(state, state, control)
        xs[kind] = (state.positions(), contact.force(state.x))
    assert xs["plane"][1][2] < 0
    assert np.allclose(xs["mesh"][1], xs["plane"][1], rtol=1e-6, atol=1e-6 * abs(xs["plane"][1][2]))
    # the mesh's vertices are float32: its face sits 0.05 - float32(0.05) = 7.5e-10 m off the plane
    assert np.abs(xs["mesh"][0] - xs["plane"][0]).max() < 2e-9


def test_pressure_resultant_energy_and_equilibrium(device):
    model = block(device, poisson=0.0)
    pts = model.spec.points
    faces = boundary_faces(model.spec.tets)
    top = faces[np.all(pts[faces][:, :, 2] > 0.03 - 1e-12, axis=1)]
    assert len(top) == 18
    p = 50.0
    pressure = SurfacePressure(model, top, p)
    assert np.allclose(pressure.nodal_force.sum(0), [0, 0, -p * 0.03 * 0.03], rtol=1e-12, atol=1e-15)
    rng = np.random.default_rng(0)
    x = pts + 1e-3 * rng.standard_normal(pts.shape)
    assert term_energy(pressure, x, device) == pytest.approx(-np.sum(pressure.nodal_force * x), rel=1e-12)
    # rollers on the sides and base: uniaxial compression, strain = p / E exactly in linear theory
    base = np.flatnonzero(pts[:, 2] < 1e-12)
    model = block(device, poisson=0.0, fixed=lambda q: np.zeros(len(q), bool))
    rollers = [Rollers(model, base, [0, 0, 1], 1e6), Rollers(model, np.flatnonzero(pts[:, 0] < 1e-12), [1, 0, 0], 1e6),
               Rollers(model, np.flatnonzero(pts[:, 1] < 1e-12), [0, 1, 0], 1e6)]
    pressure = SurfacePressure(model, top, p)
    state = model.state()
    assert StaticSolver(model, extra_terms=rollers + [pressure], tol=1e-12).solve(state).converged
    strain = -(state.positions()[:, 2].max() - 0.03) / 0.03
    assert strain == pytest.approx(p / E_PA, rel=2e-2)               # small strain: nonlinear terms ~ p/E
    pressure.set_pressure(2 * p)
    assert np.allclose(pressure.nodal_force.sum(0), [0, 0, -2 * p * 0.03 * 0.03])


def test_attachment_springs_in_series_with_bar(device):
    """A nu = 0 bar fixed at its base, its top nodes pulled by springs to anchors raised by s:
    top displacement u = s K / (K + EA/L) (springs in series, small strain)."""
    model = block(device, n=(1, 1, 4), size=(0.01, 0.01, 0.04), poisson=0.0)
    pts = model.spec.points
    top = np.flatnonzero(pts[:, 2] > 0.04 - 1e-12)
    faces = boundary_faces(model.spec.tets)
    faces = faces[np.all(pts[faces][:, :, 2] > 0.04 - 1e-12, axis=1)]
    share = np.zeros(len(pts))                            # tributary area: a uniform traction stays uniform
    np.add.at(share, faces.ravel(), 1.0 / (3 * len(faces)))
    kb_total = 0.5 * E_PA * 0.01 * 0.01 / 0.04
    control = Control(model)
    springs = Attachments(model, control, top, kb_total * share[top])
    s = 1e-6
    control.set_anchors(springs.anchor_ids, pts[top] + [0, 0, s])
    state = model.state()
    assert StaticSolver(model, extra_terms=[springs], tol=1e-12).solve(state).converged
    u = (state.positions()[top, 2] - pts[top, 2]).mean()
    k_bar = E_PA * 0.01 * 0.01 / 0.04
    assert u == pytest.approx(s * kb_total / (kb_total + k_bar), rel=1e-3)
    assert springs.force(state.x)[2] == pytest.approx(k_bar * u, rel=1e-3)


def test_hertz_coarse(device):
    """Coarse Hertz (a/h = 1.5): within 20 %; d^1.5 scaling of the force on the same mesh within 3 %."""
    res = verify.hertz_indentation(device=device, levels=(1.5,), tolerances=(0.2,), extent=30.0)
    assert res[0].passed and res[0].computed > res[0].reference, res
