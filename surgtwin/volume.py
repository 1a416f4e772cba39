"""Volume and LabelMap: images in physical space (LPS, millimetres, SimpleITK geometry).

A Volume holds intensities (CT in Hounsfield units); a LabelMap holds integer structure ids with
its LabelTable. Both keep origin, spacing and direction, so outputs overlay inputs in 3D Slicer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError, LabelError
from .fileio import atomic_path, write_json
from .labels import LabelTable

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_image(path: str | Path, series: str | int | None = None) -> sitk.Image:
    """Read a NIfTI/NRRD/MetaImage file or a DICOM series folder (``series``: index or UID when the
    folder holds several) as a SimpleITK image without header metadata."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if path.is_dir():
        return _read_dicom_dir(path, series)
    if _suffix(path) not in IMAGE_SUFFIXES and _suffix(path) != ".dcm":
        raise InputError(f"{path.name}: unsupported image format (expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)} or a DICOM folder)")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"{path.name}: cannot be read as an image (corrupt or wrong format)") from None
    if img.GetDimension() != 3:
        raise InputError(f"{path.name}: expected a 3D image, got {img.GetDimension()}D")
    return _without_metadata(img)


def _without_metadata(img: sitk.Image) -> sitk.Image:
    """Drop header metadata (DICOM tags may carry patient identifiers); geometry and pixels stay."""
    for key in img.GetMetaDataKeys():
        img.EraseMetaData(key)
    return img


def _read_dicom_dir(folder: Path, series=None) -> sitk.Image:
    from .dicomread import read_series

    return _without_metadata(read_series(folder, series)[0])


@dataclass
class Volume:
    """An intensity image in physical space. ``image`` is a SimpleITK image (LPS, mm)."""

    image: sitk.Image
    modality: str = "CT"

    @classmethod
    def load(cls, path: str | Path, modality: str = "CT", *, series: str | int | None = None) -> "Volume":
        img = read_image(path, series)
        return cls(sitk.Cast(img, sitk.sitkFloat32), modality)

    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp:
            sitk.WriteImage(self.image, str(tmp), useCompression=True)
        return Path(path)

    def array(self) -> np.ndarray:
        """Voxel values as a (z, y, x) numpy array."""
        return sitk.GetArrayFromImage(self.image)

    def normalized(self) -> "Volume":
        """MR (or any non-HU image) rescaled so the 1st-99th percentile of the foreground (above a tenth
        of the range: the body) spans 0-1000, so intensity methods built for HU-like ranges apply.
        CT is returned unchanged."""
        if self.modality.upper() == "CT":
            return self
        arr = sitk.GetArrayFromImage(self.image).astype(np.float32)
        fg = arr > arr.min() + 0.1 * (np.percentile(arr, 99) - arr.min())  # the body, not the air around it
        lo, hi = np.percentile(arr[fg] if fg.any() else arr, [1, 99])
        out = sitk.GetImageFromArray(((arr - lo) / max(hi - lo, 1e-6) * 1000.0).astype(np.float32))
        out.CopyInformation(self.image)
        return Volume(out, self.modality)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(self.image.GetSpacing())

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.GetSize())


@dataclass
class LabelMap:
    """An integer label image on a physical grid plus its label table."""

    image: sitk.Image
    table: LabelTable

    def __post_init__(self):
        if self.image.GetPixelID() != sitk.sitkUInt16:
            self.image = sitk.Cast(self.image, sitk.sitkUInt16)

    @classmethod
    def from_array(cls, array_zyx: np.ndarray, reference: sitk.Image, table: LabelTable) -> "LabelMap":
        img = sitk.GetImageFromArray(array_zyx.astype(np.uint16))
        img.CopyInformation(reference)
        return cls(img, table)

    @classmethod
    def load(cls, path: str | Path, table: str | Path | LabelTable | None = None) -> "LabelMap":
        """Load a multilabel image; the table comes from ``table``, a sidecar ``labels.json``, or the default."""
        path = Path(path)
        if path.name.lower().endswith(".seg.nrrd"):
            return cls._load_slicer_segmentation(path, table if isinstance(table, LabelTable) else None)
        if path.is_dir() and any(path.glob("*.nii*")):
            return cls._load_structure_folder(path, table if isinstance(table, LabelTable) else None)
        img = read_image(path)
        if isinstance(table, LabelTable):
            tab = table
        elif table is not None:
            tab = LabelTable.load(table)
        else:
            sidecar = path.parent / "labels.json"
            tab = LabelTable.load(sidecar) if sidecar.is_file() else LabelTable.default()
        arr = sitk.GetArrayViewFromImage(img)
        if not np.allclose(arr, np.round(arr)) or arr.min() < 0:
            raise InputError(f"{path.name}: not a label map (values must be non-negative integers)")
        lm = cls(img, tab)
        if not lm.present_ids():
            raise LabelError(f"{path.name}: label map is empty (no non-zero voxels)")
        return lm

    @classmethod
    def _load_structure_folder(cls, path: Path, table: LabelTable | None) -> "LabelMap":
        """TotalSegmentator's default output: one binary ``<structure>.nii.gz`` per structure, on one grid.
        Names must be in the label table (TotalSegmentator's are); empty masks are skipped."""
        table = table or LabelTable.default()
        files = sorted(path.glob("*.nii*"))
        unknown = [f.name for f in files if f.name.split(".")[0] not in table]
        if unknown:
            raise LabelError(f"{path.name}: structure file(s) not in the label table: {', '.join(unknown[:3])}")
        ref, out = None, None
        for f in files:
            img = read_image(f)
            if ref is None:
                ref, out = img, np.zeros(sitk.GetArrayViewFromImage(img).shape, np.uint16)
            elif img.GetSize() != ref.GetSize() or not np.allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-3):
                raise InputError(f"{f.name}: not on the grid of {files[0].name} (one folder, one grid)")
            out[sitk.GetArrayViewFromImage(img) > 0] = table.id_of(f.name.split(".")[0])
        if not out.any():
            raise LabelError(f"{path.name}: every structure mask is empty")
        return cls.from_array(out, ref, table)

    @classmethod
    def _load_slicer_segmentation(cls, path: Path, table: LabelTable | None) -> "LabelMap":
        """A 3D Slicer ``.seg.nrrd``: segments (name, label value, layer) become label ids by name."""
        from .labels import Label

        if not path.is_file():
            raise InputError(f"no such file or folder: {path}")
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError:
            raise InputError(f"{path.name}: cannot be read as a Slicer segmentation") from None
        keys = set(img.GetMetaDataKeys())
        count = 0
        while f"Segment{count}_Name" in keys:
            count += 1
        if count == 0:
            raise InputError(f"{path.name}: no Segment<N>_Name entries (not a Slicer segmentation)")
        table = LabelTable(dict((table or LabelTable.default()).labels))
        layers = img.GetNumberOfComponentsPerPixel()
        data = sitk.GetArrayFromImage(img)  # (z, y, x) or (z, y, x, layers)
        if layers == 1:
            data = data[..., None]
        out = np.zeros(data.shape[:3], np.uint16)
        for i in range(count):
            name = img.GetMetaData(f"Segment{i}_Name").strip()
            value = int(img.GetMetaData(f"Segment{i}_LabelValue")) if f"Segment{i}_LabelValue" in keys else i + 1
            layer = int(img.GetMetaData(f"Segment{i}_Layer")) if f"Segment{i}_Layer" in keys else 0
            if name not in table:
                new_id = max([999, *table.labels]) + 1
                table.labels[new_id] = Label(new_id, name)
            out[data[..., layer] == value] = table.id_of(name)
        ref = sitk.Image(img.GetSize(), sitk.sitkUInt8)
        ref.SetOrigin(img.GetOrigin())
        ref.SetSpacing(img.GetSpacing())
        ref.SetDirection(img.GetDirection())
        lm = cls.from_array(out, ref, table)
        if not lm.present_ids():
            raise LabelError(f"{path.name}: label map is empty (no non-zero voxels)")
        return lm

    def save(self, path: str | Path, *, table_path: str | Path | None = None) -> Path:
        """Write the label image (NIfTI/NRRD by extension) and ``labels.json`` beside it."""
        path = Path(path)
        with atomic_path(path) as tmp:
            sitk.WriteImage(self.image, str(tmp), useCompression=True)
        present = self.present_ids()
        write_json(table_path or path.parent / "labels.json", self.table.subset(present).to_json_dict())
        return path

    def array(self) -> np.ndarray:
        return sitk.GetArrayFromImage(self.image)

    def present_ids(self) -> list[int]:
        return [int(i) for i in np.unique(sitk.GetArrayViewFromImage(self.image)) if i != 0]

    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.image.GetSpacing()))

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each present structure in millilitres."""
        ids, counts = np.unique(sitk.GetArrayViewFromImage(self.image), return_counts=True)
        vv = self.voxel_volume_mm3() / 1000.0
        return {self.table.name_of(i): float(c * vv) for i, c in zip(ids, counts) if i != 0}

    def mask(self, names) -> np.ndarray:
        """Boolean (z, y, x) mask of the named structures; raises if none is present."""
        names = [names] if isinstance(names, str) else list(names)
        ids = []
        for n in names:
            try:
                ids.append(self.table.id_of(n))
            except LabelError:
                continue
        arr = sitk.GetArrayViewFromImage(self.image)
        m = np.isin(arr, ids)
        if not m.any():
            raise LabelError(f"structure '{names[0]}' is absent from the label map")
        return m
