"""latentlens' UMAP engine against umap-learn, same data, same run, side by side.

For each data set and engine this prints:

- first-ever fit: a new process whose numba cache folder is empty (import included);
- cold fit: a new process whose cache folder an earlier process filled (import included);
- warm fit: a second fit in that process;
- transform of 2,000 held-out rows (warm: after one untimed call);
- trustworthiness with 10 neighbours (on a fixed subsample of 5,000 rows above that size)
  and 10-NN accuracy of the embedding (5-fold cross-validation), for the timed fit and as
  the mean over ``--quality-seeds`` seeded fits (one fit varies by a few thousandths on
  diffuse data, as much as the 0.005 margin of the target).

Both engines run with their defaults and no random_state (umap-learn gives up its
threads when seeded). Every timed step runs in a child process with NUMBA_CACHE_DIR set
to a folder of its own, so neither engine reuses caches from outside the run.

Usage::

    python benchmarks/umap_vs_umap_learn.py            # full run (tens of minutes)
    python benchmarks/umap_vs_umap_learn.py --quick    # digits and 5,000 clusters only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

N_TRANSFORM = 2000
TRUST_SAMPLE = 5000


def load_dataset(name, cache_dir):
    import umap_datasets as datasets

    if name == "digits":
        return datasets.digits()
    if name.startswith("clusters"):
        n, d = (int(v) for v in name.removeprefix("clusters").split("x"))
        return datasets.gaussian_clusters(n + N_TRANSFORM, d, seed=0)
    if name == "minilm":
        return datasets.minilm_docstrings(cache_dir)
    raise ValueError(f"unknown data set {name!r}")


def split(X, y):
    """Hold out 2,000 rows for transform. A set under 6,000 rows (digits) is fitted
    whole, and its new rows are training rows plus Gaussian noise of 0.1 x the
    per-feature standard deviation."""
    rng = np.random.default_rng(0)
    if len(X) < 3 * N_TRANSFORM:
        picks = rng.choice(len(X), N_TRANSFORM)
        noise = rng.normal(size=(N_TRANSFORM, X.shape[1])) * (0.1 * X.std(axis=0))
        return X, y, (X[picks] + noise).astype(np.float32)
    order = rng.permutation(len(X))
    new, train = order[:N_TRANSFORM], order[N_TRANSFORM:]
    return X[train], y[train], X[new]


def quality(X, embedding, y):
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rows = np.arange(len(X))
    if len(X) > TRUST_SAMPLE:
        rows = np.random.default_rng(1).choice(len(X), TRUST_SAMPLE, replace=False)
    trust = trustworthiness(X[rows], embedding[rows], n_neighbors=10)
    accuracy = cross_val_score(KNeighborsClassifier(n_neighbors=10), embedding, y, cv=5).mean()
    return float(trust), float(accuracy)


def child(engine, dataset, data_file, mode):
    """Run inside a new process; print one JSON line of timings."""
    start = time.perf_counter()
    if engine == "latentlens":
        from latentlens.umap import UMAP
    else:
        import warnings

        warnings.filterwarnings("ignore")
        from umap import UMAP
    imported = time.perf_counter()
    with np.load(data_file) as archive:
        X, y, new = archive["X"], archive["y"], archive["new"]
    loaded = time.perf_counter()
    if mode.startswith("quality"):
        scores = []
        for seed in range(int(mode.removeprefix("quality"))):
            embedding = UMAP(random_state=seed).fit(X).embedding_
            scores.append(quality(X, embedding, y))
        trust, accuracy = np.mean(scores, axis=0)
        print(json.dumps({"trust_mean": float(trust), "knn_mean": float(accuracy)}))
        return
    UMAP().fit(X)
    first_fit = time.perf_counter() - loaded
    result = {
        "import": imported - start,
        "first_fit": first_fit,
        "process_fit": imported - start + first_fit,
    }
    if mode == "first":
        print(json.dumps(result))
        return
    t = time.perf_counter()
    model = UMAP().fit(X)
    result["warm_fit"] = time.perf_counter() - t
    model.transform(new[:50])
    t = time.perf_counter()
    model.transform(new)
    result["transform"] = time.perf_counter() - t
    result["trust"], result["knn"] = quality(X, model.embedding_, y)
    print(json.dumps(result))


def run_child(engine, dataset, data_file, mode, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1")
    command = [sys.executable, __file__, "--child", engine, dataset, str(data_file), mode]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"{engine} on {dataset} ({mode}) failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def ratio(ours, theirs):
    return f"{ours / theirs:.3f}" if theirs else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and 5,000 clusters only")
    parser.add_argument("--datasets", nargs="*", help="data set names to run")
    parser.add_argument("--work-dir", default=None, help="folder for data files and caches")
    parser.add_argument(
        "--quality-seeds",
        type=int,
        default=3,
        help="seeded fits per engine for the mean quality rows (0 skips them)",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    names = args.datasets or (
        ["digits", "clusters5000x128"]
        if args.quick
        else ["digits", "clusters20000x128", "minilm", "clusters60000x64"]
    )
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="umap-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# work folder {work}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name in names:
        X, y = load_dataset(name, Path(tempfile.gettempdir()) / "latentlens_umap_bench")
        X_train, y_train, new = split(X, y)
        data_file = work / f"{name}.npz"
        np.savez(data_file, X=X_train, y=y_train, new=new)
        results = {}
        for engine in ("latentlens", "umap-learn"):
            cache = work / f"cache-{engine}-{name}"
            cache.mkdir(exist_ok=True)
            first = run_child(engine, name, data_file, "first", cache)
            cold = run_child(engine, name, data_file, "cold", cache)
            results[engine] = {
                "first_ever": first["process_fit"],
                "cold": cold["process_fit"],
                **{k: cold[k] for k in ("warm_fit", "transform", "trust", "knn")},
            }
            if args.quality_seeds > 0:
                mode = f"quality{args.quality_seeds}"
                results[engine].update(run_child(engine, name, data_file, mode, cache))
            print(f"# {name} {engine}: {json.dumps(results[engine])}", flush=True)
        ours, theirs = results["latentlens"], results["umap-learn"]
        shape = f"{X_train.shape[0]}x{X_train.shape[1]}"
        for key, label in [
            ("warm_fit", "warm fit s"),
            ("cold", "cold fit s (new process)"),
            ("first_ever", "first-ever fit s"),
            ("transform", "transform 2k s"),
        ]:
            rows.append(
                (
                    name,
                    shape,
                    label,
                    f"{ours[key]:.2f}",
                    f"{theirs[key]:.2f}",
                    ratio(ours[key], theirs[key]),
                )
            )
        quality_rows = [("trust", "trustworthiness(10)"), ("knn", "10-NN accuracy")]
        if args.quality_seeds > 0:
            seeds = args.quality_seeds
            quality_rows += [
                ("trust_mean", f"trustworthiness(10), mean of {seeds} seeds"),
                ("knn_mean", f"10-NN accuracy, mean of {seeds} seeds"),
            ]
        for key, label in quality_rows:
            rows.append(
                (
                    name,
                    shape,
                    label,
                    f"{ours[key]:.4f}",
                    f"{theirs[key]:.4f}",
                    f"{ours[key] - theirs[key]:+.4f}",
                )
            )
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    print("| data | rows x dims | measure | latentlens | umap-learn | ratio / diff |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
