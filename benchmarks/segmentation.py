"""Score surgtwin's segmentation methods on the shared real cases against their reference labels.

For each case and organ: Dice, 95% Hausdorff distance [mm] and seconds. ``auto`` is the default,
weight-free method (one run per case scores every organ); ``seeded`` uses one click per organ placed at
the reference organ's median voxel (what a user's click would give). Also times ``auto`` on a
512x512x200 CT (the contrast case resampled to that size). Prints a table and writes JSON (default
benchmarks/results/segmentation.json).

    python benchmarks/segmentation.py [--data ../shared/data] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from surgtwin.config import SegmentConfig
from surgtwin.mesh import index_to_physical
from surgtwin.pipeline import resample_labels
from surgtwin.segment import segment
from surgtwin.volume import LabelMap, Volume

CASES = {"ct_abdomen_3mm": "ct.nii.gz", "ct_dicom_jpeg2000": "dicom"}
ORGANS = ["liver", "spleen", "kidney_left", "kidney_right", "aorta"]


def scores(pred: np.ndarray, ref: np.ndarray, image: sitk.Image) -> tuple[float, float]:
    if not pred.any() or not ref.any():
        return 0.0, float("inf")
    dice = 2.0 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())
    a, b = (sitk.GetImageFromArray(m.astype(np.uint8)) for m in (pred, ref))
    for m in (a, b):
        m.CopyInformation(image)
    da = sitk.GetArrayFromImage(sitk.Abs(sitk.SignedMaurerDistanceMap(b, squaredDistance=False, useImageSpacing=True)))
    db = sitk.GetArrayFromImage(sitk.Abs(sitk.SignedMaurerDistanceMap(a, squaredDistance=False, useImageSpacing=True)))
    edge_a = pred & ~np.asarray(sitk.GetArrayFromImage(sitk.BinaryErode(a, [1, 1, 1])), bool)
    edge_b = ref & ~np.asarray(sitk.GetArrayFromImage(sitk.BinaryErode(b, [1, 1, 1])), bool)
    d = np.concatenate([da[edge_a], db[edge_b]])
    return float(dice), float(np.percentile(d, 95))


def run(data: Path) -> list[dict]:
    rows = []
    for case, image in CASES.items():
        volume = Volume.load(data / case / image)
        ref = resample_labels(LabelMap.load(data / case / "reference_seg.nii.gz"), volume)
        ra = ref.array()
        t = time.perf_counter()
        auto = segment(volume, SegmentConfig(method="auto"))
        dt = time.perf_counter() - t
        for organ in ORGANS:
            mask = ra == ref.table.id_of(organ)
            if mask.sum() < 50:
                continue
            dice, hd95 = scores(auto.array() == auto.table.id_of(organ), mask, volume.image)
            rows.append({"case": case, "method": "auto", "organ": organ, "dice": dice, "hd95_mm": hd95,
                         "seconds": dt})
        for organ in ORGANS:
            mask = ra == ref.table.id_of(organ)
            if mask.sum() < 50:
                continue
            seed = index_to_physical(volume.image, np.median(np.argwhere(mask), axis=0)[::-1][None])[0]
            t = time.perf_counter()
            seg = segment(volume, SegmentConfig(method="seeded", seeds={organ: seed.tolist()}))
            dt = time.perf_counter() - t
            dice, hd95 = scores(seg.array() == seg.table.id_of(organ), mask, volume.image)
            rows.append({"case": case, "method": "seeded", "organ": organ, "dice": dice, "hd95_mm": hd95,
                         "seconds": dt})
        t = time.perf_counter()
        seg = segment(volume, SegmentConfig(method="threshold"))
        dt = time.perf_counter() - t
        inside = float((seg.array()[ra > 0] > 0).mean())  # share of reference-labelled voxels inside the body
        rows.append({"case": case, "method": "threshold", "organ": "body (share of labelled voxels)",
                     "dice": inside, "hd95_mm": float("nan"), "seconds": dt})
    rows += seeded_mr(data / "mr_abdomen_3mm")
    rows.append(time_full_size(data / "ct_dicom_jpeg2000" / "dicom"))
    return rows


def seeded_mr(case: Path) -> list[dict]:
    """One click per organ on the MR (auto needs CT): intensity-normalised seeded growing."""
    volume = Volume.load(case / "mr.nii.gz", modality="MR")
    ref = resample_labels(LabelMap.load(case / "reference_seg.nii.gz"), volume)
    ra, rows = ref.array(), []
    for organ in ("liver", "spleen"):
        mask = ra == ref.table.id_of(organ)
        seed = index_to_physical(volume.image, np.median(np.argwhere(mask), axis=0)[::-1][None])[0]
        t = time.perf_counter()
        seg = segment(volume, SegmentConfig(method="seeded", seeds={organ: seed.tolist()}))
        dice, hd95 = scores(seg.array() == seg.table.id_of(organ), mask, volume.image)
        rows.append({"case": case.name, "method": "seeded", "organ": organ, "dice": dice, "hd95_mm": hd95,
                     "seconds": time.perf_counter() - t})
    return rows


def time_full_size(dicom: Path) -> dict:
    """Seconds for ``auto`` on a 512x512x200 CT at 0.98 x 0.98 x 2 mm (400 mm long): the 20-slice contrast
    series stacked 10 times along z (anatomically repetitive, but the size and content of a real scan)."""
    img = Volume.load(dicom).image
    arr = sitk.GetArrayFromImage(img)
    big = sitk.GetImageFromArray(np.tile(arr, (200 // arr.shape[0] + 1, 1, 1))[:200])
    big.SetSpacing(img.GetSpacing())
    big.SetOrigin(img.GetOrigin())
    big.SetDirection(img.GetDirection())
    t = time.perf_counter()
    segment(Volume(big), SegmentConfig(method="auto"))
    return {"case": "512x512x200 CT (stacked)", "method": "auto", "organ": "all", "dice": float("nan"),
            "hd95_mm": float("nan"), "seconds": time.perf_counter() - t}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "segmentation.json")
    args = ap.parse_args()
    rows = run(args.data)
    print(f"{'case':<26} {'method':<10} {'organ':<32} {'Dice':>6} {'HD95 mm':>8} {'s':>6}")
    for r in rows:
        print(f"{r['case']:<26} {r['method']:<10} {r['organ']:<32} {r['dice']:>6.3f} {r['hd95_mm']:>8.1f} {r['seconds']:>6.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
