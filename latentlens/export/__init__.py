"""TensorBoard export: projector embeddings with our layouts, scalars and map pictures.

On-disk layout of one run written by `ProjectorWriter`::

    <logdir>/<run>/
        events.out.tfevents.*.latentlens       scalars and images; makes TensorBoard list the run
        projector_config.pbtxt                 merged config, one entry per tensor name
        projector/<tensor_name>/<version>/
            tensor.bin (or tensor.tsv)         little-endian float32, shape in the config
            metadata.tsv                       header + one row per point, 'index' column last
            bookmarks.json                     States with our 2-D/3-D layout ("umap")
            sprite.png                         optional thumbnails, square grid <= 8192 px
            embedding.pbtxt                    written last: marks the folder complete

`read_projector` reads a logdir back through TensorBoard's own projector plugin.
This package never imports torch, numba or the UMAP engine.
"""

from __future__ import annotations

from latentlens.export.images import render_scatter
from latentlens.export.inspect import read_projector
from latentlens.export.names import tensor_name
from latentlens.export.writer import MAX_POINTS, ExportWarning, ProjectorWriter

__all__ = [
    "MAX_POINTS",
    "ExportWarning",
    "ProjectorWriter",
    "read_projector",
    "render_scatter",
    "tensor_name",
]
