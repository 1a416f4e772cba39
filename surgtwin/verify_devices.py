"""CPU against CUDA: the same problems solved on two devices must agree to float64 round-off (issue: <= 1e-5).

Each case builds the same model on both devices and compares one array (displacement, velocity or stress):
rel. difference = max |a_dev - a_ref| / max |a_ref|. The problems touch every kernel family the solvers launch:
Neo-Hookean with average nodal pressure and gravity (static Newton-PCG), a rigid sphere pressing with friction
(quasi-static contact), a backward-Euler step, explicit central-difference sub-steps (a CUDA graph on CUDA)
and the per-element stress diagnostics.

    rows = device_agreement("cuda")          # list of surgtwin.verify.VerifyResult
"""
from __future__ import annotations

import numpy as np
import warp as wp

from surgtwin.sim import (Control, ExplicitSolver, ImplicitEulerSolver, QuasiStaticSolver, Sphere, StaticSolver,
                          ToolContact)
from surgtwin.sim.blocks import box_mesh
from surgtwin.sim.diagnostics import element_stress
from surgtwin.verify import VerifyResult, _build, _compare

TOLERANCE = 1e-5
E_PA, NU, RHO = 5000.0, 0.48, 1000.0


def _block(device, *, volumetric="anp", law=0):
    pts, tets = box_mesh((6, 4, 4), (0.06, 0.04, 0.04))
    model, _ = _build(pts, tets, device, youngs=E_PA, poisson=NU, density=RHO, fixed=pts[:, 0] < 1e-12,
                      gravity=(0.0, 0.0, -9.81), law=law, volumetric=volumetric)
    return model, pts


def _static(device):
    model, pts = _block(device)
    state = model.state()
    rep = StaticSolver(model, tol=1e-10).solve(state)
    return state.positions() - pts, rep.converged, f"{model.tet_count} tets, NH + ANP, gravity"


def _contact(device):
    model, pts = _block(device, volumetric="standard", law="mooney_rivlin")
    control = Control(model)
    top = np.flatnonzero(pts[:, 2] > 0.04 - 1e-12)
    tool = control.add_tool(Sphere(0.01), [0.045, 0.02, 0.05])
    contact = ToolContact(model, control, tool, nodes=top, friction=0.3)
    solver = QuasiStaticSolver(model, extra_terms=[contact], increments=2, tol=1e-10)
    state = model.state()
    control.set_tool_pose(tool, [0.045, 0.02, 0.047])
    rep = solver.step(state, state, control)
    return state.positions() - pts, rep.inverted == 0, "sphere pressing 3 mm, friction 0.3, Mooney-Rivlin"


def _implicit(device):
    model, pts = _block(device)
    state = model.state()
    rep = ImplicitEulerSolver(model, tol=1e-10).step(state, state, None, 0.01)
    return state.v.numpy().astype(np.float64), rep.inverted == 0, "one 10 ms backward-Euler step: velocity"


def _explicit(device):
    model, pts = _block(device, volumetric="standard")
    solver = ExplicitSolver(model)
    state = model.state()
    solver.step(state, state, None, 50 * solver.dt)
    solver.step(state, state, None, 50 * solver.dt)          # the second replays the captured graph on CUDA
    return state.positions() - pts, True, "2 x 50 central-difference sub-steps"


def _stress(device):
    model, pts = _block(device, volumetric="standard")
    rng = np.random.default_rng(7)
    x = pts + 1e-3 * rng.standard_normal(pts.shape)
    vm, _ = element_stress(model, model.state(x))
    return vm, True, "von Mises of a random 1 mm perturbation"


CASES = {"static_gravity": _static, "contact_friction": _contact, "implicit_euler": _implicit,
         "explicit_substeps": _explicit, "stress_diagnostics": _stress}


def device_agreement(device: str = "cuda", reference: str = "cpu") -> list[VerifyResult]:
    """One row per case: ``device`` against ``reference``; rows pass at <= 1e-5 relative difference."""
    wp.init()
    out = []
    for name, case in CASES.items():
        a, ok_a, note = case(device)
        b, ok_b, _ = case(reference)
        scale = float(np.abs(b).max())
        out.append(_compare(f"{device}_vs_{reference}_{name}", "max |a - a_ref| / max |a_ref|",
                            float(np.abs(a - b).max()), 0.0, TOLERANCE, scale=scale,
                            note=f"{note}; max|a_ref| = {scale:.3g}", valid=ok_a and ok_b))
    return out
