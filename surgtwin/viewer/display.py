"""The 3D view widget: pyvistaqt's ``QtInteractor``, drawing a frame once and only when asked.

As shipped, pyvistaqt (0.13) redraws the scene from a 5 Hz timer even when nothing changes, and its
paint handler renders the scene again after every explicit or interactor render (the first render
only fills VTK's buffer, the repaint renders it anew and copies it to the screen). On software OpenGL
a render of the liver scene takes tens of milliseconds of CPU, so that is 2-3 renders per displayed
frame, and 10 a second while idle, taken from the solver. Here:

- no timer: nothing is drawn while nothing changes;
- interactor renders (mouse rotation, 3D widgets, picking) and ``request_draw`` only ask Qt for a
  repaint; Qt merges the repaints asked for before the last one was drawn, so a slow draw never
  queues up draws behind it;
- the repaint renders once and shows it;
- one headlight instead of pyvista's five-light kit, and plain alpha blending for the translucent organ
  (VTK's order-independent transparency adds full-window passes; with the organ the only translucent
  surface, screenshots with and without it looked the same): each saves about a tenth of a
  software-rendered frame.

Explicit ``plotter.render()`` calls (screenshots, pyvista internals) still render at once. Relies on
pyvistaqt >= 0.13.1, whose interactor is a ``QOpenGLWidget`` that renders from ``paintGL`` through the
interactor's ``Render``.
"""
from __future__ import annotations

import pyvista as pv
from pyvistaqt import QtInteractor


class View(QtInteractor):
    def __init__(self, parent=None):
        super().__init__(parent, auto_update=False, multi_samples=0, point_smoothing=False, line_smoothing=False,
                         polygon_smoothing=False)
        self._painting = False
        iren = self.ren_win.GetInteractor()
        iren.EnableRenderOff()             # vtkRenderWindowInteractor::Render then only fires RenderEvent
        iren.AddObserver("RenderEvent", self._on_render_event)
        self.remove_all_lights()
        self.add_light(pv.Light(light_type="headlight"))
        self.renderer.SetUseOIT(False)

    def request_draw(self):
        """Draw the scene at the next turn of the event loop (once, however often asked before)."""
        self.update()

    def paintGL(self):
        self._painting = True
        try:
            super().paintGL()              # calls the interactor's Render -> _on_render_event
        finally:
            self._painting = False

    def _on_render_event(self, *_):
        if self._painting:
            self.ren_win.Render()
        else:
            self.update()
