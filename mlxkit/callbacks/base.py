"""The `Callback` base class, the `CallbackList` that dispatches to callbacks, and lazy batch logs.

Hooks use Keras's names. A hook that no callback overrides is never called, and batch-level logs
are a `LazyLogs` mapping whose values reach Python (one `.item()` each) only if a callback reads
them, so callbacks that do not look at batches cost nothing per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import mlx.core as mx

if TYPE_CHECKING:
    from mlxkit.trainer import Trainer

HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class LazyLogs(Mapping[str, float]):
    """A read-only `dict[str, float]` that computes its values on first access.

    The Trainer passes one to batch hooks: reading it syncs the device once, not reading it costs
    nothing.

    Example:
        >>> logs = LazyLogs(lambda: {"loss": 0.5})
        >>> logs["loss"]
        0.5
    """

    def __init__(self, compute: Callable[[], dict[str, float]]):
        self._compute = compute
        self._values: dict[str, float] | None = None

    def _resolve(self) -> dict[str, float]:
        if self._values is None:
            self._values = self._compute()
        return self._values

    def __getitem__(self, key: str) -> float:
        return self._resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())

    def __repr__(self) -> str:
        return f"LazyLogs({self._resolve()!r})"


class Callback:
    """Base class for callbacks: override the hooks you need.

    Every hook receives `logs`, a mapping of names to floats (`"loss"`, metric names, `"val_"`
    twins at epoch end). `self.trainer` is set before training starts. Read the loop position
    through `self.trainer.epoch`, `.batch_in_epoch` and `.global_step` (batches, not optimizer
    updates); set `self.trainer.stop_training = True` to stop after the current batch.

    `on_batch_begin` / `on_batch_end` are Keras's aliases of `on_train_batch_begin` /
    `on_train_batch_end`: the training-batch hooks call them, so overriding either works.
    `self.params` holds `fit`'s `{"verbose", "epochs", "steps"}` (Keras's `set_params`).

    Callbacks that must survive a resume implement `state_dict()` / `load_state_dict(state)` with
    JSON-serialisable values; checkpoints save them.

    Example:
        >>> class PrintLoss(Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print(f"epoch {epoch}: loss {logs['loss']:.3f}")
    """

    trainer: Trainer
    params: dict[str, Any] | None = None
    # True for callbacks that write checkpoints (`ModelCheckpoint`, `BackupAndRestore`).
    saves_checkpoints: bool = False

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def set_params(self, params: dict[str, Any]) -> None:
        """Receives `fit`'s parameters: `{"verbose": ..., "epochs": ..., "steps": ...}`."""
        self.params = params

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state that a checkpoint saves (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict()` returned."""
        del state

    def state_arrays(self) -> dict[str, mx.array]:
        """Arrays that a checkpoint saves in safetensors (EarlyStopping's best weights, say)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, mx.array]) -> None:
        """Restores what `state_arrays()` returned."""
        del arrays

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_train_end(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        """Keras's alias of `on_train_batch_begin`, which calls it."""

    def on_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        """Keras's alias of `on_train_batch_end`, which calls it."""

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        self.on_batch_end(batch, logs)

    def on_test_begin(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_test_end(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: Mapping[str, float] | None = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None: ...
    def on_predict_begin(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_predict_end(self, logs: Mapping[str, float] | None = None) -> None: ...
    def on_predict_batch_begin(
        self, batch: int, logs: Mapping[str, float] | None = None
    ) -> None: ...
    def on_predict_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None: ...


# Keras's aliases: the base class's training-batch hooks call them, so a callback that overrides
# an alias wants the hook.
_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def _overrides(callback: Callback, hook: str) -> bool:
    names = [hook, _ALIASES[hook]] if hook in _ALIASES else [hook]
    return any(
        name in vars(callback) or getattr(type(callback), name) is not getattr(Callback, name)
        for name in names
    )


class CallbackList:
    """Calls each hook on the callbacks that override it, in order, checkpoint writers last.

    The Trainer builds one per `fit`, `evaluate` and `predict` call, as Keras does; `fit` passes
    `params` (`{"verbose", "epochs", "steps"}`), which every callback receives in `set_params`.

    `wants(hook)` tells the Trainer whether any callback overrides a hook, so that it can skip
    building batch logs altogether.

    Example:
        >>> from mlxkit.callbacks import History
        >>> callbacks = CallbackList([History()], trainer)
        >>> callbacks.wants("on_epoch_end"), callbacks.wants("on_train_batch_end")
        (True, False)
    """

    def __init__(
        self,
        callbacks: list[Callback],
        trainer: Trainer,
        params: dict[str, Any] | None = None,
    ):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(
                    "`callbacks` must be a list of mlxkit.callbacks.Callback instances. "
                    f"Received: an element of type {type(callback).__name__}: {callback!r}"
                )
            callback.set_trainer(trainer)
            if params is not None:
                callback.set_params(params)
        # Callbacks that write checkpoints run each hook after the others, so that a checkpoint
        # holds every callback's state as of the epoch or step it was written at.
        ordered = sorted(self.callbacks, key=lambda c: bool(getattr(c, "saves_checkpoints", False)))
        self._by_hook = {
            hook: [getattr(c, hook) for c in ordered if _overrides(c, hook)] for hook in HOOKS
        }

    def wants(self, hook: str) -> bool:
        return bool(self._by_hook[hook])

    def call(self, hook: str, *args: Any) -> None:
        for method in self._by_hook[hook]:
            method(*args)
