"""Atomic file and folder writing: outputs appear whole or not at all."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename it onto ``path`` on success.

    The temporary name keeps the full suffix (``.nii.gz``, ``.vtu``) so writers that choose their
    format by extension still work. On any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: Files that mark a folder as surgtwin's own output (safe to replace with a new run).
OUTPUT_MARKERS = ("surgtwin.log", "deid_audit.json")


def is_replaceable(path: Path) -> bool:
    """An absent path, an empty folder, or a folder a surgtwin command wrote."""
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    return not any(path.iterdir()) or any((path / m).is_file() for m in OUTPUT_MARKERS)


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Build an output folder under a hidden staging name and move it into place on success.

    On failure the staging folder is deleted, so a failed command leaves no partial output. An
    existing folder is replaced only if ``overwrite`` and it is empty or a previous surgtwin output;
    anything else (a user's folder, a file) is refused before any work is done.
    """
    from .errors import InputError

    final = Path(final).resolve()
    if final.exists() and not (overwrite and is_replaceable(final)):
        what = "a file" if not final.is_dir() else "a folder that surgtwin did not write"
        raise InputError(f"output {final} exists and is {what}: choose another -o")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.with_name(f".partial-{uuid.uuid4().hex[:8]}-{final.name}")
    stage.mkdir()
    try:
        yield stage
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
