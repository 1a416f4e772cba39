"""Matplotlib figures of a RiskReport for report.html (PNG, base64-embedded; no display needed)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

STATUS_COLORS = {"ok": "#2ca02c", "warning": "#ff7f0e", "critical": "#d62728", "n/a": "#999999"}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def pyplot():
    """matplotlib.pyplot on the off-screen Agg backend (reports and QC pictures are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def steps_plot(report) -> str:
    """Remnant volume [%] and achieved vs planned margin [mm] along the procedure steps."""
    plt = pyplot()
    steps = report.steps
    x = [s["step"] for s in steps]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(x, [s["remnant_percent"] for s in steps], "o-", color="#1f77b4", label="remnant")
    f = report.functional
    if "flr_min_percent" in f:
        ax[0].axhline(f["flr_min_percent"], color="#d62728", ls="--", label=f"FLR minimum ({f['liver_condition']})")
    ax[0].set(xlabel="procedure step", ylabel="remnant parenchyma [%]", ylim=(0, 105), title="Remnant volume")
    ax[0].set_xticks(x, [s["label"] if s["step"] == 0 else str(s["step"]) for s in steps])
    ax[0].legend(fontsize=7)
    ms = [s for s in steps if s["margin_achieved_mm"] is not None]
    ax[1].plot([s["step"] for s in ms], [s["margin_achieved_mm"] for s in ms], "o-", label="achieved")
    ax[1].plot([s["step"] for s in ms], [s["margin_planned_mm"] for s in ms], "s--", label="planned")
    ax[1].axhline(report.oncological.get("r1_margin_mm", 1.0), color="#d62728", ls=":", label="R1 risk")
    ax[1].set(xlabel="procedure step", ylabel="margin [mm]", title="Resection margin")
    ax[1].set_xticks([s["step"] for s in ms])
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def distribution_plot(run: Path, report) -> str:
    """Distribution of max principal strain pre-op vs post-op and of post-op von Mises stress."""
    import pyvista as pv

    plt = pyplot()
    risk_vtu = run / "sim" / "risk.vtu"
    if not risk_vtu.is_file():
        return ""
    post = pv.read(risk_vtu)
    pre = pv.read(run / "sim" / "preop.vtu")
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].hist(pre.cell_data["max_principal_strain"], bins=50, alpha=0.6, label="pre-op", density=True)
    ax[0].hist(post.cell_data["max_principal_strain"], bins=50, alpha=0.6, label="post-op (remnant)", density=True)
    thr = [e["strain_threshold_green"] for e in report.mechanical.get("regions", {}).values() if "strain_threshold_green" in e]
    if thr:
        ax[0].axvline(min(thr), color="#d62728", ls="--", label="damage threshold")
    ax[0].set(xlabel="max principal Green strain", ylabel="density", title="Strain per element")
    ax[0].legend(fontsize=7)
    ax[1].hist(post.cell_data["von_mises_kpa"], bins=50, color="#9467bd")
    ax[1].set(xlabel="von Mises stress [kPa]", ylabel="elements", title="Stress after the resection", yscale="log")
    fig.tight_layout()
    return _png(fig)


def distances_plot(report, warning_mm: float, n: int = 12) -> str:
    """Closest approach of each source to its nearest structures (horizontal bars)."""
    plt = pyplot()
    rows = [d for d in report.distances if d["structure"] != report.organ][:200]
    if not rows:
        return ""
    best = {}
    for d in rows:
        key = (d["source"], d["structure"])
        if key not in best:
            best[key] = d
    items = sorted(best.values(), key=lambda d: d["distance_mm"])[:n]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(items) + 1.2))
    y = np.arange(len(items))
    colors = ["#d62728" if d["distance_mm"] <= 0 else "#ff7f0e" if d["distance_mm"] < warning_mm else "#2ca02c"
              for d in items]
    ax.barh(y, [max(d["distance_mm"], 0.2) for d in items], color=colors)
    ax.set_yticks(y, [f"{d['source']} -> {d['structure'].replace('_', ' ')}" for d in items], fontsize=7)
    ax.axvline(warning_mm, color="#ff7f0e", ls="--", label=f"warning {warning_mm:g} mm")
    ax.invert_yaxis()
    ax.set(xlabel="minimum distance [mm]", title="Closest approach (0 = crossed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
