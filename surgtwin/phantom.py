"""Procedural abdominal CT phantom with its exact ground-truth label map.

Geometry is analytic, in physical LPS millimetres (x toward the patient's Left, y Posterior,
z Superior; patient's right = negative x), evaluated at voxel centres of an isotropic grid of
``cfg.spacing_mm`` covering ``cfg.fov_mm`` centred on the origin, identity direction.
``phantom_truth(cfg)`` returns the same shapes as numbers, so tests can compare against them.

Draw order (later structures overwrite earlier ones) and Hounsfield units
(non-contrast / portal-venous contrast):

====  ==============================  ==================================================  ============
step  label                           shape                                               HU
====  ==============================  ==================================================  ============
 1    body                            elliptic cylinder 160 x 120 mm, full z              30 / 30
 2    subcutaneous_fat                15 mm ring inside the outline                       -100 / -100
 3    skeletal_muscle                 10 mm abdominal-wall ring inside the fat            50 / 50
 4    autochthon_left / _right        elliptic cylinders beside the spine                 50 / 50
 5    vertebrae_T11 ... L5            cylinders r 20 mm, 25 mm high, 5 mm discs (body)    250 core,
                                      plus a spinous-process capsule                      700 cortex
 6    rib_{left,right}_9 ... 12       r 5 mm tubes on the 0.9-scaled body ellipse, every  600 / 600
                                      30 mm, 20 mm lower anteriorly, gaps front and back
 7    spleen                          oblique ellipsoid 45 x 30 x 50 mm                   50 / 115
 8    liver                           oblique ellipsoid 88 x 66 x 64 mm (~1.56 L)         60 / 105
 9    gallbladder                     ellipsoid 15 x 15 x 35 mm at the inferior liver     10 / 10
10    kidney_right / kidney_left      ellipsoids 30 x 25 x 55 mm                          30 / 160
11    portal_vein_and_splenic_vein    tapered capsule tree, r 7 -> 2 mm                   40 / 170
12    hepatic_vein                    3 tapered capsule trees from the IVC, r 5 -> 2.5    40 / 150
13    inferior_vena_cava              cylinder r 11 mm at (-20, 25), full z               40 / 130
14    aorta                           cylinder r 12 mm at (18, 30), full z                40 / 170
15    liver_tumor                     sphere r ``cfg.tumor_radius_mm`` in the right lobe  45 / 45
====  ==============================  ==================================================  ============

Outside the body: air, -1000 HU, label 0. The vertebral cortex is the one-voxel shell of the
bone mask. The HU image is then blurred (Gaussian, sigma ``cfg.blur_mm``), given Gaussian noise
(``cfg.noise_hu``) and clipped to [-1024, 3071]. The tumour centre is jittered by up to 3 mm per
axis; jitter and noise come from ``np.random.default_rng(cfg.seed)`` (jitter first). One small
portal twig passes ``tumor_radius + 5`` mm from the tumour centre (a 10 mm resection margin
crosses it); every other vessel keeps more than 5 mm from the tumour surface for radii up to
about 20 mm (tested for the default 15 mm and seeds 0-4; larger tumours may abut vessels).
Structure sizes are fixed; only the grid (spacing, field of view), tumour radius, jitter,
noise, blur and contrast phase vary with the config.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .config import PhantomConfig
from .errors import ConfigError
from .labels import LabelTable
from .volume import LabelMap, Volume

BODY_SEMI = (160.0, 120.0)
FAT_MM, MUSCLE_MM = 15.0, 10.0
SPINE_XY, VERTEBRA_R, LEVEL_MM, DISC_MM = (0.0, 60.0), 20.0, 30.0, 5.0
LEVELS = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]  # L1 centred at z = +30
RIB_SCALE, RIB_R, RIB12_Z = 0.9, 5.0, 5.0
IVC_XY, IVC_R, AORTA_XY, AORTA_R = (-20.0, 25.0), 11.0, (18.0, 30.0), 12.0
JITTER_MM = 3.0
CORTEX_HU = 700.0

#: name -> (non-contrast HU, contrast HU); prefixes (vertebrae_, rib_, ...) match families.
HU = {
    "body": (30, 30), "subcutaneous_fat": (-100, -100), "skeletal_muscle": (50, 50),
    "autochthon": (50, 50), "vertebrae": (250, 250), "rib": (600, 600),
    "spleen": (50, 115), "liver": (60, 105), "gallbladder": (10, 10), "kidney": (30, 160),
    "portal_vein_and_splenic_vein": (40, 170), "hepatic_vein": (40, 150),
    "inferior_vena_cava": (40, 130), "aorta": (40, 170), "liver_tumor": (45, 45),
}
AIR_HU = -1000.0


FAMILIES = ("autochthon", "vertebrae", "rib", "kidney")


def hu_of(name: str, contrast: bool = True) -> float:
    """HU of a structure name (exact name, else its family prefix such as ``rib``)."""
    key = name if name in HU else next((f for f in FAMILIES if name.startswith(f + "_")), None)
    if key is None:
        raise KeyError(name)
    return float(HU[key][1 if contrast else 0])


def _frame(u, v_hint) -> np.ndarray:
    """Rows: orthonormal local axes (u, v, w) with u along ``u`` and v toward ``v_hint``."""
    u = np.asarray(u, float) / np.linalg.norm(u)
    v = np.asarray(v_hint, float) - np.dot(v_hint, u) * u
    v /= np.linalg.norm(v)
    return np.array([u, v, np.cross(u, v)])


def _ellipsoid(center, semi, axes=None) -> dict:
    axes = np.eye(3) if axes is None else np.asarray(axes, float)
    semi = np.asarray(semi, float)
    return {"center": np.asarray(center, float), "semi_axes": semi, "axes": axes,
            "volume_ml": float(4.0 / 3.0 * np.pi * semi.prod() / 1000.0)}


def _seg(p0, p1, r0, r1) -> dict:
    return {"p0": np.asarray(p0, float), "p1": np.asarray(p1, float), "r0": float(r0), "r1": float(r1)}


def _chain(points, radii) -> list[dict]:
    return [_seg(points[i], points[i + 1], radii[i], radii[i + 1]) for i in range(len(points) - 1)]


@lru_cache(maxsize=1)
def _unit_sphere(n_theta: int = 181, n_phi: int = 360) -> np.ndarray:
    t, p = np.meshgrid(np.linspace(0, np.pi, n_theta), np.linspace(0, 2 * np.pi, n_phi, endpoint=False))
    return np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)


def ellipsoid_points(e: dict) -> np.ndarray:
    """Dense sample (about 1 degree) of the ellipsoid surface in world coordinates."""
    return (_unit_sphere() * e["semi_axes"]) @ e["axes"] + e["center"]


def ellipsoid_level(e: dict, pts) -> np.ndarray:
    """Normalised radius: < 1 inside, 1 on the surface."""
    q = (np.asarray(pts, float) - e["center"]) @ e["axes"].T / e["semi_axes"]
    return np.sqrt((q ** 2).sum(-1))


def depth_in(e: dict, p) -> float:
    """Distance (mm) from point ``p`` to the ellipsoid surface, negative outside."""
    d = float(np.min(np.linalg.norm(ellipsoid_points(e) - np.asarray(p, float), axis=1)))
    return d if ellipsoid_level(e, p) <= 1 else -d


def segment_distance(seg: dict, p) -> float:
    """Distance from point ``p`` to the centreline of a segment."""
    a, b, p = seg["p0"], seg["p1"], np.asarray(p, float)
    t = np.clip(np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def grid_geometry(cfg: PhantomConfig):
    """(size xyz, origin xyz, spacing) of the phantom grid, centred on the origin."""
    sp = float(cfg.spacing_mm)
    if sp <= 0:
        raise ConfigError(f"phantom.spacing_mm must be positive, got {sp}")
    size = [int(np.ceil(float(f) / sp - 1e-6)) for f in cfg.fov_mm]
    origin = [-(n - 1) * sp / 2.0 for n in size]
    return size, origin, sp


def _liver():
    return _ellipsoid((-50.0, -15.0, 22.0), (88.0, 66.0, 64.0), _frame((1.0, -0.6, 0.3), (0, 1, 0)))


def _portal_tree() -> tuple[list[dict], dict]:
    h = (-25.0, 2.0, 15.0)  # hilum: trunk bifurcation
    ra, rp = (-50.0, 5.0, 20.0), (-5.0, -20.0, 25.0)
    segs = (_chain([(62, 22, 25), (40, 8, 12), (5, 0, 0)], [5.0, 5.5, 6.0])      # splenic vein
            + _chain([(5, 0, 0), h], [7.0, 7.0])                                    # portal trunk
            + _chain([h, ra], [6.0, 5.0]) + _chain([h, rp], [6.0, 5.0]))            # right / left
    for root, kids in [(ra, [((-68, -12, 40), [(-90, -22, 58), (-62, -42, 42)]),  # right anterior
                             ((-80, 25, 12), [(-105, 20, -5), (-100, 30, 35)])]),  # right posterior
                       (rp, [((16, -30, 40), [(22, -42, 50), (18, -48, 32)]),     # left lateral
                             ((-20, -45, 22), [(-28, -58, 8), (-15, -55, 42)])])]:  # left medial
        for mid, ends in kids:
            segs += _chain([root, mid], [4.5, 3.5])
            segs += [_seg(mid, e, 3.5, 3.0) for e in ends]
    return segs, {"twig_parent": np.array([-68.0, -12.0, 40.0])}


def _hepatic_trees() -> list[dict]:
    segs = []
    for pts, radii, side in [
        ([(-27, 18, 60), (-60, 12, 48), (-95, 5, 25), (-112, 0, 2)], [5, 4.5, 3.5, 2.5],
         [((-60, 12, 48), (-85, 35, 22)), ((-95, 5, 25), (-108, 18, 40))]),         # right
        ([(-22, 15, 60), (-42, -12, 52), (-48, -40, 28), (-50, -55, 5)], [5, 4, 3, 2.5],
         [((-42, -12, 52), (-18, -40, 40)), ((-48, -40, 28), (-30, -50, 15))]),      # middle
        ([(-14, 16, 60), (0, -15, 50), (20, -38, 45)], [4.5, 3.5, 2.5],
         [((0, -15, 50), (18, -10, 38))]),                                           # left
    ]:
        segs += _chain(pts, radii)
        segs += [_seg(a, b, 3.0, 2.5) for a, b in side]
    return segs


def _place_tumor(cfg: PhantomConfig, liver: dict) -> np.ndarray:
    """Nominal centre: as far toward the lateral/anterior-inferior right lobe as keeps the sphere
    (radius + 20 mm + worst-case jitter) inside the liver, at most 45 mm from the liver centre."""
    r = float(cfg.tumor_radius_mm)
    need = r + 20.0 + JITTER_MM * np.sqrt(3.0)
    c, d = liver["center"], np.array([-0.75, -0.35, -0.55]) / np.linalg.norm([-0.75, -0.35, -0.55])
    if r <= 0 or depth_in(liver, c) < need:
        raise ConfigError(f"phantom.tumor_radius_mm={r} does not fit 20 mm inside the liver")
    lo, hi = 0.0, 45.0
    if depth_in(liver, c + hi * d) >= need:
        return c + hi * d
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if depth_in(liver, c + mid * d) >= need else (lo, mid)
    return c + lo * d


def _twig(parent, tumor, dist, liver) -> dict:
    """Small branch from ``parent`` tangent to the sphere of radius ``dist`` around the tumour."""
    w = tumor - parent
    D = np.linalg.norm(w)
    w /= D
    hint = np.array([-1.0, 0.0, -1.0])
    v = hint - np.dot(hint, w) * w
    v /= np.linalg.norm(v)
    cos = dist / D
    k = tumor + dist * (-cos * w + np.sqrt(1 - cos ** 2) * v)
    for ext in (0.6, 0.4, 0.25, 0.1):
        end = k + ext * (k - parent)
        if depth_in(liver, end) > 6.0:
            break
    return _seg(parent, end, 2.5, 2.0)


def phantom_truth(cfg: PhantomConfig | None = None) -> dict:
    """The analytic phantom: every shape in draw order plus key organ geometry (LPS mm)."""
    cfg = cfg or PhantomConfig()
    size, origin, sp = grid_geometry(cfg)
    z_lo, z_hi = origin[2] - sp, origin[2] + size[2] * sp
    liver = _liver()
    rng = np.random.default_rng(cfg.seed)
    tumor_c = _place_tumor(cfg, liver) + rng.uniform(-JITTER_MM, JITTER_MM, 3)
    r_t = float(cfg.tumor_radius_mm)
    portal, info = _portal_tree()
    twig = _twig(info["twig_parent"], tumor_c, r_t + 5.0, liver)
    portal.append(twig)
    hepatic = _hepatic_trees()
    bx, by = BODY_SEMI
    fat_in = (bx - FAT_MM, by - FAT_MM)
    mus_in = (fat_in[0] - MUSCLE_MM, fat_in[1] - MUSCLE_MM)
    shapes = [("body", "ecyl", {"center": (0, 0), "semi": BODY_SEMI}),
              ("subcutaneous_fat", "ecyl", {"center": (0, 0), "semi": BODY_SEMI, "hole": fat_in}),
              ("skeletal_muscle", "ecyl", {"center": (0, 0), "semi": fat_in, "hole": mus_in})]
    for side, sx in (("right", -1), ("left", 1)):
        shapes.append((f"autochthon_{side}", "ecyl", {"center": (33.0 * sx, 85.0), "semi": (22.0, 15.0),
                                                      "clip": fat_in}))
    vertebrae = {}
    for k, lev in enumerate(LEVELS):
        zc = 30.0 + (LEVELS.index("L1") - k) * LEVEL_MM
        h = LEVEL_MM - DISC_MM
        if zc + h / 2 < z_lo or zc - h / 2 > z_hi:
            continue
        name = f"vertebrae_{lev}"
        vertebrae[name] = {"center": (SPINE_XY[0], SPINE_XY[1], zc), "radius": VERTEBRA_R, "height": h}
        shapes.append((name, "ecyl", {"center": SPINE_XY, "semi": (VERTEBRA_R,) * 2,
                                      "z": (zc - h / 2, zc + h / 2)}))
        shapes.append((name, "tube", {"segments": [_seg((0, 82, zc), (0, 100, zc), 5.0, 5.0)]}))
    ribs = {}
    for n in range(12, 0, -1):
        z0 = RIB12_Z + (12 - n) * LEVEL_MM
        if z0 - 20 > z_hi:
            break
        end = {12: 100.0, 11: 125.0}.get(n, 150.0)     # floating ribs are short
        phi = np.radians(np.linspace(18.0, end, 16))    # 0 = posterior midline, 180 = anterior
        for side, sx in (("right", -1), ("left", 1)):
            pts = np.stack([sx * RIB_SCALE * bx * np.sin(phi), RIB_SCALE * by * np.cos(phi),
                            z0 - 20.0 * phi / np.pi], -1)
            ribs[f"rib_{side}_{n}"] = pts
            shapes.append((f"rib_{side}_{n}", "tube", {"segments": _chain(pts, [RIB_R] * len(pts))}))
    nrm = np.array([0.64, 0.77, 0.0])
    organs = {
        "spleen": _ellipsoid((85.0, 36.0, 45.0), (45.0, 30.0, 50.0), _frame((nrm[1], -nrm[0], 0), nrm)),
        "liver": liver,
        "gallbladder": _ellipsoid((-38.0, -52.0, -18.0), (15.0, 15.0, 35.0), _frame((0, 0.45, 1.0), (1, 0, 0))),
        "kidney_right": _ellipsoid((-72.0, 48.0, -40.0), (30.0, 25.0, 55.0)),
        "kidney_left": _ellipsoid((72.0, 48.0, -35.0), (30.0, 25.0, 55.0)),
    }
    shapes += [(name, "ellipsoid", e) for name, e in organs.items()]
    shapes.append(("portal_vein_and_splenic_vein", "tube", {"segments": portal}))
    shapes.append(("hepatic_vein", "tube", {"segments": hepatic}))
    zspan = (z_lo, z_hi)
    shapes.append(("inferior_vena_cava", "ecyl", {"center": IVC_XY, "semi": (IVC_R,) * 2, "z": zspan}))
    shapes.append(("aorta", "ecyl", {"center": AORTA_XY, "semi": (AORTA_R,) * 2, "z": zspan}))
    shapes.append(("liver_tumor", "ellipsoid", _ellipsoid(tumor_c, (r_t,) * 3)))
    return {
        "grid": {"size_xyz": size, "origin_mm": origin, "spacing_mm": sp},
        "tumor": {"center": tumor_c, "radius": r_t, "volume_ml": 4 / 3 * np.pi * r_t ** 3 / 1000},
        **organs,
        "vertebrae": vertebrae, "ribs": ribs,
        "vessels": {"portal_vein_and_splenic_vein": portal, "hepatic_vein": hepatic,
                    "inferior_vena_cava": [_seg((*IVC_XY, z_lo), (*IVC_XY, z_hi), IVC_R, IVC_R)],
                    "aorta": [_seg((*AORTA_XY, z_lo), (*AORTA_XY, z_hi), AORTA_R, AORTA_R)]},
        "near_vessel": twig,
        "draw_order": list(dict.fromkeys(name for name, _, _ in shapes)),
        "shapes": shapes,
        "contrast": bool(cfg.contrast),
    }


class _Canvas:
    def __init__(self, size, origin, sp):
        self.ax = [origin[i] + sp * np.arange(size[i]) for i in range(3)]   # x, y, z centres
        self.lab = np.zeros(size[::-1], np.uint16)                            # (z, y, x)
        self.sp = sp

    def paint(self, value, lo, hi, inside):
        sl, sub = [], []
        for i in (2, 1, 0):
            a = self.ax[i]
            i0 = int(np.searchsorted(a, lo[i] - 1e-9))
            i1 = int(np.searchsorted(a, hi[i] + 1e-9, side="right"))
            if i1 <= i0:
                return
            sl.append(slice(i0, i1))
            sub.append(a[i0:i1])
        z, y, x = sub[0][:, None, None], sub[1][None, :, None], sub[2][None, None, :]
        m = inside(x, y, z)
        self.lab[tuple(sl)][np.broadcast_to(m, [len(s) for s in sub])] = value


def _draw(canvas: _Canvas, value: int, kind: str, p: dict):
    big = 1e9
    if kind == "ecyl":
        (cx, cy), (a, b) = p["center"], p["semi"]
        z0, z1 = p.get("z", (-big, big))

        def inside(x, y, z):
            m = (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1) & (z >= z0) & (z <= z1)
            if "hole" in p:
                m = m & ((x / p["hole"][0]) ** 2 + (y / p["hole"][1]) ** 2 > 1)
            if "clip" in p:
                m = m & ((x / p["clip"][0]) ** 2 + (y / p["clip"][1]) ** 2 <= 1)
            return m
        canvas.paint(value, (cx - a, cy - b, z0), (cx + a, cy + b, z1), inside)
    elif kind == "ellipsoid":
        c, s, ax = p["center"], p["semi_axes"], p["axes"]
        half = np.sqrt(((s[:, None] * ax) ** 2).sum(0))

        def inside(x, y, z):
            d = [x - c[0], y - c[1], z - c[2]]
            return sum(((ax[j, 0] * d[0] + ax[j, 1] * d[1] + ax[j, 2] * d[2]) / s[j]) ** 2
                       for j in range(3)) <= 1
        canvas.paint(value, c - half, c + half, inside)
    elif kind == "tube":
        for sg in p["segments"]:
            a, b, r0, r1 = sg["p0"], sg["p1"], sg["r0"], sg["r1"]
            ab = b - a
            L2 = max(float(ab @ ab), 1e-12)

            def inside(x, y, z, a=a, ab=ab, L2=L2, r0=r0, r1=r1):
                d = [x - a[0], y - a[1], z - a[2]]
                t = np.clip((d[0] * ab[0] + d[1] * ab[1] + d[2] * ab[2]) / L2, 0, 1)
                dist2 = sum((d[i] - t * ab[i]) ** 2 for i in range(3))
                return dist2 <= (r0 + t * (r1 - r0)) ** 2
            rmax = max(r0, r1)
            canvas.paint(value, np.minimum(a, b) - rmax, np.maximum(a, b) + rmax, inside)
    else:  # pragma: no cover - internal shapes only
        raise ValueError(kind)


def make_phantom(cfg: PhantomConfig | None = None) -> tuple[Volume, LabelMap]:
    """Generate the phantom CT (HU, float32) and its ground-truth label map (uint16)."""
    cfg = cfg or PhantomConfig()
    truth = phantom_truth(cfg)
    size, origin, sp = grid_geometry(cfg)
    table = LabelTable.default()
    canvas = _Canvas(size, origin, sp)
    for name, kind, params in truth["shapes"]:
        _draw(canvas, table.id_of(name), kind, params)
    lab = canvas.lab

    lut = np.full(int(lab.max()) + 1, AIR_HU, np.float32)
    for name in truth["draw_order"]:
        lut[table.id_of(name)] = hu_of(name, cfg.contrast)
    hu = lut[lab]
    bone = np.isin(lab, [table.id_of(n) for n in truth["vertebrae"]])
    core = ndimage.binary_erosion(bone, ndimage.generate_binary_structure(3, 1), border_value=1)
    hu[bone & ~core] = CORTEX_HU

    if cfg.blur_mm > 0:
        hu = ndimage.gaussian_filter(hu, cfg.blur_mm / sp, mode="nearest")
    rng = np.random.default_rng(cfg.seed)
    rng.uniform(-JITTER_MM, JITTER_MM, 3)          # the tumour jitter draw (see phantom_truth)
    if cfg.noise_hu > 0:
        hu = hu + rng.normal(0.0, cfg.noise_hu, hu.shape).astype(np.float32)
    hu = np.clip(hu, -1024.0, 3071.0).astype(np.float32)

    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((sp, sp, sp))
    img.SetOrigin(tuple(origin))
    img.SetDirection((1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    return Volume(img, "CT"), LabelMap.from_array(lab, img, table)
