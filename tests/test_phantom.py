"""Procedural phantom (surgtwin.phantom) and DICOM export (surgtwin.dicom)."""
from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from surgtwin.config import PhantomConfig
from surgtwin.dicom import PATIENT_ID, PATIENT_NAME, PLACEHOLDER_DATE, PLACEHOLDER_TIME, write_dicom_series
from surgtwin.errors import InputError, ConfigError
from surgtwin.phantom import (depth_in, ellipsoid_level, grid_geometry, make_phantom, phantom_truth,
                              segment_distance)
from surgtwin.volume import read_image

ANATOMY = [
    "body", "subcutaneous_fat", "skeletal_muscle", "autochthon_left", "autochthon_right",
    "vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3",
    "rib_left_12", "rib_right_12", "rib_left_11", "rib_right_11", "rib_left_10", "rib_right_10",
    "liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein",
    "inferior_vena_cava", "aorta", "kidney_left", "kidney_right", "spleen", "gallbladder",
]


@pytest.fixture(scope="module")
def fine():
    """2 mm phantom for volume accuracy."""
    cfg = PhantomConfig(spacing_mm=2.0)
    vol, lm = make_phantom(cfg)
    return cfg, vol, lm, phantom_truth(cfg)


@pytest.fixture(scope="module")
def coarse():
    cfg = PhantomConfig(spacing_mm=4.0)
    vol, lm = make_phantom(cfg)
    return cfg, vol, lm, phantom_truth(cfg)


def _points(lm):
    """Physical LPS coordinates (z, y, x, 3) of every voxel centre, from the image geometry."""
    img = lm.image
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in img.GetSize()[::-1]], indexing="ij"), -1)[..., ::-1]
    d = np.array(img.GetDirection()).reshape(3, 3)
    return np.asarray(img.GetOrigin()) + (idx * np.asarray(img.GetSpacing())) @ d.T


def _centroid(lm, names):
    return _points(lm)[lm.mask(names)].mean(0)


def test_grid_default_and_resolutions():
    size, origin, sp = grid_geometry(PhantomConfig())
    assert size == [144, 112, 80] and sp == 2.5
    assert np.allclose(origin, [-178.75, -138.75, -98.75])
    t0 = time.perf_counter()
    vol, lm = make_phantom(PhantomConfig())
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0
    assert vol.shape == (144, 112, 80) and lm.image.GetSize() == (144, 112, 80)
    assert vol.image.GetPixelID() == sitk.sitkFloat32 and lm.image.GetPixelID() == sitk.sitkUInt16
    assert np.allclose(vol.image.GetOrigin(), origin) and np.allclose(vol.image.GetDirection(), np.eye(3).ravel())
    assert np.allclose(lm.image.GetOrigin(), origin) and lm.image.GetSpacing() == (2.5, 2.5, 2.5)
    for sp, shape in [(4.0, (90, 70, 50)), (1.5, (240, 187, 134))]:
        v, l = make_phantom(PhantomConfig(spacing_mm=sp, noise_hu=0.0))
        assert v.shape == shape and v.spacing == (sp, sp, sp)
        assert set(ANATOMY) <= {l.table.name_of(i) for i in l.present_ids()}


def test_invalid_config():
    with pytest.raises(ConfigError):
        make_phantom(PhantomConfig(tumor_radius_mm=50.0))          # cannot sit 20 mm inside the liver
    with pytest.raises(ConfigError):
        make_phantom(PhantomConfig(spacing_mm=0.0))


def test_tumor_volume_and_position(fine):
    cfg, _, lm, truth = fine
    r = cfg.tumor_radius_mm
    analytic = 4.0 / 3.0 * np.pi * r ** 3 / 1000.0
    measured = lm.volumes_ml()["liver_tumor"]
    assert measured == pytest.approx(analytic, rel=0.05)          # 14.14 ml
    c = truth["tumor"]["center"]
    assert np.linalg.norm(_centroid(lm, "liver_tumor") - c) < 0.5
    assert depth_in(truth["liver"], c) >= r + 20.0                 # deep in the liver
    assert c[0] < truth["liver"]["center"][0]                      # right (lateral) lobe
    assert c[1] < truth["liver"]["center"][1] and c[2] < truth["liver"]["center"][2]  # anterior-inferior


def test_kidney_volume(fine):
    _, _, lm, truth = fine
    assert lm.volumes_ml()["kidney_left"] == pytest.approx(truth["kidney_left"]["volume_ml"], rel=0.05)


def test_liver_union_matches_ellipsoid(fine):
    _, _, lm, truth = fine
    liver = truth["liver"]
    assert 1500 < liver["volume_ml"] < 1700
    inside = ellipsoid_level(liver, _points(lm)) <= 1.0
    lab = lm.array()
    hepatic = lm.mask(["liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein"])
    order = truth["draw_order"]
    later = [n for n in order[order.index("liver") + 1:]]
    carved = inside & lm.mask(later) & ~hepatic                    # gallbladder, IVC, right kidney
    union = ((hepatic & inside) | carved).sum() * lm.voxel_volume_mm3() / 1000.0
    assert union == pytest.approx(liver["volume_ml"], rel=0.05)
    assert carved.sum() < 0.06 * inside.sum()                      # only small impressions
    assert not (lab[~inside] == lm.table.id_of("liver")).any()     # no liver outside its ellipsoid
    assert lm.volumes_ml()["liver"] > 1300


def test_vessels_near_tumor():
    for seed in range(5):
        truth = phantom_truth(PhantomConfig(seed=seed))
        c, r = truth["tumor"]["center"], truth["tumor"]["radius"]
        twig = truth["near_vessel"]
        d = segment_distance(twig, c)
        assert 15.0 <= d <= 22.0 and d - max(twig["r0"], twig["r1"]) > r
        for name in ("portal_vein_and_splenic_vein", "hepatic_vein", "inferior_vena_cava", "aorta"):
            for seg in truth["vessels"][name]:
                if seg is twig:
                    continue
                assert segment_distance(seg, c) - max(seg["r0"], seg["r1"]) >= r + 5.0
    _, lm = make_phantom(PhantomConfig(spacing_mm=2.0, noise_hu=0.0))
    truth = phantom_truth(PhantomConfig(spacing_mm=2.0))
    c, r = truth["tumor"]["center"], truth["tumor"]["radius"]
    dist = np.linalg.norm(_points(lm) - c, axis=-1)
    vessels = lm.mask(["hepatic_vein", "portal_vein_and_splenic_vein"])
    assert (vessels & (dist <= r + 10.0)).any()                    # a 10 mm margin crosses a vessel
    assert not (vessels & (dist <= r + 1.0)).any()                 # but none touches the tumour
    for seg in truth["vessels"]["hepatic_vein"]:                   # hepatic veins stay in the liver
        for t in np.linspace(0.2, 1.0, 5):
            assert depth_in(truth["liver"], seg["p0"] + t * (seg["p1"] - seg["p0"])) > max(seg["r0"], seg["r1"])


def test_hounsfield_units(coarse):
    cfg, vol, lm, _ = coarse
    hu = vol.array()
    ball = ndimage.generate_binary_structure(3, 1)

    def core(names, it=2):
        return ndimage.binary_erosion(lm.mask(names), ball, iterations=it)

    liver = hu[core("liver")]
    assert 100 < liver.mean() < 110
    assert liver.std() == pytest.approx(cfg.noise_hu, rel=0.1)     # uniform region: noise only
    assert -110 < hu[core("subcutaneous_fat", 1)].mean() < -90
    vert = [f"vertebrae_{v}" for v in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    assert 230 < hu[core(vert, 1)].mean() < 290                     # cancellous
    assert 250 < hu[lm.mask(vert)].mean() < 700                    # with the cortical shell
    assert 550 < hu[lm.mask(vert) & ~core(vert, 1)].max()           # cortex
    air = ndimage.binary_erosion(lm.array() == 0, ball, iterations=2)
    assert -1003 < hu[air].mean() < -997
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert 20 < hu[core("body")].mean() < 40
    for name, lo, hi in [("aorta", 150, 190), ("kidney_left", 140, 180), ("spleen", 100, 130)]:
        assert lo < hu[core(name, 1)].mean() < hi, name
    tumor = hu[core("liver_tumor", 2)].mean()
    assert 35 < tumor < 55 and tumor < liver.mean() - 40          # hypodense lesion

    nc = make_phantom(PhantomConfig(spacing_mm=4.0, contrast=False))[0].array()
    assert 55 < nc[core("liver")].mean() < 65
    assert 35 < nc[core("aorta", 1)].mean() < 45


def test_determinism_and_seed(coarse):
    cfg, vol, lm, _ = coarse
    vol2, lm2 = make_phantom(PhantomConfig(spacing_mm=4.0))
    assert np.array_equal(vol.array(), vol2.array()) and np.array_equal(lm.array(), lm2.array())
    vol3, lm3 = make_phantom(PhantomConfig(spacing_mm=4.0, seed=1))
    diff = vol3.array() - vol.array()
    body = ndimage.binary_erosion(lm.mask("body"), iterations=2) & (lm3.array() == lm.array())
    assert diff[body].std() == pytest.approx(np.sqrt(2) * cfg.noise_hu, rel=0.1)
    shift = phantom_truth(PhantomConfig(seed=1))["tumor"]["center"] - phantom_truth(cfg)["tumor"]["center"]
    assert 0 < np.abs(shift).max() <= 6.0                           # jitter: +-3 mm per axis


def test_all_structures_present_and_ordered(coarse):
    _, _, lm, truth = coarse
    present = {lm.table.name_of(i) for i in lm.present_ids()}
    assert set(ANATOMY) <= present
    assert set(truth["draw_order"]) == present
    zs = [_centroid(lm, f"vertebrae_{v}")[2] for v in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    assert all(a > b for a, b in zip(zs, zs[1:]))                  # top to bottom
    assert np.allclose(np.diff(zs[1:-1]), -30.0, atol=3.0)      # 30 mm per level
    for side, sign in (("left", 1), ("right", -1)):
        assert sign * _centroid(lm, f"rib_{side}_10")[0] > 100
        assert _centroid(lm, f"rib_{side}_12")[2] < _centroid(lm, f"rib_{side}_11")[2]


def test_lps_geometry(coarse):
    _, _, lm, truth = coarse
    liver, spleen = _centroid(lm, "liver"), _centroid(lm, "spleen")
    assert liver[0] < -20 and spleen[0] > 50                       # patient right = -x
    spine = _centroid(lm, ["vertebrae_L1", "vertebrae_L2"])
    assert spine[1] > _centroid(lm, "aorta")[1] > _centroid(lm, "liver")[1]   # posterior = +y
    assert _centroid(lm, "kidney_left")[0] > 0 > _centroid(lm, "kidney_right")[0]
    assert _centroid(lm, "inferior_vena_cava")[0] < _centroid(lm, "aorta")[0]
    assert np.linalg.norm(_centroid(lm, "kidney_left") - truth["kidney_left"]["center"]) < 1.0


def test_dicom_round_trip(coarse, tmp_path):
    _, vol, _, _ = coarse
    folder = tmp_path / "ct"
    folder.mkdir()
    (folder / "mine.txt").write_text("a user's file")
    with pytest.raises(InputError, match="did not write"):        # a user's folder is never replaced
        write_dicom_series(vol, folder)
    assert (folder / "mine.txt").read_text() == "a user's file"
    (folder / "mine.txt").unlink()                                  # an empty folder is fine
    files = write_dicom_series(vol, folder, series_description="test series")
    assert len(files) == vol.shape[2] and all(f.is_file() for f in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]     # no staging leftovers
    img = read_image(folder)
    assert np.allclose(img.GetSpacing(), vol.image.GetSpacing(), atol=1e-4)
    assert np.allclose(img.GetOrigin(), vol.image.GetOrigin(), atol=1e-4)
    assert np.allclose(img.GetDirection(), vol.image.GetDirection(), atol=1e-6)
    assert np.abs(sitk.GetArrayFromImage(img).astype(np.float64) - vol.array()).max() <= 0.5 + 1e-3

    uids = set()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        assert ds.InstanceNumber == k + 1 and ds.PixelRepresentation == 1
        assert ds.SeriesDescription == "test series"
        uids.add((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID))
        assert ds.PatientName == PATIENT_NAME and ds.PatientID == PATIENT_ID
        for elem in list(ds.file_meta.iterall()) + list(ds.iterall()):
            if elem.VR in ("DA", "DT", "TM"):
                assert str(elem.value) in ("", PLACEHOLDER_DATE, PLACEHOLDER_TIME), elem
            elif elem.VR == "PN":
                assert str(elem.value) in ("", PATIENT_NAME), elem
    assert len(uids) == 1
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in files}) == len(files)
