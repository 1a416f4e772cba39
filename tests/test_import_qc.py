"""Importing label maps users already have (Slicer .seg.nrrd, NIfTI/NRRD/MHA) exactly, and the QC picture."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from surgtwin.config import PhantomConfig
from surgtwin.phantom import make_phantom
from surgtwin.qc import qc_overlay
from surgtwin.volume import LabelMap


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig(spacing_mm=5.0))


def _seg_nrrd(path, arrays_by_layer, segments, reference):
    """Write a Slicer-style segmentation: segments = [(name, layer, value)]."""
    data = np.stack(arrays_by_layer, axis=-1).astype(np.uint8)
    img = sitk.GetImageFromArray(data if data.shape[-1] > 1 else data[..., 0], isVector=data.shape[-1] > 1)
    img.CopyInformation(reference)
    for i, (name, layer, value) in enumerate(segments):
        img.SetMetaData(f"Segment{i}_Name", name)
        img.SetMetaData(f"Segment{i}_Layer", str(layer))
        img.SetMetaData(f"Segment{i}_LabelValue", str(value))
    sitk.WriteImage(img, str(path), useCompression=True)


def test_slicer_segmentation_imports_exactly(phantom, tmp_path):
    volume, labels = phantom
    t = labels.array()
    liver, tumour = t == labels.table.id_of("liver"), t == labels.table.id_of("liver_tumor")
    spleen = t == labels.table.id_of("spleen")
    layer0 = np.where(liver, 1, np.where(tumour, 2, 0))
    layer1 = np.where(spleen, 7, 0)
    path = tmp_path / "case.seg.nrrd"
    _seg_nrrd(path, [layer0, layer1], [("liver", 0, 1), ("liver_tumor", 0, 2), ("My Spleen", 1, 7)], labels.image)
    lm = LabelMap.load(path)
    a = lm.array()
    assert np.array_equal(a == 5, liver) and np.array_equal(a == 203, tumour)   # Dice 1.0 by name
    new_id = lm.table.id_of("My Spleen")
    assert new_id >= 1000 and np.array_equal(a == new_id, spleen)
    assert np.allclose(lm.image.GetOrigin(), labels.image.GetOrigin())
    single = tmp_path / "one.seg.nrrd"
    _seg_nrrd(single, [layer0], [("liver", 0, 1)], labels.image)
    assert LabelMap.load(single).present_ids() == [5]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_label_map_round_trip_is_exact(phantom, tmp_path, suffix):
    _, labels = phantom
    path = labels.save(tmp_path / f"labels{suffix}")
    again = LabelMap.load(path)
    assert np.array_equal(again.array(), labels.array())
    assert again.volumes_ml() == pytest.approx(labels.volumes_ml())


def test_qc_picture_shows_label_outlines(phantom, tmp_path):
    volume, labels = phantom
    path = qc_overlay(volume, labels, tmp_path / "qc.png")
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[..., :3]
    assert rgb.ndim == 3 and rgb.shape[0] >= 360
    legend = rgb[:, -200:]                                   # legend column: swatches and names on white
    assert (legend == 255).all(axis=2).mean() > 0.7 and (legend.sum(axis=2) < 300).sum() > 100
    liver_colour = np.array(labels.table.labels[labels.table.id_of("liver")].color)
    assert (np.abs(rgb.astype(int) - liver_colour).sum(axis=2) == 0).sum() > 500   # liver outline drawn
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert grey.mean() > 0.6                                                          # mostly the CT itself
