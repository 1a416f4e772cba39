"""Research API (surgtwin.simgrid): pyvista grid in mm -> Model -> results grid; the README example runs."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv

from surgtwin.errors import InputError
from surgtwin.sim import lame_parameters
from surgtwin.simgrid import result_grid, spec_from_arrays, spec_from_grid, von_mises

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- example: simgrid -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its simgrid example"
    return m.group(1)


def test_readme_example_runs(capsys):
    ns = {}
    exec(compile(readme_example(), "README-simgrid", "exec"), ns)
    out, report, model = ns["out"], ns["report"], ns["model"]
    assert report.converged
    assert set(model.spec.law.tolist()) == {0, 2} and model.spec.volumetric == "anp"
    for name in ("von_mises_pa", "max_principal_strain", "volume_ratio", "label"):
        assert out.cell_data[name].shape == (out.n_cells,)
    d = out.point_data["displacement_mm"]
    assert d.shape == (out.n_points, 3) and np.all(d[ns["grid"].points[:, 2] == 0.0] == 0.0)
    top = out.points[:, 2] == out.points[:, 2].max()
    assert d[top, 2].mean() < -0.1                                   # it sagged under its own weight [mm]
    assert np.all(np.abs(out.cell_data["volume_ratio"] - 1.0) < 0.05)  # nu = 0.49: nearly volume-preserving
    assert "converged True" in capsys.readouterr().out


def block_grid():
    grid = pv.ImageData(dimensions=(3, 4, 3), spacing=(10.0, 7.0, 9.0)).to_tetrahedra()
    grid.cell_data["label"] = np.ones(grid.n_cells, np.int32)
    return grid


def test_cell_arrays_units_and_orientation():
    grid = block_grid()
    grid.cell_data["youngs_pa"] = np.full(grid.n_cells, 4000.0)
    grid.cell_data["poisson"] = np.full(grid.n_cells, 0.4)
    grid.cell_data["density_kg_m3"] = np.full(grid.n_cells, 1000.0)
    grid.cell_data["law"] = np.arange(grid.n_cells) % 3
    spec = spec_from_grid(grid)
    assert np.allclose(spec.points, grid.points * 1e-3)                # mm -> m
    assert spec.law.tolist() == (np.arange(grid.n_cells) % 3).tolist()
    model = spec.finalize("cpu")                                      # rejects inverted rest elements
    assert np.isclose(model.rest_volume.sum(), 20 * 21 * 18 * 1e-9)
    flipped = spec_from_arrays(grid.points, grid.cells_dict[pv.CellType.TETRA][:, [0, 2, 1, 3]], youngs_pa=4000.0,
                               poisson=0.4, density=1000.0)
    assert np.isclose(flipped.finalize("cpu").rest_volume.sum(), model.rest_volume.sum())


def test_uniaxial_stress_in_result_grid():
    """Homogeneous uniaxial state: von Mises = |sigma11| = |P11| l / J with P11 from the stable Neo-Hookean
    closed form (lateral stretch s from P22 = 0), strain and J exact."""
    grid = block_grid()
    spec = spec_from_grid(grid, materials={1: {"youngs_kpa": 5.0, "poisson": 0.45, "density_kg_m3": 1000}})
    model = spec.finalize("cpu")
    lam = 1.3
    mu, lame = lame_parameters(5000.0, 0.45)
    lam_s = lame + mu
    alpha = 1 + mu / lam_s
    s = np.sqrt((alpha - mu / (lam_s * lam)) / lam)
    p11 = mu * (lam - s * s / lam)
    out = result_grid(model, model.state(spec.points @ np.diag([lam, s, s])), deformed=True)
    j = lam * s * s
    assert np.allclose(out.cell_data["von_mises_pa"], abs(p11) * lam / j, rtol=1e-9)
    assert np.allclose(out.cell_data["volume_ratio"], j, rtol=1e-12)
    assert np.allclose(out.cell_data["max_principal_strain"], (lam * lam - 1) / 2, rtol=1e-10)
    assert np.allclose(out.points, spec.points @ np.diag([lam, s, s]) * 1e3)
    assert np.isclose(von_mises(np.diag([1.0, 1.0, 1.0])), 0.0) and np.isclose(von_mises(np.diag([2.0, 0, 0])), 2.0)


def test_bad_input():
    grid = block_grid()
    with pytest.raises(InputError, match="lacks cell arrays"):
        spec_from_grid(grid)
    with pytest.raises(InputError, match="region label 1"):
        spec_from_grid(grid, materials={2: {"youngs_kpa": 1, "poisson": 0.3, "density_kg_m3": 1000}})
    with pytest.raises(InputError, match="unknown material law"):
        spec_from_grid(grid, materials={1: {"youngs_kpa": 1, "poisson": 0.3, "density_kg_m3": 1000, "law": "x"}})
    with pytest.raises(InputError, match="linear tetrahedra"):
        spec_from_grid(pv.ImageData(dimensions=(3, 3, 3)).cast_to_unstructured_grid())


def test_model_file_keeps_laws(tmp_path):
    """biomech.save_model/load_model carry the law, c01_ratio and volumetric choice."""
    from surgtwin.biomech import load_model, save_model

    grid = block_grid()
    spec = spec_from_arrays(grid.points, grid.cells_dict[pv.CellType.TETRA], youngs_pa=4000.0, poisson=0.49,
                            density=1000.0, law=np.arange(grid.n_cells) % 3, c01_ratio=0.2, volumetric="anp",
                            fixed=grid.points[:, 2] == 0)
    back = load_model(save_model(spec, tmp_path / "model.vtu"))
    assert back.law.tolist() == spec.law.tolist() and np.allclose(back.c01_ratio, 0.2)
    assert back.volumetric == "anp" and np.array_equal(back.fixed, spec.fixed)
    assert np.allclose(back.points, spec.points)
    import json
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["laws"] == ["corotational", "mooney_rivlin", "stable_neo_hookean"] and meta["volumetric"] == "anp"
