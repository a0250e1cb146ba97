"""The transformers Trainer callback on a small BERT built from a config."""

import csv
import io

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate", reason="the transformers Trainer needs accelerate")

from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from latentlens.datasets import docstring_corpus  # noqa: E402
from latentlens.integrations.transformers import LatentLensCallback  # noqa: E402


class _Texts(torch.utils.data.Dataset):
    def __init__(self, encodings, labels):
        self.encodings = encodings
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = int(self.labels[index])
        return item


def test_trainer_callback_publishes_evaluations(tmp_path, minilm_path, projector_client):
    texts, modules = docstring_corpus(["json", "csv", "re", "shutil"])
    classes = sorted(set(modules))
    labels = np.array([classes.index(module) for module in modules])
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    encodings = tokenizer(texts, truncation=True, max_length=32)
    dataset = _Texts(encodings, labels)
    eval_rows = np.arange(0, len(texts), 2)
    eval_set = _Texts(
        {k: [v[i] for i in eval_rows] for k, v in encodings.items()}, labels[eval_rows]
    )

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(classes),
    )
    model = BertForSequenceClassification(config)
    callback = LatentLensCallback(layers="bert.encoder.layer.*", logdir=tmp_path, run="trainer")
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer_output"),
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[callback],
    )
    trainer.train()

    client = projector_client(tmp_path)
    names = sorted(e["tensorName"] for e in client.json("info", run="trainer")["embeddings"])
    assert names == [
        f"bert.encoder.layer.{layer}_step{step:06d}" for layer in (0, 1) for step in (2, 4)
    ]
    text = client.get("metadata", run="trainer", name="bert.encoder.layer.1_step000004")
    rows = list(csv.reader(io.StringIO(text.decode("utf-8")), delimiter="\t"))
    header, body = rows[0], rows[1:]
    assert [int(row[header.index("label")]) for row in body] == labels[eval_rows].tolist()
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks
