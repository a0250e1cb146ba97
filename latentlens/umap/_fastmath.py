"""Fast float32 ``x ** y`` for the layout kernels: exponent bits plus short polynomials.

The SGD evaluates ``d2 ** b`` for every edge and negative sample; libm's ``exp(b * log(x))``
is more than half of an epoch. These approximations have a relative error below 2e-6
for ``x`` in ``[1e-30, 1e30]``, far under the noise of stochastic gradient steps.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# LLVM fast-math flags for the kernels. "nnan" and "ninf" are left out on purpose: with
# them LLVM may fold comparisons against inf (used as "no bound yet" or "empty slot")
# into constants, which silently breaks bisections and top-k selections.
FAST_FLAGS = {"nsz", "arcp", "contract", "afn", "reassoc"}


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


# Least-squares polynomial fits (numpy.polyfit on 20,001 points, highest power first):
# log2(1 + x) on [sqrt(1/2) - 1, sqrt(2) - 1], max abs error 8.1e-7, and
# 2**f on [0, 1], max relative error 2.3e-7.
_LOG2_COEFFICIENTS = (
    0.16516601053358748,
    -0.26874086554536647,
    0.29736520349048623,
    -0.35939280060742573,
    0.48048687680041047,
    -0.7213661789050912,
    1.4426995112917533,
    4.821958414719488e-08,
)
_EXP2_COEFFICIENTS = (
    0.0018943794234292928,
    0.008940582529284601,
    0.05587655686901505,
    0.24013169187194985,
    0.6931567766988557,
    0.9999997696337073,
)


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def fast_log2(x):
    """log2 of a positive, normal float32: exponent from the bits, the mantissa
    (brought into ``[sqrt(1/2), sqrt(2))``) by a degree-7 polynomial."""
    bits = _bits_of(np.float32(x))
    exponent = ((bits >> np.int32(23)) & np.int32(255)) - np.int32(127)
    mantissa = _float_of((bits & np.int32(0x7FFFFF)) | np.int32(0x3F800000))
    if mantissa > np.float32(1.4142135):
        mantissa *= np.float32(0.5)
        exponent += np.int32(1)
    t = mantissa - np.float32(1.0)
    c = _LOG2_COEFFICIENTS
    poly = np.float32(c[0])
    poly = poly * t + np.float32(c[1])
    poly = poly * t + np.float32(c[2])
    poly = poly * t + np.float32(c[3])
    poly = poly * t + np.float32(c[4])
    poly = poly * t + np.float32(c[5])
    poly = poly * t + np.float32(c[6])
    poly = poly * t + np.float32(c[7])
    return np.float32(exponent) + poly


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def fast_exp2(y):
    """2**y for float32 ``y``, clamped to the normal range, by a degree-5 polynomial."""
    y = min(max(y, np.float32(-126.0)), np.float32(126.0))
    whole = np.int32(np.floor(y))
    f = y - np.float32(whole)
    c = _EXP2_COEFFICIENTS
    poly = np.float32(c[0])
    poly = poly * f + np.float32(c[1])
    poly = poly * f + np.float32(c[2])
    poly = poly * f + np.float32(c[3])
    poly = poly * f + np.float32(c[4])
    poly = poly * f + np.float32(c[5])
    return poly * _float_of((whole + np.int32(127)) << np.int32(23))


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def fast_pow(x, exponent):
    """``x ** exponent`` for float32 ``x > 0``."""
    return fast_exp2(np.float32(exponent) * fast_log2(x))
