"""latentlens' UMAP engine: numba kernels for the graph and the layout, scikit-learn API.

>>> from latentlens.umap import UMAP
"""

from latentlens.umap._validation import UMAPParameterWarning
from latentlens.umap.estimator import UMAP
from latentlens.umap.spectral import SpectralFallbackWarning

__all__ = ["UMAP", "UMAPParameterWarning", "SpectralFallbackWarning"]
