"""Mechanical risk: per-element von Mises stress and max principal strain against tissue-damage
thresholds from ``assets/tissues.json`` (``damage_thresholds``, each with its literature source).

Volumes in mL (rest configuration), positions in mm (deformed, post-operative), stress in kPa.
"""
from __future__ import annotations

import json

import numpy as np

from .resources import assets_dir


def damage_thresholds() -> dict:
    """Structure -> {strain_nominal, von_mises_kpa (optional), source} from assets/tissues.json."""
    return json.loads((assets_dir() / "tissues.json").read_text()).get("damage_thresholds", {})


def green_from_nominal(strain_nominal: float) -> float:
    """Green-Lagrange equivalent of a nominal (engineering) strain: ((1 + e)^2 - 1) / 2."""
    return 0.5 * ((1.0 + strain_nominal) ** 2 - 1.0)


def mechanical_risk(region_names: np.ndarray, alive: np.ndarray, rest_volume_ml: np.ndarray,
                    centroids_mm: np.ndarray, von_mises_pa: np.ndarray, green_strain: np.ndarray,
                    thresholds: dict | None = None) -> dict:
    """Peak stress/strain per region and the tissue over its damage threshold.

    region_names (m,) structure name per element; alive (m,) bool; rest_volume_ml (m,);
    centroids_mm (m, 3) element centroids where they are reported (post-op); von_mises_pa (m,);
    green_strain (m,) max principal Green-Lagrange strain. An element is over threshold when its
    strain exceeds the Green equivalent of ``strain_nominal`` or its von Mises stress exceeds
    ``von_mises_kpa`` (where the library gives one). Returns a dict with per-region entries, the total
    volume over threshold [mL] and its volume-weighted centroid [mm] (None when there is none).
    """
    thresholds = damage_thresholds() if thresholds is None else thresholds
    over = np.zeros(len(alive), bool)
    regions = {}
    for name in sorted(set(region_names[alive].tolist())):
        sel = alive & (region_names == name)
        t = thresholds.get(name)
        entry = {"elements": int(sel.sum()), "volume_ml": float(rest_volume_ml[sel].sum()),
                 "peak_von_mises_kpa": float(von_mises_pa[sel].max() / 1e3),
                 "peak_strain": float(green_strain[sel].max()), "assessed": t is not None}
        if t is not None:
            hit = np.zeros(len(alive), bool)
            if "strain_nominal" in t:
                entry["strain_threshold_green"] = green_from_nominal(float(t["strain_nominal"]))
                entry["strain_threshold_nominal"] = float(t["strain_nominal"])
                hit |= sel & (green_strain > entry["strain_threshold_green"])
            if "von_mises_kpa" in t:
                entry["von_mises_threshold_kpa"] = float(t["von_mises_kpa"])
                hit |= sel & (von_mises_pa > 1e3 * float(t["von_mises_kpa"]))
            entry["over_threshold_ml"] = float(rest_volume_ml[hit].sum())
            entry["over_threshold_elements"] = int(hit.sum())
            entry["source"] = str(t.get("source", ""))
            over |= hit
        regions[name] = entry
    vol = float(rest_volume_ml[over].sum())
    centroid = (np.average(centroids_mm[over], axis=0, weights=rest_volume_ml[over]).round(1).tolist()
                if over.any() else None)
    live = alive & np.isfinite(von_mises_pa)
    return {"regions": regions, "over_threshold_ml": vol, "over_threshold_elements": int(over.sum()),
            "over_threshold_centroid_mm": centroid,
            "over_threshold_percent": 100.0 * vol / max(float(rest_volume_ml[alive].sum()), 1e-12),
            "peak_von_mises_kpa": float(von_mises_pa[live].max() / 1e3) if live.any() else 0.0,
            "von_mises_p99_kpa": float(np.percentile(von_mises_pa[live], 99) / 1e3) if live.any() else 0.0,
            "peak_von_mises_at_mm": centroids_mm[live][np.argmax(von_mises_pa[live])].round(1).tolist()
            if live.any() else None,
            "unassessed_regions": [n for n, e in regions.items() if not e["assessed"]],
            "over_threshold_mask": over}
