"""Regenerate the README's procedure figures (docs/images/procedure_*.png), off-screen.

    python docs/make_procedure_figures.py                       # the block incision only
    python docs/make_procedure_figures.py runs/wedge             # + the phantom frames of a run made with
                                                                 #   surgtwin run procedure=wedge_resection
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from surgtwin.recording import Recorder, render_frame
from surgtwin.sim import ModelSpec, StaticSolver
from surgtwin.sim.blocks import box_mesh
from surgtwin.surgery import Surgery

IMAGES = Path(__file__).resolve().parent / "images"


def block_incision(png: Path) -> dict:
    """A bent incision 22 mm deep in an 80 x 40 x 40 mm block whose ends are pulled 15 % apart."""
    pts, tets = box_mesh((16, 8, 8), (0.08, 0.04, 0.04))
    end = (pts[:, 0] < 1e-9) | (pts[:, 0] > 0.08 - 1e-9)
    anchors = pts.copy()
    anchors[:, 0] = (pts[:, 0] - 0.04) * 1.15 + 0.04
    spec = ModelSpec(pts, tets, 5, 5e3, 0.45, 1000.0, False, np.where(end, 1e3, 0.0), anchors=anchors)
    model = spec.finalize("cpu")
    state = model.state()
    StaticSolver(model).solve(state)
    with tempfile.TemporaryDirectory() as tmp:
        op = Surgery(spec, state.positions(), recorder=Recorder(tmp))
        rec = op.incise([[41.0, -2, 40], [36.0, 20, 40], [41.0, 42, 40]], depth_mm=22.0, direction=[0, 0, -1])
        render_frame(Path(tmp) / rec.files[0], png, focus_mm=[42, 20, 25], zoom=0.9, view_from=(0.35, -1.0, 0.8),
                     scalars="displacement_mm",
                     title="a bent incision, 22 mm deep, in a block stretched 15 %: the wound opens, its front stays attached")
    return rec.detail


def wedge_frames(run: Path):
    sim = run / "sim"
    grasp, t = np.array([-49.9, -37.5, -17.6]), np.array([-0.467, -0.884, 0.0])
    normal = np.array([0.72, -0.38, -0.58])
    render_frame(sim / "steps" / "03_retract.vtu", IMAGES / "procedure_incision.png", focus_mm=grasp, zoom=2.5,
                 view_from=-t + 0.6 * normal, section_normal=-t,
                 title="step 3: the incision opened by the grasper (section across the wound; red: held nodes)")
    render_frame(sim / "steps" / "07_settle.vtu", IMAGES / "procedure_resection.png", focus_mm=[-70.96, -26.51, 3.14],
                 zoom=1.5, view_from=-t + 0.8 * normal, section_normal=-t,
                 title="step 7: remnant after the 10 mm-margin resection, re-equilibrated (section through the tumour bed)")


if __name__ == "__main__":
    print(block_incision(IMAGES / "procedure_bar_incision.png"))
    if len(sys.argv) > 1:
        wedge_frames(Path(sys.argv[1]))
