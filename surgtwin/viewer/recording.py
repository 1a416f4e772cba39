"""Frames of a rehearsal (positions, alive elements, strain) for playback with a timeline, saved as NPZ."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path


@dataclass
class Frame:
    positions_mm: np.ndarray      # (n, 3) node positions [mm]
    alive: np.ndarray             # (m,) bool
    strain: np.ndarray            # (m,) max principal Green-Lagrange strain
    label: str = ""
    residual: float = float("nan")


class Recording:
    """An append-only list of frames; ``max_frames`` bounds memory (oldest dropped; a 20k-tet frame is
    about 0.3 MB)."""

    def __init__(self, max_frames: int = 500):
        self.frames: list[Frame] = []
        self.max_frames = max_frames

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i) -> Frame:
        return self.frames[i]

    def append(self, frame: Frame):
        self.frames.append(frame)
        if len(self.frames) > self.max_frames:
            del self.frames[0]

    def save(self, path: str | Path) -> Path:
        """One NPZ: positions (f, n, 3) float32, alive (f, m) bool, strain (f, m) float32, labels, residuals."""
        path = Path(path)
        if path.suffix != ".npz":
            raise InputError("save a recording as .npz")
        if not self.frames:
            raise InputError("nothing recorded yet")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, positions=np.stack([f.positions_mm for f in self.frames]).astype(np.float32),
                                    alive=np.stack([f.alive for f in self.frames]),
                                    strain=np.stack([f.strain for f in self.frames]).astype(np.float32),
                                    labels=np.array([f.label for f in self.frames]),
                                    residuals=np.array([f.residual for f in self.frames]))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recording":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such recording: {path}")
        try:
            d = np.load(path)
            rec = cls(max_frames=max(500, len(d["positions"])))
            for p, a, s, lab, r in zip(d["positions"], d["alive"], d["strain"], d["labels"], d["residuals"]):
                rec.append(Frame(p.astype(np.float64), a.astype(bool), s.astype(np.float64), str(lab), float(r)))
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"{path.name}: not a surgtwin recording ({exc})") from None
        return rec
