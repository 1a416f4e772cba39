"""Boundary loads and constraints: dead loads (surface pressure), attachment springs, prescribed positions.

Units as the caller's (surgtwin.sim: m, N, N/m). Attachment j pulls node ``node[j]`` towards the moving
point ``anchors[anchor[j]]`` with a zero-length spring of stiffness ``k[j]``.
"""
import warp as wp


@wp.kernel
def add_scaled_forces(f_ext: wp.array(dtype=wp.vec3d), scale: wp.float64, forces: wp.array(dtype=wp.vec3d)):
    """forces += scale * f_ext (a dead load: constant nodal forces)."""
    i = wp.tid()
    forces[i] = forces[i] + scale * f_ext[i]


@wp.kernel
def eval_dead_load_energy(f_ext: wp.array(dtype=wp.vec3d), scale: wp.float64, x: wp.array(dtype=wp.vec3d),
                          energy: wp.array(dtype=wp.float64)):
    """energy += -scale * f_ext . x (potential of a dead load)."""
    i = wp.tid()
    wp.atomic_add(energy, 0, -scale * wp.dot(f_ext[i], x[i]))


@wp.kernel
def eval_attachment_energy(node: wp.array(dtype=wp.int32), anchor: wp.array(dtype=wp.int32),
                           k: wp.array(dtype=wp.float64), anchors: wp.array(dtype=wp.vec3d),
                           x: wp.array(dtype=wp.vec3d), energy: wp.array(dtype=wp.float64)):
    """energy += k/2 |x_node - anchor|^2."""
    j = wp.tid()
    d = x[node[j]] - anchors[anchor[j]]
    wp.atomic_add(energy, 0, wp.float64(0.5) * k[j] * wp.dot(d, d))


@wp.kernel
def eval_attachment_forces(node: wp.array(dtype=wp.int32), anchor: wp.array(dtype=wp.int32),
                           k: wp.array(dtype=wp.float64), anchors: wp.array(dtype=wp.vec3d),
                           x: wp.array(dtype=wp.vec3d), forces: wp.array(dtype=wp.vec3d)):
    """forces[node] += -k (x_node - anchor)."""
    j = wp.tid()
    i = node[j]
    wp.atomic_add(forces, i, -k[j] * (x[i] - anchors[anchor[j]]))


@wp.kernel
def add_attachment_hessian_product(node: wp.array(dtype=wp.int32), k: wp.array(dtype=wp.float64),
                                   v: wp.array(dtype=wp.vec3d), out: wp.array(dtype=wp.vec3d)):
    """out[node] += k v[node]."""
    j = wp.tid()
    i = node[j]
    wp.atomic_add(out, i, k[j] * v[i])


@wp.kernel
def add_attachment_diagonal(node: wp.array(dtype=wp.int32), k: wp.array(dtype=wp.float64),
                            diag: wp.array(dtype=wp.vec3d)):
    j = wp.tid()
    wp.atomic_add(diag, node[j], wp.vec3d(k[j], k[j], k[j]))


@wp.kernel
def sum_attachment_forces(node: wp.array(dtype=wp.int32), anchor: wp.array(dtype=wp.int32),
                          k: wp.array(dtype=wp.float64), anchors: wp.array(dtype=wp.vec3d),
                          x: wp.array(dtype=wp.vec3d), total: wp.array(dtype=wp.vec3d)):
    """total[0] += force of the springs on the tissue."""
    j = wp.tid()
    i = node[j]
    wp.atomic_add(total, 0, -k[j] * (x[i] - anchors[anchor[j]]))


@wp.kernel
def apply_prescribed(mask: wp.array(dtype=wp.int32), start: wp.array(dtype=wp.vec3d),
                     target: wp.array(dtype=wp.vec3d), s: wp.float64, x: wp.array(dtype=wp.vec3d)):
    """x = start + s (target - start) on prescribed nodes (mask 1); others untouched."""
    i = wp.tid()
    if mask[i] != 0:
        x[i] = start[i] + s * (target[i] - start[i])


@wp.kernel
def lerp_points(a: wp.array(dtype=wp.vec3d), b: wp.array(dtype=wp.vec3d), s: wp.float64,
                out: wp.array(dtype=wp.vec3d)):
    """out = a + s (b - a) (tool positions between two steps)."""
    i = wp.tid()
    out[i] = a[i] + s * (b[i] - a[i])


@wp.kernel
def eval_roller_energy(node: wp.array(dtype=wp.int32), k: wp.array(dtype=wp.float64), normal: wp.vec3d,
                       offset: wp.float64, x: wp.array(dtype=wp.vec3d), energy: wp.array(dtype=wp.float64)):
    """energy += k/2 (n.x - offset)^2 (a node held on a plane, free to slide in it)."""
    j = wp.tid()
    g = wp.dot(normal, x[node[j]]) - offset
    wp.atomic_add(energy, 0, wp.float64(0.5) * k[j] * g * g)


@wp.kernel
def eval_roller_forces(node: wp.array(dtype=wp.int32), k: wp.array(dtype=wp.float64), normal: wp.vec3d,
                       offset: wp.float64, x: wp.array(dtype=wp.vec3d), forces: wp.array(dtype=wp.vec3d)):
    j = wp.tid()
    i = node[j]
    wp.atomic_add(forces, i, -k[j] * (wp.dot(normal, x[i]) - offset) * normal)


@wp.kernel
def add_roller_hessian_product(node: wp.array(dtype=wp.int32), k: wp.array(dtype=wp.float64), normal: wp.vec3d,
                               v: wp.array(dtype=wp.vec3d), out: wp.array(dtype=wp.vec3d)):
    j = wp.tid()
    i = node[j]
    wp.atomic_add(out, i, k[j] * wp.dot(normal, v[i]) * normal)


@wp.kernel
def add_roller_diagonal(node: wp.array(dtype=wp.int32), k: wp.array(dtype=wp.float64), normal: wp.vec3d,
                        diag: wp.array(dtype=wp.vec3d)):
    j = wp.tid()
    wp.atomic_add(diag, node[j], k[j] * wp.cw_mul(normal, normal))
