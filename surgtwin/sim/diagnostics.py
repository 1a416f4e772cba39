"""Launchers for the per-element diagnostics in ``kernels.diagnostics`` (numpy out, at the edge)."""
from __future__ import annotations

import numpy as np
import warp as wp

from kernels import diagnostics as kd

from .model import Model, State


def element_stress(model: Model, state: State) -> tuple[np.ndarray, np.ndarray]:
    """Von Mises Cauchy stress [Pa] and max principal Green-Lagrange strain [-] per element, shape (m,).

    Dead (resected) elements report 0 for both."""
    n = len(model.spec.tets)
    vm = wp.zeros(n, dtype=wp.float64, device=model.device)
    strain = wp.zeros(n, dtype=wp.float64, device=model.device)
    wp.launch(kd.eval_tet_stress, dim=n, inputs=[model.elements, state.x, vm, strain], device=model.device)
    return vm.numpy(), strain.numpy()
