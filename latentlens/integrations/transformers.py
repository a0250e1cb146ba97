"""A `transformers` TrainerCallback that records chosen layers on evaluation batches.

Every forward pass that runs while the model is in eval mode, as in the Trainer's evaluation
loop, is recorded as samples of the current ``global_step``. Each ``on_evaluate`` event then
publishes that step: maps, scores and the TensorBoard export.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from transformers import TrainerCallback

from latentlens.lens import LatentLens

logger = logging.getLogger(__name__)


class LatentLensCallback(TrainerCallback):
    """Record layers on the Trainer's evaluation batches and publish at each evaluation.

    Parameters
    ----------
    layers : str, type, callable or a sequence of them
        Layers to record (names, globs such as ``"bert.encoder.layer.*"``, ``"re:<regex>"``,
        module types or a callable), as for :class:`~latentlens.LatentLens`.
    logdir : str or Path, optional
        TensorBoard log directory; defaults to the Trainer's ``args.logging_dir``.
    run : str, default="latentlens"
        Run folder inside ``logdir``.
    label_key : str, default="labels"
        Keyword argument of the model's forward that contains one class per sample. Labels of any
        other shape (token labels of a language model) are not used as classes.
    **lens_options
        Passed to :class:`~latentlens.LatentLens` (``pooling``, ``projection``, ``n_neighbors``,
        ``reference_step``, ``recorder_options`` and so on).

    Notes
    -----
    Hooks are added at ``on_init_end`` and removed at ``on_train_end``, so evaluations before and
    during training are recorded. Call :meth:`attach` to record a stand-alone
    ``trainer.evaluate()`` after training, and :meth:`close` afterwards. Sample ids are positions
    within the evaluation set, which the Trainer reads in a fixed order.

    Examples
    --------
    >>> callback = LatentLensCallback(
    ...     layers="bert.encoder.layer.*", logdir="runs/trainer"
    ... )  # doctest: +SKIP
    >>> trainer = Trainer(
    ...     model=model, args=args, eval_dataset=eval_set, callbacks=[callback]
    ... )  # doctest: +SKIP
    """

    def __init__(
        self,
        layers: Any,
        *,
        logdir: str | Path | None = None,
        run: str = "latentlens",
        label_key: str = "labels",
        **lens_options: Any,
    ) -> None:
        self.layers = layers
        self.logdir = logdir
        self.run = run
        self.label_key = label_key
        self.lens_options = lens_options
        self.lens: LatentLens | None = None
        self._state: Any = None
        self._handles: list[Any] = []
        self._batch = ExitStack()
        self._rows_at_step: dict[int, int] = {}

    # -- hooks on the root module ----------------------------------------------------------------

    def attach(self, model: nn.Module, logdir: str | Path | None = None) -> None:
        """Add the hooks to ``model``; a no-op when already attached."""
        if self.lens is not None:
            return
        target = logdir or self.logdir
        if target is None:
            raise ValueError(
                "no logdir: pass logdir= to LatentLensCallback or set TrainingArguments.logging_dir"
            )
        self.lens = LatentLens(model, self.layers, logdir=target, run=self.run, **self.lens_options)
        self.lens.attach()
        self._handles = [
            model.register_forward_pre_hook(self._start_batch, with_kwargs=True),
            model.register_forward_hook(self._end_batch, always_call=True),
        ]

    def close(self) -> None:
        """Remove every hook this callback added and close the TensorBoard writer."""
        self._batch.close()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.lens is not None:
            self.lens.close()
            self.lens = None

    def _start_batch(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training or self.lens is None or self._state is None:
            return
        step = int(self._state.global_step)
        labels = kwargs.get(self.label_key)
        batch_size = _batch_size(args, kwargs)
        label_array = None
        if labels is not None and getattr(labels, "ndim", None) == 1:
            label_array = labels.detach().cpu().numpy()
        ids = None
        if batch_size is not None:
            start = self._rows_at_step.get(step, 0)
            ids = np.arange(start, start + batch_size)
            self._rows_at_step[step] = start + batch_size
        self._batch.enter_context(self.lens.record(step=step, labels=label_array, ids=ids))

    def _end_batch(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._batch.close()

    # -- Trainer events --------------------------------------------------------------------------

    def on_init_end(self, args, state, control, model=None, **kwargs):
        self._state = state
        if model is not None:
            self.attach(model, self.logdir or args.logging_dir)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._state = state
        if model is not None:
            self.attach(model, self.logdir or args.logging_dir)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.lens is None:
            return
        step = int(state.global_step)
        if self._rows_at_step.pop(step, 0) == 0:
            logger.warning("no evaluation batch was recorded at step %d; nothing published", step)
            return
        self.lens.publish(step)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    for value in (*args, *kwargs.values()):
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1:
            return int(shape[0])
    return None
