"""Capture latent activations of PyTorch and HuggingFace models with forward hooks.

``ActivationRecorder`` chooses layers, pulls the tensor out of each output, pools it to
one row per sample and keeps detached float32 rows with per-sample metadata.
``save_activations`` and ``load_activations`` move them to and from disk.
"""

from latentlens.capture.activations import Activations
from latentlens.capture.buffer import CaptureBudgetWarning
from latentlens.capture.distributed import gather_activations, save_per_rank
from latentlens.capture.pooling import POOLING_MODES
from latentlens.capture.recorder import ActivationRecorder
from latentlens.capture.selection import canonical_name, resolve_layers, unwrap_model
from latentlens.capture.storage import load_activations, read_extra, save_activations

__all__ = [
    "POOLING_MODES",
    "ActivationRecorder",
    "Activations",
    "CaptureBudgetWarning",
    "canonical_name",
    "gather_activations",
    "load_activations",
    "read_extra",
    "resolve_layers",
    "save_activations",
    "save_per_rank",
    "unwrap_model",
]
