"""Nodal loads: gravity (lumped mass) and zero-length support springs to anchor points."""
import warp as wp


@wp.func
def node_load(x: wp.array(dtype=wp.vec3d), mass: wp.array(dtype=wp.float64), gravity: wp.vec3d,
              spring_k: wp.array(dtype=wp.float64), anchor: wp.array(dtype=wp.vec3d), i: int):
    """m_i g - k_i (x_i - anchor_i) [N]."""
    return mass[i] * gravity - spring_k[i] * (x[i] - anchor[i])


@wp.kernel
def eval_node_loads(x: wp.array(dtype=wp.vec3d), mass: wp.array(dtype=wp.float64),
                    gravity: wp.vec3d, spring_k: wp.array(dtype=wp.float64),
                    anchor: wp.array(dtype=wp.vec3d), forces: wp.array(dtype=wp.vec3d)):
    """forces[i] += m_i g - k_i (x_i - anchor_i)."""
    i = wp.tid()
    forces[i] = forces[i] + node_load(x, mass, gravity, spring_k, anchor, i)


@wp.kernel
def eval_node_load_energy(x: wp.array(dtype=wp.vec3d), mass: wp.array(dtype=wp.float64),
                          gravity: wp.vec3d, spring_k: wp.array(dtype=wp.float64),
                          anchor: wp.array(dtype=wp.vec3d), energy: wp.array(dtype=wp.float64)):
    """energy += -m_i g.x_i + k_i/2 |x_i - anchor_i|^2 (potential of the nodal loads)."""
    i = wp.tid()
    d = x[i] - anchor[i]
    wp.atomic_add(energy, 0, -mass[i] * wp.dot(gravity, x[i]) + wp.float64(0.5) * spring_k[i] * wp.dot(d, d))


@wp.kernel
def add_spring_hessian_product(spring_k: wp.array(dtype=wp.float64), dx: wp.array(dtype=wp.vec3d),
                               out: wp.array(dtype=wp.vec3d)):
    """out += k dx (the springs' contribution to the tangent product)."""
    i = wp.tid()
    out[i] = out[i] + spring_k[i] * dx[i]


@wp.kernel
def add_spring_diagonal(spring_k: wp.array(dtype=wp.float64), diag: wp.array(dtype=wp.vec3d)):
    """diag += k (the springs' contribution to the tangent diagonal)."""
    i = wp.tid()
    diag[i] = diag[i] + wp.vec3d(spring_k[i], spring_k[i], spring_k[i])
