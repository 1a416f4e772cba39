"""Cutting (surgtwin.tetsplit, surgtwin.cutting) and the surgical session (surgtwin.surgery) on small blocks.

The randomized suite is seeded: random incisions (polylines, oblique blades, repeated and intersecting
cuts) and random plane/sphere resections on perturbed box meshes, each checked for: finite state, no
inverted or sliver element, exact volume bookkeeping, edge-manifold boundary.
"""
from __future__ import annotations

import numpy as np
import pytest
import pyvista as pv

from surgtwin.config import ProcedureConfig, ResectionStep
from surgtwin.cutting import apply_incision, apply_resection, cut_defect, live_volume, total_volume
from surgtwin.errors import ConfigError
from surgtwin.labels import LabelTable
from surgtwin.procedure import Procedure
from surgtwin.recording import Recorder
from surgtwin.sim import ModelSpec, StaticSolver
from surgtwin.sim.blocks import box_mesh, signed_volumes
from surgtwin.surgery import Surgery
from surgtwin.tetsplit import non_manifold_edges, split_by_level_set, split_table

MM = 1e-3


def block_spec(n, size_mm=10.0, jitter=0.0, rng=None):
    """A box of n cells of ``size_mm`` (interior nodes jittered by ``jitter`` cells), soft-tissue ModelSpec."""
    n = np.broadcast_to(np.asarray(n), (3,))
    pts, tets = box_mesh(n, tuple(n * size_mm * MM))
    if jitter:
        inner = np.all((pts > 1e-9) & (pts < n * size_mm * MM - 1e-9), axis=1)
        pts = pts.copy()
        pts[inner] += rng.uniform(-jitter, jitter, (inner.sum(), 3)) * size_mm * MM
    return ModelSpec(pts, tets, 1, 5e3, 0.45, 1000.0, False, 1.0)


def random_cut(spec, x, rng):
    """One random incision (60 %) or resection (40 %) on a box spec; returns the TopologyChange."""
    ext = spec.points.max(0) / MM
    if rng.random() < 0.6:
        k = int(rng.integers(2, 5))
        path = np.c_[rng.uniform(-3, ext[0] + 3, k), rng.uniform(-3, ext[1] + 3, k), np.full(k, ext[2])]
        d = np.array([0, 0, -1.0]) + rng.normal(0, 0.3, 3)
        return apply_incision(spec, x, path, rng.uniform(2, ext[2]), direction=d)
    c = rng.uniform(0, 1, 3) * ext
    if rng.random() < 0.5:
        phi = np.linalg.norm(spec.points / MM - c, axis=1) - rng.uniform(3, 30)
    else:
        phi = (spec.points / MM - c) @ rng.normal(size=3)
    return apply_resection(spec, x, phi)


def test_split_table_covers_every_case():
    children, sides = split_table()
    count = (children[:, :, 0] >= 0).sum(1)
    codes = np.arange(81)
    signs = np.stack([(codes // 3 ** i) % 3 - 1 for i in range(4)], 1)
    crossed = (signs > 0).any(1) & (signs < 0).any(1)
    assert (count.reshape(81, 24)[crossed] >= 2).all() and (count.reshape(81, 24)[~crossed] == 0).all()
    assert count.max() == 6                                            # two prisms: 3 + 3 tets


def test_level_set_split_is_exact_and_conforming():
    pts, tets = box_mesh(5, (1.0, 1.0, 1.0))
    rng = np.random.default_rng(3)
    for _ in range(30):
        phi = np.linalg.norm(pts - rng.uniform(0, 1, 3), axis=1) - rng.uniform(0.1, 0.6)
        s = split_by_level_set(tets, phi)
        p = np.concatenate([pts, (1 - s.edge_t)[:, None] * pts[s.edge_nodes[:, 0]]
                            + s.edge_t[:, None] * pts[s.edge_nodes[:, 1]]])
        v = signed_volumes(p, s.tets)
        assert v.min() > 0
        assert np.allclose(np.bincount(s.parent, weights=v, minlength=len(tets)), signed_volumes(pts, tets))
        assert len(non_manifold_edges(s.tets, len(p))) == 0            # conforming: the box surface is closed
        assert set(np.unique(s.side[s.parent != -1])) <= {-1, 0, 1}


def test_plane_resection_volume_is_exact():
    spec = block_spec((4, 3, 3))                                           # 40 x 30 x 30 mm
    ch = apply_resection(spec, None, 23.7 - spec.points[:, 0] / MM)    # keep x < 23.7 mm
    assert live_volume(ch.spec) == pytest.approx(23.7e-3 * 30e-3 * 30e-3, rel=1e-12)
    assert total_volume(ch.spec) == pytest.approx(total_volume(spec), rel=1e-14)
    cut = ch.spec.points[np.unique(ch.cut_faces)] / MM
    assert np.allclose(cut[:, 0], 23.7)                                # a flat cut, no staircase
    area = sum(np.linalg.norm(np.cross(*(ch.spec.points[f[1:]] - ch.spec.points[f[0]])), axis=0) / 2
               for f in ch.cut_faces) / MM ** 2
    assert area == pytest.approx(900.0, rel=1e-9)


def test_sphere_resection_converges_to_the_ball():
    c, r = np.array([16.0, 16.0, 16.0]), 10.0
    errors = []
    for cells, size in ((8, 4.0), (16, 2.0)):                          # 32 mm cube at 4 and 2 mm
        spec = block_spec(cells, size_mm=size)
        ch = apply_resection(spec, None, np.linalg.norm(spec.points / MM - c, axis=1) - r)
        removed = (total_volume(ch.spec) - live_volume(ch.spec)) / MM ** 3
        errors.append(abs(removed / (4 / 3 * np.pi * r ** 3) - 1))
        d = np.linalg.norm(ch.spec.points[np.unique(ch.cut_faces)] / MM - c, axis=1)
        assert np.abs(d - r).max() < 0.15 * size * np.sqrt(3)          # cut nodes on the sphere (or snapped)
    assert errors[0] < 0.12 and errors[1] < 0.5 * errors[0]            # inscribed polyhedron: O(h^2)


def test_randomized_cuts_never_break_the_mesh():
    rng = np.random.default_rng(2026)
    done = 0
    for trial in range(150):
        spec = block_spec(rng.integers(2, 6, 3), jitter=0.2 if trial % 2 else 0.0, rng=rng)
        x = spec.points + rng.normal(0, 0.3 * MM, spec.points.shape)   # a deformed current state
        v0 = total_volume(spec)
        for _ in range(int(rng.integers(1, 4))):                       # repeated, intersecting cuts
            ch = random_cut(spec, x, rng)
            assert cut_defect(spec, ch, v0) is None
            src = ch.node_src
            assert np.allclose(ch.positions, (1 - ch.node_t)[:, None] * x[src[:, 0]] + ch.node_t[:, None] * x[src[:, 1]])
            spec, x = ch.spec, ch.positions
            done += 1
            if not spec.alive.any():
                break
    assert done > 250


def _tensioned_bar():
    """80 x 40 x 40 mm bar, ends held by springs to anchors stretched 10 % along x."""
    spec = block_spec((8, 4, 4))
    p = spec.points
    end = (p[:, 0] < 1e-9) | (p[:, 0] > 0.08 - 1e-9)
    spec.spring_k[:] = np.where(end, 1e3, 0.0)
    spec.anchors[:, 0] = (p[:, 0] - 0.04) * 1.1 + 0.04
    model = spec.finalize("cpu")
    state = model.state()
    assert StaticSolver(model).solve(state).converged
    return spec, state.positions()


def test_incision_opens_under_tension_and_keeps_its_front():
    spec, x = _tensioned_bar()
    op = Surgery(spec, x)
    rec = op.incise([[43.0, -2.0, 40.0], [43.0, 42.0, 40.0]], depth_mm=15.0, direction=[0, 0, -1])
    d = rec.detail
    assert d["duplicated_nodes"] > 0 and d["split_elements"] > 0       # x = 43 is between grid planes
    assert d["volume_error_mm3"] < 1e-9
    assert d["wound_opening_mm"] > 2.0                                 # the wound gapes (measured ~3.4)
    ch = op.changes[-1]
    dup = np.arange(len(op.x) - ch.duplicated_nodes, len(op.x))
    src = ch.twin
    assert np.array_equal(ch.spec.points[dup], ch.spec.points[src])    # copies start where the originals are
    assert np.array_equal(ch.positions[dup], ch.positions[src])
    gap = op.x[dup] - op.x[src]
    assert (np.abs(gap[:, 0]) > np.abs(gap[:, 1:]).max(1)).all()       # opening along the tension (x)
    # deep nodes (the crack front, ~15 mm under the top) stay joined: no copy below the blade depth
    assert (op.spec.points[dup][:, 2] / MM > 40.0 - 15.0 - 10.0).all()
    # an intersecting second incision along x crosses the first
    rec2 = op.incise([[10.0, 20.0, 40.0], [70.0, 20.0, 40.0]], depth_mm=8.0, direction=[0, 0, -1])
    assert rec2.detail["duplicated_nodes"] > 0 and rec2.detail["volume_error_mm3"] < 1e-9
    assert len(op.twins) == d["duplicated_nodes"] + rec2.detail["duplicated_nodes"]
    assert len(non_manifold_edges(op.spec.tets, len(op.spec.points))) == 0


def test_grasp_retract_force_matches_bar_stiffness():
    e_pa, h = 5e3, 30.0
    spec = block_spec((3, 3, 3))                                           # 30 mm cube
    spec.fixed[:] = spec.points[:, 2] < 1e-9                           # clamped bottom
    spec.spring_k[:] = 0.0
    spec.youngs[:] = e_pa
    spec.poisson[:] = 0.3
    op = Surgery(spec)
    rec = op.grasp("g", at_mm=[15, 15, 45], radius_mm=27.0, stiffness_n_per_mm=50.0)
    assert rec.detail["held_nodes"] == 16                              # the whole top face
    with pytest.raises(ConfigError, match="holds no tissue"):
        op.grasp("far", at_mm=[15, 15, 90], radius_mm=5.0)
    out = op.retract("g", [[15, 15, 46.5]], step_mm=0.5)
    f = np.array(out.detail["force_history_n"])
    assert len(f) == 3 and np.all(np.diff(f) > 0)                      # force grows with the pull
    fz = out.detail["tool_force_n"][2]
    k_bar = e_pa * (30 * MM) ** 2 / (h * MM)                           # uniaxial E A / L, N/m
    assert -1.5 * k_bar * 1.5 * MM < fz < -0.95 * k_bar * 1.5 * MM     # tissue pulls back; clamp stiffens
    rel = op.release("g")
    assert rel.detail["tool_force_before_n"][2] == pytest.approx(fz, rel=1e-6)
    assert np.abs(op.x - op.spec.points).max() < 1e-6                  # springs back when released


def test_surgery_records_a_playable_series(tmp_path):
    spec, x = _tensioned_bar()
    table = LabelTable.default()
    spec.region[:] = table.id_of("liver")
    spec.region[np.linalg.norm(spec.points[spec.tets].mean(1) - [0.06, 0.02, 0.03], axis=1) < 0.012] = table.id_of("liver_tumor")
    op = Surgery(spec, x, table=table, recorder=Recorder(tmp_path))
    proc = Procedure.from_config(ProcedureConfig(name="t", steps=[
        {"action": "incision", "path_mm": [[30, -2, 40], [30, 42, 40]], "depth_mm": 12, "direction": [0, 0, -1]},
        {"action": "grasp", "at_mm": [25, 20, 40], "radius_mm": 8},
        {"action": "retract", "path_mm": [[22, 20, 44]], "step_mm": 1.0, "record_every": 2},
        {"action": "resect", "target": "liver_tumor", "margin": "5mm"},
        {"action": "release"}, {"action": "settle"}]))
    log = op.run(proc)
    assert [r.action for r in log] == ["incision", "grasp", "retract", "resect", "release", "settle"]
    pvd = (tmp_path / "procedure.pvd").read_text()
    files = [f for r in log for f in r.files if f.startswith("steps/")]
    assert len(files) == 6 + 2 and all(f'file="{f}"' in pvd for f in files)   # 2 extra retraction frames
    first = pv.read(tmp_path / "steps" / "01_incision.vtu")
    last = pv.read(tmp_path / files[-1])
    assert last.volume < 0.95 * first.volume                           # the resection took tissue
    assert np.isfinite(last.points).all()
    topo = pv.read(tmp_path / "topology" / "04_resect.vtu")
    assert topo.n_cells == len(op.spec.tets) and (topo.cell_data["alive"] == 0).any()
    assert (tmp_path / "topology" / "01_incision_cut.vtp").is_file()
    assert abs(total_volume(op.spec) - total_volume(spec)) < 1e-15
    assert log[3].detail["removed_elements"] > 0


def test_clip_marks_the_vessel_segment():
    spec = block_spec((4, 2, 2))
    cen = spec.points[spec.tets].mean(1) / MM
    vessel = np.abs(cen[:, 1] - 10) < 4
    spec.region[:] = 1
    spec.region[vessel] = LabelTable.default().id_of("portal_vein_and_splenic_vein")
    op = Surgery(spec, table=LabelTable.default())
    rec = op.clip("portal_vein_and_splenic_vein", [20, 10, 10], jaw_mm=8)
    assert rec.detail["elements"] == int((np.linalg.norm(cen[vessel] - [20, 10, 10], axis=1) <= 8).sum()) > 0
    assert op.clipped.sum() == rec.detail["elements"] and op.clipped[~vessel].sum() == 0
    with pytest.raises(ConfigError, match="misses"):
        op.clip("portal_vein_and_splenic_vein", [20, 10, 80], jaw_mm=5)


@pytest.mark.parametrize("steps, match", [
    ([{"action": "incision", "path_mm": [[0, 0, 0]], "depth_mm": 5}], "at least 2 points"),
    ([{"action": "incision", "path_mm": [[0, 0, 0], [1, 0, 0]], "depth_mm": -1}], "depth_mm"),
    ([{"action": "retract", "path_mm": [[0, 0, 0]]}], "grasp first"),
    ([{"action": "grasp", "at_mm": [0, 0]}], "at_mm"),
    ([{"action": "cauterize"}], "unknown action"),
    ([{"action": "resect", "margin": "ten mm"}], "margin"),
    ([{"action": "clip", "at_mm": [0, 0, 0], "jaws": 3}], "unknown field"),
])
def test_procedure_step_errors_are_one_line(steps, match):
    with pytest.raises(ConfigError, match=match) as err:
        Procedure.from_config(ProcedureConfig(name="bad", steps=steps))
    assert "\n" not in str(err.value)


def test_wedge_resection_file_parses():
    from surgtwin.resources import configs_dir

    proc = Procedure.load(configs_dir() / "procedure" / "wedge_resection.yaml")
    assert [s.action for s in proc.steps] == ["press", "incision", "grasp", "retract", "clip", "resect", "release",
                                             "settle"]
    assert proc.resections[0].margin_mm == 10.0 and isinstance(proc.resections[0], ResectionStep)


@pytest.mark.parametrize("override, match", [
    ("procedure.steps=[{action: retract, path_mm: [[0, 0, 0]]}]", "grasp first"),
    ("procedure.steps=[{action: settle}]", "no resect step"),
    ("procedure.steps=[{action: incision, path_mm: [[0, 0, 0], [1, 0, 0]], depth_mm: 0}]", "depth_mm"),
])
def test_cli_rejects_a_bad_procedure_before_any_stage(tmp_path, capsys, override, match):
    from surgtwin.cli import main

    rc = main(["simulate", str(tmp_path / "absent.vtu"), override])      # fails before reading the mesh
    err = capsys.readouterr().err.strip()
    assert rc != 0 and match in err and len(err.splitlines()) == 1


def test_topology_change_carries_supports_and_constraints():
    spec = block_spec((2, 1, 1))
    spec.spring_k[:] = 2.0
    spec.fixed[:] = spec.points[:, 0] < 1e-9
    spec.law[::2] = 2                                                   # mixed material laws (Mooney-Rivlin)
    spec.c01_ratio[::2] = 0.3
    ch = apply_incision(spec, None, [[10.0, -2.0, 10.0], [10.0, 12.0, 10.0]], 10.0, direction=[0, 0, -1])
    s = ch.spec
    assert np.array_equal(s.law, spec.law[ch.parent]) and np.array_equal(s.c01_ratio, spec.c01_ratio[ch.parent])
    assert ch.duplicated_nodes > 0
    assert s.spring_k.sum() == pytest.approx(spec.spring_k.sum())       # copies share their node's support
    assert np.array_equal(s.fixed[: len(spec.points)], spec.fixed)
    assert not s.fixed[len(spec.points):].any()                         # the cut plane is away from x = 0
    assert np.array_equal(s.region, spec.region[ch.parent])


def test_an_extended_incision_opens_like_one_cut():
    spec, x = _tensioned_bar()
    whole = Surgery(spec, x)
    whole.incise([[43.0, -2.0, 40.0], [43.0, 42.0, 40.0]], depth_mm=15.0, direction=[0, 0, -1])
    parts = Surgery(spec, x)
    parts.incise([[43.0, -2.0, 40.0], [43.0, 20.0, 40.0]], depth_mm=15.0, direction=[0, 0, -1])
    first = parts.wound_opening_mm()
    parts.incise([[43.0, 20.0, 40.0], [43.0, 42.0, 40.0]], depth_mm=15.0, direction=[0, 0, -1])
    assert parts.wound_opening_mm() > first                            # the longer wound gapes more
    assert parts.wound_opening_mm() == pytest.approx(whole.wound_opening_mm(), rel=0.05)
    assert len(parts.spec.tets) == len(whole.spec.tets)                # same elements split


def test_press_probe_force_grows_opposes_motion_and_lifts_off():
    """A rigid 10 mm probe pressed 3 mm into the top of a block on a fixed base: the tissue pushes back
    along +z, harder with depth, sideways forces cancel by symmetry, and the block returns to rest after."""
    spec = block_spec((8, 8, 4), size_mm=5.0)
    spec.fixed[:] = spec.points[:, 2] < 1e-9
    rest = spec.points.copy()
    op = Surgery(spec, rest.copy())
    top = 20.0
    rec = op.press("probe", [[20.0, 20.0, top + 10.5], [20.0, 20.0, top + 10.0 - 3.0]], radius_mm=10.0, step_mm=0.5)
    hist = np.array(rec.detail["force_history_n"])
    f = np.array(rec.detail["tool_force_n"])
    assert rec.detail["contact_nodes"] >= 5 and rec.detail["increments"] == 7
    assert hist[-1] > 0 and np.all(np.diff(hist[hist > 0]) > 0)          # harder the deeper it goes
    assert f[2] > 0.95 * np.linalg.norm(f)                              # pushes back up
    assert abs(f[0]) < 0.02 * f[2] and abs(f[1]) < 0.02 * f[2]          # centred probe: no side force
    assert np.abs(op.x - rest).max() < 1e-6                              # lifted off: back to rest
    with pytest.raises(ConfigError, match="inside the tissue"):
        op.press("probe", [[20.0, 20.0, top], [20.0, 20.0, top - 2.0]])


def test_press_step_from_a_procedure_file_is_validated():
    from surgtwin.config import ProcedureConfig
    from surgtwin.procedure import Procedure

    ok = Procedure.from_config(ProcedureConfig("p", [{"action": "press", "path_mm": [[0, 0, 10], [0, 0, 5]]},
                                                     {"action": "resect"}]))
    assert ok.steps[0].radius_mm == 5.0
    for bad, words in (({"action": "press", "path_mm": [[0, 0, 1]]}, "at least 2 points"),
                       ({"action": "press", "path_mm": [[0, 0, 1], [0, 0, 0]], "radius_mm": 0}, "radius_mm")):
        with pytest.raises(ConfigError, match=words):
            Procedure.from_config(ProcedureConfig("p", [bad, {"action": "resect"}]))


def test_territory_resection_removes_what_the_divided_branch_feeds():
    """A block of parenchyma with a vessel trunk along x and a side branch rising from its middle:
    dividing the branch removes the tissue nearer to it than to the trunk, cut on the equidistance
    surface by element splitting; the trunk stays, and nothing is lost to round-off."""
    from surgtwin.mesh import TetMesh
    from surgtwin.resection import plan_resection
    from surgtwin.sim.blocks import box_mesh

    pts, tets = box_mesh((12, 8, 8), (60.0, 40.0, 40.0))
    table = LabelTable.default()
    cen = pts[tets].mean(1)
    trunk = (np.abs(cen[:, 1] - 20) < 4) & (np.abs(cen[:, 2] - 12) < 4)
    branch = (np.abs(cen[:, 0] - 30) < 4) & (np.abs(cen[:, 1] - 20) < 4) & (cen[:, 2] > 12)
    labels = np.where(trunk | branch, table.id_of("portal_vein_and_splenic_vein"), table.id_of("liver"))
    mesh = TetMesh.from_arrays(pts, tets, labels, table)
    step = ResectionStep(target="portal_vein_and_splenic_vein", mode="territory", at_mm=[30.0, 20.0, 22.0])
    res = plan_resection(mesh, step)
    new = res.mesh
    vol = np.abs(new.tet_volumes_mm3())
    assert vol.sum() == pytest.approx(60.0 * 40.0 * 40.0, rel=1e-12)             # split, nothing lost
    gone = res.removed
    assert 0.1 < vol[gone].sum() / vol.sum() < 0.6
    c = new.points[new.tets].mean(1)
    d_branch = np.hypot(c[:, 0] - 30, c[:, 1] - 20)                             # distance to the branch axis
    d_trunk = np.hypot(c[:, 1] - 20, c[:, 2] - 12)
    high = c[:, 2] > 16
    assert (d_branch[gone & high] < d_trunk[gone & high] + 3.0).mean() > 0.95   # removed: fed by the branch
    assert (d_branch[~gone & high] > d_trunk[~gone & high] - 3.0).mean() > 0.95
    trunk_new = (np.abs(c[:, 1] - 20) < 4) & (np.abs(c[:, 2] - 12) < 3) & (np.abs(c[:, 0] - 30) > 8)
    assert not (gone & trunk_new).any()                                         # the trunk stays
    with pytest.raises(ConfigError, match="no vessel within"):
        plan_resection(mesh, ResectionStep(target="portal_vein_and_splenic_vein", mode="territory",
                                           at_mm=[5.0, 5.0, 35.0]))
    with pytest.raises(ConfigError, match="separates no branch"):
        plan_resection(mesh, ResectionStep(target="portal_vein_and_splenic_vein", mode="territory",
                                           at_mm=[1.0, 20.0, 12.0]))   # the end of the trunk
