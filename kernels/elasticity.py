"""Tetrahedral hyperelasticity: stable Neo-Hookean energy, forces, tangent products and strain.

Energy density (Smith, Goes & Kim 2018, without the log term):
    Psi(F) = mu/2 (tr(F^T F) - 3) + lam/2 (J - alpha)^2,  alpha = 1 + mu/lam,
which is rest-stable, defined for inverted elements, and linearises to Lame (mu, lam - mu).
Element e with nodes (x0..x3): F = [x1-x0, x2-x0, x3-x0] Dm_inv; node gradients g_a are the rows of
Dm_inv (a = 1..3) and g_0 = -(g_1 + g_2 + g_3). Force on node a: -vol * P(F) g_a.
Units: whatever the caller uses consistently (surgtwin.sim uses SI: m, Pa, kg).
"""
import warp as wp


@wp.struct
class TetModel:
    """The element arrays of a Model: topology, rest shape inverse, rest volume, materials, alive mask."""

    tets: wp.array(dtype=wp.vec4i)
    dm_inv: wp.array(dtype=wp.mat33d)
    vol: wp.array(dtype=wp.float64)
    mu: wp.array(dtype=wp.float64)
    lam: wp.array(dtype=wp.float64)  # stable Neo-Hookean lambda (= Lame lambda + mu)
    alive: wp.array(dtype=wp.int32)


@wp.func
def deformation_gradient(x: wp.array(dtype=wp.vec3d), t: wp.vec4i, dm_inv: wp.mat33d):
    x0 = x[t[0]]
    ds = wp.matrix_from_cols(x[t[1]] - x0, x[t[2]] - x0, x[t[3]] - x0)
    return ds @ dm_inv


@wp.func
def cofactor(f: wp.mat33d):
    c0 = wp.vec3d(f[0, 0], f[1, 0], f[2, 0])
    c1 = wp.vec3d(f[0, 1], f[1, 1], f[2, 1])
    c2 = wp.vec3d(f[0, 2], f[1, 2], f[2, 2])
    return wp.matrix_from_cols(wp.cross(c1, c2), wp.cross(c2, c0), wp.cross(c0, c1))


@wp.func
def cofactor_differential(f: wp.mat33d, df: wp.mat33d):
    c0 = wp.vec3d(f[0, 0], f[1, 0], f[2, 0])
    c1 = wp.vec3d(f[0, 1], f[1, 1], f[2, 1])
    c2 = wp.vec3d(f[0, 2], f[1, 2], f[2, 2])
    d0 = wp.vec3d(df[0, 0], df[1, 0], df[2, 0])
    d1 = wp.vec3d(df[0, 1], df[1, 1], df[2, 1])
    d2 = wp.vec3d(df[0, 2], df[1, 2], df[2, 2])
    return wp.matrix_from_cols(wp.cross(d1, c2) + wp.cross(c1, d2),
                               wp.cross(d2, c0) + wp.cross(c2, d0),
                               wp.cross(d0, c1) + wp.cross(c0, d1))


@wp.func
def snh_energy_density(f: wp.mat33d, mu: wp.float64, lam: wp.float64):
    alpha = wp.float64(1.0) + mu / lam
    j = wp.determinant(f)
    ic = wp.ddot(f, f)
    return wp.float64(0.5) * mu * (ic - wp.float64(3.0)) + wp.float64(0.5) * lam * (j - alpha) * (j - alpha)


@wp.func
def snh_stress(f: wp.mat33d, mu: wp.float64, lam: wp.float64):
    """First Piola-Kirchhoff stress P = dPsi/dF."""
    alpha = wp.float64(1.0) + mu / lam
    j = wp.determinant(f)
    return mu * f + lam * (j - alpha) * cofactor(f)


@wp.func
def snh_stress_differential(f: wp.mat33d, df: wp.mat33d, mu: wp.float64, lam: wp.float64):
    """dP = (d^2 Psi / dF^2) : dF."""
    alpha = wp.float64(1.0) + mu / lam
    j = wp.determinant(f)
    cof = cofactor(f)
    return mu * df + lam * wp.ddot(cof, df) * cof + lam * (j - alpha) * cofactor_differential(f, df)


@wp.func
def node_gradient(dm_inv: wp.mat33d, a: int):
    if a == 0:
        return -(dm_inv[0] + dm_inv[1] + dm_inv[2])
    return dm_inv[a - 1]


@wp.kernel
def eval_tet_energy(m: TetModel, x: wp.array(dtype=wp.vec3d), energy: wp.array(dtype=wp.float64)):
    e = wp.tid()
    if m.alive[e] == 0:
        return
    f = deformation_gradient(x, m.tets[e], m.dm_inv[e])
    wp.atomic_add(energy, 0, m.vol[e] * snh_energy_density(f, m.mu[e], m.lam[e]))


@wp.kernel
def eval_tet_forces(m: TetModel, x: wp.array(dtype=wp.vec3d), forces: wp.array(dtype=wp.vec3d)):
    """forces[a] += -vol P g_a (internal elastic force, accumulated)."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    p = snh_stress(deformation_gradient(x, t, dmi), m.mu[e], m.lam[e])
    for a in range(4):
        wp.atomic_add(forces, t[a], -m.vol[e] * (p @ node_gradient(dmi, a)))


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
    d0 = dx[t[0]]
    dds = wp.matrix_from_cols(dx[t[1]] - d0, dx[t[2]] - d0, dx[t[3]] - d0)
    dp = snh_stress_differential(f, dds @ dmi, m.mu[e], m.lam[e])
    for a in range(4):
        wp.atomic_add(out, t[a], m.vol[e] * (dp @ node_gradient(dmi, a)))


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
            d[i] = wp.max(m.vol[e] * wp.ddot(snh_stress_differential(f, df, m.mu[e], m.lam[e]), df), wp.float64(0.0))
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
