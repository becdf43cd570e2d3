"""Callbacks that watch one logged quantity: `EarlyStopping` and `ReduceLROnPlateau`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from mlxkit.callbacks.base import Callback

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

Mode = Literal["auto", "min", "max"]


class Monitor:
    """Tracks whether a logged value improves; shared by the monitor-based callbacks.

    Args:
        owner: The callback's name, for error messages.
        monitor: The log key to watch, e.g. `"val_loss"`.
        mode: `"min"`, `"max"`, or `"auto"` (max for keys containing "acc", "iou" or "delta",
            min otherwise).
        min_delta: The smallest change that counts as an improvement.
    """

    def __init__(self, owner: str, monitor: str, mode: Mode, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                f"{owner}: `mode` must be 'auto', 'min' or 'max'. Received: mode={mode!r}"
            )
        if mode == "auto":
            higher_better = ("acc", "iou", "delta", "auc", "precision", "recall")
            mode = "max" if any(word in monitor for word in higher_better) else "min"
        self.owner, self.monitor, self.mode = owner, monitor, mode
        self.min_delta = abs(min_delta)

    def value(self, logs: Mapping[str, float] | None) -> float:
        """The monitored value in `logs`; a ValueError lists the keys present if it is absent."""
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"{self.owner}: monitor={self.monitor!r} is not in the logs. Keys present: "
                f"{sorted(logs)}. (val_ keys need validation_data or validation_split.)"
            )
        return float(logs[self.monitor])

    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def improved(self, current: float, reference: float) -> bool:
        if math.isnan(current):
            return False
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta


class EarlyStopping(Callback):
    """Stops training when a monitored quantity has stopped improving.

    Args:
        monitor: The log key to watch.
        min_delta: The smallest change that counts as an improvement.
        patience: Epochs without improvement after which training stops.
        mode: `"auto"`, `"min"` or `"max"`.
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
        ran 28 of 50 epochs, best val_loss at 22
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        min_delta: float = 0.0,
        patience: int = 0,
        mode: Mode = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(
                "EarlyStopping: `patience` must be an integer >= 0. "
                f"Received: patience={patience!r}"
            )
        self.tracker = Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = patience
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = self.tracker.worst()
        self.best_epoch = 0
        self.best_weights: dict[str, mx.array] | None = None

    def on_train_begin(self, logs=None) -> None:
        if self.trainer.epoch == 0 and self.trainer.start_batch == 0:
            self._reset()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        current = self.tracker.value(logs)
        if epoch < self.start_from_epoch:
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
        if self.restore_best_weights and self.best_weights is not None:
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
        self.wait, self.best = state["wait"], float(state["best"])
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]

    def state_arrays(self) -> dict[str, mx.array]:
        return dict(self.best_weights or {})

    def load_state_arrays(self, arrays: dict[str, mx.array]) -> None:
        self.best_weights = dict(arrays) or None


def settable_learning_rate(optimizer: Any, owner: str) -> None:
    """Raises if the optimizer's learning rate is a schedule, which a callback cannot override."""
    if "learning_rate" in getattr(optimizer, "_schedulers", {}):
        raise ValueError(
            f"{owner} sets the learning rate, but the optimizer already follows a schedule "
            "(learning_rate=<callable>). Use one or the other."
        )


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` when a monitored quantity stops improving.

    Args:
        monitor: The log key to watch.
        factor: The multiplier, in (0, 1).
        patience: Epochs without improvement before reducing.
        mode: `"auto"`, `"min"` or `"max"`.
        min_delta: The smallest change that counts as an improvement.
        cooldown: Epochs to wait after a reduction before counting again.
        min_lr: The learning rate never goes below this.

    Example:
        >>> reduce = ReduceLROnPlateau(factor=0.5, patience=2)
        >>> history = trainer.fit(x, y, validation_split=0.2, epochs=30, callbacks=[reduce],
        ...                       verbose=0, seed=0)
        >>> [round(rate, 5) for rate in sorted(set(history.history["learning_rate"]), reverse=True)]
        [0.01, 0.005, 0.0025, 0.00125]
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        factor: float = 0.1,
        patience: int = 10,
        mode: Mode = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        if not 0 < factor < 1:
            raise ValueError(
                f"ReduceLROnPlateau: `factor` must be in (0, 1). Received: factor={factor!r}"
            )
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"ReduceLROnPlateau: `{name}` must be an integer >= 0. "
                    f"Received: {name}={value!r}"
                )
        self.tracker = Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.wait, self.cooldown_counter, self.best = 0, 0, self.tracker.worst()

    def on_train_begin(self, logs=None) -> None:
        settable_learning_rate(self.trainer.optimizer, "ReduceLROnPlateau")
        if self.trainer.epoch == 0 and self.trainer.start_batch == 0:
            self.wait, self.cooldown_counter, self.best = 0, 0, self.tracker.worst()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        current = self.tracker.value(logs)
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
            new = max(old * self.factor, self.min_lr)
            if new < old:
                optimizer.learning_rate = new
            self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.cooldown_counter = state["wait"], state["cooldown_counter"]
        self.best = float(state["best"])
