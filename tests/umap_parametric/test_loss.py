"""UMAP cross-entropy and edge sampler of ParametricUMAP, checked against numpy oracles."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

from latentlens.umap.parametric_loss import EdgeSampler, umap_cross_entropy

A, B = 1.577, 0.895


def numpy_cross_entropy(points, heads, tails, negatives, *, a, b, eps, repulsion_strength=1.0):
    """Direct float64 evaluation of the sampled UMAP cross-entropy, with no log-space tricks."""

    def q(i, j):
        squared = float(np.sum((points[i] - points[j]) ** 2))
        return 1.0 / (1.0 + a * (squared + eps) ** b)

    per_edge = []
    for edge, (i, j) in enumerate(zip(heads, tails, strict=True)):
        attraction = -np.log(q(i, j))
        repulsion = -sum(np.log(1.0 - q(i, k)) for k in negatives[edge])
        per_edge.append(attraction + repulsion_strength * repulsion)
    return float(np.mean(per_edge))


def torch_cross_entropy(points, heads, tails, negatives, **kwargs):
    z = torch.as_tensor(points, dtype=torch.float64)
    return umap_cross_entropy(
        z[torch.as_tensor(heads)],
        z[torch.as_tensor(tails)],
        z[torch.as_tensor(negatives)],
        **kwargs,
    )


@pytest.fixture
def small_graph():
    """Five points in 2-D, the edges of a small graph and two negatives per edge."""
    points = np.array([[0.0, 0.0], [0.5, 0.1], [2.0, -1.0], [-1.5, 0.7], [3.0, 3.0]])
    heads = np.array([0, 1, 2, 3, 0, 4])
    tails = np.array([1, 0, 3, 2, 2, 1])
    negatives = np.array([[4, 3], [2, 4], [0, 1], [4, 4], [3, 1], [0, 2]])
    return points, heads, tails, negatives


@pytest.mark.parametrize("eps", [1e-4, 0.0, 0.3])
@pytest.mark.parametrize("repulsion_strength", [1.0, 0.25])
def test_loss_matches_numpy(small_graph, eps, repulsion_strength):
    points, heads, tails, negatives = small_graph
    expected = numpy_cross_entropy(
        points, heads, tails, negatives, a=A, b=B, eps=eps, repulsion_strength=repulsion_strength
    )
    got = torch_cross_entropy(
        points, heads, tails, negatives, a=A, b=B, eps=eps, repulsion_strength=repulsion_strength
    )
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_loss_without_negatives(small_graph):
    points, heads, tails, _ = small_graph
    no_negatives = np.zeros((heads.size, 0), dtype=np.int64)
    expected = numpy_cross_entropy(points, heads, tails, no_negatives, a=A, b=B, eps=1e-4)
    got = torch_cross_entropy(points, heads, tails, no_negatives, a=A, b=B, eps=1e-4)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_loss_gradient_matches_finite_differences(small_graph):
    points, heads, tails, negatives = small_graph
    z = torch.tensor(points, dtype=torch.float64, requires_grad=True)

    def loss(embedding):
        return umap_cross_entropy(
            embedding[heads], embedding[tails], embedding[negatives], a=A, b=B
        )

    assert torch.autograd.gradcheck(loss, (z,), eps=1e-6, atol=1e-7)


def test_duplicates_give_finite_loss_and_gradient():
    # Every point of the batch sits at the same place: zero distances everywhere.
    z = torch.zeros(4, 2, requires_grad=True)
    heads = torch.tensor([0, 1, 2, 3])
    tails = torch.tensor([1, 0, 3, 2])
    negatives = torch.tensor([[2, 3], [3, 2], [0, 1], [1, 0]])
    loss = umap_cross_entropy(z[heads], z[tails], z[negatives], a=A, b=B)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all()


def test_near_duplicates_give_finite_gradient():
    z = torch.tensor([[0.0, 0.0], [1e-20, 0.0], [0.0, 1e-30]], requires_grad=True)
    loss = umap_cross_entropy(z[0:1], z[1:2], z[1:3].unsqueeze(0), a=A, b=B)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all()


def test_far_points_give_finite_loss():
    z = torch.tensor([[0.0, 0.0], [1e18, 0.0]], dtype=torch.float32, requires_grad=True)
    loss = umap_cross_entropy(z[0:1], z[1:2], z[1:2].unsqueeze(0), a=A, b=B)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all()


def weighted_graph(n_vertices=12, seed=0):
    rng = np.random.default_rng(seed)
    dense = np.triu(rng.uniform(0.05, 1.0, size=(n_vertices, n_vertices)), k=1)
    dense[rng.uniform(size=dense.shape) < 0.6] = 0.0
    dense = dense + dense.T
    return scipy.sparse.csr_matrix(dense)


def test_sampler_draws_edges_in_proportion_to_weight():
    graph = weighted_graph()
    sampler = EdgeSampler(
        graph,
        batch_size=64,
        negative_sample_rate=3,
        negative_sampling="uniform",
        rng=np.random.default_rng(1),
    )
    assert sampler.edges_per_epoch == int(round(graph.sum()))

    counts = np.zeros(graph.shape)
    n_epochs = 400
    for _ in range(n_epochs):
        for batch in sampler.epoch():
            heads = batch.rows[batch.head_positions]
            tails = batch.rows[batch.tail_positions]
            np.add.at(counts, (heads, tails), 1)

    dense = graph.toarray()
    total = counts.sum()
    assert total == n_epochs * sampler.edges_per_epoch
    assert np.all(counts[dense == 0] == 0)
    expected = dense / dense.sum() * total
    edges = dense > 0
    # Multinomial counts: each is within 5 standard deviations of its mean.
    deviation = np.abs(counts[edges] - expected[edges]) / np.sqrt(expected[edges])
    assert deviation.max() < 5.0


def test_sampler_uniform_negatives_cover_vertices_evenly():
    graph = weighted_graph(n_vertices=10, seed=3)
    sampler = EdgeSampler(
        graph,
        batch_size=32,
        negative_sample_rate=4,
        negative_sampling="uniform",
        rng=np.random.default_rng(2),
    )
    counts = np.zeros(graph.shape[0])
    for _ in range(300):
        for batch in sampler.epoch():
            assert batch.negative_positions.shape == (batch.head_positions.size, 4)
            np.add.at(counts, batch.rows[batch.negative_positions].ravel(), 1)

    expected = counts.sum() / counts.size
    # A pool row is picked by about 4 heads (Poisson), so a vertex count has variance
    # about expected * (1 + negative_sample_rate) rather than the multinomial expected.
    sigma = np.sqrt(expected * (1 + 4))
    assert np.abs(counts - expected).max() < 5 * sigma


def test_sampler_degree_negatives_are_batch_tails():
    graph = weighted_graph(seed=4)
    sampler = EdgeSampler(
        graph,
        batch_size=16,
        negative_sample_rate=5,
        negative_sampling="degree",
        rng=np.random.default_rng(3),
    )
    for batch in sampler.epoch():
        tails = set(batch.rows[batch.tail_positions].tolist())
        negatives = set(batch.rows[batch.negative_positions].ravel().tolist())
        assert negatives <= tails


def test_sampler_encodes_each_row_once_per_batch():
    graph = weighted_graph(seed=5)
    sampler = EdgeSampler(
        graph,
        batch_size=200,
        negative_sample_rate=5,
        negative_sampling="uniform",
        rng=np.random.default_rng(4),
    )
    batch = next(sampler.epoch())
    assert np.array_equal(batch.rows, np.unique(batch.rows))
    assert batch.rows.size <= graph.shape[0]


def test_sampler_is_repeatable_with_a_seed():
    graph = weighted_graph(seed=6)

    def draw(seed):
        sampler = EdgeSampler(
            graph,
            batch_size=8,
            negative_sample_rate=2,
            negative_sampling="uniform",
            rng=np.random.default_rng(seed),
        )
        return [batch.rows[batch.negative_positions] for batch in sampler.epoch()]

    first, second = draw(7), draw(7)
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def test_sampler_rejects_graph_without_edges():
    with pytest.raises(ValueError, match="no edge with positive weight"):
        EdgeSampler(
            scipy.sparse.csr_matrix((4, 4)),
            batch_size=8,
            negative_sample_rate=2,
            negative_sampling="uniform",
            rng=np.random.default_rng(0),
        )


def test_sampler_rejects_unknown_negative_sampling():
    with pytest.raises(ValueError, match="negative_sampling='random' is not supported"):
        EdgeSampler(
            weighted_graph(),
            batch_size=8,
            negative_sample_rate=2,
            negative_sampling="random",
            rng=np.random.default_rng(0),
        )
