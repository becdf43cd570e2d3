"""`History`: the per-epoch record that `Trainer.fit` returns, and its PNG plot."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mlxkit.callbacks.base import Callback


class History(Callback):
    """Records every epoch's logs; `fit()` returns it.

    As in Keras, each `fit` makes a new `History` (an earlier one keeps its record) and
    `trainer.history` is the latest. `history.history` maps each key (`"loss"`, metric names,
    `"val_"` twins, `"learning_rate"`, ...) to a list of per-epoch floats, `history.epoch` lists
    the epochs this call ran (`[2, 3, 4]` for `initial_epoch=2, epochs=5`), and `history.params`
    holds `{"verbose", "epochs", "steps"}`. A fit resumed from a checkpoint starts with the
    checkpoint's record, so its History covers the whole run.

    Example:
        >>> history = trainer.fit(x, y, epochs=3, verbose=0)
        >>> history.epoch, len(history.history["loss"])
        ([0, 1, 2], 3)
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch = list(state["epoch"])

    def plot(self, path: str | os.PathLike, *, keys: list[str] | None = None) -> str:
        """Writes a PNG of the loss and metric curves, training and validation side by side.

        Args:
            path: The PNG file to write.
            keys: The base names to plot (default: every key that has a number per epoch, without
                the `val_` prefix; throughput and memory are left out).

        Returns:
            The path written.

        Example:
            >>> history.plot("curves.png")
            'curves.png'
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError(
                "History.plot needs matplotlib. Install it with: pip install 'mlxkit[plot]'"
            ) from error
        if not self.history:
            raise ValueError("History.plot: nothing to plot, the history is empty.")
        skip = {"samples_per_second", "peak_memory_mb", "active_memory_mb", "learning_rate"}
        bases = keys or [k for k in self.history if not k.startswith("val_") and k not in skip]
        unknown = [k for k in bases if k not in self.history]
        if unknown:
            raise ValueError(
                f"History.plot: unknown keys {unknown}. Available: {sorted(self.history)}"
            )
        figure, axes = plt.subplots(1, len(bases), figsize=(4.5 * len(bases), 3.5), squeeze=False)
        for axis, key in zip(axes[0], bases):
            axis.plot(self.epoch, self.history[key], marker="o", label=key)
            if f"val_{key}" in self.history:
                val_epochs = self.epoch[-len(self.history[f"val_{key}"]) :]
                axis.plot(val_epochs, self.history[f"val_{key}"], marker="o", label=f"val_{key}")
            axis.set_xlabel("epoch")
            axis.set_title(key)
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        figure.savefig(os.fspath(path), dpi=100)
        plt.close(figure)
        return os.fspath(path)
