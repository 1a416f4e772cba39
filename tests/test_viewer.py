"""The rehearsal viewer: session/steps/worker/scene without Qt, and the Qt window driven under Xvfb.

The Qt part runs tests/viewer_driver.py in its own process (Xvfb via xvfb-run, or the display this
session has); it is skipped, with the reason, where neither Qt nor an X server is available.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from surgtwin.cli import main
from surgtwin.config import PhantomConfig, RunConfig
from surgtwin.errors import ConfigError
from surgtwin.pipeline import plan
from surgtwin.procedure import Procedure
from surgtwin.viewer import qt_available
from surgtwin.viewer.overlays import slice_rgb
from surgtwin.viewer.recording import Recording
from surgtwin.viewer.session import RehearsalSession
from surgtwin.viewer.steps import describe, incision_step, load_plan, resect_step, save_plan
from surgtwin.viewer.worker import FrameBuffer, run_job

VIRIDIS_ENDS = (np.array([68, 1, 84]), np.array([253, 231, 37]))
PLASMA_ENDS = (np.array([13, 8, 135]), np.array([240, 249, 33]))


def colour_bar_shows(image, ends, from_row=0.8) -> bool:
    """Both end colours of the colour map appear in the bottom band of ``image`` (the colour bar)."""
    bar = image[int(from_row * image.shape[0]):]
    return all((np.abs(bar - end).sum(axis=2) < 40).sum() > 20 for end in ends)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = RunConfig()
    cfg.case.phantom = PhantomConfig(spacing_mm=4.0)
    cfg.mesh.size_mm = 12.0
    cfg.mesh.surface_smoothing = 5
    cfg.report.images = False
    out = tmp_path_factory.mktemp("viewer") / "run"
    plan(cfg, out)
    return out


def surface_path(session, n=3):
    """Points on the top of the organ surface as it is now, far apart (what a user would click)."""
    import pyvista as pv

    grid = pv.UnstructuredGrid({pv.CellType.TETRA: session.mesh.tets[session.alive]}, session.positions_mm)
    p = np.asarray(grid.extract_surface(algorithm="dataset_surface").points)
    top = p[np.argsort(p[:, 2])[-60:]]
    order = np.argsort(top[:, 0])
    return top[order[[0, len(order) // 2, -1]]][:n]


def live_volume_mm3(s):
    return float(s.mesh.tet_volumes_mm3()[s.alive].sum())


def test_session_incision_in_a_worker_thread_cuts_the_mesh_and_undo_restores_it(run_dir):
    s = RehearsalSession.open(run_dir)
    assert s.equilibrated and [st["action"] for st in s.pending] == ["resect"]  # the run's own procedure
    s.pending.clear()
    step = incision_step(surface_path(s), 10.0)
    assert set(step) == {"action", "path_mm", "depth_mm"} and step["action"] == "incision"
    s.add_step(step)
    n0, m0, x0, vol0 = len(s.rest_mm), len(s.mesh.tets), s.positions_mm.copy(), live_volume_mm3(s)
    buf, seen, done = FrameBuffer(), [], threading.Event()
    result = {}

    def work():
        result["msg"] = run_job(s, "step", lambda p: (buf.put(p.frame), seen.append(p.relative_residual)))
        done.set()

    th = threading.Thread(target=work)
    th.start()
    turns, got = 0, 0
    while not done.is_set():     # the "UI" thread keeps turning while the solver works
        got += buf.take() is not None
        turns += 1
        time.sleep(0.002)
    th.join()
    assert turns > 1 and seen and seen[-1] <= s.cfg.solver.tol
    rec = s.surgery.log[-1].to_dict()
    # a real cut: elements split, nodes duplicated (the two lips), nothing removed, volume kept
    assert rec["action"] == "incision" and rec["duplicated_nodes"] > 0 and rec["split_elements"] > 0
    assert len(s.rest_mm) == len(s.positions_mm) > n0 and len(s.mesh.tets) > m0 and s.alive.all()
    twins = s.surgery.twins
    assert len(twins) == rec["duplicated_nodes"] and np.allclose(s.rest_mm[twins[:, 0]], s.rest_mm[twins[:, 1]])
    assert abs(live_volume_mm3(s) - vol0) < 1e-6 * vol0
    assert np.allclose(s.rest_mm[:n0], s.mesh.points[:n0]) and s.topology.mesh is s.mesh
    # re-equilibrated: the wound opened (twin nodes on the two lips apart) and the tissue moved
    gap = np.linalg.norm(s.positions_mm[twins[:, 0]] - s.positions_mm[twins[:, 1]], axis=1)
    assert gap.max() > 0.1 and rec["wound_opening_mm"] == pytest.approx(gap.max(), abs=1e-3)
    assert np.abs(s.positions_mm[:n0] - x0).max() > 0.1
    assert s.applied == [step] and not s.pending and "nodes duplicated" in result["msg"]
    got += buf.take() is not None
    assert 1 <= got <= len(seen) and buf.take() is None         # newest frames, each once
    last = s.recording[-1]
    assert last.topology is s.topology and len(last.positions_mm) == len(s.rest_mm)
    assert s.recording[0].topology is not s.topology             # playback keeps the mesh before the cut
    assert s.undo() and len(s.rest_mm) == n0 and len(s.mesh.tets) == m0 and np.allclose(s.positions_mm, x0)
    assert s.pending == [step] and not s.undo() and len(s.surgery.twins) == 0


def test_incision_outside_the_organ_and_bad_steps_are_refused(run_dir):
    s = RehearsalSession.open(run_dir)
    far = s.rest_mm.max(axis=0) + 200.0
    s.pending.clear()
    s.add_step(incision_step([far, far + 10.0], 5.0))
    n0 = len(s.rest_mm)
    with pytest.raises(ConfigError, match="not near the organ surface|cuts no tissue"):
        run_job(s, "step", lambda p: None)
    assert len(s.pending) == 1 and not s.applied and len(s.rest_mm) == n0      # nothing changed
    for bad in (lambda: incision_step([[0, 0, 0]], 5.0), lambda: incision_step([[0, 0, 0], [1, 1, 1]], 0.0),
                lambda: resect_step(mode="cube"), lambda: resect_step(margin_mm=-1)):
        with pytest.raises(ConfigError):
            bad()


def test_plan_saved_by_the_viewer_replays_with_simulate(run_dir, tmp_path):
    import pyvista as pv

    s = RehearsalSession.open(run_dir)
    s.pending.clear()
    steps = [incision_step(surface_path(s), 8.0), resect_step("liver_tumor", 8.0, "plane", [0.0, 0.0, 1.0])]
    path = save_plan(tmp_path / "plans" / "procedure" / "myplan.yaml", "myplan", steps)
    name, back = load_plan(path)
    assert name == "myplan" and back == steps and "incision" in describe(back[0]) and "plane" in describe(back[1])
    assert Procedure.load(path).steps[0].depth_mm == 8.0 and Procedure.load(path).steps[1].normal == [0.0, 0.0, 1.0]
    with pytest.raises(ConfigError):
        save_plan(tmp_path / "plan.json", "x", steps)
    for st in back:                                   # the viewer runs the plan ...
        s.add_step(st)
    run_job(s, "run", lambda p: None)
    out = tmp_path / "replay"                         # ... and simulate replays it from the same pre-op state
    assert main(["simulate", str(run_dir / "mesh"), "--labels", str(run_dir / "labels.nii.gz"), "-o", str(out),
                 f"hydra.searchpath=[file://{tmp_path / 'plans'}]", "procedure=myplan"]) == 0
    replayed = json.loads((out / "sim" / "steps.json").read_text())
    assert replayed["procedure"] == "myplan" and [r["action"] for r in replayed["steps"]] == ["incision", "resect"]
    cut = replayed["steps"][0]
    assert cut["duplicated_nodes"] == s.surgery.log[0].detail["duplicated_nodes"] > 0
    assert replayed["steps"][1]["mode"] == "plane" and replayed["steps"][1]["margin_mm"] == 8.0
    post = pv.read(out / "sim" / "postop.vtu")
    assert post.n_points == len(s.rest_mm) and post.n_cells == len(s.mesh.tets)


def test_scene_overlay_screenshot_offscreen(run_dir):
    import pyvista as pv

    from surgtwin.report import headless_rendering
    from surgtwin.viewer.scene import Scene

    headless_rendering()
    s = RehearsalSession.open(run_dir)
    pl = pv.Plotter(off_screen=True, window_size=[480, 400])
    try:
        scene = Scene(pl, s)
        scene.set_reference("rest")                      # pre-op sag under gravity, mm
        scene.set_overlay("none")
        off = pl.screenshot(None).astype(int)
        scene.set_overlay("displacement")
        on = pl.screenshot(None).astype(int)
        values, style = scene.overlay_values()
        assert values.max() > 0.1 and style.title.startswith("displacement")
        changed = np.any(np.abs(on - off) > 30, axis=2).mean()
        assert changed > 0.02, changed                   # the organ is coloured now
        assert colour_bar_shows(on, VIRIDIS_ENDS, 0.85)   # the colour bar at the bottom
        scene.set_overlay("stress")                      # von Mises of the run's pre-op state, kPa
        stress = pl.screenshot(None).astype(int)
        kpa, style = scene.overlay_values()
        assert style.on == "cell" and style.title == "von Mises stress [kPa]" and len(kpa) == scene.organ_surface().n_cells
        assert kpa.max() > 0.01 and style.clim[1] == pytest.approx(np.percentile(kpa, 99))
        assert s.stress_pa is not None and s.frame("again").stress_pa is not None   # computed once, then carried
        assert np.any(np.abs(stress - off) > 30, axis=2).mean() > 0.02
        assert np.any(np.abs(stress - on) > 30, axis=2).mean() > 0.01
        assert colour_bar_shows(stress, PLASMA_ENDS, 0.85) and not colour_bar_shows(off, PLASMA_ENDS, 0.85)
        scene.set_overlay("strain")
        assert scene.overlay_values()[1].on == "cell"
        scene.set_overlay("margin")
        d, _ = scene.overlay_values()
        assert d.min() >= 0 and np.isfinite(d).all()
        assert "closest-labels" in pl.actors                # closest-approach marker
        n_cells = scene.organ_surface().n_cells
        s.add_step(resect_step("liver_tumor", 10.0))
        run_job(s, "run", lambda p: scene.show_frame(p.frame))
        assert scene.organ_surface().n_cells != n_cells   # the remnant's surface was re-extracted
        assert scene.mesh is s.mesh and scene.organ_surface().n_points > 0
        assert len(scene.overlay_values()[0]) == scene.organ_surface().n_points   # margin overlay on the cut mesh
        scene.set_clip([0, 1, 0], scene.organ_surface().center)
        clipped = pl.screenshot(None).astype(int)
        assert np.any(np.abs(clipped - on) > 30, axis=2).mean() > 0.01
    finally:
        pl.close()


def test_recording_and_movie_roundtrip(run_dir, tmp_path):
    from surgtwin.viewer.movie import write_movie

    s = RehearsalSession.open(run_dir)
    assert [f.label for f in s.recording.frames] == ["start", "pre-op (run)", "post-op (run)"]
    path = s.recording.save(tmp_path / "rec.npz")
    back = Recording.load(path)
    assert len(back) == 3 and np.allclose(back[2].positions_mm, s.recording[2].positions_mm, atol=1e-3)
    # the post-op frame is on the run's cut mesh (its own topology, more nodes), the others on the mesh opened
    assert back[0].topology is back[1].topology is not back[2].topology
    assert len(back[2].positions_mm) == len(back[2].topology.mesh.points) > len(back[1].positions_mm)
    assert np.allclose(back[2].topology.mesh.points[:len(s.rest_mm)], s.rest_mm, atol=1e-9)
    assert not back[2].alive.all() and back[1].alive.all()
    # von Mises stress: the post-op frame's from the run's risk.vtu (remnant only), kept by the NPZ
    post = s.recording[2].stress_pa
    assert post is not None and post.max() > 0 and np.all(post[~s.recording[2].alive] == 0)
    assert np.allclose(back[2].stress_pa, post, rtol=1e-5)
    pre = s.recording[1].stress_pa                   # pre-op: computed when the run is opened, saved with it
    assert pre is not None and pre.max() > 0 and np.allclose(back[1].stress_pa, pre, rtol=1e-5)
    frames = [np.full((33, 41, 3), v, np.uint8) for v in (0, 128, 255)]
    gif = write_movie(tmp_path / "m.gif", frames, fps=5)
    import imageio.v2 as imageio

    assert len(imageio.mimread(gif)) == 3
    with pytest.raises(ConfigError):
        write_movie(tmp_path / "m.avi", frames)


def test_slice_outlines_use_label_colours():
    ct = np.zeros((20, 20))
    lab = np.zeros((20, 20), int)
    lab[5:15, 5:15] = 5
    rgb = slice_rgb(ct, lab, {5: (221, 130, 101)})
    outline = np.all(rgb == (221, 130, 101), axis=2)
    assert outline[5, 5:15].all() and outline[14, 5:15].all() and not outline[10, 10] and not outline[0, 0]


def _display_command():
    if os.environ.get("DISPLAY"):
        return []
    xvfb = shutil.which("xvfb-run")
    return [xvfb, "-a", "-s", "-screen 0 1280x900x24"] if xvfb else None


def test_qt_viewer_incision_run_undo_screenshots_movie(run_dir, tmp_path):
    reason = qt_available()
    if reason:
        pytest.skip(reason)
    prefix = _display_command()
    if prefix is None:
        pytest.skip("no X display and no xvfb-run: install xvfb (bash .ci/setup does where apt works)")
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "PYVISTA_OFF_SCREEN")}
    driver = Path(__file__).with_name("viewer_driver.py")
    proc = subprocess.run(prefix + [sys.executable, str(driver), str(run_dir), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["tabs"] == ["Procedure", "Structures", "Risk", "Materials", "CT slice", "Help"]
    # nothing is drawn while nothing changes; a mouse drag turns the camera with one render per frame shown
    assert r["idle_renders"] == 0 and r["drag_camera_moved_mm"] > 1.0
    assert 1 <= r["drag_frames_shown"] <= 5 and r["drag_renders"] == r["drag_frames_shown"]   # 5 mouse events
    assert {"liver", "liver_tumor", "portal_vein_and_splenic_vein"} <= set(r["structures"])
    assert "bones" in r["structures"]                      # vertebrae and ribs of the label map, one surface
    assert r["overlay_after_key_2"] == "strain" and r["overlay_after_key_1"] == "displacement"
    assert r["overlay_after_key_5"] == "stress"
    assert r["slice_rgb_colours"] > 20
    # incision picked on the rendered organ, saved with the procedure-file key names
    assert r["picked"] >= 2 and r["committed"] and r["incision_keys"] == ["action", "depth_mm", "path_mm"]
    # the worker ran while the UI event loop kept turning; a second job was refused meanwhile
    assert r["started"] and r["second_start_refused"] and r["ticks_during_solve"] >= 2
    assert r["applied"] == ["incision"] and "Newton iterations" in r["status"]
    # a real cut: more nodes (the duplicated lips) and elements (split), volume kept, the wound opened,
    # the scene rebuilt on the cut mesh (the lips add surface triangles)
    assert r["nodes_after"] > r["nodes_before"] and r["elements_after"] > r["elements_before"]
    assert r["duplicated_nodes"] > 0 and r["wound_opening_mm"] > 0.1 and r["scene_on_cut_mesh"]
    assert abs(r["volume_after"] - r["volume_before"]) < 1e-6 * r["volume_before"]
    assert r["cells_after"] > r["cells_before"] and r["max_node_move_mm"] > 1e-3
    # grasp and drag: the tool held tissue, moved 3 drag steps, the force on it is shown
    assert r["grasp_added"] and r["tool_moves"] == 3 and r["tool_move_mm"] == pytest.approx(9.0, abs=1e-6)
    assert r["retraction_added"] and r["tool_pending"] == ["grasp", "retract"]
    assert r["applied_after_tool"] == ["incision", "grasp", "retract"], r["tool_status"]
    assert r["tool_force_n"] > 1e-3 and r["tool_force_text"].startswith("grasper") and r["tool_force_text"].endswith("N")
    # the tool's handle dragged with the mouse: the retraction ran at once and the held tissue followed the tool
    assert r["handle_at_tool_tip"] and r["mouse_drag_started_job"] and r["new_handle_at_drop"]
    assert r["handle_drag_mm"] > 3.0 and r["handle_drag_up"] > 0.9, r
    assert r["applied_after_mouse_drag"] == ["incision", "grasp", "retract", "retract"], r["mouse_drag_status"]
    assert r["held_follow_mm"] > 0.3 * r["handle_drag_mm"], (r["held_follow_mm"], r["handle_drag_mm"])
    assert r["plane_through_tumour_refused"] and "cuts the tumour" in r["plane_refusal_message"]
    assert r["plane_added"] and r["plane_step"]["mode"] == "plane" and r["plane_step"]["margin_mm"] > 0
    assert r["plane_removed"] and r["pending_after_remove"] == []
    assert r["resection_added"] and r["volume_after_resection"] < 0.99 * r["volume_after"]
    assert "remnant parenchyma" in r["risk_rows"] and "margin achieved" in r["risk_rows"]
    assert r["volume_after_undo"] == pytest.approx(r["volume_after"]) and r["pending_after_undo"] == ["resect"]
    assert r["nodes_after_undo"] == r["nodes_after"]
    assert r["timeline_max"] >= 4
    # screenshots: the overlay changes the picture and brings its colour bar
    import imageio.v2 as imageio

    none, disp = (imageio.imread(tmp_path / f"{n}.png")[..., :3].astype(int) for n in ("none", "displacement"))
    assert np.any(np.abs(disp - none) > 30, axis=2).mean() > 0.02
    assert colour_bar_shows(disp, VIRIDIS_ENDS)
    strain = imageio.imread(tmp_path / "strain.png")[..., :3].astype(int)
    assert np.any(np.abs(strain - disp) > 30, axis=2).mean() > 0.01
    # von Mises stress from the live solve: its own colours and colour bar
    stress = imageio.imread(tmp_path / "stress.png")[..., :3].astype(int)
    assert r["stress_title"] == "von Mises stress [kPa]" and r["stress_kpa_max"] > 0.01
    assert r["stress_kpa_max"] <= r["stress_frame_pa_max"] / 1e3 + 1e-9   # the surface elements are among all
    assert np.any(np.abs(stress - none) > 30, axis=2).mean() > 0.02 and np.any(np.abs(stress - disp) > 30, axis=2).mean() > 0.01
    assert colour_bar_shows(stress, PLASMA_ENDS) and not colour_bar_shows(none, PLASMA_ENDS)
    plan_file = tmp_path / "plans" / "procedure" / "viewer_plan.yaml"
    name, steps = load_plan(plan_file)
    assert [st["action"] for st in steps] == ["incision", "grasp", "retract", "retract", "resect"]
    assert len(steps[0]["path_mm"]) == r["picked"] and len(steps[2]["path_mm"]) == 3 and len(steps[3]["path_mm"]) == 1
    assert [st.action for st in Procedure.load(plan_file).steps] == ["incision", "grasp", "retract", "retract", "resect"]
    movie = Path(r["movie"])
    assert movie.is_file() and movie.stat().st_size > 1000


def test_without_qt_the_plain_window_is_the_fallback_with_a_reason(run_dir, monkeypatch):
    import surgtwin.viewer as viewer
    from surgtwin.errors import InputError

    monkeypatch.setattr(viewer, "qt_available", lambda: "the Qt viewer needs the 'viewer' extra (PySide6 is missing)")
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    said = []
    with pytest.raises(InputError, match="display"):       # the plain window, which needs a display too
        viewer.view(run_dir, fallback_message=said.append)
    assert said and "viewer' extra" in said[0] and "plain PyVista window" in said[0]
    with pytest.raises(InputError, match="viewer' extra"):   # the phantom needs the Qt viewer
        viewer.view(None)
    assert main(["view", str(run_dir / "nope")]) != 0
