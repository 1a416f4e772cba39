"""Movie export: mp4 through imageio-ffmpeg when installed, else an animated GIF (imageio/Pillow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..fileio import atomic_path


def has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return True
    except Exception:
        return False


def movie_suffix() -> str:
    return ".mp4" if has_ffmpeg() else ".gif"


def write_movie(path: str | Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write RGB frames (h, w, 3 uint8). ``.mp4`` needs imageio-ffmpeg (else the file becomes .gif)."""
    import imageio.v2 as imageio

    path = Path(path)
    if not frames:
        raise ConfigError("nothing recorded to export")
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ConfigError("movies are .mp4 or .gif files")
    if path.suffix.lower() == ".mp4" and not has_ffmpeg():
        path = path.with_suffix(".gif")
    # even frame sizes for H.264
    h, w = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    frames = [np.ascontiguousarray(f[:h, :w, :3]) for f in frames]
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".mp4":
            with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    macro_block_size=2, pixelformat="yuv420p") as wr:
                for f in frames:
                    wr.append_data(f)
        else:
            imageio.mimsave(tmp, frames, format="GIF", duration=1.0 / fps, loop=0)
    return path
