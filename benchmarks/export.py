"""Export time of one 100,000 x 384 embedding with metadata: latentlens vs torch's SummaryWriter.

Both writers get the same float32 activations and the same metadata (a label, a
predicted label and a free-text column) and write one projector embedding into a
fresh run folder. latentlens is also timed with a 2-D layout (bookmarks) and with
28 x 28 thumbnails (sprite), which torch cannot write from the same inputs the same
way. Timings are wall-clock seconds of one call each, best of ``--repeats``.

Run: python benchmarks/export.py [--rows 100000] [--dim 384] [--repeats 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def folder_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def best_time(function, repeats: int) -> tuple[float, float]:
    """Best wall time over ``repeats`` fresh folders, and the folder size of the last run."""
    best, size = float("inf"), 0.0
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="export_bench_"))
        try:
            start = time.perf_counter()
            function(folder)
            best = min(best, time.perf_counter() - start)
            size = folder_megabytes(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import torch
    from torch.utils.tensorboard import SummaryWriter

    from latentlens.export import ProjectorWriter

    rng = np.random.default_rng(0)
    values = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    labels = rng.integers(0, 10, args.rows)
    predicted = np.where(rng.random(args.rows) < 0.9, labels, rng.integers(0, 10, args.rows))
    text = [f"sample {i} of class {label}" for i, label in enumerate(labels)]
    layout = rng.normal(size=(args.rows, 2)).astype(np.float32)
    images = rng.integers(0, 256, size=(args.rows, 28, 28), dtype=np.uint8)
    metadata = {"label": labels, "predicted": predicted, "text": text}
    torch_values = torch.from_numpy(values)
    torch_metadata = [list(row) for row in zip(labels, predicted, text, strict=True)]

    def ours(folder: Path, **extra) -> None:
        with ProjectorWriter(folder, run="run") as writer:
            writer.add_embedding(values, layer="encoder", step=1, metadata=metadata, **extra)

    def theirs(folder: Path) -> None:
        with SummaryWriter(log_dir=str(folder / "run")) as writer:
            writer.add_embedding(
                torch_values,
                metadata=torch_metadata,
                metadata_header=["label", "predicted", "text"],
                tag="encoder",
                global_step=1,
            )

    rows = [
        ("torch SummaryWriter.add_embedding", *best_time(theirs, args.repeats)),
        ("latentlens ProjectorWriter", *best_time(ours, args.repeats)),
        ("latentlens + 2-D layout bookmarks",
         *best_time(lambda f: ours(f, layout=layout), args.repeats)),
        ("latentlens + layout + 28x28 sprite",
         *best_time(lambda f: ours(f, layout=layout, images=images), args.repeats)),
    ]  # fmt: skip
    anchor = rows[0][1]
    print(f"{args.rows} x {args.dim} float32, metadata: label, predicted, text; "
          f"best of {args.repeats}")  # fmt: skip
    print("| writer | seconds | MB on disk | torch / this |")
    print("|---|---:|---:|---:|")
    for name, seconds, size in rows:
        print(f"| {name} | {seconds:.2f} | {size:.0f} | {anchor / seconds:.1f}x |")


if __name__ == "__main__":
    main()
