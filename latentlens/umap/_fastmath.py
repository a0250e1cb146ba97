"""Fast float32 ``x ** y`` for the layout kernels: exponent bits plus short polynomials.

The SGD evaluates ``d2 ** b`` for every edge and negative sample; libm's ``exp(b * log(x))``
is more than half of an epoch. These approximations have a relative error below 2e-5
for ``x`` in ``[1e-30, 1e30]``, far under the noise of stochastic gradient steps.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def _bits_of(typingctx, value):
    """Reinterpret a float32 as int32 (no conversion)."""
    if value != types.float32:
        return None
    signature = types.int32(types.float32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return signature, codegen


@intrinsic
def _float_of(typingctx, value):
    """Reinterpret the low 32 bits of an integer as float32 (no conversion)."""
    if not isinstance(value, types.Integer):
        return None
    signature = types.float32(value)

    def codegen(context, builder, sig, args):
        low = args[0]
        if value.bitwidth > 32:
            low = builder.trunc(low, ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())

    return signature, codegen


@numba.njit(cache=True, fastmath=True, inline="always")
def fast_log2(x):
    """log2 of a positive, normal float32: exponent from the bits, mantissa by the
    series ``ln m = 2 atanh((m - 1) / (m + 1))`` on ``m`` in ``[sqrt(1/2), sqrt(2))``."""
    bits = _bits_of(np.float32(x))
    exponent = ((bits >> np.int32(23)) & np.int32(255)) - np.int32(127)
    mantissa = _float_of((bits & np.int32(0x7FFFFF)) | np.int32(0x3F800000))
    if mantissa > np.float32(1.4142135):
        mantissa *= np.float32(0.5)
        exponent += np.int32(1)
    t = (mantissa - np.float32(1.0)) / (mantissa + np.float32(1.0))
    t2 = t * t
    series = t * (
        np.float32(2.0)
        + t2 * (np.float32(2.0 / 3.0) + t2 * (np.float32(0.4) + t2 * np.float32(2.0 / 7.0)))
    )
    return np.float32(exponent) + series * np.float32(1.4426950408889634)


@numba.njit(cache=True, fastmath=True, inline="always")
def fast_exp2(y):
    """2**y for float32 ``y``, clamped to the normal range, by a degree-6 polynomial."""
    y = min(max(y, np.float32(-126.0)), np.float32(126.0))
    whole = np.int32(np.floor(y))
    f = (y - np.float32(whole)) * np.float32(0.6931471805599453)
    poly = np.float32(1.0) + f * (
        np.float32(1.0)
        + f * (
            np.float32(0.5)
            + f * (
                np.float32(1.0 / 6.0)
                + f * (
                    np.float32(1.0 / 24.0)
                    + f * (np.float32(1.0 / 120.0) + f * np.float32(1.0 / 720.0))
                )
            )
        )
    )
    return poly * _float_of((whole + np.int32(127)) << np.int32(23))


@numba.njit(cache=True, fastmath=True, inline="always")
def fast_pow(x, exponent):
    """``x ** exponent`` for float32 ``x > 0``."""
    return fast_exp2(np.float32(exponent) * fast_log2(x))
