"""Per-element diagnostics after a solve: Cauchy stress (von Mises) and principal strain.

For element e with deformation gradient F (kernels.elasticity.deformation_gradient):
    Cauchy stress       sigma = P F^T / J           (P: first Piola-Kirchhoff stress, J = det F)
    von Mises stress    sqrt(3/2 s:s),  s = sigma - tr(sigma)/3 I
    Green-Lagrange      E = (F^T F - I) / 2,  max principal = largest eigenvalue of E
P is the element's own material law (kernels.materials.tet_stress: stable Neo-Hookean, co-rotational or
Mooney-Rivlin). Units follow the caller (surgtwin.sim: Pa).
"""
import warp as wp

from .elasticity import TetModel, deformation_gradient
from .materials import tet_stress


@wp.func
def von_mises(sigma: wp.mat33d):
    """Von Mises equivalent of a (symmetric) stress tensor."""
    third = wp.trace(sigma) / wp.float64(3.0)
    s = sigma - third * wp.identity(n=3, dtype=wp.float64)
    return wp.sqrt(wp.float64(1.5) * wp.ddot(s, s))


@wp.kernel
def eval_tet_stress(m: TetModel, x: wp.array(dtype=wp.vec3d), von_mises_out: wp.array(dtype=wp.float64),
                    max_principal_strain: wp.array(dtype=wp.float64)):
    """Von Mises Cauchy stress and max principal Green-Lagrange strain per element (0 for dead ones).

    Inverted elements (J <= 0) have no Cauchy stress: they report the von Mises value of P F^T
    (the Kirchhoff stress), which the host flags through the volume ratio anyway."""
    e = wp.tid()
    if m.alive[e] == 0:
        von_mises_out[e] = wp.float64(0.0)
        max_principal_strain[e] = wp.float64(0.0)
        return
    f = deformation_gradient(x, m.tets[e], m.dm_inv[e])
    p = tet_stress(f, m.law[e], m.params[e])
    tau = p @ wp.transpose(f)
    j = wp.determinant(f)
    sigma = tau
    if j > wp.float64(0.0):
        sigma = tau / j
    sym = wp.float64(0.5) * (sigma + wp.transpose(sigma))
    von_mises_out[e] = von_mises(sym)
    green = wp.float64(0.5) * (wp.transpose(f) @ f - wp.identity(n=3, dtype=wp.float64))
    q, ev = wp.eig3(green)
    max_principal_strain[e] = wp.max(ev[0], wp.max(ev[1], ev[2]))
