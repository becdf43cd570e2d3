"""Small callbacks: `CSVLogger`, `TerminateOnNaN` and `LambdaCallback`."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from mlxkit._io import atomic_write_file, io_errors
from mlxkit.callbacks.base import HOOKS, Callback

# What CSVLogger writes for a value an epoch did not log (Keras's choice).
MISSING = "NA"


class CSVLogger(Callback):
    """Writes one CSV row per epoch: the epoch index and every log value.

    A resumed `fit` (`initial_epoch > 0` or a checkpoint) appends to the existing file, dropping
    rows of the epochs it redoes; a fresh one rewrites it, unless `append=True`. A key that appears
    after the first epoch (validation every few epochs) widens the header; a value missing from an
    epoch is written `NA`, as Keras writes it.

    Args:
        filename: The CSV file.
        separator: The column separator.
        append: Always append to an existing file.

    Example:
        >>> import csv
        >>> logger = CSVLogger("runs/log.csv")
        >>> history = trainer.fit(x, y, epochs=3, callbacks=[logger], verbose=0, seed=0)
        >>> with open("runs/log.csv") as f:
        ...     rows = list(csv.DictReader(f))
        >>> [(row["epoch"], round(float(row["loss"]), 4)) for row in rows]
        [('0', 0.4484), ('1', 0.3979), ('2', 0.3229)]
        >>> [round(loss, 4) for loss in history.history["loss"]]  # the same as History's
        [0.4484, 0.3979, 0.3229]
    """

    def __init__(self, filename: str | os.PathLike, *, separator: str = ",", append: bool = False):
        self.filename = os.fspath(filename)
        if not self.filename:
            raise ValueError(f"CSVLogger: `filename` is empty. Received: filename={filename!r}")
        if os.path.isdir(self.filename):
            raise IsADirectoryError(
                f"CSVLogger: `filename` names a folder; pass a file such as 'runs/log.csv'. "
                f"Received: filename={self.filename!r}"
            )
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(
                "CSVLogger: `separator` must be one character, such as ',' or ';'. "
                f"Received: separator={separator!r}"
            )
        self.separator = separator
        self.append = append
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None) -> None:
        self._keys = None
        if not self.trainer.is_main_process:
            return
        resumed = self.trainer.epoch > 0 or self.trainer.batch_in_epoch > 0
        if (self.append or resumed) and os.path.exists(self.filename):
            keys, rows = self._read()
            if resumed:
                # Rows of epochs that the resumed run redoes (written after the checkpoint it
                # resumes from) would be duplicated: drop them.
                kept = [row for row in rows if int(row["epoch"]) < self.trainer.epoch]
                if len(kept) != len(rows):
                    self._write(keys, kept)
            self._keys = keys
        elif os.path.exists(self.filename):
            os.remove(self.filename)

    def _read(self) -> tuple[list[str] | None, list[dict[str, str]]]:
        with open(self.filename, newline="") as f:
            reader = csv.DictReader(f, delimiter=self.separator)
            rows = list(reader)
            header = reader.fieldnames
        return (list(header[1:]) if header else None), rows

    def _write(self, keys: list[str] | None, rows: list[dict[str, str]]) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                if keys is not None:
                    writer = csv.DictWriter(
                        f, ["epoch", *keys], delimiter=self.separator, restval=MISSING
                    )
                    writer.writeheader()
                    writer.writerows(rows)

        atomic_write_file(self.filename, write)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if not self.trainer.is_main_process:
            return
        logs = dict(logs or {})
        os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
        if self._keys is not None and not set(logs) <= set(self._keys):
            # A key appeared (validation every few epochs, say): widen the header of the file.
            self._keys = sorted(set(self._keys) | set(logs))
            self._write(self._keys, self._read()[1])
        new_file = self._keys is None
        if self._keys is None:
            self._keys = sorted(logs)
        with io_errors(self.filename), open(self.filename, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if new_file:
                writer.writerow(["epoch", *self._keys])
            # repr() round-trips a float exactly.
            writer.writerow(
                [epoch, *(repr(float(logs[k])) if k in logs else MISSING for k in self._keys)]
            )


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    It reads the loss after every batch, which costs one host sync per step. By default it stops
    training after that batch, and `on_train_end` runs as usual; with `raise_error=True` it raises
    a `RuntimeError` at once, so no other callback's `on_train_end` runs (a `BackupAndRestore`
    keeps its backup).

    Args:
        raise_error: Raise a `RuntimeError` instead of stopping gracefully.

    Example:
        >>> broken = np.full_like(x, np.nan)
        >>> history = trainer.fit(broken, y, epochs=10, callbacks=[TerminateOnNaN()], verbose=0)
        TerminateOnNaN: batch 0: invalid loss, terminating training
        mlxkit: the training loss was NaN or infinite at epoch 1, step 1 (1-based)...
        >>> history.epoch
        [0]
    """

    def __init__(self, *, raise_error: bool = False):
        self.raise_error = raise_error

    def on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        # The logged loss is the epoch's running mean: it stays NaN or inf from the bad batch on.
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss):
            return
        if self.raise_error:
            raise RuntimeError(
                f"TerminateOnNaN: NaN or Inf loss encountered at batch {batch}. Loss value: "
                f"{loss}. Terminating training immediately."
            )
        if self.trainer.is_main_process:  # every rank sees the same all-reduced loss
            print(f"TerminateOnNaN: batch {batch}: invalid loss, terminating training", flush=True)
        self.trainer.stop_training = True


class LambdaCallback(Callback):
    """A callback built from functions, one per hook, named as the hooks.

    Example:
        >>> printer = LambdaCallback(on_epoch_end=lambda epoch, logs: print(f"epoch {epoch} done"))
        >>> history = trainer.fit(x, y, epochs=2, callbacks=[printer], verbose=0)
        epoch 0 done
        epoch 1 done
    """

    def __init__(self, **hooks: Callable[..., Any]):
        unknown = sorted(set(hooks) - set(HOOKS))
        if unknown:
            raise ValueError(f"LambdaCallback: unknown hooks {unknown}. Valid hooks: {list(HOOKS)}")
        for name, function in hooks.items():
            if not callable(function):
                raise TypeError(
                    f"LambdaCallback: `{name}` must be a function. Received: {name}={function!r}"
                )
            setattr(self, name, function)
