"""The main job end to end: train, capture, project, export, read back through TensorBoard."""

import csv
import io

import numpy as np
import pytest
import torch

from latentlens.demo import DEMO_LAYERS, DigitsCNN, load_digits_split, run_demo

EPOCHS = 3


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    model = DigitsCNN()
    summary = run_demo(logdir, epochs=EPOCHS, seed=0, model=model)
    return logdir, summary, model


def _manual_activations(model, images):
    """Activations computed without hooks, straight from the modules."""
    with torch.no_grad():
        features = model.features(torch.from_numpy(images))
        penultimate = model.penultimate(features)
    return {"features": features.mean(dim=(2, 3)).numpy(), "penultimate": penultimate.numpy()}


def _tensor_name(client, run, layer, epoch):
    names = [e["tensorName"] for e in client.json("info", run=run)["embeddings"]]
    matches = [n for n in names if n.startswith(layer) and n.endswith(f"{epoch:04d}")]
    assert len(matches) == 1, (layer, epoch, names)
    return matches[0]


def test_demo_run_listed_by_projector(demo_run, projector_client):
    logdir, summary, _ = demo_run
    client = projector_client(logdir)

    assert summary.run in client.json("runs")
    info = client.json("info", run=summary.run)
    assert len(info["embeddings"]) == len(DEMO_LAYERS) * EPOCHS
    for layer in DEMO_LAYERS:
        for epoch in range(1, EPOCHS + 1):
            _tensor_name(client, summary.run, layer, epoch)


def test_demo_tensor_equals_activations(demo_run, projector_client):
    logdir, summary, model = demo_run
    client = projector_client(logdir)
    split = load_digits_split(0)
    expected = _manual_activations(model, split.validation_images)

    for layer in DEMO_LAYERS:
        name = _tensor_name(client, summary.run, layer, EPOCHS)
        served = np.frombuffer(client.get("tensor", run=summary.run, name=name), dtype="<f4")
        served = served.reshape(len(split.validation_labels), -1)
        np.testing.assert_allclose(served, expected[layer], rtol=1e-5, atol=1e-6)


def test_demo_metadata_one_row_per_point(demo_run, projector_client):
    logdir, summary, model = demo_run
    client = projector_client(logdir)
    split = load_digits_split(0)
    name = _tensor_name(client, summary.run, "penultimate", EPOCHS)

    text = client.get("metadata", run=summary.run, name=name).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    header, body = rows[0], rows[1:]

    for column in ("index", "label", "predicted", "correct", "epoch"):
        assert column in header
    assert len(body) == len(split.validation_labels)
    labels = [int(row[header.index("label")]) for row in body]
    assert labels == split.validation_labels.tolist()
    predicted = np.array([int(row[header.index("predicted")]) for row in body])
    with torch.no_grad():
        expected = model(torch.from_numpy(split.validation_images)).argmax(1).numpy()
    np.testing.assert_array_equal(predicted, expected)
    assert {row[header.index("epoch")] for row in body} == {str(EPOCHS)}


def test_demo_bookmark_holds_our_layout(demo_run, projector_client):
    logdir, summary, _ = demo_run
    client = projector_client(logdir)

    for layer in DEMO_LAYERS:
        name = _tensor_name(client, summary.run, layer, EPOCHS)
        states = client.json("bookmarks", run=summary.run, name=name)
        layout = summary.layouts[(layer, EPOCHS)]
        assert states, "no bookmark written"
        for state in states:
            assert state["selectedProjection"] == "umap"
            projections = state["projections"]
            assert len(projections) == len(layout)
            served = np.array([[p["umap-0"], p["umap-1"]] for p in projections])
            np.testing.assert_allclose(served, layout, rtol=1e-6, atol=1e-6)


def test_demo_sprite_served(demo_run, projector_client):
    from PIL import Image

    logdir, summary, _ = demo_run
    client = projector_client(logdir)
    name = _tensor_name(client, summary.run, "penultimate", EPOCHS)
    image = Image.open(io.BytesIO(client.get("sprite_image", run=summary.run, name=name)))
    assert image.width == image.height


def test_demo_leaves_no_hooks(demo_run):
    _, _, model = demo_run
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks


def test_demo_removes_hooks_when_training_raises(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN()

    def fail(result):
        raise RuntimeError("stop after the first epoch")

    with pytest.raises(RuntimeError, match="stop after the first epoch"):
        run_demo(tmp_path, epochs=3, seed=0, model=model, on_epoch=fail)

    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks


def test_demo_rejects_bad_epochs(tmp_path):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        run_demo(tmp_path / "never", epochs=0)
    assert not (tmp_path / "never").exists()


def test_umap_layout_of_digit_pixels_is_faithful():
    from sklearn.datasets import load_digits
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from latentlens import UMAP

    pixels, labels = load_digits(return_X_y=True)
    layout = UMAP(n_neighbors=15, random_state=0).fit_transform(pixels)

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    accuracy = cross_val_score(KNeighborsClassifier(10), layout, labels, cv=folds).mean()
    assert accuracy >= 0.95
    assert trustworthiness(pixels, layout, n_neighbors=10) >= 0.97


def test_demo_maps_stay_aligned(demo_run):
    from latentlens.alignment import relative_displacement

    _, summary, _ = demo_run
    displacement = relative_displacement(
        summary.layouts[("penultimate", EPOCHS - 1)], summary.layouts[("penultimate", EPOCHS)]
    )
    # Mean movement of a point over the spread of the map. Independent UMAP fits of the same
    # two epochs move points by 0.4-0.9 of the spread (benchmarks/map_stability.py).
    assert displacement < 0.3


def test_demo_writes_drift_per_digit(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir, _, _ = demo_run
    events = EventAccumulator(str(logdir / "digits"), size_guidance={"scalars": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    for layer in DEMO_LAYERS:
        assert f"drift_by_class/{layer}/class_mix_p_value" in tags
        for digit in range(10):
            tag = f"drift_by_class/{layer}/{digit}/p_value_holm"
            assert tag in tags
            # Epochs 2 and 3 are compared with epoch 1.
            values = [event.value for event in events.Scalars(tag)]
            assert len(values) == EPOCHS - 1
            assert all(0.0 < value <= 1.0 for value in values)
