"""UMAP fuzzy cross-entropy for a network, and the edge sampler that feeds it.

Symbols, as in the UMAP paper (McInnes, Healy, Melville 2018):

- ``a``, ``b``: parameters of the low-dimensional membership curve
  ``q(d) = 1 / (1 + a * d^(2b))``, fitted from ``spread`` and ``min_dist``.
- ``w_ij``: weight of edge ``(i, j)`` in the symmetric fuzzy graph.
- ``eps``: a small constant added to the squared distance before the power,
  so ``d^(2b)`` becomes ``(d^2 + eps)^b``. With it, two rows mapped to the
  same point (duplicates, or an encoder that collapses them) give a finite
  loss and a finite gradient, where ``d^(2b)`` alone would give ``0 ** b``
  and a ``0 / 0`` in the gradient of the norm.

The loss is evaluated in log space. With ``z = log(a) + b * log(d^2 + eps)``,
``-log q = softplus(z)`` and ``-log(1 - q) = softplus(-z)``; neither overflows
nor takes the log of 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

DISTANCE_EPS = 1e-4
"""Default ``eps`` added to squared distances inside the power ``(d^2 + eps)^b``."""

NEGATIVE_SAMPLING_MODES = ("uniform", "degree")


def _log_a_d2b(squared_distance: torch.Tensor, a: float, b: float, eps: float) -> torch.Tensor:
    """Return ``log(a * (d^2 + eps)^b)`` elementwise."""
    return math.log(a) + b * torch.log(squared_distance + eps)


def umap_cross_entropy(
    head: torch.Tensor,
    tail: torch.Tensor,
    negatives: torch.Tensor,
    *,
    a: float,
    b: float,
    repulsion_strength: float = 1.0,
    eps: float = DISTANCE_EPS,
) -> torch.Tensor:
    """Compute the sampled UMAP cross-entropy of a batch of edges.

    Each positive edge ``(head, tail)`` was drawn with probability proportional
    to its graph weight, so it enters with weight 1. Each head is paired with
    ``m`` negative samples, which are treated as weight-0 edges.

    For one edge the loss is ``-log q(d_ht) - repulsion_strength * sum_k log(1 - q(d_hk))``
    with ``q(d) = 1 / (1 + a * (d^2 + eps)^b)``; the batch loss is the mean over edges.

    Parameters
    ----------
    head, tail : torch.Tensor of shape (n_edges, n_components)
        Embedded end points of the positive edges.
    negatives : torch.Tensor of shape (n_edges, m, n_components)
        Embedded negative samples for each head; ``m`` may be 0.
    a, b : float
        Parameters of the membership curve; ``a > 0``, ``b > 0``.
    repulsion_strength : float, default=1.0
        Weight of the negative-sample term.
    eps : float, default=1e-4
        Added to squared distances before the power; must be ``>= 0``. With
        ``eps=0`` duplicate points give an infinite repulsion term.

    Returns
    -------
    torch.Tensor
        Scalar loss, same dtype and device as ``head``.

    Examples
    --------
    >>> import torch
    >>> head, tail = torch.zeros(4, 2), torch.ones(4, 2)
    >>> negatives = torch.full((4, 5, 2), 3.0)
    >>> loss = umap_cross_entropy(head, tail, negatives, a=1.577, b=0.895)
    >>> bool(torch.isfinite(loss))
    True
    """
    positive_d2 = (head - tail).square().sum(dim=-1)
    attraction = F.softplus(_log_a_d2b(positive_d2, a, b, eps))

    negative_d2 = (head.unsqueeze(1) - negatives).square().sum(dim=-1)
    repulsion = F.softplus(-_log_a_d2b(negative_d2, a, b, eps)).sum(dim=1)

    return (attraction + repulsion_strength * repulsion).mean()


@dataclass(frozen=True)
class EdgeBatch:
    """Row indices to encode for one training step, and where each role sits among them.

    ``rows`` holds unique indices into the training data; the ``*_positions`` arrays
    index ``rows`` (and so the encoder output), so every row is encoded once per step
    even when it serves as a head, a tail and a negative.
    """

    rows: np.ndarray  # (n_rows,) int64 indices into the training data
    head_positions: np.ndarray  # (n_edges,)
    tail_positions: np.ndarray  # (n_edges,)
    negative_positions: np.ndarray  # (n_edges, negative_sample_rate)


class EdgeSampler:
    """Draw batches of graph edges in proportion to their weight, with negative samples.

    One epoch draws ``round(sum of edge weights)`` edges with replacement, each edge
    ``(i, j)`` with probability ``w_ij / sum(w)``. Non-parametric UMAP, which visits
    edge ``(i, j)`` ``w_ij / max(w)`` times per epoch with ``max(w) = 1``, makes the
    same number of updates per epoch in expectation.

    Negative samples, ``negative_sample_rate`` per edge:

    - ``"uniform"``: rows drawn uniformly from all vertices, as in non-parametric
      UMAP. Each batch encodes one pool of ``n_edges`` uniform rows, and each head
      takes its negatives from that pool.
    - ``"degree"``: tails of other edges in the same batch, so negatives follow the
      weighted degree of the vertices (the choice of umap-learn's ParametricUMAP).
      No extra rows are encoded.

    Parameters
    ----------
    graph : scipy.sparse matrix of shape (n_samples, n_samples)
        Symmetric fuzzy graph; entries ``> 0`` are edges. Both directions of each
        pair are kept, so every vertex serves as a head in proportion to its degree.
    batch_size : int
        Edges per batch.
    negative_sample_rate : int
        Negative samples per edge.
    negative_sampling : {"uniform", "degree"}
        Distribution of the negative samples.
    rng : numpy.random.Generator
        Source of all randomness.
    """

    def __init__(
        self,
        graph: scipy.sparse.spmatrix,
        *,
        batch_size: int,
        negative_sample_rate: int,
        negative_sampling: str,
        rng: np.random.Generator,
    ) -> None:
        if negative_sampling not in NEGATIVE_SAMPLING_MODES:
            raise ValueError(
                f"negative_sampling={negative_sampling!r} is not supported; "
                f"use one of {NEGATIVE_SAMPLING_MODES}."
            )
        coo = scipy.sparse.coo_matrix(graph)
        keep = coo.data > 0
        if not np.any(keep):
            raise ValueError(
                "the fuzzy graph has no edge with positive weight; cannot train on it."
            )

        self.n_vertices = coo.shape[0]
        self.heads = coo.row[keep].astype(np.int64)
        self.tails = coo.col[keep].astype(np.int64)
        weights = coo.data[keep].astype(np.float64)
        self.probabilities = weights / weights.sum()
        self.edges_per_epoch = max(1, int(round(weights.sum())))

        self.batch_size = int(batch_size)
        self.negative_sample_rate = int(negative_sample_rate)
        self.negative_sampling = negative_sampling
        self.rng = rng

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.edges_per_epoch // self.batch_size)

    def epoch(self) -> Iterator[EdgeBatch]:
        """Yield the batches of one epoch."""
        edges = self.rng.choice(self.heads.size, size=self.edges_per_epoch, p=self.probabilities)
        for start in range(0, edges.size, self.batch_size):
            yield self._batch(edges[start : start + self.batch_size])

    def _batch(self, edges: np.ndarray) -> EdgeBatch:
        n_edges = edges.size
        heads = self.heads[edges]
        tails = self.tails[edges]
        head_positions = np.arange(n_edges)
        tail_positions = np.arange(n_edges, 2 * n_edges)

        # Both modes pick negatives among n_edges candidate rows placed after heads and tails.
        picks = self.rng.integers(0, n_edges, size=(n_edges, self.negative_sample_rate))
        if self.negative_sampling == "uniform":
            pool = self.rng.integers(0, self.n_vertices, size=n_edges)
            rows = np.concatenate([heads, tails, pool])
            negative_positions = 2 * n_edges + picks
        else:
            rows = np.concatenate([heads, tails])
            negative_positions = n_edges + picks

        # A row drawn several times in one batch is encoded once; with batches larger
        # than about a third of the data, every step encodes each vertex at most once.
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        return EdgeBatch(
            unique_rows,
            inverse[head_positions],
            inverse[tail_positions],
            inverse[negative_positions],
        )
