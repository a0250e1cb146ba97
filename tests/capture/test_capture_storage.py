"""Reservoirs, the memory budget, disk spill and the on-disk format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from latentlens.capture import (
    ActivationRecorder,
    Activations,
    CaptureBudgetWarning,
    load_activations,
    read_extra,
    save_activations,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 8))


def _feed(recorder, model, steps, batches_per_step=3, batch=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    with recorder:
        for step in range(steps):
            with recorder.record(
                labels=np.arange(batches_per_step * batch) + 1000 * step, step=step
            ):
                for _ in range(batches_per_step):
                    x = torch.randn(batch, 4, generator=generator)
                    inputs.setdefault(step, []).append(x)
                    model(x)
    return {step: torch.cat(xs) for step, xs in inputs.items()}


def test_reservoir_bounds_and_aligns_layers():
    model = _model()
    recorder = ActivationRecorder(model, ["0", "2"], max_rows_per_step=7, seed=3)
    inputs = _feed(recorder, model, steps=2)
    for step in range(2):
        first = recorder.activations("0", step=step)
        second = recorder.activations("2", step=step)
        assert len(first) == 7
        # Both layers keep the same samples, in arrival order, with their own labels.
        np.testing.assert_array_equal(first.metadata["sample"], second.metadata["sample"])
        assert np.all(np.diff(first.metadata["sample"]) > 0)
        local = first.metadata["sample"] - 30 * step
        np.testing.assert_array_equal(first.metadata["label"], local + 1000 * step)
        expected = model[0](inputs[step][local]).detach().numpy()
        np.testing.assert_allclose(first.values, expected, atol=1e-6)


def test_reservoir_is_seeded():
    def kept(seed):
        model = _model()
        recorder = ActivationRecorder(model, "0", max_rows_per_step=5, seed=seed)
        _feed(recorder, model, steps=1)
        return recorder.activations("0").metadata["sample"].tolist()

    assert kept(1) == kept(1)
    assert kept(1) != kept(2)


def test_reservoir_is_uniform_over_rows():
    # Each of 30 rows should be kept with probability 5/30.
    model = _model()
    counts = np.zeros(30)
    trials = 200
    for seed in range(trials):
        recorder = ActivationRecorder(model, "0", max_rows_per_step=5, seed=seed)
        with recorder, torch.no_grad():
            with recorder.record(step=0):
                for _ in range(3):
                    model(torch.zeros(10, 4))
        counts[recorder.activations("0").metadata["sample"]] += 1
    expected = trials * 5 / 30
    chi_square = ((counts - expected) ** 2 / expected).sum()
    # 99.9th percentile of chi-square with 29 degrees of freedom is 58.3.
    assert chi_square < 58.3
    assert counts.sum() == trials * 5


def test_budget_spills_to_disk_and_reads_back_everything(tmp_path):
    model = _model()
    full = ActivationRecorder(model, ["0", "2"])
    expected_inputs = _feed(full, model, steps=4)
    budget = 3000
    spilled = ActivationRecorder(
        model, ["0", "2"], memory_budget=budget, spill_dir=tmp_path / "spill"
    )
    inputs = _feed(spilled, model, steps=4)
    for step in range(4):
        torch.testing.assert_close(inputs[step], expected_inputs[step])
    assert spilled.peak_memory_bytes <= budget
    assert (tmp_path / "spill" / "manifest.json").is_file()
    for layer in ["0", "2"]:
        reference = full.activations(layer)
        restored = spilled.activations(layer)
        np.testing.assert_array_equal(restored.values, reference.values)
        for column in ["step", "sample", "label"]:
            np.testing.assert_array_equal(restored.metadata[column], reference.metadata[column])
        assert spilled.steps(layer) == [0, 1, 2, 3]
    from_disk = load_activations(tmp_path / "spill")
    assert 0 < len(from_disk["0"]) < len(full.activations("0"))


def test_budget_holds_with_reservoir_and_spill(tmp_path):
    model = _model()
    recorder = ActivationRecorder(
        model, ["0", "2"], max_rows_per_step=8, memory_budget=2500, spill_dir=tmp_path
    )
    _feed(recorder, model, steps=5)
    assert recorder.peak_memory_bytes <= 2500
    for layer in ["0", "2"]:
        acts = recorder.activations(layer)
        assert np.bincount(acts.metadata["step"]).tolist() == [8] * 5


def test_budget_without_spill_drops_oldest_steps():
    model = _model()
    row_bytes = 16 * 4 + 3 * 8  # values plus step, sample and label columns
    recorder = ActivationRecorder(model, "0", memory_budget=2 * 30 * row_bytes)
    with pytest.warns(CaptureBudgetWarning, match="memory budget of 5280 bytes is full") as seen:
        _feed(recorder, model, steps=4)
    budget_warnings = [w for w in seen if issubclass(w.category, CaptureBudgetWarning)]
    assert len(budget_warnings) == 1
    assert "dropped_rows attribute counts every row" in str(budget_warnings[0].message)
    assert recorder.steps("0") == [2, 3]
    assert recorder.peak_memory_bytes <= 2 * 30 * row_bytes
    assert recorder.dropped_rows == 60


def test_spill_dir_with_capture_rejected(tmp_path):
    model = _model()
    first = ActivationRecorder(model, "0", memory_budget=3000, spill_dir=tmp_path)
    _feed(first, model, steps=3)
    before = sorted(path.name for path in tmp_path.iterdir())
    assert "manifest.json" in before
    with pytest.raises(ValueError, match="already contains a capture.*empty or new folder"):
        ActivationRecorder(model, "0", memory_budget=3000, spill_dir=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    file_path = tmp_path / "not-a-folder"
    file_path.write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder path"):
        ActivationRecorder(model, "0", memory_budget=3000, spill_dir=file_path)


def test_shared_spill_dir_keeps_shards(tmp_path):
    model = _model()
    first = ActivationRecorder(model, "0", memory_budget=3000, spill_dir=tmp_path)
    second = ActivationRecorder(model, "0", memory_budget=3000, spill_dir=tmp_path)
    _feed(first, model, steps=3, seed=1)
    expected = first.activations("0")
    _feed(second, model, steps=3, seed=2)
    restored = first.activations("0")
    np.testing.assert_array_equal(restored.values, expected.values)
    np.testing.assert_array_equal(restored.metadata["step"], expected.metadata["step"])
    assert not np.array_equal(second.activations("0").values, expected.values)


def test_empty_step_read_keeps_width(tmp_path):
    model = _model()
    in_memory = ActivationRecorder(model, ["0", "2"])
    _feed(in_memory, model, steps=2)
    assert in_memory.activations("2", step=7).values.shape == (0, 8)
    # A budget of one byte sends every batch straight to disk.
    on_disk = ActivationRecorder(model, ["0", "2"], memory_budget=1, spill_dir=tmp_path)
    _feed(on_disk, model, steps=2)
    assert on_disk.memory_bytes == 0
    assert on_disk.activations("0", step=7).values.shape == (0, 16)
    assert ActivationRecorder(model, "0").activations("0").values.shape == (0, 0)


def test_clear_one_step_and_all(tmp_path):
    model = _model()
    recorder = ActivationRecorder(model, "0", memory_budget=3000, spill_dir=tmp_path)
    _feed(recorder, model, steps=3)
    recorder.clear(step=1)
    assert recorder.steps("0") == [0, 2]
    assert set(recorder.activations("0").metadata["step"].tolist()) == {0, 2}
    recorder.clear()
    assert recorder.steps("0") == []
    assert recorder.memory_bytes == 0
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("file_format", ["safetensors", "npy"])
def test_save_load_round_trip(tmp_path, file_format):
    rng = np.random.default_rng(0)
    acts = {
        "encoder.layer.0": Activations(
            rng.normal(size=(4, 3)).astype(np.float32),
            {
                "step": np.array([0, 0, 1, 1]),
                "label": np.array(["cat", "dog", "cat", "émeu"]),
                "score": np.array([0.5, 1.5, np.nan, 2.0]),
                "id": np.array(["a", 1, 2.5, "d"], dtype=object).astype(str),
                "flag": np.array([True, False, True, True]),
            },
        ),
        "": Activations(np.ones((4, 2), np.float32), {"step": np.arange(4)}),
    }
    folder = save_activations(tmp_path / "out", acts, extra={"model": "x"}, file_format=file_format)
    loaded = load_activations(folder)
    assert list(loaded) == ["encoder.layer.0", ""]
    for name, original in acts.items():
        np.testing.assert_array_equal(loaded[name].values, original.values)
        for column, values in original.metadata.items():
            np.testing.assert_array_equal(loaded[name].metadata[column], values)
            assert loaded[name].metadata[column].dtype.kind == values.dtype.kind
    assert read_extra(folder) == {"model": "x"}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layers"][0]["steps"] == [0, 1]


def test_save_replaces_an_earlier_capture(tmp_path):
    first = {
        "a": Activations(np.ones((2, 2), np.float32), {}),
        "b": Activations(np.ones((2, 2), np.float32), {}),
    }
    save_activations(tmp_path, first)
    save_activations(tmp_path, {"a": Activations(np.zeros((1, 2), np.float32), {})})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "manifest.json"]
    assert list(load_activations(tmp_path)) == ["a"]


def test_save_rejects_bad_input_before_writing(tmp_path):
    good = Activations(np.ones((2, 2), np.float32), {})
    with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
        save_activations(tmp_path / "x", {"a": good}, extra={"f": object()})
    with pytest.raises(TypeError, match=r"activations\['a'\] is ndarray, not Activations"):
        save_activations(tmp_path / "x", {"a": np.ones((2, 2))})
    with pytest.raises(ValueError, match="non-empty mapping"):
        save_activations(tmp_path / "x", {})
    with pytest.raises(ValueError, match="file_format='csv' is not supported"):
        save_activations(tmp_path / "x", {"a": good}, file_format="csv")
    bad = Activations(np.ones((2, 2), np.float32), {"when": np.array([1 + 2j, 3j])})
    with pytest.raises(TypeError, match="metadata column 'when' of layer 'a' has dtype complex128"):
        save_activations(tmp_path / "x", {"a": bad})
    assert not (tmp_path / "x").exists()


def test_load_rejects_missing_and_foreign_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_activations(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a latentlens activations manifest"):
        load_activations(tmp_path)


def test_recorder_save_writes_layers_and_pooling(tmp_path):
    model = _model()
    recorder = ActivationRecorder(model, ["0", "2"])
    _feed(recorder, model, steps=2)
    recorder.save(tmp_path, extra={"run": "test"})
    loaded = load_activations(tmp_path)
    np.testing.assert_array_equal(loaded["2"].values, recorder.activations("2").values)
    assert read_extra(tmp_path)["pooling"] == {"0": "auto", "2": "auto"}
    assert read_extra(tmp_path)["run"] == "test"


def test_activations_validation_and_concat():
    with pytest.raises(ValueError, match="values must be a 2-D array"):
        Activations(np.ones(3), {})
    with pytest.raises(ValueError, match="metadata column 'step' must be 1-D with 2 entries"):
        Activations(np.ones((2, 1)), {"step": np.arange(3)})
    a = Activations(np.ones((2, 2)), {"step": np.arange(2), "call": np.array([1, 1])})
    b = Activations(np.zeros((1, 2)), {"step": np.array([5]), "split": np.array(["val"])})
    joined = Activations.concat([a, b])
    assert joined.values.dtype == np.float32
    assert joined.metadata["call"].tolist() == [1, 1, 0]
    assert joined.metadata["split"].tolist() == ["", "", "val"]
    with pytest.raises(ValueError, match="different feature counts"):
        Activations.concat([a, Activations(np.ones((1, 3)), {})])


def test_reservoir_larger_than_budget_spills_and_restarts(tmp_path):
    model = _model()
    full = ActivationRecorder(model, "0")
    _feed(full, model, steps=2)
    # 20 rows of layer "0" take 1,760 bytes, more than the whole budget.
    recorder = ActivationRecorder(
        model, "0", max_rows_per_step=20, memory_budget=1000, spill_dir=tmp_path
    )
    _feed(recorder, model, steps=2)
    assert recorder.peak_memory_bytes <= 1000
    acts = recorder.activations("0")
    reference = full.activations("0")
    order = np.argsort(acts.metadata["sample"], kind="stable")
    samples = acts.metadata["sample"][order]
    assert len(np.unique(samples)) == len(samples)
    np.testing.assert_array_equal(acts.values[order], reference.values[samples])


def test_reservoir_larger_than_budget_drops_with_warning():
    model = _model()
    recorder = ActivationRecorder(model, "0", max_rows_per_step=20, memory_budget=1000)
    with pytest.warns(CaptureBudgetWarning, match="rows are dropped"):
        _feed(recorder, model, steps=2)
    assert recorder.peak_memory_bytes <= 1000
    # Per step: rows 0-19 make a 20-row reservoir that cannot fit and is dropped, rows
    # 20-29 start a new one. Step 1 then pushes step 0's 10 rows out: 20 + 10 + 20 dropped.
    assert recorder.dropped_rows == 50
    assert recorder.steps("0") == [1]
    assert recorder.activations("0").metadata["sample"].tolist() == list(range(50, 60))


def test_failed_save_keeps_previous_capture(tmp_path, monkeypatch):
    import safetensors.numpy

    old = {"a": Activations(np.ones((2, 2), np.float32), {"step": np.zeros(2, np.int64)})}
    save_activations(tmp_path, old)
    calls = []
    real_save = safetensors.numpy.save_file

    def failing_save(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
    new = {
        "b": Activations(np.zeros((3, 2), np.float32), {}),
        "c": Activations(np.zeros((3, 2), np.float32), {}),
    }
    with pytest.raises(OSError, match="disk full"):
        save_activations(tmp_path, new)
    # The manifest is written last, so readers still see the earlier capture in full.
    loaded = load_activations(tmp_path)
    assert list(loaded) == ["a"]
    np.testing.assert_array_equal(loaded["a"].values, old["a"].values)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_memory_bytes_count_values_and_metadata():
    # Rows are stored before their metadata columns exist; the byte count taken in the
    # hook must still equal what the columns occupy once they are built.
    model = _model()
    recorder = ActivationRecorder(model, ["0", "2"])
    batch = 5
    with recorder:
        for step in range(2):
            ids = [f"s{step}-{index}" for index in range(batch)]
            with recorder.record(labels=torch.arange(batch), ids=ids, split="train", step=step):
                model(torch.randn(batch, 4))

    # float32 values, int64 step, sample and label, "<U4" ids, "<U5" split.
    metadata_row = 8 + 8 + 8 + 4 * 4 + 4 * 5
    expected = 2 * batch * ((16 * 4 + metadata_row) + (8 * 4 + metadata_row))
    assert recorder.memory_bytes == expected
    assert recorder.peak_memory_bytes == expected
    built = sum(recorder.activations(layer, step).nbytes for layer in ("0", "2") for step in (0, 1))
    assert built == expected
