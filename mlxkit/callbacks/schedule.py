"""`LearningRateScheduler`: sets the learning rate at the start of each epoch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mlxkit.callbacks.base import Callback
from mlxkit.callbacks.monitor import say, settable_learning_rate

import mlx.core as mx


class LearningRateScheduler(Callback):
    """Sets the optimizer's learning rate from the epoch index at the start of every epoch.

    Args:
        schedule: `schedule(epoch) -> lr`, Keras's `schedule(epoch, lr) -> lr`, or an
            `mlx.optimizers` schedule (such as `optim.cosine_decay(1e-3, decay_steps=epochs)`),
            called with the 0-based epoch index.
        verbose: 1 prints the learning rate set at each epoch.

    For a per-step schedule, give the schedule to the optimizer instead:
    `optim.Adam(learning_rate=optim.cosine_decay(1e-3, total_steps))`.

    Example:
        >>> halve = LearningRateScheduler(lambda epoch: 1e-3 * 0.5**epoch)
        >>> history = trainer.fit(x, y, epochs=3, callbacks=[halve], verbose=0)
        >>> [round(rate, 6) for rate in history.history["learning_rate"]]
        [0.001, 0.0005, 0.00025]
    """

    def __init__(self, schedule: Callable[..., Any], *, verbose: int = 0):
        if not callable(schedule):
            raise TypeError(
                "LearningRateScheduler: `schedule` must be callable. "
                f"Received: schedule of type {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.verbose = verbose
        try:
            self._takes_lr = len(inspect.signature(schedule).parameters) >= 2
        except (TypeError, ValueError):
            self._takes_lr = False

    def on_train_begin(self, logs=None) -> None:
        settable_learning_rate(self.trainer, "LearningRateScheduler")

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        optimizer = self.trainer.optimizer
        if self._takes_lr:
            value = self.schedule(epoch, float(optimizer.learning_rate.item()))
        else:
            value = self.schedule(epoch)
        if isinstance(value, mx.array):
            value = value.item()
        if not isinstance(value, (int, float)):
            raise ValueError(
                "LearningRateScheduler: the schedule must return a number. "
                f"Received: {value!r} at epoch {epoch}"
            )
        optimizer.learning_rate = float(value)
        say(
            self,
            self.verbose,
            f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(value)}.",
        )
