"""Layer selection by name, glob, regex, type and callable; wrapper unwrapping."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from latentlens.capture import canonical_name, resolve_layers, unwrap_model


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.Linear(4, 4)
        self.output = nn.Linear(4, 4)

    def forward(self, x):
        return self.output(self.attention(x))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4)
        self.layer = nn.ModuleList([Block() for _ in range(3)])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.embed(x)
        for block in self.layer:
            x = block(x)
        return self.head(x)


def _names(spec, model=None):
    return [name for name, _ in resolve_layers(model if model is not None else Encoder(), spec)]


def test_exact_name():
    assert _names("layer.1.output") == ["layer.1.output"]


def test_glob_star_stays_in_one_segment():
    assert _names("layer.*") == ["layer.0", "layer.1", "layer.2"]
    assert _names("layer.*.output") == ["layer.0.output", "layer.1.output", "layer.2.output"]


def test_glob_double_star_spans_segments():
    assert _names("layer.**.output") == ["layer.0.output", "layer.1.output", "layer.2.output"]
    assert _names("**output") == ["layer.0.output", "layer.1.output", "layer.2.output"]


def test_glob_question_mark_and_class():
    assert _names("layer.[02]") == ["layer.0", "layer.2"]
    assert _names("layer.?") == ["layer.0", "layer.1", "layer.2"]


def test_regex_string_and_pattern():
    assert _names("re:layer\\.[12]\\.attention") == ["layer.1.attention", "layer.2.attention"]
    assert _names(re.compile(r"layer\.\d")) == ["layer.0", "layer.1", "layer.2"]


def test_root_only_by_exact_empty_name():
    # "layer" is a ModuleList: matched by "*" but left out, since it never runs.
    assert _names("*") == ["embed", "head"]
    assert _names("re:.*")[0] == "embed"
    assert _names("") == [""]


def test_forwardless_containers_skipped():
    assert _names("**") == [
        "embed",
        *[f"layer.{i}{part}" for i in range(3) for part in ("", ".attention", ".output")],
        "head",
    ]
    with pytest.raises(ValueError, match=r"only containers .*'layer' \(ModuleList\).*'layer\.\*'"):
        _names("layer")


def test_regex_must_match_whole_name():
    with pytest.raises(ValueError, match="matched no module"):
        _names("re:lay")


def test_module_type_and_tuple_of_types():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    assert _names(nn.Conv2d, model) == ["0"]
    assert _names((nn.Conv2d, nn.ReLU), model) == ["0", "1"]


def test_callable_predicate():
    spec = lambda name, module: isinstance(module, nn.Linear) and name.endswith("attention")  # noqa: E731
    assert _names(spec) == ["layer.0.attention", "layer.1.attention", "layer.2.attention"]


def test_module_objects_select_themselves():
    model = Encoder()
    assert _names(model.head, model) == ["head"]
    assert _names([model.head, model.layer[1].output, "embed"], model) == [
        "embed",
        "layer.1.output",
        "head",
    ]
    assert _names(model, model) == [""]
    # The same layer as an object of another Encoder is not part of this model.
    with pytest.raises(ValueError, match="module Linear is not a submodule of Encoder"):
        _names(Encoder().head, model)
    with pytest.raises(ValueError, match="only containers without a forward"):
        _names(model.layer, model)


def test_wrapper_object_selects_wrapped_module():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = Encoder()
    wrapper = checkpoint_wrapper(model.layer[1])
    model.layer[1] = wrapper
    resolved = resolve_layers(model, wrapper)
    assert [name for name, _ in resolved] == ["layer.1"]
    assert isinstance(resolved[0][1], Block)


def test_list_is_union_in_model_order_without_duplicates():
    names = _names(["head", "layer.1", "embed", "layer.*", "head"])
    assert names == ["embed", "layer.0", "layer.1", "layer.2", "head"]


def test_miss_lists_closest_names():
    with pytest.raises(
        ValueError, match=r"name 'layer\.1\.outptu' matched no module.*'layer\.1\.output'"
    ):
        _names("layer.1.outptu")


def test_miss_in_list_names_the_entry():
    with pytest.raises(ValueError, match="name 'hed' matched no module"):
        _names(["embed", "hed"])


def test_type_miss_lists_types_present():
    with pytest.raises(ValueError, match="module types present: .*Linear"):
        _names(nn.Conv2d)


def test_bad_entries_raise_type_error():
    with pytest.raises(TypeError, match="is not supported"):
        _names([3])
    with pytest.raises(TypeError, match="not a torch.nn.Module subclass"):
        _names(int)
    with pytest.raises(ValueError, match="layers is empty"):
        _names([])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        _names("re:(")


def test_data_parallel_is_rejected():
    with pytest.raises(TypeError, match="DataParallel.*DistributedDataParallel"):
        unwrap_model(nn.DataParallel(Encoder()))


def test_non_module_is_rejected():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        resolve_layers({}, "x")


def test_compiled_model_is_unwrapped():
    model = Encoder()
    compiled = torch.compile(model)
    assert unwrap_model(compiled) is model
    assert _names("layer.*", compiled) == ["layer.0", "layer.1", "layer.2"]


def test_canonical_name_drops_wrapper_segments():
    assert canonical_name("layer1._fsdp_wrapped_module.conv") == "layer1.conv"
    assert canonical_name("_orig_mod.layer.0") == "layer.0"
    assert canonical_name("a._checkpoint_wrapped_module.b") == "a.b"
    assert canonical_name("plain.name") == "plain.name"


def test_checkpoint_wrapper_names_are_canonical():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = Encoder()
    model.layer[1] = checkpoint_wrapper(model.layer[1])
    resolved = dict(resolve_layers(model, "layer.*"))
    assert list(resolved) == ["layer.0", "layer.1", "layer.2"]
    # The name points at the wrapped block, not at the wrapper.
    assert isinstance(resolved["layer.1"], Block)


def test_capture_imports_no_projection_or_export():
    import subprocess
    import sys

    code = (
        "import sys, latentlens.capture; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('umap', 'tensorboard', 'numba', 'pynndescent') or "
        "m.startswith(('latentlens.scores', 'latentlens.export', 'latentlens.umap'))))"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
