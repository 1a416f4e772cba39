"""``surgtwin`` command line: thin subcommands over the Python API, Hydra ``key=value`` overrides.

Every command writes into a run folder (built under a hidden name and renamed when complete), with
its resolved ``config.yaml`` and ``surgtwin.log``. Errors print one line and exit non-zero.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from .config import MESHERS
from .errors import ConfigError, InputError, SolverError, SurgtwinError

log = logging.getLogger("surgtwin")

EPILOG = """overrides are Hydra key=value pairs, e.g. mesh.size_mm=5 procedure=resect_plane solver.device=cuda
+material.tissues.liver.youngs_kpa=8 (see configs/ and README)."""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other surgtwin error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="surgtwin", description="Surgical planning on a digital twin of the patient: "
                                "CT -> organ labels -> meshes -> soft-tissue simulation -> risk report.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"surgtwin {__import__('surgtwin').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help_, *, inputs=(), out=True, overrides=True):
        """A subcommand: positional inputs first, then -o/--out and key=value overrides."""
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        for arg, arg_help, *kw in inputs:
            sp.add_argument(arg, type=Path, help=arg_help, **(kw[0] if kw else {}))
        if out:
            sp.add_argument("-o", "--out", type=Path, default=None, help="run folder (default runs/<command>-<time>)")
        if overrides:
            sp.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="Hydra config overrides")
        return sp

    sp = add("run", "end to end: image (default: built-in phantom) -> labels -> mesh -> resection -> report")
    sp.add_argument("--image", type=Path, help="CT file (.nii.gz/.nrrd/.mha) or DICOM folder; default: phantom")
    sp.add_argument("--labels", type=Path, help="label map for --image (TotalSegmentator/Slicer); default: segment")
    sp.add_argument("--series", help="DICOM folder with several series: index or SeriesInstanceUID")
    add("phantom", "write the synthetic abdominal CT phantom (NIfTI + DICOM) with its ground-truth labels")
    sp = add("segment", "segment a CT into a label map (classical methods, no downloaded weights)",
             inputs=[("image", "CT file or DICOM folder")])
    sp.add_argument("--series", help="DICOM folder with several series: index or SeriesInstanceUID")
    sp.add_argument("--method", nargs="+", metavar=("METHOD", "PATH"),
                    help="auto (default), seeded, threshold, totalsegmentator, or 'import PATH' (a TotalSegmentator "
                         "file or folder, a Slicer .seg.nrrd, a label image) (segment.method, segment.source)")
    sp.add_argument("--seeds", nargs="+", default=[], metavar="NAME=X,Y,Z",
                    help="one click per organ for --method seeded, e.g. liver=-60,10,40 (physical mm, LPS)")
    sp.add_argument("--voxel", action="store_true", help="--seeds are voxel indices i,j,k (segment.seed_space=voxel)")
    sp = add("mesh", "label map (or closed surfaces) -> organ surfaces (VTP) and a tagged tetrahedral mesh "
             "(volume.vtu)", inputs=[("inputs", "a label map (.nii.gz/.nrrd/.mha, labels.json beside it or default "
                                     "ids), or closed surfaces (.stl/.vtp/.obj/.ply) named by structure, organ first: "
                                     "liver.stl liver_tumor.stl", {"nargs": "+", "metavar": "LABELS_OR_SURFACES"})])
    sp.add_argument("--organs", help="comma-separated structures meshed together, the simulated organ first "
                                     "(mesh.organ, mesh.structures)")
    sp.add_argument("--size", type=float, help="element size in mm (mesh.size_mm)")
    sp.add_argument("--max-tets", type=int, help="tet budget instead of a size (mesh.max_tets)")
    sp.add_argument("--stl", action="store_true", help="also write the surfaces as STL (mesh.stl)")
    sp.add_argument("--joint", action="store_true", help="mesh the --organs together as neighbours sharing tagged "
                                                          "interface faces, no organ envelope (mesh.joint)")
    sp.add_argument("--mesher", choices=list(MESHERS),
                    help="volume mesher (mesh.mesher): auto = grid, the built-in mesher; tetgen = the optional AGPL "
                         "extra (pip install surgtwin[tetgen]) for one organ (with structures inside it), "
                         "falling back to grid")
    sp = add("simulate", "rehearse the procedure on a mesh: pre-op equilibrium, resection, remnant; writes report.json",
             inputs=[("mesh", "volume.vtu from 'surgtwin mesh', or a mesh folder")])
    sp.add_argument("--labels", type=Path, help="label map the mesh came from (for boundary.fix_near)")
    add("report", "(re)render report.html and images of a simulated run folder (report.* overrides apply)",
        inputs=[("run", "run folder from 'surgtwin run' or 'surgtwin simulate'")], out=False)
    sp = add("view", "rehearsal viewer (Qt 3D window): a run folder, a case folder (labels.nii.gz [+ ct.nii.gz]) or, with no "
             "argument, the phantom; --screenshot renders a run off-screen to a PNG instead",
             inputs=[("run", "run or case folder (default: the built-in phantom)", {"nargs": "?"})], out=False)
    sp.add_argument("--overlay", choices=["shift_mm", "risk", "max_principal_strain", "von_mises_kpa", "anatomy",
                                          "displacement", "strain", "distance", "margin", "stress", "none"], default="shift_mm")
    sp.add_argument("--screenshot", type=Path, help="render off-screen to this PNG instead of opening a window")
    sp = add("verify", "verification suite: simulator results against closed forms (table + verify.json)")
    sp.add_argument("--device", default="cpu")
    sp = add("deid", "write a de-identified copy of a DICOM folder (PS3.15 basic profile, dates shifted, "
             "UIDs remapped) with deid_audit.json", inputs=[("source", "folder of DICOM files (searched recursively)"),
                                                          ("dest", "new folder for the de-identified copy")],
             out=False, overrides=False)
    sp.add_argument("--keep-patient-characteristics", action="store_true",
                    help="keep sex, age, size and weight (tissue-property priors)")
    sp.add_argument("--allow-burned-in", action="store_true",
                    help="accept images flagged BurnedInAnnotation=YES (check the pixels yourself)")
    sp = add("batch", "cases x plan variants as a Hydra multirun (joblib locally, submitit on SLURM); "
             "summary.csv + summary.html across runs", inputs=[("cases", "folder with one sub-folder per case "
                                                                 "(scan + optional label map / case.yaml)")])
    sp.add_argument("--jobs", type=int, default=2, help="parallel jobs with the local (joblib) launcher")
    sp.add_argument("--launcher", default="local", help="configs/hydra/launcher: local (joblib) or slurm (submitit)")
    sp = add("bench", "solver speed table (printed) and JSON: force/tangent kernels and a full static solve")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--sizes", default="8,16", help="cube grid resolutions n (6 n^3 tets each)")
    return p


def _default_out(command: str) -> Path:
    base = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():  # two runs in the same second get distinct folders
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


@contextlib.contextmanager
def _run_folder(command: str, out: Path | None, cfg):
    """Staged run folder with config.yaml and surgtwin.log; renamed into place only on success."""
    from .fileio import staged_dir

    final = out or _default_out(command)
    with staged_dir(final) as stage:
        handler = logging.FileHandler(stage / "surgtwin.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        try:
            if cfg is not None:
                from .compose import config_yaml

                (stage / "config.yaml").write_text(config_yaml(cfg))
            log.info("surgtwin %s", command)
            yield stage
        finally:
            log.removeHandler(handler)
            handler.close()
    print(f"{command}: outputs in {final}")


def _stages(names):
    from tqdm import tqdm

    bar = tqdm(total=len(names), desc="surgtwin", unit="stage", disable=None, file=sys.stderr,
               bar_format="{desc}: {n}/{total} |{bar}| {elapsed} {postfix}")

    def step(name):
        bar.set_postfix_str(name)
        bar.update(1)
    return bar, step


def cmd_run(args, cfg):
    from .pipeline import plan

    final = args.out or _default_out("run")
    bar, step = _stages(["labels", "mesh", "pre-op", "resection", "report"])
    with bar, _run_folder("run", final, cfg) as run:
        report = plan(cfg, run, progress=step)
    _summary(report)
    print(f"report:  {final / 'report.html'}\n         {final / 'report.json'}\n"
          f"images:  {final / 'images'}/\nmeshes:  {final / 'mesh' / 'volume.vtu'}, {final / 'sim' / 'postop.vtu'}\n"
          f"view:    surgtwin view {final}")


def _summary(report):
    m, onc = report.metrics, report.oncological or {}
    cut = (f"territory of {report.target} divided at {onc.get('at_mm')} mm" if onc.get("mode") == "territory" else
           f"margin {m['margin_achieved_mm']:.1f} mm (planned {m['margin_planned_mm']:.0f})")
    print(f"remnant {m['remnant_parenchyma_ml']:.0f} mL ({m['remnant_percent']:.1f} %), {cut}, vessels crossing "
          f"{len(report.vessels)}, peak strain {m['peak_strain']:.3f}, max shift {m['max_shift_mm']:.2f} mm")
    for f in report.flags:
        print(f"  flag: {f}")


def cmd_phantom(args, cfg):
    from .pipeline import write_phantom

    with _run_folder("phantom", args.out, cfg) as run:
        _, labels = write_phantom(cfg.case.phantom, run)
        labels.save(run / "labels.nii.gz")
        log.info("structures: %s", ", ".join(f"{k} {v:.0f} mL" for k, v in labels.volumes_ml().items()))


def cmd_segment(args, cfg):
    from .qc import qc_overlay
    from .segment import segment
    from .volume import Volume

    _segment_options(args, cfg.segment)
    volume = Volume.load(args.image, modality=cfg.case.modality, series=args.series)
    with _run_folder("segment", args.out, cfg) as run:
        labels = segment(volume, cfg.segment)
        labels.save(run / "labels.nii.gz")
        qc_overlay(volume, labels, run / "qc.png")
        log.info("segmented: %s", ", ".join(f"{k} {v:.0f} mL" for k, v in labels.volumes_ml().items()))


def _segment_options(args, seg):
    """--method/--seeds/--voxel into the SegmentConfig (before the run folder saves the config)."""
    if args.method:
        seg.method = args.method[0]
        if len(args.method) > 2 or (len(args.method) == 2) != (seg.method == "import"):
            raise ConfigError("--method takes a method name, and a path only for 'import PATH'")
        if seg.method == "import":
            seg.source = args.method[1]
    for item in args.seeds:
        name, _, coords = item.partition("=")
        try:
            point = [float(v) for v in coords.split(",")]
        except ValueError:
            point = []
        if not name or len(point) != 3:
            raise ConfigError(f"--seeds: expected NAME=X,Y,Z, got '{item}'")
        seg.seeds[name] = point
    if args.seeds and not args.method:
        seg.method = "seeded"
    if args.voxel:
        seg.seed_space = "voxel"


def cmd_mesh(args, cfg):
    from .fileio import write_json
    from .pipeline import mesh_quality, mesh_structures

    if args.organs:
        names = [n.strip() for n in args.organs.split(",") if n.strip()]
        cfg.mesh.organ, cfg.mesh.structures = names[0], names
    if args.size is not None:
        cfg.mesh.size_mm = args.size
    if args.max_tets is not None:
        cfg.mesh.max_tets = args.max_tets
    cfg.mesh.stl = cfg.mesh.stl or args.stl
    cfg.mesh.joint = cfg.mesh.joint or args.joint
    if args.mesher is not None:
        cfg.mesh.mesher = args.mesher
    labels = _mesh_input(args.inputs, cfg.mesh.size_mm)
    with _run_folder("mesh", args.out, cfg) as run:
        mesh, surfaces = mesh_structures(labels, cfg.mesh, run)
        q = mesh_quality(mesh, labels, surfaces)
        write_json(run / "quality.json", q)
    print(f"{q['tets']} tets, {q['nodes']} nodes, dihedral angles {q['min_dihedral_deg']:.0f}-{q['max_dihedral_deg']:.0f} deg, "
          f"min scaled Jacobian {q['min_scaled_jacobian']:.2f}, explicit dt (liver) {q['explicit_stable_dt_liver_s']:.1e} s")
    print("regions: " + ", ".join(
        f"{k} {v['mesh_ml']:.1f} mL" + (f" ({v['error_percent']:+.1f} % vs labels)" if "error_percent" in v else "")
        for k, v in q["regions"].items()))


def _mesh_input(paths, size_mm: float):
    """A label map, or closed surfaces voxelised at a third of the element size."""
    from .mesh import SURFACE_SUFFIXES, SurfaceMesh, labelmap_from_surfaces
    from .volume import LabelMap

    if all(p.suffix.lower() in SURFACE_SUFFIXES for p in paths):
        surfaces = [SurfaceMesh.load(p, name=p.stem) for p in paths]
        return labelmap_from_surfaces(surfaces, max(0.5, size_mm / 3.0))
    if len(paths) != 1:
        raise InputError("give one label map, or only surface files (.stl/.vtp/.obj/.ply)")
    return LabelMap.load(paths[0])


def cmd_simulate(args, cfg):
    from .mesh import TetMesh
    from .pipeline import simulate_case
    from .volume import LabelMap

    path = args.mesh / "volume.vtu" if args.mesh.is_dir() else args.mesh
    mesh = TetMesh.load(path)
    labels = LabelMap.load(args.labels) if args.labels else None
    if labels is None and cfg.boundary.fix_near:
        log.info("no --labels: boundary.fix_near %s ignored, the organ is held by its surface support only",
                    list(cfg.boundary.fix_near))
        cfg.boundary.fix_near = []
    bar, step = _stages(["pre-op", "resection"])
    with bar, _run_folder("simulate", args.out, cfg) as run:
        report, _ = simulate_case(mesh, labels, cfg, run, case_name=path.stem, progress=step)
        surf = args.mesh / "surfaces" if args.mesh.is_dir() else path.parent / "surfaces"
        if surf.is_dir():
            import shutil
            shutil.copytree(surf, run / "mesh" / "surfaces")
    _summary(report)


def cmd_report(args, cfg):
    from .report import render_report

    if not (args.run / "report.json").is_file():
        raise InputError(f"{args.run}: no report.json (run 'surgtwin run' or 'surgtwin simulate' first)")
    path = render_report(args.run, cfg.report)
    print(f"report: {path}")


def cmd_view(args, cfg):
    from .viewer import view

    if args.run is not None and "=" in str(args.run) and not args.run.exists():  # phantom + overrides
        from .compose import compose_run_config

        args.overrides, args.run = [str(args.run)] + list(args.overrides), None
        cfg, _ = compose_run_config(args.overrides)
    if args.screenshot and args.run is None:
        raise InputError("--screenshot needs a run folder")
    # overrides given: they configure the rehearsal; none: a run folder brings its own config.yaml
    view(args.run, overlay=args.overlay, screenshot=args.screenshot, cfg=cfg if args.overrides else None,
         fallback_message=lambda m: print(f"surgtwin view: {m}", file=sys.stderr))
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")


def cmd_deid(args, cfg):
    from tqdm import tqdm

    from .deid import DeidKey, deidentify_folder

    key = DeidKey(keep_patient_characteristics=args.keep_patient_characteristics,
                  allow_burned_in=args.allow_burned_in)
    with tqdm(desc="de-identify", unit="file", disable=None, file=sys.stderr) as bar:
        def step(i, n):
            bar.total = n
            bar.update(1)
        audit = deidentify_folder(args.source, args.dest, key=key, progress=step)
    print(f"deid: {audit['files_written']} files de-identified into {args.dest} "
          f"({audit['files_skipped']} non-DICOM skipped); audit: {args.dest / 'deid_audit.json'}")


def cmd_verify(args, cfg):
    from dataclasses import asdict

    from .fileio import write_json
    from .verify import format_table, run_full

    with _run_folder("verify", args.out, cfg) as run:
        results = run_full(device=args.device)
        if args.device != "cpu":                      # the same problems on the CPU: agreement to 1e-5
            from .verify_devices import device_agreement
            results += device_agreement(args.device)
        write_json(run / "verify.json", {"device": args.device, "results": [asdict(r) for r in results]})
        print(format_table(results))
    failed = [r.name for r in results if not r.passed]
    if failed:
        raise SolverError(f"verification failed: {', '.join(sorted(set(failed)))}")


def cmd_batch(args, cfg):
    from .batch import run_batch

    out = (args.out or _default_out("batch")).resolve()
    path = run_batch(args.cases, out, args.overrides, jobs=args.jobs, launcher=args.launcher)
    import csv

    rows = list(csv.DictReader(path.open()))
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"batch: {len(rows)} run(s), {len(rows) - len(failed)} ok, {len(failed)} failed")
    for r in failed:
        print(f"  failed: {r['case']} [{r['variant']}]: {r['error']}")
    print(f"summary: {path}\n         {path.with_suffix('.html')}")


def cmd_bench(args, cfg):
    from .bench import run_bench

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--sizes must be integers like 8,16 (got '{args.sizes}')") from None
    if not sizes or min(sizes) < 1 or max(sizes) > 200:
        raise ConfigError("--sizes: each grid resolution n must be between 1 and 200")
    with _run_folder("bench", args.out, cfg) as run:
        run_bench(sizes, device=args.device, json_path=run / "bench.json")


COMMANDS = {"run": cmd_run, "phantom": cmd_phantom, "segment": cmd_segment, "mesh": cmd_mesh,
            "simulate": cmd_simulate, "report": cmd_report, "view": cmd_view, "bench": cmd_bench,
            "deid": cmd_deid, "verify": cmd_verify, "batch": cmd_batch}


def _init_warp(verbose: bool):
    """Initialise Warp; unless verbose, without its banner, module-load lines and the native
    'no CUDA driver' notice on CPU-only machines (stderr stays one line per error)."""
    import warp as wp

    if verbose:
        wp.init()
        return
    wp.config.log_level = wp.LOG_WARNING
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        wp.init()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_device(device: str):
    """A device the machine has, or a one-line ConfigError saying what to use instead."""
    import warp as wp

    name = str(device)
    if name == "cpu":
        return
    if name == "cuda" or name.startswith("cuda:"):
        count = wp.get_cuda_device_count()
        index = int(name.split(":")[1]) if ":" in name and name.split(":")[1].isdigit() else 0
        if count == 0:
            raise ConfigError(f"device '{name}': no CUDA GPU or driver on this machine (use solver.device=cpu)")
        if index >= count:
            raise ConfigError(f"device '{name}': this machine has {count} CUDA device(s)")
        return
    raise ConfigError(f"device '{name}' is not cpu, cuda or cuda:N")


def main(argv=None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if hasattr(args, "inputs"):  # a greedy nargs='+' input list may hold the overrides
        args.overrides += [str(p) for p in args.inputs if "=" in str(p)]
        args.inputs = [p for p in args.inputs if "=" not in str(p)]
    if getattr(args, "method", None):  # ... and so may --method
        args.overrides += [p for p in args.method[1:] if "=" in p]
        args.method = [p for p in args.method if "=" not in p]
    if getattr(args, "seeds", None):  # seeds are NAME=X,Y,Z; anything else there is an override
        seed = [p for p in args.seeds if "." not in p.partition("=")[0] and "," in p.partition("=")[2]]
        args.overrides += [p for p in args.seeds if p not in seed]
        args.seeds = seed
    for extra in rest:  # key=value overrides given after options
        if "=" in extra and not extra.startswith("-") and hasattr(args, "overrides"):
            args.overrides.append(extra)
        else:
            parser.error(f"unrecognized argument: {extra}")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.INFO if os.environ.get("SURGTWIN_VERBOSE") else logging.WARNING)
    log.addHandler(console)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        from .compose import compose_run_config

        # batch overrides are sweeps (a=1,2,3): Hydra's multirun composes them, job by job
        cfg, _ = compose_run_config([] if args.command == "batch" else list(getattr(args, "overrides", [])))
        if args.command == "run":  # paths bypass the override grammar (any character is fine)
            for field_, value in (("image", args.image), ("labels", args.labels), ("series", args.series)):
                if value is not None:
                    setattr(cfg.case, field_, str(value))
        _init_warp(verbose=bool(os.environ.get("SURGTWIN_VERBOSE")))
        _check_device(args.device if args.command in ("bench", "verify") else cfg.solver.device)
        from .config import check_mesher

        check_mesher(cfg.mesh.mesher)
        if args.command in ("run", "simulate"):  # a bad plan fails before any stage runs
            from .procedure import Procedure

            Procedure.from_config(cfg.procedure).require_resection()
            from .risk_func import flr_minimum
            from .risk_geom import ToolPath

            flr_minimum(cfg.risk.liver_condition)
            for i, path in enumerate(cfg.risk.tool_paths):
                ToolPath.from_config(path, i)
        COMMANDS[args.command](args, cfg)
    except SurgtwinError as exc:
        print(f"surgtwin {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"surgtwin {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"surgtwin {args.command}: error: out of memory (try a coarser mesh.size_mm)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"surgtwin {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("SURGTWIN_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"surgtwin {args.command}: internal error: {type(exc).__name__}: {msg} "
              f"(set SURGTWIN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
