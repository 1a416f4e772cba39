"""Average nodal pressure (ANP) tetrahedra: volumetric energy on nodal volumes (Bonet & Burton 1998).

Each element law is split Psi = W(F) + kappa/2 (J - 1)^2 (kernels.materials ``dev_*``,
``volumetric_modulus``). W stays per element; the volumetric part lives on the nodes:
    E = sum_e V_e W(F_e) + sum_a kappa_a / (2 V_a) (v_a - V_a)^2,
    V_a = sum_{e ni a} V_e / 4 (rest),  v_a = sum_{e ni a} V_e det F_e / 4 (current),
    kappa_a = sum_{e ni a} V_e kappa_e / 4 / V_a (volume-weighted bulk modulus at a node).
One constraint per node instead of one per element removes the volumetric locking of linear tets.
Nodal pressure q_a = kappa_a (v_a / V_a - 1); with dv_e/dx_b = V_e cof(F_e) g_b the forces are
    f_b = -sum_e V_e (dW/dF g_b + qbar_e cof(F_e) g_b),   qbar_e = mean of q over the 4 nodes of e,
and the tangent product adds V_e (dqbar_e cof F_e + qbar_e dcof(F_e)) g_b, dq_a = kappa_a / V_a dv_a.
Launch order (surgtwin.sim.terms.NodalPressureElasticity): nodal volumes -> nodal pressures -> elements.
"""
import warp as wp

from .elasticity import TetModel, add_node_vectors, deformation_gradient, node_gradient
from .materials import cofactor, cofactor_differential, dev_energy_density, dev_stress, dev_stress_differential


@wp.kernel
def accumulate_nodal_volume(m: TetModel, x: wp.array(dtype=wp.vec3d), node_vol: wp.array(dtype=wp.float64)):
    """node_vol[a] += V_e det(F_e) / 4 (current nodal volume [m^3])."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    v = m.vol[e] * wp.determinant(deformation_gradient(x, t, m.dm_inv[e])) * wp.float64(0.25)
    for a in range(4):
        wp.atomic_add(node_vol, t[a], v)


@wp.kernel
def accumulate_nodal_volume_differential(m: TetModel, x: wp.array(dtype=wp.vec3d), dx: wp.array(dtype=wp.vec3d),
                                         dvol: wp.array(dtype=wp.float64)):
    """dvol[a] += V_e cof(F_e) : dF_e / 4 (nodal volume change along dx)."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    f = deformation_gradient(x, t, dmi)
    df = deformation_gradient(dx, t, dmi)   # the same linear map applied to the increment: dF
    dv = m.vol[e] * wp.ddot(cofactor(f), df) * wp.float64(0.25)
    for a in range(4):
        wp.atomic_add(dvol, t[a], dv)


@wp.kernel
def eval_nodal_pressure(rest_vol: wp.array(dtype=wp.float64), kappa: wp.array(dtype=wp.float64),
                        node_vol: wp.array(dtype=wp.float64), pressure: wp.array(dtype=wp.float64),
                        energy: wp.array(dtype=wp.float64)):
    """pressure[a] = kappa_a (v_a / V_a - 1) [Pa]; energy += kappa_a / (2 V_a) (v_a - V_a)^2 [J]."""
    a = wp.tid()
    va = rest_vol[a]
    if va <= wp.float64(0.0):
        pressure[a] = wp.float64(0.0)
        return
    d = node_vol[a] - va
    pressure[a] = kappa[a] * d / va
    wp.atomic_add(energy, 0, wp.float64(0.5) * kappa[a] * d * d / va)


@wp.kernel
def eval_nodal_pressure_differential(rest_vol: wp.array(dtype=wp.float64), kappa: wp.array(dtype=wp.float64),
                                     dvol: wp.array(dtype=wp.float64), dpressure: wp.array(dtype=wp.float64)):
    """dpressure[a] = kappa_a / V_a dv_a."""
    a = wp.tid()
    va = rest_vol[a]
    dpressure[a] = wp.float64(0.0)
    if va > wp.float64(0.0):
        dpressure[a] = kappa[a] * dvol[a] / va


@wp.func
def element_mean(q: wp.array(dtype=wp.float64), t: wp.vec4i):
    return wp.float64(0.25) * (q[t[0]] + q[t[1]] + q[t[2]] + q[t[3]])


@wp.kernel
def eval_anp_dev_energy(m: TetModel, x: wp.array(dtype=wp.vec3d), energy: wp.array(dtype=wp.float64)):
    """energy += V_e W(F_e)."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    f = deformation_gradient(x, m.tets[e], m.dm_inv[e])
    wp.atomic_add(energy, 0, m.vol[e] * dev_energy_density(f, m.law[e], m.params[e]))


@wp.kernel
def eval_anp_forces(m: TetModel, x: wp.array(dtype=wp.vec3d), pressure: wp.array(dtype=wp.float64),
                    forces: wp.array(dtype=wp.vec3d)):
    """forces[b] += -V_e (dW/dF + qbar_e cof F_e) g_b."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    f = deformation_gradient(x, t, dmi)
    p = dev_stress(f, m.law[e], m.params[e]) + element_mean(pressure, t) * cofactor(f)
    add_node_vectors(forces, t, dmi, -m.vol[e] * p)


@wp.kernel
def eval_anp_hessian_product(m: TetModel, x: wp.array(dtype=wp.vec3d), dx: wp.array(dtype=wp.vec3d),
                             pressure: wp.array(dtype=wp.float64), dpressure: wp.array(dtype=wp.float64),
                             out: wp.array(dtype=wp.vec3d)):
    """out[b] += V_e (d^2W/dF^2 : dF + dqbar_e cof F_e + qbar_e dcof F_e) g_b."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    f = deformation_gradient(x, t, dmi)
    df = deformation_gradient(dx, t, dmi)   # the same linear map applied to the increment: dF
    dp = dev_stress_differential(f, df, m.law[e], m.params[e]) + element_mean(dpressure, t) * cofactor(f)
    dp = dp + element_mean(pressure, t) * cofactor_differential(f, df)
    add_node_vectors(out, t, dmi, m.vol[e] * dp)


@wp.kernel
def eval_anp_hessian_diagonal(m: TetModel, x: wp.array(dtype=wp.vec3d), rest_vol: wp.array(dtype=wp.float64),
                              kappa: wp.array(dtype=wp.float64), diag: wp.array(dtype=wp.vec3d)):
    """Jacobi estimate: exact diagonal of the W part plus, per element, sum_a kappa_a / V_a ((V_e/4) cof F g_b)_i^2
    (the volumetric diagonal without the cross-element sums inside dv_a / dx_b), clamped >= 0."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    t = m.tets[e]
    dmi = m.dm_inv[e]
    f = deformation_gradient(x, t, dmi)
    cof = cofactor(f)
    w = wp.float64(0.0)
    for a in range(4):
        if rest_vol[t[a]] > wp.float64(0.0):
            w += kappa[t[a]] / rest_vol[t[a]]
    q = wp.float64(0.25) * m.vol[e]
    for a in range(4):
        g = node_gradient(dmi, a)
        cg = cof @ g
        d = wp.vec3d()
        for i in range(3):
            ei = wp.vec3d()
            ei[i] = wp.float64(1.0)
            df = wp.outer(ei, g)
            kd = m.vol[e] * wp.ddot(dev_stress_differential(f, df, m.law[e], m.params[e]), df)
            d[i] = wp.max(kd + w * q * q * cg[i] * cg[i], wp.float64(0.0))
        wp.atomic_add(diag, t[a], d)
