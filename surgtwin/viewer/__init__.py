"""The desktop viewer: ``surgtwin view [CASE or RUN]``.

``view`` opens the Qt rehearsal application (``app.py``; needs the ``viewer`` extra: pyvistaqt +
PySide6) or, where Qt is not installed, the plain PyVista window (``legacy.py``). With
``screenshot`` it renders the run off-screen to a PNG (no display needed).
Qt-free parts (``session``, ``steps``, ``overlays``, ``scene``, ``recording``) are usable on their own.
"""
from __future__ import annotations

from .legacy import view as view_static


def qt_available() -> str | None:
    """None when the Qt viewer can be imported, else the reason it cannot."""
    import importlib

    try:
        for module in ("PySide6.QtWidgets", "pyvistaqt"):
            importlib.import_module(module)
    except ImportError as exc:
        return (f"the Qt viewer needs the 'viewer' extra ({exc.name or exc} is missing): "
                "pip install 'surgtwin[viewer]'")
    return None


def has_display() -> bool:
    """Whether Qt can open a window here (an X/Wayland display, or a Qt platform chosen explicitly;
    not when PYVISTA_OFF_SCREEN=true asks for off-screen rendering only)."""
    import os

    if os.environ.get("PYVISTA_OFF_SCREEN", "").lower() == "true":
        return False
    if os.name != "posix" or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def view(target=None, *, overlay: str = "shift_mm", screenshot=None, cfg=None, fallback_message=print):
    """Open ``target`` (run folder, case folder, or None for the phantom).

    With ``screenshot`` (PNG path) the run is rendered off-screen by the plain PyVista path and the
    path is returned. Otherwise the Qt application runs until its window closes; when Qt is missing
    the plain window opens on a run folder after ``fallback_message`` says why.
    """
    static_overlay = {"displacement": "shift_mm", "strain": "max_principal_strain", "distance": "risk",
                      "margin": "risk", "stress": "von_mises_kpa", "none": "risk"}.get(overlay, overlay)
    if screenshot is not None:
        return view_static(target, overlay=static_overlay, screenshot=screenshot)
    reason = qt_available()
    if reason is not None:
        if target is None:
            from ..errors import InputError

            raise InputError(reason)
        fallback_message(f"{reason}; opening the plain PyVista window instead")
        return view_static(target, overlay=static_overlay)
    from pathlib import Path

    if target is not None and not Path(target).is_dir():
        from ..errors import InputError

        raise InputError(f"no such run or case folder: {target}")
    if not has_display():
        from ..errors import InputError

        raise InputError("no display to open the viewer on: run it on a desktop, under Xvfb "
                         "(xvfb-run -a surgtwin view …), or render a run with --screenshot FILE.png")
    from .app import run_app

    return run_app(target, cfg=cfg, overlay=overlay)


__all__ = ["view", "view_static", "qt_available", "has_display"]
