"""Time integration: inertia of backward Euler, the explicit central-difference update, health checks.

Backward Euler minimises  E(x) + sum_i m_i/(2 dt^2) |x_i - xhat_i|^2  with xhat = x_n + dt v_n; the
inertia is one more energy term (``eval_inertia_*``). Central difference (TLED style, lumped mass):
    v_{n+1/2} = ((1 - c dt/2) v_{n-1/2} + dt M^-1 f(x_n)) / (1 + c dt/2),   x_{n+1} = x_n + dt v_{n+1/2}
with c [1/s] the mass-proportional damping of dynamic relaxation (0: undamped).
"""
import warp as wp

from .elasticity import TetModel, deformation_gradient
from .loads import node_load


@wp.kernel
def eval_inertia_energy(x: wp.array(dtype=wp.vec3d), xhat: wp.array(dtype=wp.vec3d),
                        mass: wp.array(dtype=wp.float64), free: wp.array(dtype=wp.float64), inv_dt2: wp.float64,
                        energy: wp.array(dtype=wp.float64)):
    """energy += free m/(2 dt^2) |x - xhat|^2."""
    i = wp.tid()
    d = x[i] - xhat[i]
    wp.atomic_add(energy, 0, wp.float64(0.5) * free[i] * mass[i] * inv_dt2 * wp.dot(d, d))


@wp.kernel
def eval_inertia_forces(x: wp.array(dtype=wp.vec3d), xhat: wp.array(dtype=wp.vec3d),
                        mass: wp.array(dtype=wp.float64), free: wp.array(dtype=wp.float64), inv_dt2: wp.float64,
                        forces: wp.array(dtype=wp.vec3d)):
    i = wp.tid()
    forces[i] = forces[i] - free[i] * mass[i] * inv_dt2 * (x[i] - xhat[i])


@wp.kernel
def add_mass_product(mass: wp.array(dtype=wp.float64), free: wp.array(dtype=wp.float64), inv_dt2: wp.float64,
                     v: wp.array(dtype=wp.vec3d), out: wp.array(dtype=wp.vec3d)):
    """out += free m/dt^2 v (inertia Hessian product)."""
    i = wp.tid()
    out[i] = out[i] + free[i] * mass[i] * inv_dt2 * v[i]


@wp.kernel
def add_mass_diagonal(mass: wp.array(dtype=wp.float64), free: wp.array(dtype=wp.float64), inv_dt2: wp.float64,
                      diag: wp.array(dtype=wp.vec3d)):
    i = wp.tid()
    s = free[i] * mass[i] * inv_dt2
    diag[i] = diag[i] + wp.vec3d(s, s, s)


@wp.kernel
def predict_positions(x: wp.array(dtype=wp.vec3d), v: wp.array(dtype=wp.vec3d), free: wp.array(dtype=wp.float64),
                      dt: wp.float64, xhat: wp.array(dtype=wp.vec3d)):
    """xhat = x + dt v on free nodes (x elsewhere)."""
    i = wp.tid()
    xhat[i] = x[i] + free[i] * dt * v[i]


@wp.kernel
def finite_difference_velocity(x_new: wp.array(dtype=wp.vec3d), x_old: wp.array(dtype=wp.vec3d),
                               inv_dt: wp.float64, v: wp.array(dtype=wp.vec3d)):
    i = wp.tid()
    v[i] = inv_dt * (x_new[i] - x_old[i])


@wp.kernel
def central_difference_update(forces: wp.array2d(dtype=wp.vec3d), load_mass: wp.array(dtype=wp.float64),
                              gravity: wp.vec3d, spring_k: wp.array(dtype=wp.float64),
                              anchor: wp.array(dtype=wp.vec3d), inv_mass: wp.array(dtype=wp.float64),
                              coef: wp.array(dtype=wp.float64), x: wp.array(dtype=wp.vec3d),
                              v: wp.array(dtype=wp.vec3d)):
    """One explicit step in place with f = sum of the rows of ``forces`` + the nodal loads (kernels.loads,
    gravity on ``load_mass``), the rows cleared for the next step. inv_mass = free / m (m the possibly
    scaled lumped mass; 0 on fixed/prescribed or massless nodes, which keep x and get v = 0);
    coef = (dt, (1 - c dt/2) / (1 + c dt/2), dt / (1 + c dt/2)), an array so that a captured graph serves
    any dt and damping c."""
    i = wp.tid()
    f = node_load(x, load_mass, gravity, spring_k, anchor, i)
    for b in range(forces.shape[0]):
        f = f + forces[b, i]
        forces[b, i] = wp.vec3d()
    w = inv_mass[i]
    if w == wp.float64(0.0):
        v[i] = wp.vec3d()
        return
    vi = coef[1] * v[i] + (coef[2] * w) * f
    v[i] = vi
    x[i] = x[i] + coef[0] * vi


@wp.kernel
def eval_kinetic_energy(v: wp.array(dtype=wp.vec3d), mass: wp.array(dtype=wp.float64),
                        energy: wp.array(dtype=wp.float64)):
    i = wp.tid()
    wp.atomic_add(energy, 0, wp.float64(0.5) * mass[i] * wp.dot(v[i], v[i]))


@wp.kernel
def check_elements(m: TetModel, x: wp.array(dtype=wp.vec3d), j_min: wp.float64, bad: wp.array(dtype=wp.int32)):
    """bad[0] += elements with J <= j_min (inverted/degenerate); bad[1] += elements with non-finite J."""
    e = wp.tid()
    if m.alive[e] == 0:
        return
    j = wp.determinant(deformation_gradient(x, m.tets[e], m.dm_inv[e]))
    if not wp.isfinite(j):
        wp.atomic_add(bad, 1, 1)
    elif j <= j_min:
        wp.atomic_add(bad, 0, 1)
