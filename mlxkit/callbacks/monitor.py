"""Callbacks that watch one logged quantity: `EarlyStopping` and `ReduceLROnPlateau`.

`Monitor` holds the logic they share with `ModelCheckpoint`: which way is better (`mode`), what
counts as an improvement, and what happens when the value is missing from an epoch's logs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from mlxkit._validation import check_int
from mlxkit.callbacks.base import Callback

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

Mode = Literal["auto", "min", "max"]


class Monitor:
    """Tracks whether a logged value improves; shared by the monitor-based callbacks.

    With `mode="auto"` the direction comes from what is logged under that name, as in Keras:
    `"loss"` (and `"val_loss"`) is minimised, and a metric is minimised or maximised as its
    `direction` attribute says (`Accuracy`: max, `MeanAbsoluteError`: min). Any other name with
    `mode="auto"` is an error that lists the names whose direction is known; pass `mode="min"` or
    `mode="max"` for those.

    Args:
        owner: The callback's name, for messages.
        monitor: The log key to watch, e.g. `"val_loss"`.
        mode: `"min"`, `"max"`, or `"auto"` (resolved by `resolve` from the trainer's metrics).
        min_delta: The smallest change that counts as an improvement.

    Example:
        >>> from mlxkit import metrics
        >>> tracker = Monitor("EarlyStopping", "val_accuracy", "auto", 0.0)
        >>> tracker.resolve([metrics.Accuracy()])
        'max'
        >>> tracker.improved(0.9, 0.8), tracker.improved(0.7, None)
        (True, True)
    """

    def __init__(self, owner: str, monitor: str, mode: Mode, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                f"{owner}: `mode` must be 'auto', 'min' or 'max'. Received: mode={mode!r}"
            )
        self.owner, self.monitor, self.requested_mode = owner, monitor, mode
        self.mode: Literal["min", "max"] | None = None if mode == "auto" else mode
        self.min_delta = abs(min_delta)

    def resolve(self, metrics: Sequence[Any]) -> Literal["min", "max"]:
        """Fixes the direction for `mode="auto"` from the metrics the trainer logs, and returns it.

        Raises:
            ValueError: If `mode="auto"` and the monitored name is neither a loss nor a metric
                that declares its direction; the message lists the names that are.
        """
        if self.requested_mode != "auto":
            self.mode = self.requested_mode
            return self.mode
        known: dict[str, Literal["min", "max"]] = {"loss": "min"}
        for metric in metrics:
            direction = getattr(metric, "direction", None)
            if direction in ("min", "max"):
                known[metric.name] = direction
        name = self.monitor.removeprefix("val_")
        if name not in known:
            choices = sorted({*known, *(f"val_{key}" for key in known)})
            raise ValueError(
                f"{self.owner}: cannot tell whether monitor={self.monitor!r} should be minimised "
                f"or maximised: with mode='auto' it must be a loss or a metric that declares its "
                f"direction ({', '.join(choices)}). Pass mode='min' or mode='max'."
            )
        self.mode = known[name]
        return self.mode

    def value(self, logs: Mapping[str, float] | None, *, action: str) -> float | None:
        """The monitored value in `logs`, or None after a warning if this epoch did not log it.

        Args:
            logs: The epoch's logs.
            action: What is skipped without the value, for the warning ("early stopping").
        """
        logs = logs or {}
        if self.monitor in logs:
            return float(logs[self.monitor])
        if self.monitor.startswith("val_") and not any(key.startswith("val_") for key in logs):
            reason = (
                "no validation ran this epoch (validation runs only with validation_data or "
                "validation_split, at the epochs validation_freq selects)"
            )
        else:
            reason = "it is not among this epoch's logs"
        warnings.warn(
            f"{self.owner}: {action} is conditioned on monitor={self.monitor!r}, but {reason}; "
            f"skipped this epoch. Keys present: {', '.join(sorted(logs))}.",
            stacklevel=3,
        )
        return None

    def improved(self, current: float, reference: float | None) -> bool:
        """Whether `current` beats `reference` by more than `min_delta` (None: nothing yet)."""
        if self.mode is None:
            raise RuntimeError(f"{self.owner}: Monitor.resolve() must run before comparisons.")
        if math.isnan(current):
            return False
        if reference is None:
            return True
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta


def load_best(value: Any) -> float | None:
    """A saved `best` back from a callback state (None, or a number; mlxkit 0.1.0 saved ±inf)."""
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return None
    return float(value)


def say(callback: Callback, verbose: int, message: str) -> None:
    """Prints a callback's message when `verbose > 0`, on rank 0 only, as Keras's callbacks do."""
    if verbose > 0 and callback.trainer.is_main_process:
        print(message, flush=True)


class EarlyStopping(Callback):
    """Stops training when a monitored quantity has stopped improving.

    An epoch whose logs lack the monitored value (validation every few epochs, say) is skipped
    with a warning, as in Keras.

    Args:
        monitor: The log key to watch.
        min_delta: The smallest change that counts as an improvement.
        patience: Epochs without improvement after which training stops.
        verbose: 1 prints when training stops early and when the best weights are restored.
        mode: `"auto"`, `"min"` or `"max"`; `"auto"` takes the direction from the metric
            (see `Monitor`).
        baseline: Training stops if the value does not beat this within `patience` epochs.
        restore_best_weights: At the end of training (stopped early or not), put back the model
            weights of the best epoch.
        start_from_epoch: Epochs to wait before counting (warm-up).

    Example:
        >>> stop = EarlyStopping(
        ...     monitor="val_loss", min_delta=0.01, patience=5, restore_best_weights=True
        ... )
        >>> history = trainer.fit(x, y, validation_split=0.2, epochs=50, callbacks=[stop],
        ...                       verbose=0, seed=0)
        >>> print(f"ran {len(history.epoch)} of 50 epochs, best val_loss at {stop.best_epoch}")
        ran 22 of 50 epochs, best val_loss at 16
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: Mode = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        patience = check_int(patience, "patience", minimum=0, owner="EarlyStopping")
        self.tracker = Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights: dict[str, mx.array] | None = None

    def on_train_begin(self, logs=None) -> None:
        self.tracker.resolve(self.trainer.metrics)
        if self.trainer.epoch == 0 and self.trainer.batch_in_epoch == 0:
            self._reset()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        current = self.tracker.value(logs, action="early stopping")
        if current is None or epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self.tracker.improved(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = dict(tree_flatten(self.trainer.model.parameters()))
                mx.eval(self.best_weights)
            if self.baseline is None or self.tracker.improved(current, self.baseline):
                self.wait = 0
                return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None) -> None:
        if self.stopped_epoch > 0:
            say(self, self.verbose, f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            say(
                self,
                self.verbose,
                f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.",
            )
            self.trainer.model.update(tree_unflatten(list(self.best_weights.items())))
            mx.eval(self.trainer.model.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.best = state["wait"], load_best(state["best"])
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]

    def state_arrays(self) -> dict[str, mx.array]:
        return dict(self.best_weights or {})

    def load_state_arrays(self, arrays: dict[str, mx.array]) -> None:
        self.best_weights = dict(arrays) or None


def settable_learning_rate(trainer: Any, owner: str) -> None:
    """Raises a TypeError (as Keras does) if the optimizer's learning rate is a schedule, and a
    ValueError if it has none (`optim.Adafactor()` scales its steps by the parameters instead)."""
    if "learning_rate" not in trainer.optimizer.state:
        raise ValueError(
            f"{owner} sets the learning rate, but the optimizer has none. Received: optimizer "
            f"{type(trainer.optimizer).__name__} without learning_rate (give it one, e.g. "
            f"{type(trainer.optimizer).__name__}(learning_rate=1e-3))"
        )
    if trainer.learning_rate_is_scheduled:
        raise TypeError(
            f"{owner} sets the learning rate, but the optimizer already follows a schedule "
            "(learning_rate=<callable>). Use one or the other."
        )


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` when a monitored quantity stops improving.

    An epoch whose logs lack the monitored value is skipped with a warning, as in Keras.

    Args:
        monitor: The log key to watch.
        factor: The multiplier, in (0, 1).
        patience: Epochs without improvement before reducing.
        verbose: 1 prints each reduction.
        mode: `"auto"`, `"min"` or `"max"`; `"auto"` takes the direction from the metric
            (see `Monitor`).
        min_delta: The smallest change that counts as an improvement.
        cooldown: Epochs to wait after a reduction before counting again.
        min_lr: The learning rate never goes below this.

    Example:
        >>> reduce = ReduceLROnPlateau(factor=0.5, patience=2)
        >>> history = trainer.fit(x, y, validation_split=0.2, epochs=30, callbacks=[reduce],
        ...                       verbose=0, seed=0)
        >>> [round(rate, 5) for rate in sorted(set(history.history["learning_rate"]), reverse=True)]
        [0.01, 0.005, 0.0025, 0.00125, 0.00062, 0.00031, 0.00016]
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: Mode = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        if not 0 < factor < 1:
            raise ValueError(
                f"ReduceLROnPlateau: `factor` must be in (0, 1). Received: factor={factor!r}"
            )
        patience = check_int(patience, "patience", minimum=0, owner="ReduceLROnPlateau")
        cooldown = check_int(cooldown, "cooldown", minimum=0, owner="ReduceLROnPlateau")
        self.tracker = Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.verbose = verbose
        self.wait, self.cooldown_counter = 0, 0
        self.best: float | None = None

    def on_train_begin(self, logs=None) -> None:
        settable_learning_rate(self.trainer, "ReduceLROnPlateau")
        self.tracker.resolve(self.trainer.metrics)
        if self.trainer.epoch == 0 and self.trainer.batch_in_epoch == 0:
            self.wait, self.cooldown_counter, self.best = 0, 0, None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        current = self.tracker.value(logs, action="learning rate reduction")
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.tracker.improved(current, self.best):
            self.best, self.wait = current, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            optimizer = self.trainer.optimizer
            old = float(optimizer.learning_rate.item())
            # Keras compares with min_lr in float32, the precision the rate is stored in.
            if old > np.float32(self.min_lr):
                new = max(old * self.factor, self.min_lr)
                optimizer.learning_rate = new
                say(
                    self,
                    self.verbose,
                    f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.",
                )
                self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.cooldown_counter = state["wait"], state["cooldown_counter"]
        self.best = load_best(state["best"])
