"""`ProgressBar`: a tqdm bar on a terminal, one line per epoch when output is piped."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

from mlxkit.callbacks.base import Callback

_HIDDEN = {"peak_memory_mb", "active_memory_mb"}


def _format(logs: Mapping[str, float]) -> str:
    parts = []
    for key, value in logs.items():
        if key in _HIDDEN:
            continue
        if key == "samples_per_second":
            parts.append(f"{value:,.0f} samples/s")
        elif key == "learning_rate":
            parts.append(f"lr {value:.3g}")
        else:
            parts.append(f"{key} {value:.4f}")
    return " - ".join(parts)


class ProgressBar(Callback):
    """Shows training progress: a tqdm bar on a terminal, one line per epoch otherwise.

    The bar refreshes at most every `refresh_seconds`; only then are the batch logs read back from
    the device, so the bar costs no host sync per step.

    Args:
        mode: `"auto"` (a bar when stdout is a terminal, else a line per epoch), `"bar"` or
            `"line"`.
        refresh_seconds: Minimum time between two refreshes of the bar.

    Example:
        >>> history = trainer.fit(x, y, epochs=2, callbacks=[ProgressBar(mode="line")], verbose=0)
        Epoch 1/2 - ... - loss ...
        Epoch 2/2 - ... - loss ...
    """

    def __init__(
        self, mode: Literal["auto", "bar", "line"] = "auto", *, refresh_seconds: float = 0.25
    ):
        if mode not in ("auto", "bar", "line"):
            raise ValueError(
                f"ProgressBar: `mode` must be 'auto', 'bar' or 'line'. Received: mode={mode!r}"
            )
        if mode == "auto":
            mode = "bar" if sys.stdout.isatty() else "line"
        self.mode = mode
        self.refresh_seconds = refresh_seconds
        self._bar: Any = None
        self._epochs = 0
        self._last_refresh = 0.0
        if mode == "bar":
            # Only the bar looks at batches: in line mode the batch hook is not dispatched at all.
            self.on_train_batch_end = self._on_train_batch_end  # type: ignore[method-assign]

    def on_train_begin(self, logs=None) -> None:
        self._epochs = self.trainer.epochs

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_start = time.perf_counter()
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.trainer.steps_per_epoch,
                desc=f"Epoch {epoch + 1}/{self._epochs}",
                unit="step",
                dynamic_ncols=True,
                leave=True,
            )
            self._bar.update(self.trainer.batch_in_epoch)
            self._last_refresh = time.perf_counter()
            self._samples_start: float | None = None

    def _on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.perf_counter()
        if logs is not None and now - self._last_refresh >= self.refresh_seconds:
            text = _format(logs)  # reading the logs syncs the device, so the count below is free
            samples = self.trainer.samples_seen()
            if self._samples_start is not None:
                rate = (samples - self._samples_start) / (now - self._last_refresh)
                text += f" - {rate:,.0f} samples/s"
            self._samples_start, self._last_refresh = samples, now
            self._bar.set_postfix_str(text, refresh=True)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        seconds = time.perf_counter() - self._epoch_start
        if self._bar is not None:
            self._bar.set_postfix_str(_format(logs or {}), refresh=True)
            self._bar.close()
            self._bar = None
        else:
            print(
                f"Epoch {epoch + 1}/{self._epochs} - {seconds:.1f}s - {_format(logs or {})}",
                flush=True,
            )

    def on_train_end(self, logs=None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
