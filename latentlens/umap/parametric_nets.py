"""Default networks of ParametricUMAP: an MLP encoder and decoder for vector data.

The default networks carry the input scaling as buffers, so the scaling is part of
the saved state dict and a loaded model needs nothing but its config and tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

# The widths of umap-learn's default encoder. Trained with Adam at 3e-3, this network
# matches a (256, 256, 256) one trained at 1e-3 on MiniLM embeddings (held-out
# trustworthiness 0.742 for both, mean of two seeds) at a quarter of the cost per row.
DEFAULT_HIDDEN_SIZES = (100, 100, 100)


class Standardize(nn.Module):
    """Subtract a per-feature mean and divide by one global scale.

    A single scale, the root mean feature variance, keeps near-constant features
    from being blown up, which a per-feature standard deviation would do.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(()))

    def fit(self, X: np.ndarray) -> Standardize:
        """Set ``mean`` and ``scale`` from rows ``X`` of shape (n_samples, n_features)."""
        mean = X.mean(axis=0, dtype=np.float64)
        scale = float(np.sqrt(X.var(axis=0, dtype=np.float64).mean()))
        self.mean.copy_(torch.from_numpy(mean))
        self.scale.fill_(scale if scale > 0 else 1.0)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class Unstandardize(Standardize):
    """Map standardized values back to input units; the inverse of :class:`Standardize`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.mean


def _mlp_layers(
    in_features: int, hidden_sizes: Sequence[int], out_features: int
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    width = in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return layers


class MLPEncoder(nn.Sequential):
    """Standardize, then ``Linear + ReLU`` per hidden size, then a linear map to the embedding.

    Input: float32 tensor (batch, n_features); output: (batch, n_components).
    """

    def __init__(self, n_features: int, n_components: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__(
            Standardize(n_features), *_mlp_layers(n_features, hidden_sizes, n_components)
        )
        self.spec = {
            "type": "mlp",
            "n_features": int(n_features),
            "n_components": int(n_components),
            "hidden_sizes": [int(h) for h in hidden_sizes],
        }

    def folded(self) -> nn.Sequential:
        """Return a copy for inference with the standardization folded into the first layer.

        ``W ((x - mean) / scale) + b`` becomes ``(W / scale) x + (b - W mean / scale)``,
        which saves two passes over the input. The outputs match up to float32
        rounding. The first layer is new, and the later layers are shared with this module.
        """
        standardize, first, *rest = list(self)
        with torch.no_grad():
            weight = first.weight / standardize.scale
            # skip_init leaves the global random generator untouched.
            merged = nn.utils.skip_init(
                nn.Linear, first.in_features, first.out_features, device=weight.device
            )
            merged.weight.copy_(weight)
            merged.bias.copy_(first.bias - weight @ standardize.mean)
        return nn.Sequential(merged, *rest)


class MLPDecoder(nn.Sequential):
    """Mirror of :class:`MLPEncoder`: codes (batch, n_components) to rows (batch, n_features)."""

    def __init__(self, n_components: int, n_features: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__(
            *_mlp_layers(n_components, list(hidden_sizes)[::-1], n_features),
            Unstandardize(n_features),
        )
        self.spec = {
            "type": "mlp",
            "n_features": int(n_features),
            "n_components": int(n_components),
            "hidden_sizes": [int(h) for h in hidden_sizes],
        }


def build_from_spec(spec: dict[str, Any], role: str) -> nn.Module:
    """Rebuild a default network from the ``spec`` dict it was saved with.

    Only the ``"mlp"`` type is rebuilt; nothing from the spec is imported or executed.
    """
    if spec.get("type") != "mlp":
        raise ValueError(f"cannot rebuild a {role} of type {spec.get('type')!r} from a config.")
    if role == "encoder":
        return MLPEncoder(spec["n_features"], spec["n_components"], spec["hidden_sizes"])
    return MLPDecoder(spec["n_components"], spec["n_features"], spec["hidden_sizes"])


def describe_module(module: nn.Module) -> dict[str, Any]:
    """Return the spec saved in the config for ``module``: its MLP spec, or its class name."""
    spec = getattr(module, "spec", None)
    if isinstance(module, (MLPEncoder, MLPDecoder)) and spec is not None:
        return dict(spec)
    cls = type(module)
    return {"type": "custom", "class": f"{cls.__module__}.{cls.__qualname__}"}
