"""Write a Volume as an anonymous CT DICOM series (one file per slice).

Pixels are stored as signed 16-bit integers with RescaleSlope 1 and RescaleIntercept 0, so the
stored value is the Hounsfield unit (rounded; values outside int16 are clipped). Geometry
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) comes from the SimpleITK image,
so ``surgtwin.volume.read_image(folder)`` returns the same origin, spacing and direction.
The series carries no patient identifiers: PatientName ``Phantom^Synthetic``, PatientID
``PHANTOM`` and fixed placeholder dates/times (``PLACEHOLDER_DATE``, ``PLACEHOLDER_TIME``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from .errors import InputError
from .fileio import staged_dir
from .volume import Volume

PATIENT_NAME = "Phantom^Synthetic"
PATIENT_ID = "PHANTOM"
PLACEHOLDER_DATE = "20000101"
PLACEHOLDER_TIME = "000000"


def _ds(values: float) -> list[str]:
    """Decimal String values (at most 16 characters each)."""
    out = []
    for v in np.atleast_1d(values):
        s = f"{float(v):.6f}".rstrip("0").rstrip(".")
        out.append(s if len(s) <= 16 else f"{float(v):.8g}")
    return [("0" if s in ("-0", "") else s) for s in out]


def _common(volume: Volume, series_description: str) -> Dataset:
    """Attributes shared by every slice of the series."""
    img = volume.image
    d = np.array(img.GetDirection(), float).reshape(3, 3)     # columns: image axes in LPS
    sx, sy, sz = (float(s) for s in img.GetSpacing())
    nx, ny, _ = img.GetSize()
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"                                       # CT Image Storage only
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = PLACEHOLDER_DATE
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = PLACEHOLDER_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = PLACEHOLDER_TIME
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.StudyID = "1"
    ds.StudyDescription = "surgtwin synthetic study"
    ds.SeriesNumber = 1
    ds.SeriesDescription = series_description
    ds.Manufacturer = "surgtwin"
    ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined = "ABDOMEN"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.KVP = ""
    ds.ImageOrientationPatient = _ds(np.concatenate([d[:, 0], d[:, 1]]))
    ds.PixelSpacing = _ds([sy, sx])                          # row spacing, column spacing
    ds.SliceThickness = _ds(sz)[0]
    ds.SpacingBetweenSlices = _ds(sz)[0]
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def write_dicom_series(volume: Volume, folder, *, series_description: str = "surgtwin phantom") -> list[Path]:
    """Write ``volume`` as a CT series into ``folder`` (replaced atomically); return the file paths."""
    img = volume.image
    if img.GetDimension() != 3:
        raise InputError(f"DICOM export needs a 3D image, got {img.GetDimension()}D")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("DICOM export needs a scalar image")
    arr = sitk.GetArrayViewFromImage(img)                    # (z, y, x)
    pix = np.clip(np.rint(np.asarray(arr, np.float64)), -32768, 32767).astype("<i2")
    common = _common(volume, series_description)
    d = np.array(img.GetDirection(), float).reshape(3, 3)
    folder = Path(folder)
    names = [f"slice_{k:04d}.dcm" for k in range(pix.shape[0])]
    with staged_dir(folder) as stage:
        for k, name in enumerate(names):
            ds = Dataset()
            ds.update(common)
            sop = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            ds.SOPInstanceUID = sop
            ds.InstanceNumber = k + 1
            pos = np.array(img.TransformIndexToPhysicalPoint((0, 0, k)), float)
            ds.ImagePositionPatient = _ds(pos)
            ds.SliceLocation = _ds(float(pos @ d[:, 2]))[0]
            ds.PixelData = pix[k].tobytes()
            ds["PixelData"].VR = "OW"
            ds.save_as(stage / name, enforce_file_format=True)
    return [folder / n for n in names]
