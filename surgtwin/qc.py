"""Quality-control picture of a label map over its image: label outlines on axial, coronal and sagittal
slices through the labelled region, in radiological orientation (patient's right on the image left,
anterior up on axial, superior up on coronal and sagittal), CT windowed at W 400 / L 40 HU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .fileio import atomic_path
from .volume import LabelMap, Volume


def _isotropic(img: sitk.Image, spacing: float, interp) -> np.ndarray:
    """The image on an LPS-aligned grid of isotropic ``spacing`` mm, as a (z, y, x) array."""
    img = sitk.DICOMOrient(img, "LPS")
    size = [max(1, int(round(n * s / spacing))) for n, s in zip(img.GetSize(), img.GetSpacing())]
    out = sitk.Resample(img, size, sitk.Transform(), interp, img.GetOrigin(), (spacing,) * 3, img.GetDirection(),
                        0, img.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _panel(gray: np.ndarray, lab: np.ndarray, colors: dict) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for lid, color in colors.items():
        m = lab == lid
        if m.any():
            edge = m & ~ndimage.binary_erosion(m)
            rgb[edge] = color
    return rgb


def _legend(picture: np.ndarray, entries: list, path: Path):
    """The panels with a legend (colour, structure, volume) beside them, written as PNG via matplotlib at
    the picture's own resolution (pixels of the panels are kept as they are)."""
    from matplotlib.patches import Patch

    from .report_plots import pyplot

    plt = pyplot()

    h, w = picture.shape[:2]
    dpi = 100
    legend_w = 260
    fig = plt.figure(figsize=((w + legend_w) / dpi, max(h, 40 + 18 * len(entries)) / dpi), dpi=dpi)
    ax = fig.add_axes([0, 1 - h / (fig.get_figheight() * dpi), w / (w + legend_w), h / (fig.get_figheight() * dpi)])
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(facecolor=np.array(c) / 255.0, label=f"{n}  {v:.0f} mL") for n, c, v in entries]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, title="structure  volume")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor="white", format="png")
    plt.close(fig)


def qc_overlay(volume: Volume, labels: LabelMap, path: str | Path, *, spacing_mm: float | None = None,
               window=(40.0, 400.0)) -> Path:
    """Write a PNG of label outlines over three orthogonal slices through the labelled region's centre."""
    spacing = spacing_mm or float(min(volume.image.GetSpacing()))
    ct = _isotropic(volume.image, spacing, sitk.sitkLinear).astype(np.float32)
    lab_img = sitk.Resample(labels.image, volume.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    lab = _isotropic(lab_img, spacing, sitk.sitkNearestNeighbor)
    level, width = window
    gray = (np.clip((ct - (level - width / 2)) / width, 0, 1) * 255).astype(np.uint8)
    organs = [l.id for l in labels.table.labels.values() if l.category not in ("tissue", "bone")]
    zyx = np.argwhere(np.isin(lab, organs))
    if len(zyx) == 0:
        zyx = np.argwhere(lab > 0)
    cz, cy, cx = (np.median(zyx, axis=0).astype(int) if len(zyx) else np.array(lab.shape) // 2)
    present = set(labels.present_ids())
    colors = {l.id: np.array(l.color, np.uint8) for l in labels.table.labels.values()
              if l.id in present and l.name not in ("subcutaneous_fat", "body")}   # would hide the organs
    panels = [_panel(gray[cz], lab[cz], colors),                         # axial: rows P (down), cols L (right)
              _panel(gray[::-1, cy, :], lab[::-1, cy, :], colors),       # coronal: S up, L right
              _panel(gray[::-1, :, cx], lab[::-1, :, cx], colors)]       # sagittal: S up, P right
    height = max(p.shape[0] for p in panels)
    panels = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
    picture = np.concatenate(panels, axis=1)
    zoom = max(1, int(np.ceil(360 / height)))  # small scans are enlarged (nearest neighbour) to be readable
    picture = picture.repeat(zoom, axis=0).repeat(zoom, axis=1)
    volumes = labels.volumes_ml()
    entries = [(l.name, l.color, volumes.get(l.name, 0.0)) for lid, l in sorted(labels.table.labels.items())
               if lid in colors]
    path = Path(path)
    _legend(picture, entries, path)
    return path
