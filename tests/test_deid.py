"""De-identification: a DICOM series full of synthetic PHI leaves no trace in anything surgtwin writes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from surgtwin.cli import main
from surgtwin.config import PhantomConfig
from surgtwin.deid import ACTIONS, DeidKey, deidentify_folder
from surgtwin.dicom import write_dicom_series
from surgtwin.errors import InputError
from surgtwin.phantom import make_phantom
from surgtwin.volume import read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHI_DATE = "19710203"
ORIGINAL_UID = "1.2.826.0.1.3680043.2.1143.987654321"


def _phi_value(elem_vr: str, keyword: str):
    text = f"PHI{keyword}"[:16] if elem_vr in ("SH", "AE") else f"PHI{keyword}"[:64]
    return {"DA": PHI_DATE, "DT": PHI_DATE + "101010", "TM": "101010", "AS": "047Y", "DS": "81.5",
            "IS": "7", "US": 1, "CS": "PHICS", "UI": ORIGINAL_UID + ".7"}.get(elem_vr, text)


def _fill_with_phi(ds: Dataset):
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for kw in ACTIONS:
        if kw == "Manufacturer":
            continue
        tag = tag_for_keyword(kw)
        vr = dictionary_VR(tag)
        if tag >> 16 == 0x0002:  # file meta
            setattr(ds.file_meta, kw, "PHIAETITLE")
        elif vr == "SQ":
            item = Dataset()
            item.PersonName = f"PHI{kw}Person"
            item.CodeMeaning = f"PHI{kw}Code"
            setattr(ds, kw, Sequence([item]))
        elif vr in ("OB", "OW", "UN", "SL", "UL", "FD", "FL", "SS"):
            continue
        else:
            setattr(ds, kw, _phi_value(vr, kw))
    ds.PatientName = "PHIDoe^PHIJane"
    ds.PatientID = "PHIMRN12345"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = PHI_DATE
    ds.StudyInstanceUID = ORIGINAL_UID + ".1"
    ds.SeriesInstanceUID = ORIGINAL_UID + ".2"
    ds.FrameOfReferenceUID = ORIGINAL_UID + ".3"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ORIGINAL_UID}.4.{int(ds.InstanceNumber)}"
    ds.add_new(0x00091010, "LO", "PHIPrivateTag")             # private
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)             # overlay data
    ds.add_new(0x00321032, "PN", "PHIRequestingDoc")          # a person name not in the table
    ds.SeriesDescription = "PHISeriesDescription"


@pytest.fixture(scope="module")
def phi_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("phi")
    volume, labels = make_phantom(PhantomConfig(spacing_mm=6.0))
    labels.save(root / "labels.nii.gz")
    files = write_dicom_series(volume, root / "dicom")
    for f in files:
        ds = pydicom.dcmread(f)
        _fill_with_phi(ds)
        ds.save_as(f)
    (root / "dicom" / "notes.txt").write_text("not dicom")
    return root, volume


def _leaks(folder: Path) -> list[str]:
    # every inserted text value starts with one of these (16-character prefixes), plus the date and UID root
    needles = [f"PHI{kw}"[:16].encode() for kw in ACTIONS] + [
        b"PHIDoe", b"PHIJane", b"PHIMRN12345", b"PHIPrivateTag", b"PHIRequestingDoc", b"PHIAETITLE",
        PHI_DATE.encode(), ORIGINAL_UID.encode()]
    found = []
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p.relative_to(folder)}: {n.decode()}" for n in needles if n in data]
    return found


def test_fixture_really_contains_phi(phi_series):
    root, _ = phi_series
    assert len(_leaks(root / "dicom")) >= 3 * 6


def test_deid_cli_removes_every_identifier(phi_series, tmp_path):
    root, volume = phi_series
    out = tmp_path / "deid"
    assert main(["deid", str(root / "dicom"), str(out)]) == 0
    assert _leaks(out) == []
    audit = json.loads((out / "deid_audit.json").read_text())
    n = len(list((root / "dicom").glob("*.dcm")))
    assert audit["files_written"] == n and audit["files_skipped"] == 1
    assert audit["actions"]["PatientName D"] == n and audit["actions"]["StudyInstanceUID U"] == n
    ds = [pydicom.dcmread(p) for p in sorted(out.rglob("*.dcm"))]
    assert {d.PatientID for d in ds} == {ds[0].PatientID} and ds[0].PatientID.startswith("ST")
    assert len({d.StudyInstanceUID for d in ds}) == 1 and len({d.SOPInstanceUID for d in ds}) == n
    assert all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in ds)
    # dates shifted consistently (same offset in every file), at least a year back
    shifted = {d.StudyDate for d in ds}
    assert len(shifted) == 1 and shifted.pop() < "19700203"
    assert ds[0].PatientIdentityRemoved == "YES"
    # the copy is still the same image in the same physical space
    a, b = read_image(root / "dicom"), read_image(next(out.glob("series_*")))
    assert a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin())
    import SimpleITK as sitk
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_same_key_same_pseudonyms_other_key_different(phi_series, tmp_path):
    root, _ = phi_series
    key = DeidKey(secret=b"k" * 32)
    deidentify_folder(root / "dicom", tmp_path / "a", key=key)
    deidentify_folder(root / "dicom", tmp_path / "b", key=key)
    deidentify_folder(root / "dicom", tmp_path / "c", key=DeidKey(secret=b"x" * 32))
    uid = lambda d: pydicom.dcmread(next((tmp_path / d).rglob("*.dcm"))).StudyInstanceUID  # noqa: E731
    assert uid("a") == uid("b") != uid("c")


def test_keep_patient_characteristics_and_burned_in(phi_series, tmp_path):
    root, _ = phi_series
    deidentify_folder(root / "dicom", tmp_path / "k", key=DeidKey(keep_patient_characteristics=True))
    ds = pydicom.dcmread(next((tmp_path / "k").rglob("*.dcm")))
    assert ds.PatientAge == "047Y" and "PatientBirthDate" in ds and ds.PatientBirthDate == ""
    src = tmp_path / "burned"
    src.mkdir()
    d = pydicom.dcmread(next((root / "dicom").glob("*.dcm")))
    d.BurnedInAnnotation = "YES"
    d.save_as(src / "x.dcm")
    with pytest.raises(InputError, match="burned-in"):
        deidentify_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_commands_reading_phi_dicom_write_no_phi(phi_series, tmp_path):
    """segment and run read the PHI series directly: nothing they write may carry an identifier."""
    root, _ = phi_series
    assert main(["segment", str(root / "dicom"), "-o", str(tmp_path / "seg")]) == 0
    assert main(["run", "--image", str(root / "dicom"), "--labels", str(root / "labels.nii.gz"),
                 "-o", str(tmp_path / "run"), "mesh=coarse", "report.images=false"]) == 0
    assert _leaks(tmp_path / "seg") == []
    assert _leaks(tmp_path / "run") == []


def test_real_dicom_series_deidentifies(tmp_path):
    src = DATA / "ct_dicom_jpeg2000" / "dicom"
    if not src.is_dir():
        pytest.skip("shared real data not present")
    audit = deidentify_folder(src, tmp_path / "d")
    assert audit["files_written"] == 20
    assert audit["actions"]["InstitutionAddress X"] == 20 and audit["actions"]["StudyDate shift"] == 20
    blob = b"".join(p.read_bytes() for p in (tmp_path / "d").rglob("*.dcm"))
    for original in (b"Petersgraben", b"20221208", b"PETCT2", b"QR_SNOWFOX", b"1.3.12.2.1107.5.1.4.60064"):
        assert original not in blob
