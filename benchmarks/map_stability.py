"""How far points move between the maps of two consecutive epochs of the demo.

Measure: the mean distance a validation image moves between the maps of epoch e-1 and epoch e,
divided by the root-mean-square distance of the points from the centre of the epoch e-1 map
(`latentlens.alignment.relative_displacement`). 0 means no point moved; 1 means points moved, on
average, as far as a typical point lies from the centre.

Compared in one run, on the same activations:
- latentlens: LatentLens' maps as the demo publishes them (warm start from the previous map, then
  Procrustes alignment on the shared ids);
- independent: a new latentlens UMAP fit per epoch, without and with Procrustes alignment;
- umap-learn: a new umap-learn fit per epoch without alignment (what a user gets by running
  umap-learn per epoch), when umap-learn is installed.
Trustworthiness (10 neighbours) of the epoch-e map shows that stability does not cost quality.

Run:  python benchmarks/map_stability.py [--epochs 8]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

from sklearn.manifold import trustworthiness

from latentlens import UMAP
from latentlens.alignment import procrustes_align, relative_displacement
from latentlens.demo import DEMO_LAYERS, run_demo
from latentlens.export import read_projector, tensor_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="demo epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo and of the fits")
    args = parser.parse_args()

    try:
        import umap as umap_learn
    except ImportError:
        umap_learn = None

    with tempfile.TemporaryDirectory() as logdir:
        summary = run_demo(logdir, epochs=args.epochs, seed=args.seed)
        served = read_projector(logdir, num_rows=None, summaries=False)
    embeddings = served["embeddings"][summary.run]

    header = (
        f"{'layer':<12} {'epochs':>7} {'latentlens':>11} {'indep.':>8} {'indep.+P':>9} "
        f"{'umap-learn':>11} {'trust ours':>11} {'trust indep.':>13}"
    )
    print(header)
    for layer in DEMO_LAYERS:
        for epoch in range(max(2, args.epochs - 2), args.epochs + 1):
            before = embeddings[tensor_name(layer, epoch - 1)]["tensor"]
            after = embeddings[tensor_name(layer, epoch)]["tensor"]
            ours = relative_displacement(
                summary.layouts[(layer, epoch - 1)], summary.layouts[(layer, epoch)]
            )
            fresh_before = UMAP(random_state=args.seed).fit_transform(before)
            fresh_after = UMAP(random_state=args.seed).fit_transform(after)
            independent = relative_displacement(fresh_before, fresh_after)
            aligned, _ = procrustes_align(fresh_after, fresh_before)
            independent_aligned = relative_displacement(fresh_before, aligned)
            anchor = float("nan")
            if umap_learn is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    learn_before = umap_learn.UMAP(random_state=args.seed).fit_transform(before)
                    learn_after = umap_learn.UMAP(random_state=args.seed).fit_transform(after)
                anchor = relative_displacement(learn_before, learn_after)
            trust_ours = trustworthiness(after, summary.layouts[(layer, epoch)], n_neighbors=10)
            trust_fresh = trustworthiness(after, fresh_after, n_neighbors=10)
            print(
                f"{layer:<12} {epoch - 1:>3}->{epoch:<3} {ours:>11.3f} {independent:>8.3f} "
                f"{independent_aligned:>9.3f} {anchor:>11.3f} {trust_ours:>11.4f} "
                f"{trust_fresh:>13.4f}"
            )
    print(f"(validation accuracy at the last epoch: {summary.epochs[-1].validation_accuracy:.3f})")


if __name__ == "__main__":
    main()
