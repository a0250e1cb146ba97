"""ActivationRecorder: extraction, metadata, hook lifetime, autograd modes and dtypes."""

from __future__ import annotations

import gc
import warnings
import weakref

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from latentlens.capture import ActivationRecorder


class TupleLayer(nn.Module):
    """Returns (hidden, extra) like many HF layers."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)

    def forward(self, x):
        hidden = self.linear(x)
        return hidden, hidden * 2


class DictLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)

    def forward(self, x):
        hidden = self.linear(x)
        return {"logits": hidden * 3, "hidden": hidden}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _run(recorder, model, x, **record_kwargs):
    with recorder, recorder.record(**record_kwargs):
        return model(x)


def test_rows_match_module_output_despite_inplace_relu():
    model = Net()
    x = torch.randn(5, 4)
    recorder = ActivationRecorder(model, ["fc1", "fc2"])
    _run(recorder, model, x, step=0)
    expected = (x @ model.fc1.weight.T + model.fc1.bias).detach().numpy()
    captured = recorder.activations("fc1").values
    # The in-place ReLU after fc1 would zero negative entries of an uncopied capture.
    assert (captured < 0).any()
    np.testing.assert_allclose(captured, expected, atol=1e-6)
    assert recorder.layer_names == ["fc1", "fc2"]


def test_metadata_columns_align_with_rows():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with recorder:
        for step in range(2):
            labels = torch.tensor([3, 1, 4]) + step
            with recorder.record(labels=labels, ids=["a", "b", "c"], split="val", step=step * 10):
                model(torch.randn(3, 4))
    acts = recorder.activations("fc1")
    assert acts.metadata["step"].tolist() == [0, 0, 0, 10, 10, 10]
    assert acts.metadata["sample"].tolist() == [0, 1, 2, 3, 4, 5]
    assert acts.metadata["label"].tolist() == [3, 1, 4, 4, 2, 5]
    assert acts.metadata["id"].tolist() == ["a", "b", "c"] * 2
    assert acts.metadata["split"].tolist() == ["val"] * 6
    assert "call" not in acts.metadata
    assert recorder.steps("fc1") == [0, 10]
    assert recorder.activations("fc1", step=10).metadata["label"].tolist() == [4, 2, 5]


def test_two_forwards_in_one_block_take_consecutive_labels():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with recorder, recorder.record(labels=np.arange(5), step=0):
        model(torch.randn(2, 4))
        model(torch.randn(3, 4))
    assert recorder.activations("fc1").metadata["label"].tolist() == [0, 1, 2, 3, 4]


def test_per_sample_split_column():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    _run(recorder, model, torch.randn(3, 4), split=["train", "val", "train"], step=0)
    assert recorder.activations("fc1").metadata["split"].tolist() == ["train", "val", "train"]


def test_too_few_labels_raise():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with pytest.raises(ValueError, match="layer 'fc1' produced 4 rows .* but 3 labels were given"):
        _run(recorder, model, torch.randn(4, 4), labels=[0, 1, 2])
    assert not model.fc1._forward_hooks


def test_unused_labels_warn():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with pytest.warns(UserWarning, match="got 7 labels but .* at most 5 rows .* last 2 labels"):
        _run(recorder, model, torch.randn(5, 4), labels=list(range(7)))
    assert recorder.activations("fc1").metadata["label"].tolist() == [0, 1, 2, 3, 4]

    # Two forward passes that use every label between them: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with recorder, recorder.record(labels=list(range(6)), step=1):
            model(torch.randn(4, 4))
            model(torch.randn(2, 4))
    assert recorder.activations("fc1", step=1).metadata["label"].tolist() == list(range(6))


def test_nothing_captured_outside_record():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with recorder:
        model(torch.randn(3, 4))
    assert len(recorder.activations("fc1")) == 0
    assert recorder.steps("fc1") == []


def test_default_step_counts_record_blocks():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with recorder:
        for _ in range(3):
            with recorder.record():
                model(torch.randn(1, 4))
    assert recorder.steps("fc1") == [0, 1, 2]


def test_every_n_steps():
    model = Net()
    recorder = ActivationRecorder(model, "fc1", every_n_steps=3)
    with recorder:
        for step in range(7):
            with recorder.record(step=step):
                model(torch.randn(2, 4))
    assert recorder.steps("fc1") == [0, 3, 6]


def test_tuple_output_auto_and_index():
    model = nn.Sequential(TupleLayer())
    x = torch.randn(3, 4)
    first = ActivationRecorder(model, "0")
    second = ActivationRecorder(model, "0", output=1)
    with first, second:
        with first.record(step=0):
            hidden, doubled = model(x)
        with second.record(step=0):
            model(x)
    np.testing.assert_allclose(first.activations("0").values, hidden.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(second.activations("0").values, doubled.detach().numpy(), atol=1e-6)


def test_dict_output_by_key_and_callable():
    model = nn.Sequential(DictLayer())
    x = torch.randn(3, 4)
    by_key = ActivationRecorder(model, "0", output="hidden")
    by_callable = ActivationRecorder(model, "0", output=lambda out: out["logits"])
    with by_key, by_callable:
        with by_key.record(step=0):
            out = model(x)
        with by_callable.record(step=0):
            model(x)
    np.testing.assert_allclose(by_key.activations("0").values, out["hidden"].detach().numpy())
    np.testing.assert_allclose(by_callable.activations("0").values, out["logits"].detach().numpy())


def test_missing_key_names_available_keys():
    model = nn.Sequential(DictLayer())
    recorder = ActivationRecorder(model, "0", output="hiddn")
    with pytest.raises(TypeError, match=r"output='hiddn' is neither a key.*\['logits', 'hidden'\]"):
        _run(recorder, model, torch.randn(2, 4))


def test_model_output_prefers_last_hidden_state():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    class Wrapped(nn.Module):
        def forward(self, x):
            return BaseModelOutputWithPooling(last_hidden_state=x + 1, pooler_output=x[:, 0])

    model = nn.Sequential(Wrapped())
    x = torch.randn(2, 3, 4)
    auto = ActivationRecorder(model, "0")
    pooler = ActivationRecorder(model, "0", output="pooler_output")
    with auto, pooler, auto.record(step=0):
        model(x)
    with auto, pooler, pooler.record(step=0):
        model(x)
    np.testing.assert_allclose(auto.activations("0").values, (x + 1).mean(1).numpy(), atol=1e-6)
    np.testing.assert_allclose(pooler.activations("0").values, x[:, 0].numpy())


def test_input_capture_through_pre_hook():
    model = Net()
    x = torch.randn(3, 4)
    recorder = ActivationRecorder(model, "fc2", source="input")
    _run(recorder, model, x, step=0)
    expected = torch.relu(model.fc1(x)).detach().numpy()
    np.testing.assert_allclose(recorder.activations("fc2").values, expected, atol=1e-6)


def test_per_layer_settings_and_unknown_layer_key():
    model = Net()
    recorder = ActivationRecorder(model, ["fc1", "fc2"], source={"fc2": "input"})
    _run(recorder, model, torch.randn(2, 4), step=0)
    assert recorder.activations("fc1").values.shape == (2, 8)
    assert recorder.activations("fc2").values.shape == (2, 8)
    star = ActivationRecorder(model, ["fc1", "fc2"], pooling={"*": "max", "fc2": "flatten"})
    assert star._pooling == {"fc1": "max", "fc2": "flatten"}
    with pytest.raises(ValueError, match=r"pooling names layers \['fc3'\] that are not captured"):
        ActivationRecorder(model, ["fc1"], pooling={"fc3": "mean"})


def test_reused_module_gets_call_index():
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(4, 4)

        def forward(self, x):
            return self.shared(self.shared(x))

    model = Loop()
    x = torch.randn(2, 4)
    recorder = ActivationRecorder(model, "shared")
    with recorder:
        for step in range(2):
            with recorder.record(labels=[7, 8], step=step):
                model(x)
    acts = recorder.activations("shared")
    assert acts.metadata["call"].tolist() == [0, 0, 1, 1] * 2
    assert acts.metadata["sample"].tolist() == [0, 1, 0, 1, 2, 3, 2, 3]
    assert acts.metadata["label"].tolist() == [7, 8, 7, 8] * 2
    once = model.shared(x)
    np.testing.assert_allclose(acts.values[:2], once.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(acts.values[2:4], model.shared(once).detach().numpy(), atol=1e-6)


def test_hooks_removed_on_exception_only_ours():
    model = Net()
    user_calls = []
    user_handle = model.fc1.register_forward_hook(lambda m, a, o: user_calls.append(1))
    recorder = ActivationRecorder(model, ["fc1", "fc2"])
    with pytest.raises(RuntimeError, match="boom"):
        with recorder, recorder.record(step=0):
            model(torch.randn(2, 4))
            raise RuntimeError("boom")
    assert not recorder.attached
    assert len(model.fc1._forward_hooks) == 1
    assert not model.fc2._forward_hooks
    assert not model._forward_hooks and not model._forward_pre_hooks
    model(torch.randn(2, 4))
    assert len(user_calls) == 2
    recorder.detach()  # a second removal does nothing
    user_handle.remove()


def test_exception_inside_forward_clears_mask_and_scope():
    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, attention_mask=None):
            self.fc(x)
            raise ValueError("forward failed")

    model = Failing()
    recorder = ActivationRecorder(model, "fc")
    with recorder:
        with pytest.raises(ValueError, match="forward failed"):
            with recorder.record(step=0):
                model(torch.randn(2, 3, 4), attention_mask=torch.ones(2, 3))
        assert recorder._scope is None
    assert len(recorder.activations("fc")) == 2


def test_record_needs_hooks_and_no_nesting():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with pytest.raises(RuntimeError, match="record\\(\\) needs the hooks installed"):
        with recorder.record():
            pass
    with recorder, recorder.record():
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with recorder.record():
                pass
    with pytest.raises(RuntimeError, match="already installed"):
        with recorder:
            recorder.attach()


INVALID_SETTINGS = [
    ({"pooling": "avg"}, ValueError, "pooling='avg' is not supported"),
    ({"every_n_steps": 0}, ValueError, "every_n_steps=0 must be a positive int"),
    ({"spill_dir": "/tmp/x"}, ValueError, "spill_dir is set but memory_budget is None"),
    ({"source": "inputs"}, ValueError, "source='inputs' is not supported"),
    ({"output": 2.5}, TypeError, "output=2.5 of type float is not supported"),
    ({"memory_budget": "64MB"}, TypeError, r"memory_budget='64MB'.*memory_budget=256 \* 2\*\*20"),
    ({"max_rows_per_step": 2.5}, TypeError, "max_rows_per_step=2.5 must be a positive int"),
    ({"seed": "0"}, TypeError, "seed='0' must be a non-negative int"),
    ({"seed": -1}, ValueError, "seed=-1 must be a non-negative int"),
]


@pytest.mark.parametrize(("settings", "error", "message"), INVALID_SETTINGS)
def test_invalid_settings_raise_before_hooks(settings, error, message):
    model = Net()
    with pytest.raises(error, match=message):
        ActivationRecorder(model, "fc1", **settings)
    assert not model.fc1._forward_hooks


def test_module_object_as_layer():
    model = Net()
    x = torch.randn(5, 4)
    recorder = ActivationRecorder(model, [model.fc2, model.fc1])
    assert recorder.layer_names == ["fc1", "fc2"]
    output = _run(recorder, model, x, step=0)
    np.testing.assert_allclose(recorder.activations("fc2").values, output.detach().numpy())


def test_record_argument_checks():
    model = Net()
    recorder = ActivationRecorder(model, "fc1")
    with recorder:
        with pytest.raises(ValueError, match="labels=...\\) must be 1-D"):
            with recorder.record(labels=np.zeros((2, 2))):
                pass
        with pytest.raises(ValueError, match="different lengths"):
            with recorder.record(labels=[1, 2], ids=[1, 2, 3]):
                pass
        with pytest.raises(TypeError, match="step='1' must be an int"):
            with recorder.record(step="1"):
                pass


def test_unknown_layer_in_activations():
    recorder = ActivationRecorder(Net(), "fc1")
    with pytest.raises(ValueError, match="layer 'fc' is not captured.*closest"):
        recorder.activations("fc")


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "grad"])
def test_autograd_modes(mode):
    model = Net()
    x = torch.randn(3, 4)
    recorder = ActivationRecorder(model, "fc1")
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode)
    with recorder, recorder.record(step=0):
        if context is None:
            model(x).sum().backward()
        else:
            with context():
                model(x)
    values = recorder.activations("fc1").values
    assert isinstance(values, np.ndarray) and values.dtype == np.float32
    np.testing.assert_allclose(values, model.fc1(x).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_models(dtype):
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU()).to(dtype)
    x = torch.randn(2, 5, 4, dtype=dtype)
    recorder = ActivationRecorder(model, "1")
    _run(recorder, model, x, step=0)
    values = recorder.activations("1").values
    assert values.dtype == np.float32
    expected = model(x).detach().double().numpy().mean(axis=1)
    np.testing.assert_allclose(values, expected, atol=1e-5)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_captures_once(use_reentrant):
    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            hidden = checkpoint(self.block, x, use_reentrant=use_reentrant)
            return self.head(hidden)

    model = Checkpointed()
    x = torch.randn(3, 4, requires_grad=True)
    recorder = ActivationRecorder(model, ["block.0", "head"])
    counter = []
    model.block[0].register_forward_hook(lambda m, a, o: counter.append(1))
    with recorder, recorder.record(step=0):
        model(x).sum().backward()
    # The user's plain hook sees the recomputation; the recorder does not.
    assert len(counter) == 2
    assert len(recorder.activations("block.0")) == 3
    assert len(recorder.activations("head")) == 3


def test_captures_hold_no_reference_to_outputs():
    model = Net()
    references = []
    model.fc1.register_forward_hook(lambda m, a, o: references.append(weakref.ref(o)))
    recorder = ActivationRecorder(model, ["fc1", "fc2"])
    with recorder:
        with recorder.record(step=0):
            loss = model(torch.randn(4, 4, requires_grad=True)).sum()
        loss.backward()
        del loss
    gc.collect()
    assert references and all(reference() is None for reference in references)


def test_recorder_is_collectable_while_attached():
    model = Net()
    recorder = ActivationRecorder(model, "fc1").attach()
    reference = weakref.ref(recorder)
    del recorder
    gc.collect()
    assert reference() is None
    assert not model.fc1._forward_hooks
    model(torch.randn(2, 4))


def test_hooks_installed_before_compile_keep_working():
    model = Net()
    x = torch.randn(6, 4)
    recorder = ActivationRecorder(model, ["fc1", "fc2"])
    with recorder:
        compiled = torch.compile(model)
        for step in range(2):
            with recorder.record(step=step):
                compiled(x * (step + 1))
    for step in range(2):
        acts = recorder.activations("fc1", step=step)
        expected = model.fc1(x * (step + 1)).detach().numpy()
        np.testing.assert_allclose(acts.values, expected, atol=1e-5)
    assert len(recorder.activations("fc2")) == 12


def test_compiled_model_compiles_once():
    compiled_graphs = []

    def counting_backend(graph_module, example_inputs):
        compiled_graphs.append(graph_module)
        return graph_module.forward

    model = Net()
    x = torch.randn(3, 4)
    recorder = ActivationRecorder(model, ["fc1", "fc2"])
    with recorder:
        compiled = torch.compile(model, backend=counting_backend)
        compiled(x)
        graphs_after_first_call = len(compiled_graphs)
        for step in range(4):
            with recorder.record(step=step):
                compiled(x)
            compiled(x)
    assert graphs_after_first_call > 0
    assert len(compiled_graphs) == graphs_after_first_call
    assert recorder.steps("fc2") == [0, 1, 2, 3]
    np.testing.assert_allclose(
        recorder.activations("fc2", step=3).values, model(x).detach().numpy(), atol=1e-6
    )
    torch._dynamo.reset()


def test_fullgraph_compile_fails_with_clear_message():
    model = Net()
    with pytest.raises(ValueError, match="fullgraph=True"):
        ActivationRecorder(torch.compile(model, fullgraph=True), "fc1")
    recorder = ActivationRecorder(model, "fc1")
    with recorder:
        compiled = torch.compile(model, fullgraph=True)
        with pytest.raises(RuntimeError, match="torch.compile could not run the capture hooks"):
            with recorder.record(step=0):
                compiled(torch.randn(2, 4))
    torch._dynamo.reset()


def test_conv_capture_switching_inference_mode_and_grad():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
    x = torch.randn(2, 1, 5, 5)
    recorder = ActivationRecorder(model, "0")
    with recorder:
        with torch.inference_mode(), recorder.record(step=0):
            model(x)
        with recorder.record(step=1):
            model(x).sum().backward()
    expected = model[0](x).detach().numpy().mean(axis=(2, 3))
    for step in range(2):
        np.testing.assert_allclose(recorder.activations("0", step=step).values, expected, atol=1e-6)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_spatial_mean_both_memory_formats(memory_format):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model = model.to(memory_format=memory_format)
    x = torch.randn(6, 3, 8, 8).contiguous(memory_format=memory_format)
    maps = []
    model[2].register_forward_hook(lambda m, a, o: maps.append(o.detach().clone()))
    recorder = ActivationRecorder(model, "2")
    with recorder, recorder.record(step=0):
        model(x).sum().backward()

    assert maps[0].is_contiguous(memory_format=memory_format)
    expected = maps[0].double().mean(dim=(2, 3)).numpy()
    values = recorder.activations("2").values
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)


def test_inplace_change_keeps_stored_rows():
    # Both fast paths (a (N, D) copy and a spatial mean) must own their memory, so an
    # in-place change of the module output after the hook cannot reach the stored rows.
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    linear = nn.Linear(4, 3)
    recorder = ActivationRecorder(
        nn.ModuleDict({"conv": conv, "linear": linear}), ["conv", "linear"]
    )
    x_map, x_vec = torch.randn(5, 1, 4, 4), torch.randn(5, 4)
    with recorder, recorder.record(step=0), torch.no_grad():
        conv_out = conv(x_map)
        linear_out = linear(x_vec)
        expected_conv = conv_out.mean(dim=(2, 3)).numpy().copy()
        expected_linear = linear_out.numpy().copy()
        conv_out.fill_(7.0)
        linear_out.fill_(7.0)

    np.testing.assert_allclose(recorder.activations("conv").values, expected_conv, atol=1e-6)
    np.testing.assert_array_equal(recorder.activations("linear").values, expected_linear)
