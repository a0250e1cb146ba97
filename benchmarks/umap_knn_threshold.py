"""Measure where the approximate kNN search overtakes the exact BLAS search.

Prints, for seeded Gaussian clusters of growing size, the wall time of the exact search
and of the random projection forest with neighbour descent, and the forest's recall.
``latentlens.umap.graph.EXACT_MAX_ROWS`` is set from this table.

Usage::

    python benchmarks/umap_knn_threshold.py [--dims 128] [--sizes 4000 8000 16000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    import umap_datasets

    from latentlens.umap import graph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=128, help="features per row")
    parser.add_argument("--sizes", type=int, nargs="*", default=[4000, 8000, 16000, 32000])
    parser.add_argument("--k", type=int, default=15, help="neighbours per row")
    args = parser.parse_args()

    warm, _ = umap_datasets.gaussian_clusters(2000, args.dims)
    graph.nearest_neighbors(warm, args.k, method="exact")
    graph.nearest_neighbors(warm, args.k, method="forest")
    print("| rows | exact s | forest s | forest recall |")
    print("|---|---|---|---|")
    for n in args.sizes:
        X, _ = umap_datasets.gaussian_clusters(n, args.dims)
        start = time.perf_counter()
        exact, _ = graph.nearest_neighbors(X, args.k, method="exact")
        exact_s = time.perf_counter() - start
        start = time.perf_counter()
        approx, _ = graph.nearest_neighbors(X, args.k, method="forest", random_state=0)
        forest_s = time.perf_counter() - start
        pairs = zip(approx, exact, strict=True)
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in pairs])
        print(f"| {n} | {exact_s:.2f} | {forest_s:.2f} | {recall:.4f} |", flush=True)


if __name__ == "__main__":
    main()
