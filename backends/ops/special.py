"""erf from array-API primitives (the standard has none): W. J. Cody's rational
approximations (Math. Comp. 23, 1969; SPECFUN's CALERF), accurate to a few float64
ulps over the whole line, in three ranges picked with ``where``.  GELU needs it."""
from __future__ import annotations

import math

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
      1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
      8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
      2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
      6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
      2.33520497626869185e-3)
_RSQRT_PI = 1.0 / math.sqrt(math.pi)


def erf(xp, x):
    """erf(x) element-wise, in x's dtype (computed in float64)."""
    dtype = x.dtype
    x = xp.astype(x, xp.float64)
    y = xp.abs(x)
    # |x| <= 0.46875: x * P(x^2) / Q(x^2)
    s = xp.minimum(y, 0.46875)
    ysq = s * s
    num, den = _A[4] * ysq, ysq
    for i in range(3):
        num, den = (num + _A[i]) * ysq, (den + _B[i]) * ysq
    small = y * (num + _A[3]) / (den + _B[3])
    # 0.46875 < |x| <= 4: erfc(|x|) = exp(-x^2) P(|x|) / Q(|x|)
    m = xp.minimum(xp.maximum(y, 0.46875), 4.0)
    num, den = _C[8] * m, m
    for i in range(7):
        num, den = (num + _C[i]) * m, (den + _D[i]) * m
    middle = _tail((num + _C[7]) / (den + _D[7]), m, xp)
    # |x| > 4: erfc(|x|) = exp(-x^2) / |x| (1/sqrt(pi) - P(1/x^2) / Q(1/x^2)) / ...
    b = xp.minimum(xp.maximum(y, 4.0), 27.0)
    z = 1.0 / (b * b)
    num, den = _P[5] * z, z
    for i in range(4):
        num, den = (num + _P[i]) * z, (den + _Q[i]) * z
    big = _tail((_RSQRT_PI - z * (num + _P[4]) / (den + _Q[4])) / b, b, xp)
    erfc = xp.where(y <= 4.0, middle, big)
    value = xp.where(y <= 0.46875, small, 1.0 - erfc)
    return xp.astype(xp.where(x < 0, -value, value), dtype)


def _tail(r, y, xp):
    """r * exp(-y^2), with y^2 split so that the exponent keeps its precision (Cody)."""
    ysq = xp.trunc(y * 16.0) / 16.0
    return xp.exp(-ysq * ysq) * xp.exp(-(y - ysq) * (y + ysq)) * r
