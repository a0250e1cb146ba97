"""Names that TensorBoard's projector can put in a URL, and checks on run names.

The projector's front end inserts run and tensor names into request URLs without
encoding them, so both are kept to ``[A-Za-z0-9_.-]``. Step numbers are zero-padded
so that names sort in step order (the projector picks its default tensor partly by
alphabetical order).
"""

from __future__ import annotations

import numbers
import re

URL_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.\-]")
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.\-]+")

STEP_DIGITS = 6


def check_step(step: object, *, parameter: str = "step") -> int:
    """Return ``step`` as an int, or raise if it is not a non-negative integer."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(
            f"{parameter} must be a non-negative int, got {step!r} of type "
            f"{type(step).__name__}; pass the training step or epoch number, e.g. {parameter}=3"
        )
    if step < 0:
        raise ValueError(f"{parameter} must be >= 0, got {step}; pass the step or epoch number")
    return int(step)


def tensor_name(layer: str, step: int) -> str:
    """Return the projector tensor name for one layer at one step.

    Characters outside ``[A-Za-z0-9_.-]`` in the layer name become ``_`` and the step
    is zero-padded to six digits, so names stay URL-safe and sort in step order.

    Parameters
    ----------
    layer : str
        Layer name, e.g. ``"encoder.layer.0/attention"``; must not be empty.
    step : int
        Training step or epoch, ``>= 0``.

    Returns
    -------
    str
        ``"<layer>_step<step:06d>"`` with unsafe characters replaced.

    Raises
    ------
    TypeError
        If ``layer`` is not a str or ``step`` is not an int.
    ValueError
        If ``layer`` is empty or ``step`` is negative.

    Examples
    --------
    >>> tensor_name("encoder.layer.0/output", 12)
    'encoder.layer.0_output_step000012'
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a str, got {type(layer).__name__}: {layer!r}")
    if not layer.strip():
        raise ValueError(f"layer must be a non-empty name such as 'fc1', got {layer!r}")
    step = check_step(step)
    safe = _UNSAFE_CHARACTERS.sub("_", layer.strip()).strip("_") or "layer"
    return f"{safe}_step{step:0{STEP_DIGITS}d}"


def check_run_name(run: object) -> str:
    """Return ``run`` if it is a usable run folder name, else raise with the fix.

    A run is one or more ``/``-separated parts, each made of ``[A-Za-z0-9_.-]`` and
    none equal to ``.`` or ``..``.
    """
    if not isinstance(run, str):
        raise TypeError(f"run must be a str, got {type(run).__name__}: {run!r}")
    parts = run.split("/")
    for part in parts:
        if not part or part in (".", "..") or not URL_SAFE.fullmatch(part):
            bad = sorted(set(_UNSAFE_RUN.findall(part)))
            hint = f" (characters {''.join(bad)!r} are not allowed)" if bad else ""
            raise ValueError(
                f"run must be made of '/'-separated parts of letters, digits, '_', '.' and "
                f"'-' (no empty, '.' or '..' part), got {run!r}{hint}; TensorBoard puts run "
                f"names into URLs unencoded. Use e.g. run='demo' or run='train/epochs'"
            )
    return run
