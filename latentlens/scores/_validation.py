"""Input checks shared by the drift tests and the outlier scorer.

Every public entry point of :mod:`latentlens.scores` runs these checks before it computes
anything, so a bad argument fails with a message that names the parameter, the value received,
what is allowed and how to fix it.
"""

from __future__ import annotations

import numbers

import numpy as np


def check_matrix(name: str, value: object, *, min_rows: int = 1) -> np.ndarray:
    """Return ``value`` as a finite 2-D floating-point array, or raise.

    float32 and float64 input keeps its dtype (no copy); integer and boolean input is converted
    to float64.
    """
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a 2-D numeric array of shape (n_samples, n_features); "
            f"got {type(value).__name__}."
        )
    array = np.asarray(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(
            f"{name} must be a 2-D numeric array of shape (n_samples, n_features); "
            f"got an array of dtype {array.dtype}. Convert it with np.asarray(..., dtype=float)."
        )
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(
            f"{name} must contain real numbers; got dtype {array.dtype}. "
            "Pass the real part or the magnitude instead."
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features); got shape "
            f"{array.shape}. Reshape a single feature with x.reshape(-1, 1) and flatten "
            "per-token activations to one row per sample first."
        )
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column; got shape {array.shape}.")
    if array.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} rows; got {array.shape[0]}. "
            "Collect more samples before testing."
        )
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad_rows.size} row(s), the first at "
            f"row {bad_rows[0]}. Drop or impute those rows before scoring."
        )
    return array


def check_same_features(
    first_name: str, first: np.ndarray, second_name: str, second: np.ndarray
) -> None:
    """Raise if two matrices differ in their number of columns."""
    if first.shape[1] != second.shape[1]:
        raise ValueError(
            f"{first_name} and {second_name} must have the same number of features; got "
            f"{first.shape[1]} and {second.shape[1]}. Capture both from the same layer with the "
            "same pooling."
        )


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as a float strictly between 0 and 1, or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in (0, 1); got {value!r}.")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"{name} must lie strictly between 0 and 1; got {value!r}. Use for example 0.05."
        )
    return value


def check_int(name: str, value: object, *, minimum: int, hint: str = "") -> int:
    """Return ``value`` as an int no smaller than ``minimum``, or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}.{hint}")
    return value


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, or raise."""
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(option) for option in allowed)
        raise ValueError(f"{name} must be one of {options}; got {value!r}.")
    return value


def make_rng(random_state: object) -> np.random.Generator:
    """Return a numpy Generator from None, an int, a SeedSequence or a Generator, or raise."""
    if isinstance(random_state, bool):
        raise TypeError(
            f"random_state must be None, an int or a numpy Generator; got {random_state!r}."
        )
    if random_state is None or isinstance(
        random_state, (numbers.Integral, np.random.SeedSequence, np.random.Generator)
    ):
        if isinstance(random_state, numbers.Integral) and int(random_state) < 0:
            raise ValueError(f"random_state must be a non-negative int; got {random_state}.")
        return np.random.default_rng(random_state)
    raise TypeError(
        "random_state must be None, an int, a numpy SeedSequence or a numpy Generator; got "
        f"{type(random_state).__name__}. Replace a legacy RandomState with "
        "np.random.default_rng(seed)."
    )
