"""Hyperelastic material laws as ``wp.func``: energy density, first Piola-Kirchhoff stress, stress differential.

Every law is selected per element by an int ``law`` and three parameters ``p`` (a vec3d), all in [Pa]:

  LAW_STABLE_NEO_HOOKEAN = 0, p = (mu, lam_s, -), lam_s = Lame lambda + mu, alpha = 1 + mu / lam_s
      Psi = mu/2 (I_C - 3) + lam_s/2 (J - alpha)^2                      (Smith, Goes & Kim 2018)
  LAW_COROTATIONAL = 1, p = (mu, lam, -), F = R S (polar decomposition, R a rotation, sigma_i of S; an
      iterative polar decomposition for det F > 0, a sign-corrected SVD for inverted elements)
      Psi = mu |F - R|^2 + lam/2 (tr S - 3)^2 = mu sum (sigma_i - 1)^2 + lam/2 (sum sigma_i - 3)^2
  LAW_MOONEY_RIVLIN = 2, p = (C10, C01, K), Ibar_1 = J^-2/3 I_C, Ibar_2 = J^-4/3 II_C
      Psi = C10 (Ibar_1 - 3) + C01 (Ibar_2 - 3) + K/2 (J - 1)^2         (compressible; K >> C10 + C01 is
      nearly incompressible). Undefined for J <= 0: the energy is +inf there (a line search backs off) and
      stress and stress differential are zero.

All three linearise at F = I to the same isotropic law with shear modulus mu = 2 (C10 + C01) for
Mooney-Rivlin and Lame lambda = lam_s - mu, lam, K - 2/3 mu respectively.

The dispatchers ``tet_energy_density``, ``tet_stress`` and ``tet_stress_differential`` take (F, law, p);
``tet_stress(f, law, p)`` is the one function to call for the stress of any element, e.g.
    p = tet_stress(f, m.law[e], m.params[e])          # m: elasticity.TetModel
For the average-nodal-pressure formulation (kernels.nodal_pressure) each law is split as
    Psi(F) = W(F) + kappa/2 (J - 1)^2 + const,  kappa = volumetric_modulus(law, p)
and ``vol = 0`` asks a function for W alone: stable Neo-Hookean W = mu/2 (I_C - 3) - mu (J - 1),
co-rotational W = mu |F - R|^2 (its volumetric part becomes kappa/2 (J - 1)^2, kappa = lam, which has
the same linearisation as lam/2 (tr S - 3)^2), Mooney-Rivlin W = the isochoric part.
"""
import warp as wp

LAW_STABLE_NEO_HOOKEAN = wp.constant(0)
LAW_COROTATIONAL = wp.constant(1)
LAW_MOONEY_RIVLIN = wp.constant(2)
LAW_NAMES = ("stable_neo_hookean", "corotational", "mooney_rivlin")
TWO_THIRDS = wp.constant(wp.float64(2.0 / 3.0))
FOUR_THIRDS = wp.constant(wp.float64(4.0 / 3.0))


@wp.func
def cofactor(f: wp.mat33d):
    """cof F = det(F) F^-T (defined for singular F too)."""
    c0 = wp.vec3d(f[0, 0], f[1, 0], f[2, 0])
    c1 = wp.vec3d(f[0, 1], f[1, 1], f[2, 1])
    c2 = wp.vec3d(f[0, 2], f[1, 2], f[2, 2])
    return wp.matrix_from_cols(wp.cross(c1, c2), wp.cross(c2, c0), wp.cross(c0, c1))


@wp.func
def cofactor_differential(f: wp.mat33d, df: wp.mat33d):
    """d(cof F) along dF."""
    c0 = wp.vec3d(f[0, 0], f[1, 0], f[2, 0])
    c1 = wp.vec3d(f[0, 1], f[1, 1], f[2, 1])
    c2 = wp.vec3d(f[0, 2], f[1, 2], f[2, 2])
    d0 = wp.vec3d(df[0, 0], df[1, 0], df[2, 0])
    d1 = wp.vec3d(df[0, 1], df[1, 1], df[2, 1])
    d2 = wp.vec3d(df[0, 2], df[1, 2], df[2, 2])
    return wp.matrix_from_cols(wp.cross(d1, c2) + wp.cross(c1, d2),
                               wp.cross(d2, c0) + wp.cross(c2, d0),
                               wp.cross(d0, c1) + wp.cross(c0, d1))


# ---------------------------------------------------------------- stable Neo-Hookean
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


# ---------------------------------------------------------------- linear co-rotational
@wp.struct
class Polar:
    """F = R S, R a rotation, S symmetric. ``svd`` = 1 when it came from the sign-corrected SVD (det F <= 0),
    then also S = V diag(sigma) V^T."""

    r: wp.mat33d
    s: wp.mat33d
    v: wp.mat33d
    sigma: wp.vec3d
    svd: int


@wp.func
def polar_decomposition(f: wp.mat33d):
    """det F > 0: scaled Newton iteration R <- (g R + R^-T / g) / 2, g = (|R^-1| / |R|)^1/2 (Higham 1986; 10
    steps at most, stopping once a step changes R by < 1e-10: quadratic convergence). Otherwise the rotation-variant SVD F = U diag(sigma) V^T with det U = det V =
    1 (the last sigma turns negative), which keeps R a rotation for inverted elements."""
    out = Polar()
    if wp.determinant(f) > wp.float64(0.0):
        r = f
        done = int(0)
        for _ in range(10):
            if done == 0:
                ri = wp.inverse(r)
                g = wp.sqrt(wp.sqrt(wp.ddot(ri, ri) / wp.ddot(r, r)))
                rn = wp.float64(0.5) * (g * r + wp.transpose(ri) / g)
                dr = rn - r
                if wp.ddot(dr, dr) < wp.float64(1e-20):    # quadratic: the error is now ~|dr|^2
                    done = 1
                r = rn
        sm = wp.transpose(r) @ f
        out.r = r
        out.s = wp.float64(0.5) * (sm + wp.transpose(sm))
        out.svd = 0
        return out
    u = wp.mat33d()
    sig = wp.vec3d()
    v = wp.mat33d()
    wp.svd3(f, u, sig, v)
    flip = wp.mat33d(wp.float64(1.0), wp.float64(0.0), wp.float64(0.0), wp.float64(0.0), wp.float64(1.0),
                     wp.float64(0.0), wp.float64(0.0), wp.float64(0.0), wp.float64(-1.0))
    if wp.determinant(u) < wp.float64(0.0):
        u = u @ flip
        sig = wp.vec3d(sig[0], sig[1], -sig[2])
    if wp.determinant(v) < wp.float64(0.0):
        v = v @ flip
        sig = wp.vec3d(sig[0], sig[1], -sig[2])
    out.r = u @ wp.transpose(v)
    out.s = v @ wp.diag(sig) @ wp.transpose(v)
    out.v = v
    out.sigma = sig
    out.svd = 1
    return out


@wp.func
def corot_energy_density(f: wp.mat33d, mu: wp.float64, lam: wp.float64, vol: int):
    pd = polar_decomposition(f)
    d = f - pd.r
    w = mu * wp.ddot(d, d)                                  # = mu sum (sigma_i - 1)^2
    if vol == 0:
        return w
    tr = wp.trace(pd.s) - wp.float64(3.0)
    return w + wp.float64(0.5) * lam * tr * tr


@wp.func
def corot_stress(f: wp.mat33d, mu: wp.float64, lam: wp.float64, vol: int):
    """P = 2 mu (F - R) + lam tr(S - I) R."""
    pd = polar_decomposition(f)
    p = wp.float64(2.0) * mu * (f - pd.r)
    if vol == 0:
        return p
    return p + lam * (wp.trace(pd.s) - wp.float64(3.0)) * pd.r


@wp.func
def corot_stress_differential(f: wp.mat33d, df: wp.mat33d, mu: wp.float64, lam: wp.float64, vol: int):
    """dP = 2 mu dF + lam (R:dF) R + (lam tr(S - I) - 2 mu) dR with dR = R [w]x, where
    (tr S I - S) w = axial(R^T dF - dF^T R) (for det F <= 0 solved in the SVD basis with the denominators
    sigma_i + sigma_j clamped at 1e-12)."""
    pd = polar_decomposition(f)
    r = pd.r
    m = wp.transpose(r) @ df
    a = wp.vec3d(m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1])
    trs = wp.trace(pd.s)
    w = wp.vec3d()
    if pd.svd == 0:
        w = wp.inverse(trs * wp.identity(n=3, dtype=wp.float64) - pd.s) @ a
    else:
        s = pd.sigma
        v = pd.v
        av = wp.transpose(v) @ a
        tiny = wp.float64(1e-12)
        w = v @ wp.vec3d(av[0] / wp.max(s[1] + s[2], tiny), av[1] / wp.max(s[0] + s[2], tiny),
                         av[2] / wp.max(s[0] + s[1], tiny))
    z = wp.float64(0.0)
    skew = wp.mat33d(z, -w[2], w[1], w[2], z, -w[0], -w[1], w[0], z)
    dr = r @ skew
    dp = wp.float64(2.0) * mu * (df - dr)
    if vol == 0:
        return dp
    return dp + lam * wp.ddot(r, df) * r + lam * (trs - wp.float64(3.0)) * dr


# ---------------------------------------------------------------- Mooney-Rivlin
@wp.func
def mr_energy_density(f: wp.mat33d, c10: wp.float64, c01: wp.float64, k: wp.float64, vol: int):
    j = wp.determinant(f)
    if j <= wp.float64(0.0):
        return wp.float64(wp.inf)
    c = wp.transpose(f) @ f
    i1 = wp.trace(c)
    i2 = wp.float64(0.5) * (i1 * i1 - wp.ddot(c, c))
    a = wp.pow(j, -TWO_THIRDS)
    w = c10 * (a * i1 - wp.float64(3.0)) + c01 * (a * a * i2 - wp.float64(3.0))
    if vol == 0:
        return w
    return w + wp.float64(0.5) * k * (j - wp.float64(1.0)) * (j - wp.float64(1.0))


@wp.func
def mr_stress(f: wp.mat33d, c10: wp.float64, c01: wp.float64, k: wp.float64, vol: int):
    """P = C10 (2a F - 2/3 a I1 F^-T) + C01 (b G2 - 4/3 b I2 F^-T) + K (J - 1) cof F,
    a = J^-2/3, b = a^2, G2 = dI2/dF = 2 (I1 F - F C)."""
    j = wp.determinant(f)
    if j <= wp.float64(0.0):
        return wp.mat33d()
    cof = cofactor(f)
    fit = cof / j
    c = wp.transpose(f) @ f
    i1 = wp.trace(c)
    i2 = wp.float64(0.5) * (i1 * i1 - wp.ddot(c, c))
    a = wp.pow(j, -TWO_THIRDS)
    b = a * a
    g2 = wp.float64(2.0) * (i1 * f - f @ c)
    p = c10 * a * (wp.float64(2.0) * f - TWO_THIRDS * i1 * fit)
    p = p + c01 * b * (g2 - FOUR_THIRDS * i2 * fit)
    if vol == 0:
        return p
    return p + k * (j - wp.float64(1.0)) * cof


@wp.func
def mr_stress_differential(f: wp.mat33d, df: wp.mat33d, c10: wp.float64, c01: wp.float64, k: wp.float64,
                           vol: int):
    """Directional derivative of ``mr_stress`` along dF (hand-derived; checked against finite differences)."""
    j = wp.determinant(f)
    if j <= wp.float64(0.0):
        return wp.mat33d()
    cof = cofactor(f)
    fit = cof / j
    c = wp.transpose(f) @ f
    i1 = wp.trace(c)
    i2 = wp.float64(0.5) * (i1 * i1 - wp.ddot(c, c))
    a = wp.pow(j, -TWO_THIRDS)
    b = a * a
    g2 = wp.float64(2.0) * (i1 * f - f @ c)
    tr = wp.ddot(fit, df)                                   # dJ / J
    da = -TWO_THIRDS * a * tr
    db = -FOUR_THIRDS * b * tr
    dfit = -(fit @ wp.transpose(df) @ fit)                  # d(F^-T)
    di1 = wp.float64(2.0) * wp.ddot(f, df)
    di2 = wp.ddot(g2, df)
    dc = wp.transpose(df) @ f + wp.transpose(f) @ df
    dg2 = wp.float64(2.0) * (di1 * f + i1 * df - df @ c - f @ dc)
    two = wp.float64(2.0)
    dp = c10 * (two * da * f + two * a * df - TWO_THIRDS * ((da * i1 + a * di1) * fit + a * i1 * dfit))
    dp = dp + c01 * (db * g2 + b * dg2 - FOUR_THIRDS * ((db * i2 + b * di2) * fit + b * i2 * dfit))
    if vol == 0:
        return dp
    return dp + k * wp.ddot(cof, df) * cof + k * (j - wp.float64(1.0)) * cofactor_differential(f, df)


# ---------------------------------------------------------------- dispatch by law id
@wp.func
def tet_energy_density(f: wp.mat33d, law: int, p: wp.vec3d):
    """Psi(F) [J/m^3] of material ``law`` with parameters p."""
    if law == LAW_COROTATIONAL:
        return corot_energy_density(f, p[0], p[1], 1)
    if law == LAW_MOONEY_RIVLIN:
        return mr_energy_density(f, p[0], p[1], p[2], 1)
    return snh_energy_density(f, p[0], p[1])


@wp.func
def tet_stress(f: wp.mat33d, law: int, p: wp.vec3d):
    """First Piola-Kirchhoff stress P = dPsi/dF [Pa] of material ``law``; Cauchy stress is P F^T / det F."""
    if law == LAW_COROTATIONAL:
        return corot_stress(f, p[0], p[1], 1)
    if law == LAW_MOONEY_RIVLIN:
        return mr_stress(f, p[0], p[1], p[2], 1)
    return snh_stress(f, p[0], p[1])


@wp.func
def tet_stress_differential(f: wp.mat33d, df: wp.mat33d, law: int, p: wp.vec3d):
    """dP = (d^2 Psi / dF^2) : dF of material ``law``."""
    if law == LAW_COROTATIONAL:
        return corot_stress_differential(f, df, p[0], p[1], 1)
    if law == LAW_MOONEY_RIVLIN:
        return mr_stress_differential(f, df, p[0], p[1], p[2], 1)
    return snh_stress_differential(f, df, p[0], p[1])


# ---------------------------------------------------------------- split W(F) + kappa/2 (J - 1)^2
@wp.func
def volumetric_modulus(law: int, p: wp.vec3d):
    """kappa [Pa] of the split Psi = W + kappa/2 (J - 1)^2: lam_s, lam or K."""
    if law == LAW_MOONEY_RIVLIN:
        return p[2]
    return p[1]


@wp.func
def dev_energy_density(f: wp.mat33d, law: int, p: wp.vec3d):
    """W(F) (stable Neo-Hookean: mu/2 (I_C - 3) - mu (J - 1))."""
    if law == LAW_COROTATIONAL:
        return corot_energy_density(f, p[0], p[1], 0)
    if law == LAW_MOONEY_RIVLIN:
        return mr_energy_density(f, p[0], p[1], p[2], 0)
    return wp.float64(0.5) * p[0] * (wp.ddot(f, f) - wp.float64(3.0)) - p[0] * (wp.determinant(f) - wp.float64(1.0))


@wp.func
def dev_stress(f: wp.mat33d, law: int, p: wp.vec3d):
    """dW/dF."""
    if law == LAW_COROTATIONAL:
        return corot_stress(f, p[0], p[1], 0)
    if law == LAW_MOONEY_RIVLIN:
        return mr_stress(f, p[0], p[1], p[2], 0)
    return p[0] * (f - cofactor(f))


@wp.func
def dev_stress_differential(f: wp.mat33d, df: wp.mat33d, law: int, p: wp.vec3d):
    """(d^2 W / dF^2) : dF."""
    if law == LAW_COROTATIONAL:
        return corot_stress_differential(f, df, p[0], p[1], 0)
    if law == LAW_MOONEY_RIVLIN:
        return mr_stress_differential(f, df, p[0], p[1], p[2], 0)
    return p[0] * (df - cofactor_differential(f, df))
