"""ActivationRecorder: forward hooks that keep pooled, detached float32 rows per layer."""

from __future__ import annotations

import inspect
import logging
import os
import traceback
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentlens.capture.activations import Activations
from latentlens.capture.buffer import CaptureStore
from latentlens.capture.chunk import BlockColumns, PendingChunk
from latentlens.capture.extract import check_output_spec, extract_input, extract_output
from latentlens.capture.pooling import POOLING_MODES, mean_weights, pool, resolve_pooling
from latentlens.capture.selection import LayerSpec, resolve_layers, unwrap_model

__all__ = ["ActivationRecorder"]

logger = logging.getLogger(__name__)

_SOURCES = ("output", "input")


# Returns -1 unless autograd is running a backward pass in this thread. Torch versions
# without it get a stand-in that always returns -1.
_graph_task_id = getattr(torch._C, "_current_graph_task_id", lambda: -1)


def _in_backward() -> bool:
    """Return whether autograd is running a backward pass in this thread.

    Gradient checkpointing recomputes forward inside backward; hooks that fire there
    would capture the same batch twice. ``_current_graph_task_id`` is private, and torch's
    own ModTracker and FSDP use the same test; without it (old torch) nothing is skipped.
    """
    return _graph_task_id() != -1


class _Scope:
    """State of one ``record()`` block.

    ``calls`` counts each layer's calls in the current forward pass, and ``offsets`` the
    rows each (layer, call) has produced in the block so far.
    """

    __slots__ = (
        "step",
        "active",
        "columns",
        "explicit_mask",
        "sample_base",
        "mask",
        "calls",
        "offsets",
        "pending",
    )

    def __init__(
        self,
        columns: BlockColumns,
        active: bool,
        explicit_mask: torch.Tensor | None,
    ) -> None:
        self.step = columns.step
        self.active = active
        self.columns = columns
        self.explicit_mask = explicit_mask
        self.sample_base = columns.sample_base
        self.mask: torch.Tensor | None = None
        self.calls: dict[str, int] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.pending: list[tuple[Any, ...]] = []


class _Layer:
    """Settings of one captured layer, resolved once when the hooks are installed.

    ``pooling_by_ndim`` caches the concrete pooling for each output rank seen so far, and
    ``mean_weights`` the last weight vector of the spatial mean with its (count, device).
    """

    __slots__ = ("name", "module", "spec", "pooling", "pooling_by_ndim", "mean_weights")

    def __init__(self, name: str, module: nn.Module, spec: Any, pooling: str) -> None:
        self.name = name
        self.module = module
        self.spec = spec
        self.pooling = pooling
        self.pooling_by_ndim: dict[int, str] = {}
        self.mean_weights: tuple[int, torch.device, torch.Tensor] | None = None


def _per_layer(
    value: Any, names: list[str], parameter: str, check: Callable[[Any], None]
) -> dict[str, Any]:
    """Expand a setting given once or as a {layer name: setting} dict."""
    if isinstance(value, Mapping):
        unknown = [key for key in value if key not in names and key != "*"]
        if unknown:
            raise ValueError(
                f"{parameter} names layers {unknown} that are not captured; the captured layers "
                f"are {names}"
            )
        default = value.get("*", None)
        resolved = {name: value.get(name, default) for name in names}
    else:
        resolved = dict.fromkeys(names, value)
    for setting in resolved.values():
        check(setting)
    return resolved


def _check_pooling(mode: Any) -> None:
    if mode is None:
        return
    if not isinstance(mode, str) or mode not in POOLING_MODES:
        raise ValueError(f"pooling={mode!r} is not supported; use one of {POOLING_MODES}")


def _check_source(source: Any) -> None:
    if source is None:
        return
    if source not in _SOURCES:
        raise ValueError(f"source={source!r} is not supported; use 'output' or 'input'")


# Tensor dtypes that Tensor.numpy() converts, so such labels and ids can stay tensors until
# the rows are read.
_NUMPY_TENSOR_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.float32,
        torch.float64,
    }
)


def _as_column(value: Any, parameter: str) -> np.ndarray | torch.Tensor | None:
    """Copy a per-sample column: a 1-D CPU tensor, or a numpy array for anything else.

    A tensor stays a tensor (converted when rows are read) because a torch copy is the
    cheapest thing ``record()`` can do once per training step.
    """
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.dtype in _NUMPY_TENSOR_DTYPES:
        if value.ndim != 1:
            raise ValueError(
                f"record({parameter}=...) must be 1-D with one entry per input row, got shape "
                f"{tuple(value.shape)}"
            )
        # A copy, so later changes to the caller's tensor cannot alter captured metadata.
        # Labels rarely require grad; skipping detach() then saves a torch call per step.
        if value.requires_grad:
            value = value.detach()
        return value.clone() if value.is_cpu else value.cpu()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    # A copy, so later changes to the caller's array cannot alter captured metadata.
    array = np.array(value)
    if array.ndim != 1:
        raise ValueError(
            f"record({parameter}=...) must be 1-D with one entry per input row, got shape "
            f"{array.shape}"
        )
    return array


def _mask_position(root: nn.Module, keyword: str | None) -> int | None:
    """Position of ``keyword`` among the positional parameters of ``root.forward``."""
    if keyword is None:
        return None
    try:
        parameters = list(inspect.signature(root.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    for position, parameter in enumerate(parameters):
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            return None
        if parameter.name == keyword:
            return position
    return None


# Dynamo treats this function as returning True while it traces, wherever it is looked up.
_is_compiling = torch.compiler.is_dynamo_compiling


def _root_pre_hook(recorder_ref: weakref.ref) -> Callable[..., None]:
    """Return the root module's pre-hook: reset the call counts and read the attention mask.

    Each hook is one closure, so an eager call costs one Python frame. Under
    ``torch.compile`` it calls its ``torch.compiler.disable`` twin, which breaks the graph
    there and runs the closure eagerly. The same holds for the capture hook below.
    """

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if _is_compiling():
            return outside_graph(module, args, kwargs)
        recorder = recorder_ref()
        if recorder is None:
            return None
        scope = recorder._scope
        if scope is None or not scope.active:
            return None
        if recorder.skip_recompute and _in_backward():
            return None
        scope.calls.clear()
        if scope.pending:
            recorder._flush_pending(wait=False)
        if scope.explicit_mask is not None:
            scope.mask = scope.explicit_mask
            return None
        mask = kwargs.get(recorder.attention_mask) if recorder.attention_mask else None
        position = recorder._mask_position
        if mask is None and position is not None and len(args) > position:
            mask = args[position]
        scope.mask = mask if isinstance(mask, torch.Tensor) else None
        return None

    outside_graph = torch.compiler.disable(hook)
    return hook


def _capture_hook(recorder_ref: weakref.ref, layer: _Layer, source: str) -> Callable[..., None]:
    """Return the hook that captures ``layer`` from ``source``.

    For ``"output"`` it is a forward hook. For ``"input"`` it is a forward pre-hook,
    registered with ``with_kwargs=True``, whose third argument is then the keyword arguments.
    """
    from_input = source == "input"

    def hook(module: nn.Module, args: tuple, output_or_kwargs: Any) -> None:
        if _is_compiling():
            return outside_graph(module, args, output_or_kwargs)
        recorder = recorder_ref()
        if recorder is not None:
            scope = recorder._scope
            if scope is not None and scope.active:
                if from_input:
                    recorder._capture(layer, None, args, output_or_kwargs)
                else:
                    recorder._capture(layer, output_or_kwargs, None, None)
        return None

    outside_graph = torch.compiler.disable(hook)
    return hook


def _warn_unused_labels(scope: _Scope, rows: int | None) -> None:
    """Warn when a block was given more labels than ``rows``, the most rows of any layer."""
    n_labels = scope.columns.n_labels
    if rows is not None and n_labels is not None and rows < n_labels:
        warnings.warn(
            f"record() got {n_labels} labels but the captured layers produced at most {rows} "
            f"rows in the block, so the last {n_labels - rows} labels were not used; pass one "
            "label per input row of the forward passes inside the block",
            UserWarning,
            stacklevel=3,
        )


class _RecordBlock:
    """Context manager returned by :meth:`ActivationRecorder.record`."""

    __slots__ = ("_recorder", "_scope")

    def __init__(self, recorder: ActivationRecorder, scope: _Scope) -> None:
        self._recorder = recorder
        self._scope = scope

    def __enter__(self) -> ActivationRecorder:
        if self._recorder._scope is not None:
            raise RuntimeError("record() blocks cannot be nested; close the open block first")
        self._recorder._scope = self._scope
        return self._recorder

    def __exit__(self, exc_type: Any, error: BaseException | None, trace: Any) -> None:
        rows = self._recorder._close_scope(self._scope)
        if isinstance(error, Exception):
            _explain_compile_error(error)
        elif error is None:
            _warn_unused_labels(self._scope, rows)


class ActivationRecorder:
    """Capture pooled activations of chosen layers with forward hooks.

    Hooks are installed by ``with recorder:`` (or :meth:`attach`) and removed when the
    block ends, also when it ends with an exception. Only the recorder's own handles
    are removed. Rows are captured only inside ``with recorder.record(...):``. In the
    hook each capture is extracted from the module output, detached, pooled, cast to
    float32 and copied off the device, so later in-place operations cannot change it and
    no autograd graph is kept alive. The metadata columns are built when rows are read.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``DistributedDataParallel``, FSDP and ``torch.compile`` wrappers are
        unwrapped. ``nn.DataParallel`` is rejected.
    layers : str, re.Pattern, nn.Module, type, callable or a sequence of these
        Modules to capture: dotted names, globs (``"encoder.layer.*"``; ``*`` stays in one
        dotted segment, ``**`` spans several), regexes (``re.compile(...)`` or
        ``"re:..."``), module objects of the model (``model.encoder``), module types, or
        ``callable(name, module) -> bool``. See :func:`resolve_layers`.
    pooling : str or dict of str to str, default="auto"
        How a layer's output becomes rows, given once or per layer name (the key
        ``"*"`` sets the default for the others). ``"auto"`` depends on the output shape:

        ====================  ===================================================
        output shape          auto pooling
        ====================  ===================================================
        (N,)                  reshaped to (N, 1)
        (N, D)                kept
        (N, T, D)             ``"mean"``: mean over real tokens (attention mask)
        (N, C, L) from Conv1d, pooling or BatchNorm1d: ``"spatial_mean"``
        (N, C, H, W), (N, C, D, H, W)  ``"spatial_mean"``: mean over positions
        ====================  ===================================================

        Other modes: ``"mean"`` (masked token mean for 3-D, spatial mean for 4-D and
        up), ``"first"`` or ``"cls"`` (first real token), ``"last"`` (last real token,
        right or left padding), ``"max"`` (masked maximum over tokens or positions),
        ``"spatial_mean"`` (mean over every axis after the second), ``"flatten"``
        (reshape to (N, -1)) and ``"none"`` (one row per real token or spatial
        position, with its position in the ``"token"`` column). Outputs are taken as
        batch first. The attention mask is read from the root model's ``attention_mask``
        argument (keyword or position) or given to :meth:`record`; without a mask all
        tokens count.
    output : None, int, str, callable, or dict of layer name to these, default=None
        Which tensor to take from the module output: None takes a tensor as is, element 0
        of a tuple, ``last_hidden_state`` (else the first tensor) of a dict or
        ``ModelOutput``; an int indexes a tuple; a str names a key or attribute; a
        callable gets the output. With ``source="input"``: None takes the first tensor
        argument, an int a position, a str a keyword, a callable gets ``(args, kwargs)``.
    source : {"output", "input"} or dict of layer name to these, default="output"
        Capture the module output (forward hook) or its input (forward pre-hook).
    every_n_steps : int, default=1
        Capture only in ``record()`` blocks whose step is a multiple of this.
    max_rows_per_step : int or None, default=None
        Keep at most this many rows per layer and step, chosen by a reservoir sample
        seeded with ``seed`` (the same rows for layers that see the same batches).
    memory_budget : int or None, default=None
        Maximum bytes of captured values and metadata held in memory by this recorder
        (stored rows only, not the short-lived copies made while one batch is pooled).
        When a new batch would exceed it, rows move to ``spill_dir``; without a spill
        folder the oldest steps are dropped. The first drop emits a
        :class:`CaptureBudgetWarning`, and :attr:`dropped_rows` counts every dropped row.
    spill_dir : str, os.PathLike or None, default=None
        Folder for disk shards (same format as :func:`save_activations`, with a
        manifest that :func:`load_activations` reads). Needs ``memory_budget``. It contains
        only the rows moved out of memory, while :meth:`activations` and :meth:`save`
        return all rows. It must not contain an earlier capture, and only one recorder
        should write to it.
    seed : int, default=0
        Seed of the per-step reservoirs.
    attention_mask : str or None, default="attention_mask"
        Name of the root model's argument that holds the (N, T) attention mask; None
        turns mask lookup off.
    skip_recompute : bool, default=True
        Skip hooks that fire during backward, where gradient checkpointing recomputes
        forward, so a batch is captured once.

    Raises
    ------
    ValueError
        If a layer spec matches nothing (the message lists the closest names), a setting
        is out of range, ``spill_dir`` is a file or already contains a capture, or
        ``model`` is compiled with ``fullgraph=True``.
    TypeError
        If ``model`` is not an ``nn.Module`` or is an ``nn.DataParallel``, or a setting
        has the wrong type.

    Notes
    -----
    A module called several times in one forward pass gets rows for every call, told
    apart by the ``"call"`` column (0, 1, ...); the count restarts at each forward of the
    model given to the recorder, so calling a submodule directly keeps counting up.

    Hooks installed before ``torch.compile`` keep working, and so do hooks installed
    after (torch then recompiles once). The hook body runs outside the compiled graph
    (``torch.compiler.disable``), which needs a graph break, so ``fullgraph=True``
    cannot capture; use ``output_hidden_states`` there. On CUDA, copies go to pinned
    host memory without blocking and are read after their CUDA event completes.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> recorder = ActivationRecorder(model, layers=["0", "2"])
    >>> with recorder:
    ...     with recorder.record(labels=torch.tensor([0, 1]), step=0):
    ...         _ = model(torch.randn(2, 4))
    >>> acts = recorder.activations("0")
    >>> acts.values.shape, acts.metadata["label"].tolist()
    ((2, 8), [0, 1])
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec,
        *,
        pooling: str | Mapping[str, str] = "auto",
        output: Any = None,
        source: str | Mapping[str, str] = "output",
        every_n_steps: int = 1,
        max_rows_per_step: int | None = None,
        memory_budget: int | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
        seed: int = 0,
        attention_mask: str | None = "attention_mask",
        skip_recompute: bool = True,
    ) -> None:
        _reject_fullgraph(model)
        resolved = resolve_layers(model, layers)
        names = [name for name, _ in resolved]

        self._pooling = _per_layer(pooling, names, "pooling", _check_pooling)
        self._pooling = {name: mode or "auto" for name, mode in self._pooling.items()}
        self._output = _per_layer(output, names, "output", lambda s: check_output_spec(s, "output"))
        self._source = _per_layer(source, names, "source", _check_source)
        self._source = {name: s or "output" for name, s in self._source.items()}
        _check_positive_int(every_n_steps, "every_n_steps")
        if max_rows_per_step is not None:
            _check_positive_int(max_rows_per_step, "max_rows_per_step")
        if memory_budget is not None:
            _check_positive_int(memory_budget, "memory_budget", "256 * 2**20 (bytes)")
        if spill_dir is not None and memory_budget is None:
            raise ValueError(
                "spill_dir is set but memory_budget is None, so nothing would ever spill; "
                "give memory_budget in bytes (for example 256 * 2**20)"
            )
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed={seed!r} must be a non-negative int")
        if seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative int")
        if attention_mask is not None and not isinstance(attention_mask, str):
            raise TypeError(f"attention_mask={attention_mask!r} must be an argument name or None")

        self.model = model
        self._root = unwrap_model(model)
        self._modules = dict(resolved)
        self.every_n_steps = int(every_n_steps)
        self.attention_mask = attention_mask
        self.skip_recompute = bool(skip_recompute)
        self._mask_position = _mask_position(self._root, attention_mask)
        self._store = CaptureStore(
            max_rows_per_step=max_rows_per_step,
            memory_budget=memory_budget,
            spill_dir=Path(spill_dir) if spill_dir is not None else None,
            seed=int(seed),
        )
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._scope: _Scope | None = None
        self._next_step = 0
        self._next_sample = 0

    # -- hooks ---------------------------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """Captured layers' dotted names, in model order."""
        return list(self._modules)

    @property
    def attached(self) -> bool:
        """Whether the hooks are installed."""
        return bool(self._handles)

    def attach(self) -> ActivationRecorder:
        """Install the hooks; :meth:`detach` or the end of ``with recorder:`` removes them.

        Raises
        ------
        RuntimeError
            If the hooks are already installed.
        """
        if self._handles:
            raise RuntimeError(
                "the recorder's hooks are already installed; leave the first `with` block first"
            )
        reference = weakref.ref(self)
        handles = []
        try:
            handles.append(
                self._root.register_forward_pre_hook(
                    _root_pre_hook(reference), with_kwargs=True, prepend=True
                )
            )
            for name, module in self._modules.items():
                layer = _Layer(name, module, self._output[name], self._pooling[name])
                if self._source[name] == "input":
                    handle = module.register_forward_pre_hook(
                        _capture_hook(reference, layer, "input"), with_kwargs=True
                    )
                else:
                    # Without with_kwargs: some torch versions recompile a compiled model on
                    # every call when a submodule has a keyword-argument forward hook.
                    handle = module.register_forward_hook(_capture_hook(reference, layer, "output"))
                handles.append(handle)
        except BaseException:
            for handle in handles:
                handle.remove()
            raise
        self._handles = handles
        return self

    def detach(self) -> None:
        """Remove the hooks this recorder installed (and no others); safe to call twice."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __enter__(self) -> ActivationRecorder:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def __del__(self) -> None:
        # Handles hold only weak references to the hook dicts, so this is safe late in
        # interpreter shutdown too.
        for handle in getattr(self, "_handles", []):
            handle.remove()

    # -- recording -----------------------------------------------------------------------

    def record(
        self,
        labels: Any = None,
        ids: Any = None,
        split: str | Sequence[str] | None = None,
        step: int | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> _RecordBlock:
        """Capture the forward passes run inside this block.

        Parameters
        ----------
        labels, ids : array-like of shape (n_samples,), optional
            Per-sample values stored as the ``"label"`` and ``"id"`` columns. Row ``i``
            of a layer's batch gets entry ``i``; several forward passes in one block take
            consecutive entries.
        split : str or array-like of shape (n_samples,), optional
            Name of the data split (``"train"``, ``"val"``), for all rows or per sample.
        step : int, optional
            Training step or epoch stored in the ``"step"`` column; by default one more
            than the previous block's step, starting at 0. Blocks whose step is not a multiple of
            ``every_n_steps`` capture nothing.
        attention_mask : torch.Tensor of shape (n_samples, n_tokens), optional
            Mask for token pooling; overrides the one read from the model's arguments.

        Returns
        -------
        context manager
            Entering it opens the block and returns this recorder; leaving it closes the
            block, also on an exception.

        Raises
        ------
        RuntimeError
            If the hooks are not installed or a ``record()`` block is already open.
        ValueError
            If ``labels``, ``ids`` or ``split`` is not 1-D, their lengths differ, or a layer
            produces more rows than labels were given.
        """
        if not self._handles:
            raise RuntimeError(
                "record() needs the hooks installed; use `with recorder:` (or recorder.attach()) "
                "around the training loop"
            )
        if self._scope is not None:
            raise RuntimeError("record() blocks cannot be nested; close the open block first")
        return _RecordBlock(self, self._open_scope(labels, ids, split, step, attention_mask))

    def _close_scope(self, scope: _Scope) -> int | None:
        """Close ``scope`` and return the most rows any layer produced in it (None if none)."""
        rows = None
        try:
            if scope.pending:
                self._flush_pending(wait=True)
        finally:
            self._scope = None
            scope.mask = None
            if scope.active and scope.offsets:
                rows = max(scope.offsets.values())
                self._next_sample = scope.sample_base + rows
        return rows

    def _open_scope(
        self, labels: Any, ids: Any, split: Any, step: int | None, attention_mask: Any
    ) -> _Scope:
        if step is None:
            step = self._next_step
        elif type(step) is not int:
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
                raise TypeError(f"step={step!r} must be an int (training step or epoch)")
            step = int(step)
        self._next_step = step + 1
        label_column = None if labels is None else _as_column(labels, "labels")
        id_column = None if ids is None else _as_column(ids, "ids")
        if isinstance(split, str) or split is None:
            split_value: Any = split
        else:
            split_value = _as_column(split, "split").astype(str)
        if id_column is not None or not (split_value is None or isinstance(split_value, str)):
            # Labels alone, the common case, need no comparison.
            per_sample = {"labels": label_column, "ids": id_column, "split": split_value}
            lengths = {
                name: len(column)
                for name, column in per_sample.items()
                if not (column is None or isinstance(column, str))
            }
            if len(set(lengths.values())) > 1:
                raise ValueError(
                    f"record() columns have different lengths {lengths}; give one entry per row"
                )
        if attention_mask is not None and (
            not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2
        ):
            raise ValueError(
                "record(attention_mask=...) must be a (n_samples, n_tokens) tensor, got "
                f"{getattr(attention_mask, 'shape', type(attention_mask).__name__)}"
            )
        columns = BlockColumns(step, self._next_sample, label_column, id_column, split_value)
        return _Scope(columns, step % self.every_n_steps == 0, attention_mask)

    def _capture(self, layer: _Layer, output: Any, args: tuple | None, kwargs: dict | None) -> None:
        """Pool, detach, cast and copy one batch in the hook; its metadata is built later."""
        scope = self._scope
        if self.skip_recompute and _graph_task_id() != -1:  # _in_backward(), inlined
            return
        name = layer.name
        calls = scope.calls
        call = calls.get(name, 0)
        calls[name] = call + 1

        if args is not None:
            tensor = extract_input(args, kwargs or {}, layer.spec, name)
        elif layer.spec is None and type(output) is torch.Tensor:
            tensor = output
        else:
            tensor = extract_output(output, layer.spec, name)
        batch = tensor.shape[0] if tensor.ndim else 0
        values, sample, token = self._pool(layer, tensor.detach(), scope.mask)

        key = (name, call)
        offset = scope.offsets.get(key, 0)
        scope.offsets[key] = offset + batch
        n_labels = scope.columns.n_labels
        if n_labels is not None and offset + batch > n_labels:
            raise ValueError(
                f"layer {name!r} produced {offset + batch} rows (dim 0 of its output) in this "
                f"record() block but {n_labels} labels were given; pass one label per "
                "input row, and check that the layer's output is batch first"
            )

        if values.is_cuda:
            # NOTE: this path has not run in this project's tests (no GPU in CI); the CPU
            # path below is the tested one.
            host = torch.empty(values.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            scope.pending.append((name, scope.columns, offset, call, host, event, sample, token))
            return
        self._store.add(
            name, scope.step, PendingChunk(values, scope.columns, offset, call, name, sample, token)
        )

    def _pool(
        self, layer: _Layer, tensor: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Pool a detached batch to rows that no module output shares memory with.

        Returns the rows (float32 on the CPU, or on the tensor's GPU for the pinned copy),
        and the per-row sample and token indices on the CPU when pooling gives several rows
        per sample (else None).
        """
        ndim = tensor.ndim
        concrete = layer.pooling_by_ndim.get(ndim)
        if concrete is None:
            concrete = resolve_pooling(layer.pooling, ndim, layer.module)
            layer.pooling_by_ndim[ndim] = concrete

        # Fast paths for the two commonest cases. Both give a tensor that owns its memory,
        # except on a GPU, where the pinned copy in _capture is the copy.
        if ndim == 2:
            # One vector per sample already: every pooling keeps it as it is.
            if tensor.is_cuda:
                return tensor, None, None
            if tensor.dtype == torch.float32:
                return tensor.clone(), None, None
            return tensor.to(torch.float32), None, None
        if concrete == "spatial_mean" and tensor.dtype == torch.float32 and ndim > 2:
            if not tensor.is_contiguous() or not tensor.numel():
                # For example channels-last maps, which convolutions on CPU can return.
                return tensor.mean(dim=tuple(range(2, ndim))), None, None
            batch, channels = tensor.shape[0], tensor.shape[1]
            positions = tensor.numel() // (batch * channels)
            cached = layer.mean_weights
            if cached is None or cached[0] != positions or cached[1] != tensor.device:
                weights = mean_weights(positions, tensor.dtype, tensor.device)
                layer.mean_weights = cached = (positions, tensor.device, weights)
            total = torch.mv(tensor.view(batch * channels, positions), cached[2])
            return total.view(batch, channels), None, None

        pooled = pool(tensor, layer.pooling, mask, layer.module, layer.name)
        values = pooled.values
        if values.is_cuda:
            # The pinned copy in _capture is the copy; only the dtype may still change.
            return values.to(torch.float32), pooled.sample, pooled.token
        if values.device.type != "cpu" or values.dtype != torch.float32:
            values = values.to(device="cpu", dtype=torch.float32)
        # A result that aliases the module output (a view, or the tensor itself) is copied.
        if (values is tensor or values._base is not None) and _shares_memory(values, tensor):
            values = values.clone()
        return values, pooled.sample, pooled.token

    def _flush_pending(self, *, wait: bool) -> None:
        scope = self._scope
        if scope is None or not scope.pending:
            return
        remaining = []
        for entry in scope.pending:
            name, columns, offset, call, host, event, sample, token = entry
            if not wait and not event.query():
                remaining.append(entry)
                continue
            event.synchronize()
            # A pageable copy frees the pinned buffer, which is a scarce resource.
            values = torch.from_numpy(host.numpy().copy())
            chunk = PendingChunk(values, columns, offset, call, name, sample, token)
            self._store.add(name, columns.step, chunk)
        scope.pending = remaining

    # -- results -------------------------------------------------------------------------

    def _check_layer(self, layer: str) -> None:
        if layer not in self._modules:
            import difflib

            close = difflib.get_close_matches(layer, list(self._modules), n=3, cutoff=0.3)
            raise ValueError(
                f"layer {layer!r} is not captured by this recorder; captured layers: "
                f"{self.layer_names}" + (f" (closest: {close})" if close else "")
            )

    def activations(self, layer: str, step: int | Sequence[int] | None = None) -> Activations:
        """Return the rows captured for ``layer``.

        Parameters
        ----------
        layer : str
            One of :attr:`layer_names`.
        step : int, sequence of int or None, default=None
            Only these steps; None returns all, spilled shards first, then memory.

        Returns
        -------
        Activations
            ``values`` of shape (n_rows, n_features), float32, and metadata columns
            ``step``, ``sample`` and, when present, ``label``, ``id``, ``split``,
            ``call``, ``token``. Empty (0 rows) when nothing was captured; its width is
            then the layer's feature count if other steps have rows, else 0.

        Raises
        ------
        ValueError
            If ``layer`` is not captured.
        """
        self._check_layer(layer)
        steps = None if step is None else {int(s) for s in np.atleast_1d(step)}
        rows = self._store.rows(layer, steps)
        if rows is None:
            empty = {"step": np.zeros(0, np.int64), "sample": np.zeros(0, np.int64)}
            width = self._store.width(layer)
            return Activations(np.zeros((0, width), np.float32), empty, layer=layer)
        return rows

    def all_activations(self, step: int | Sequence[int] | None = None) -> dict[str, Activations]:
        """Return :meth:`activations` of every layer that has rows, keyed by layer name."""
        result = {name: self.activations(name, step) for name in self.layer_names}
        return {name: acts for name, acts in result.items() if len(acts)}

    def steps(self, layer: str) -> list[int]:
        """Return the sorted steps that have rows for ``layer``."""
        self._check_layer(layer)
        return self._store.steps(layer)

    def clear(self, step: int | None = None) -> None:
        """Forget captured rows of one step, or all rows (and spill shards) by default."""
        self._store.clear(None if step is None else int(step))

    @property
    def memory_bytes(self) -> int:
        """Bytes of captured values and metadata held in memory now."""
        return self._store.nbytes

    @property
    def peak_memory_bytes(self) -> int:
        """Largest value :attr:`memory_bytes` has reached."""
        return self._store.peak_nbytes

    @property
    def dropped_rows(self) -> int:
        """Rows discarded because the memory budget was full and no spill folder was set."""
        return self._store.dropped_rows

    def save(
        self,
        folder: str | os.PathLike[str],
        *,
        extra: Mapping[str, Any] | None = None,
        file_format: str = "safetensors",
    ) -> Path:
        """Write all captured rows to ``folder`` (see :func:`save_activations`).

        Under an initialised ``torch.distributed`` process group with several ranks, each
        rank writes ``folder/rank-<rank>``, and after a barrier rank 0 writes a manifest
        that lists them. So ``folder`` must be on a file system that all ranks share.

        Returns
        -------
        pathlib.Path
            The folder.

        Raises
        ------
        ValueError
            If nothing was captured.
        """
        from latentlens.capture.distributed import save_per_rank

        activations = self.all_activations()
        info = {"layers": self.layer_names, "pooling": self._pooling}
        info.update(extra or {})
        return save_per_rank(folder, activations, extra=info, file_format=file_format)


def _shares_memory(values: torch.Tensor, source: torch.Tensor) -> bool:
    if values.device != source.device:
        return False
    try:
        return values.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
    except RuntimeError:
        return True


def _check_positive_int(value: Any, parameter: str, example: str = "") -> None:
    """Raise TypeError for a non-int and ValueError for an int below 1, naming ``example``."""
    message = f"{parameter}={value!r} must be a positive int" + (
        f", for example {parameter}={example}" if example else ""
    )
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(message)
    if value < 1:
        raise ValueError(message)


def _reject_fullgraph(model: Any) -> None:
    context = getattr(model, "dynamo_ctx", None)
    if type(model).__name__ == "OptimizedModule" and getattr(context, "fullgraph", False):
        raise ValueError(
            "the model was compiled with torch.compile(fullgraph=True); capture hooks copy "
            "activations to host memory outside the graph, which needs a graph break. Compile "
            "without fullgraph=True, or capture from the model's output_hidden_states instead"
        )


def _explain_compile_error(error: Exception) -> None:
    """Re-raise a torch.compile failure caused by the capture hooks with a clear message."""
    if not type(error).__module__.startswith("torch._dynamo"):
        return
    package = os.path.dirname(os.path.abspath(__file__))
    text = str(error)
    frames = traceback.extract_tb(error.__traceback__)
    hooks = ("_capture_hook", "_root_pre_hook")
    ours = package in text or any(f"{name}.<locals>.hook" in text for name in hooks)
    if ours or any(frame.filename.startswith(package) for frame in frames):
        raise RuntimeError(
            "torch.compile could not run the capture hooks: they run outside the compiled "
            "graph and need a graph break, which fullgraph=True (or "
            "torch._dynamo.config.error_on_graph_break) forbids. Compile without "
            "fullgraph=True, or capture from output_hidden_states instead"
        ) from error
