"""Training loops of ParametricUMAP: regression onto a given layout, then the UMAP loss."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from latentlens.umap.parametric_loss import EdgeSampler, umap_cross_entropy

logger = logging.getLogger(__name__)

GRADIENT_CLIP_NORM = 4.0
"""Maximum global gradient norm per step; guards against spikes from near-duplicate points."""

FINAL_LEARNING_RATE_FRACTION = 0.1
"""The learning rate decays linearly from ``learning_rate`` to this fraction of it."""


@dataclass
class LossWeights:
    """Constants of the UMAP loss and of the reconstruction term."""

    a: float
    b: float
    repulsion_strength: float
    reconstruction_weight: float
    x_scale: float  # global scale of the training rows; reconstruction error is measured in it
    input_noise: float = 0.0  # std of the Gaussian noise added to inputs, in units of x_scale


def _make_optimizer(
    modules: list[nn.Module], learning_rate: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    steps = max(1, total_steps)

    def decay(step: int) -> float:
        return 1.0 - (1.0 - FINAL_LEARNING_RATE_FRACTION) * min(step, steps) / steps

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, decay)


def _step(optimizer: torch.optim.Optimizer, modules: list[nn.Module], loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # Clipped per network, so a decoder's gradient never rescales the encoder's step.
    for module in modules:
        torch.nn.utils.clip_grad_norm_(module.parameters(), GRADIENT_CLIP_NORM)
    optimizer.step()


def _gather(X: torch.Tensor, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    index = torch.from_numpy(rows).to(X.device)
    return X.index_select(0, index).to(device, non_blocking=True)


def _add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """Return ``x`` plus Gaussian noise of standard deviation ``std`` (``x`` itself when 0)."""
    if std <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + std * noise


def make_generator(rng: np.random.Generator, device: torch.device) -> torch.Generator:
    """Return a torch generator on ``device`` seeded from ``rng``, for the input noise."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(rng.integers(2**62)))
    return generator


def regress_onto_layout(
    encoder: nn.Module,
    X: torch.Tensor,
    layout: torch.Tensor,
    *,
    n_epochs: int,
    batch_size: int,
    learning_rate: float,
    rng: np.random.Generator,
    device: torch.device,
    verbose: bool,
    noise_std: float = 0.0,
) -> list[float]:
    """Fit ``encoder(X)`` to ``layout`` by mean squared error; return the mean loss per epoch.

    ``X`` (n_samples, ...) may sit on the CPU; ``layout`` (n_samples, n_components) is on
    ``device``.
    """
    n_samples = X.shape[0]
    batches_per_epoch = -(-n_samples // batch_size)
    optimizer, scheduler = _make_optimizer([encoder], learning_rate, n_epochs * batches_per_epoch)
    encoder.train()
    generator = make_generator(rng, device)
    history: list[float] = []

    progress = tqdm(range(n_epochs), desc="ParametricUMAP init", unit="epoch", disable=not verbose)
    for epoch in progress:
        order = rng.permutation(n_samples)
        total = torch.zeros((), device=device)
        for start in range(0, n_samples, batch_size):
            rows = order[start : start + batch_size]
            prediction = encoder(_add_noise(_gather(X, rows, device), noise_std, generator))
            target = layout.index_select(0, torch.from_numpy(rows).to(device))
            loss = (prediction - target).square().sum(dim=1).mean()
            _step(optimizer, [encoder], loss)
            scheduler.step()
            total += loss.detach()

        history.append(float(total) / batches_per_epoch)
        progress.set_postfix(loss=f"{history[-1]:.4f}")
        logger.info(
            "init epoch %d/%d: layout regression loss %.6f", epoch + 1, n_epochs, history[-1]
        )
    return history


def train_umap_loss(
    encoder: nn.Module,
    decoder: nn.Module | None,
    X: torch.Tensor,
    sampler: EdgeSampler,
    weights: LossWeights,
    *,
    n_epochs: int,
    learning_rate: float,
    device: torch.device,
    verbose: bool,
    rng: np.random.Generator,
) -> list[float]:
    """Train on the sampled UMAP loss (plus reconstruction); return the mean loss per epoch.

    The encoder sees its inputs with noise (``weights.input_noise``); the decoder is
    scored against the clean rows, as in a denoising autoencoder. With a decoder and
    ``reconstruction_weight == 0`` the decoder still learns to
    invert the embedding, on detached codes, so the encoder sees no gradient from it.
    """
    modules = [encoder] if decoder is None else [encoder, decoder]
    optimizer, scheduler = _make_optimizer(
        modules, learning_rate, n_epochs * sampler.batches_per_epoch
    )
    for module in modules:
        module.train()
    generator = make_generator(rng, device)
    noise_std = weights.input_noise * weights.x_scale
    history: list[float] = []

    progress = tqdm(range(n_epochs), desc="ParametricUMAP", unit="epoch", disable=not verbose)
    for epoch in progress:
        total_umap = torch.zeros((), device=device)
        total_reconstruction = torch.zeros((), device=device)
        for batch in sampler.epoch():
            x = _gather(X, batch.rows, device)
            z = encoder(_add_noise(x, noise_std, generator))
            heads, tails, negatives = (
                torch.from_numpy(p).to(device)
                for p in (batch.head_positions, batch.tail_positions, batch.negative_positions)
            )
            # index_select has a cheaper backward (index_add) than advanced indexing.
            loss = umap_cross_entropy(
                z.index_select(0, heads),
                z.index_select(0, tails),
                z.index_select(0, negatives.reshape(-1)).view(*negatives.shape, -1),
                a=weights.a,
                b=weights.b,
                repulsion_strength=weights.repulsion_strength,
            )
            total_umap += loss.detach()

            if decoder is not None:
                coupled = weights.reconstruction_weight > 0
                reconstruction = decoder(z if coupled else z.detach())
                error = ((reconstruction - x) / weights.x_scale).square().mean()
                loss = loss + (weights.reconstruction_weight if coupled else 1.0) * error
                total_reconstruction += error.detach()

            _step(optimizer, modules, loss)
            scheduler.step()

        history.append(float(total_umap) / sampler.batches_per_epoch)
        progress.set_postfix(loss=f"{history[-1]:.4f}")
        if decoder is None:
            logger.info("epoch %d/%d: UMAP loss %.6f", epoch + 1, n_epochs, history[-1])
        else:
            logger.info(
                "epoch %d/%d: UMAP loss %.6f, reconstruction error %.6f",
                epoch + 1,
                n_epochs,
                history[-1],
                float(total_reconstruction) / sampler.batches_per_epoch,
            )
    return history
