"""Counter-based random numbers for the numba kernels.

Each stream is keyed on integers (a seed, a vertex key, an epoch), so a vertex
draws the same numbers whatever thread runs it and in whatever order. That is
what keeps seeded runs identical while every core works.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_XORSHIFT_MULTIPLIER = np.uint64(0x2545F4914F6CDD1D)


@numba.njit(cache=True, inline="always")
def splitmix64(value):
    """Return a well-mixed uint64 from a uint64 (the SplitMix64 finaliser)."""
    z = value + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def stream_state(seed, key, counter):
    """Return the start state of the stream keyed on ``(seed, key, counter)``, never zero."""
    state = splitmix64(seed ^ splitmix64(key ^ splitmix64(counter)))
    if state == np.uint64(0):
        state = _GOLDEN
    return state


@numba.njit(cache=True, inline="always")
def counter_draw(state, counter):
    """Return draw number ``counter`` of the stream that starts at ``state``.

    This is the ``counter + 1``-th output of SplitMix64 seeded with ``state``. The draws
    need no sequential state, so independent draws can be computed side by side.
    """
    return splitmix64(state + np.uint64(counter) * _GOLDEN)


@numba.njit(cache=True, inline="always")
def next_state(state):
    """Advance a xorshift64 state by one step."""
    state ^= state >> np.uint64(12)
    state ^= state << np.uint64(25)
    state ^= state >> np.uint64(27)
    return state


@numba.njit(cache=True, inline="always")
def bounded_index(state, bound):
    """Map a state to an integer in ``[0, bound)`` by multiply-shift (no division)."""
    high = (state * _XORSHIFT_MULTIPLIER) >> np.uint64(32)
    return np.int64((high * np.uint64(bound)) >> np.uint64(32))
