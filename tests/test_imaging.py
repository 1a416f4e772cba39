"""Image and label-map loading (surgtwin.volume, surgtwin.labels) on real scans and on bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from surgtwin.errors import InputError, LabelError
from surgtwin.labels import Label, LabelTable
from surgtwin.volume import LabelMap, Volume, read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CT3 = DATA / "ct_abdomen_3mm"
J2K = DATA / "ct_dicom_jpeg2000"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (expected beside the repository in shared/data)")
    return path


@pytest.fixture(scope="module")
def ct3():
    return Volume.load(_need(CT3 / "ct.nii.gz"))


@pytest.fixture(scope="module")
def seg3():
    return LabelMap.load(_need(CT3 / "reference_seg.nii.gz"))


def test_nifti_ct_geometry_and_hu(ct3, seg3):
    assert ct3.shape == (122, 101, 30)
    assert np.allclose(ct3.spacing, (3.0, 3.0, 3.0), atol=1e-4)
    assert ct3.image.GetPixelID() == sitk.sitkFloat32
    raw = read_image(CT3 / "ct.nii.gz")
    assert raw.GetPixelID() == sitk.sitkInt16                       # stored as int16 HU
    hu = ct3.array()
    assert hu.shape == (30, 101, 122)                                # numpy is (z, y, x)
    assert -1100 <= hu.min() < -950                                  # air
    assert 500 < hu.max() < 3072                                     # bone
    assert -1010 < np.median(hu[hu < -500]) < -960                   # air is about -1000 HU
    # the reference segmentation overlays the CT voxel for voxel (same grid)
    assert seg3.image.GetSize() == ct3.image.GetSize()
    assert np.allclose(seg3.image.GetOrigin(), ct3.image.GetOrigin(), atol=1e-3)
    assert np.allclose(seg3.image.GetDirection(), ct3.image.GetDirection(), atol=1e-6)
    lab = seg3.array()
    assert 30 < np.median(hu[lab == 5]) < 80                         # non-contrast liver parenchyma
    assert 100 < np.median(hu[np.isin(lab, [30, 31, 32, 33])]) < 600  # vertebrae are bone


def test_reference_seg_liver_volume(seg3):
    img = nib.load(str(CT3 / "reference_seg.nii.gz"))
    data = np.asanyarray(img.dataobj)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    expected = {name: int((data == i).sum()) * voxel_ml for i, name in
                [(5, "liver"), (1, "spleen"), (52, "aorta"), (64, "portal_vein_and_splenic_vein")]}
    vols = seg3.volumes_ml()
    for name, ml in expected.items():
        assert vols[name] == pytest.approx(ml, rel=1e-9), name
    assert vols["liver"] == pytest.approx(1043.118, abs=1e-3)        # 38634 voxels of 27 mm^3
    assert seg3.table.id_of("liver") == 5 and seg3.table.name_of(63) == "inferior_vena_cava"
    assert seg3.voxel_volume_mm3() == pytest.approx(27.0, rel=1e-5)
    assert seg3.mask("liver").sum() == (data == 5).sum()
    with pytest.raises(LabelError, match="liver_tumor"):
        seg3.mask("liver_tumor")                                      # absent: named in the error


def test_jpeg2000_dicom_series():
    folder = _need(J2K / "dicom")
    vol = Volume.load(folder)
    assert vol.shape == (512, 512, 20)
    assert np.allclose(vol.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)
    hu = vol.array()
    assert -1100 <= hu.min() <= -1000 and 1000 < hu.max() < 3072
    assert -1010 < np.median(hu[hu < -500]) < -960                   # decoded HU, not raw stored values
    # The reference label map is stored on a y-flipped grid: only a physical-space overlay puts
    # the labels on the right tissue.
    ref = LabelMap.load(_need(J2K / "reference_seg.nii.gz"))
    assert ref.image.GetSize() == vol.image.GetSize()
    assert not np.allclose(ref.image.GetDirection(), vol.image.GetDirection())
    on_ct = sitk.Resample(ref.image, vol.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    lab = sitk.GetArrayFromImage(on_ct)
    liver = np.median(hu[lab == 5])
    vertebrae = np.median(hu[np.isin(lab, [32, 33])])
    humerus = np.median(hu[np.isin(lab, [69, 70])])
    assert 60 < liver < 130                                           # contrast-enhanced liver
    assert 150 < vertebrae < 600 and humerus > 400                    # bone
    assert (lab == 5).sum() == (ref.array() == 5).sum()               # same grid size: a pure reorientation
    naive = ref.array()                                               # index-space overlay is wrong
    assert np.median(hu[np.isin(naive, [69, 70])]) < -500


def test_labels_json_sidecar_round_trip(tmp_path):
    ref = sitk.Image((12, 10, 8), sitk.sitkUInt8)
    ref.SetSpacing((1.5, 2.0, 2.5))
    ref.SetOrigin((10.0, -20.0, 5.0))
    arr = np.zeros((8, 10, 12), np.uint16)
    arr[2:6, 3:7, 4:9] = 300                                           # 4*4*5 = 80 voxels
    arr[1, 1, 1] = 5
    table = LabelTable({300: Label(300, "my_lesion", "lesion", (1, 2, 3)), 5: Label(5, "liver"),
                        7: Label(7, "not_present")})
    lm = LabelMap.from_array(arr, ref, table)
    path = lm.save(tmp_path / "case" / "labels.nii.gz")
    sidecar = json.loads((tmp_path / "case" / "labels.json").read_text())
    assert [(l["id"], l["name"]) for l in sidecar["labels"]] == [(5, "liver"), (300, "my_lesion")]
    back = LabelMap.load(path)                                        # picks labels.json up
    assert back.table.name_of(300) == "my_lesion" and back.table.labels[300].category == "lesion"
    assert back.table.labels[300].color == (1, 2, 3)
    assert back.present_ids() == [5, 300]
    assert np.array_equal(back.array(), arr)
    assert np.allclose(back.image.GetSpacing(), (1.5, 2.0, 2.5))
    assert np.allclose(back.image.GetOrigin(), (10.0, -20.0, 5.0))
    assert back.volumes_ml()["my_lesion"] == pytest.approx(80 * 7.5 / 1000.0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.json", "labels.nii.gz"]  # no temp files
    # without a sidecar the default (TotalSegmentator) table applies: 300 has no name there
    (tmp_path / "case" / "labels.json").unlink()
    plain = LabelMap.load(path)
    assert plain.table.name_of(5) == "liver" and plain.table.name_of(300) == "label_300"
    # an explicit TotalSegmentator-style {"id": "name"} table
    ts = tmp_path / "ts.json"
    ts.write_text(json.dumps({"5": "leber", "300": "herd"}))
    assert LabelMap.load(path, table=ts).volumes_ml() == pytest.approx({"leber": 0.0075, "herd": 0.6})
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError):
        LabelMap.load(path, table=bad)
    with pytest.raises(InputError):
        LabelMap.load(path, table=tmp_path / "missing.json")


def _write(arr, path, pixel=None):
    img = sitk.GetImageFromArray(arr)
    if pixel is not None:
        img = sitk.Cast(img, pixel)
    img.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(img, str(path))
    return path


def test_empty_label_map_raises_label_error(tmp_path):
    path = _write(np.zeros((4, 5, 6), np.uint8), tmp_path / "empty.nii.gz")
    with pytest.raises(LabelError, match="empty"):
        LabelMap.load(path)


def test_float_non_integer_label_map_raises_input_error(tmp_path):
    arr = np.zeros((4, 5, 6), np.float32)
    arr[1:3, 1:3, 1:3] = 0.5
    with pytest.raises(InputError, match="not a label map"):
        LabelMap.load(_write(arr, tmp_path / "prob.nii.gz"))
    arr[1:3, 1:3, 1:3] = -5.0                                         # negative integers are not labels
    with pytest.raises(InputError, match="not a label map"):
        LabelMap.load(_write(arr, tmp_path / "neg.nii.gz"))
    arr[1:3, 1:3, 1:3] = 5.0                                          # integer-valued floats are fine
    lm = LabelMap.load(_write(arr, tmp_path / "ok.nii.gz"))
    assert lm.present_ids() == [5] and lm.image.GetPixelID() == sitk.sitkUInt16
    assert lm.volumes_ml() == {"liver": pytest.approx(8 * 8.0 / 1000.0)}


def test_missing_and_wrong_format_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        LabelMap.load(tmp_path / "nothere.nii.gz")
    with pytest.raises(InputError, match="no such file"):
        Volume.load(tmp_path / "nothere")
    fake = tmp_path / "x.nii.gz"
    fake.write_text("this is not an image\n")
    with pytest.raises(InputError, match="cannot be read"):
        LabelMap.load(fake)
    with pytest.raises(InputError, match="cannot be read"):
        Volume.load(fake)
    txt = tmp_path / "labels.txt"
    txt.write_text("1 2 3\n")
    with pytest.raises(InputError, match="unsupported image format"):
        LabelMap.load(txt)
    empty_dir = tmp_path / "no_dicom"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("no slices here")
    with pytest.raises(InputError, match="no DICOM series"):
        Volume.load(empty_dir)
    flat = _write(np.zeros((5, 6), np.uint8), tmp_path / "flat.nii.gz")  # 2D
    with pytest.raises(InputError, match="3D"):
        read_image(flat)
