"""Drift-test and outlier-score time: latentlens against plain numpy full-kernel anchors.

Data: float32 rows of width ``--dim`` with a decaying spectrum (64 latent factors mixed into
``--dim`` features plus isotropic noise), like pooled activations. "shifted" moves the current
window by 0.3 standard deviations along one mid-variance latent factor; "no drift" draws both
windows from one distribution.

Drift, same data for both sides:
- latentlens: ``drift_test`` defaults (pooled PCA-32, whitened, 512 random Fourier features,
  200 permutations), p-value included; median wall time of ``--repeats`` calls after one warm-up.
- anchor: a plain full-kernel MMD permutation test in numpy, computed the way alibi-detect's
  ``MMDDrift`` does it. It uses a Gaussian kernel on the raw rows with the bandwidth from the
  median reference distance, builds the full (n + m)^2 kernel matrix and computes the
  unbiased MMD^2, re-indexing the matrix for each permutation.
  It runs on ``--anchor-rows`` rows per side with 200 permutations. At the full size it builds
  the kernel once and times ``--anchor-full-permutations`` permutations; the time for 200 is
  extrapolated from them (its p-value is not meaningful and is not printed).

Outliers: ``OutlierScorer`` (bank of 4,000, 25 % calibration) fitted on the reference and
scoring the current window, against brute-force distances to the 10th nearest neighbour among
all reference rows in numpy.

``--blas-threads N`` runs both sides with N BLAS threads. On a machine shared with other busy
processes, multi-threaded OpenBLAS spin-waits and can be many times slower than one thread.
``--anchor-rows 0`` skips the anchors.

``--calibration-trials N`` instead prints false-alarm rates of ``drift_test`` with its defaults
at alpha = 0.05 over N no-drift trials per case (four distribution shapes of width 6, three
window sizes, MMD and KS), as a longer check than the test suite's 200-400 trials.

Run: python benchmarks/scores.py [--rows 10000] [--dim 768] [--repeats 5]
     [--anchor-rows 2000] [--anchor-full-permutations 3] [--blas-threads N]
     [--calibration-trials N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

# Figures of the numpy prototype recorded in the drift notes (10,000 vs 10,000 rows, 768 dims,
# 2 threads): PCA-64 + RFF + 200 permutations, and 10th-neighbour distance against a 10k
# reference and a 2k bank.
PROTOTYPE_DRIFT_SECONDS = 0.25
PROTOTYPE_KNN_FULL_SECONDS = 1.9


def make_windows(rows: int, dim: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(5.0, 0.2, 64)
    mixing = rng.normal(size=(64, dim)) / np.sqrt(64)

    def window(offset: float) -> np.ndarray:
        latent = rng.normal(size=(rows, 64)) * scales
        latent[:, 20] += offset * scales[20]
        noise = 0.3 * rng.normal(size=(rows, dim))
        return (latent @ mixing + noise).astype(np.float32)

    return window(0.0), window(shift)


def full_kernel_mmd_test(
    reference: np.ndarray, current: np.ndarray, n_permutations: int, seed: int
) -> tuple[float, float, float, float]:
    """Return (p-value, seconds to build the kernel, seconds per permutation, total seconds)."""
    start = time.perf_counter()
    n, m = len(reference), len(current)
    pooled = np.concatenate([reference, current]).astype(np.float32)
    squared_norms = np.einsum("ij,ij->i", pooled, pooled)
    kernel = pooled @ pooled.T
    kernel *= -2.0
    kernel += squared_norms[:, None]
    kernel += squared_norms[None, :]
    np.maximum(kernel, 0.0, out=kernel)
    # Median of the reference-reference distances, skipping the n zeros on the diagonal.
    block = kernel[:n, :n].ravel()
    middle = n + (block.size - n) // 2
    median_squared = float(np.partition(block, middle)[middle])
    np.exp(kernel * np.float32(-0.5 / median_squared), out=kernel)
    built = time.perf_counter()

    def unbiased_mmd2(matrix: np.ndarray) -> float:
        within_reference = matrix[:n, :n].sum(dtype=np.float64) - n
        within_current = matrix[n:, n:].sum(dtype=np.float64) - m
        between = matrix[:n, n:].sum(dtype=np.float64)
        return (
            within_reference / (n * (n - 1))
            + within_current / (m * (m - 1))
            - 2.0 * between / (n * m)
        )

    observed = unbiased_mmd2(kernel)
    rng = np.random.default_rng(seed)
    at_least = 0
    for _ in range(n_permutations):
        order = rng.permutation(n + m)
        at_least += unbiased_mmd2(kernel[order][:, order]) >= observed
    finished = time.perf_counter()
    per_permutation = (finished - built) / max(n_permutations, 1)
    return (1 + at_least) / (1 + n_permutations), built - start, per_permutation, finished - start


def brute_force_knn_scores(reference: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Distance to the k-th nearest reference row, in blocks of 1,000 queries."""
    reference = reference.astype(np.float64)
    reference_norms = np.einsum("ij,ij->i", reference, reference)
    scores = np.empty(len(queries))
    for start in range(0, len(queries), 1000):
        block = queries[start : start + 1000].astype(np.float64)
        squared = (
            np.einsum("ij,ij->i", block, block)[:, None]
            + reference_norms[None, :]
            - 2.0 * block @ reference.T
        )
        scores[start : start + 1000] = np.sqrt(
            np.maximum(np.partition(squared, k - 1, axis=1)[:, k - 1], 0.0)
        )
    return scores


def timed(function, repeats: int, *args, **kwargs):
    """Time ``repeats`` calls after one warm-up call.

    Returns the median and the minimum wall time, the median CPU time of this process (all
    threads), and the last result. On a shared machine the minimum is the figure least
    disturbed by other processes.
    """
    function(*args, **kwargs)
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), min(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--anchor-rows", type=int, default=2000)
    parser.add_argument("--anchor-full-permutations", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, default=None)
    parser.add_argument("--calibration-trials", type=int, default=0)
    args = parser.parse_args()

    import threadpoolctl

    # Load scipy and scikit-learn, with their BLAS libraries, before setting the limit:
    # threadpoolctl only limits libraries that are already loaded.
    import latentlens.scores  # noqa: F401

    with threadpoolctl.threadpool_limits(args.blas_threads, user_api="blas"):
        if args.calibration_trials > 0:
            run_calibration(args.calibration_trials)
        else:
            run(args)


def run(args: argparse.Namespace) -> None:
    """Print the drift and outlier tables for the parsed command-line settings."""
    import threadpoolctl

    from latentlens.scores import OutlierScorer, drift_test

    print(f"# scores benchmark: {args.rows} x {args.dim} per window, float32")
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}")
    blas = threadpoolctl.threadpool_info()
    threads = ", ".join(f"{pool['internal_api']} {pool['num_threads']}" for pool in blas)
    print(f"# BLAS threads: {threads}")
    print()
    print(f"# load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print()
    print(
        "| case | rows per side | latentlens s (median / min / cpu) | latentlens p "
        "| anchor s | anchor p | ratio (median) |"
    )
    print("|---|---|---|---|---|---|---|")

    for label, shift in (("shifted", 0.3), ("no drift", 0.0)):
        reference, current = make_windows(args.rows, args.dim, shift, seed=1)
        ours_seconds, ours_best, ours_cpu, ours = timed(
            drift_test, args.repeats, reference, current, random_state=0
        )
        if args.anchor_rows > 0:
            small_reference = reference[: args.anchor_rows]
            small_current = current[: args.anchor_rows]
            small_seconds, small_best, small_cpu, small = timed(
                drift_test, args.repeats, small_reference, small_current, random_state=0
            )
            anchor_p, _, _, anchor_seconds = full_kernel_mmd_test(
                small_reference, small_current, 200, seed=0
            )
            print(
                f"| {label} | {args.anchor_rows} | {small_seconds:.3f} / {small_best:.3f} / "
                f"{small_cpu:.3f} | {small.p_value:.4f} | "
                f"{anchor_seconds:.2f} | {anchor_p:.4f} | {anchor_seconds / small_seconds:.0f}x |"
            )
        if args.anchor_rows > 0 and args.anchor_full_permutations > 0:
            _, build, per_permutation, _ = full_kernel_mmd_test(
                reference, current, args.anchor_full_permutations, seed=0
            )
            extrapolated = build + 200 * per_permutation
            print(
                f"| {label} | {args.rows} | {ours_seconds:.3f} / {ours_best:.3f} / {ours_cpu:.3f} "
                f"| {ours.p_value:.4f} | {extrapolated:.1f} "
                f"(kernel {build:.1f} + 200 x {per_permutation:.2f}, "
                f"extrapolated from {args.anchor_full_permutations}) | - | "
                f"{extrapolated / ours_seconds:.0f}x |"
            )
        else:
            print(
                f"| {label} | {args.rows} | {ours_seconds:.3f} / {ours_best:.3f} / {ours_cpu:.3f} "
                f"| {ours.p_value:.4f} | - | - | - |"
            )

    reference, current = make_windows(args.rows, args.dim, 0.3, seed=1)
    ks_seconds, _, ks_cpu, ks = timed(
        drift_test, args.repeats, reference, current, method="ks", random_state=0
    )
    print()
    print(
        f"KS-Bonferroni on the same 32 components, shifted, {args.rows} per side: "
        f"{ks_seconds:.3f} s (cpu {ks_cpu:.3f} s), p = {ks.p_value:.3g}"
    )
    print(
        f"Prototype figure from the notes (RFF-MMD, 10,000 per side, 768 dims): "
        f"{PROTOTYPE_DRIFT_SECONDS} s; latentlens / prototype = "
        f"{ours_seconds / PROTOTYPE_DRIFT_SECONDS:.2f}"
    )

    print()
    print("| outliers | latentlens s | anchor s (brute force, full reference) | ratio |")
    print("|---|---|---|---|")
    start = time.perf_counter()
    scorer = OutlierScorer(reference, random_state=0)
    fit_seconds = time.perf_counter() - start
    score_seconds, _, _, scores = timed(scorer.score, 1, current)
    start = time.perf_counter()
    brute_force_knn_scores(reference, current, 10)
    anchor_knn_seconds = time.perf_counter() - start
    total = fit_seconds + score_seconds
    print(
        f"| fit {args.rows} + score {args.rows} | {total:.2f} (fit {fit_seconds:.2f}) | "
        f"{anchor_knn_seconds:.2f} | {anchor_knn_seconds / total:.1f}x |"
    )
    print(
        f"Flagged at 0.05 in the shifted window: {scores.flags(0.05).mean():.3f}. Prototype "
        f"figure from the notes for the full-reference kNN: {PROTOTYPE_KNN_FULL_SECONDS} s."
    )
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")


def draw_null_rows(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``size`` rows of width 6 from one of four fixed distributions."""
    if shape == "gaussian":
        return rng.normal(size=(size, 6))
    if shape == "student_t2":
        return rng.standard_t(2, size=(size, 6))
    if shape == "clustered":
        centers = np.zeros((3, 6))
        centers[1, 0] = centers[2, 1] = 4.0
        return centers[rng.integers(0, 3, size)] + 0.5 * rng.normal(size=(size, 6))
    rotation, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(6, 6)))
    return (rng.normal(size=(size, 6)) * np.geomspace(1.0, 100.0, 6)) @ rotation


def run_calibration(trials: int) -> None:
    """Print the share of no-drift trials that ``drift_test`` flags at alpha = 0.05."""
    from latentlens.scores import drift_test

    shapes = ("gaussian", "student_t2", "clustered", "anisotropic")
    sizes = ((50, 50), (50, 500), (500, 500))
    print(f"# false-alarm rate at alpha = 0.05, {trials} trials per cell, drift_test defaults")
    print(f"# binomial standard deviation at rate 0.05: {np.sqrt(0.05 * 0.95 / trials):.4f}")
    print()
    print("| method | shape | " + " | ".join(f"{n} vs {m}" for n, m in sizes) + " |")
    print("|---|---|" + "---:|" * len(sizes))
    for method in ("mmd", "ks"):
        for index, shape in enumerate(shapes):
            rates = []
            for n_reference, n_current in sizes:
                rng = np.random.default_rng(1000 * index + n_reference + n_current)
                alarms = sum(
                    drift_test(
                        draw_null_rows(shape, n_reference, rng),
                        draw_null_rows(shape, n_current, rng),
                        method=method,
                        random_state=trial,
                    ).drift
                    for trial in range(trials)
                )
                rates.append(alarms / trials)
            print(f"| {method} | {shape} | " + " | ".join(f"{rate:.4f}" for rate in rates) + " |")


if __name__ == "__main__":
    main()
