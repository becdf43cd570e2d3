"""`ProgressBar`: a tqdm bar on a terminal, one line per epoch when output is piped.

During an epoch the bar shows a compact postfix cut to what fits the terminal beside a bar of at
least `_MIN_BAR` columns. At the end of an epoch the bar is replaced by one full line with every
metric and validation metric, however wide: the terminal wraps it, nothing is cut.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

from mlxkit.callbacks.base import Callback

_HIDDEN = {"peak_memory_mb", "active_memory_mb"}
_MIN_BAR = 10  # columns of bar kept visible whatever the postfix


def _items(logs: Mapping[str, float]) -> list[str]:
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
    return parts


def _format(logs: Mapping[str, float]) -> str:
    return " - ".join(_items(logs))


def _fit(parts: list[str], budget: int) -> str:
    """Joins the leading `parts` that fit in `budget` columns; drops the rest whole."""
    text = ""
    for part in parts:
        candidate = f"{text} - {part}" if text else part
        if len(candidate) > budget:
            break
        text = candidate
    return text


class ProgressBar(Callback):
    """Shows training progress: a tqdm bar on a terminal, one line per epoch otherwise.

    On a terminal, the bar of the running epoch shows the training metrics that fit beside it;
    when the epoch ends it gives way to one line with every metric and validation metric (the
    same line that line mode prints). When output is piped, only those lines are written: no
    cursor codes reach a log file.

    The bar refreshes at most every `refresh_seconds`; only then are the batch logs read back from
    the device, so the bar costs no host sync per step.

    Args:
        mode: `"auto"` (a bar when stdout is a terminal, else a line per epoch), `"bar"` or
            `"line"`.
        refresh_seconds: Minimum time between two refreshes of the bar.
        columns: The bar's width in columns. `None` follows the terminal (and the `COLUMNS`
            environment variable), read again at every refresh.

    Example:
        >>> history = trainer.fit(x, y, epochs=2, callbacks=[ProgressBar(mode="line")], verbose=0)
        Epoch 1/2 - ... - loss ...
        Epoch 2/2 - ... - loss ...
    """

    def __init__(
        self,
        mode: Literal["auto", "bar", "line"] = "auto",
        *,
        refresh_seconds: float = 0.25,
        columns: int | None = None,
    ):
        if mode not in ("auto", "bar", "line"):
            raise ValueError(
                f"ProgressBar: `mode` must be 'auto', 'bar' or 'line'. Received: mode={mode!r}"
            )
        if columns is not None and (not isinstance(columns, int) or columns < 2 * _MIN_BAR):
            raise ValueError(
                f"ProgressBar: `columns` must be None or an int >= {2 * _MIN_BAR}. "
                f"Received: columns={columns!r}"
            )
        if mode == "auto":
            mode = "bar" if sys.stdout.isatty() else "line"
        self.mode = mode
        self.refresh_seconds = refresh_seconds
        self.columns = columns
        self._bar: Any = None
        self._epochs = 0
        self._last_refresh = 0.0
        if mode == "bar":
            # Only the bar looks at batches: in line mode the batch hook is not dispatched at all.
            self.on_train_batch_end = self._on_train_batch_end  # type: ignore[method-assign]

    def _width(self) -> int:
        # One column less than the terminal: writing the last column makes some terminals wrap.
        return self.columns or shutil.get_terminal_size().columns - 1

    def on_train_begin(self, logs=None) -> None:
        self._epochs = self.trainer.epochs

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_start = time.perf_counter()
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.trainer.steps_per_epoch,
                desc=f"Epoch {epoch + 1}/{self._epochs}",
                ncols=self._width(),
                # no steps/s field: the postfix shows samples/s, and the columns go to metrics
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                "[{elapsed}<{remaining}{postfix}]",
                leave=False,  # the epoch's full line takes the bar's place
            )
            self._bar.update(self.trainer.batch_in_epoch)
            self._last_refresh = time.perf_counter()
            self._samples_start: float | None = None

    def _postfix(self, parts: list[str]) -> str:
        """The leading `parts` that fit beside the bar's fixed text and `_MIN_BAR` columns."""
        bar = self._bar
        bar.ncols = self._width()
        fixed = bar.format_meter(**{**bar.format_dict, "postfix": None, "ncols": None})
        # format_meter draws a 10-column bar without ncols; tqdm adds ", " before a postfix, and
        # two columns stay free for the time fields to grow (tqdm cuts, never wraps, the rest).
        budget = bar.ncols - (len(fixed) - 10) - _MIN_BAR - len(", ") - 2
        return _fit(parts, budget)

    def _on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.perf_counter()
        if logs is not None and now - self._last_refresh >= self.refresh_seconds:
            parts = _items(logs)  # reading the logs syncs the device, so the count below is free
            samples = self.trainer.samples_seen()
            if self._samples_start is not None:
                rate = (samples - self._samples_start) / (now - self._last_refresh)
                parts.append(f"{rate:,.0f} samples/s")
            self._samples_start, self._last_refresh = samples, now
            self._bar.set_postfix_str(self._postfix(parts), refresh=True)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        seconds = time.perf_counter() - self._epoch_start
        line = f"Epoch {epoch + 1}/{self._epochs} - {seconds:.1f}s - {_format(logs or {})}"
        if self._bar is not None:
            file = self._bar.fp
            self._bar.close()
            self._bar = None
            print(line, file=file, flush=True)
        else:
            print(line, flush=True)

    def on_train_end(self, logs=None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
