"""ParametricUMAP end to end on small data: training, transform, decoder, save and load."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from latentlens.umap.graph import find_ab_params
from latentlens.umap.parametric import ParametricUMAP

SMALL = {"hidden_sizes": (32, 32), "batch_size": 128, "device": "cpu", "random_state": 0}


@pytest.fixture(scope="module")
def blobs():
    """300 rows in 10-D: three well separated Gaussian clusters, and the cluster labels."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(3, 10))
    labels = np.repeat(np.arange(3), 100)
    rows = centers[labels] + rng.normal(size=(300, 10))
    return rows.astype(np.float32), labels


@pytest.fixture(scope="module")
def fitted(blobs):
    rows, _ = blobs
    return ParametricUMAP(n_training_epochs=6, decoder="mlp", **SMALL).fit(rows)


def test_fit_sets_fitted_attributes(fitted, blobs):
    rows, _ = blobs
    a, b = find_ab_params(1.0, 0.1)
    assert fitted.embedding_.shape == (300, 2)
    assert fitted.embedding_.dtype == np.float32
    assert fitted.graph_.shape == (300, 300)
    assert (fitted.graph_ != fitted.graph_.T).nnz == 0
    assert (fitted.a_, fitted.b_) == (pytest.approx(a), pytest.approx(b))
    assert fitted.n_features_in_ == 10
    assert len(fitted.loss_history_) == 6
    assert np.array_equal(fitted.embedding_, fitted.transform(rows))


def test_training_lowers_loss_and_separates_clusters(fitted, blobs):
    rows, labels = blobs
    assert fitted.loss_history_[-1] < fitted.loss_history_[0]
    # Every point's nearest embedded neighbours come from its own cluster.
    classifier = KNeighborsClassifier(n_neighbors=10).fit(fitted.embedding_, labels)
    assert classifier.score(fitted.embedding_, labels) == 1.0


def test_transform_is_batch_invariant(fitted, blobs):
    rows, _ = blobs
    full = fitted.transform(rows)
    permutation = np.random.default_rng(1).permutation(rows.shape[0])
    assert np.array_equal(fitted.transform(rows[permutation]), full[permutation])
    assert np.array_equal(fitted.transform(rows[7:8]), full[7:8])
    assert np.array_equal(fitted.transform(np.concatenate([rows[:5], rows * 3.0])[:5]), full[:5])


def test_transform_spans_several_batches(blobs):
    rows, _ = blobs
    mapper = ParametricUMAP(n_training_epochs=1, transform_batch_size=64, **SMALL).fit(rows)
    one_batch = mapper.set_params(transform_batch_size=4096).transform(rows)
    several = mapper.set_params(transform_batch_size=64).transform(rows)
    np.testing.assert_allclose(several, one_batch, rtol=1e-5, atol=1e-5)


def test_transform_accepts_tensor_and_float64(fitted, blobs):
    rows, _ = blobs
    expected = fitted.transform(rows)
    assert np.array_equal(fitted.transform(torch.from_numpy(rows)), expected)
    assert np.array_equal(fitted.transform(rows.astype(np.float64)), expected)


def test_transform_of_no_rows(fitted):
    assert fitted.transform(np.zeros((0, 10))).shape == (0, 2)


def test_duplicate_rows_give_no_nan():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 6)).astype(np.float32)
    rows = np.concatenate([np.repeat(base[:10], 20, axis=0), base[10:]])  # 200 copies of 10 rows
    mapper = ParametricUMAP(n_training_epochs=3, **SMALL).fit(rows)
    assert np.isfinite(mapper.loss_history_).all()
    assert np.isfinite(mapper.embedding_).all()
    # Identical rows map to identical points.
    assert np.array_equal(mapper.embedding_[0], mapper.embedding_[19])


def test_seeded_fit_is_repeatable(blobs):
    rows, _ = blobs
    first = ParametricUMAP(n_training_epochs=2, **SMALL).fit_transform(rows)
    second = ParametricUMAP(n_training_epochs=2, **SMALL).fit_transform(rows)
    assert np.array_equal(first, second)


def test_fit_leaves_global_torch_rng_alone(blobs):
    rows, _ = blobs
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ParametricUMAP(n_training_epochs=1, **SMALL).fit(rows)
    assert torch.equal(torch.rand(3), expected)


def test_save_then_load_gives_identical_outputs(fitted, blobs, tmp_path):
    rows, _ = blobs
    folder = fitted.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]

    loaded = ParametricUMAP.load(folder, device="cpu")
    assert np.array_equal(loaded.transform(rows), fitted.transform(rows))
    codes = fitted.embedding_[:20]
    assert np.array_equal(loaded.inverse_transform(codes), fitted.inverse_transform(codes))
    assert loaded.get_params()["n_neighbors"] == fitted.n_neighbors
    assert (loaded.a_, loaded.b_) == (fitted.a_, fitted.b_)


def test_saved_config_is_plain_json_without_training_rows(fitted, tmp_path):
    folder = fitted.save(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["encoder"]["type"] == "mlp"
    assert config["params"]["hidden_sizes"] == [32, 32]
    from safetensors.torch import load_file

    shapes = {
        key: tuple(value.shape) for key, value in load_file(folder / "model.safetensors").items()
    }
    assert max(shape[0] if shape else 1 for shape in shapes.values()) < 300  # no per-row tensor


def test_save_overwrites_an_existing_model(fitted, blobs, tmp_path):
    rows, _ = blobs
    other = ParametricUMAP(n_training_epochs=1, **{**SMALL, "random_state": 5}).fit(rows)
    other.save(tmp_path / "model")
    fitted.save(tmp_path / "model")
    loaded = ParametricUMAP.load(tmp_path / "model", device="cpu")
    assert np.array_equal(loaded.transform(rows), fitted.transform(rows))
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "model").iterdir())


class ConvEncoder(nn.Module):
    """Small convnet for 8x8 digit images, shape (batch, 1, 8, 8) to (batch, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(8 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x / 16.0))


@pytest.fixture(scope="module")
def digit_images():
    digits = load_digits()
    return digits.images[:300].reshape(300, 1, 8, 8).astype(np.float32), digits.target[:300]


def test_custom_encoder_on_images(digit_images, tmp_path):
    images, _ = digit_images
    torch.manual_seed(0)
    mapper = ParametricUMAP(
        encoder=ConvEncoder(), n_training_epochs=2, batch_size=128, device="cpu"
    ).fit(images)
    assert mapper.embedding_.shape == (300, 2)
    assert mapper.n_features_in_ == 64

    folder = mapper.save(tmp_path / "conv")
    config = json.loads((folder / "config.json").read_text())
    assert config["encoder"] == {"type": "custom", "class": f"{__name__}.ConvEncoder"}
    with pytest.raises(ValueError, match="saved with a custom encoder of class"):
        ParametricUMAP.load(folder, device="cpu")

    loaded = ParametricUMAP.load(folder, encoder=ConvEncoder(), device="cpu")
    assert np.array_equal(loaded.transform(images), mapper.transform(images))


def test_load_rejects_mismatched_encoder(digit_images, tmp_path):
    images, _ = digit_images
    mapper = ParametricUMAP(encoder=ConvEncoder(), n_training_epochs=1, device="cpu").fit(images)
    folder = mapper.save(tmp_path / "conv")
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match="does not match the saved weights"):
        ParametricUMAP.load(folder, encoder=wrong, device="cpu")


def test_reconstruction_lowers_error_against_untrained_decoder(digit_images):
    images, _ = digit_images
    rows = images.reshape(300, 64)
    settings = {**SMALL, "hidden_sizes": (64, 64), "batch_size": 64}
    mapper = ParametricUMAP(n_training_epochs=6, reconstruction_weight=1.0, **settings).fit(rows)
    trained_error = np.mean((mapper.inverse_transform(mapper.embedding_) - rows) ** 2)

    untrained = ParametricUMAP(n_training_epochs=0, reconstruction_weight=1.0, **settings).fit(rows)
    untrained_error = np.mean((untrained.inverse_transform(mapper.embedding_) - rows) ** 2)
    mean_row_error = np.mean((rows.mean(axis=0) - rows) ** 2)

    assert trained_error < 0.7 * untrained_error
    # A 2-D code carries more than the mean image does.
    assert trained_error < mean_row_error


def test_zero_reconstruction_weight_leaves_encoder_alone(blobs):
    rows, _ = blobs
    plain = ParametricUMAP(n_training_epochs=2, **SMALL).fit(rows)
    with_decoder = ParametricUMAP(n_training_epochs=2, decoder="mlp", **SMALL).fit(rows)
    # The decoder trains on detached codes, so the encoder follows the same path.
    assert np.array_equal(with_decoder.embedding_, plain.embedding_)
    assert with_decoder.decoder_ is not None


def test_init_layout_array_is_regressed(blobs):
    rows, labels = blobs
    layout = np.stack([labels * 5.0, -labels * 2.0], axis=1).astype(np.float32)
    mapper = ParametricUMAP(
        init_layout=layout,
        n_init_epochs=150,
        n_training_epochs=0,
        input_noise=0.0,
        learning_rate=3e-3,
        **{**SMALL, "batch_size": 64},
    ).fit(rows)
    assert mapper.init_loss_history_[-1] < 0.01 * mapper.init_loss_history_[0]
    # Each row lands near its target: well under the gap of 2 between cluster targets.
    assert np.abs(mapper.embedding_ - layout).mean() < 0.2
    assert np.abs(mapper.embedding_ - layout).max() < 1.0


def test_loss_per_epoch_is_logged(blobs, caplog):
    rows, _ = blobs
    with caplog.at_level(logging.INFO, logger="latentlens.umap.parametric_train"):
        ParametricUMAP(n_training_epochs=2, **SMALL).fit(rows)
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("epoch 2/2: UMAP loss ") for message in messages)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"n_neighbors": 1}, ValueError, r"n_neighbors=1 is invalid; expected an int >= 2"),
        ({"n_components": 0}, ValueError, r"n_components=0 is invalid"),
        ({"min_dist": 2.0}, ValueError, r"min_dist=2.0 is larger than spread=1.0"),
        ({"spread": 0}, ValueError, r"spread=0 is invalid; expected a finite number > 0"),
        ({"negative_sampling": "random"}, ValueError, r"negative_sampling='random' is invalid"),
        ({"batch_size": 0}, ValueError, r"batch_size=0 is invalid"),
        ({"learning_rate": -1.0}, ValueError, r"learning_rate=-1.0 is invalid"),
        ({"init_layout": "pca"}, ValueError, r"init_layout='pca' is invalid"),
        ({"init_layout": np.zeros((5, 2))}, ValueError, r"init_layout has shape \(5, 2\)"),
        ({"encoder": "mlp"}, TypeError, r"encoder='mlp' is invalid"),
        ({"decoder": 3}, TypeError, r"decoder=3 is invalid"),
        ({"hidden_sizes": (0,)}, ValueError, r"hidden_sizes=\(0,\) is invalid"),
        ({"random_state": -1}, ValueError, r"random_state=-1 is invalid"),
        ({"device": "tpu"}, ValueError, r"device='tpu' is invalid"),
        ({"encoder": nn.Linear(10, 3)}, ValueError, r"expected a tensor of shape \(2, 2\)"),
    ],
)
def test_fit_rejects_bad_settings(blobs, params, error, match):
    rows, _ = blobs
    with pytest.raises(error, match=match):
        ParametricUMAP(**{"device": "cpu", **params}).fit(rows)


def test_fit_rejects_bad_rows(blobs):
    rows, _ = blobs
    with_nan = rows.copy()
    with_nan[3, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"NaN or infinite values in 1 row\(s\), the first at row 3"
    ):
        ParametricUMAP(device="cpu").fit(with_nan)
    with pytest.raises(ValueError, match="X has 10 rows but n_neighbors=15"):
        ParametricUMAP(device="cpu").fit(rows[:10])
    with pytest.raises(ValueError, match=r"X has shape \(300,\)"):
        ParametricUMAP(device="cpu").fit(rows[:, 0])
    with pytest.raises(ValueError, match="default MLP encoder takes"):
        ParametricUMAP(device="cpu").fit(rows.reshape(300, 2, 5))


def test_transform_matches_unfolded_encoder(fitted, blobs):
    rows, _ = blobs
    with torch.no_grad():
        direct = fitted.encoder_(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(fitted.transform(rows), direct, rtol=1e-5, atol=1e-5)


def test_finite_check_allows_overflowing_sum(fitted):
    # The sum of these finite float32 rows overflows to inf, and they must still pass.
    huge = np.full((3, 10), 3e38, dtype=np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(huge.sum())
    assert np.isfinite(fitted.transform(huge)).shape == (3, 2)
    with_inf = huge.copy()
    with_inf[1, 4] = -np.inf
    with pytest.raises(
        ValueError, match=r"NaN or infinite values in 1 row\(s\), the first at row 1"
    ):
        fitted.transform(with_inf)


def test_transform_rejects_bad_input(fitted):
    with pytest.raises(ValueError, match=r"rows of shape \(4,\); this model was fitted on rows of"):
        fitted.transform(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="not fitted yet"):
        ParametricUMAP().transform(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="has no decoder"):
        ParametricUMAP(n_training_epochs=0, **SMALL).fit(np.eye(20)).inverse_transform(
            np.zeros((1, 2))
        )


def test_load_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        ParametricUMAP.load(tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_matches_cpu_transform(blobs, tmp_path):
    rows, labels = blobs
    mapper = ParametricUMAP(n_training_epochs=6, **{**SMALL, "device": "cuda"}).fit(rows)
    assert next(mapper.encoder_.parameters()).device.type == "cuda"
    classifier = KNeighborsClassifier(n_neighbors=10).fit(mapper.embedding_, labels)
    assert classifier.score(mapper.embedding_, labels) == 1.0

    on_cpu = ParametricUMAP.load(mapper.save(tmp_path / "gpu"), device="cpu")
    np.testing.assert_allclose(on_cpu.transform(rows), mapper.embedding_, rtol=1e-4, atol=1e-4)
