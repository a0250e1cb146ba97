"""Pull the tensor to capture out of a module's output or inputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["OutputSpec", "check_output_spec", "extract_input", "extract_output"]

OutputSpec = None | int | str | Callable[..., Any]


def check_output_spec(spec: Any, parameter: str) -> None:
    """Raise TypeError if ``spec`` is not None, an int, a str or a callable."""
    if spec is None or isinstance(spec, (int, str)) or callable(spec):
        if isinstance(spec, bool):
            raise TypeError(
                f"{parameter}={spec!r} is a bool; pass an int index, a key or a callable"
            )
        return
    raise TypeError(
        f"{parameter}={spec!r} of type {type(spec).__name__} is not supported; pass None "
        "(automatic), an int index into a tuple or list, a str key or attribute of a dict or "
        "ModelOutput, or a callable that returns the tensor"
    )


def _first_tensor(values: Any) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    return None


def extract_output(output: Any, spec: OutputSpec, layer: str) -> torch.Tensor:
    """Return the tensor to capture from a module's forward output.

    Parameters
    ----------
    output : Any
        What the module's forward returned.
    spec : None, int, str or callable
        ``None`` takes a tensor as it is, element 0 of a tuple or list, and
        ``last_hidden_state`` (else the first tensor value) of a dict or
        ``transformers`` ModelOutput. An int indexes a tuple or list; a str is a key of a
        dict or ModelOutput, or an attribute; a callable receives the output and returns
        the tensor.
    layer : str
        Layer name for error messages.

    Returns
    -------
    torch.Tensor

    Raises
    ------
    TypeError
        If no tensor can be found with ``spec``.
    """
    if callable(spec) and not isinstance(spec, (int, str)):
        value = spec(output)
    elif spec is None:
        value = _auto_tensor(output)
    elif isinstance(spec, int):
        try:
            value = output[spec]
        except (TypeError, IndexError, KeyError) as error:
            raise TypeError(
                f"output={spec} cannot index the output of layer {layer!r} "
                f"({_describe(output)}): {error}; pick another index or pass a callable"
            ) from error
    else:
        value = _by_key(output, spec, layer)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"layer {layer!r}: the output selected with output={spec!r} is {_describe(value)}, "
            f"not a tensor (module output: {_describe(output)}); pass output= as an index, a key "
            "or a callable that returns a tensor"
        )
    return value


def extract_input(
    args: tuple, kwargs: Mapping[str, Any], spec: OutputSpec, layer: str
) -> torch.Tensor:
    """Return the tensor to capture from a module's forward inputs.

    Parameters
    ----------
    args : tuple
        Positional arguments of the forward call.
    kwargs : mapping
        Keyword arguments of the forward call.
    spec : None, int, str or callable
        ``None`` takes the first tensor among positional, then keyword arguments; an int
        indexes the positional arguments; a str names a keyword argument; a callable
        receives ``(args, kwargs)`` and returns the tensor.
    layer : str
        Layer name for error messages.

    Returns
    -------
    torch.Tensor

    Raises
    ------
    TypeError
        If no tensor can be found with ``spec``.
    """
    if callable(spec) and not isinstance(spec, (int, str)):
        value = spec(args, kwargs)
    elif spec is None:
        value = _first_tensor(args)
        if value is None:
            value = _first_tensor(kwargs.values())
    elif isinstance(spec, int):
        value = args[spec] if -len(args) <= spec < len(args) else None
    else:
        value = kwargs.get(spec)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"layer {layer!r}: no tensor input found with output={spec!r} (positional: "
            f"{[_describe(a) for a in args]}, keyword: {sorted(kwargs)}); pass output= as a "
            "position, a keyword name or a callable(args, kwargs)"
        )
    return value


def _auto_tensor(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        # transformers' ModelOutput is an OrderedDict that holds only the fields that are set.
        if isinstance(output.get("last_hidden_state"), torch.Tensor):
            return output["last_hidden_state"]
        return _first_tensor(output.values())
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


def _by_key(output: Any, key: str, layer: str) -> Any:
    if isinstance(output, Mapping) and key in output:
        return output[key]
    if hasattr(output, key):
        return getattr(output, key)
    keys = list(output.keys()) if isinstance(output, Mapping) else []
    raise TypeError(
        f"output={key!r} is neither a key nor an attribute of the output of layer {layer!r} "
        f"({_describe(output)}; keys: {keys}); pick one of the keys or pass a callable"
    )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__
