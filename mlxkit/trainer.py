"""`Trainer`: Keras-style `fit` / `evaluate` / `predict` over a plain `mlx.nn.Module`.

This module owns the loops, the loop position (`LoopState`), the callback calls and the validation
cadence. Batches come from a batch source (`mlxkit.sources`); checkpoints (`mlxkit.checkpoint`)
save and restore the loop position with everything else.

The loops here read top to bottom; the maths lives in `train_step`, `test_step` and `predict_step`,
the override points. Each step is compiled once with `mx.compile` over the state it reads and writes
(`compiled_state()`: model, optimizer, random state, loss and metric accumulators), so a training
step runs with no host sync: values reach Python only when a log is needed (a progress refresh, a
callback that reads batch logs, the end of an epoch).
"""

from __future__ import annotations

import inspect
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlxkit import _blas
from mlxkit import losses as losses_module
from mlxkit import metrics as metrics_module
from mlxkit import optimizers as optimizers_module
from mlxkit._batches import ArrayBatches, flat_items, is_array_tree, num_samples, to_float, to_mx
from mlxkit._inputs import (
    check_class_indices,
    check_validation_shapes,
    check_validation_tuple,
    class_count,
    shapes,
)
from mlxkit._pipelining import PipelineMode, StepPipeline
from mlxkit._recovery import StepBoundaryInterrupt, batch_signature, restore, snapshot
from mlxkit._validation import check_int
from mlxkit.callbacks.base import Callback, CallbackList, LazyLogs
from mlxkit.callbacks.history import History
from mlxkit.callbacks.progress import ProgressBar
from mlxkit.distributed import all_sum_states, distributed_group
from mlxkit.precision import Precision, PrecisionName
from mlxkit.sources import BatchSource, IterableBatches

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map, tree_unflatten

# (inputs, targets) or (inputs, targets, sample_weight).
Batch = tuple[Any, ...]


@dataclass
class LoopState:
    """Where `fit` is: the one record of the loop's position, which checkpoints save and restore.

    Callbacks read it through the Trainer's properties (`trainer.epoch`, `trainer.global_step`,
    ...). A batch is one call of the training step; with `accumulate_steps=k` the optimizer
    updates once every k batches, so `global_step` counts batches, not optimizer updates.

    Attributes:
        epoch: The epoch in progress (0-based), or the next one between epochs.
        batch_in_epoch: Batches of `epoch` already trained; a resume continues after them.
        global_step: Batches trained since the first `fit`, across epochs and `fit` calls.
        seed: The data-order seed of the run.
        stop_training: Set (by a callback, say) to stop after the current batch.
        pass_epoch: The epoch the ongoing pass over the training data began in; the pass visits
            the data in that epoch's order. Equal to `epoch` unless `steps_per_epoch` differs
            from the data's length: then, as in Keras, one pass runs on across epochs.
        batch_in_pass: Batches of the ongoing pass already trained.

    Example:
        >>> state = LoopState(epoch=2, batch_in_epoch=3, global_step=19, seed=0)
        >>> state.stop_training
        False
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    seed: int | None = None
    stop_training: bool = False
    pass_epoch: int = 0
    batch_in_pass: int = 0


class Trainer:
    """Trains, evaluates and runs a plain `mlx.nn.Module` with Keras semantics.

    The model stays a plain MLX module: after `fit` it is the same object with trained weights.

    Args:
        model: Any `mlx.nn.Module`.
        optimizer: Any `mlx.optimizers.Optimizer`, or a Keras name (`"adam"`, `"sgd"`,
            `"adamw"`, `"rmsprop"`, ...: see `mlxkit.optimizers.get`), which gets Keras's defaults.
        loss: A callable `(outputs, targets) -> scalar`, or a name from `mlxkit.losses`
            (`"cross_entropy"`, `"mse"`, `"depth_loss"`, ...).
        metrics: `mlxkit.metrics.Metric` objects or their names (`"accuracy"`, `"mae"`, ...).
        compile: Compile the steps with `mx.compile` (default). `compile=False` runs the same steps
            eagerly with identical results, for debugging.
        inputs: When batches are dicts (mlx-data samples), the key (or list of keys) of the model's
            inputs. A list calls `model(*inputs)`.
        targets: When batches are dicts, the key of the targets.
        clip_grad_norm: Clip the gradients to this global L2 norm before each update.
        accumulate_steps: Average the gradients of this many batches before each optimizer update.
        distributed: Data-parallel training over `mx.distributed`. `None` (default) turns it on when
            the process was started by `mlx.launch` with more than one rank; `True` requires it;
            `False` trains this process alone. See `mlxkit.distributed`.
        pipeline: How `fit` waits for each step. `True` queues step n with `mx.async_eval` and
            waits for step n-1, so Python builds the next step while one computes; `False`
            evaluates each step before building the next. `"auto"` (default) pipelines on an
            accelerator and, on the CPU, times both on the first ~200 steps and pipelines only if
            that is at least 5% faster (`trainer.pipeline.pipelined` says which). Results are
            identical either way.
        precision: What the steps compute in: `"float32"` (default), `"bfloat16"` or
            `"float16"` (Keras's `"mixed_bfloat16"` and Lightning's `"bf16-mixed"` spellings
            are accepted too), or an `mlxkit.precision.Precision`. Mixed precision keeps the
            parameters and optimizer state in float32 and runs forward and backward in the low
            precision; float16 adds dynamic loss scaling, logging `loss_scale` and
            `skipped_steps`. See the performance guide.

    Example:
        >>> import mlx.nn as nn, mlx.optimizers as optim
        >>> import numpy as np
        >>> from mlxkit import Trainer
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> trainer = Trainer(model, optim.Adam(learning_rate=1e-2), loss="cross_entropy",
        ...                   metrics=["accuracy"])
        >>> x = np.random.rand(64, 4).astype("float32"); y = (x.sum(1) > 2).astype("int32")
        >>> history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
        >>> list(history.history)[:3]
        ['loss', 'accuracy', 'learning_rate']
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer | str,
        loss: str | Callable[[Any, Any], mx.array],
        metrics: list[str | metrics_module.Metric] | None = None,
        *,
        compile: bool = True,
        inputs: str | list[str] | None = None,
        targets: str | None = None,
        clip_grad_norm: float | None = None,
        accumulate_steps: int = 1,
        distributed: bool | None = None,
        pipeline: PipelineMode = "auto",
        precision: PrecisionName | str | Precision = "float32",
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"`model` must be an mlx.nn.Module. Received: model of type {type(model).__name__}"
            )
        optimizer = optimizers_module.get(optimizer)
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(
                f"`clip_grad_norm` must be a positive number or None. "
                f"Received: clip_grad_norm={clip_grad_norm!r}"
            )
        check_int(accumulate_steps, "accumulate_steps")
        if accumulate_steps > 1 and not _takes_update(self.train_step):
            raise ValueError(
                f"accumulate_steps={accumulate_steps} needs `train_step(batch, update)`: an "
                f"override of train_step must take `update` and pass it on to "
                f"`apply_gradients(grads, update=update)`. Received: {type(self).__name__}."
                f"train_step{inspect.signature(self.train_step)}"
            )
        if inputs is None and targets is not None:
            raise ValueError(
                f"`targets` names a batch key, so `inputs` must name one too. "
                f"Received: inputs=None, targets={targets!r}"
            )
        self.precision = precision if isinstance(precision, Precision) else Precision(precision)
        self.group = distributed_group(distributed)
        self.rank = self.group.rank() if self.group is not None else 0
        self.world_size = self.group.size() if self.group is not None else 1
        self.model = model
        self.optimizer = optimizer
        self.loss = losses_module.get(loss)
        self.metrics = [metrics_module.get(m) for m in (metrics or [])]
        self.compile = compile
        self.inputs, self.targets = inputs, targets
        self.clip_grad_norm = clip_grad_norm
        self.accumulate_steps = accumulate_steps
        self.pipeline = StepPipeline(pipeline)

        # Device-side accumulators: a sample-weighted loss sum, and the count of steps after which
        # it was still finite, so NaNs are reported with their step without reading every loss.
        self.loss_state = _zero_loss_state()
        self.gradient_buffer: dict[str, Any] = {}
        # float16's loss scale, on the device with the rest (empty for other precisions).
        self.loss_scale_state = self.precision.initial_state()
        self.optimizer.init(self.model.trainable_parameters())
        if accumulate_steps > 1:
            self.gradient_buffer["grads"] = tree_map(mx.zeros_like, model.trainable_parameters())

        self.loop = LoopState()
        # Set (from a callback) to end the running evaluate / predict after the current batch.
        self.stop_evaluating = False
        self.stop_predicting = False
        self.epochs = 0
        self.steps_per_epoch: int | None = None
        self.history = History()
        # The callbacks of the last `fit` (checkpoints save their states); evaluate and predict
        # build their own list for each call.
        self.callbacks = CallbackList([], self)
        self._steps: dict[str, Callable[..., Any]] = {}
        # Per step kind, the batch signatures (shapes, dtypes) its compiled function has traced.
        self._traced: dict[str, set[Hashable]] = {}
        self._interrupt = StepBoundaryInterrupt(active=False)  # each fit makes its own

    # ------------------------------------------------------------------ loop position
    @property
    def epoch(self) -> int:
        """The epoch in progress (0-based), or the next one between epochs."""
        return self.loop.epoch

    @property
    def batch_in_epoch(self) -> int:
        """Batches of the current epoch already trained (a resume continues after them)."""
        return self.loop.batch_in_epoch

    @property
    def global_step(self) -> int:
        """Training batches run so far (with `accumulate_steps=k`, k per optimizer update)."""
        return self.loop.global_step

    @property
    def seed(self) -> int | None:
        """The data-order seed of the last `fit`."""
        return self.loop.seed

    @property
    def stop_training(self) -> bool:
        """Set to `True` (from a callback, say) to stop after the current batch."""
        return self.loop.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self.loop.stop_training = bool(value)

    @property
    def is_main_process(self) -> bool:
        """True on rank 0, the one process that prints and writes files (always, alone)."""
        return self.rank == 0

    @property
    def learning_rate_is_scheduled(self) -> bool:
        """True when the optimizer's learning rate follows a schedule (a callable)."""
        # MLX keeps schedules in a private dict and offers no public way to ask: this is the one
        # place mlxkit reads it.
        return "learning_rate" in getattr(self.optimizer, "_schedulers", {})

    # ------------------------------------------------------------------ override points
    def compute_loss(self, outputs: Any, targets: Any, sample_weight: Any = None) -> mx.array:
        """The scalar loss of one batch (default: the `loss` given to the constructor).

        With `sample_weight` (from `fit(sample_weight=, class_weight=)` or `(x, y, w)` batches),
        the loss is computed per item (`reduction="none"`) and reduced as Keras does,
        `sum(loss * w) / size` (`mlxkit.losses.weighted_mean`). The steps pass `sample_weight`
        only when a batch has weights, so an override taking `(outputs, targets)` keeps working
        for unweighted data.
        """
        if sample_weight is None:
            return self.loss(outputs, targets)
        return losses_module.weighted_mean(
            self.loss(outputs, targets, reduction="none"), sample_weight
        )

    def _batch_loss(self, outputs: Any, targets: Any, sample_weight: Any) -> mx.array:
        if sample_weight is None:
            return self.compute_loss(outputs, targets)
        return self.compute_loss(outputs, targets, sample_weight)

    def forward(self, x: Any) -> Any:
        """Calls the model on a batch's inputs; a tuple of inputs is passed as positional args.

        With mixed precision, floating inputs are cast to the compute dtype and floating
        outputs back to float32, so that the loss and metrics are computed in float32.
        """
        x = self.precision.cast_inputs(x)
        outputs = self.model(*x) if isinstance(x, tuple) else self.model(x)
        return self.precision.cast_outputs(outputs)

    def value_and_grad(
        self, fn: Callable[..., Any], model: nn.Module | None = None
    ) -> Callable[..., tuple[Any, Any]]:
        """`mlx.nn.value_and_grad(model, fn)` under the Trainer's precision (see `precision`).

        With mixed precision, `fn` runs with the trainable parameters in the compute dtype, and
        the gradients come back in float32, unscaled, for `apply_gradients`.

        Args:
            fn: Returns the scalar loss, or a tuple whose first item is the loss.
            model: The module to differentiate (default: the Trainer's model).
        """
        model = self.model if model is None else model
        return self.precision.value_and_grad(model, fn, self.loss_scale_state)

    def train_step(self, batch: Batch, update: bool = True) -> mx.array:
        """One training step on `batch = (inputs, targets)`; returns the loss.

        Runs inside `mx.compile` (unless `compile=False`): use MLX operations only, no `.item()`.
        Override it for custom training (a GAN with two optimizers, say), and extend
        `compiled_state()` with any extra module or optimizer it updates.

        Args:
            batch: `(inputs, targets)` or `(inputs, targets, sample_weight)` MLX arrays (or
                trees of them); `unpack_batch` splits either.
            update: With `accumulate_steps=k`, `False` for the first k - 1 batches of each
                window: their gradients are only accumulated. Pass it on to `apply_gradients`.
                The Trainer passes it only when `accumulate_steps > 1`, so an override may leave
                it out otherwise.
        """
        x, y, sample_weight = unpack_batch(batch)

        def loss_fn(x, y):
            outputs = self.forward(x)
            return self._batch_loss(outputs, y, sample_weight), outputs

        (loss, outputs), grads = self.value_and_grad(loss_fn)(x, y)
        self.apply_gradients(grads, update=update)
        self.update_metrics(loss, outputs, y)
        return loss

    def test_step(self, batch: Batch) -> mx.array:
        """Computes the loss and updates the metrics on `batch` in inference mode."""
        x, y, sample_weight = unpack_batch(batch)
        outputs = self.forward(x)
        loss = self._batch_loss(outputs, y, sample_weight)
        self.update_metrics(loss, outputs, y)
        return loss

    def predict_step(self, batch: Batch) -> Any:
        """Returns the model's outputs on `batch`'s inputs in inference mode."""
        return self.forward(batch[0])

    def compiled_state(self) -> list[Any]:
        """Everything the compiled steps read and write. Subclasses extend it with extra state."""
        return [
            self.model.state,
            self.optimizer.state,
            mx.random.state,
            self.loss_state,
            [m.state for m in self.metrics],
            self.gradient_buffer,
            self.loss_scale_state,
        ]

    def extra_state(self) -> list[Any]:
        """What a subclass added to `compiled_state()`; checkpoints save and restore it too."""
        return self.compiled_state()[len(Trainer.compiled_state(self)) :]

    # ------------------------------------------------------------------ helpers for steps
    def apply_gradients(self, grads: Any, update: bool = True) -> None:
        """Accumulates, averages over ranks, clips and applies `grads` with the optimizer.

        Args:
            grads: The gradients of the model's trainable parameters.
            update: `False` adds `grads` to the accumulation buffer and stops there; `True` (with
                `accumulate_steps > 1`) applies the buffer's mean and empties it.
        """
        if self.accumulate_steps > 1:
            grads = tree_map(mx.add, self.gradient_buffer["grads"], grads)
            if not update:
                self.gradient_buffer["grads"] = grads
                return
            grads = tree_map(lambda g: g / self.accumulate_steps, grads)
            self.gradient_buffer["grads"] = tree_map(mx.zeros_like, grads)
        if self.group is not None:
            grads = nn.average_gradients(grads, group=self.group)
        if self.clip_grad_norm is not None:
            grads, _ = optim.clip_grad_norm(grads, self.clip_grad_norm)
        # float16: a step with non-finite gradients is skipped and the loss scale adjusted.
        self.precision.apply_gradients(self.optimizer, self.model, grads, self.loss_scale_state)

    def update_metrics(self, loss: mx.array, outputs: Any, targets: Any) -> None:
        """Adds one batch's loss and outputs to the running loss and metrics."""
        count = _batch_size(outputs)
        state = self.loss_state
        # sums = [sample-weighted loss total, sample count]. A NaN or infinite loss makes the total
        # non-finite for the rest of the epoch, so counting the steps after which each sum is
        # still finite locates the first bad step (`first_bad_step`); the count's entry counts
        # every step. Vectors rather than four scalars, so that mx.compile fuses the whole update
        # into one kernel: each kernel costs MLX's CPU scheduler several microseconds a step.
        total_or_count = mx.array([True, False])
        state["sums"] = state["sums"] + mx.where(
            total_or_count, loss.astype(mx.float32) * count, count
        )
        state["finite_steps"] = state["finite_steps"] + (mx.abs(state["sums"]) < math.inf)
        for metric in self.metrics:
            metric.update(outputs, targets)

    def _step(self, kind: Literal["train", "train_accumulate", "test", "predict"]):
        """Builds (once) and returns the compiled or eager step function of one kind."""
        if kind in self._steps:
            return self._steps[kind]
        if kind == "predict":
            fn: Callable[..., Any] = self.precision.with_compute_parameters(
                self.model, self.predict_step
            )
            state: list[Any] = [self.model.state]
            if self.compile:
                fn = mx.compile(fn, inputs=state)
        else:
            if kind == "test":
                fn = self.precision.with_compute_parameters(self.model, self.test_step)
            elif self.accumulate_steps > 1:
                update = kind == "train"

                def fn(batch, update=update):
                    return self.train_step(batch, update=update)

            else:
                fn = self.train_step
            if self.compile:
                state = self.compiled_state()
                fn = mx.compile(fn, inputs=state, outputs=state)
        self._steps[kind] = fn
        return fn

    def _call_step(
        self, kind: Literal["train", "train_accumulate", "test", "predict"], batch: Batch
    ) -> Any:
        """Runs the step of `kind` on `batch`; if it fails, puts back the state it captured.

        A compiled step runs Python, and can fail, only while MLX traces it: on its first call for
        a batch signature (shapes and dtypes). A trace that fails leaves placeholders in the state
        it captured (the model, the optimizer, `mx.random.state`, ...), on which every later MLX
        call in the process fails. So before a call that may trace, the state's arrays (immutable)
        are kept by reference, and put back if the call raises. A call of a traced signature runs
        no Python and costs one set lookup; an eager step (`compile=False`) is always guarded.
        """
        step_fn = self._step(kind)
        signature = batch_signature(batch) if self.compile else None
        traced = self._traced.setdefault(kind, set())
        if signature is not None and signature in traced:
            return step_fn(batch)
        saved = snapshot(self.compiled_state())
        try:
            result = step_fn(batch)
        except BaseException:
            restore(self.compiled_state(), saved)
            raise
        if signature is not None:
            traced.add(signature)
        return result

    # ------------------------------------------------------------------ batches
    def _unpack(self, batch: Any) -> Batch:
        if (
            type(batch) is tuple
            and len(batch) == 2
            and type(batch[0]) is type(batch[1]) is mx.array
        ):
            return batch  # what ArrayBatches yields: the checks below cost ~5 us per step
        if isinstance(batch, Mapping):
            if self.inputs is None:
                raise ValueError(
                    "Batches are dicts, so the Trainer needs `inputs=` (and `targets=`) naming "
                    f"their keys. Keys present: {sorted(batch)}"
                )
            keys = [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)
            if self.targets is not None:
                keys.append(self.targets)
            missing = [k for k in keys if k not in batch]
            if missing:
                raise KeyError(
                    f"Batch has no key(s) {missing} (from inputs={self.inputs!r}, "
                    f"targets={self.targets!r}). Keys present: {sorted(batch)}"
                )
            x = (
                batch[self.inputs]
                if isinstance(self.inputs, str)
                else tuple(batch[k] for k in self.inputs)
            )
            y = batch[self.targets] if self.targets is not None else None
            return to_mx(x), to_mx(y)
        if isinstance(batch, tuple) and len(batch) in (1, 2):
            x, y = (batch[0], None) if len(batch) == 1 else batch
            return to_mx(x), to_mx(y)
        if isinstance(batch, tuple) and len(batch) == 3:
            x, y, sample_weight = batch
            if sample_weight is None:
                return to_mx(x), to_mx(y)
            return to_mx(x), to_mx(y), to_mx(sample_weight)
        if is_array_tree(batch):
            return to_mx(batch), None
        raise TypeError(
            "A batch must be an (inputs, targets) or (inputs, targets, sample_weight) tuple, an "
            "array, or a dict with `inputs=` / `targets=` keys. "
            f"Received: a batch of type {type(batch).__name__}"
        )

    def _source(
        self,
        x: Any,
        y: Any,
        *,
        argument: str,
        batch_size: int,
        sample_weight: Any = None,
        shuffle: bool = False,
        drop_last: bool = False,
        shard: bool = False,
    ) -> BatchSource:
        """This call's batch source over `x`: a view, never the object the user passed.

        Arrays become `ArrayBatches`; a `BatchSource` (an `mlxkit.data.Stream`) is copied with
        `replace()`; any other re-iterable is wrapped in `IterableBatches`. With `shard=True`
        under distributed training, an unsharded source is given this rank's share; a source
        the user sharded already is used as it is.
        """
        source: BatchSource
        if is_array_tree(x):
            source = ArrayBatches(
                x,
                y,
                sample_weight=sample_weight,
                batch_size=batch_size,
                shuffle=shuffle,
                drop_last=drop_last,
            )
        elif y is not None or sample_weight is not None:
            given = "y" if y is not None else "sample_weight"
            raise ValueError(
                f"`{given}` is only for array inputs; the batches of `{argument}` carry their "
                f"targets (and weights, as (x, y, sample_weight) tuples). Received: {argument} of "
                f"type {type(x).__name__} and {given} of type "
                f"{type(y if y is not None else sample_weight).__name__}"
            )
        elif isinstance(x, BatchSource):
            source = x.replace()
        elif isinstance(x, Iterable) and not isinstance(x, (str, bytes)):
            source = IterableBatches(x)
        else:
            raise TypeError(
                f"`{argument}` must be NumPy/MLX arrays or a re-iterable source of batches (an "
                f"mlxkit.data.Stream, a list of batches, ...). Received: {type(x).__name__}"
            )
        if not shard or self.world_size == 1:
            return source
        if source.shard[1] == 1:
            return source.replace(shard=(self.rank, self.world_size))
        if tuple(source.shard) != (self.rank, self.world_size):
            raise ValueError(
                f"`{argument}` is sharded as {tuple(source.shard)}, but this process is rank "
                f"{self.rank} of {self.world_size}. Shard it with (group.rank(), group.size()), "
                f"or leave it unsharded and fit shards it. Received: shard={source.shard!r}"
            )
        return source

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int = 32,
        epochs: int = 1,
        validation_data: Any = None,
        validation_split: float = 0.0,
        validation_freq: int | list[int] = 1,
        shuffle: bool = True,
        class_weight: Mapping[int, float] | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        callbacks: list[Callback] | None = None,
        verbose: Literal["auto", 0, 1, 2] = "auto",
        seed: int | None = None,
        drop_last: bool = False,
        resume_from: str | os.PathLike | None = None,
    ) -> History:
        """Trains the model for `epochs` epochs and returns this run's `History`.

        Args:
            x: Input arrays (with `y`), or a re-iterable source of batches: an `mlxkit.data.Stream`,
                a list of `(x, y)` / `(x, y, sample_weight)` tuples or of dicts. `fit` trains on a
                copy configured for the run (seed, shard): the object passed is not changed.
            y: Target arrays, when `x` is arrays.
            batch_size: Samples per batch, when `x` is arrays.
            epochs: The epoch to stop at (Keras semantics: with `initial_epoch=2, epochs=5`, three
                epochs run).
            validation_data: `(x_val, y_val)` or `(x_val, y_val, val_sample_weight)` arrays, or a
                batch source, evaluated at epoch ends.
            validation_split: Fraction of the arrays (and of `sample_weight`), taken from the end
                before shuffling, held out for validation; the first
                `floor(samples * (1 - validation_split))` samples train (Keras's rounding).
            validation_freq: Validate every this many epochs, or at the listed (1-based) epochs.
                On other epochs the logs have no `val_` keys.
            shuffle: Visit the training arrays in a fresh seeded order each pass.
            class_weight: `{class_index: weight}` (Keras semantics): each sample's loss is weighted
                by the weight of its class, the target (its argmax for one-hot targets); classes
                not listed weigh 1. Applies to training only. Not with `sample_weight`.
            sample_weight: One weight per training sample (or per loss value), for array inputs;
                batch sources carry weights as `(x, y, sample_weight)` batches. The loss is
                `sum(loss * weight) / size` per batch, Keras's default reduction; the metrics are
                not weighted.
            initial_epoch: The epoch to start from.
            steps_per_epoch: Batches per epoch (default: all of them). As in Keras, one pass over
                the data runs on across epochs: with 20 batches and `steps_per_epoch=9`, epochs
                train batches 1-9, 10-18, then 19-20 (with a warning that the data ran out), then
                a new pass starts.
            callbacks: `mlxkit.callbacks.Callback` objects. A new `History` (unless one is given)
                and a `ProgressBar` are added.
            verbose: `"auto"` (a bar on a terminal, a line per epoch otherwise), `0` (silent), `1`
                (bar) or `2` (line per epoch).
            seed: Seeds the data order and `mx.random` (dropout) for a reproducible run. With
                `None`, a batch source that has its own `seed` (an `mlxkit.data.Stream`) keeps it.
            drop_last: Drop the last partial training batch of array inputs. The default, `False`,
                trains it (as Keras does), at the cost of one more compiled shape.
            resume_from: A checkpoint folder (`save_checkpoint`, `ModelCheckpoint`) to resume
                from, mid-epoch included. When `None`, a `BackupAndRestore` callback's backup, if
                one exists, is resumed from.

        Returns:
            A `History` for this call (as in Keras, each `fit` returns a new one; a resumed run's
            also holds the checkpoint's epochs). Its `.history` maps `"loss"`, each metric and
            their `"val_"` twins to per-epoch floats; `.params` is `{"verbose", "epochs",
            "steps"}`.
        """
        check_int(batch_size, "batch_size")
        check_int(epochs, "epochs", minimum=0)
        check_int(initial_epoch, "initial_epoch", minimum=0)
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise ValueError(
                f"`validation_split` must be a number in [0, 1). "
                f"Received: validation_split={validation_split!r}"
            )
        _check_validation_freq(validation_freq)
        if steps_per_epoch is not None:
            check_int(steps_per_epoch, "steps_per_epoch")
        if verbose not in ("auto", 0, 1, 2):
            raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}")
        if validation_split and validation_data is not None:
            raise ValueError(
                "Pass `validation_data` or `validation_split`, not both. "
                f"Received: validation_split={validation_split!r} and validation_data"
            )
        class_table = _class_weight_table(class_weight)
        if class_table is not None and sample_weight is not None:
            raise ValueError(
                "You cannot pass `class_weight` and `sample_weight` at the same time (as in "
                "Keras): fold the class weights into `sample_weight`."
            )
        if class_table is not None or sample_weight is not None:
            self._check_weighted_loss("sample_weight" if class_table is None else "class_weight")
        self._check_trainable()

        if seed is not None:
            mx.random.seed(seed)
        if validation_split:
            if not is_array_tree(x):
                raise ValueError(
                    "`validation_split` needs array inputs; for a batch source pass "
                    f"`validation_data`. Received: x of type {type(x).__name__}"
                )
            (x, y, sample_weight), validation_data = _train_validation_split(
                (x, y, sample_weight), validation_split
            )
        if class_table is not None and is_array_tree(x):
            # Arrays get their weights once, as Keras's array adapter does; batch sources per batch.
            if y is None:
                raise ValueError("`class_weight` needs targets: pass `y` with the arrays `x`.")
            sample_weight = _class_sample_weights(to_mx(y), class_table)
            class_table = None

        train = self._source(
            x,
            y,
            argument="x",
            batch_size=batch_size,
            sample_weight=sample_weight,
            shuffle=shuffle,
            drop_last=drop_last,
            shard=True,
        )
        validation = None
        if validation_data is not None:
            check_validation_tuple(validation_data)
            validation = self._validation_source(validation_data, batch_size)
        self.steps_per_epoch = steps_per_epoch or _length(train)
        self._check_arrays(train, "train_step", validation)

        # A new History per call, as Keras: an earlier fit's History keeps its record.
        given = [c for c in callbacks or [] if isinstance(c, History)]
        self.history = given[0] if given else History()
        callback_list = [*([] if given else [self.history]), *(callbacks or [])]
        modes: dict[Any, Literal["auto", "bar", "line"]] = {"auto": "auto", 1: "bar", 2: "line"}
        mode = modes.get(verbose) if self.is_main_process else None
        if mode is not None and not any(isinstance(c, ProgressBar) for c in callback_list):
            callback_list.append(ProgressBar(mode))
        params = {"verbose": verbose, "epochs": epochs, "steps": self.steps_per_epoch}
        self.callbacks = CallbackList(callback_list, self, params=params)
        self.epochs = epochs
        if seed is None:
            # A batch source that carries its own seed keeps its order.
            seed = train.seed if train.seed is not None else random.SystemRandom().randrange(2**31)
        loop = self.loop
        loop.epoch, loop.batch_in_epoch, loop.seed = initial_epoch, 0, seed
        # Each fit starts a new pass over its data (Keras builds a new EpochIterator per fit).
        loop.pass_epoch, loop.batch_in_pass = initial_epoch, 0
        loop.stop_training = False
        if resume_from is None:
            from mlxkit.callbacks.checkpointing import BackupAndRestore

            backups = [
                c.resume_path() for c in self.callbacks.callbacks if isinstance(c, BackupAndRestore)
            ]
            resume_from = next((path for path in backups if path is not None), None)
        if resume_from is not None:
            from mlxkit.checkpoint import load_checkpoint

            # The saved position must lie in this run's epochs (checkpoints before 0.2 do not
            # record their epoch length): refused before anything is applied.
            load_checkpoint(self, resume_from, steps_per_epoch=self.steps_per_epoch)
        train = train.replace(seed=self.loop.seed)  # the checkpoint's seed, after a resume

        self._check_first_batch(train)
        _check_passes(train, epochs - self.loop.epoch, steps_per_epoch)
        _blas.advise_once()
        if self.group is not None:
            self._synchronize_parameters()
        self.model.train()
        passes = _Passes(train, steps_per_epoch, self.loop)
        # Ctrl-C stops at the end of a step; under distributed training a rank that stopped alone
        # would leave the others waiting in a collective, so there it interrupts as usual.
        self._interrupt = StepBoundaryInterrupt(active=self.group is None)
        with self._interrupt as interrupt:
            try:
                self.callbacks.call("on_train_begin", None)
                epoch_logs: dict[str, float] = {}
                while self.loop.epoch < epochs and not self.loop.stop_training:
                    interrupt.check()
                    try:
                        epoch_logs = self._fit_epoch(
                            passes, class_table, validation, validation_freq
                        )
                    except RuntimeError as error:
                        if self.group is None:
                            raise
                        message = (
                            f"mlxkit: rank {self.rank} of {self.world_size} stopped at epoch "
                            f"{self.loop.epoch + 1}, batch {self.loop.batch_in_epoch + 1}: a "
                            f"collective failed, most likely because another rank died or was "
                            f"killed ({error}). Checkpoints already written are intact: relaunch "
                            "with resume_from= (or BackupAndRestore) to continue."
                        )
                        # Printed at once: mlx.launch terminates the surviving ranks when one
                        # dies, often while the chained traceback below is still being written.
                        print(message, file=sys.stderr, flush=True)
                        raise RuntimeError(message) from error
                interrupt.check()
            except KeyboardInterrupt:
                self._report_interrupt(at_step_end=interrupt.stopped_at_step_end)
                raise
        self.callbacks.call("on_train_end", epoch_logs)
        return self.history

    def _report_interrupt(self, *, at_step_end: bool) -> None:
        """Says where `fit` stopped, which backup holds what, and the call that resumes.

        At the end of a step (the first Ctrl-C) the state is whole, so a `BackupAndRestore`
        backup of it is written; a `KeyboardInterrupt` from anywhere else (a second Ctrl-C, a
        callback) may have left the in-memory state part-way, and the last backup is named.
        """
        from mlxkit.callbacks.checkpointing import BackupAndRestore

        loop = self.loop
        lines = [
            f"mlxkit: training interrupted at epoch {loop.epoch + 1}, after batch "
            f"{loop.batch_in_epoch} of {self.steps_per_epoch or '?'} (global step "
            f"{loop.global_step})."
        ]
        backup = next(
            (c for c in self.callbacks.callbacks if isinstance(c, BackupAndRestore)), None
        )
        if backup is not None:
            if at_step_end:
                backup.backup()
                held = "this state"
            else:
                held = f"the state of its last save (global step {backup.saved_step})"
            lines.append(
                f"The backup in {backup.backup_dir!r} holds {held}. To resume, run the same "
                f"fit again with BackupAndRestore({backup.backup_dir!r}) in its callbacks."
            )
        elif at_step_end:
            lines.append(
                "No backup holds this state; the trainer does. Keep it with "
                "trainer.save_checkpoint('checkpoint') and resume with trainer.fit(..., "
                "resume_from='checkpoint'), or add BackupAndRestore(folder) to the callbacks "
                "to keep a backup as training goes."
            )
        else:
            lines.append(
                "No backup was kept, and the trainer may have stopped part-way through a step. "
                "Add BackupAndRestore(folder) to the callbacks to resume after an interrupt."
            )
        if self.is_main_process:
            print("\n".join(lines), file=sys.stderr, flush=True)

    def _fit_epoch(self, passes, class_table, validation, validation_freq) -> dict[str, float]:
        loop = self.loop
        epoch, first_batch = loop.epoch, loop.batch_in_epoch
        if first_batch == 0:
            self._reset_metrics()
        self.callbacks.call("on_epoch_begin", epoch, None)
        batch_begin = self.callbacks.wants("on_train_batch_begin")
        batch_end = self.callbacks.wants("on_train_batch_end")
        logs = LazyLogs(self._logs) if batch_begin or batch_end else None
        start_time = time.perf_counter()
        samples_start = self.samples_seen()
        step = first_batch
        state = self.compiled_state()
        interrupt = self._interrupt
        self.pipeline.start_epoch()
        for raw in passes.epoch_batches():
            if batch_begin:
                self.callbacks.call("on_train_batch_begin", step, logs)
            update = (loop.global_step + 1) % self.accumulate_steps == 0
            batch = self._unpack(raw)
            if class_table is not None:
                batch = _with_class_weights(batch, class_table)
            self._call_step("train" if update else "train_accumulate", batch)
            # Evaluate the step, or queue it and wait for the one before (see StepPipeline).
            self.pipeline.step_built(state, self.loss_state["sums"])
            step += 1
            loop.global_step += 1
            loop.batch_in_epoch = step
            loop.batch_in_pass += 1
            if batch_end:
                logs = LazyLogs(self._logs)
                self.callbacks.call("on_train_batch_end", step - 1, logs)
            # Under distributed training a stop waits for the epoch end, where all ranks agree on
            # it; a rank that stopped alone would leave the others waiting in a collective.
            interrupt.check()
            if loop.stop_training and self.group is None:
                break
        mx.eval(self.compiled_state())
        seconds = time.perf_counter() - start_time
        if step == 0:
            raise ValueError(_no_batch_message(passes.source, epoch))
        epoch_logs = self._logs(synchronize=True)
        self._report_bad_loss(epoch)
        if "learning_rate" in self.optimizer.state:  # not for Adafactor's relative steps
            epoch_logs["learning_rate"] = to_float(self.optimizer.learning_rate)
        epoch_logs.update(self._loss_scale_logs())
        samples = (self.samples_seen() - samples_start) * self.world_size
        epoch_logs["samples_per_second"] = samples / max(seconds, 1e-9)
        epoch_logs["peak_memory_mb"] = mx.get_peak_memory() / 2**20
        epoch_logs["active_memory_mb"] = mx.get_active_memory() / 2**20
        if validation is not None and _due(epoch, validation_freq):
            val_logs = self._evaluate(validation, self.callbacks)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        # The epoch is complete: a checkpoint written from here on resumes at the next one, in
        # the same pass over the data unless this one ended.
        loop.epoch, loop.batch_in_epoch = epoch + 1, 0
        if passes.pass_ended:
            passes.start_new_pass(epoch + 1)
        self.callbacks.call("on_epoch_end", epoch, epoch_logs)
        if self.group is not None:
            votes = mx.distributed.all_sum(mx.array(int(loop.stop_training)), group=self.group)
            loop.stop_training = to_float(votes) > 0
        return epoch_logs

    def _synchronize_parameters(self) -> None:
        """Gives every rank rank 0's weights, so that data-parallel replicas start identical."""
        flat = flat_items(self.model.parameters())
        synced = [
            (
                key,
                mx.distributed.all_sum(
                    value if self.is_main_process else mx.zeros_like(value), group=self.group
                ),
            )
            for key, value in flat
        ]
        self.model.update(tree_unflatten(synced))
        mx.eval(self.model.parameters())

    def _validation_source(self, validation_data: Any, batch_size: int) -> BatchSource:
        parts = isinstance(validation_data, tuple) and len(validation_data) in (2, 3)
        if parts and is_array_tree(validation_data[0]):
            x, y, sample_weight = unpack_batch(validation_data)
        else:
            x, y, sample_weight = validation_data, None, None
        if sample_weight is not None:
            self._check_weighted_loss("validation_data")
        return self._source(
            x,
            y,
            argument="validation_data",
            batch_size=batch_size,
            sample_weight=sample_weight,
            shard=True,
        )

    def _check_weighted_loss(self, argument: str) -> None:
        """Refuses weights that the loss cannot apply, before anything is compiled."""
        if type(self).compute_loss is not Trainer.compute_loss:
            return  # an override receives `sample_weight` and applies it itself
        try:
            parameters = inspect.signature(self.loss).parameters.values()
        except (TypeError, ValueError):
            return
        if not any(p.name == "reduction" or p.kind is p.VAR_KEYWORD for p in parameters):
            raise ValueError(
                f"`{argument}` weights the loss per sample, so the loss must accept "
                "`reduction='none'` and return one value per sample (every mlxkit.losses function "
                "does). Give the loss a `reduction` argument, or override "
                "`Trainer.compute_loss(outputs, targets, sample_weight)`. "
                f"Received: loss={self.loss!r}"
            )

    def _check_trainable(self) -> None:
        """Refuses a model with nothing to train (MLX would fail inside `value_and_grad`)."""
        if type(self).train_step is not Trainer.train_step:
            return  # a custom step may train other modules (a GAN's discriminator, say)
        if not flat_items(self.model.trainable_parameters()):
            total = len(flat_items(self.model.parameters()))
            raise ValueError(
                "The model has no trainable parameters: all of them are frozen (by "
                "`model.freeze()`, say), so fit has nothing to train. Unfreeze the layers that "
                "should train (`model.unfreeze()`, or `model.layer.unfreeze()` for one layer) "
                f"before fit. Received: model of type {type(self.model).__name__} with 0 "
                f"trainable of {total} parameter arrays."
            )

    def _check_first_batch(self, source: BatchSource) -> None:
        """Validates the batch structure before anything is compiled or trained."""
        if isinstance(source, ArrayBatches):
            if isinstance(self.inputs, str) or self.targets is not None:
                raise ValueError(
                    "`inputs=` / `targets=` name keys of dict batches, but fit received arrays."
                )
            return
        if isinstance(source, IterableBatches) and isinstance(source.batches, (list, tuple)):
            if not source.batches:
                raise ValueError("`x` is an empty list of batches.")
            if len(self._unpack(source.batches[0])) == 3:
                self._check_weighted_loss("x")  # (x, y, sample_weight) batches

    def _check_arrays(
        self,
        source: BatchSource,
        step: Literal["train_step", "test_step"],
        validation: BatchSource | None = None,
    ) -> None:
        """Refuses arrays the model or the loss cannot take, before anything is compiled or trained.

        The model's graph is built on the first batch (lazily: nothing is computed, and every
        array the steps capture is put back), so a wrong input width fails here, naming `x` and
        the batch's shapes. Integer targets of a class-index loss (mlxkit's cross-entropies) are
        checked against the model's output width, `validation_data`'s sample shapes against
        `x`'s. An override of `step` (or of `compute_loss`) may read batches its own way, so
        then only the shapes of `validation_data` are checked.
        """
        if not isinstance(source, ArrayBatches):
            return
        if isinstance(validation, ArrayBatches):
            check_validation_shapes(source, validation)
        if getattr(type(self), step) is not getattr(Trainer, step):
            return
        library_loss = getattr(self.loss, "func", self.loss) in losses_module.ALL.values()
        if source.y is None and library_loss and type(self).compute_loss is Trainer.compute_loss:
            # mlxkit's losses all need targets; a loss of the user's own may not.
            raise ValueError(
                f"`y` is missing: the loss needs targets for every sample of `x`. Pass them as "
                f"`y=`, or (x, y) batches. Received: x of shape {shapes(source.x)}, y=None"
            )
        first = _slice(source.x, 0, source.batch_size)
        saved, was_training = snapshot(self.compiled_state()), self.model.training
        self.model.train(step == "train_step")  # the mode the step runs in
        try:
            outputs = self.forward(first)
        except Exception as error:
            raise ValueError(
                f"The model cannot run on the first batch of `x`: {error} Received: a batch of x "
                f"of shape {shapes(first)}. Check that the model's input size matches the data."
            ) from error
        finally:
            restore(self.compiled_state(), saved)
            self.model.train(was_training)
        classes = class_count(outputs, source.y, self._class_axis())
        if classes is not None:
            check_class_indices(source.y, classes, "y")
            if isinstance(validation, ArrayBatches):
                check_class_indices(validation.y, classes, "validation_data")

    def _class_axis(self) -> int | None:
        """The class axis of the loss when it takes integer class indices, else `None`."""
        if type(self).compute_loss is not Trainer.compute_loss:
            return None
        function = getattr(self.loss, "func", self.loss)  # through functools.partial
        if function not in (
            losses_module.cross_entropy,
            losses_module.sparse_categorical_crossentropy,
        ):
            return None
        return int(getattr(self.loss, "keywords", {}).get("axis", -1))

    # ------------------------------------------------------------------ evaluate / predict
    def evaluate(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int = 32,
        sample_weight: Any = None,
        callbacks: list[Callback] | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """Returns the loss and metrics over all of `x` (the last partial batch included).

        As in Keras: the loss alone (a float) when the trainer has no metrics, else the list
        `[loss, *metrics]` in the order the metrics were given; with `return_dict=True`, a dict
        keyed by name. `callbacks` serve this call only: the callbacks of the last `fit`, which
        checkpoints save, stay in place. A callback can end the evaluation after the current
        batch with `trainer.stop_evaluating = True`.

        Args:
            x: Input arrays (with `y`), or a re-iterable source of batches.
            y: Target arrays, when `x` is arrays.
            batch_size: Samples per batch, when `x` is arrays.
            sample_weight: One weight per sample (arrays only), weighting the loss as in `fit`.
            callbacks: Callbacks for this call.
            return_dict: Return `{"loss": ..., metric name: ...}` instead of a float or list.

        Example:
            >>> loss, accuracy = trainer.evaluate(x_test, y_test)
            >>> results = trainer.evaluate(x_test, y_test, return_dict=True)
            >>> {name: round(value, 4) for name, value in results.items()}
            {'loss': 0.4929, 'accuracy': 0.7812}
        """
        check_int(batch_size, "batch_size")
        if sample_weight is not None:
            self._check_weighted_loss("sample_weight")
        batches = self._source(
            x, y, argument="x", batch_size=batch_size, sample_weight=sample_weight, shard=True
        )
        self._check_arrays(batches, "test_step")
        logs = self._evaluate(batches, CallbackList(callbacks or [], self))
        if return_dict:
            return logs
        # Keras's order: the loss, then the metrics as given.
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def _evaluate(self, batches: BatchSource, callbacks: CallbackList) -> dict[str, float]:
        # Evaluation may run mid-fit (validation, or a callback calling evaluate): it leaves the
        # training sums and the model's mode as it found them.
        saved = self._save_running_state()
        was_training = self.model.training
        self._reset_metrics()
        self.model.eval()
        callbacks.call("on_test_begin", None)
        wants_begin = callbacks.wants("on_test_batch_begin")
        wants_end = callbacks.wants("on_test_batch_end")
        self.stop_evaluating = False
        for index, raw in enumerate(_epoch_batches(batches, 0)):
            if wants_begin:
                callbacks.call("on_test_batch_begin", index, None)
            self._call_step("test", self._unpack(raw))
            mx.async_eval(self.loss_state, [m.state for m in self.metrics])
            if wants_end:
                callbacks.call("on_test_batch_end", index, LazyLogs(self._logs))
            if self.stop_evaluating:
                break
        logs = self._logs(synchronize=True)
        callbacks.call("on_test_end", logs)
        self._restore_running_state(saved)
        self.model.train(was_training)
        return logs

    def predict(
        self, x: Any, *, batch_size: int = 32, callbacks: list[Callback] | None = None
    ) -> Any:
        """Returns the model's outputs on all of `x`, concatenated (a tree for multi-output models).

        `callbacks` serve this call only (as in Keras); one can end the prediction after the
        current batch with `trainer.stop_predicting = True` (the outputs so far are returned).

        Example:
            >>> probabilities = mx.softmax(trainer.predict(x_test), axis=-1)
            >>> probabilities.shape  # (samples, classes)
            (32, 2)
        """
        check_int(batch_size, "batch_size")
        batches = self._source(x, None, argument="x", batch_size=batch_size)
        callback_list = CallbackList(callbacks or [], self)
        was_training = self.model.training
        self.model.eval()
        callback_list.call("on_predict_begin", None)
        outputs = []
        self.stop_predicting = False
        # Epoch 0 each call: the same order on every call, as evaluate.
        for index, raw in enumerate(_epoch_batches(batches, 0)):
            callback_list.call("on_predict_batch_begin", index, None)
            batch = self._unpack(raw)
            outputs.append(self._call_step("predict", batch))
            mx.async_eval(outputs[-1])
            callback_list.call("on_predict_batch_end", index, None)
            if self.stop_predicting:
                break
        callback_list.call("on_predict_end", None)
        self.model.train(was_training)
        if not outputs:
            raise ValueError("predict: `x` yielded no batch.")
        return tree_map(
            lambda *parts: mx.concatenate(list(parts), axis=0), outputs[0], *outputs[1:]
        )

    # ------------------------------------------------------------------ logs and state
    def _logs(self, *, synchronize: bool = False) -> dict[str, float]:
        """Reads the running loss and metrics back to Python: one device sync.

        With `synchronize=True` under distributed training, the sums are all-reduced first so every
        rank logs the global values. Batch-level logs stay local: they are read by rank 0's
        callbacks alone, and a collective on one rank would wait forever.
        """
        states = [self.loss_state, *(m.state for m in self.metrics)]
        saved = [dict(state) for state in states]
        if synchronize and self.group is not None:
            for state, summed in zip(states, all_sum_states(states, self.group)):
                state.update(summed)
        total, count = self.loss_state["sums"]
        values = [total / mx.maximum(count, 1.0)]
        values += [m.result() for m in self.metrics]
        mx.eval(values)
        for state, original in zip(states, saved):
            state.update(original)
        logs = {"loss": to_float(values[0])}
        for metric, value in zip(self.metrics, values[1:]):
            logs[metric.name] = to_float(value)
        return logs

    def _loss_scale_logs(self) -> dict[str, float]:
        """float16's `loss_scale` and `skipped_steps` (since the run began), for the epoch logs."""
        if not self.loss_scale_state:
            return {}
        return {
            "loss_scale": to_float(self.loss_scale_state["scale"]),
            "skipped_steps": to_float(self.loss_scale_state["skipped_steps"]),
        }

    def first_bad_step(self) -> int | None:
        """The current epoch's first batch (0-based) with a NaN or infinite loss, or `None`.

        Reads the device's running sums (one sync).
        """
        total, _ = self.loss_state["sums"]
        if math.isfinite(to_float(total)):
            return None
        return int(to_float(self.loss_state["finite_steps"][0]))

    def _report_bad_loss(self, epoch: int) -> None:
        first_bad = self.first_bad_step()
        if first_bad is not None and self.is_main_process:  # the ranks share the loss
            print(
                f"mlxkit: the training loss was NaN or infinite at epoch {epoch + 1}, "
                f"step {first_bad + 1} (1-based). Lower the learning rate, clip gradients "
                "(clip_grad_norm=) or check the data; TerminateOnNaN stops training on it.",
                flush=True,
            )

    def samples_seen(self) -> float:
        """Samples this process trained on in the current epoch (one device sync)."""
        return to_float(self.loss_state["sums"][1])

    def _reset_metrics(self) -> None:
        fresh = _zero_loss_state()
        for key in fresh:
            self.loss_state[key] = fresh[key]
        for metric in self.metrics:
            metric.reset()

    def _save_running_state(self) -> tuple[dict[str, mx.array], list[dict[str, mx.array]]]:
        return dict(self.loss_state), [dict(m.state) for m in self.metrics]

    def _restore_running_state(self, saved) -> None:
        loss_state, metric_states = saved
        self.loss_state.update(loss_state)
        for metric, state in zip(self.metrics, metric_states):
            metric.state.update(state)

    def save_checkpoint(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Writes a resumable checkpoint folder (see `mlxkit.checkpoint`); returns its path.

        An existing mlxkit checkpoint at `path` is replaced; anything else that exists there is
        refused unless `overwrite=True` (see `mlxkit.checkpoint.save_checkpoint`).
        """
        from mlxkit.checkpoint import save_checkpoint

        return save_checkpoint(self, path, overwrite=overwrite)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restores everything a checkpoint holds (strict: a mismatch applies nothing)."""
        from mlxkit.checkpoint import load_checkpoint

        load_checkpoint(self, path)


def unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
    """Splits a batch into `(inputs, targets, sample_weight)`, Keras's `unpack_x_y_sample_weight`.

    For overrides of `train_step` / `test_step`: a batch is `(x, y)`, or `(x, y, sample_weight)`
    when the data has weights; missing parts are `None`.

    Example:
        >>> x, y, sample_weight = unpack_batch((mx.zeros((2, 3)), mx.zeros((2,))))
        >>> sample_weight is None
        True
    """
    if isinstance(batch, tuple) and len(batch) == 3:
        return batch
    if isinstance(batch, tuple) and len(batch) == 2:
        return batch[0], batch[1], None
    if isinstance(batch, tuple) and len(batch) == 1:
        return batch[0], None, None
    return batch, None, None


def _zero_loss_state() -> dict[str, mx.array]:
    return {
        "sums": mx.zeros((2,), dtype=mx.float32),
        "finite_steps": mx.zeros((2,), dtype=mx.int32),
    }


def _batch_size(outputs: Any) -> int:
    leaf = outputs
    while isinstance(leaf, (list, tuple, dict)):
        leaf = next(iter(leaf.values())) if isinstance(leaf, dict) else leaf[0]
    return leaf.shape[0] if getattr(leaf, "ndim", 0) else 1


def _epoch_batches(source: BatchSource, epoch: int, start_batch: int = 0) -> Iterator[Any]:
    """The batches of one epoch of `source`, from batch `start_batch` on."""
    source.set_epoch(epoch, start_batch=start_batch)
    return iter(source)


def _one_shot(source: BatchSource) -> Iterator[Any] | None:
    """The iterator (a generator, say) that `source` wraps, which one pass exhausts, or `None`."""
    batches = source.batches if isinstance(source, IterableBatches) else None
    return batches if isinstance(batches, Iterator) else None


def _check_passes(source: BatchSource, epochs: int, steps_per_epoch: int | None) -> None:
    """Refuses a one-shot iterator that `epochs` full passes would read more than once."""
    batches = _one_shot(source)
    if epochs > 1 and steps_per_epoch is None and batches is not None:
        raise ValueError(
            f"`x` is a one-shot iterator ({type(batches).__name__}): the first epoch reads it "
            f"to the end, and the {epochs - 1} after it would get no batch. Pass a re-iterable "
            "(a list of batches, an mlxkit.data.Stream, an object whose __iter__ starts over), or "
            f"steps_per_epoch= for an endless generator. Received: x of type "
            f"{type(batches).__name__}, epochs={epochs}"
        )


def _no_batch_message(source: BatchSource, epoch: int) -> str:
    if _one_shot(source) is not None:
        return (
            f"The training data yielded no batch in epoch {epoch + 1}: `x` is an iterator "
            "(a generator, say) that an earlier epoch exhausted. Pass a re-iterable (a list of "
            "batches, an mlxkit.data.Stream), or a generator that never ends with "
            "steps_per_epoch=."
        )
    return (
        f"The training data yielded no batch in epoch {epoch + 1}. With drop_last=True every "
        "batch must be full: is batch_size larger than the dataset?"
    )


def _takes_update(train_step: Callable[..., Any]) -> bool:
    parameters = inspect.signature(train_step).parameters.values()
    return any(p.name == "update" or p.kind is p.VAR_KEYWORD for p in parameters)


def _length(batches: Any) -> int | None:
    try:
        return len(batches)
    except TypeError:
        return None


def _due(epoch: int, validation_freq: int | list[int]) -> bool:
    # The ints `_check_validation_freq` accepts: NumPy's too.
    if isinstance(validation_freq, (int, np.integer)):
        return (epoch + 1) % validation_freq == 0
    return epoch + 1 in validation_freq


def _slice(tree: Any, start: int, stop: int | None) -> Any:
    return tree_map(lambda a: a[start:stop], tree, is_leaf=lambda v: isinstance(v, np.ndarray))


def _train_validation_split(arrays: tuple[Any, ...], validation_split: float) -> tuple[Any, Any]:
    """Keras's `train_validation_split`: the last samples, before any shuffling, are held out.

    The first `floor(samples * (1 - validation_split))` samples train, exactly Keras's rounding.
    `arrays` is `(x, y, sample_weight)`, any of which but `x` may be `None`.
    """
    total = num_samples(arrays[0], "x")
    split_at = math.floor(total * (1.0 - validation_split))
    if split_at == 0 or split_at == total:
        raise ValueError(
            f"Training data contains {total} samples, which is not sufficient to split it into a "
            f"validation and training set as specified by `validation_split={validation_split}`. "
            "Either provide more data, or a different value for the `validation_split` argument."
        )
    train = tuple(None if a is None else _slice(a, 0, split_at) for a in arrays)
    validation = tuple(None if a is None else _slice(a, split_at, None) for a in arrays)
    return train, validation


def _check_validation_freq(validation_freq: Any) -> None:
    def positive(value: Any) -> bool:
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        return is_int and bool(value > 0)

    if positive(validation_freq):
        return
    if isinstance(validation_freq, (list, tuple)) and all(positive(v) for v in validation_freq):
        return
    raise ValueError(
        "`validation_freq` must be a positive int (validate every that many epochs) or a list of "
        f"1-based epochs to validate at. Received: validation_freq={validation_freq!r}"
    )


def _class_weight_table(class_weight: Any) -> mx.array | None:
    """`{class_index: weight}` as a lookup table (index -> weight; unlisted classes weigh 1)."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, Mapping):
        raise ValueError(
            "`class_weight` must be a dict mapping class indices to weights. "
            f"Received: class_weight={class_weight!r} of type {type(class_weight).__name__}"
        )
    weights: dict[int, float] = {}
    for key, value in class_weight.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            index = -1
        if isinstance(key, bool) or index < 0:
            raise ValueError(
                "`class_weight` must be a dict with class indices (ints >= 0) as keys. "
                f"Received: an invalid key {key!r} of type {type(key).__name__}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(
                f"`class_weight` values must be numbers. Received: class_weight[{key!r}]={value!r}"
            )
        weights[index] = float(value)
    table = np.ones(max(weights, default=-1) + 1, dtype=np.float32)
    for index, value in weights.items():
        table[index] = value
    return mx.array(table)


def _class_sample_weights(targets: mx.array, table: mx.array) -> mx.array:
    """Each sample's class weight, Keras's `class_weight_to_sample_weights`: the class is the
    target, rounded, or the argmax of a one-hot target row; classes not in the table weigh 1."""
    if not isinstance(targets, mx.array) or targets.ndim > 2:
        shape = getattr(targets, "shape", None)
        raise ValueError(
            "`class_weight` needs one target per sample: class indices of shape (samples,) or "
            f"(samples, 1), or one-hot rows (samples, classes). Received: targets of shape {shape}"
        )
    if targets.ndim == 2:
        targets = mx.argmax(targets, axis=-1) if targets.shape[-1] != 1 else targets[:, 0]
    classes = mx.round(targets.astype(mx.float32)).astype(mx.int32)
    if table.size == 0:
        return mx.ones(classes.shape, dtype=mx.float32)
    known = (classes >= 0) & (classes < table.size)
    return mx.where(known, table[mx.clip(classes, 0, table.size - 1)], 1.0)


def _with_class_weights(batch: Batch, table: mx.array) -> Batch:
    """A batch source's batch with its class weights as sample weights."""
    x, y, sample_weight = unpack_batch(batch)
    if sample_weight is not None:
        raise ValueError(
            "You cannot use `class_weight` with batches that carry sample weights (x, y, "
            "sample_weight), as in Keras: fold the class weights into the sample weights."
        )
    return x, y, _class_sample_weights(y, table)


class _Passes:
    """Keras's `EpochIterator` for `fit`: which batches each epoch trains.

    One pass over the training data runs on across epochs when `steps_per_epoch` is shorter than
    it, and an epoch that reaches the end of the data stops there (with Keras's warning when
    `steps_per_epoch` asked for more); the next epoch starts a new pass, in the order of the
    epoch it starts in. The position lives in the loop state (`pass_epoch`, `batch_in_pass`), so a
    checkpoint resumes mid-pass; the live iterator is kept between the epochs of one `fit`.
    """

    def __init__(self, source: BatchSource, steps_per_epoch: int | None, loop: LoopState):
        self.source, self.steps_per_epoch, self.loop = source, steps_per_epoch, loop
        self.num_batches = _length(source)
        self.iterator: Iterator[Any] | None = None
        self.pass_ended = False

    def start_new_pass(self, epoch: int) -> None:
        self.loop.pass_epoch, self.loop.batch_in_pass = epoch, 0
        self.iterator, self.pass_ended = None, False

    def epoch_batches(self) -> Iterator[Any]:
        """The current epoch's batches; the caller counts each trained one in the loop state."""
        loop, steps = self.loop, self.steps_per_epoch or self.num_batches
        while steps is None or loop.batch_in_epoch < steps:
            if self.num_batches is not None and loop.batch_in_pass >= self.num_batches:
                self.pass_ended = True
                break
            if self.iterator is None:
                self.iterator = _epoch_batches(self.source, loop.pass_epoch, loop.batch_in_pass)
            try:
                batch = next(self.iterator)
            except StopIteration:
                if loop.batch_in_epoch == 0 and loop.batch_in_pass > 0 and self.steps_per_epoch:
                    # A source of unknown length ended with the previous epoch: start over.
                    self.start_new_pass(loop.epoch)
                    continue
                self.pass_ended = True
                break
            yield batch
        else:
            known = self.num_batches is not None
            self.pass_ended = known and loop.batch_in_pass >= (self.num_batches or 0)
            return
        if self.steps_per_epoch is not None and loop.batch_in_epoch < self.steps_per_epoch:
            warnings.warn(
                f"Your input ran out of data: epoch {loop.epoch + 1} trained "
                f"{loop.batch_in_epoch} of steps_per_epoch={self.steps_per_epoch} batches. As in "
                "Keras, the next epoch starts a new pass over the data; make steps_per_epoch "
                "divide the number of batches to keep epochs equal.",
                UserWarning,
                stacklevel=4,
            )
