"""Tetrahedral hyperelasticity: energy, forces, tangent products, Jacobi diagonal, strain and stress.

The material law of each element is ``TetModel.law[e]`` with parameters ``TetModel.params[e]``
(kernels.materials: stable Neo-Hookean, linear co-rotational, Mooney-Rivlin). The default, stable
Neo-Hookean (Smith, Goes & Kim 2018, without the log term),
    Psi(F) = mu/2 (tr(F^T F) - 3) + lam/2 (J - alpha)^2,  alpha = 1 + mu/lam,
is rest-stable, defined for inverted elements, and linearises to Lame (mu, lam - mu).
Element e with nodes (x0..x3): F = [x1-x0, x2-x0, x3-x0] Dm_inv; node gradients g_a are the rows of
Dm_inv (a = 1..3) and g_0 = -(g_1 + g_2 + g_3). Force on node a: -vol * P(F) g_a, scattered by
``add_node_vectors`` from the one product vol P Dm_inv^T (its columns are P g_1..P g_3).
Units: whatever the caller uses consistently (surgtwin.sim uses SI: m, Pa, kg).
"""
import warp as wp

from .materials import (cofactor, cofactor_differential, snh_energy_density, snh_stress,
                        snh_stress_differential, tet_energy_density, tet_stress, tet_stress_differential)

# the material functions stay importable from here (ke.snh_stress, ke.tet_stress, ...)
__all__ = ["TetModel", "add_node_vectors", "cofactor", "cofactor_differential", "deformation_gradient",
           "eval_tet_cauchy_stress", "eval_tet_energy", "eval_tet_forces", "eval_tet_hessian_diagonal",
           "eval_tet_hessian_product", "eval_tet_strain", "node_gradient", "snh_energy_density", "snh_stress",
           "snh_stress_differential", "tet_energy_density", "tet_stress", "tet_stress_differential"]


@wp.struct
class TetModel:
    """The element arrays of a Model: topology, rest shape inverse, rest volume, materials, alive mask."""

    tets: wp.array(dtype=wp.vec4i)
    dm_inv: wp.array(dtype=wp.mat33d)
    vol: wp.array(dtype=wp.float64)
    mu: wp.array(dtype=wp.float64)   # small-strain shear modulus of every law [Pa]
    lam: wp.array(dtype=wp.float64)  # Lame lambda + mu of the small-strain law [Pa] (stable Neo-Hookean lambda)
    alive: wp.array(dtype=wp.int32)
    law: wp.array(dtype=wp.int32)      # materials.LAW_* per element
    params: wp.array(dtype=wp.vec3d)   # law parameters per element [Pa] (see kernels.materials)


@wp.func
def deformation_gradient(x: wp.array(dtype=wp.vec3d), t: wp.vec4i, dm_inv: wp.mat33d):
    x0 = x[t[0]]
    ds = wp.matrix_from_cols(x[t[1]] - x0, x[t[2]] - x0, x[t[3]] - x0)
    return ds @ dm_inv


@wp.func
def node_gradient(dm_inv: wp.mat33d, a: int):
    if a == 0:
        return -(dm_inv[0] + dm_inv[1] + dm_inv[2])
    return dm_inv[a - 1]


@wp.func
def add_node_vectors(out: wp.array(dtype=wp.vec3d), t: wp.vec4i, dm_inv: wp.mat33d, p: wp.mat33d):
    """out[t[a]] += p g_a for the four nodes: the columns of h = p Dm_inv^T are p g_1..p g_3, and
    p g_0 = -(their sum) (one 3x3 product instead of four matrix-vector products)."""
    h = p @ wp.transpose(dm_inv)
    h1 = wp.vec3d(h[0, 0], h[1, 0], h[2, 0])
    h2 = wp.vec3d(h[0, 1], h[1, 1], h[2, 1])
    h3 = wp.vec3d(h[0, 2], h[1, 2], h[2, 2])
    wp.atomic_add(out, t[0], -(h1 + h2 + h3))
    wp.atomic_add(out, t[1], h1)
    wp.atomic_add(out, t[2], h2)
    wp.atomic_add(out, t[3], h3)


@wp.kernel
def eval_tet_energy(m: TetModel, x: wp.array(dtype=wp.vec3d), energy: wp.array(dtype=wp.float64)):
    e = wp.tid()
    if m.alive[e] == 0:
        return
    f = deformation_gradient(x, m.tets[e], m.dm_inv[e])
    wp.atomic_add(energy, 0, m.vol[e] * tet_energy_density(f, m.law[e], m.params[e]))


@wp.kernel
def eval_tet_forces(m: TetModel, x: wp.array(dtype=wp.vec3d), forces: wp.array(dtype=wp.vec3d)):
    """forces[a] += -vol P g_a (internal elastic force, accumulated)."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    p = tet_stress(deformation_gradient(x, t, dmi), m.law[e], m.params[e])
    add_node_vectors(forces, t, dmi, -m.vol[e] * p)


@wp.kernel
def eval_tet_hessian_product(m: TetModel, x: wp.array(dtype=wp.vec3d), dx: wp.array(dtype=wp.vec3d),
                             out: wp.array(dtype=wp.vec3d)):
    """out += K(x) dx, K the tangent stiffness (Hessian of the elastic energy)."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    f = deformation_gradient(x, t, dmi)
    df = deformation_gradient(dx, t, dmi)   # the same linear map applied to the increment: dF
    dp = tet_stress_differential(f, df, m.law[e], m.params[e])
    add_node_vectors(out, t, dmi, m.vol[e] * dp)


@wp.kernel
def eval_tet_hessian_diagonal(m: TetModel, x: wp.array(dtype=wp.vec3d), diag: wp.array(dtype=wp.vec3d)):
    """diag[a] += diagonal of the element tangent (for Jacobi preconditioning), clamped >= 0."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    f = deformation_gradient(x, t, dmi)
    for a in range(4):
        g = node_gradient(dmi, a)
        d = wp.vec3d()
        for i in range(3):
            ei = wp.vec3d()
            ei[i] = wp.float64(1.0)
            df = wp.outer(ei, g)
            d[i] = wp.max(m.vol[e] * wp.ddot(tet_stress_differential(f, df, m.law[e], m.params[e]), df), wp.float64(0.0))
        wp.atomic_add(diag, t[a], d)


@wp.kernel
def eval_tet_strain(m: TetModel, x: wp.array(dtype=wp.vec3d), max_principal: wp.array(dtype=wp.float64),
                    jacobian: wp.array(dtype=wp.float64)):
    """Max principal Green-Lagrange strain and volume ratio J per element (0 and 1 for dead ones)."""
    e = wp.tid()
    if m.alive[e] == 0:
        max_principal[e] = wp.float64(0.0)
        jacobian[e] = wp.float64(1.0)
        return
    f = deformation_gradient(x, m.tets[e], m.dm_inv[e])
    green = wp.float64(0.5) * (wp.transpose(f) @ f - wp.identity(n=3, dtype=wp.float64))
    q, ev = wp.eig3(green)
    max_principal[e] = wp.max(ev[0], wp.max(ev[1], ev[2]))
    jacobian[e] = wp.determinant(f)


@wp.kernel
def eval_tet_cauchy_stress(m: TetModel, x: wp.array(dtype=wp.vec3d), sigma: wp.array(dtype=wp.mat33d)):
    """Cauchy stress sigma = P F^T / J per element [Pa] (zero for dead or degenerate elements)."""
    e = wp.tid()
    sigma[e] = wp.mat33d()
    if m.alive[e] == 0:
        return
    f = deformation_gradient(x, m.tets[e], m.dm_inv[e])
    j = wp.determinant(f)
    if j != wp.float64(0.0):
        sigma[e] = tet_stress(f, m.law[e], m.params[e]) @ wp.transpose(f) / j
