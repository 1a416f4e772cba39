"""Test helpers: evaluate one energy Term (surgtwin.sim.terms) at numpy positions on a device."""
from __future__ import annotations

import numpy as np
import warp as wp


def warr(x, device, grad=False):
    return wp.array(np.asarray(x, np.float64), dtype=wp.vec3d, device=device, requires_grad=grad)


def term_energy(term, x, device):
    e = wp.zeros(1, dtype=wp.float64, device=device)
    term.add_energy(warr(x, device), e)
    return float(e.numpy()[0])


def term_forces(term, x, device):
    f = wp.zeros(len(x), dtype=wp.vec3d, device=device)
    term.add_forces(warr(x, device), f)
    return f.numpy().copy()


def term_hv(term, x, v, device):
    out = wp.zeros(len(x), dtype=wp.vec3d, device=device)
    term.add_hessian_product(warr(x, device), warr(v, device), out)
    return out.numpy().copy()


def term_diag(term, x, device):
    out = wp.zeros(len(x), dtype=wp.vec3d, device=device)
    term.add_diagonal(warr(x, device), out)
    return out.numpy().copy()


def rel(a, b):
    """Relative L2 difference of a from b."""
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))
