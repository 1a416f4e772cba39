"""Rigid tool contact: signed distance to a posed tool, penalty energy and lazily updated Coulomb friction.

Tools (``ToolSet``, one entry per tool, pose = position [m] + rotation local->world):
    kind 0 sphere   size = (radius, -, -)
    kind 1 capsule  size = (radius, half length along local z, -)
    kind 2 plane    solid below the local z = 0 plane (outward normal local +z)
    kind 3 mesh     closed, outward-wound triangle mesh (wp.Mesh in the tool frame, float32 vertices),
                    size = (query distance, -, -); the distance to a face interior is evaluated in float64
                    from the face's plane, to edges and vertices from Warp's float32 closest point
Per candidate node c (node ``nodes[c]``, penalty stiffness ``k[c]`` [N/m]), with phi the signed distance:
    normal   E_n = k/2 phi^2           (phi < 0 only)
    friction E_t = kt k/2 r^2                     for r <= eps = mu f_n / (kt k),
             E_t = mu f_n (r - eps/2)             beyond (sliding: the force is capped at mu f_n),
    with r = |P (x - a)|, P = I - n_f n_f^T, for nodes in contact at the last update.
The stick anchor a, the frozen normal n_f (both in the tool frame, so they move with the tool) and the
lagged normal force f_n = k |phi| are updated between solves/steps by ``update_friction`` (anchors of
sliding nodes are dragged to the edge of the stick zone). Within a solve the friction potential is
convex and C1 with a fixed f_n, so Newton finds sliding equilibria directly (lagged Coulomb friction).
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
    fn: wp.array(dtype=wp.float64)


@wp.func
def vec3d_of(v: wp.vec3):
    return wp.vec3d(wp.float64(v[0]), wp.float64(v[1]), wp.float64(v[2]))


@wp.func
def projects_inside(p: wp.vec3d, v0: wp.vec3d, v1: wp.vec3d, v2: wp.vec3d):
    """True if p projects onto triangle (v0, v1, v2) within it or on its edges (float64)."""
    e1 = v1 - v0
    e2 = v2 - v0
    d = p - v0
    a11 = wp.dot(e1, e1)
    a12 = wp.dot(e1, e2)
    a22 = wp.dot(e2, e2)
    b1 = wp.dot(d, e1)
    b2 = wp.dot(d, e2)
    det = a11 * a22 - a12 * a12
    s = (a22 * b1 - a12 * b2) / det
    t = (a11 * b2 - a12 * b1) / det
    tol = wp.float64(-1.0e-9)
    return s >= tol and t >= tol and wp.float64(1.0) - s - t >= tol


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
        mid = tools.mesh[t]
        v0 = vec3d_of(wp.mesh_get_point(mid, 3 * q.face))
        v1 = vec3d_of(wp.mesh_get_point(mid, 3 * q.face + 1))
        v2 = vec3d_of(wp.mesh_get_point(mid, 3 * q.face + 2))
        if projects_inside(pl, v0, v1, v2):
            # closest point on the face (not an edge or vertex region): its plane, in float64, so the
            # energy stays smooth for the line search across the triangles of one flat face
            fn64 = wp.normalize(wp.cross(v1 - v0, v2 - v0))
            return wp.dot(pl - v0, fn64), rot @ fn64, wp.float64(0.0), zero
        cp = wp.mesh_eval_position(mid, q.face, q.u, q.v)
        d = pl - vec3d_of(cp)
        dist = wp.length(d)
        sgn = wp.float64(q.sign)
        nl = wp.vec3d()
        if dist > wp.float64(1.0e-12):
            nl = sgn * d / dist
        else:
            nl = vec3d_of(wp.mesh_eval_face_normal(mid, q.face))
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


@wp.func
def friction_offset(tools: ToolSet, t: int, c: ContactSet, j: int, x: wp.vec3d):
    """(tangential offset P(x - a), frozen normal n_f) of stuck candidate j."""
    a, nf = stick_anchor(tools, t, c, j)
    d = x - a
    return d - wp.dot(d, nf) * nf, nf


@wp.kernel
def eval_contact_energy(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, mu: wp.float64,
                        x: wp.array(dtype=wp.vec3d),
                        energy: wp.array(dtype=wp.float64)):
    j = wp.tid()
    xi = x[c.nodes[j]]
    phi, n, curv, axis = tool_query(tools, t, xi)
    e = wp.float64(0.0)
    if phi < wp.float64(0.0):
        e = wp.float64(0.5) * c.k[j] * phi * phi
    if c.stick[j] != 0:
        tan, nf = friction_offset(tools, t, c, j, xi)
        r = wp.length(tan)
        kk = kt * c.k[j]
        eps = mu * c.fn[j] / kk
        if r <= eps:
            e += wp.float64(0.5) * kk * r * r
        else:
            e += mu * c.fn[j] * (r - wp.float64(0.5) * eps)
    if e != wp.float64(0.0):
        wp.atomic_add(energy, 0, e)


@wp.kernel
def eval_contact_forces(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, mu: wp.float64,
                        x: wp.array(dtype=wp.vec3d),
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
        tan, nf = friction_offset(tools, t, c, j, xi)
        r = wp.length(tan)
        kk = kt * c.k[j]
        if r <= mu * c.fn[j] / kk:
            f -= kk * tan
        else:
            f -= (mu * c.fn[j] / r) * tan
    if wp.length_sq(f) > wp.float64(0.0):
        wp.atomic_add(forces, i, f)
        wp.atomic_add(total, 0, f)


@wp.kernel
def eval_contact_hessian_product(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, mu: wp.float64,
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
        tan, nf = friction_offset(tools, t, c, j, x[i])
        r = wp.length(tan)
        kk = kt * c.k[j]
        pv = vi - wp.dot(vi, nf) * nf
        if r <= mu * c.fn[j] / kk:
            hv += kk * pv
        else:
            th = tan / r
            hv += (mu * c.fn[j] / r) * (pv - wp.dot(th, vi) * th)
    if wp.length_sq(hv) > wp.float64(0.0):
        wp.atomic_add(out, i, hv)


@wp.kernel
def eval_contact_diagonal(tools: ToolSet, t: int, c: ContactSet, kt: wp.float64, mu: wp.float64,
                          x: wp.array(dtype=wp.vec3d),
                          diag: wp.array(dtype=wp.vec3d)):
    j = wp.tid()
    i = c.nodes[j]
    phi, n, curv, axis = tool_query(tools, t, x[i])
    d = wp.vec3d()
    if phi < wp.float64(0.0):
        for r in range(3):
            d[r] = c.k[j] * (n[r] * n[r] + phi * curv * (wp.float64(1.0) - n[r] * n[r] - axis[r] * axis[r]))
    if c.stick[j] != 0:
        tan, nf = friction_offset(tools, t, c, j, x[i])
        rt = wp.length(tan)
        kk = kt * c.k[j]
        if rt <= mu * c.fn[j] / kk:
            for r in range(3):
                d[r] += kk * (wp.float64(1.0) - nf[r] * nf[r])
        else:
            th = tan / rt
            for r in range(3):
                d[r] += (mu * c.fn[j] / rt) * (wp.float64(1.0) - nf[r] * nf[r] - th[r] * th[r])
    for r in range(3):
        d[r] = wp.max(d[r], wp.float64(0.0))
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
    c.fn[j] = -c.k[j] * phi
    c.stick[j] = 1


@wp.kernel
def count_contacts(tools: ToolSet, t: int, c: ContactSet, x: wp.array(dtype=wp.vec3d),
                   count: wp.array(dtype=wp.int32)):
    j = wp.tid()
    phi, n, curv, axis = tool_query(tools, t, x[c.nodes[j]])
    if phi < wp.float64(0.0):
        wp.atomic_add(count, 0, 1)
