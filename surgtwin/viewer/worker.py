"""Solves off the UI thread: a latest-frame buffer (no Qt) and a QThread that runs one session job.

The display loop never waits on the solver: the worker drops each new frame into ``FrameBuffer``
and the UI takes whatever is newest when it redraws.
"""
from __future__ import annotations

import threading

from ..errors import SurgtwinError

JOBS = ("equilibrate", "step", "run")


class FrameBuffer:
    """Thread-safe holder of the newest frame; ``take`` returns it once (else None)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._frame = None
        self._seq = 0
        self._taken = 0

    def put(self, frame):
        with self._lock:
            self._frame = frame
            self._seq += 1

    def take(self):
        with self._lock:
            if self._seq == self._taken:
                return None
            self._taken = self._seq
            return self._frame


def run_job(session, job: str, on_progress, should_stop=lambda: False) -> str:
    """Run ``job`` on ``session`` in the calling thread: "equilibrate" (pre-op equilibrium), "step"
    (the next pending step) or "run" (every pending step). Calls ``on_progress(Progress)`` per Newton
    iteration. Returns a one-line summary; a stopped step goes back to the pending list."""
    from .session import Stopped

    if job not in JOBS:
        raise ValueError(f"unknown job '{job}' ({', '.join(JOBS)})")
    seen = {"last": None}

    def progress(p):
        seen["last"] = p
        on_progress(p)
    records = []
    try:
        if job == "equilibrate":
            session.equilibrate(progress, should_stop)
        else:
            while session.pending and not should_stop():
                records.append(session.run_next(progress, should_stop))
                if job == "step":
                    break
    except Stopped:
        return "stopped: the step is back in the pending list"
    last = seen["last"]
    if last is None:
        return "nothing to solve"
    msg = (f"{last.step}: {last.iteration} Newton iterations, residual {last.relative_residual:.1e}"
           f"{' (stopped)' if should_stop() else ''}")
    if records and "duplicated_nodes" in records[-1]:
        r = records[-1]
        msg += (f"; {r['split_elements']} elements split, {r['duplicated_nodes']} nodes duplicated, "
                f"topology {r['topology_seconds']:.2f} s")
    if records and "wound_opening_mm" in records[-1]:
        msg += f"; wound open {records[-1]['wound_opening_mm']:.1f} mm"
    return msg


def _lower_priority(niceness: int = 5):
    """Give the display the upper hand on a busy CPU: raise this thread's nice value (Linux: per thread)."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def make_thread_class():
    """The QThread subclass (built on first use so this module imports without Qt)."""
    from PySide6.QtCore import QThread, Signal

    class SolveThread(QThread):
        progress = Signal(object)      # Progress (its frame also goes to the buffer)
        done = Signal(str)
        failed = Signal(str)

        def __init__(self, session, job: str, buffer: FrameBuffer, parent=None):
            super().__init__(parent)
            self.session, self.job, self.buffer = session, job, buffer
            self._stop = threading.Event()

        def stop(self):
            self._stop.set()

        def run(self):
            _lower_priority()

            def on_progress(p):
                self.buffer.put(p.frame)
                self.progress.emit(p)
            try:
                self.done.emit(run_job(self.session, self.job, on_progress, self._stop.is_set))
            except SurgtwinError as exc:
                self.failed.emit(str(exc))
            except Exception as exc:  # a bug: shown in the status bar, the window stays usable
                self.failed.emit(f"internal error: {type(exc).__name__}: {exc}")

    return SolveThread
