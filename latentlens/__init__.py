"""latentlens: capture activations, map them with UMAP, score drift, show it in TensorBoard.

The top-level names are imported lazily, so ``import latentlens`` stays fast and a user
who only needs the export or the scores does not pay for compiling the UMAP kernels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY_NAMES = {
    "LatentLens": "latentlens.lens",
    "ActivationRecorder": "latentlens.capture",
    "UMAP": "latentlens.umap",
    "ParametricUMAP": "latentlens.umap.parametric",
}

__all__ = ["ActivationRecorder", "LatentLens", "ParametricUMAP", "UMAP", "__version__"]

if TYPE_CHECKING:
    from latentlens.capture import ActivationRecorder
    from latentlens.lens import LatentLens
    from latentlens.umap import UMAP
    from latentlens.umap.parametric import ParametricUMAP


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'latentlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
