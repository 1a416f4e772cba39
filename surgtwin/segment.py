"""Classical segmentation (no downloaded weights): automatic, thresholds, seeded growing, import.

``auto``: body, fat, bone, lungs, liver, spleen, kidneys, aorta and IVC (``surgtwin.autoseg``).
``threshold``: body outline, subcutaneous fat and bone from Hounsfield units.
``seeded``: one click per organ (physical or voxel coordinates) on top of the threshold result. On CT
the automatic organ of that name is taken when it contains the click, otherwise the organ is grown
from the click with an intensity model of its neighbourhood (``autoseg.seeded_organ``); on MR,
SimpleITK connected-threshold growing on the normalised image.
``import``: an existing segmentation (TotalSegmentator file or per-structure folder, Slicer .seg.nrrd,
any label image with a table) resampled onto the image in physical space.
``totalsegmentator``: an installed TotalSegmentator with its weights, offline.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage
import SimpleITK as sitk

from .config import SegmentConfig
from .errors import ConfigError, InputError
from .labels import LabelTable
from .volume import LabelMap, Volume

BODY_HU, BONE_HU, FAT_HU = -500.0, 200.0, (-190.0, -30.0)
METHODS = ("auto", "threshold", "seeded", "import", "totalsegmentator")


def segment(volume: Volume, cfg: SegmentConfig, table: LabelTable | None = None) -> LabelMap:
    """Label map on the volume's grid (ids from the surgtwin/TotalSegmentator table)."""
    table = table or LabelTable.default()
    if cfg.method == "totalsegmentator":
        return totalsegmentator_labels(volume, table)
    if cfg.method == "import":
        return import_labels(volume, cfg.source)
    if cfg.method not in METHODS:
        raise ConfigError(f"segmentation method '{cfg.method}' is not available ({', '.join(METHODS)})")
    seeds = _physical_seeds(volume, cfg)
    if cfg.method == "seeded" and not seeds:
        raise ConfigError("seeded segmentation needs seeds, e.g. --seeds liver=-60,0,40")
    if cfg.method == "auto":
        if volume.modality.upper() != "CT":
            raise InputError(f"automatic segmentation needs CT in HU, got {volume.modality} (use seeded)")
        from .autoseg import auto_label_array

        return LabelMap.from_array(auto_label_array(volume.image, table), volume.image, table)
    if volume.modality.upper() != "CT":
        if cfg.method != "seeded":
            raise InputError(f"threshold segmentation needs CT in HU, got {volume.modality} (use seeded)")
        return _seeded_only(volume.normalized(), cfg, table, seeds)
    out = threshold_tissues(volume, table)
    if cfg.method == "seeded":
        from .autoseg import auto_organ_at, seeded_organ

        body = out != 0
        for name, point in seeds.items():
            _check_seed(volume, point)
            mask = auto_organ_at(volume.image, name, point)
            if mask is None:     # not an organ the automatic method finds there: grow from the click
                mask = seeded_organ(volume.image, point)
            out[mask & body] = table.id_of(name)
    return LabelMap.from_array(out, volume.image, table)


def import_labels(volume: Volume, source) -> LabelMap:
    """An existing segmentation resampled onto ``volume`` in physical space (nearest neighbour)."""
    if not source:
        raise ConfigError("method 'import' needs the segmentation: --method import PATH (segment.source)")
    from .pipeline import resample_labels

    return resample_labels(LabelMap.load(source), volume)


def _physical_seeds(volume: Volume, cfg: SegmentConfig) -> dict:
    """Seeds as physical points [mm]; voxel seeds (seed_space=voxel, i j k) are converted."""
    if cfg.seed_space not in ("physical", "voxel"):
        raise ConfigError(f"segment.seed_space must be physical or voxel, got '{cfg.seed_space}'")
    out = {}
    for name, point in cfg.seeds.items():
        p = [float(v) for v in point]
        if len(p) != 3:
            raise ConfigError(f"seed '{name}' needs three coordinates, got {point}")
        if cfg.seed_space == "voxel":
            if not all(0 <= round(v) < n for v, n in zip(p, volume.image.GetSize())):
                raise ConfigError(f"voxel seed '{name}' {p} lies outside the {list(volume.image.GetSize())} image")
            p = list(volume.image.TransformContinuousIndexToPhysicalPoint(p))
        out[name] = p
    return out


def _seeded_only(volume: Volume, cfg: SegmentConfig, table: LabelTable, seeds: dict) -> LabelMap:
    """Seeded growing on an intensity-normalised (MR) image, with no HU-based body mask."""
    out = np.zeros(sitk.GetArrayViewFromImage(volume.image).shape, np.uint16)
    for name, point in seeds.items():
        out[grow_from_seed(volume, point, radius_mm=cfg.seed_radius_mm, multiplier=cfg.confidence_multiplier)] = \
            table.id_of(name)
    return LabelMap.from_array(out, volume.image, table)


def threshold_tissues(volume: Volume, table: LabelTable) -> np.ndarray:
    """(z, y, x) uint16 array: body (largest connected HU > -500 region, holes filled in 3D and per
    axial slice), subcutaneous fat (-190..-30 HU) and bone (>= 200 HU) inside it."""
    img = sitk.SmoothingRecursiveGaussian(volume.image, sigma=float(min(volume.image.GetSpacing())))
    body = sitk.BinaryThreshold(img, BODY_HU, 1e9, 1, 0)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(body), sortByObjectSize=True)
    body = cc == 1
    body = sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(body, [2, 2, 1]))
    # lungs and bowel gas open to the volume's top/bottom are holes of each axial slice
    b = np.stack([ndimage.binary_fill_holes(sl) for sl in sitk.GetArrayFromImage(body).astype(bool)])
    if not b.any():
        raise InputError("no body found in the image (is it CT in Hounsfield units?)")
    hu = sitk.GetArrayFromImage(sitk.Median(volume.image, [1, 1, 1]))  # denoised, edges kept
    out = np.zeros(hu.shape, np.uint16)
    out[b] = table.id_of("body")
    out[b & (hu >= FAT_HU[0]) & (hu <= FAT_HU[1])] = table.id_of("subcutaneous_fat")
    out[b & (hu >= BONE_HU)] = table.id_of("bone")
    return out


def _check_seed(volume: Volume, point_mm) -> tuple:
    """The seed's voxel index (x, y, z); ConfigError if it is not a point inside the image."""
    img = volume.image
    try:
        idx = img.TransformPhysicalPointToIndex([float(v) for v in point_mm])
    except Exception:
        raise ConfigError(f"seed {list(point_mm)} is not a physical [x, y, z] point") from None
    if not all(0 <= i < s for i, s in zip(idx, img.GetSize())):
        raise ConfigError(f"seed {list(point_mm)} mm lies outside the image")
    return idx


def grow_from_seed(volume: Volume, point_mm, *, radius_mm: float = 8.0, multiplier: float = 2.5) -> np.ndarray:
    """Boolean (z, y, x) region grown from a physical seed point [mm, LPS].

    The intensity window is the median +- ``multiplier`` robust standard deviations (1.4826 MAD) of
    the denoised image within ``radius_mm`` of the seed, so a vessel next to the seed does not widen
    it; thin leaks are cut by a morphological opening and holes (vessels, lesions) filled.
    """
    img = volume.image
    idx = _check_seed(volume, point_mm)
    smooth = sitk.Median(img, [1, 1, 1])
    arr = sitk.GetArrayViewFromImage(smooth)
    r = [max(1, int(round(radius_mm / sp))) for sp in img.GetSpacing()]
    lo = [max(0, i - k) for i, k in zip(idx, r)]
    hi = [min(n, i + k + 1) for i, k, n in zip(idx, r, img.GetSize())]
    patch = arr[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    med = float(np.median(patch))
    sigma = max(1.4826 * float(np.median(np.abs(patch - med))), 5.0)
    grown = sitk.ConnectedThreshold(smooth, seedList=[idx], lower=med - multiplier * sigma,
                                    upper=med + multiplier * sigma, replaceValue=1)
    grown = sitk.BinaryMorphologicalOpening(grown, [1, 1, 1])
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(grown), sortByObjectSize=True)
    lab = cc[idx] or 1
    if sitk.GetArrayViewFromImage(cc).max() == 0:
        raise InputError(f"region growing from {list(point_mm)} mm found nothing (seed on an edge?)")
    mask = sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(cc == lab, [2, 2, 2]))
    return sitk.GetArrayFromImage(mask).astype(bool)


def totalsegmentator_weights_dir() -> Path:
    return Path(os.environ.get("TOTALSEG_HOME_DIR", Path.home() / ".totalsegmentator")) / "nnunet" / "results"


def totalsegmentator_labels(volume: Volume, table: LabelTable) -> LabelMap:
    """Run an installed TotalSegmentator (task ``total``) offline. Nothing is downloaded: without the
    package or its weights this ends in a message saying how to install them."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("totalsegmentator") is None:
        raise ConfigError("TotalSegmentator is not installed: pip install TotalSegmentator, then fetch its "
                          "weights once with totalseg_download_weights -t total (surgtwin never downloads)")
    weights = totalsegmentator_weights_dir()
    if not weights.is_dir() or not any(weights.iterdir()):
        raise ConfigError(f"TotalSegmentator weights not found in {weights}: fetch them once with "
                          "totalseg_download_weights -t total (surgtwin never downloads at run time)")
    from totalsegmentator.config import set_config_key
    from totalsegmentator.python_api import totalsegmentator

    set_config_key("send_usage_stats", False)  # offline: no telemetry
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "ct.nii.gz", Path(tmp) / "seg.nii.gz"
        sitk.WriteImage(volume.image, str(src))
        totalsegmentator(str(src), str(out), ml=True, quiet=True)
        labels = sitk.ReadImage(str(out))
    labels = sitk.Resample(labels, volume.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    return LabelMap(labels, table)
