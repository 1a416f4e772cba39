"""Meshing figures on the phantom and every shared reference label map, printed and as JSON.

Per structure: surface watertight/manifold, surface HD95 in voxels, tet count, inverted elements,
min dihedral angle, mesh volume error vs the label map, seconds; the time to mesh the phantom liver
at about 100k tets; the phantom liver with and without refinement near its tumour and vessels (tets,
dihedral percentiles, explicit time step for liver tissue); joint liver + right kidney meshes; and, when
the optional ``tetgen`` extra is installed, the TetGen mesher on the same structures.

    python benchmarks/meshing.py [--data ../shared/data] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from surgtwin.biomech import tissue_library
from surgtwin.config import MeshConfig, PhantomConfig
from surgtwin.errors import MeshError
from surgtwin.labels import LabelTable
from surgtwin.mesh import SurfaceMesh, TetMesh, surface_hd95_mm, tet_faces, tet_quality
from surgtwin.meshquality import dihedral_distribution, explicit_time_step
from surgtwin.phantom import make_phantom
from surgtwin.volume import LabelMap

STRUCTURES = ["liver", "spleen", "kidney_left", "kidney_right", "aorta"]
HEPATIC = ["liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein"]


def refinement(labels: LabelMap, size_mm: float) -> list[dict]:
    """Phantom liver + tumour + vessels at ``size_mm``, unrefined and refined near the tumour / vessels."""
    rows = []
    for near, ratio in (([], 1), (["liver_tumor"], 2), (HEPATIC[1:], 2), (["liver_tumor"], 4)):
        t = time.perf_counter()
        mesh = TetMesh.from_labelmap(labels, HEPATIC, size_mm=size_mm, organ="liver", refine_near=near,
                                     refine_ratio=ratio, refine_band_mm=10.0)
        seconds = time.perf_counter() - t
        q = tet_quality(mesh.points, mesh.tets)
        dist = dihedral_distribution(mesh.points, mesh.tets)["min_per_element_percentiles_deg"]
        rows.append({"refine_near": near, "refine_ratio": ratio, "tets": int(len(mesh.tets)),
                     "nodes": int(len(mesh.points)), "seconds": seconds,
                     "inverted": int((mesh.tet_volumes_mm3() <= 0).sum()),
                     "min_dihedral_deg": float(q["min_dihedral_deg"].min()),
                     "min_dihedral_percentiles_deg": {k: dist[k] for k in ("p1", "p5", "p50")},
                     "explicit_dt_liver_s": explicit_time_step(mesh.points, mesh.tets, tissue_library()["liver"])["stable_dt_s"],
                     "volume_error_percent": mesh.volume_errors_percent(labels)})
    return rows


def joint(case: str, labels: LabelMap, organs, size_mm: float) -> dict:
    """Neighbouring organs as one conforming mesh: interface faces shared, volume error per organ."""
    t = time.perf_counter()
    mesh = TetMesh.from_labelmap(labels, organs, size_mm=size_mm)
    seconds = time.perf_counter() - t
    faces, owner = tet_faces(mesh.tets)
    _, inv = np.unique(np.sort(faces, 1), axis=0, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    pair = inv[order][1:] == inv[order][:-1]
    differ = mesh.labels[owner[order][:-1][pair]] != mesh.labels[owner[order][1:][pair]]
    return {"case": case, "organs": list(organs), "tets": int(len(mesh.tets)), "seconds": seconds,
            "interface_faces": int(differ.sum()), "inverted": int((mesh.tet_volumes_mm3() <= 0).sum()),
            "min_dihedral_deg": float(tet_quality(mesh.points, mesh.tets)["min_dihedral_deg"].min()),
            "volume_error_percent": mesh.volume_errors_percent(labels)}


def measure(case: str, labels: LabelMap, name: str, size_mm: float) -> dict:
    voxel = float(min(labels.image.GetSpacing()))
    t = time.perf_counter()
    surf = SurfaceMesh.from_labelmap(labels, name)
    mesh = TetMesh.from_labelmap(labels, [name], size_mm=size_mm, organ=name)
    seconds = time.perf_counter() - t
    q = tet_quality(mesh.points, mesh.tets)
    label_ml = labels.volumes_ml()[name]
    return {"case": case, "structure": name, "watertight": surf.mesh.n_open_edges == 0,
            "manifold": bool(surf.mesh.is_manifold),
            "surface_hd95_voxels": surface_hd95_mm(surf.mesh, labels, [name]) / voxel,
            "mesh_hd95_voxels": surface_hd95_mm(mesh.grid.extract_surface(algorithm="dataset_surface"), labels,
                                                [name]) / voxel,
            "tets": int(len(mesh.tets)), "inverted": int((mesh.tet_volumes_mm3() <= 0).sum()),
            "min_dihedral_deg": float(q["min_dihedral_deg"].min()),
            "volume_error_percent": 100.0 * (sum(mesh.volumes_ml().values()) - label_ml) / label_ml,
            "seconds": seconds, "size_mm": size_mm}


def tetgen_row(case: str, labels: LabelMap, name: str, size_mm: float) -> dict:
    """One structure by the optional TetGen mesher (``mesh.mesher=tetgen``), and whether it would be kept
    (else the reason the grid mesher takes over)."""
    from surgtwin.tetgenmesh import mesh_tetgen, quality_failure, tetgen_version

    voxel = float(min(labels.image.GetSpacing()))
    t = time.perf_counter()
    try:
        points, tets, tags = mesh_tetgen(labels, name, size_mm=size_mm)
    except MeshError as exc:
        return {"case": case, "structure": name, "fallback_reason": str(exc)}
    seconds = time.perf_counter() - t
    mesh = TetMesh.from_arrays(points, tets, tags, labels.table)
    q = tet_quality(mesh.points, mesh.tets)
    label_ml = labels.volumes_ml()[name]
    return {"case": case, "structure": name, "mesher": f"tetgen {tetgen_version()}", "size_mm": size_mm,
            "tets": int(len(tets)), "nodes": int(len(points)), "seconds": seconds,
            "inverted": int((mesh.tet_volumes_mm3() <= 0).sum()),
            "min_dihedral_deg": float(q["min_dihedral_deg"].min()),
            "max_dihedral_deg": float(q["max_dihedral_deg"].max()),
            "p1_min_dihedral_deg": float(np.percentile(q["min_dihedral_deg"], 1)),
            "volume_error_percent": 100.0 * (sum(mesh.volumes_ml().values()) - label_ml) / label_ml,
            "mesh_hd95_voxels": surface_hd95_mm(mesh.grid.extract_surface(algorithm="dataset_surface"), labels,
                                                [name]) / voxel,
            "explicit_dt_liver_s": explicit_time_step(mesh.points, mesh.tets, tissue_library()["liver"])["stable_dt_s"],
            "fallback_reason": quality_failure(mesh, labels)}


def tetgen_rows(cases: dict) -> list[dict]:
    """TetGen rows for every structure measured by the grid mesher (empty without the extra)."""
    from surgtwin.tetgenmesh import tetgen_version, tetgen_volume_mesh

    if tetgen_version() is None:
        print("\ntetgen is not installed (pip install surgtwin[tetgen]): no TetGen rows")
        return []
    rows = [tetgen_row(case, labels, name, 4.0 if name == "aorta" else 6.0) for case, labels in cases.items()
            for name in STRUCTURES if labels.volumes_ml().get(name, 0.0) > 5.0]
    print("\noptional TetGen mesher (mesh.mesher=tetgen) at 6 mm (aorta 4 mm), single structures:")
    print(f"{'case':<16} {'structure':<13} {'tets':>7} {'s':>6} {'min dih':>7} {'p1 dih':>6} {'max dih':>7} "
          f"{'vol err %':>9} {'HD95':>6} {'dt liver s':>10}  kept?")
    for r in rows:
        if "tets" not in r:
            print(f"{r['case']:<16} {r['structure']:<13} tetgen failed, grid: {r['fallback_reason']}")
            continue
        print(f"{r['case']:<16} {r['structure']:<13} {r['tets']:>7} {r['seconds']:>6.2f} {r['min_dihedral_deg']:>7.1f} "
              f"{r['p1_min_dihedral_deg']:>6.1f} {r['max_dihedral_deg']:>7.1f} {r['volume_error_percent']:>9.2f} "
              f"{r['mesh_hd95_voxels']:>5.2f}v {r['explicit_dt_liver_s']:>10.2e}  "
              f"{'yes' if r['fallback_reason'] is None else 'no, grid: ' + r['fallback_reason']}")
    print("\nTetGen with regions (mesh.mesher=tetgen, 6 mm): phantom liver and structures inside it")
    for names in (HEPATIC[:2], HEPATIC):
        if "phantom" not in cases:
            break
        labels = cases["phantom"]
        cfg = MeshConfig(organ="liver", structures=list(names), mesher="tetgen")
        t = time.perf_counter()
        mesh, reason = tetgen_volume_mesh(labels, list(names), cfg, 6.0)
        row = {"case": "phantom", "structures": list(names), "seconds": time.perf_counter() - t,
               "fallback_reason": reason}
        if mesh is not None:
            row.update(tets=int(len(mesh.tets)), inverted=int((mesh.tet_volumes_mm3() <= 0).sum()),
                       min_dihedral_deg=float(tet_quality(mesh.points, mesh.tets)["min_dihedral_deg"].min()),
                       volume_error_percent=mesh.volume_errors_percent(labels))
            errs = ", ".join(f"{n} {v:+.2f} %" for n, v in row["volume_error_percent"].items())
            print(f"{'+'.join(names):<58} {row['tets']:>7} tets, {row['seconds']:.2f} s, min dih "
                  f"{row['min_dihedral_deg']:.1f}, {row['inverted']} inverted; {errs}")
        else:
            print(f"{'+'.join(names):<58} grid: {reason}")
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "meshing.json")
    args = ap.parse_args()
    _, phantom = make_phantom(PhantomConfig())
    cases = {"phantom": phantom}
    ids = json.loads((args.data / "reference_label_ids.json").read_text())
    for case, key in (("ct_abdomen_3mm", "total"), ("ct_dicom_jpeg2000", "total"), ("mr_abdomen_3mm", "total_mr")):
        path = args.data / case / "reference_seg.nii.gz"
        if path.is_file():
            cases[case] = LabelMap.load(path, table=LabelTable.from_json_dict(ids[key]))
    rows = []
    for case, labels in cases.items():
        present = labels.volumes_ml()
        for name in STRUCTURES:
            if present.get(name, 0.0) > 5.0:
                rows.append(measure(case, labels, name, 4.0 if name == "aorta" else 6.0))
    # ~100k tets of phantom liver: element size from the volume (6 tets per cube)
    size = (phantom.volumes_ml()["liver"] * 1000.0 / (100_000 / 6)) ** (1 / 3)
    t = time.perf_counter()
    big = TetMesh.from_labelmap(phantom, ["liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein"],
                                size_mm=size, organ="liver")
    big_s = time.perf_counter() - t
    print(f"{'case':<18} {'structure':<13} {'closed':>6} {'manif':>5} {'surfHD95':>8} {'meshHD95':>8} "
          f"{'tets':>7} {'inv':>3} {'min dih':>7} {'vol err %':>9} {'s':>5}")
    for r in rows:
        print(f"{r['case']:<18} {r['structure']:<13} {str(r['watertight']):>6} {str(r['manifold']):>5} "
              f"{r['surface_hd95_voxels']:>7.2f}v {r['mesh_hd95_voxels']:>7.2f}v {r['tets']:>7} {r['inverted']:>3} "
              f"{r['min_dihedral_deg']:>7.1f} {r['volume_error_percent']:>9.2f} {r['seconds']:>5.2f}")
    print(f"phantom liver (+ tumour and vessels) at {size:.2f} mm: {len(big.tets)} tets in {big_s:.2f} s")
    refined = refinement(phantom, 6.0)
    print("\nphantom liver + tumour + vessels at 6 mm, refined within 10 mm of:")
    print(f"{'refine_near':<44} {'ratio':>5} {'tets':>7} {'s':>5} {'min dih':>7} {'p1 dih':>6} {'dt liver s':>10} "
          f"{'liver %':>7} {'tumour %':>8}")
    for r in refined:
        e = r["volume_error_percent"]
        print(f"{','.join(r['refine_near']) or '-':<44} {r['refine_ratio']:>5} {r['tets']:>7} {r['seconds']:>5.2f} "
              f"{r['min_dihedral_deg']:>7.1f} {r['min_dihedral_percentiles_deg']['p1']:>6.1f} "
              f"{r['explicit_dt_liver_s']:>10.2e} {e['liver']:>7.2f} {e['liver_tumor']:>8.2f}")
    joints = [joint(case, cases[case], organs, 6.0) for case, organs in
              (("phantom", ["liver", "kidney_right"]), ("ct_abdomen_3mm", ["liver", "kidney_right"]),
               ("phantom", ["liver", "kidney_right", "spleen", "inferior_vena_cava"])) if case in cases]
    print("\njoint meshes (shared interface faces):")
    for r in joints:
        errs = ", ".join(f"{n} {v:+.2f} %" for n, v in r["volume_error_percent"].items())
        print(f"{r['case']:<16} {'+'.join(r['organs']):<48} {r['tets']:>7} tets, {r['interface_faces']:>4} interface "
              f"faces, min dih {r['min_dihedral_deg']:.1f}, {r['seconds']:.2f} s; {errs}")
    tetgen = tetgen_rows(cases)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "liver_100k": {"size_mm": size, "tets": int(len(big.tets)),
                                                                  "seconds": big_s},
                                     "refinement": refined, "joint": joints, "tetgen": tetgen}, indent=1) + "\n")


if __name__ == "__main__":
    main()
