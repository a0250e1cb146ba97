"""ParametricUMAP: a PyTorch network trained on the UMAP fuzzy graph.

The network f(x) maps rows to the embedding, so new rows are projected by one
forward pass, with no nearest-neighbour search and no optimisation per point.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator
from torch import nn

from latentlens.umap.parametric_io import load_state_checked, read_model, save_model
from latentlens.umap.parametric_loss import NEGATIVE_SAMPLING_MODES, EdgeSampler
from latentlens.umap.parametric_nets import (
    DEFAULT_HIDDEN_SIZES,
    MLPDecoder,
    MLPEncoder,
    build_from_spec,
    describe_module,
)
from latentlens.umap.parametric_train import LossWeights, regress_onto_layout, train_umap_loss

logger = logging.getLogger(__name__)

__all__ = ["ParametricUMAP"]

# Parameters written to the saved config; the networks, the device and an array
# init_layout are saved apart or not at all.
_SAVED_PARAMS = (
    "n_neighbors",
    "n_components",
    "metric",
    "min_dist",
    "spread",
    "negative_sample_rate",
    "repulsion_strength",
    "local_connectivity",
    "set_op_mix_ratio",
    "random_state",
    "verbose",
    "hidden_sizes",
    "reconstruction_weight",
    "input_noise",
    "negative_sampling",
    "batch_size",
    "n_training_epochs",
    "n_init_epochs",
    "learning_rate",
    "transform_batch_size",
)


# Default training lengths, counted in optimizer steps: a network needs a number of
# steps whatever the data size, while one epoch of a small graph is a few batches.
TRAINING_STEPS = 2000
REFINE_STEPS = 500
INIT_STEPS = 1000
MIN_TRAINING_EPOCHS = 5
MIN_INIT_EPOCHS = 10
MAX_DEFAULT_EPOCHS = 500

# Training rows up to this size are copied to the GPU once; NOTE: the bound is a
# guess that leaves room for the networks on a GPU of 8 GiB or more.
MAX_DEVICE_DATA_BYTES = 2 * 1024**3


def _epochs_for_steps(steps: int, batches_per_epoch: int, minimum: int) -> int:
    """Return the epochs that reach about ``steps`` optimizer steps, within [minimum, 500]."""
    return int(min(MAX_DEFAULT_EPOCHS, max(minimum, -(-steps // batches_per_epoch))))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name}={value!r} is invalid; expected {allowed}.")


def _check_real(name: str, value: Any, minimum: float, *, strict: bool) -> None:
    too_small = _is_real(value) and (value <= minimum if strict else value < minimum)
    if not _is_real(value) or too_small or not np.isfinite(value):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"{name}={value!r} is invalid; expected a finite number {bound}.")


def _resolve_device(device: Any) -> torch.device:
    """Return ``device`` as a torch.device; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device={device!r} is invalid; pass None, 'cpu', 'cuda', 'cuda:N' or a torch.device."
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available; pass device='cpu' or None."
        )
    return resolved


def _as_rows(X: Any, name: str = "X") -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 array of shape (n_samples, ...), checked finite."""
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu").numpy()
    if scipy.sparse.issparse(X):
        raise TypeError(
            f"{name} is a scipy sparse matrix; ParametricUMAP takes dense rows, use "
            f"{name}.toarray()."
        )
    try:
        rows = np.ascontiguousarray(X, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a numeric array-like of shape (n_samples, n_features); {error}"
        ) from error
    if rows.ndim < 2:
        raise ValueError(
            f"{name} has shape {rows.shape}; expected (n_samples, n_features) or (n_samples, ...) "
            f"for a custom encoder. Reshape a single row with {name}.reshape(1, -1)."
        )
    # NaN and inf survive any sum, so a finite sum proves every value finite. A sum of
    # large finite values can overflow, so a non-finite sum falls back to the full check.
    with np.errstate(over="ignore", invalid="ignore"):
        total = rows.sum()
    if np.isfinite(total):
        return rows
    finite = np.isfinite(rows)
    if not finite.all():
        bad_rows = np.flatnonzero((~finite.reshape(rows.shape[0], -1)).any(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad_rows.size} row(s), the first at "
            f"row {bad_rows[0]}; remove or impute them first."
        )
    return rows


class ParametricUMAP(BaseEstimator):
    """UMAP whose embedding is the output of a PyTorch network f(x).

    The network is trained on the same fuzzy graph as :class:`latentlens.UMAP`,
    with the UMAP fuzzy cross-entropy ``-log q(d_ij)`` on edges drawn in
    proportion to their weight and ``-log(1 - q(d_ik))`` on negative samples,
    where ``q(d) = 1 / (1 + a * (d^2 + eps)^b)``. After fitting, ``transform``
    is a forward pass: deterministic, with no graph building, and the same for
    a row whatever else is in the batch.

    Parameters
    ----------
    n_neighbors : int, default=15
        Size of the local neighbourhood used to build the graph; ``>= 2`` and
        smaller than the number of training rows.
    n_components : int, default=2
        Dimension of the embedding.
    metric : str, default="euclidean"
        Distance for the nearest-neighbour graph, as accepted by
        ``latentlens.umap.graph.nearest_neighbors``.
    min_dist, spread : float, default=0.1, 1.0
        Shape of the low-dimensional membership curve (``0 <= min_dist <= spread``).
    negative_sample_rate : int, default=5
        Negative samples per positive edge.
    repulsion_strength : float, default=1.0
        Weight of the negative-sample term in the loss.
    local_connectivity, set_op_mix_ratio : float, default=1.0, 1.0
        Graph construction settings, as in UMAP.
    random_state : int or None, default=None
        Seed for the graph, the network initialisation and the sampling. With
        an int, a fit on the CPU is repeatable.
    verbose : bool, default=False
        Show tqdm progress bars. The loss of every epoch is logged at INFO level
        on the ``latentlens.umap.parametric_train`` logger whatever this is.
    encoder : torch.nn.Module or None, default=None
        Network from rows (batch, ...) to (batch, n_components). None builds an
        MLP: per-feature centring and one global scale, then ``Linear + ReLU``
        for each of ``hidden_sizes``, then a linear map. A module given here is
        trained in place and kept as ``encoder_``.
    decoder : torch.nn.Module, "mlp" or None, default=None
        Network from the embedding back to rows, used by ``inverse_transform``.
        None builds the mirrored MLP only when ``reconstruction_weight > 0``;
        "mlp" always builds it.
    hidden_sizes : sequence of int, default=(100, 100, 100)
        Hidden widths of the default MLP encoder (and, reversed, decoder).
    reconstruction_weight : float, default=0.0
        Weight of the mean squared reconstruction error, measured in units of
        the global scale of the training rows. With 0, a decoder is still
        trained, on detached codes, and does not change the embedding.
    input_noise : float, default=0.5
        Standard deviation of the Gaussian noise added to the encoder's inputs
        during training, in units of the global scale of the training rows (the
        root mean feature variance). The noise makes f smooth around the training
        rows, so new rows land nearer their neighbours; 0 turns it off.
        ``transform`` never adds noise.
    negative_sampling : {"uniform", "degree"}, default="uniform"
        "uniform" draws negatives uniformly from the training rows, as
        non-parametric UMAP does; "degree" reuses tails of other edges in the
        batch, so negatives follow the vertex degree and cost no extra forward pass.
    device : str, torch.device or None, default=None
        Where to train and transform; None picks CUDA when available, else the CPU.
    batch_size : int, default=512
        Positive edges per training step.
    n_training_epochs : int or None, default=None
        Epochs of the UMAP loss. One epoch draws as many edges as the sum of the
        graph weights, which is the number of edge updates in one UMAP epoch. None
        chooses enough epochs for about 2,000 optimizer steps (500 after an
        ``init_layout``), at least 5 and at most 500.
    n_init_epochs : int or None, default=None
        Epochs of regression onto ``init_layout``, in batches of ``batch_size``
        rows; None chooses enough for about 1,000 steps, at least 10 and at most 500.
    learning_rate : float, default=3e-3
        Adam learning rate; it decays linearly to a tenth of this value.
    init_layout : array of shape (n_samples, n_components), "umap" or None, default=None
        Layout the encoder is first regressed onto before the UMAP loss
        refines it. "umap" fits :class:`latentlens.UMAP` with the same
        settings first, reuses its graph and regresses onto its ``embedding_``.
    transform_batch_size : int, default=2048
        Rows per forward pass in ``transform`` and ``inverse_transform``. The last
        batch is zero-padded to this size, so every row goes through a pass of
        the same shape, which keeps the output independent of the batch it came in.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components), float32
        ``transform`` of the training rows after fitting.
    graph_ : scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        Symmetric fuzzy graph the network was trained on.
    a_, b_ : float
        Parameters of the membership curve fitted from ``spread`` and ``min_dist``.
    encoder_, decoder_ : torch.nn.Module, torch.nn.Module or None
        Trained networks, on ``device_``.
    device_ : torch.device
        Device the networks are on.
    n_features_in_ : int
        Number of values in one training row.
    loss_history_ : list of float
        Mean sampled UMAP loss of each training epoch.
    init_loss_history_ : list of float
        Mean squared error of each regression epoch (empty without ``init_layout``).

    Notes
    -----
    ``save`` writes only the networks and the settings, not ``embedding_`` or
    ``graph_``, so a saved model holds no training rows. A loaded model has
    neither attribute.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X = load_digits().data[:300]
    >>> mapper = ParametricUMAP(n_training_epochs=2, random_state=0, device="cpu")
    >>> mapper.fit_transform(X).shape
    (300, 2)
    >>> mapper.transform(X[:5]).shape
    (5, 2)
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 15,
        n_components: int = 2,
        metric: str = "euclidean",
        min_dist: float = 0.1,
        spread: float = 1.0,
        negative_sample_rate: int = 5,
        repulsion_strength: float = 1.0,
        local_connectivity: float = 1.0,
        set_op_mix_ratio: float = 1.0,
        random_state: int | None = None,
        verbose: bool = False,
        encoder: nn.Module | None = None,
        decoder: nn.Module | str | None = None,
        hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
        reconstruction_weight: float = 0.0,
        input_noise: float = 0.5,
        negative_sampling: str = "uniform",
        device: str | torch.device | None = None,
        batch_size: int = 512,
        n_training_epochs: int | None = None,
        n_init_epochs: int | None = None,
        learning_rate: float = 3e-3,
        init_layout: np.ndarray | str | None = None,
        transform_batch_size: int = 2048,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.metric = metric
        self.min_dist = min_dist
        self.spread = spread
        self.negative_sample_rate = negative_sample_rate
        self.repulsion_strength = repulsion_strength
        self.local_connectivity = local_connectivity
        self.set_op_mix_ratio = set_op_mix_ratio
        self.random_state = random_state
        self.verbose = verbose
        self.encoder = encoder
        self.decoder = decoder
        self.hidden_sizes = hidden_sizes
        self.reconstruction_weight = reconstruction_weight
        self.input_noise = input_noise
        self.negative_sampling = negative_sampling
        self.device = device
        self.batch_size = batch_size
        self.n_training_epochs = n_training_epochs
        self.n_init_epochs = n_init_epochs
        self.learning_rate = learning_rate
        self.init_layout = init_layout
        self.transform_batch_size = transform_batch_size

    # ------------------------------------------------------------------ checks

    def _check_params(self) -> None:
        _check_int("n_neighbors", self.n_neighbors, 2)
        _check_int("n_components", self.n_components, 1)
        if not isinstance(self.metric, str):
            raise TypeError(
                f"metric={self.metric!r} is invalid; pass a metric name such as 'euclidean'."
            )
        _check_real("spread", self.spread, 0.0, strict=True)
        _check_real("min_dist", self.min_dist, 0.0, strict=False)
        if self.min_dist > self.spread:
            raise ValueError(
                f"min_dist={self.min_dist!r} is larger than spread={self.spread!r}; "
                "choose min_dist <= spread."
            )
        _check_int("negative_sample_rate", self.negative_sample_rate, 0)
        _check_real("repulsion_strength", self.repulsion_strength, 0.0, strict=False)
        _check_real("local_connectivity", self.local_connectivity, 0.0, strict=False)
        _check_real("set_op_mix_ratio", self.set_op_mix_ratio, 0.0, strict=False)
        if self.set_op_mix_ratio > 1:
            raise ValueError(
                f"set_op_mix_ratio={self.set_op_mix_ratio!r} is invalid; expected a "
                "number in [0, 1]."
            )
        if self.random_state is not None and (
            not _is_int(self.random_state) or self.random_state < 0
        ):
            raise ValueError(
                f"random_state={self.random_state!r} is invalid; expected None or an int >= 0."
            )
        if self.encoder is not None and not isinstance(self.encoder, nn.Module):
            raise TypeError(
                f"encoder={self.encoder!r} is invalid; pass a torch.nn.Module or None for "
                "the default MLP."
            )
        if not (
            self.decoder is None or self.decoder == "mlp" or isinstance(self.decoder, nn.Module)
        ):
            raise TypeError(
                f"decoder={self.decoder!r} is invalid; pass a torch.nn.Module, 'mlp' or None."
            )
        hidden = list(self.hidden_sizes) if isinstance(self.hidden_sizes, (list, tuple)) else None
        if hidden is None or not all(_is_int(h) and h >= 1 for h in hidden):
            raise ValueError(
                f"hidden_sizes={self.hidden_sizes!r} is invalid; expected a list or tuple "
                "of ints >= 1."
            )
        _check_real("reconstruction_weight", self.reconstruction_weight, 0.0, strict=False)
        _check_real("input_noise", self.input_noise, 0.0, strict=False)
        if self.negative_sampling not in NEGATIVE_SAMPLING_MODES:
            raise ValueError(
                f"negative_sampling={self.negative_sampling!r} is invalid; expected one "
                f"of {NEGATIVE_SAMPLING_MODES}."
            )
        _check_int("batch_size", self.batch_size, 1)
        _check_int("n_training_epochs", self.n_training_epochs, 0, optional=True)
        _check_int("n_init_epochs", self.n_init_epochs, 0, optional=True)
        _check_real("learning_rate", self.learning_rate, 0.0, strict=True)
        _check_int("transform_batch_size", self.transform_batch_size, 1)
        if isinstance(self.init_layout, str) and self.init_layout != "umap":
            raise ValueError(
                f"init_layout={self.init_layout!r} is invalid; expected None, 'umap' or an array "
                "of shape (n_samples, n_components)."
            )

    def _check_layout(self, n_samples: int) -> np.ndarray | None:
        if self.init_layout is None or isinstance(self.init_layout, str):
            return None
        layout = _as_rows(self.init_layout, "init_layout")
        if layout.shape != (n_samples, self.n_components):
            raise ValueError(
                f"init_layout has shape {layout.shape}; expected (n_samples, n_components) = "
                f"({n_samples}, {self.n_components})."
            )
        return layout

    # ------------------------------------------------------------------- fit

    def fit(self, X: Any, y: Any = None) -> ParametricUMAP:
        """Build the fuzzy graph of ``X`` and train the encoder on it.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features), or (n_samples, ...)
            Training rows; converted to float32. Shapes other than 2-D need a
            custom ``encoder``; the graph is then built on the flattened rows.
        y : ignored

        Returns
        -------
        ParametricUMAP
            The fitted estimator.

        Raises
        ------
        ValueError
            If a setting is out of range, ``X`` contains NaN or infinity, has no more
            rows than ``n_neighbors``, or does not fit the encoder.
        TypeError
            If ``X``, ``encoder`` or ``decoder`` has an unsupported type.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 8))
        >>> ParametricUMAP(n_training_epochs=1, device="cpu").fit(X).embedding_.shape
        (200, 2)
        """
        self._check_params()
        rows = _as_rows(X)
        n_samples = rows.shape[0]
        if n_samples <= self.n_neighbors:
            raise ValueError(
                f"X has {n_samples} rows but n_neighbors={self.n_neighbors}; "
                "pass more rows than n_neighbors, or lower n_neighbors."
            )
        if self.encoder is None and rows.ndim != 2:
            raise ValueError(
                f"X has shape {rows.shape}; the default MLP encoder takes (n_samples, n_features). "
                "Flatten the rows or pass a custom encoder."
            )
        layout = self._check_layout(n_samples)
        device = _resolve_device(self.device)

        rng = np.random.default_rng(self.random_state)
        torch_seed = int(rng.integers(2**62))
        flat = rows.reshape(n_samples, -1)
        encoder, decoder = self._build_networks(rows, torch_seed, device)

        if isinstance(self.init_layout, str) and self.init_layout == "umap":
            graph, layout = self._fit_reference_umap(flat)
        else:
            graph = self._build_graph(flat)
        from latentlens.umap.graph import find_ab_params

        a, b = find_ab_params(self.spread, self.min_dist)

        self.graph_ = graph
        self.a_, self.b_ = float(a), float(b)
        self.n_features_in_ = int(flat.shape[1])
        self._input_shape = tuple(int(s) for s in rows.shape[1:])
        self._x_scale = float(np.sqrt(flat.var(axis=0, dtype=np.float64).mean())) or 1.0
        self.encoder_, self.decoder_, self.device_ = encoder, decoder, device

        self._train(rows, layout, rng)
        self.embedding_ = self.transform(rows)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit on ``X`` and return ``embedding_``, of shape (n_samples, n_components), float32.

        See :meth:`fit` for the parameters and errors.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 8))
        >>> ParametricUMAP(n_training_epochs=1, device="cpu").fit_transform(X).dtype
        dtype('float32')
        """
        return self.fit(X).embedding_

    def _build_graph(self, flat: np.ndarray) -> scipy.sparse.csr_matrix:
        from latentlens.umap.graph import fuzzy_simplicial_set, nearest_neighbors

        indices, distances = nearest_neighbors(
            flat, self.n_neighbors, metric=self.metric, random_state=self.random_state
        )
        graph = fuzzy_simplicial_set(
            indices,
            distances,
            flat.shape[0],
            local_connectivity=self.local_connectivity,
            set_op_mix_ratio=self.set_op_mix_ratio,
        )
        return scipy.sparse.csr_matrix(graph)

    def _fit_reference_umap(self, flat: np.ndarray) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
        from latentlens.umap import UMAP

        reference = UMAP(
            n_neighbors=self.n_neighbors,
            n_components=self.n_components,
            metric=self.metric,
            min_dist=self.min_dist,
            spread=self.spread,
            negative_sample_rate=self.negative_sample_rate,
            repulsion_strength=self.repulsion_strength,
            local_connectivity=self.local_connectivity,
            set_op_mix_ratio=self.set_op_mix_ratio,
            random_state=self.random_state,
            verbose=self.verbose,
        ).fit(flat)
        return scipy.sparse.csr_matrix(reference.graph_), np.asarray(
            reference.embedding_, dtype=np.float32
        )

    def _build_networks(
        self, rows: np.ndarray, torch_seed: int, device: torch.device
    ) -> tuple[nn.Module, nn.Module | None]:
        n_features = int(np.prod(rows.shape[1:]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            if self.encoder is None:
                encoder = MLPEncoder(n_features, self.n_components, self.hidden_sizes)
                encoder[0].fit(rows)
            else:
                encoder = self.encoder

            wants_decoder = self.decoder == "mlp" or (
                self.decoder is None and self.reconstruction_weight > 0
            )
            if isinstance(self.decoder, nn.Module):
                decoder = self.decoder
            elif wants_decoder:
                if rows.ndim != 2:
                    raise ValueError(
                        f"X has shape {rows.shape}; the default MLP decoder rebuilds "
                        "(n_samples, n_features) "
                        "rows only. Pass a custom decoder for other shapes."
                    )
                decoder = MLPDecoder(self.n_components, n_features, self.hidden_sizes)
                decoder[-1].fit(rows)
            else:
                decoder = None

        encoder = encoder.to(device)
        decoder = decoder.to(device) if decoder is not None else None
        self._check_network_shapes(encoder, decoder, rows, device)
        return encoder, decoder

    def _check_network_shapes(
        self, encoder: nn.Module, decoder: nn.Module | None, rows: np.ndarray, device: torch.device
    ) -> None:
        probe = torch.from_numpy(rows[:2]).to(device)
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            code = encoder(probe)
        encoder.train(was_training)
        expected = (probe.shape[0], self.n_components)
        if not isinstance(code, torch.Tensor) or tuple(code.shape) != expected:
            found = tuple(code.shape) if isinstance(code, torch.Tensor) else type(code).__name__
            raise ValueError(
                f"the encoder maps a batch of shape {tuple(probe.shape)} to {found}; "
                "expected a tensor of "
                f"shape {expected} (batch, n_components). Fix the encoder's last layer or "
                "n_components."
            )
        if decoder is None:
            return
        decoder.eval()
        with torch.no_grad():
            rebuilt = decoder(code)
        if not isinstance(rebuilt, torch.Tensor) or rebuilt.shape != probe.shape:
            found = (
                tuple(rebuilt.shape)
                if isinstance(rebuilt, torch.Tensor)
                else type(rebuilt).__name__
            )
            raise ValueError(
                f"the decoder maps codes of shape {tuple(code.shape)} to {found}; "
                "expected the input "
                f"shape {tuple(probe.shape)}. Fix the decoder's last layer."
            )

    def _train(self, rows: np.ndarray, layout: np.ndarray | None, rng: np.random.Generator) -> None:
        device = self.device_
        X = torch.from_numpy(rows)
        if device.type != "cpu" and rows.nbytes <= MAX_DEVICE_DATA_BYTES:
            X = X.to(device)  # larger data stays on the CPU and is copied batch by batch

        self.init_loss_history_: list[float] = []
        if layout is not None:
            n_init_epochs = self.n_init_epochs
            if n_init_epochs is None:
                batches = -(-rows.shape[0] // self.batch_size)
                n_init_epochs = _epochs_for_steps(INIT_STEPS, batches, MIN_INIT_EPOCHS)
            self.init_loss_history_ = regress_onto_layout(
                self.encoder_,
                X,
                torch.from_numpy(np.ascontiguousarray(layout, dtype=np.float32)).to(device),
                n_epochs=n_init_epochs,
                batch_size=self.batch_size,
                learning_rate=self.learning_rate,
                rng=rng,
                device=device,
                verbose=bool(self.verbose),
                noise_std=float(self.input_noise) * self._x_scale,
            )

        sampler = EdgeSampler(
            self.graph_,
            batch_size=self.batch_size,
            negative_sample_rate=self.negative_sample_rate,
            negative_sampling=self.negative_sampling,
            rng=rng,
        )
        weights = LossWeights(
            a=self.a_,
            b=self.b_,
            repulsion_strength=float(self.repulsion_strength),
            reconstruction_weight=float(self.reconstruction_weight),
            x_scale=self._x_scale,
            input_noise=float(self.input_noise),
        )
        if self.n_training_epochs is not None:
            n_epochs = self.n_training_epochs
        else:
            target = REFINE_STEPS if layout is not None else TRAINING_STEPS
            n_epochs = _epochs_for_steps(target, sampler.batches_per_epoch, MIN_TRAINING_EPOCHS)
        self.loss_history_ = train_umap_loss(
            self.encoder_,
            self.decoder_,
            X,
            sampler,
            weights,
            n_epochs=n_epochs,
            learning_rate=self.learning_rate,
            device=device,
            verbose=bool(self.verbose),
            rng=rng,
        )

    # ------------------------------------------------------------- transform

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise ValueError(
                "this ParametricUMAP is not fitted yet; call fit(X) or "
                "ParametricUMAP.load(path) first."
            )

    def _forward_in_batches(self, module: nn.Module, rows: np.ndarray) -> np.ndarray:
        """Run ``module`` over ``rows`` in zero-padded batches of ``transform_batch_size`` rows."""
        size = self.transform_batch_size
        outputs = []
        was_training = module.training
        module.eval()
        try:
            with torch.inference_mode():
                network = module.folded() if isinstance(module, MLPEncoder) else module
                for start in range(0, rows.shape[0], size):
                    part = rows[start : start + size]
                    n_rows = part.shape[0]
                    if n_rows < size:
                        padding = np.zeros((size - n_rows, *part.shape[1:]), dtype=part.dtype)
                        part = np.concatenate([part, padding])
                    result = network(torch.from_numpy(part).to(self.device_))
                    outputs.append(result[:n_rows].float().to("cpu").numpy())
        finally:
            module.train(was_training)
        if not outputs:
            return np.zeros((0, *self._output_shape(module)), dtype=np.float32)
        return np.concatenate(outputs)

    def _output_shape(self, module: nn.Module) -> tuple[int, ...]:
        return (self.n_components,) if module is self.encoder_ else self._input_shape

    def transform(self, X: Any) -> np.ndarray:
        """Embed new rows with the trained encoder; no graph is built.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_rows, n_features), or (n_rows, ...)
            Rows shaped like the training rows.

        Returns
        -------
        ndarray of shape (n_rows, n_components), float32
            The embedding. A row's output does not depend on the other rows passed with it.

        Raises
        ------
        ValueError
            If the model is not fitted, or ``X`` has the wrong shape or non-finite values.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 8))
        >>> mapper = ParametricUMAP(n_training_epochs=1, device="cpu").fit(X)
        >>> bool((mapper.transform(X[:3]) == mapper.transform(X)[:3]).all())
        True
        """
        self._check_fitted()
        rows = _as_rows(X)
        if rows.shape[1:] != self._input_shape:
            raise ValueError(
                f"X has rows of shape {rows.shape[1:]}; this model was fitted on rows of shape "
                f"{self._input_shape}. Pass rows with the same features as the training data."
            )
        return self._forward_in_batches(self.encoder_, rows)

    def inverse_transform(self, Y: Any) -> np.ndarray:
        """Map embedding coordinates back to the input space with the decoder.

        Parameters
        ----------
        Y : array-like of shape (n_rows, n_components)
            Points in the embedding.

        Returns
        -------
        ndarray of shape (n_rows, n_features) or (n_rows, ...), float32
            Rows shaped like the training rows.

        Raises
        ------
        ValueError
            If the model is not fitted, has no decoder, or ``Y`` has the wrong shape.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 8))
        >>> mapper = ParametricUMAP(decoder="mlp", n_training_epochs=1, device="cpu").fit(X)
        >>> mapper.inverse_transform(mapper.embedding_[:4]).shape
        (4, 8)
        """
        self._check_fitted()
        if self.decoder_ is None:
            raise ValueError(
                "this ParametricUMAP has no decoder; fit it with decoder='mlp', a decoder module, "
                "or reconstruction_weight > 0."
            )
        points = _as_rows(Y, "Y")
        if points.shape[1:] != (self.n_components,):
            raise ValueError(f"Y has shape {points.shape}; expected (n_rows, {self.n_components}).")
        return self._forward_in_batches(self.decoder_, points)

    # --------------------------------------------------------- save and load

    def save(self, path: str | os.PathLike) -> Path:
        """Save the networks and settings to the folder ``path``.

        The folder receives ``config.json`` (settings, architecture, ``a_``, ``b_``)
        and ``model.safetensors`` (the weights and the input scaling). Each file is
        written under a temporary name, then renamed. ``embedding_`` and ``graph_``
        are not saved, so no training rows are stored.

        Parameters
        ----------
        path : str or os.PathLike
            Folder to write; created when missing.

        Returns
        -------
        pathlib.Path
            The folder.

        Raises
        ------
        ValueError
            If the model is not fitted.

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> X = np.random.default_rng(0).normal(size=(200, 8))
        >>> mapper = ParametricUMAP(n_training_epochs=1, device="cpu").fit(X)
        >>> folder = mapper.save(tempfile.mkdtemp())
        >>> loaded = ParametricUMAP.load(folder, device="cpu")
        >>> bool((loaded.transform(X) == mapper.transform(X)).all())
        True
        """
        self._check_fitted()
        params = {name: getattr(self, name) for name in _SAVED_PARAMS}
        params["hidden_sizes"] = [int(h) for h in self.hidden_sizes]
        config = {
            "params": params,
            "init_layout": self.init_layout if isinstance(self.init_layout, str) else None,
            "a": self.a_,
            "b": self.b_,
            "n_features_in": self.n_features_in_,
            "input_shape": list(self._input_shape),
            "x_scale": self._x_scale,
            "encoder": describe_module(self.encoder_),
            "decoder": None if self.decoder_ is None else describe_module(self.decoder_),
        }
        modules = {"encoder": self.encoder_}
        if self.decoder_ is not None:
            modules["decoder"] = self.decoder_
        return save_model(path, config, modules)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        device: str | torch.device | None = None,
    ) -> ParametricUMAP:
        """Load a model written by :meth:`save`; no code is run from the files.

        Parameters
        ----------
        path : str or os.PathLike
            Folder written by :meth:`save`.
        encoder, decoder : torch.nn.Module or None, default=None
            Networks to load the saved weights into. Required when the model was
            saved with a custom network, which the files describe only by class
            name; for the default MLP, None rebuilds it from the config.
        device : str, torch.device or None, default=None
            Where to put the networks; None picks CUDA when available, else the CPU.

        Returns
        -------
        ParametricUMAP
            A fitted model without ``embedding_`` and ``graph_``.

        Raises
        ------
        FileNotFoundError
            If a file is missing from ``path``.
        ValueError
            If the files are not a ParametricUMAP model, a custom network was saved
            and none is passed, or a passed network does not match the weights.

        Examples
        --------
        See :meth:`save`.
        """
        resolved_device = _resolve_device(device)
        for role, module in (("encoder", encoder), ("decoder", decoder)):
            if module is not None and not isinstance(module, nn.Module):
                raise TypeError(f"{role}={module!r} is invalid; pass a torch.nn.Module or None.")
        config, state_dicts = read_model(path)

        params = dict(config["params"])
        params["hidden_sizes"] = tuple(params["hidden_sizes"])
        model = cls(**params, init_layout=config.get("init_layout"), device=device)

        networks: dict[str, nn.Module | None] = {}
        for role, given in (("encoder", encoder), ("decoder", decoder)):
            spec = config[role]
            if spec is None:
                networks[role] = None
                continue
            if given is None and spec.get("type") != "mlp":
                raise ValueError(
                    f"{path} was saved with a custom {role} of class {spec.get('class')!r}; "
                    f"pass {role}=<a new instance of that class> to ParametricUMAP.load."
                )
            network = given if given is not None else build_from_spec(spec, role)
            load_state_checked(network, state_dicts.get(role, {}), role)
            networks[role] = network.to(resolved_device).eval()

        model.encoder_ = networks["encoder"]
        model.decoder_ = networks["decoder"]
        if encoder is not None:
            model.encoder = encoder
        if decoder is not None:
            model.decoder = decoder
        model.device_ = resolved_device
        model.a_, model.b_ = float(config["a"]), float(config["b"])
        model.n_features_in_ = int(config["n_features_in"])
        model._input_shape = tuple(int(s) for s in config["input_shape"])
        model._x_scale = float(config["x_scale"])
        model.loss_history_ = []
        model.init_loss_history_ = []
        return model
