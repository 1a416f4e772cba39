"""One summary table per plan: each risk with its value, threshold, status and a one-line explanation.

Status is ``ok``, ``warning``, ``critical`` or ``n/a`` (not assessable with the inputs given).
"""
from __future__ import annotations

STATUSES = ("ok", "warning", "critical", "n/a")
#: Resolution of the margin measurement (surfaces sampled every 0.5-1 mm): a margin within this of the plan
#: meets it.
MARGIN_TOLERANCE_MM = 0.25


def _row(category, risk, value, unit, threshold, status, explanation):
    assert status in STATUSES
    return {"category": category, "risk": risk, "value": value, "unit": unit, "threshold": threshold,
            "status": status, "explanation": explanation}


def _margin_rows(o: dict) -> list[dict]:
    rows = []
    m, planned, r1 = o["margin_achieved_mm"], o["margin_planned_mm"], o["r1_margin_mm"]
    status = "critical" if m < r1 else "warning" if m < planned - MARGIN_TOLERANCE_MM else "ok"
    rows.append(_row("oncological", "resection margin", round(m, 2), "mm", planned, status,
                     f"margin {m:.1f} mm under {r1:.0f} mm: R1 risk" if status == "critical" else
                     f"margin {m:.1f} mm is below the planned {planned:.1f} mm" if status == "warning" else
                     f"margin {m:.1f} mm meets the planned {planned:.1f} mm (within {MARGIN_TOLERANCE_MM} mm)"))
    share = 100.0 * o["tumour_surface_under_margin_share"]
    rows.append(_row("oncological", "tumour surface closer than the planned margin", round(share, 2), "%", 0.0,
                     "warning" if share > 0 else "ok",
                     f"{share:.1f} % of the tumour surface lies within {planned - MARGIN_TOLERANCE_MM:.2f} mm of the "
                     f"cut (planned {planned:.1f} mm less the {MARGIN_TOLERANCE_MM} mm measurement resolution)"))
    return rows


def summary_table(*, oncological: dict, functional: dict, vessels: list, distances: list, mechanical: dict,
                  metrics: dict, organ: str, remnant_min_percent: float, structure_warning_mm: float,
                  organ_structures=()) -> list[dict]:
    rows = []
    o = oncological
    if o.get("mode") == "territory":
        rows.append(_row("oncological", "resection margin", None, "mm", None, "n/a",
                         f"a vascular territory resection (the branch of {o.get('target')} divided at "
                         f"{o.get('at_mm')} mm): no tumour margin applies"))
    else:
        rows += _margin_rows(o)

    f = functional
    if organ == "liver":
        lo = f["flr_min_percent"]
        for key, label, basis in (("flr_percent_measured", "future liver remnant (measured liver)", "measured liver volume"),
                                  ("flr_percent_standardized", "future liver remnant (standardized TLV)",
                                   "standardized total liver volume (Vauthey)")):
            v = f.get(key)
            if v is None:
                rows.append(_row("functional", label, None, "%", lo, "n/a",
                                 "needs risk.height_cm and risk.weight_kg (BSA -> standardized liver volume)"))
                continue
            status = "critical" if v < lo else "warning" if v < lo + 5.0 else "ok"
            rows.append(_row("functional", label, round(v, 2), "%", lo, status,
                             f"FLR {v:.1f} % of the {basis}; minimum {lo:.0f} % for a {f['liver_condition']} liver"))
    else:
        v = f["remnant_percent"]
        rows.append(_row("functional", "remnant volume", round(v, 2), "%", remnant_min_percent,
                         "critical" if v < remnant_min_percent else "ok",
                         f"remnant {f['remnant_ml']:.0f} mL, {v:.1f} % of the organ"))

    worst = max(vessels, key=lambda v: v["diameter_mm"], default=None)
    if worst is None:
        rows.append(_row("vessels", "vessels transected", 0, "count", 0, "ok", "no vessel crosses the resection surface"))
    else:
        status = {"high": "critical", "moderate": "warning", "low": "ok"}[worst["risk"]]
        rows.append(_row("vessels", "largest transected vessel", round(worst["diameter_mm"], 2), "mm", 3.0, status,
                         f"{len(vessels)} crossing(s); {worst['structure']} cut at {worst['diameter_mm']:.1f} mm "
                         f"diameter (>= 5 mm high bleeding risk, >= 3 mm moderate)"))
    by_source = {}
    for d in distances:
        if d["structure"] in organ_structures:  # inside the organ: covered by margin and vessel rows
            continue
        if d["source"] != "resection surface" and d["category"] == "muscle":
            continue  # a percutaneous tool path goes through the abdominal wall by design
        if d["source"] not in by_source or d["distance_mm"] < by_source[d["source"]]["distance_mm"]:
            by_source[d["source"]] = d
    for source, d in by_source.items():
        v = d["distance_mm"]
        crossed = d.get("crossed", v <= 0.0)
        status = "critical" if crossed else "warning" if v < structure_warning_mm else "ok"
        note = (f": crossed, {d.get('penetration_mm', 0.0):.1f} mm deep" if crossed else
                ": touched, within a voxel of the label map" if v <= 0.0 else "")
        rows.append(_row("structures", f"closest structure to the {source}", round(v, 2), "mm", structure_warning_mm,
                         status, f"{d['structure']} at {v:.1f} mm (at {_fmt(d['at_mm'])}){note}"))

    mech = mechanical
    vol, pct = mech["over_threshold_ml"], mech["over_threshold_percent"]
    assessed = [n for n, e in mech["regions"].items() if e["assessed"]]
    if assessed:
        status = "critical" if pct > 1.0 else "warning" if vol > 0 else "ok"
        where = f" around {_fmt(mech['over_threshold_centroid_mm'])}" if mech["over_threshold_centroid_mm"] else ""
        rows.append(_row("mechanical", "tissue over damage threshold", round(vol, 3), "mL", 0.0, status,
                         f"{vol:.2f} mL ({pct:.2f} % of the remnant) strained past its damage threshold{where}"))
    else:
        rows.append(_row("mechanical", "tissue over damage threshold", None, "mL", None, "n/a",
                         "no damage threshold in the tissue library for these structures"))
    rows.append(_row("mechanical", "peak von Mises stress", round(mech["peak_von_mises_kpa"], 3), "kPa", None, "n/a",
                     f"highest element stress after the resection at {_fmt(mech['peak_von_mises_at_mm'])}"
                     " (no stress threshold in the library)"))
    inv = metrics.get("inverted_elements", 0)
    rows.append(_row("model", "inverted elements", inv, "count", 0, "critical" if inv else "ok",
                     "the remnant solution has inverted elements: results unreliable" if inv else
                     "no element inverted"))
    return rows


def _fmt(p) -> str:
    return "(" + ", ".join(f"{c:.0f}" for c in p) + ") mm" if p is not None else "-"
