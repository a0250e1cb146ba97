"""Benchmark ParametricUMAP against latentlens.UMAP and umap-learn on the same data.

For each data set the rows are split 80/20 (stratified, seed 0). Every engine is fitted
on the training rows, then embeds the held-out rows and a block of 100,000 rows made of
held-out rows with a little noise. Printed per engine: fit time, time to transform the
100,000 rows (and per row), trustworthiness(10) of the held-out embedding, and the
accuracy of a 10-NN classifier fitted on the training embedding and scored on the
held-out one. The reference row "UMAP on all rows" fits latentlens.UMAP on training and
held-out rows together and reads the held-out rows' coordinates from that one layout.

Every engine is warmed up on a small fit and transform first, so compile time is not
counted (umap-learn and latentlens compile numba kernels on first use).

Targets: ParametricUMAP transforms at least 100x faster per row than umap-learn, and its
held-out trustworthiness is within 0.01 of "UMAP on all rows".

Run: ``python benchmarks/parametric.py [--datasets digits,minilm,clusters]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.manifold import trustworthiness
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
import umap_datasets  # noqa: E402  (benchmarks/ is not a package)

from latentlens.umap import UMAP  # noqa: E402
from latentlens.umap.parametric import ParametricUMAP  # noqa: E402

N_TRANSFORM_ROWS = 100_000
SEED = 0


def load(name, cache_dir):
    if name == "digits":
        return umap_datasets.digits()
    if name == "clusters":
        return umap_datasets.gaussian_clusters(20_000, 128, seed=SEED)
    if name == "minilm":
        return umap_datasets.minilm_docstrings(cache_dir)
    raise ValueError(f"unknown data set {name!r}; use digits, minilm or clusters.")


def transform_block(X_test, n_rows, seed):
    """Return ``n_rows`` held-out rows, repeated, with noise of 1 % of the feature scale."""
    rng = np.random.default_rng(seed)
    rows = X_test[rng.integers(0, X_test.shape[0], n_rows)]
    scale = 0.01 * float(np.sqrt(X_test.var(axis=0).mean()))
    return (rows + rng.normal(scale=scale, size=rows.shape)).astype(np.float32)


def quality(X_test, E_train, y_train, E_test, y_test):
    trust = trustworthiness(X_test, E_test, n_neighbors=10)
    accuracy = KNeighborsClassifier(n_neighbors=10).fit(E_train, y_train).score(E_test, y_test)
    return trust, accuracy


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def warm_up(make_engine, X):
    engine = make_engine()
    engine.fit(X[:300])
    engine.transform(X[300:400])


def engines(args):
    import umap as umap_learn

    parametric = {"random_state": SEED, "verbose": args.verbose}
    return {
        "umap-learn": lambda: umap_learn.UMAP(random_state=SEED),
        "latentlens.UMAP": lambda: UMAP(random_state=SEED),
        "ParametricUMAP": lambda: ParametricUMAP(**parametric),
        "ParametricUMAP init=umap": lambda: ParametricUMAP(init_layout="umap", **parametric),
    }


def run_dataset(name, args):
    X, y = load(name, args.cache_dir)
    train, test = train_test_split(
        np.arange(X.shape[0]), test_size=0.2, random_state=SEED, stratify=y
    )
    X_train, X_test, y_train, y_test = X[train], X[test], y[train], y[test]
    block = transform_block(X_test, N_TRANSFORM_ROWS, SEED)
    print(
        f"\n## {name}: {X.shape[0]} rows x {X.shape[1]} features, "
        f"{len(train)} train / {len(test)} held out, {len(np.unique(y))} labels",
        flush=True,
    )

    results = {}
    all_rows, fit_all = timed(UMAP(random_state=SEED).fit_transform, X)
    results["UMAP on all rows"] = (
        fit_all,
        None,
        *quality(X_test, all_rows[train], y_train, all_rows[test], y_test),
    )

    for label, make_engine in engines(args).items():
        if label not in args.engines:
            continue
        warm_up(make_engine, X_train)
        engine = make_engine()
        E_train, fit_time = timed(engine.fit_transform, X_train)
        E_test = engine.transform(X_test)
        n_rows = args.umap_learn_rows if label == "umap-learn" else N_TRANSFORM_ROWS
        _, transform_time = timed(engine.transform, block[:n_rows])
        # Seconds for all 100,000 rows, scaled from a shorter run where one was asked for.
        transform_time *= N_TRANSFORM_ROWS / n_rows
        results[label] = (
            fit_time,
            transform_time,
            *quality(X_test, E_train, y_train, E_test, y_test),
        )
        print(f"  done: {label}", flush=True)

    print_table(results)
    return results


def print_table(results):
    reference_trust = results["UMAP on all rows"][2]
    anchor = results.get("umap-learn")
    header = (
        f"| engine | fit s | transform {N_TRANSFORM_ROWS:,} rows s | us/row | "
        "speed-up vs umap-learn | held-out T(10) | T - T(all rows) | 10-NN acc |"
    )
    print(header)
    print("|" + "---|" * 8)
    for label, (fit_time, transform_time, trust, accuracy) in results.items():
        if transform_time is None:
            timing = "- | - | -"
        else:
            per_row = transform_time / N_TRANSFORM_ROWS * 1e6
            speedup = (
                f"{anchor[1] / transform_time:.0f}x"
                if anchor is not None and anchor[1] is not None
                else "-"
            )
            timing = f"{transform_time:.2f} | {per_row:.2f} | {speedup}"
        print(
            f"| {label} | {fit_time:.1f} | {timing} | {trust:.4f} | "
            f"{trust - reference_trust:+.4f} | {accuracy:.3f} |"
        )
    print(flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        default="digits,minilm,clusters",
        help="comma-separated: digits, minilm, clusters",
    )
    parser.add_argument(
        "--engines",
        default="umap-learn,latentlens.UMAP,ParametricUMAP,ParametricUMAP init=umap",
        help="comma-separated engine labels to run",
    )
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "latentlens-bench"),
        help="folder for the cached MiniLM embeddings",
    )
    parser.add_argument(
        "--umap-learn-rows",
        type=int,
        default=N_TRANSFORM_ROWS,
        help="rows of the block that umap-learn transforms; its time is scaled to 100,000 "
        "rows (keep it above 10,000, where umap-learn runs 30 epochs)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice)",
    )
    parser.add_argument("--verbose", action="store_true", help="progress bars and loss logs")
    args = parser.parse_args()
    args.engines = set(args.engines.split(","))
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="n_jobs value")

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, device "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
        flush=True,
    )
    for name in args.datasets.split(","):
        run_dataset(name, args)


if __name__ == "__main__":
    main()
