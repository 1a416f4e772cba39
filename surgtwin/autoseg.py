"""Automatic abdominal CT segmentation without learned weights (``segment --method auto``).

Classical image analysis on SimpleITK/scipy, in a canonical frame: the image is reoriented to LPS
(x to the patient's left, y posterior, z superior), block-averaged to a working grid of about 2 mm and
cropped to the body, then

1. body, subcutaneous fat, bone and lungs from Hounsfield units;
2. anatomical landmarks: the body midline and the vertebral bodies, slice by slice;
3. each organ from an intensity model estimated on the patient (the mode of the soft-tissue histogram
   in the organ's anatomical region, so non-contrast and contrast CT both work), a morphological
   opening that breaks the thin bridges to neighbours, the component in the expected region, a
   dilation back within the intensity window to the organ's full extent and hole filling (vessels,
   lesions inside);
4. the aorta and IVC as round blobs in front of each vertebral body (distance-transform peaks),
   tracked along z.

Results are resampled back to the input grid. The method and its measured Dice per organ on the
shared real cases are in ``benchmarks/segmentation.py``.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .labels import LabelTable  # noqa: F401  (type of auto_label_array)

WORK_SPACING_MM = 2.0


def _canonical(image: sitk.Image) -> sitk.Image:
    """Reorient to LPS, average voxel blocks down to a working grid of about WORK_SPACING_MM (block
    averaging is its own anti-aliasing filter), and crop to the body (air and the table cost time)."""
    img = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "LPS")
    factors = [max(1, int(WORK_SPACING_MM / s + 0.25)) for s in img.GetSpacing()]
    if max(factors) > 1:
        img = sitk.BinShrink(img, factors)
        img = sitk.SmoothingRecursiveGaussian(img, [0.3 * s for s in img.GetSpacing()])
    arr = sitk.GetArrayViewFromImage(img)
    inside = np.argwhere(ndimage.binary_opening(arr > -500, iterations=2))
    if len(inside) == 0:
        raise InputError("no body found in the image (is it CT in Hounsfield units?)")
    margin = [int(np.ceil(10.0 / s)) for s in img.GetSpacing()[::-1]]
    lo = np.maximum(inside.min(0) - margin, 0)
    hi = np.minimum(inside.max(0) + margin + 1, arr.shape)
    return sitk.RegionOfInterest(img, [int(v) for v in (hi - lo)[::-1]], [int(v) for v in lo[::-1]])


def _distance(mask: np.ndarray, spacing, pad_mm: float) -> np.ndarray:
    """Euclidean distance [mm] from each voxel to the nearest False voxel (0 on False voxels), with the
    volume edges replicated by ``pad_mm`` (a slab's first and last slices do not border background)."""
    if mask.all():
        return np.full(mask.shape, np.inf)
    pad = [int(np.ceil(pad_mm / s)) + 1 if s < 1e6 else 0 for s in spacing[::-1]]
    background = sitk.GetImageFromArray(np.pad(~mask, [(p, p) for p in pad], mode="edge").astype(np.uint8))
    background.SetSpacing([float(min(s, 1e6)) for s in spacing])
    d = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        background, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    return np.maximum(d[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape))], 0.0)


def erode(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Erosion by a ball of ``radius_mm`` (exact, via the distance transform)."""
    return _distance(mask, spacing, radius_mm) > radius_mm


def dilate(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    return ~erode(~mask, radius_mm, spacing)


def opening(mask, radius_mm, spacing):
    return dilate(erode(mask, radius_mm, spacing), radius_mm, spacing)


def closing(mask, radius_mm, spacing):
    return erode(dilate(mask, radius_mm, spacing), radius_mm, spacing)


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of every axial slice: background pieces (4-connected in-plane) that do not reach
    the slice border."""
    lab, _ = ndimage.label(~mask, structure=_IN_PLANE)
    border = np.unique(np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(),
                                       lab[:, :, -1].ravel()]))
    return mask | ~np.isin(lab, border)


class Frame:
    """The canonical working grid: median-filtered HU array (z, y, x), spacing [mm], voxel coordinates [mm]."""

    def __init__(self, img: sitk.Image):
        self.hu = sitk.GetArrayFromImage(sitk.Median(img, [1, 1, 0]))
        self.spacing = np.array(img.GetSpacing())  # (x, y, z)
        _, y, x = self.hu.shape
        self.xmm = (np.arange(x) * self.spacing[0])[None, None, :]
        self.ymm = (np.arange(y) * self.spacing[1])[None, :, None]


def body_mask(f: Frame) -> np.ndarray:
    body = _largest(ndimage.gaussian_filter(f.hu, 1.0) > -500)
    body = closing(body, 4.0, f.spacing)
    body = _fill_slices(body)
    if not body.any():
        raise InputError("no body found in the image (is it CT in Hounsfield units?)")
    return body


def landmarks(f: Frame, body: np.ndarray) -> dict:
    """Per-slice midline x [mm], vertebral body centre (x, y) [mm] and its anterior edge y [mm]."""
    area = body.sum(axis=(1, 2))
    xs = np.array([(f.xmm[0, 0] * b.sum(0)).sum() / max(b.sum(), 1) for b in body])
    ys = np.array([(f.ymm[0, :, 0] * b.sum(1)).sum() / max(b.sum(), 1) for b in body])
    cx = float(np.median(xs[area > 0.5 * area.max()]))
    cy = float(np.median(ys[area > 0.5 * area.max()]))
    # vertebral body: per slice, the centre of the largest inscribed disc of dense (>= 90 HU) tissue
    # near the midline behind the body centre (an adjacent contrast-filled aorta is narrower); its
    # anterior edge is the centre minus the inscribed radius
    near = ((np.abs(f.xmm - cx) < 45.0) & (f.ymm > cy - 40.0))[0]
    smooth = ndimage.gaussian_filter(f.hu, (0, 1, 1))
    vx, vy, vant = [], [], []
    for k in range(f.hu.shape[0]):
        dt = ndimage.distance_transform_edt((smooth[k] >= 90.0) & near & body[k], sampling=f.spacing[1::-1])
        j, i = np.unravel_index(np.argmax(dt), dt.shape)
        if dt[j, i] < 8.0:
            vx.append(np.nan), vy.append(np.nan), vant.append(np.nan)
            continue
        vx.append(i * f.spacing[0]), vy.append(j * f.spacing[1]), vant.append(j * f.spacing[1] - dt[j, i])

    def fill(v):
        v = np.array(v)
        ok = np.isfinite(v)
        if not ok.any():
            return np.full_like(v, np.nan)
        return np.interp(np.arange(len(v)), np.flatnonzero(ok), v[ok])
    vx, vy, vant = (ndimage.median_filter(fill(v), size=5, mode="nearest") for v in (vx, vy, vant))
    if np.isnan(vx).any():
        vx, vy, vant = np.full(len(vx), cx), np.full(len(vx), cy + 40.0), np.full(len(vx), cy + 25.0)
    return {"cx": cx, "cy": cy, "vx": vx, "vy": vy, "vant": vant}


def _mode(values: np.ndarray, lo=-50.0, hi=250.0) -> float:
    v = values[(values > lo) & (values < hi)]
    if v.size < 50:
        return float("nan")
    hist, edges = np.histogram(v, bins=np.arange(lo, hi + 2, 2))
    hist = ndimage.gaussian_filter1d(hist.astype(float), 2.0)
    return float(edges[np.argmax(hist)] + 1.0)


def _spread(values: np.ndarray, mode: float) -> float:
    v = values[np.abs(values - mode) < 60]
    if v.size < 50:
        return 15.0
    return float(np.clip(1.4826 * np.median(np.abs(v - mode)), 8.0, 30.0))


def grow_organ(spacing, candidates: np.ndarray, region: np.ndarray, *, open_mm: float,
               reach_mm: float, touching: bool = False) -> np.ndarray:
    """Organ from intensity candidates: an opening breaks thin bridges to neighbours, the largest opened
    component lying mostly in ``region`` is the core, which is dilated within the candidates by
    ``reach_mm`` (recovering edges and tips the opening took) and hole-filled slice by slice.

    The dilation and closing run on the core's bounding box only."""
    opened = opening(candidates, open_mm, spacing)
    lab, n = ndimage.label(opened)
    if n == 0:
        return np.zeros_like(candidates)
    sizes = ndimage.sum_labels(opened, lab, index=np.arange(1, n + 1))
    inside = ndimage.sum_labels(region, lab, index=np.arange(1, n + 1))
    score = np.where(inside > 0 if touching else inside > 0.5 * sizes, sizes, 0)
    if score.max() == 0:
        return np.zeros_like(candidates)
    core = lab == (1 + int(np.argmax(score)))
    # dilation within the candidates, on the core's bounding box grown by the reach
    pad = [int(np.ceil(reach_mm / sp)) + 1 for sp in spacing[::-1]]
    idx = np.argwhere(core)
    lo, hi = np.maximum(idx.min(0) - pad, 0), np.minimum(idx.max(0) + pad + 1, core.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    lab, _ = ndimage.label(dilate(core[box], reach_mm, spacing) & candidates[box] | core[box])
    keep = np.unique(lab[core[box]])
    grown = np.zeros_like(candidates)
    organ = np.isin(lab, keep[keep > 0])
    grown[box] = _fill_slices(closing(organ, 3.0, spacing) | organ)
    return grown


def round_vessel(f: Frame, tissue: np.ndarray, window: np.ndarray, *, r_min: float = 6.0,
                 r_max: float = 17.0) -> np.ndarray:
    """A tubular vessel running along z (aorta, IVC): per slice the largest disc inscribed in
    ``tissue`` whose centre lies in ``window``; centres and radii are median-filtered along z so one
    slice cannot jump to a neighbour, and the disc is intersected with the tissue."""
    nz = f.hu.shape[0]
    cx, cy, rad = np.full(nz, np.nan), np.full(nz, np.nan), np.full(nz, np.nan)
    for k in range(nz):
        dt = ndimage.distance_transform_edt(tissue[k] & window[k], sampling=f.spacing[1::-1])
        dt = np.where(window[k] & (dt <= r_max), dt, 0.0)
        j, i = np.unravel_index(np.argmax(dt), dt.shape)
        if dt[j, i] >= r_min:
            cx[k], cy[k], rad[k] = i * f.spacing[0], j * f.spacing[1], dt[j, i]
    ok = np.isfinite(cx)
    # a vessel is set off from its surroundings: most of a ring 2-5 mm outside the disc differs from
    # the lumen (else the disc sits inside a parenchyma of the same intensity, e.g. an IVC merged
    # with the liver in the portal phase, and the slice is not trusted)
    for k in np.flatnonzero(ok):
        d2 = (f.xmm[0] - cx[k]) ** 2 + (f.ymm[0] - cy[k]) ** 2
        inner = f.hu[k][d2 <= (0.6 * rad[k]) ** 2]
        med = np.median(inner)
        ring = f.hu[k][(d2 >= (rad[k] + 2.0) ** 2) & (d2 <= (rad[k] + 5.0) ** 2)]
        if np.mean(np.abs(ring - med) < max(30.0, 0.2 * abs(med))) > 0.5:
            ok[k] = False
    if ok.sum() < max(2, nz // 3):
        return np.zeros(f.hu.shape, bool)
    idx = np.arange(nz)
    cx, cy, rad = (ndimage.median_filter(np.interp(idx, np.flatnonzero(ok), v[ok]), size=5, mode="nearest")
                   for v in (cx, cy, rad))
    d2 = (f.xmm - cx[:, None, None]) ** 2 + (f.ymm - cy[:, None, None]) ** 2
    r = rad[:, None, None]
    core = d2 <= (0.6 * r) ** 2
    med = float(np.median(f.hu[core]))
    sigma = max(1.4826 * float(np.median(np.abs(f.hu[core] - med))), 10.0, 0.15 * abs(med))
    # the lumen: the vessel's own intensity within a slightly larger disc, connected to the centre line
    # an enhanced lumen is told from its wall by intensity, so the disc may be generous; an unenhanced
    # one is as dense as the crura and bowel around it, so the inscribed disc is kept tight
    reach = 2.0 if med >= 120.0 else 0.0
    lumen = (d2 <= (r + reach) ** 2) & (np.abs(f.hu - med) <= 2.5 * sigma) & tissue | core
    lumen = opening(lumen, 2.0, np.r_[f.spacing[:2], 1e9])  # in-plane
    lab, _ = ndimage.label(lumen)
    keep = np.unique(lab[core & lumen])
    lumen = _fill_slices(np.isin(lab, keep[keep > 0]))
    # partial-volume rim: one in-plane pixel more, within the disc
    rim = ndimage.binary_dilation(lumen, np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    return rim & (d2 <= (r + reach) ** 2) & tissue


def _organ_from_region(f: Frame, sm: np.ndarray, allowed: np.ndarray, region: np.ndarray, *,
                       open_mm: float, reach_mm: float, touching: bool = False) -> np.ndarray:
    """An organ grown by ``grow_organ`` inside ``allowed`` from an intensity model of this scan.

    Pass 1: the histogram mode of soft tissue in ``region`` +- 1.5 robust SD gives a conservative organ.
    Pass 2: the window is re-estimated from that organ's core (eroded 6 mm): its 2nd-98th percentile
    widened by two core SDs, asymmetric where the parenchyma is (e.g. enhancing vessels in the portal
    phase), and the organ regrown.
    """
    sample = sm[region & allowed & (sm > -30) & (sm < 250)]
    mode = _mode(sample)
    if not np.isfinite(mode):
        return np.zeros(sm.shape, bool)
    first = grow_organ(f.spacing, allowed & (np.abs(sm - mode) < 1.5 * _spread(sample, mode)), region,
                       open_mm=open_mm, reach_mm=reach_mm, touching=touching)
    core = erode(first, 6.0, f.spacing)
    if core.sum() < 50:
        return first
    vals = sm[core]
    sd = 1.4826 * float(np.median(np.abs(vals - np.median(vals))))
    lo, hi = np.percentile(vals, 2) - 2.0 * sd, np.percentile(vals, 98) + 2.0 * sd
    return grow_organ(f.spacing, allowed & (sm > lo) & (sm < hi), region, open_mm=open_mm, reach_mm=reach_mm,
                      touching=touching)


def _peaks(values: np.ndarray, lo=-50.0, hi=300.0) -> list[tuple[float, float]]:
    """(HU, height) of the local maxima of the smoothed 2-HU histogram, highest first."""
    hist, edges = np.histogram(values, bins=np.arange(lo, hi + 2, 2))
    h = ndimage.gaussian_filter1d(hist.astype(float), 1.5)
    idx = [i for i in range(1, len(h) - 1) if h[i] >= h[i - 1] and h[i] > h[i + 1]]
    return sorted(((float(edges[i] + 1), float(h[i])) for i in idx), key=lambda p: -p[1])


def kidney(f: Frame, sm: np.ndarray, allowed: np.ndarray, region: np.ndarray, liver_hu: float) -> np.ndarray:
    """A kidney: the strongest soft-tissue (> -20 HU) histogram peak in its paravertebral region that
    differs from the liver parenchyma by > 15 HU (kidneys are darker than liver without contrast,
    brighter with it; muscle sits near the liver's value), grown from there."""
    sample = sm[region & allowed & (sm > -30) & (sm < 300)]
    if sample.size < 100:
        return np.zeros(sm.shape, bool)
    peaks = [p for p in _peaks(sample, -30.0, 300.0) if p[0] > -20.0 and abs(p[0] - liver_hu) > 15.0]
    if not peaks:
        return np.zeros(sm.shape, bool)
    centre = peaks[0][0]
    half = min(_spread(sample, centre), abs(centre - liver_hu) / 2.0)
    envelope = dilate(region, 6.0, f.spacing)      # kidneys stay in their retroperitoneal box
    return grow_organ(f.spacing, allowed & envelope & (np.abs(sm - centre) < half * 1.5), region, open_mm=6.0,
                      reach_mm=4.0)


def abdominal_organs(f: Frame) -> dict[str, np.ndarray]:
    """Boolean masks (z, y, x) on the working grid: body, fat, bone, lungs, aorta, IVC, liver, spleen,
    kidneys — each from the anatomy of this scan (see the module docstring)."""
    body = body_mask(f)
    sm = ndimage.gaussian_filter(f.hu, 0.7)
    bone = body & (sm >= 200.0)
    lm = landmarks(f, body)
    dx = f.xmm - lm["vx"][:, None, None]          # + to the patient's left of the spine
    da = f.ymm - lm["vant"][:, None, None]        # + posterior of the vertebral body's front
    out = {"body": body, "bone": bone}
    out["subcutaneous_fat"] = body & (sm >= -190) & (sm <= -30)
    air = body & (sm < -400)
    lungs = opening(air, 4.0, f.spacing)
    lab, n = ndimage.label(lungs)
    sizes = ndimage.sum_labels(lungs, lab, index=np.arange(1, n + 1)) * np.prod(f.spacing) / 1000.0
    out["lungs"] = np.isin(lab, 1 + np.flatnonzero(sizes > 100.0))   # > 100 mL of air: lung, not bowel gas
    tissue = body & (sm > 15.0) & (sm < 600.0)
    out["aorta"] = round_vessel(f, tissue, (dx > -10) & (dx < 40) & (da > -45) & (da < 2))
    out["inferior_vena_cava"] = round_vessel(f, tissue & ~out["aorta"],
                                             (dx > -45) & (dx < -5) & (da > -45) & (da < 2), r_max=13.0)
    allowed = body & ~bone & ~out["lungs"] & ~dilate(out["aorta"], 2.0, f.spacing)
    liver = _organ_from_region(f, sm, allowed & ~out["inferior_vena_cava"], dx < -20, open_mm=10.0,
                               reach_mm=4.0)
    out["liver"] = liver & ~out["inferior_vena_cava"]
    allowed &= ~out["liver"]
    out["spleen"] = _organ_from_region(f, sm, allowed, (dx > 50) & (da > -70), open_mm=8.0,
                                       reach_mm=4.0)
    allowed &= ~out["spleen"]
    liver_hu = float(np.median(sm[out["liver"]])) if out["liver"].any() else 50.0
    for name, side in (("kidney_right", dx < -30), ("kidney_left", dx > 30)):
        region = side & (np.abs(dx) < 110) & (da > -15) & (da < 45)
        out[name] = kidney(f, sm, allowed, region, liver_hu)
        allowed &= ~out[name]
    return out


_AUTO_CACHE: dict = {}


def auto_organ_at(image: sitk.Image, name: str, point_mm) -> np.ndarray | None:
    """The automatic ``name`` mask on ``image``'s grid if it contains ``point_mm`` (within 2 mm), else None.
    The automatic segmentation runs once per image (several seeds share it)."""
    key = (image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection(),
           hash(sitk.GetArrayViewFromImage(image)[::5, ::7, ::7].tobytes()))
    if key not in _AUTO_CACHE:
        _AUTO_CACHE.clear()
        work = _canonical(image)
        _AUTO_CACHE[key] = (work, abdominal_organs(Frame(work)))
    work, masks = _AUTO_CACHE[key]
    mask = masks.get({"lung": "lungs"}.get(name, name))
    if mask is None or not mask.any():
        return None
    idx = np.round(work.TransformPhysicalPointToContinuousIndex([float(v) for v in point_mm])).astype(int)[::-1]
    r = [max(1, int(round(2.0 / s))) for s in work.GetSpacing()[::-1]]
    box = tuple(slice(max(0, i - k), max(0, i + k + 1)) for i, k in zip(idx, r))
    if not mask[box].any():
        return None
    return _to_input_grid(work, mask, image)


def seeded_organ(image: sitk.Image, point_mm, *, radius_mm: float = 10.0, open_mm: float = 6.0) -> np.ndarray:
    """Boolean (z, y, x) organ on ``image``'s grid grown from one click [mm, LPS] on a CT.

    The organ's intensities come from ``radius_mm`` around the click (not from an anatomical region);
    then the same two passes as the automatic organs (opening, the component at the click, the window
    re-estimated from its core, regrowth, holes filled)."""
    work = _canonical(image)
    f = Frame(work)
    try:
        idx = np.array(work.TransformPhysicalPointToContinuousIndex([float(v) for v in point_mm]))[::-1]
    except Exception:
        raise InputError(f"seed {list(point_mm)} is not a physical [x, y, z] point") from None
    grid = np.indices(f.hu.shape, sparse=True)
    d2 = sum(((g - i) * s) ** 2 for g, i, s in zip(grid, idx, f.spacing[::-1]))
    near = d2 <= radius_mm ** 2
    if not near.any():
        raise InputError(f"seed {list(point_mm)} mm lies outside the body in the image")
    sm = ndimage.gaussian_filter(f.hu, 0.7)
    allowed = body_mask(f) & (sm < 200.0)
    mask = _organ_from_region(f, sm, allowed, near, open_mm=open_mm, reach_mm=open_mm, touching=True)
    return _to_input_grid(work, mask, image)


def _to_input_grid(work: sitk.Image, mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    """A working-grid mask on the input grid: linear interpolation of the mask over its bounding box, >= 0.5."""
    out = np.zeros(sitk.GetArrayViewFromImage(image).shape, bool)
    if not mask.any():
        return out
    lo, hi = _index_box(work, mask, image)
    ref = sitk.Image([int(v) for v in hi - lo], sitk.sitkUInt8)
    ref.SetSpacing(image.GetSpacing())
    ref.SetDirection(image.GetDirection())
    ref.SetOrigin(image.TransformIndexToPhysicalPoint([int(v) for v in lo]))
    m = sitk.GetImageFromArray(mask.astype(np.float32))
    m.CopyInformation(work)
    up = sitk.GetArrayFromImage(sitk.Resample(m, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    out[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = up >= 0.5
    return out


# output order: later structures overwrite earlier ones where masks overlap
PAINT_ORDER = ("body", "subcutaneous_fat", "lungs", "bone", "kidney_right", "kidney_left", "spleen", "liver",
               "inferior_vena_cava", "aorta")
LABEL_NAMES = {"lungs": "lung"}


def auto_label_array(image: sitk.Image, table: LabelTable) -> np.ndarray:
    """(z, y, x) uint16 label array on ``image``'s own grid from ``abdominal_organs``.

    Each structure's working-grid mask is resampled onto the input grid (only over its bounding box) by
    linear interpolation of the mask and a 0.5 threshold: smooth boundaries, not 2 mm voxel steps."""
    work = _canonical(image)
    masks = abdominal_organs(Frame(work))
    out = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint16)
    for name in PAINT_ORDER:
        mask = masks.get(name)
        if mask is None or not mask.any():
            continue
        out[_to_input_grid(work, mask, image)] = table.id_of(LABEL_NAMES.get(name, name))
    return out


def _index_box(work: sitk.Image, mask: np.ndarray, image: sitk.Image):
    """Index bounds [lo, hi) (x, y, z) of ``image`` covering the mask's physical bounding box + 1 voxel."""
    idx = np.argwhere(mask)[:, ::-1]
    lo, hi = idx.min(0) - 1, idx.max(0) + 1
    corners = [work.TransformContinuousIndexToPhysicalPoint([float(c) for c in (a, b, d)])
               for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for d in (lo[2], hi[2])]
    cidx = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in corners])
    size = np.array(image.GetSize())
    return (np.clip(np.floor(cidx.min(0)).astype(int) - 1, 0, size),
            np.clip(np.ceil(cidx.max(0)).astype(int) + 2, 0, size))
