"""``surgtwin batch``: many cases x plan variants as one Hydra multirun, one summary across runs.

    surgtwin batch CASES_DIR -o OUT 'procedure.steps.0.margin_mm=5,10,15' [--jobs 2] [--launcher local|slurm]

``CASES_DIR`` holds one sub-folder per case: a scan (``dicom/`` folder or a CT/MR file: NIfTI, NRRD,
MHA) with an optional label map (``labels.nii.gz`` / ``*labels*`` / ``*seg*``, ``labels.json`` beside
it) and an optional ``case.yaml`` of config values for that case (lesions, risk.height_cm, ...). A
folder holding only ``case.yaml`` is a phantom case (e.g. ``case: {phantom: {seed: 3}}``).

The sweep is a real Hydra multirun (``python -m surgtwin.batch --multirun``) over ``+batch.case`` and
the user's overrides, launched by the joblib launcher locally or by submitit on SLURM
(``configs/hydra/launcher/``). Each job runs ``pipeline.plan`` into its own folder named after its
overrides and writes ``result.json``; a failing job records its error there and the batch goes on.
A job whose ``result.json`` says ``ok`` is skipped when the batch is run again. Afterwards
``summary.csv`` and ``summary.html`` gather every job.
"""
from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import yaml

from .errors import ConfigError, InputError
from .fileio import write_json, write_text

log = logging.getLogger("surgtwin")

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
RESULT = "result.json"
COLUMNS = ["case", "variant", "status", "error", "duration_s", "remnant_percent", "flr_percent_standardized",
           "margin_planned_mm", "margin_achieved_mm", "tumour_surface_under_margin_percent", "vessels_crossing",
           "largest_vessel_mm", "closest_structure", "closest_structure_mm", "peak_strain", "peak_von_mises_kpa",
           "over_threshold_ml", "max_shift_mm", "critical", "warnings", "run"]


def _is_image(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)


def _is_labels(p: Path) -> bool:
    n = p.name.lower()
    return "label" in n or "seg" in n


def discover_cases(folder: str | Path) -> dict:
    """Case name -> {image, labels, config} for every sub-folder of ``folder`` (sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of cases")
    cases = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(sub.iterdir())
        labels = [p for p in files if _is_image(p) and _is_labels(p)]
        images = [p for p in files if _is_image(p) and not _is_labels(p)]
        if (sub / "dicom").is_dir():
            images = [sub / "dicom"] + images
        elif not images and any(p.is_file() and p.suffix.lower() in ("", ".dcm") for p in files):
            images = [sub]  # the folder itself is a DICOM series
        config = {}
        if (sub / "case.yaml").is_file():
            try:
                config = yaml.safe_load((sub / "case.yaml").read_text()) or {}
            except yaml.YAMLError as exc:
                config = {"_error": f"case.yaml: {str(exc).splitlines()[0]}"}
        if not images and not config:
            continue  # nothing that makes a case
        cases[sub.name] = {"image": str(images[0].resolve()) if images else None,
                           "labels": str(labels[0].resolve()) if labels else None, "config": config}
    if not cases:
        raise InputError(f"{folder}: no case folders (each needs a scan, or a case.yaml for a phantom)")
    return cases


def _first_values(overrides):
    """The first value of each sweep (``k=a,b,c`` -> ``k=a``) to check the overrides up front."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key.startswith("hydra") or key.startswith("+batch"):
            continue
        if "," in value and not any(c in value for c in "[]{}()'\""):
            value = value.split(",")[0]
        out.append(f"{key}={value}")
    return out


def run_batch(cases_dir: str | Path, out: str | Path, overrides=(), *, jobs: int = 2, launcher: str = "local",
              timeout_s: float | None = None) -> Path:
    """Run every case x variant with Hydra multirun, then write ``summary.csv`` / ``summary.html``.

    Returns the summary.csv path. Failing jobs are recorded, not raised."""
    from .compose import compose_run_config
    from .resources import configs_dir

    cases = discover_cases(cases_dir)
    overrides = list(overrides)
    compose_run_config(_first_values(overrides))  # a typo fails now, not in every job
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = ",".join(cases)
    cmd = [sys.executable, "-m", "surgtwin.batch", "--multirun", f"--config-path={configs_dir()}",
           "--config-name=config", f"hydra/launcher={launcher}", f"hydra.sweep.dir={out / 'runs'}",
           "hydra.sweep.subdir=${hydra:job.override_dirname}",
           "hydra.job.config.override_dirname.kv_sep=-", "hydra.job.config.override_dirname.item_sep=__",
           "hydra.job.config.override_dirname.exclude_keys=[batch.cases_dir]",
           f"+batch.cases_dir={Path(cases_dir).resolve()}", f"+batch.case={names}", *overrides]
    if launcher == "local":
        cmd.append(f"hydra.launcher.n_jobs={int(jobs)}")
    log.info("batch: %d case(s): %s", len(cases), " ".join(cmd[2:]))
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    (out / "batch.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 and not any((out / "runs").glob(f"*/{RESULT}")):
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception"))]
        reason = errors[-1] if errors else lines[-1] if lines else f"hydra exited {proc.returncode}"
        if launcher == "slurm" and "submitit" in reason:
            reason += " (install the launcher: pip install 'surgtwin[cluster]')"
        raise ConfigError(f"batch did not start: {reason} (see {out / 'batch.log'})")
    log.info("batch: multirun finished in %.1f s", time.perf_counter() - t)
    return write_summary(out)


# ---------------------------------------------------------------- one job (inside the Hydra multirun)

def run_job(job_cfg, output_dir: Path) -> dict:
    """One case x variant: ``pipeline.plan`` into ``output_dir/run``; result.json records the outcome."""
    from omegaconf import OmegaConf, open_dict

    result_path = output_dir / RESULT
    if result_path.is_file():
        try:
            done = json.loads(result_path.read_text())
            if done.get("status") == "ok" and (output_dir / "run" / "report.json").is_file():
                return done  # finished in an earlier batch: skip
        except json.JSONDecodeError:
            pass
    with open_dict(job_cfg):
        batch = job_cfg.pop("batch")
    case_name = str(batch["case"])
    overrides = _job_overrides(output_dir)
    result = {"case": case_name, "variant": ", ".join(o for o in overrides if not o.startswith("+batch.")),
              "status": "failed", "error": None, "run": "run"}
    t = time.perf_counter()
    try:
        from .compose import config_yaml
        from .fileio import staged_dir
        from .pipeline import plan

        case = discover_cases(batch["cases_dir"])[case_name]
        if "_error" in case["config"]:
            raise ConfigError(case["config"]["_error"])
        merged = OmegaConf.merge(job_cfg, OmegaConf.create(case["config"]))
        for key in ("image", "labels"):
            if case[key] is not None:
                merged.case[key] = case[key]
        try:
            cfg = OmegaConf.to_object(merged)
        except Exception as exc:  # a bad case.yaml value
            raise ConfigError(f"case.yaml: {str(exc).splitlines()[0]}") from None
        with staged_dir(output_dir / "run") as stage:
            (stage / "config.yaml").write_text(config_yaml(cfg))
            handler = logging.FileHandler(stage / "surgtwin.log")
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            try:
                report = plan(cfg, stage)
            finally:
                log.removeHandler(handler)
                handler.close()
        result.update(status="ok", **report_row(report))
    except Exception as exc:  # recorded, never raised: the batch goes on
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result["error"] = f"{type(exc).__name__}: {msg}"
        (output_dir / "error.txt").write_text(traceback.format_exc())
    result["duration_s"] = round(time.perf_counter() - t, 2)
    write_json(result_path, result)
    return result


def _job_overrides(output_dir: Path) -> list[str]:
    path = output_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def report_row(report) -> dict:
    """The summary columns of one RiskReport."""
    m, o, f = report.metrics, report.oncological, report.functional
    near = [d for d in report.distances if d["source"] == "resection surface"
            and d["structure"] not in (report.organ, report.target)]
    rows = report.summary
    return {"remnant_percent": round(m["remnant_percent"], 2),
            "flr_percent_standardized": round(f["flr_percent_standardized"], 2) if "flr_percent_standardized" in f else None,
            "margin_planned_mm": m["margin_planned_mm"], "margin_achieved_mm": round(m["margin_achieved_mm"], 2),
            "tumour_surface_under_margin_percent": round(100 * o.get("tumour_surface_under_margin_share", 0.0), 2),
            "vessels_crossing": len(report.vessels),
            "largest_vessel_mm": round(max((v["diameter_mm"] for v in report.vessels), default=0.0), 2),
            "closest_structure": near[0]["structure"] if near else None,
            "closest_structure_mm": near[0]["distance_mm"] if near else None,
            "peak_strain": round(m["peak_strain"], 4), "peak_von_mises_kpa": round(m.get("peak_von_mises_kpa", 0.0), 3),
            "over_threshold_ml": round(report.mechanical.get("over_threshold_ml", 0.0), 3),
            "max_shift_mm": round(m["max_shift_mm"], 3),
            "critical": sum(r["status"] == "critical" for r in rows), "warnings": sum(r["status"] == "warning" for r in rows)}


# ---------------------------------------------------------------- summary across runs

def collect_results(out: Path) -> list[dict]:
    rows = []
    for path in sorted((Path(out) / "runs").glob(f"*/{RESULT}")):
        r = json.loads(path.read_text())
        r["run"] = str(path.parent.relative_to(out) / r.get("run", "run")) if r.get("status") == "ok" else str(path.parent.relative_to(out))
        rows.append(r)
    return sorted(rows, key=lambda r: (r["case"], r["variant"]))


def write_summary(out: str | Path) -> Path:
    """``summary.csv`` and ``summary.html`` over every job folder under ``out/runs``."""
    out = Path(out)
    rows = collect_results(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    csv_path = write_text(out / "summary.csv", buf.getvalue())
    write_text(out / "summary.html", summary_html(rows))
    return csv_path


def _plot_svg(rows) -> str:
    """Remnant % and achieved margin against the planned margin, one line per case (matplotlib SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return ""
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    for case in sorted({r["case"] for r in ok}):
        pts = sorted((r["margin_planned_mm"], r["remnant_percent"], r["margin_achieved_mm"]) for r in ok if r["case"] == case)
        ax[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=case)
        ax[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=case)
    ax[0].set(xlabel="planned margin [mm]", ylabel="remnant [%]", title="Remnant")
    ax[1].set(xlabel="planned margin [mm]", ylabel="achieved margin [mm]", title="Margin")
    lim = [min(r["margin_planned_mm"] for r in ok), max(r["margin_planned_mm"] for r in ok)]
    ax[1].plot(lim, lim, "k--", lw=0.8, label="planned")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()[buf.getvalue().index("<svg"):]


def summary_html(rows) -> str:
    esc = html.escape
    cols = [c for c in COLUMNS if c != "run"]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)

    def cell(r, c):
        v = r.get(c)
        if c == "case" and r.get("status") == "ok":
            return f'<td><a href="{esc(r["run"])}/report.html">{esc(str(v))}</a></td>'
        style = " class=bad" if (c == "status" and v != "ok") or (c == "critical" and v) else ""
        return f"<td{style}>{'' if v is None else esc(str(v))}</td>"
    body = "".join("<tr>" + "".join(cell(r, c) for c in cols) + "</tr>" for r in rows)
    n_fail = sum(r["status"] != "ok" for r in rows)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>surgtwin batch summary</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:85%}}
td,th{{border:1px solid #ddd;padding:3px 7px}}th{{background:#f4f4f4}}.bad{{color:#b22222;font-weight:bold}}</style>
</head><body><h1>Batch summary</h1><p>{len(rows)} run(s), {len(rows) - n_fail} ok, {n_fail} failed.</p>
{_plot_svg(rows)}<table><tr>{head}</tr>{body}</table>
<p>Research software: not a medical device; plans need clinical judgement.</p></body></html>
"""


def _hydra_main():
    """Entry point of the multirun (``python -m surgtwin.batch --multirun ...``)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from . import compose

    _ = compose.ConfigStore  # importing compose registers the RunConfig schema as base_run

    @hydra.main(config_path=None, config_name="config", version_base="1.3")
    def job(cfg):
        return run_job(cfg, Path(HydraConfig.get().runtime.output_dir))

    job()


if __name__ == "__main__":
    _hydra_main()
