"""Pooling modes against per-row numpy oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latentlens.capture.pooling import pool, resolve_pooling


def _padded_batch(padding_side: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    lengths = [5, 2, 7, 1]
    tokens = 7
    values = torch.randn(len(lengths), tokens, 3, generator=generator)
    mask = torch.zeros(len(lengths), tokens, dtype=torch.long)
    for row, length in enumerate(lengths):
        if padding_side == "right":
            mask[row, :length] = 1
        else:
            mask[row, tokens - length :] = 1
    return values, mask


def _real_tokens(values: torch.Tensor, mask: torch.Tensor, row: int) -> np.ndarray:
    return values[row].double().numpy()[mask[row].numpy() == 1]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_mean_ignores_padding(padding_side):
    values, mask = _padded_batch(padding_side)
    pooled = pool(values, "mean", mask, None, "layer").values
    for row in range(len(values)):
        expected = _real_tokens(values, mask, row).mean(axis=0)
        np.testing.assert_allclose(pooled[row].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_first_and_last_real_token(padding_side):
    values, mask = _padded_batch(padding_side)
    first = pool(values, "first", mask, None, "layer").values
    last = pool(values, "last", mask, None, "layer").values
    cls = pool(values, "cls", mask, None, "layer").values
    for row in range(len(values)):
        real = _real_tokens(values, mask, row)
        np.testing.assert_array_equal(first[row].numpy(), real[0].astype(np.float32))
        np.testing.assert_array_equal(last[row].numpy(), real[-1].astype(np.float32))
    np.testing.assert_array_equal(cls.numpy(), first.numpy())


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_max_ignores_padding(padding_side):
    values, mask = _padded_batch(padding_side)
    values = values + 0.0
    # Padding positions carry the largest values, so a max that reads them fails.
    values[mask == 0] = 100.0
    pooled = pool(values, "max", mask, None, "layer").values
    for row in range(len(values)):
        expected = _real_tokens(values, mask, row).max(axis=0)
        np.testing.assert_allclose(pooled[row].numpy(), expected)


def test_none_gives_token_rows_with_positions():
    values, mask = _padded_batch("left")
    pooled = pool(values, "none", mask, None, "layer")
    assert len(pooled.values) == int(mask.sum())
    for value, sample, token in zip(pooled.values, pooled.sample, pooled.token, strict=True):
        assert mask[sample, token] == 1
        np.testing.assert_array_equal(value.numpy(), values[sample, token].numpy())


def test_none_without_mask_keeps_all_tokens():
    values = torch.randn(2, 3, 4)
    pooled = pool(values, "none", None, None, "layer")
    assert pooled.sample.tolist() == [0, 0, 0, 1, 1, 1]
    assert pooled.token.tolist() == [0, 1, 2, 0, 1, 2]


def test_mean_without_mask_averages_all_tokens():
    values = torch.randn(3, 4, 5)
    pooled = pool(values, "auto", None, None, "layer").values
    np.testing.assert_allclose(pooled.numpy(), values.numpy().mean(axis=1), atol=1e-6)


def test_longer_mask_uses_its_last_columns():
    # With a key-value cache the mask covers past and current tokens.
    values = torch.randn(2, 1, 3)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    pooled = pool(values, "mean", mask, None, "layer").values
    np.testing.assert_allclose(pooled.numpy(), values[:, 0].numpy(), atol=1e-7)


@pytest.mark.parametrize("mask_tokens", [2, 6])
def test_mismatched_mask_warns_and_is_ignored(mask_tokens):
    values = torch.randn(2, 4, 3)
    mask = torch.zeros(2, mask_tokens)
    with pytest.warns(UserWarning, match=f"covers {mask_tokens} tokens but the output has 4"):
        pooled = pool(values, "mean", mask, None, "layer").values
    np.testing.assert_allclose(pooled.numpy(), values.numpy().mean(axis=1), atol=1e-6)


def test_conv_map_spatial_mean_and_max():
    values = torch.randn(2, 3, 4, 5)
    auto = pool(values, "auto", None, None, "conv").values
    np.testing.assert_allclose(auto.numpy(), values.numpy().mean(axis=(2, 3)), atol=1e-6)
    maximum = pool(values, "max", None, None, "conv").values
    np.testing.assert_array_equal(maximum.numpy(), values.numpy().max(axis=(2, 3)))
    flat = pool(values, "flatten", None, None, "conv").values
    np.testing.assert_array_equal(flat.numpy(), values.numpy().reshape(2, -1))


def test_conv_map_none_gives_one_row_per_position():
    values = torch.randn(2, 3, 2, 2)
    pooled = pool(values, "none", None, None, "conv")
    assert pooled.values.shape == (8, 3)
    np.testing.assert_array_equal(pooled.values[5].numpy(), values[1, :, 0, 1].numpy())
    assert int(pooled.sample[5]) == 1
    assert int(pooled.token[5]) == 1


def test_auto_resolution_per_shape():
    assert resolve_pooling("auto", 1, None) == "flatten"
    assert resolve_pooling("auto", 2, nn.Linear(2, 2)) == "identity"
    assert resolve_pooling("auto", 3, nn.Linear(2, 2)) == "mean"
    assert resolve_pooling("auto", 3, nn.Conv1d(2, 2, 1)) == "spatial_mean"
    assert resolve_pooling("auto", 4, nn.Conv2d(2, 2, 1)) == "spatial_mean"
    assert resolve_pooling("auto", 5, None) == "spatial_mean"
    assert resolve_pooling("cls", 3, None) == "first"


def test_conv1d_auto_pools_over_length():
    values = torch.randn(2, 4, 6)
    pooled = pool(values, "auto", None, nn.Conv1d(4, 4, 1), "conv1d").values
    np.testing.assert_allclose(pooled.numpy(), values.numpy().mean(axis=2), atol=1e-6)


def test_token_modes_reject_conv_maps():
    with pytest.raises(ValueError, match="pooling='last' needs a \\(batch, tokens, features\\)"):
        pool(torch.randn(2, 3, 4, 4), "last", None, None, "conv")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_mean_accumulates_in_float32(dtype):
    values, mask = _padded_batch("right")
    pooled = pool(values.to(dtype), "mean", mask, None, "layer").values
    assert pooled.dtype == torch.float32
    rounded = values.to(dtype).double()
    for row in range(len(values)):
        expected = _real_tokens(rounded, mask, row).mean(axis=0)
        np.testing.assert_allclose(pooled[row].numpy(), expected, atol=1e-6)
