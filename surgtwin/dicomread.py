"""Read a DICOM series into physical space, checking what scanners and exports get wrong.

Series are grouped by SeriesInstanceUID (GDCM); slices are ordered by their position along the slice
normal (never by file name). The geometry is rebuilt from ImagePositionPatient/ImageOrientationPatient:
- several series in a folder: the caller picks one (index or UID); otherwise a one-line list is raised;
- duplicate positions (mixed series) are an error;
- missing slices and non-uniform spacing: the volume is resampled linearly onto uniform slices at the
  median spacing, and a note says so;
- gantry tilt (slice offsets not along the normal): each slice is shifted in-plane onto an orthogonal grid;
- a single multi-frame file is read as one volume.
Rescale slope/intercept are applied per file by the reader. Notes never contain header values.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

log = logging.getLogger("surgtwin")


@dataclass
class SeriesInfo:
    index: int
    uid: str
    files: list
    modality: str
    rows: int
    cols: int

    def describe(self) -> str:
        return f"[{self.index}] {self.modality} {len(self.files)} file(s) {self.cols}x{self.rows} uid …{self.uid[-10:]}"


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The DICOM series in ``folder`` (or, if none there, in its sub-folders), largest first."""
    import pydicom

    folder = Path(folder)
    dirs = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir())
    out = []
    for d in dirs:
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d)):
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), uid))
            try:
                h = pydicom.dcmread(files[0], stop_before_pixels=True)
            except Exception:
                continue
            out.append(SeriesInfo(0, uid, files, str(h.get("Modality", "?")), int(h.get("Rows", 0) or 0),
                                  int(h.get("Columns", 0) or 0)))
        if out:
            break
    out.sort(key=lambda s: -len(s.files))
    for i, s in enumerate(out):
        s.index = i
    return out


def choose_series(series: list[SeriesInfo], choice: str | int | None, folder: Path) -> SeriesInfo:
    if not series:
        raise InputError(f"{folder}: no DICOM series found")
    if choice is None or str(choice) == "":
        if len(series) > 1:
            raise InputError(f"{folder}: {len(series)} series found, choose one with --series INDEX or UID: "
                             + "; ".join(s.describe() for s in series))
        return series[0]
    text = str(choice)
    for s in series:
        if text == str(s.index) or s.uid == text or (len(text) >= 6 and s.uid.endswith(text)):
            return s
    raise InputError(f"{folder}: no series '{text}' (have: " + "; ".join(s.describe() for s in series) + ")")


def read_series(folder: str | Path, series: str | int | None = None) -> tuple[sitk.Image, list[str]]:
    """Volume (LPS mm, rescaled values) and notes on what was corrected."""
    folder = Path(folder)
    info = choose_series(list_series(folder), series, folder)
    if len(info.files) == 1:
        return _read_multiframe(info.files[0])
    headers = _headers(info.files)
    row, col = headers["iop"][:3], headers["iop"][3:]
    normal = np.cross(row, col)
    pos = headers["ipp"] @ normal
    order = np.argsort(pos, kind="stable")
    files = [info.files[i] for i in order]
    ipp, pos = headers["ipp"][order], pos[order]
    gaps = np.diff(pos)
    if np.any(gaps < 1e-3):
        raise InputError(f"{folder}: two slices share a position (mixed or duplicated series)")
    spacing = float(np.median(gaps))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{folder}: DICOM series cannot be decoded ({str(exc).strip().splitlines()[0][:80]})") from None
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    ps = np.array(img.GetSpacing()[:2])  # (column spacing, row spacing)
    notes = []
    shear = (ipp - ipp[0]) - np.outer(pos - pos[0], normal)  # in-plane offset of each slice
    if np.abs(shear).max() > 0.05 * ps.min():
        tilt = np.degrees(np.arctan2(np.linalg.norm(shear[-1]), pos[-1] - pos[0]))
        notes.append(f"gantry tilt {tilt:.1f} deg: slices shifted in-plane onto an orthogonal grid")
        arr = _deshear(arr, shear, row, col, ps)
    missing = int(np.sum(np.round(gaps / spacing) - 1).clip(0))
    if missing or (gaps.max() - gaps.min()) > 0.01 * spacing:
        target = pos[0] + spacing * np.arange(int(np.floor((pos[-1] - pos[0]) / spacing + 1e-6)) + 1)
        arr = _resample_slices(arr, pos, target)
        what = f"{missing} missing slice(s)" if missing else f"non-uniform slice spacing ({gaps.min():.2f}-{gaps.max():.2f} mm)"
        notes.append(f"{what}: resampled to {len(target)} slices at {spacing:.2f} mm")
    out = sitk.GetImageFromArray(arr)
    out.SetOrigin(tuple(float(v) for v in ipp[0]))
    out.SetSpacing((float(ps[0]), float(ps[1]), spacing))
    out.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    for n in notes:
        log.warning("DICOM: %s", n)
    return out, notes


def _headers(files) -> dict:
    import pydicom

    ipp, iop = [], None
    for f in files:
        try:
            h = pydicom.dcmread(f, stop_before_pixels=True,
                                specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
            ipp.append([float(v) for v in h.ImagePositionPatient])
            iop = iop if iop is not None else np.array([float(v) for v in h.ImageOrientationPatient])
        except Exception:
            raise InputError(f"{Path(f).name}: DICOM slice without a readable position/orientation") from None
    return {"ipp": np.array(ipp), "iop": iop}


def _deshear(arr, shear, row, col, ps):
    from scipy import ndimage

    fill = float(arr.min())
    out = np.empty_like(arr)
    for k in range(arr.shape[0]):
        dx, dy = shear[k] @ row / ps[0], shear[k] @ col / ps[1]
        out[k] = ndimage.shift(arr[k], (dy, dx), order=1, mode="constant", cval=fill)
    return out


def _resample_slices(arr, pos, target):
    from scipy.interpolate import interp1d

    return interp1d(pos, arr, axis=0, kind="linear", assume_sorted=True)(target).astype(np.float32)


def _read_multiframe(path: str) -> tuple[sitk.Image, list[str]]:
    try:
        img = sitk.ReadImage(path)
    except RuntimeError:
        raise InputError(f"{Path(path).name}: DICOM file cannot be decoded") from None
    if img.GetDimension() != 3 or img.GetSize()[2] < 2:
        raise InputError(f"{Path(path).name}: a single 2D DICOM image is not a volume")
    return img, [f"multi-frame file with {img.GetSize()[2]} frames"]
