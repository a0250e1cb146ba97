"""The demo: a small CNN learns scikit-learn's handwritten digits while latentlens watches.

The model, the data split and the training loop live here so that the command line, the tests,
the examples and the benchmarks all train exactly the same network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Layers the demo records: the convolutional block (pooled over space) and the penultimate layer.
DEMO_LAYERS = ("features", "penultimate")


@dataclass(frozen=True)
class DigitsSplit:
    """Seeded train/validation split of scikit-learn's 1,797 8x8 digit images.

    Images are float32 arrays of shape (n, 1, 8, 8) scaled to [0, 1]; labels are int64 (n,).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray


def load_digits_split(seed: int = 0, *, validation_fraction: float = 0.25) -> DigitsSplit:
    """Load the bundled digits and split them, stratified by class, with a fixed seed.

    Parameters
    ----------
    seed : int, default=0
        Seed of the split; the same seed always gives the same rows.
    validation_fraction : float, default=0.25
        Share of the rows held out for validation, in (0, 1).

    Returns
    -------
    DigitsSplit

    Raises
    ------
    ValueError
        If ``validation_fraction`` is not in (0, 1).

    Examples
    --------
    >>> split = load_digits_split(seed=0)
    >>> split.validation_images.shape
    (450, 1, 8, 8)
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in (0, 1), got {validation_fraction!r}; "
            "use for example 0.25 to hold out a quarter of the images"
        )
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    train_x, val_x, train_y, val_y = train_test_split(
        images, labels, test_size=validation_fraction, random_state=seed, stratify=labels
    )
    return DigitsSplit(train_x, train_y, val_x, val_y)


class DigitsCNN(nn.Module):
    """Two convolutions, a 64-unit penultimate layer and a 10-way classifier for 8x8 digits.

    ``features`` outputs (n, 32, 4, 4) maps and ``penultimate`` (n, 64) vectors: the two
    layers the demo records.
    """

    def __init__(self, hidden_units: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.penultimate = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, hidden_units),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(hidden_units, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.penultimate(self.features(images)))


@dataclass(frozen=True)
class EpochResult:
    """Validation figures after one training epoch, with the predictions they come from."""

    epoch: int
    validation_loss: float
    validation_accuracy: float
    predictions: np.ndarray


def train_digits_cnn(
    split: DigitsSplit,
    *,
    epochs: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    model: DigitsCNN | None = None,
    evaluate: Callable[[DigitsCNN, int], EpochResult] | None = None,
) -> DigitsCNN:
    """Train a :class:`DigitsCNN` with Adam and evaluate it after every epoch.

    Parameters
    ----------
    split : DigitsSplit
        Data from :func:`load_digits_split`.
    epochs : int, default=8
        Number of passes over the training images.
    seed : int, default=0
        Seed of the weights and of the batch order.
    batch_size : int, default=64
    learning_rate : float, default=3e-3
    model : DigitsCNN, optional
        Model to train in place; a new one is built when omitted.
    evaluate : callable, optional
        Called as ``evaluate(model, epoch)`` after each epoch (epochs count from 1). Defaults to
        :func:`evaluate_digits_cnn` on the validation images.

    Returns
    -------
    DigitsCNN
        The trained model.

    Raises
    ------
    ValueError
        If ``epochs`` or ``batch_size`` is not a positive integer.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    generator = torch.Generator().manual_seed(seed)
    if model is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    images = torch.from_numpy(split.train_images)
    labels = torch.from_numpy(split.train_labels)
    if evaluate is None:

        def evaluate(trained: DigitsCNN, epoch: int) -> EpochResult:
            return evaluate_digits_cnn(trained, split, epoch)

    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
        evaluate(model, epoch)
    return model


def evaluate_digits_cnn(model: nn.Module, split: DigitsSplit, epoch: int) -> EpochResult:
    """Compute the validation loss, accuracy and predictions of ``model`` in one forward pass."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(split.validation_images))
        labels = torch.from_numpy(split.validation_labels)
        loss = nn.functional.cross_entropy(logits, labels).item()
    predictions = logits.argmax(dim=1).numpy()
    accuracy = float((predictions == split.validation_labels).mean())
    return EpochResult(epoch, loss, accuracy, predictions)


def sprite_images(images: np.ndarray) -> np.ndarray:
    """Turn (n, 1, 8, 8) digit intensities into (n, 8, 8) thumbnails with dark ink on white."""
    return (1.0 - images[:, 0]).astype(np.float32)


def default_logdir() -> Path:
    """Return ``./runs/latentlens-demo``, the folder the demo writes to when none is given."""
    return Path("runs") / "latentlens-demo"


@dataclass(frozen=True)
class DemoSummary:
    """Result of the demo: its run location, the validation figures and every map.

    ``layouts`` maps ``(layer, epoch)`` to the (450, 2) UMAP coordinates written as bookmarks.
    """

    logdir: Path
    run: str
    epochs: list[EpochResult]
    layers: tuple[str, ...]
    layouts: dict[tuple[str, int], np.ndarray]


def run_demo(
    logdir: str | Path,
    *,
    epochs: int = 8,
    seed: int = 0,
    n_neighbors: int = 15,
    model: DigitsCNN | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> DemoSummary:
    """Train the digits CNN and publish both demo layers to TensorBoard after every epoch.

    Each epoch, the validation images go through the model with the hooks on. Their activations
    are projected with latentlens' UMAP, scored against the first epoch and written to
    ``logdir/digits`` with the columns label, predicted, correct and epoch, the digit images as a
    sprite and the map as a bookmark. Validation loss and accuracy are written as scalars.

    Parameters
    ----------
    logdir : str or Path
        TensorBoard log directory; the run folder ``digits`` is created inside it.
    epochs : int, default=8
    seed : int, default=0
        Seed of the split, the weights, the batch order and the maps.
    n_neighbors : int, default=15
        UMAP neighbourhood size.
    model : DigitsCNN, optional
        Model to train; a new seeded one by default.
    on_epoch : callable, optional
        Called with each :class:`EpochResult` after the epoch is published (progress display).

    Returns
    -------
    DemoSummary

    Raises
    ------
    ValueError
        If ``epochs`` is not a positive integer.
    """
    from latentlens.lens import LatentLens

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    split = load_digits_split(seed)
    if model is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = DigitsCNN()
    thumbnails = sprite_images(split.validation_images)
    results: list[EpochResult] = []
    layouts: dict[tuple[str, int], np.ndarray] = {}
    run = "digits"

    lens = LatentLens(
        model,
        list(DEMO_LAYERS),
        logdir=logdir,
        run=run,
        n_neighbors=n_neighbors,
        random_state=seed,
        step_column="epoch",
        # The 450 validation images contain about 45 per digit, fewer than the default 50.
        min_class_size=30,
    )

    def evaluate_and_publish(trained: DigitsCNN, epoch: int) -> EpochResult:
        with lens.record(
            step=epoch, labels=split.validation_labels, images=thumbnails, split="validation"
        ):
            result = evaluate_digits_cnn(trained, split, epoch)
        correct = np.where(result.predictions == split.validation_labels, "yes", "no")
        reports = lens.publish(
            epoch, metadata={"predicted": result.predictions, "correct": correct}
        )
        for layer, report in reports.items():
            if report.layout is not None:
                layouts[(layer, epoch)] = report.layout
        lens.writer.add_scalar("validation/loss", result.validation_loss, step=epoch)
        lens.writer.add_scalar("validation/accuracy", result.validation_accuracy, step=epoch)
        lens.writer.flush()
        logger.info(
            "epoch %d: validation loss %.4f, accuracy %.4f",
            epoch,
            result.validation_loss,
            result.validation_accuracy,
        )
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
        return result

    with lens:
        train_digits_cnn(
            split, epochs=epochs, seed=seed, model=model, evaluate=evaluate_and_publish
        )
    return DemoSummary(Path(logdir), run, results, DEMO_LAYERS, layouts)
