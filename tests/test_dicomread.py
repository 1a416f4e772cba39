"""DICOM series reading: ordering, series choice, missing slices, uneven spacing, gantry tilt."""
from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from surgtwin.config import PhantomConfig
from surgtwin.dicom import write_dicom_series
from surgtwin.dicomread import list_series, read_series
from surgtwin.errors import InputError
from surgtwin.phantom import make_phantom


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcm")
    volume, _ = make_phantom(PhantomConfig(spacing_mm=6.0))
    files = write_dicom_series(volume, root / "ref")
    return root, volume, files


def _copy(files, dest, *, rename=True, edit=None, skip=()):
    dest.mkdir()
    rng = np.random.default_rng(1)
    names = rng.permutation(len(files))
    for k, f in enumerate(files):
        if k in skip:
            continue
        ds = pydicom.dcmread(f)
        if edit:
            edit(k, ds)
        ds.save_as(dest / (f"x{names[k]:04d}.dcm" if rename else f.name))
    return dest


def _array(img):
    return sitk.GetArrayFromImage(img)


def test_order_comes_from_positions_not_names(series, tmp_path):
    root, volume, files = series
    img, notes = read_series(_copy(files, tmp_path / "shuffled"))
    assert notes == []
    assert np.allclose(_array(img), _array(volume.image), atol=0.5)
    assert np.allclose(img.GetOrigin(), volume.image.GetOrigin()) and np.allclose(img.GetSpacing(), 6.0)


def test_several_series_must_be_chosen(series, tmp_path):
    root, volume, files = series
    both = tmp_path / "both"
    shutil.copytree(root / "ref", both)
    other = make_phantom(PhantomConfig(spacing_mm=8.0))[0]
    for f in write_dicom_series(other, tmp_path / "other"):
        shutil.copy(f, both / f"other_{f.name}")
    assert [len(s.files) for s in list_series(both)] == [len(files), other.image.GetSize()[2]]
    with pytest.raises(InputError, match="2 series found"):
        read_series(both)
    img, _ = read_series(both, series=1)
    assert img.GetSize() == other.image.GetSize()
    uid = list_series(both)[0].uid
    assert read_series(both, series=uid)[0].GetSize() == volume.image.GetSize()
    with pytest.raises(InputError, match="no series"):
        read_series(both, series="999")


def test_missing_slice_is_reported_and_interpolated(series, tmp_path):
    root, volume, files = series
    k = len(files) // 2
    img, notes = read_series(_copy(files, tmp_path / "gap", skip={k}))
    assert any("1 missing slice" in n for n in notes)
    assert img.GetSize() == volume.image.GetSize() and img.GetSpacing()[2] == pytest.approx(6.0)
    ref = _array(volume.image)
    assert np.allclose(_array(img)[k], 0.5 * (ref[k - 1] + ref[k + 1]), atol=0.5)
    assert np.allclose(_array(img)[k + 1], ref[k + 1], atol=0.5)


def test_uneven_spacing_is_resampled(series, tmp_path):
    root, volume, files = series

    def edit(k, ds):
        z = float(ds.ImagePositionPatient[2]) + (1.5 if k % 2 else 0.0)  # 7.5 / 4.5 mm alternating gaps
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z:.3f}"]

    img, notes = read_series(_copy(files, tmp_path / "uneven", edit=edit))
    assert any("non-uniform slice spacing" in n for n in notes)
    assert img.GetSpacing()[2] == pytest.approx(6.0, abs=1.6)


def test_gantry_tilt_is_corrected(series, tmp_path):
    root, volume, files = series
    tilt = np.radians(12.0)

    def edit(k, ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.3f}", f"{y + np.tan(tilt) * 6.0 * k:.3f}", f"{z:.3f}"]

    img, notes = read_series(_copy(files, tmp_path / "tilt", edit=edit))
    assert any("gantry tilt 12.0 deg" in n for n in notes)
    # slice k now holds its content shifted by tan(12 deg) * 6k mm along y (posterior)
    ref, out = _array(volume.image), _array(img)
    k = len(files) - 4
    com = lambda a: (np.argwhere(a > 300)[:, 0] * 6.0).mean()  # noqa: E731  (bone, y index -> mm)
    assert com(out[k]) - com(ref[k]) == pytest.approx(np.tan(tilt) * 6.0 * k, abs=3.0)


def test_duplicate_positions_and_empty_folder(series, tmp_path):
    root, volume, files = series

    def edit(k, ds):
        if k == 3:
            ds.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient

    with pytest.raises(InputError, match="share a position"):
        read_series(_copy(files, tmp_path / "dup", edit=edit))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_series(tmp_path / "empty")
