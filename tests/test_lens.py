"""LatentLens: recording, publishing, references, alignment of successive maps."""

import csv
import io

import numpy as np
import pytest
import torch
from torch import nn

from latentlens import LatentLens


def _model(n_features=8, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, 4))


def _blobs(n=120, n_features=8, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centres = np.eye(3, n_features) * 6.0
    data = centres[labels] + rng.normal(size=(n, n_features)) + shift
    return data.astype(np.float32), labels


def _metadata(client, run, name):
    text = client.get("metadata", run=run, name=name).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    return rows[0], rows[1:]


def test_record_requires_attached_lens(tmp_path):
    lens = LatentLens(_model(), layers=["0"], logdir=tmp_path)
    with pytest.raises(RuntimeError, match="not attached"):
        with lens.record(step=0):
            pass


def test_record_rejects_mismatched_lengths(tmp_path):
    with LatentLens(_model(), layers=["0"], logdir=tmp_path) as lens:
        with pytest.raises(ValueError, match="one length per batch"):
            with lens.record(step=0, labels=[0, 1], ids=[0, 1, 2]):
                pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"projection": "tsne"}, "projection must be one of"),
        ({"n_components": 4}, "n_components must be 2 or 3"),
        ({"publish_every": 0}, "publish_every must be a positive integer"),
        ({"alpha": 1.5}, "alpha must be in"),
        ({"min_class_size": 1}, "min_class_size must be an integer >= 2, got 1"),
        ({"min_class_size": 2.5}, "min_class_size must be an integer >= 2, got 2.5"),
        ({"reference_step": "last"}, "reference_step must be 'first'"),
    ],
)
def test_lens_rejects_bad_settings(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        LatentLens(_model(), layers=["0"], logdir=tmp_path, **options)
    assert not any(tmp_path.iterdir())


def test_publish_every_publishes_due_steps(tmp_path, projector_client):
    model = _model()
    data, labels = _blobs()
    with LatentLens(model, layers=["0"], logdir=tmp_path, run="loop", publish_every=2) as lens:
        for step in range(5):
            with torch.no_grad(), lens.record(step=step, labels=labels):
                model(torch.from_numpy(data))

    client = projector_client(tmp_path)
    names = sorted(e["tensorName"] for e in client.json("info", run="loop")["embeddings"])
    assert names == ["0_step000000", "0_step000002", "0_step000004"]
    for module in model.modules():
        assert not module._forward_hooks


def test_publish_scores_against_first_step(tmp_path, projector_client):
    model = nn.Sequential(nn.Identity())
    reference, labels = _blobs(seed=0)
    shifted, _ = _blobs(seed=1, shift=3.0)
    with LatentLens(model, layers=["0"], logdir=tmp_path, run="scores") as lens:
        with lens.record(step=0, labels=labels):
            model(torch.from_numpy(reference))
        first = lens.publish(0)["0"]
        with lens.record(step=1, labels=labels):
            model(torch.from_numpy(shifted))
        second = lens.publish(1)["0"]

    assert first.drift is None
    assert first.outlier_scores is None
    assert second.drift.p_value < 0.01
    assert second.outlier_scores.shape == (len(shifted),)
    header, body = _metadata(projector_client(tmp_path), "scores", "0_step000001")
    for column in ("outlier_score", "outlier_p_value", "outlier", "layer_drift"):
        assert column in header
    assert {row[header.index("layer_drift")] for row in body} == {"yes"}


def test_reference_dataset_replaces_reference_step(tmp_path):
    model = nn.Sequential(nn.Identity())
    reference, labels = _blobs(seed=0)
    same, _ = _blobs(seed=2)
    with LatentLens(model, layers=["0"], logdir=tmp_path) as lens:
        lens.set_reference("0", reference, labels=labels)
        with lens.record(step=0, labels=labels):
            model(torch.from_numpy(same))
        report = lens.publish(0)["0"]
    assert report.drift is not None
    assert report.drift.p_value > 0.01


def test_set_reference_rejects_unknown_layer(tmp_path):
    with LatentLens(_model(), layers=["0"], logdir=tmp_path) as lens:
        with pytest.raises(ValueError, match="not recorded by this lens"):
            lens.set_reference("2", np.zeros((10, 4)))


def test_subsampled_rows_keep_their_metadata(tmp_path, projector_client):
    model = nn.Sequential(nn.Identity())
    data, _ = _blobs(n=100)
    row_numbers = np.arange(100)
    ids = np.array([f"sample-{i}" for i in row_numbers])
    with LatentLens(
        model,
        layers=["0"],
        logdir=tmp_path,
        run="subsample",
        recorder_options={"max_rows_per_step": 30},
    ) as lens:
        for start in range(0, 100, 25):
            rows = slice(start, start + 25)
            with lens.record(step=0, labels=row_numbers[rows], ids=ids[rows]):
                model(torch.from_numpy(data[rows]))
        report = lens.publish(0, metadata={"copy": row_numbers * 10})["0"]

    assert report.n_rows == 30
    header, body = _metadata(projector_client(tmp_path), "subsample", "0_step000000")
    for row in body:
        label = int(row[header.index("label")])
        assert int(row[header.index("copy")]) == label * 10
        assert row[header.index("id")] == f"sample-{label}"


def test_publish_without_rows_raises(tmp_path):
    with LatentLens(_model(), layers=["0"], logdir=tmp_path) as lens:
        with pytest.raises(ValueError, match="nothing was recorded at step 3"):
            lens.publish(3)


def test_hooks_removed_after_exception(tmp_path):
    model = _model()
    with pytest.raises(KeyError):
        with LatentLens(model, layers=["0", "2"], logdir=tmp_path) as lens:
            with lens.record(step=0):
                model(torch.zeros(4, 8))
                raise KeyError("inside the training loop")
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks


def test_parametric_projection_maps_later_steps(tmp_path):
    model = nn.Sequential(nn.Identity())
    first, labels = _blobs(seed=0)
    later, _ = _blobs(seed=3, shift=0.5)
    with LatentLens(
        model,
        layers=["0"],
        logdir=tmp_path,
        projection="parametric",
        umap_options={"n_training_epochs": 5},
    ) as lens:
        with lens.record(step=0, labels=labels):
            model(torch.from_numpy(first))
        lens.publish(0)
        with lens.record(step=1, labels=labels):
            model(torch.from_numpy(later))
        report = lens.publish(1)["0"]
        encoder = lens._references["0"].parametric

    np.testing.assert_allclose(report.layout, encoder.transform(later), rtol=1e-6, atol=1e-6)
    assert report.layout.shape == (len(later), 2)
