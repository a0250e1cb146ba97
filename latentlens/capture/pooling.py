"""Reduce a layer's output to rows: one per sample, or one per token for ``"none"``.

Every function here runs under ``torch.no_grad`` on a detached tensor and accumulates sums
in float32, so half and bfloat16 activations lose no precision in the reduction.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["POOLING_MODES", "Pooled", "mean_weights", "pool", "resolve_pooling"]

POOLING_MODES = ("auto", "mean", "first", "cls", "last", "max", "spatial_mean", "flatten", "none")

# Modules whose 3-D output is (batch, channels, length) rather than (batch, tokens, features).
_CHANNELS_FIRST_TYPES = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
)


@dataclass
class Pooled:
    """Rows produced by pooling one batch.

    ``values`` has shape (n_rows, n_features). ``sample`` maps each row to its sample in
    the batch and ``token`` to its token or spatial position; both are None when there is
    exactly one row per sample.
    """

    values: torch.Tensor
    sample: torch.Tensor | None = None
    token: torch.Tensor | None = None


def resolve_pooling(mode: str, ndim: int, module: nn.Module | None) -> str:
    """Return the concrete pooling for ``mode`` and an output with ``ndim`` dimensions.

    ``"auto"`` keeps a (N, D) output and reshapes a (N,) output to (N, 1). It takes the
    masked mean over tokens of a (N, T, D) output. A (N, C, L) output of a 1-D
    convolution, pooling or batch-norm module, and any (N, C, H, W) or higher map, get
    the spatial mean.
    """
    if mode == "cls":
        mode = "first"
    if mode != "auto":
        return mode
    if ndim <= 1:
        return "flatten"
    if ndim == 2:
        return "identity"
    if ndim == 3 and not isinstance(module, _CHANNELS_FIRST_TYPES):
        return "mean"
    return "spatial_mean"


def align_mask(mask: torch.Tensor | None, tokens: int, layer: str) -> torch.Tensor | None:
    """Return a (N, tokens) boolean mask taken from the model's attention mask, or None.

    A mask that is longer than a one-token output is cut to its last column: while
    generating with a key-value cache the model receives the mask of past and current
    tokens, and the layer sees only the current token. Any other length mismatch (for
    example decoder layers of an encoder-decoder model, which is given the encoder's
    mask) makes pooling ignore the mask, with a warning.
    """
    if mask is None:
        return None
    if mask.ndim != 2:
        warnings.warn(
            f"layer {layer!r}: the attention mask has shape {tuple(mask.shape)}, not "
            "(batch, tokens); pooling ignores it. Pass a 2-D mask to record(attention_mask=...)",
            stacklevel=4,
        )
        return None
    if mask.shape[1] != tokens and not (tokens == 1 and mask.shape[1] > 1):
        warnings.warn(
            f"layer {layer!r}: the attention mask covers {mask.shape[1]} tokens but the output "
            f"has {tokens}; pooling ignores the mask for this layer. Pass the matching mask "
            "to record(attention_mask=...)",
            stacklevel=4,
        )
        return None
    if mask.shape[1] > tokens:
        mask = mask[:, -tokens:]
    return mask != 0


def pool(
    tensor: torch.Tensor, mode: str, mask: torch.Tensor | None, module: nn.Module | None, layer: str
) -> Pooled:
    """Pool a detached batch-first tensor according to ``mode``.

    Parameters
    ----------
    tensor : torch.Tensor of shape (N, ...)
        Layer output or input, batch first, any floating dtype.
    mode : str
        One of :data:`POOLING_MODES`.
    mask : torch.Tensor of shape (N, T_mask) or None
        The model's attention mask (nonzero marks a real token); used by the token
        poolings of (N, T, D) tensors.
    module : torch.nn.Module or None
        The hooked module, used by ``"auto"`` to recognise channels-first 1-D maps.
    layer : str
        Layer name for messages.

    Returns
    -------
    Pooled
        Rows on the tensor's device, in the tensor's dtype, except the token means,
        which are float32.

    Raises
    ------
    ValueError
        If ``mode`` needs more dimensions than the tensor has.
    """
    concrete = resolve_pooling(mode, tensor.ndim, module)
    if tensor.ndim == 0:
        raise ValueError(
            f"layer {layer!r} produced a 0-d tensor; capture needs a batch dimension first"
        )
    batch = tensor.shape[0]

    if concrete == "identity":
        return Pooled(tensor)
    if concrete == "flatten":
        return Pooled(tensor.reshape(batch, -1))
    if tensor.ndim == 2:
        # One vector per sample already: every pooling leaves it as it is.
        return Pooled(tensor)
    if concrete == "spatial_mean":
        return Pooled(_spatial_mean(tensor))

    if tensor.ndim > 3:
        if concrete == "mean":
            return Pooled(_spatial_mean(tensor))
        if concrete == "max":
            return Pooled(tensor.amax(dim=tuple(range(2, tensor.ndim))))
        if concrete == "none":
            # One row per spatial position: (N, C, *S) -> (N * prod(S), C).
            positions = tensor.flatten(2).transpose(1, 2)
            return _rows_per_token(positions, None)
        raise ValueError(
            f"pooling={mode!r} needs a (batch, tokens, features) output, but layer {layer!r} "
            f"produced shape {tuple(tensor.shape)}; use 'spatial_mean', 'max', 'flatten' or 'none'"
        )

    valid = align_mask(mask, tensor.shape[1], layer)
    if concrete == "mean":
        return Pooled(_masked_mean(tensor, valid))
    if concrete == "first":
        return Pooled(_take_token(tensor, _first_valid(tensor, valid)))
    if concrete == "last":
        return Pooled(_take_token(tensor, _last_valid(tensor, valid)))
    if concrete == "max":
        return Pooled(_masked_max(tensor, valid))
    if concrete == "none":
        return _rows_per_token(tensor, valid)
    raise ValueError(f"unknown pooling {mode!r}; allowed: {POOLING_MODES}")


# Sums over tokens or positions run as a matrix product with a 0/1 weight vector for these
# dtypes: BLAS does it about twice as fast as an elementwise product and a reduction on CPU
# (timed on 64 x 32 x 4 x 4 maps and 16 x 64 x 128 sequences, torch 2.13). Half and bfloat16
# take the reduction with float32 accumulation instead.
_MATMUL_DTYPES = (torch.float32, torch.float64)


def _masked_mean(tensor: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        if tensor.dtype in _MATMUL_DTYPES:
            weights = torch.ones(tensor.shape[0], 1, tensor.shape[1], dtype=tensor.dtype)
            total = torch.bmm(weights.to(tensor.device), tensor).squeeze(1)
            return (total / tensor.shape[1]).to(torch.float32)
        return tensor.mean(dim=1, dtype=torch.float32)
    count = valid.sum(dim=1, dtype=torch.float32).clamp(min=1e-9).unsqueeze(-1)
    if tensor.dtype in _MATMUL_DTYPES:
        total = torch.bmm(valid.to(tensor.dtype).unsqueeze(1), tensor).squeeze(1)
        return total.to(torch.float32) / count
    total = (tensor * valid.to(tensor.dtype).unsqueeze(-1)).sum(dim=1, dtype=torch.float32)
    return total / count


def _spatial_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over every axis after the second: (N, C, *S) -> (N, C), float32."""
    batch, channels = tensor.shape[0], tensor.shape[1]
    positions = tensor[0, 0].numel() if batch and channels else 0
    if tensor.dtype in _MATMUL_DTYPES and tensor.is_contiguous() and positions:
        weights = mean_weights(positions, tensor.dtype, tensor.device)
        total = torch.mv(tensor.view(batch * channels, positions), weights)
        return total.view(batch, channels).to(torch.float32)
    return tensor.mean(dim=tuple(range(2, tensor.ndim)), dtype=torch.float32)


@functools.lru_cache(maxsize=64)
def mean_weights(count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A read-only vector of ``count`` entries 1/count, reused across calls."""
    return torch.full((count,), 1.0 / count, dtype=dtype, device=device)


def _masked_max(tensor: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return tensor.amax(dim=1)
    filled = tensor.masked_fill(~valid.unsqueeze(-1), float("-inf"))
    result = filled.amax(dim=1)
    # A row without any real token has no maximum; report zeros instead of -inf.
    empty = ~valid.any(dim=1)
    if bool(empty.any()):
        result = result.masked_fill(empty.unsqueeze(-1), 0.0)
    return result


def _first_valid(tensor: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return torch.zeros(tensor.shape[0], dtype=torch.long, device=tensor.device)
    # argmax returns the first maximum, so this is the first real token (left padding too).
    return valid.to(torch.int8).argmax(dim=1)


def _last_valid(tensor: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    tokens = tensor.shape[1]
    if valid is None:
        return torch.full((tensor.shape[0],), tokens - 1, dtype=torch.long, device=tensor.device)
    # The first real token seen from the end is the last one, for left and right padding.
    from_end = valid.flip(dims=(1,)).to(torch.int8).argmax(dim=1)
    return tokens - 1 - from_end


def _take_token(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(tensor.shape[0], device=tensor.device)
    return tensor[rows, index.to(tensor.device)]


def _rows_per_token(tensor: torch.Tensor, valid: torch.Tensor | None) -> Pooled:
    batch, tokens = tensor.shape[0], tensor.shape[1]
    if valid is None:
        sample = torch.arange(batch).repeat_interleave(tokens)
        token = torch.arange(tokens).repeat(batch)
        return Pooled(tensor.reshape(batch * tokens, -1), sample, token)
    where = valid.nonzero()
    sample, token = where[:, 0], where[:, 1]
    return Pooled(tensor[sample, token], sample.cpu(), token.cpu())
