"""Rigid tool contact: signed distance to a posed tool, penalty energy and lazily updated Coulomb friction.

Tools (``ToolSet``, one entry per tool, pose = position [m] + rotation local->world):
    kind 0 sphere   size = (radius, -, -)
    kind 1 capsule  size = (radius, half length along local z, -)
    kind 2 plane    solid below the local z = 0 plane (outward normal local +z)
    kind 3 mesh     closed triangle mesh (wp.Mesh in the tool frame, float32), size = (query distance, -, -)
Per candidate node c (node ``nodes[c]``, penalty stiffness ``k[c]`` [N/m]), with phi the signed distance:
    normal   E_n = k/2 phi^2           (phi < 0 only)
    friction E_t = kt k/2 |P (x - a)|^2 (stuck nodes only), P = I - n_f n_f^T,
where the stick anchor a and the frozen normal n_f are kept in the tool frame (they move with the tool)
and are updated between solves/steps by ``update_friction``: a node that slides farther than the Coulomb
cone allows (kt k |P(x - a)| > mu k |phi|) has its anchor dragged along so the friction force is mu f_n.
The normal-term Hessian includes the curvature of the distance (sphere and capsule), so it is the exact
second derivative; meshes use the flat-face Hessian k n n^T.
"""
import warp as wp

SPHERE, CAPSULE, PLANE, MESH = 0, 1, 2, 3


@wp.struct
class ToolSet:
    kind: wp.array(dtype=wp.int32)
    pos: wp.array(dtype=wp.vec3d)
    rot: wp.array(dtype=wp.mat33d)
    size: wp.array(dtype=wp.vec3d)
    mesh: wp.array(dtype=wp.uint64)


@wp.struct
class ContactSet:
    """Candidate nodes of one tool's contact term and their friction state."""

    nodes: wp.array(dtype=wp.int32)
    k: wp.array(dtype=wp.float64)
    stick: wp.array(dtype=wp.int32)
    anchor_local: wp.array(dtype=wp.vec3d)
    normal_local: wp.array(dtype=wp.vec3d)


@wp.func
def tool_query(tools: ToolSet, t: int, x: wp.vec3d):
    """(phi [m], outward unit normal n, curvature 1/|x - core| (0 if flat), axis a removed from the Hessian)."""
    kind = tools.kind[t]
    pos = tools.pos[t]
    rot = tools.rot[t]
    size = tools.size[t]
    zero = wp.vec3d()
    big = wp.float64(1.0e30)
    if kind == 2:
        n = wp.vec3d(rot[0, 2], rot[1, 2], rot[2, 2])
        return wp.dot(x - pos, n), n, wp.float64(0.0), zero
    if kind == 3:
        pl = wp.transpose(rot) @ (x - pos)
        plf = wp.vec3(wp.float32(pl[0]), wp.float32(pl[1]), wp.float32(pl[2]))
        q = wp.mesh_query_point_sign_normal(tools.mesh[t], plf, wp.float32(size[0]))
        if not q.result:
            return big, zero, wp.float64(0.0), zero
        cp = wp.mesh_eval_position(tools.mesh[t], q.face, q.u, q.v)
        d = pl - wp.vec3d(wp.float64(cp[0]), wp.float64(cp[1]), wp.float64(cp[2]))
        dist = wp.length(d)
        sgn = wp.float64(q.sign)
        nl = wp.vec3d()
        if dist > wp.float64(1.0e-12):
            nl = sgn * d / dist
        else:
            fn = wp.mesh_eval_face_normal(tools.mesh[t], q.face)
            nl = wp.vec3d(wp.float64(fn[0]), wp.float64(fn[1]), wp.float64(fn[2]))
        return sgn * dist, rot @ nl, wp.float64(0.0), zero
    core = pos
    axis = zero
    if kind == 1:
        a = wp.vec3d(rot[0, 2], rot[1, 2], rot[2, 2])
        s = wp.dot(x - pos, a)
        h = size[1]
        if s > h:
            core = pos + h * a
        elif s < -h:
            core = pos - h * a
        else:
            core = pos + s * a
            axis = a
    d = x - core
    dist = wp.length(d)
    if dist < wp.float64(1.0e-15):
        return -size[0], wp.vec3d(wp.float64(0.0), wp.float64(0.0), wp.float64(1.0)), wp.float64(0.0), zero
    return dist - size[0], d / dist, wp.float64(1.0) / dist, axis


@wp.func
def stick_anchor(tools: ToolSet, t: int, c: ContactSet, j: int):
    """World stick anchor and frozen normal of candidate j."""
    rot = tools.rot[t]
    return tools.pos[t] + rot @ c.anchor_local[j], rot @ c.normal_local[j]


@wp.kernel
def eval_contact_energy(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, x: wp.array(dtype=wp.vec3d),
                        energy: wp.array(dtype=wp.float64)):
    j = wp.tid()
    xi = x[c.nodes[j]]
    phi, n, curv, axis = tool_query(tools, t, xi)
    e = wp.float64(0.0)
    if phi < wp.float64(0.0):
        e = wp.float64(0.5) * c.k[j] * phi * phi
    if c.stick[j] != 0:
        a, nf = stick_anchor(tools, t, c, j)
        d = xi - a
        dt = d - wp.dot(d, nf) * nf
        e += wp.float64(0.5) * kt * c.k[j] * wp.dot(dt, dt)
    if e != wp.float64(0.0):
        wp.atomic_add(energy, 0, e)


@wp.kernel
def eval_contact_forces(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, x: wp.array(dtype=wp.vec3d),
                        forces: wp.array(dtype=wp.vec3d), total: wp.array(dtype=wp.vec3d)):
    """forces[node] += contact force on the tissue; total[0] += the same (the tool's push on the tissue)."""
    j = wp.tid()
    i = c.nodes[j]
    xi = x[i]
    phi, n, curv, axis = tool_query(tools, t, xi)
    f = wp.vec3d()
    if phi < wp.float64(0.0):
        f = -c.k[j] * phi * n
    if c.stick[j] != 0:
        a, nf = stick_anchor(tools, t, c, j)
        d = xi - a
        f -= kt * c.k[j] * (d - wp.dot(d, nf) * nf)
    if wp.length_sq(f) > wp.float64(0.0):
        wp.atomic_add(forces, i, f)
        wp.atomic_add(total, 0, f)


@wp.kernel
def eval_contact_hessian_product(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64,
                                 x: wp.array(dtype=wp.vec3d), v: wp.array(dtype=wp.vec3d),
                                 out: wp.array(dtype=wp.vec3d)):
    j = wp.tid()
    i = c.nodes[j]
    phi, n, curv, axis = tool_query(tools, t, x[i])
    vi = v[i]
    hv = wp.vec3d()
    if phi < wp.float64(0.0):
        vn = wp.dot(n, vi)
        hv = c.k[j] * (vn * n + phi * curv * (vi - vn * n - wp.dot(axis, vi) * axis))
    if c.stick[j] != 0:
        a, nf = stick_anchor(tools, t, c, j)
        hv += kt * c.k[j] * (vi - wp.dot(vi, nf) * nf)
    if wp.length_sq(hv) > wp.float64(0.0):
        wp.atomic_add(out, i, hv)


@wp.kernel
def eval_contact_diagonal(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, x: wp.array(dtype=wp.vec3d),
                          diag: wp.array(dtype=wp.vec3d)):
    j = wp.tid()
    i = c.nodes[j]
    phi, n, curv, axis = tool_query(tools, t, x[i])
    d = wp.vec3d()
    if phi < wp.float64(0.0):
        for r in range(3):
            d[r] = wp.max(c.k[j] * (n[r] * n[r] + phi * curv * (wp.float64(1.0) - n[r] * n[r] - axis[r] * axis[r])),
                          wp.float64(0.0))
    if c.stick[j] != 0:
        a, nf = stick_anchor(tools, t, c, j)
        for r in range(3):
            d[r] += kt * c.k[j] * (wp.float64(1.0) - nf[r] * nf[r])
    wp.atomic_add(diag, i, d)


@wp.kernel
def update_friction(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, mu: wp.float64,
                    x: wp.array(dtype=wp.vec3d)):
    """Stick where a node is in contact, drag the anchor where friction would exceed mu * normal force."""
    j = wp.tid()
    xi = x[c.nodes[j]]
    phi, n, curv, axis = tool_query(tools, t, xi)
    if phi >= wp.float64(0.0) or mu <= wp.float64(0.0):
        c.stick[j] = 0
        return
    a = xi
    if c.stick[j] != 0:
        a, nf = stick_anchor(tools, t, c, j)
        d = xi - a
        tan = d - wp.dot(d, n) * n
        ft = kt * c.k[j] * wp.length(tan)
        fn = -c.k[j] * phi
        if ft > mu * fn:
            a = xi - tan * (mu * fn / ft)
        else:
            a = xi - tan
    rot = tools.rot[t]
    c.anchor_local[j] = wp.transpose(rot) @ (a - tools.pos[t])
    c.normal_local[j] = wp.transpose(rot) @ n
    c.stick[j] = 1


@wp.kernel
def count_contacts(tools: ToolSet, t: int, c: ContactSet, x: wp.array(dtype=wp.vec3d),
                   count: wp.array(dtype=wp.int32)):
    j = wp.tid()
    phi, n, curv, axis = tool_query(tools, t, x[c.nodes[j]])
    if phi < wp.float64(0.0):
        wp.atomic_add(count, 0, 1)
