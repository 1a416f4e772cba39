"""Vector kernels for the matrix-free preconditioned conjugate gradient.

Scalars (r.z, p.Ap) stay on the device in one-element arrays, so a CG iteration launches no host
sync; the host reads the residual only every few iterations. ``free`` is 1 for unconstrained nodes
and 0 for fixed ones: fixed degrees of freedom never move.
"""
import warp as wp


@wp.kernel
def dot_masked(a: wp.array(dtype=wp.vec3d), b: wp.array(dtype=wp.vec3d), free: wp.array(dtype=wp.float64),
               out: wp.array(dtype=wp.float64)):
    i = wp.tid()
    wp.atomic_add(out, 0, free[i] * wp.dot(a[i], b[i]))


@wp.kernel
def jacobi_inverse(diag: wp.array(dtype=wp.vec3d), free: wp.array(dtype=wp.float64),
                   minv: wp.array(dtype=wp.vec3d)):
    i = wp.tid()
    d = diag[i]
    tiny = wp.float64(1e-30)
    minv[i] = free[i] * wp.vec3d(wp.float64(1.0) / wp.max(d[0], tiny), wp.float64(1.0) / wp.max(d[1], tiny),
                                 wp.float64(1.0) / wp.max(d[2], tiny))


@wp.kernel
def cg_start(r: wp.array(dtype=wp.vec3d), free: wp.array(dtype=wp.float64), minv: wp.array(dtype=wp.vec3d),
             x: wp.array(dtype=wp.vec3d), z: wp.array(dtype=wp.vec3d), p: wp.array(dtype=wp.vec3d),
             rz: wp.array(dtype=wp.float64)):
    """x = 0, r masked, z = M^-1 r, p = z, rz += r.z."""
    i = wp.tid()
    ri = free[i] * r[i]
    r[i] = ri
    zi = wp.cw_mul(minv[i], ri)
    z[i] = zi
    p[i] = zi
    x[i] = wp.vec3d()
    wp.atomic_add(rz, 0, wp.dot(ri, zi))


@wp.kernel
def cg_advance(rz: wp.array(dtype=wp.float64), pq: wp.array(dtype=wp.float64), flag: wp.array(dtype=wp.int32),
               free: wp.array(dtype=wp.float64), minv: wp.array(dtype=wp.vec3d), q: wp.array(dtype=wp.vec3d),
               p: wp.array(dtype=wp.vec3d), x: wp.array(dtype=wp.vec3d), r: wp.array(dtype=wp.vec3d),
               z: wp.array(dtype=wp.vec3d), rz_new: wp.array(dtype=wp.float64)):
    """alpha = rz / p.q; x += alpha p; r -= alpha q; z = M^-1 r; rz_new += r.z.

    Stops (flag = 1, no update) on non-positive curvature p.Kp <= 0 or a zero residual.
    """
    i = wp.tid()
    if flag[0] != 0:
        return
    if pq[0] <= wp.float64(0.0) or rz[0] <= wp.float64(0.0):
        if i == 0:
            flag[0] = 1
        return
    alpha = rz[0] / pq[0]
    x[i] = x[i] + alpha * p[i]
    ri = r[i] - alpha * free[i] * q[i]
    r[i] = ri
    zi = wp.cw_mul(minv[i], ri)
    z[i] = zi
    wp.atomic_add(rz_new, 0, wp.dot(ri, zi))


@wp.kernel
def cg_direction(rz: wp.array(dtype=wp.float64), rz_new: wp.array(dtype=wp.float64),
                 flag: wp.array(dtype=wp.int32), z: wp.array(dtype=wp.vec3d), p: wp.array(dtype=wp.vec3d)):
    """p = z + (rz_new / rz) p."""
    i = wp.tid()
    if flag[0] != 0:
        return
    beta = rz_new[0] / rz[0]
    p[i] = z[i] + beta * p[i]


@wp.kernel
def cg_roll_scalars(rz: wp.array(dtype=wp.float64), rz_new: wp.array(dtype=wp.float64),
                    pq: wp.array(dtype=wp.float64), flag: wp.array(dtype=wp.int32)):
    """rz <- rz_new; rz_new <- 0; pq <- 0 (one thread)."""
    if flag[0] == 0:
        rz[0] = rz_new[0]
    rz_new[0] = wp.float64(0.0)
    pq[0] = wp.float64(0.0)


@wp.kernel
def axpy_masked(alpha: wp.float64, x: wp.array(dtype=wp.vec3d), free: wp.array(dtype=wp.float64),
                base: wp.array(dtype=wp.vec3d), out: wp.array(dtype=wp.vec3d)):
    """out = base + alpha * free * x."""
    i = wp.tid()
    out[i] = base[i] + alpha * free[i] * x[i]
