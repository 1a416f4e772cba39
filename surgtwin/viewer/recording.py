"""Frames of a rehearsal (positions, alive elements, strain) for playback with a timeline, saved as NPZ.

Cuts change the topology (split and duplicated nodes, split elements), so every frame points to the
``Topology`` its arrays index; frames between two cuts share one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path
from ..mesh import TetMesh


@dataclass(eq=False)
class Topology:
    """One version of the mesh: all elements (live and removed) in the rest configuration [mm], and the
    state the rehearsal started from carried onto it (``start_mm`` (n, 3), the displacement reference)."""

    mesh: TetMesh
    start_mm: np.ndarray


@dataclass
class Frame:
    positions_mm: np.ndarray      # (n, 3) node positions [mm]
    alive: np.ndarray             # (m,) bool
    strain: np.ndarray            # (m,) max principal Green-Lagrange strain
    label: str = ""
    residual: float = float("nan")
    topology: Topology | None = None   # the mesh these arrays index (None: the session's current one)
    stress_pa: np.ndarray | None = None   # (m,) von Mises Cauchy stress [Pa] (None: not known)


class Recording:
    """An append-only list of frames; ``max_frames`` bounds memory (oldest dropped; a 20k-tet frame is
    about 0.3 MB; topologies are shared between frames)."""

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
        """One NPZ: per topology k ``rest_k``, ``tets_k``, ``labels_k``, ``start_k``; per frame i
        ``positions_i`` float32, ``alive_i``, ``strain_i`` float32, ``stress_i`` float32 [Pa] (where known);
        ``topology`` (f,), ``labels``,
        ``residuals`` and the label table (JSON)."""
        import json

        path = Path(path)
        if path.suffix != ".npz":
            raise InputError("save a recording as .npz")
        if not self.frames:
            raise InputError("nothing recorded yet")
        if any(f.topology is None for f in self.frames):
            raise InputError("a frame without its topology cannot be saved")
        topos: list[Topology] = []
        arrays = {}
        for i, f in enumerate(self.frames):
            if not any(f.topology is t for t in topos):
                k = len(topos)
                topos.append(f.topology)
                m = f.topology.mesh
                arrays.update({f"rest_{k}": m.points, f"tets_{k}": m.tets, f"labels_{k}": m.labels,
                               f"start_{k}": f.topology.start_mm})
            arrays[f"positions_{i}"] = f.positions_mm.astype(np.float32)
            arrays[f"alive_{i}"] = f.alive
            arrays[f"strain_{i}"] = f.strain.astype(np.float32)
            if f.stress_pa is not None:
                arrays[f"stress_{i}"] = f.stress_pa.astype(np.float32)
        arrays["topology"] = np.array([next(k for k, t in enumerate(topos) if t is f.topology) for f in self.frames])
        arrays["labels"] = np.array([f.label for f in self.frames])
        arrays["residuals"] = np.array([f.residual for f in self.frames])
        arrays["table"] = np.array(json.dumps(self.frames[0].topology.mesh.table.to_json_dict()))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recording":
        import json

        from ..labels import LabelTable

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such recording: {path}")
        try:
            d = np.load(path)
            table = LabelTable.from_json_dict(json.loads(str(d["table"])))
            topo_of = d["topology"]
            topos = {k: Topology(TetMesh.from_arrays(d[f"rest_{k}"], d[f"tets_{k}"], d[f"labels_{k}"], table),
                                 d[f"start_{k}"].astype(np.float64)) for k in np.unique(topo_of)}
            rec = cls(max_frames=max(500, len(topo_of)))
            for i, (k, lab, r) in enumerate(zip(topo_of, d["labels"], d["residuals"])):
                rec.append(Frame(d[f"positions_{i}"].astype(np.float64), d[f"alive_{i}"].astype(bool),
                                 d[f"strain_{i}"].astype(np.float64), str(lab), float(r), topos[int(k)],
                                 d[f"stress_{i}"].astype(np.float64) if f"stress_{i}" in d.files else None))
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"{path.name}: not a surgtwin recording ({exc})") from None
        return rec
