"""First viewer: a PyVista window on a run folder with the deformation or risk overlay.

The full Qt rehearsal application (incision picking, live simulation) is its own issue; this opens
the result for inspection, or renders it off-screen to a PNG.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_path
from ..risk import RiskReport


def view(run: str | Path, *, overlay: str = "shift_mm", screenshot: str | Path | None = None,
         window_size=(1100, 850)):
    """Show ``run`` interactively, or write ``screenshot`` (PNG) off-screen and return its path."""
    import pyvista as pv

    from ..report import build_scene, headless_rendering

    if screenshot is not None:
        headless_rendering()

    run = Path(run)
    if not run.is_dir():
        raise InputError(f"no such run folder: {run}")
    report = RiskReport.load(run / "report.json") if (run / "report.json").is_file() else None
    off = screenshot is not None
    if not off and (not pv.system_supports_plotting() or (
            os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))):
        raise InputError("no usable display to open a window on: use --screenshot FILE.png (or run under Xvfb)")
    pl = pv.Plotter(off_screen=off, window_size=list(window_size), title=f"surgtwin – {run.name}")
    pl.set_background("white")
    build_scene(pl, run, overlay, report=report)
    if report is not None:
        m = report.metrics
        pl.add_text(f"remnant {m['remnant_percent']:.1f} %   margin {m['margin_achieved_mm']:.1f} mm   "
                    f"vessels crossing {len(report.vessels)}   peak strain {m['peak_strain']:.2f}",
                    position="upper_left", font_size=10, color="black")
    if off:
        screenshot = Path(screenshot)
        if screenshot.suffix.lower() != ".png":
            raise InputError("screenshot must be a .png file")
        with atomic_path(screenshot) as tmp:
            pl.screenshot(str(tmp))
        pl.close()
        return screenshot
    pl.show()
    return None
