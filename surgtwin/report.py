"""Render a RiskReport: off-screen PyVista images and one self-contained HTML page.

Works from files only (``report.json``, ``sim/*.vtu``, ``mesh/surfaces/*.vtp``), so
``surgtwin report RUN`` can re-render any run folder.
"""
from __future__ import annotations

import base64
import html
import math
import os
import shutil
from pathlib import Path

import numpy as np

from .config import ReportConfig
from .errors import InputError
from .fileio import write_text
from .risk import RiskReport

RISK_COLORS = {"high": "#d62728", "moderate": "#ff7f0e", "low": "#2ca02c"}


def _scene_files(run: Path) -> dict:
    sim = run / "sim"
    need = {"postop": sim / "postop.vtu", "removed": sim / "removed.vtu", "cut": sim / "cut_surface.vtp"}
    missing = [p.name for p in need.values() if not p.is_file()]
    if missing:
        raise InputError(f"{run}: not a simulated run folder (missing sim/{missing[0]})")
    surf_dir = run / "mesh" / "surfaces"
    need["surfaces"] = {p.stem: p for p in sorted(surf_dir.glob("*.vtp"))} if surf_dir.is_dir() else {}
    return need


def build_scene(plotter, run: Path, overlay: str = "shift_mm", *, report: RiskReport | None = None):
    """Add the rehearsal to a pyvista plotter: remnant coloured by ``overlay``, removed part, vessels."""
    import pyvista as pv

    f = _scene_files(run)
    post = pv.read(f["postop"])
    if "alive" in post.cell_data:
        post = post.extract_cells(np.flatnonzero(post.cell_data["alive"]))
    removed = pv.read(f["removed"])
    cut = pv.read(f["cut"])
    shell = post.extract_surface(algorithm="dataset_surface")
    risk_vtu = run / "sim" / "risk.vtu"
    if overlay == "anatomy":  # pre-op: the whole organ at its pre-op equilibrium, structures inside
        pre = pv.read(run / "sim" / "preop.vtu")
        plotter.add_mesh(pre.extract_surface(algorithm="dataset_surface"), color="#d9a38c", opacity=0.3,
                         label="organ (pre-op)")
    elif overlay == "von_mises_kpa" and risk_vtu.is_file():
        rv = pv.read(risk_vtu).extract_surface(algorithm="dataset_surface")
        top = max(float(np.percentile(rv.cell_data["von_mises_kpa"], 99)), 1e-6)
        plotter.add_mesh(rv, scalars="von_mises_kpa", cmap="plasma", preference="cell", clim=[0.0, top],
                         scalar_bar_args={"title": "von Mises stress [kPa] (clipped at p99)", "fmt": "%.2f"})
        over = pv.read(risk_vtu)
        over = over.extract_cells(np.flatnonzero(over.cell_data["over_threshold"])) if "over_threshold" in over.cell_data else None
        if over is not None and over.n_cells:
            plotter.add_mesh(over, color="#d62728", label="over damage threshold")
    elif overlay == "max_principal_strain":
        plotter.add_mesh(shell, scalars="max_principal_strain", cmap="inferno", preference="cell",
                         clim=[0.0, max(float(shell.cell_data["max_principal_strain"].max()), 1e-6)],
                         scalar_bar_args={"title": "max principal strain", "fmt": "%.2f"})
    elif overlay == "risk":
        plotter.add_mesh(shell, color="#d9a38c", opacity=0.25)
        plotter.add_mesh(cut, color="#f2c14e", opacity=0.9, label="resection surface")
    else:
        plotter.add_mesh(shell, scalars="shift_mm", cmap="viridis", scalar_bar_args={"title": "shift after resection [mm]", "fmt": "%.1f"})
    if removed.n_cells and overlay != "anatomy":
        plotter.add_mesh(removed.extract_surface(algorithm="dataset_surface"), color="#999999", opacity=0.15)
    for name, path in f["surfaces"].items():
        if name == "liver":
            continue
        mesh = pv.read(path)
        color = {"liver_tumor": "#f5e342", "hepatic_vein": "#2878e6", "portal_vein_and_splenic_vein": "#7b2fbe",
                 "inferior_vena_cava": "#1f4e9c", "aorta": "#d62728"}.get(name, "#bbbbbb")
        plotter.add_mesh(mesh, color=color, opacity=0.9 if overlay in ("risk", "anatomy") else 0.5,
                         label=name.replace("_", " ") if overlay in ("risk", "anatomy") else None)
    if overlay == "risk" and report is not None:
        _add_closest_approaches(plotter, report)
        for v in report.vessels:
            plotter.add_mesh(pv.Sphere(radius=max(4.0, v["diameter_mm"] / 2 + 2.0), center=v["centroid_mm"]),
                             color=RISK_COLORS[v["risk"]])
        if report.vessels:
            pts = np.array([v["centroid_mm"] for v in report.vessels])
            plotter.add_point_labels(pts, [f"{v['diameter_mm']:.1f} mm" for v in report.vessels], font_size=14,
                                     point_size=1, shape_opacity=0.6, always_visible=True)
    if overlay in ("risk", "anatomy", "von_mises_kpa"):
        try:
            plotter.add_legend(bcolor="white", face="rectangle", size=(0.28, 0.28), loc="upper right")
        except ValueError:  # nothing labelled in this scene (e.g. no tissue over threshold)
            pass
    plotter.camera_position = "xz"
    plotter.camera.azimuth = 0
    plotter.camera.up = (0, 0, 1)
    plotter.camera.position = tuple(np.array(shell.center) + np.array([0.0, -3.0 * shell.length, 0.0]))
    plotter.camera.focal_point = shell.center
    plotter.reset_camera()
    plotter.camera.zoom(1.35)
    plotter.add_text("anterior view (patient right on the left)", font_size=9, position="lower_left")
    return shell


def _add_closest_approaches(plotter, report: RiskReport, per_source: int = 3):
    """Tool paths as tubes; the closest structures of each source as a line with both end points."""
    import pyvista as pv

    for tp in report.tool_paths:
        plotter.add_mesh(pv.lines_from_points(np.asarray(tp["points_mm"], float)).tube(radius=1.5),
                         color="#222222", label=f"tool path {tp['name']}")
    shown, pts, texts = {}, [], []
    inside = {report.organ, report.target} | {v["structure"] for v in report.vessels}  # shown as crossings
    for d in report.distances:
        if d["structure"] in inside or shown.get(d["source"], 0) >= per_source:
            continue
        if d["source"] != "resection surface" and d["category"] == "muscle":  # the abdominal wall
            continue
        shown[d["source"]] = shown.get(d["source"], 0) + 1
        a, b = np.asarray(d["at_mm"], float), np.asarray(d["structure_mm"], float)
        if np.linalg.norm(a - b) > 1e-6:
            plotter.add_mesh(pv.Line(a, b), color="#e377c2", line_width=4)
        plotter.add_mesh(pv.Sphere(radius=2.5, center=b), color="#e377c2")
        pts.append(b)
        texts.append(f"{d['structure'].replace('_', ' ')} {d['distance_mm']:.1f} mm")
    if pts:
        plotter.add_point_labels(np.array(pts), texts, font_size=11, point_size=1, shape_opacity=0.5,
                                 always_visible=True, text_color="#7a1f5c")
        plotter.add_mesh(pv.Sphere(radius=0.01, center=pts[0]), color="#e377c2", label="closest approach")
    for c, name in (("#d62728", "vessel cut, high risk (>= 5 mm)"), ("#ff7f0e", "vessel cut, moderate (>= 3 mm)")):
        if any(RISK_COLORS[v["risk"]] == c for v in report.vessels):
            plotter.add_mesh(pv.Sphere(radius=0.01, center=report.vessels[0]["centroid_mm"]), color=c, label=name)


def headless_rendering():
    """Without a display, ask VTK for an EGL window directly (no failed X connection attempt)."""
    if os.name == "posix" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def render_images(run: Path, cfg: ReportConfig, report: RiskReport | None = None) -> dict:
    """Write images/{deformation,risk,strain}.png; returns name -> relative path."""
    headless_rendering()
    import pyvista as pv

    _scene_files(run)  # fail before anything is written
    out = {}
    stage = run / f".images-{os.getpid()}"
    stage.mkdir(exist_ok=True)
    for overlay, name, title in (("anatomy", "anatomy", "Pre-operative anatomy"),
                                 ("shift_mm", "deformation", "Deformed remnant: shift after resection"),
                                 ("risk", "risk", "Resection surface, transected vessels, closest approaches"),
                                 ("max_principal_strain", "strain", "Peak strain in the remnant"),
                                 ("von_mises_kpa", "stress", "Von Mises stress; tissue over damage threshold")):
        if overlay == "von_mises_kpa" and not (run / "sim" / "risk.vtu").is_file():
            continue
        pl = pv.Plotter(off_screen=True, window_size=list(cfg.image_size))
        pl.set_background("white")
        build_scene(pl, run, overlay, report=report)
        pl.add_text(title, font_size=12, color="black")
        pl.screenshot(str(stage / f"{name}.png"))
        pl.close()
        out[name] = f"images/{name}.png"
    if (run / "images").exists():
        shutil.rmtree(run / "images")
    os.replace(stage, run / "images")  # all images appear together, or the old ones stay
    return out


def render_report(run: str | Path, cfg: ReportConfig | None = None) -> Path:
    """(Re)render images and report.html for a run folder holding report.json and sim/."""
    run = Path(run)
    cfg = cfg or ReportConfig()
    report = RiskReport.load(run / "report.json")
    _scene_files(run)
    if cfg.images:
        report.images = render_images(run, cfg, report)
        report.save(run / "report.json")
    return write_text(run / "report.html", to_html(report, run, plots=cfg.plots))


def _img_tag(run: Path, rel: str, alt: str) -> str:
    data = base64.b64encode((run / rel).read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _residual_svg(history: list, w: int = 360, h: int = 140) -> str:
    vals = [math.log10(max(v, 1e-300)) for v in history if v > 0]
    if len(vals) < 2:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    pts = " ".join(f"{10 + i * (w - 20) / (len(vals) - 1):.1f},{10 + (hi - v) * (h - 20) / span:.1f}"
                   for i, v in enumerate(vals))
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="residual per Newton iteration (log scale)">'
            f'<rect width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
            f'<text x="12" y="{h - 4}" font-size="10">Newton iterations (all load steps) &#8594;  '
            f'log10 residual {hi:.1f} &#8594; {lo:.1f}</text></svg>')


def validate_report(data: dict) -> list[str]:
    """Schema errors of a report.json dict against ``assets/report.schema.json`` (empty: valid)."""
    import json

    import jsonschema

    from .resources import assets_dir

    schema = json.loads((assets_dir() / "report.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]


def _status(s: str) -> str:
    from .report_plots import STATUS_COLORS

    return f"<td style='color:#fff;background:{STATUS_COLORS.get(s, '#999')};text-align:center'><b>{html.escape(s)}</b></td>"


def _num(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v) if isinstance(v, float) else str(v)


def _sections(report: RiskReport, run: Path, *, plots: bool = True) -> str:
    """Summary table, oncological, functional, structures and mechanical sections (schema 2)."""
    from .report_plots import distances_plot, distribution_plot, steps_plot

    esc = html.escape
    if not report.summary:
        return ""
    rows = "".join(f"<tr><td>{esc(r['category'])}</td><td>{esc(r['risk'])}</td><td>{_num(r['value'])} {esc(r['unit'])}</td>"
                   f"<td>{_num(r['threshold'])}</td>{_status(r['status'])}<td>{esc(r['explanation'])}</td></tr>"
                   for r in report.summary)
    out = [f"<h2>Summary</h2><table><tr><th>category</th><th>risk</th><th>value</th><th>threshold</th><th>status</th>"
           f"<th>explanation</th></tr>{rows}</table>"]
    o, f, mech = report.oncological, report.functional, report.mechanical
    out.append(f"<h2>Oncological</h2><table><tr><th>planned margin</th><td>{o['margin_planned_mm']:.1f} mm</td></tr>"
               f"<tr><th>achieved margin (closest tumour-to-cut distance)</th><td>{o['margin_achieved_mm']:.2f} mm</td></tr>"
               f"<tr><th>tumour surface closer than the planned margin</th><td>{100 * o['tumour_surface_under_margin_share']:.1f} %</td></tr>"
               f"<tr><th>R1 risk below</th><td>{o['r1_margin_mm']:.1f} mm</td></tr></table>")
    frows = [("remnant parenchyma", f"{f['remnant_ml']:.0f} mL of {f['total_ml']:.0f} mL ({f['remnant_percent']:.1f} %)")]
    if "flr_min_percent" in f:
        frows.append(("liver condition (plan setting)", f"{f['liver_condition']}: minimum FLR {f['flr_min_percent']:.0f} %"))
        frows.append(("FLR, % of the measured liver", f"{f['flr_percent_measured']:.1f} %"))
        if "flr_percent_standardized" in f:
            frows.append(("body surface area (Mosteller)", f"{f['bsa_m2']:.2f} m²"))
            frows.append(("standardized total liver volume (Vauthey)", f"{f['standardized_tlv_ml']:.0f} mL"))
            frows.append(("FLR, % of the standardized liver volume", f"{f['flr_percent_standardized']:.1f} %"))
        else:
            frows.append(("FLR, % of the standardized liver volume", "not computed: give risk.height_cm and risk.weight_kg"))
    srcs = "".join(f"<li class=src>{esc(v)}</li>" for v in f.get("sources", {}).values())
    out.append("<h2>Functional</h2><table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in frows)
               + f"</table><ul>{srcs}</ul>")
    img = steps_plot(report) if plots else ""
    if img:
        out.append(f'<figure><img alt="remnant and margin along the procedure" src="data:image/png;base64,{img}">'
               "<figcaption>Remnant and margin along the procedure steps</figcaption></figure>")
    warn = next((r["threshold"] for r in report.summary if r["category"] == "structures"), 5.0) or 5.0
    drows, seen = [], set()
    for d in report.distances:
        if d["structure"] == report.organ or (d["source"], d["structure"]) in seen:
            continue
        seen.add((d["source"], d["structure"]))
        colour = "#d62728" if d["distance_mm"] <= 0 else "#ff7f0e" if d["distance_mm"] < warn else "#222"
        drows.append(f"<tr><td>{esc(d['source'])}</td><td>{esc(d['structure'])}</td><td>{esc(d['category'])}</td>"
                     f"<td style='color:{colour}'><b>{d['distance_mm']:.1f}</b></td>"
                     f"<td>{esc(', '.join(f'{c:.0f}' for c in d['at_mm']))}</td>"
                     f"<td>{esc(', '.join(f'{c:.0f}' for c in d['structure_mm']))}</td></tr>")
    img = distances_plot(report, warn) if plots else ""
    out.append("<h2>Critical structures</h2><p>Minimum distance from the resection surface and each tool path to every "
               "named structure of the label map (0 = crossed), with where it occurs (LPS mm).</p>"
               + (f'<figure><img alt="closest approaches" src="data:image/png;base64,{img}"></figure>' if img else "")
               + "<details><summary>all distances</summary><table><tr><th>source</th><th>structure</th><th>category</th>"
               "<th>distance [mm]</th><th>on the source</th><th>on the structure</th></tr>" + "".join(drows)
               + "</table></details>")
    mrows = "".join(
        f"<tr><td>{esc(k)}</td><td>{e['volume_ml']:.1f}</td><td>{e['peak_von_mises_kpa']:.2f}</td><td>{e['peak_strain']:.3f}</td>"
        f"<td>{_num(e.get('strain_threshold_green'), '{:.3f}')}</td><td>{_num(e.get('over_threshold_ml'), '{:.2f}')}</td>"
        f"<td class=src>{esc(e.get('source', 'no threshold in the tissue library'))}</td></tr>"
        for k, e in mech.get("regions", {}).items())
    img = distribution_plot(run, report) if plots else ""
    where = mech.get("over_threshold_centroid_mm")
    out.append(f"<h2>Mechanical</h2><p>Tissue over its damage threshold: <b>{mech['over_threshold_ml']:.2f} mL</b>"
               f"{' around (' + ', '.join(f'{c:.0f}' for c in where) + ') mm' if where else ''}; peak von Mises stress "
               f"{mech['peak_von_mises_kpa']:.2f} kPa (pre-op {mech.get('preop', {}).get('peak_von_mises_kpa', 0):.2f} kPa).</p>"
               "<table><tr><th>region</th><th>volume [mL]</th><th>peak von Mises [kPa]</th><th>peak strain</th>"
               f"<th>strain threshold (Green)</th><th>over threshold [mL]</th><th>source</th></tr>{mrows}</table>"
               + (f'<figure><img alt="strain and stress distributions" src="data:image/png;base64,{img}"></figure>' if img else ""))
    return "\n".join(out)


def to_html(report: RiskReport, run: Path, *, plots: bool = True) -> str:
    m = report.metrics
    rows = [
        ("Organ volume (mesh)", f"{m['organ_volume_ml']:.1f} mL"),
        ("Parenchyma volume", f"{m['parenchyma_volume_ml']:.1f} mL"),
        ("Removed volume", f"{m['removed_volume_ml']:.1f} mL"),
        ("Remnant parenchyma", f"{m['remnant_parenchyma_ml']:.1f} mL ({m['remnant_percent']:.1f} %)"),
        ("Margin planned / achieved", f"{m['margin_planned_mm']:.1f} mm / {m['margin_achieved_mm']:.1f} mm"),
        ("Resection surface area", f"{m['cut_surface_area_mm2'] / 100:.1f} cm²"),
        ("Max / mean shift of the remnant", f"{m['max_shift_mm']:.2f} mm / {m['mean_shift_mm']:.2f} mm"),
        ("Peak strain (99th percentile)", f"{m['peak_strain']:.3f} ({m['strain_p99']:.3f})"),
        ("Peak von Mises stress", f"{m['peak_von_mises_kpa']:.2f} kPa" if "peak_von_mises_kpa" in m else "–"),
        ("Inverted elements", str(m["inverted_elements"])),
    ]
    esc = html.escape
    metric_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    vessel_rows = "".join(
        f"<tr><td>{esc(v['structure'])}</td><td>{v['diameter_mm']:.1f}</td><td>{v['area_mm2']:.1f}</td>"
        f"<td style='color:{RISK_COLORS[v['risk']]}'><b>{esc(v['risk'])}</b></td>"
        f"<td>{esc(', '.join(f'{c:.0f}' for c in v['centroid_mm']))}</td></tr>" for v in report.vessels
    ) or "<tr><td colspan=5>no vessel crosses the resection surface</td></tr>"
    flags = "".join(f"<li>{esc(f)}</li>" for f in report.flags) or "<li>none</li>"
    mats = "".join(f"<tr><td>{esc(k)}</td><td>{v['youngs_kpa']}</td><td>{v['poisson']}</td><td>{v['density_kg_m3']}</td>"
                   f"<td class=src>{esc(v.get('source', ''))}</td></tr>" for k, v in report.model.get("materials", {}).items())
    s = report.solver
    solver_rows = "".join(
        f"<tr><td>{name}</td><td>{'yes' if d['converged'] else 'NO'}</td><td>{d['newton_iterations']}</td>"
        f"<td>{d['cg_iterations']}</td><td>{d['relative_residual']:.2e}</td><td>{s['timings_s'].get(name + '_solve', 0):.1f}</td></tr>"
        for name, d in (("preop", s["preop"]), ("postop", s["postop"])))
    images = "".join(_img_tag(run, rel, name) for name, rel in report.images.items() if (run / rel).is_file())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>surgtwin risk report – {esc(report.case)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ddd;padding:4px 10px;text-align:left}}
th{{background:#f4f4f4}}figure{{display:inline-block;margin:6px}}img{{max-width:520px;border:1px solid #ccc}}
.flags li{{color:#b22222}}.src{{font-size:80%;color:#555}}</style></head><body>
<h1>Resection rehearsal: {esc(report.organ)} – {esc(report.target)}</h1>
<p>Case <b>{esc(report.case)}</b> (report schema {esc(report.schema_version)}). Model: {report.model.get('tets', 0)} tetrahedra, {report.model.get('nodes', 0)} nodes,
{report.model.get('fixed_nodes', 0)} fixed, stable Neo-Hookean, gravity {report.model.get('gravity_m_s2')} m/s² (LPS).</p>
<h2>Flags</h2><ul class="flags">{flags}</ul>
{_sections(report, run, plots=plots)}
<h2>Resection</h2><table>{metric_rows}</table>
<h2>Vessels crossing the resection surface</h2>
<table><tr><th>structure</th><th>diameter [mm]</th><th>area [mm²]</th><th>risk</th><th>position (LPS mm)</th></tr>{vessel_rows}</table>
<h2>Images</h2>{images or '<p>(images not rendered)</p>'}
<h2>Solver</h2><table><tr><th>solve</th><th>converged</th><th>Newton</th><th>CG</th><th>relative residual</th><th>time [s]</th></tr>
{solver_rows}</table>{_residual_svg(s['preop'].get('residual_history', []))}
<h2>Materials</h2><table><tr><th>tissue</th><th>E [kPa]</th><th>ν</th><th>ρ [kg/m³]</th><th>source</th></tr>{mats}</table>
<p class="src">Generated by surgtwin. Research software: not a medical device; plans need clinical judgement.</p>
</body></html>
"""
