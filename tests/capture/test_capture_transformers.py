"""Capture on HuggingFace models: the real MiniLM checkpoint and small decoders from configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentlens.capture import ActivationRecorder

transformers = pytest.importorskip("transformers")

SENTENCES = [
    "A cat sits on the mat.",
    "Activation drift shows up long before accuracy drops in a deployed model.",
    "Hello",
    "Two words",
    "The quick brown fox jumps over the lazy dog near the river bank today.",
]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    model = transformers.AutoModel.from_pretrained(minilm_path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    lengths = batch["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) == len(lengths), "the batch must mix sequence lengths"
    return model, batch


def _masked_mean_by_hand(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    hidden = hidden.double().numpy()
    mask = mask.numpy().astype(bool)
    return np.stack([hidden[row][mask[row]].mean(axis=0) for row in range(len(hidden))])


def test_minilm_last_layer_masked_mean(minilm):
    model, batch = minilm
    recorder = ActivationRecorder(model, "encoder.layer.5")
    with recorder, torch.no_grad(), recorder.record(labels=np.arange(5), step=0):
        output = model(**batch)
    expected = _masked_mean_by_hand(output.last_hidden_state, batch["attention_mask"])
    captured = recorder.activations("encoder.layer.5")
    assert captured.values.shape == (5, 384)
    np.testing.assert_allclose(captured.values, expected, atol=1e-6, rtol=0)
    # A plain mean over the padded tokens differs, so the mask really was used.
    assert np.abs(output.last_hidden_state.mean(1).numpy() - expected).max() > 1e-2


def test_minilm_every_layer_with_one_glob(minilm):
    model, batch = minilm
    recorder = ActivationRecorder(model, "encoder.layer.*")
    assert recorder.layer_names == [f"encoder.layer.{i}" for i in range(6)]
    with recorder, torch.no_grad(), recorder.record(step=0):
        output = model(**batch, output_hidden_states=True)
    for index, name in enumerate(recorder.layer_names):
        expected = _masked_mean_by_hand(output.hidden_states[index + 1], batch["attention_mask"])
        np.testing.assert_allclose(recorder.activations(name).values, expected, atol=1e-6, rtol=0)


def test_minilm_mask_given_positionally_and_cls(minilm):
    model, batch = minilm
    recorder = ActivationRecorder(model, "encoder.layer.5", pooling="cls")
    with recorder, torch.no_grad(), recorder.record(step=0):
        output = model(batch["input_ids"], batch["attention_mask"])
    np.testing.assert_array_equal(
        recorder.activations("encoder.layer.5").values, output.last_hidden_state[:, 0].numpy()
    )


def test_minilm_token_rows(minilm):
    model, batch = minilm
    recorder = ActivationRecorder(model, "encoder.layer.5", pooling="none")
    with recorder, torch.no_grad(), recorder.record(labels=np.arange(5), step=0):
        output = model(**batch)
    acts = recorder.activations("encoder.layer.5")
    assert len(acts) == int(batch["attention_mask"].sum())
    hidden = output.last_hidden_state.numpy()
    np.testing.assert_array_equal(
        acts.values, hidden[acts.metadata["sample"], acts.metadata["token"]]
    )
    np.testing.assert_array_equal(acts.metadata["label"], acts.metadata["sample"])


def _decoder(kind: str):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=100,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=2,
            attn_implementation="eager",
        )
        return transformers.GPT2Model(config).eval(), "ln_f"
    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    return transformers.LlamaModel(config).eval(), "norm"


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_decoder_last_token_matches_unpadded_run(kind, padding_side):
    model, final_norm = _decoder(kind)
    generator = torch.Generator().manual_seed(1)
    sequences = [torch.randint(1, 100, (length,), generator=generator) for length in (6, 3, 9, 1)]
    width = max(len(s) for s in sequences)
    input_ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, tokens in enumerate(sequences):
        span = (
            slice(width - len(tokens), width) if padding_side == "left" else slice(0, len(tokens))
        )
        input_ids[row, span] = tokens
        mask[row, span] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    recorder = ActivationRecorder(model, [final_norm, "re:(h|layers)\\.1"], pooling="last")
    with recorder, torch.no_grad():
        with recorder.record(step=0):
            model(input_ids=input_ids, attention_mask=mask, position_ids=positions)
        expected = np.stack(
            [model(input_ids=tokens[None]).last_hidden_state[0, -1].numpy() for tokens in sequences]
        )
    captured = recorder.activations(final_norm).values
    np.testing.assert_allclose(captured, expected, atol=2e-5)
    # The token at the last position is padding for right-padded short rows.
    if padding_side == "right":
        assert len(recorder.activations(recorder.layer_names[0])) == 4


def test_bert_gradient_checkpointing_captures_once():
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).train()
    input_ids = torch.randint(1, 50, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    # Modules inside the checkpointed layers run again during backward.
    layers = "encoder.layer.*.**.dense"

    def capture(skip_recompute):
        recorder = ActivationRecorder(model, layers, skip_recompute=skip_recompute)
        with recorder, recorder.record(step=0):
            model(input_ids=input_ids, attention_mask=mask).last_hidden_state.sum().backward()
        return recorder

    plain = capture(True)
    model.gradient_checkpointing_enable()
    checkpointed = capture(True)
    counted_twice = capture(False)
    assert any(len(counted_twice.activations(name)) > 3 for name in plain.layer_names)
    for name in plain.layer_names:
        assert len(checkpointed.activations(name)) == 3
        np.testing.assert_allclose(
            checkpointed.activations(name).values, plain.activations(name).values, atol=1e-6
        )
