"""Functional risk: remnant volume, and for the liver the future liver remnant (FLR).

FLR is given as % of the measured (non-tumorous) liver volume and, when height and weight are in
the plan, as % of the standardized total liver volume (Vauthey formula, BSA by Mosteller). The
minimum FLR depends on the liver's condition (a plan setting).
"""
from __future__ import annotations

import math

from .errors import ConfigError

#: Minimum FLR [% of standardized TLV] by liver condition.
FLR_MIN_PERCENT = {"normal": 20.0, "chemotherapy": 30.0, "cirrhosis": 40.0}
FLR_BORDERLINE_POINTS = 5.0   # within this many points above the minimum: a warning

SOURCES = {
    "tlv": "Vauthey JN, Abdalla EK, Doherty DA, et al. Body surface area and body weight predict total liver "
           "volume in Western adults. Liver Transpl 2002;8:233-240 (TLV [mL] = -794.41 + 1267.28 x BSA [m^2]).",
    "bsa": "Mosteller RD. Simplified calculation of body-surface area. N Engl J Med 1987;317:1098 "
           "(BSA [m^2] = sqrt(height [cm] x weight [kg] / 3600)).",
    "flr": "Minimum FLR 20 % (normal liver), 30 % (after extensive chemotherapy), 40 % (cirrhosis): Adams RB, "
           "Aloia TA, Loyer E, et al. Selection for hepatic resection of colorectal liver metastases: expert "
           "consensus statement. HPB (Oxford) 2013;15:91-103; Kishi Y et al., Ann Surg 2009;250:540-548 "
           "(20 %); Shindoh J et al., J Am Coll Surg 2013;217:126-133 (30 %); Kubota K et al., Hepatology "
           "1997;26:1176-1181 (40 %).",
}


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    """Body surface area [m^2] (Mosteller)."""
    if not (height_cm > 0 and weight_kg > 0):
        raise ConfigError("risk.height_cm and risk.weight_kg must be positive")
    return math.sqrt(height_cm * weight_kg / 3600.0)


def vauthey_tlv_ml(bsa_m2: float) -> float:
    """Standardized total liver volume [mL] from BSA [m^2] (Vauthey 2002)."""
    return -794.41 + 1267.28 * bsa_m2


def flr_minimum(condition: str) -> float:
    try:
        return FLR_MIN_PERCENT[condition]
    except KeyError:
        raise ConfigError(f"risk.liver_condition '{condition}' must be one of "
                          f"{', '.join(FLR_MIN_PERCENT)}") from None


def functional_metrics(organ: str, remnant_ml: float, total_ml: float, *, liver_condition: str = "normal",
                       height_cm: float | None = None, weight_kg: float | None = None) -> dict:
    """Remnant volume [mL] and % of the measured total; for the liver the FLR against its minimum."""
    out = {"remnant_ml": remnant_ml, "total_ml": total_ml,
           "remnant_percent": 100.0 * remnant_ml / total_ml if total_ml > 0 else 0.0}
    if organ != "liver":
        return out
    out["liver_condition"] = liver_condition
    out["flr_min_percent"] = flr_minimum(liver_condition)
    out["flr_percent_measured"] = out["remnant_percent"]
    if height_cm is not None and weight_kg is not None:
        bsa = mosteller_bsa(float(height_cm), float(weight_kg))
        tlv = vauthey_tlv_ml(bsa)
        out.update(bsa_m2=bsa, standardized_tlv_ml=tlv, flr_percent_standardized=100.0 * remnant_ml / tlv)
    out["sources"] = dict(SOURCES)
    return out
