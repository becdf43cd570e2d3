"""Callbacks that write checkpoints: `ModelCheckpoint` and `BackupAndRestore`."""

from __future__ import annotations

import os
import shutil
import string
import warnings
from collections.abc import Mapping
from typing import Any, Literal

from mlxkit._io import (
    atomic_write_file,
    atomic_write_folder,
    check_folder_target,
    folder_lock,
    recover_folder,
    remove_folder,
)
from mlxkit._validation import check_int
from mlxkit.callbacks.base import Callback
from mlxkit.callbacks.monitor import Mode, Monitor, load_best, say
from mlxkit.checkpoint import (
    ARRAY_FILES,
    CheckpointError,
    check_checkpoint_target,
    read_checkpoint,
    save_checkpoint,
)

import mlx.core as mx
from mlx.utils import tree_flatten


class ModelCheckpoint(Callback):
    """Saves checkpoints during training: every epoch, every N steps, the best, or the top k.

    Each save is a full resumable checkpoint folder (see `mlxkit.checkpoint`), or with
    `save_weights_only=True` a single `.safetensors` file of the model's weights. Keras's file
    suffixes (`.keras`, `.h5`, `.weights.h5`) name formats mlxkit does not write, so they are
    refused when the callback is made.

    An epoch whose logs lack `monitor` (validation every few epochs, say) is skipped with a
    warning when ranking; Keras saves such an epoch anyway, which would overwrite the best
    checkpoint with an unranked one.

    Args:
        filepath: A path template formatted with `epoch` (1-based), `step` (global, 1-based),
            `batch` (1-based within the epoch; only with `save_freq=<int>`) and the epoch's logs,
            e.g. `"runs/epoch{epoch:03d}-{val_loss:.4f}"`. A template without fields always
            writes the same path.
        monitor: The log key that ranks checkpoints for `save_best_only` / `save_top_k`.
        verbose: 1 prints each save, and each epoch that did not improve on the best.
        mode: `"auto"`, `"min"` or `"max"`; `"auto"` takes the direction from the metric.
        save_best_only: Save only when `monitor` improves on the best so far.
        save_top_k: Keep only the k best checkpoints by `monitor`, deleting the others.
        save_freq: `"epoch"` (default), or an integer: save every that many batches, mid-epoch
            (Keras's argument; the same as `every_n_steps`).
        every_n_epochs: Save at the end of every n-th epoch.
        every_n_steps: Save every n batches instead, mid-epoch (no monitor ranking).
        save_weights_only: Write only the model weights, to a `.safetensors` file (the suffix is
            appended to a path that has none).
        initial_value_threshold: With `save_best_only` or `save_top_k`, save only values better
            than this.

    Example:
        >>> best = ModelCheckpoint("runs/best", monitor="val_loss", save_best_only=True)
        >>> history = trainer.fit(x, y, validation_split=0.1, epochs=10, callbacks=[best],
        ...                       verbose=0)
        >>> best.best_path
        'runs/best'
    """

    saves_checkpoints = True

    def __init__(
        self,
        filepath: str | os.PathLike,
        *,
        monitor: str = "val_loss",
        verbose: int = 0,
        mode: Mode = "auto",
        save_best_only: bool = False,
        save_top_k: int | None = None,
        save_freq: Literal["epoch"] | int = "epoch",
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        save_weights_only: bool = False,
        initial_value_threshold: float | None = None,
    ):
        _check_save_freq(save_freq, "ModelCheckpoint", "batches")
        if save_freq != "epoch":
            if every_n_steps is not None and every_n_steps != save_freq:
                raise ValueError(
                    "ModelCheckpoint: `save_freq` and `every_n_steps` both set the number of "
                    f"batches between saves; pass one. Received: save_freq={save_freq}, "
                    f"every_n_steps={every_n_steps}"
                )
            every_n_steps = save_freq
        if save_top_k is not None:
            save_top_k = check_int(save_top_k, "save_top_k", owner="ModelCheckpoint")
        every_n_epochs = check_int(every_n_epochs, "every_n_epochs", owner="ModelCheckpoint")
        if every_n_steps is not None:
            every_n_steps = check_int(every_n_steps, "every_n_steps", owner="ModelCheckpoint")
        if every_n_steps is not None and (save_best_only or save_top_k):
            raise ValueError(
                "ModelCheckpoint: `save_freq=<int>` / `every_n_steps` save mid-epoch, where no "
                f"epoch metrics exist to rank by. Received: every_n_steps={every_n_steps}, "
                f"save_best_only={save_best_only}, save_top_k={save_top_k}, save_freq={save_freq!r}"
            )
        self.filepath = _checked_filepath(os.fspath(filepath), save_weights_only, every_n_steps)
        self.tracker = Monitor("ModelCheckpoint", monitor, mode, 0.0)
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_top_k = save_top_k
        self.save_freq = save_freq
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.save_weights_only = save_weights_only
        if not _fields(self.filepath):  # a fixed path is checked now, a template at each save
            suffix = ".safetensors" if save_weights_only else ""
            self._check_target(self.filepath.removesuffix(suffix) + suffix)
        self.initial_value_threshold = initial_value_threshold
        self.best: float | None = initial_value_threshold
        self.best_path: str | None = None
        self.top_k: list[tuple[float, str]] = []
        if every_n_steps is not None:
            self.on_train_batch_end = self._on_train_batch_end  # type: ignore[method-assign]

    def on_train_begin(self, logs=None) -> None:
        if self.save_best_only or self.save_top_k:
            self.tracker.resolve(self.trainer.metrics)

    def _check_target(self, path: str) -> None:
        """Refuses a path whose replacement would destroy the user's files (see
        `check_checkpoint_target`); a weights file may replace a file, never a folder."""
        if not self.save_weights_only:
            check_checkpoint_target(path, argument="filepath")
            return
        check_folder_target(path, "filepath")
        if os.path.isdir(path):
            raise FileExistsError(
                f"ModelCheckpoint: `filepath` names the folder {os.path.abspath(path)!r}; a "
                f"weights file cannot replace it. Received: filepath={self.filepath!r}"
            )

    def _path(self, epoch: int, logs: Mapping[str, float], batch: int | None = None) -> str:
        fields = {**logs, "epoch": epoch + 1, "step": self.trainer.global_step}
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            path = self.filepath.format(**fields)
        except KeyError as error:
            raise ValueError(
                f"ModelCheckpoint: filepath {self.filepath!r} uses {error}, which is not in the "
                f"logs. Keys available: {sorted(fields)}"
            ) from None
        if self.save_weights_only and not path.endswith(".safetensors"):
            path += ".safetensors"
        return path

    def _save(self, path: str) -> None:
        if not self.trainer.is_main_process:
            return
        self._check_target(path)
        if not self.save_weights_only:
            save_checkpoint(self.trainer, path)
            return
        weights = dict(tree_flatten(self.trainer.model.parameters()))
        mx.eval(weights)
        atomic_write_file(path, lambda tmp: mx.save_safetensors(tmp, weights))

    def _on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        if self.trainer.global_step % int(self.every_n_steps or 1) == 0:
            path = self._path(self.trainer.epoch, {}, batch)
            say(self, self.verbose, f"Epoch {self.trainer.epoch + 1}: saving model to {path}")
            self._save(path)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if self.every_n_steps is not None or (epoch + 1) % self.every_n_epochs:
            return
        logs = dict(logs or {})
        path = self._path(epoch, logs)
        if not (self.save_best_only or self.save_top_k):
            say(self, self.verbose, f"Epoch {epoch + 1}: saving model to {path}")
            self._save(path)
            return
        current = self.tracker.value(logs, action="saving the best checkpoints")
        if current is None:
            return
        monitor, best = self.tracker.monitor, "None" if self.best is None else f"{self.best:.5f}"
        if self.save_best_only and not self.tracker.improved(current, self.best):
            say(self, self.verbose, f"Epoch {epoch + 1}: {monitor} did not improve from {best}")
            return
        if self.save_top_k and len(self.top_k) >= self.save_top_k:
            worst_score, _ = self._ranked()[-1]
            if not self.tracker.improved(current, worst_score):
                return
        if self.initial_value_threshold is not None and not self.tracker.improved(
            current, self.initial_value_threshold
        ):
            return
        if self.tracker.improved(current, self.best):
            say(
                self,
                self.verbose,
                f"Epoch {epoch + 1}: {monitor} improved from {best} to {current:.5f}, "
                f"saving model to {path}",
            )
            self.best, self.best_path = current, path
        self._save(path)
        if self.save_top_k:
            self.top_k = [entry for entry in self.top_k if entry[1] != path] + [(current, path)]
            for _, old_path in self._ranked()[self.save_top_k :]:
                # Every rank keeps the ranking (it is in the callback's state); only the rank
                # that wrote the checkpoints deletes them.
                if old_path != path and self.trainer.is_main_process:
                    remove_folder(old_path)
            self.top_k = self._ranked()[: self.save_top_k]

    def _ranked(self) -> list[tuple[float, str]]:
        return sorted(self.top_k, key=lambda e: e[0], reverse=self.tracker.mode == "max")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_path": self.best_path, "top_k": self.top_k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_path = load_best(state["best"]), state["best_path"]
        self.top_k = [(float(score), path) for score, path in state["top_k"]]


# Suffixes of formats that other libraries write and mlxkit does not: refused, not appended to.
_FOREIGN_SUFFIXES = (".keras", ".h5", ".hdf5", ".pt", ".pth", ".ckpt", ".npz", ".pkl", ".bin")


def _check_save_freq(save_freq: object, owner: str, unit: str) -> None:
    """Refuses a `save_freq` that is neither "epoch" nor a positive int (a bool included)."""
    if save_freq != "epoch" and (
        not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1
    ):
        raise ValueError(
            f"{owner}: `save_freq` must be 'epoch' or a positive number of {unit}. "
            f"Received: save_freq={save_freq!r}"
        )


def _checked_filepath(filepath: str, weights_only: bool, every_n_steps: int | None) -> str:
    """Validates a ModelCheckpoint path template before training, and returns it."""
    if "batch" in _fields(filepath) and every_n_steps is None:
        raise ValueError(
            "ModelCheckpoint: filepath uses {batch}, which exists only when saving every few "
            f"batches. Received: filepath={filepath!r} with save_freq='epoch'. Pass "
            "save_freq=<number of batches>, or use {epoch} / {step}."
        )
    # The literal text after the last field holds the suffix ("w-{epoch}.h5" -> ".h5").
    tail = filepath.rsplit("}", 1)[-1].lower()
    foreign = next((suffix for suffix in _FOREIGN_SUFFIXES if tail.endswith(suffix)), None)
    if foreign is None:
        return filepath
    if weights_only:
        expected = "a path ending in .safetensors (or with no suffix: .safetensors is appended)"
    else:
        expected = "a folder path without a suffix (mlxkit checkpoints are folders)"
    raise ValueError(
        f"ModelCheckpoint: mlxkit does not write {foreign} files. Received: filepath="
        f"{filepath!r}, save_weights_only={weights_only}. Expected {expected}."
    )


def _fields(template: str) -> list[str]:
    """The `{field}` names of a path template."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


class BackupAndRestore(Callback):
    """Keeps a full checkpoint in `backup_dir` so an interrupted `fit` resumes where it stopped.

    At the start of `fit`, an existing backup is loaded automatically (mid-epoch included); the
    backup is refreshed at every epoch end (and every `save_freq` steps), and deleted once training
    completes.

    With `double_checkpoint=True` the backup before the latest is kept beside it, in
    `<backup_dir>.previous`. As in Keras, a backup that cannot be read (a truncated or corrupt file)
    is then replaced by that previous copy, from which training resumes; without a readable copy
    `fit` raises a `CheckpointError` that says what is damaged.

    Args:
        backup_dir: The folder for the backup.
        save_freq: `"epoch"`, or a number of batches (training steps) between backups.
        double_checkpoint: Also keep the previous backup, to fall back on if the latest is
            corrupt.
        delete_checkpoint: Delete the backup (both copies) when training completes.

    Example:
        >>> # Run this twice; if the first run is killed, the second resumes it.
        >>> backup = BackupAndRestore("runs/backup", double_checkpoint=True)
        >>> history = trainer.fit(x, y, epochs=5, callbacks=[backup], verbose=0)
        >>> os.path.exists("runs/backup")  # training completed, so the backup was deleted
        False
    """

    saves_checkpoints = True

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        *,
        save_freq: str | int = "epoch",
        double_checkpoint: bool = False,
        delete_checkpoint: bool = True,
    ):
        if not backup_dir:
            raise ValueError(
                f"BackupAndRestore: `backup_dir` must be a folder path. Received: "
                f"backup_dir={backup_dir!r}"
            )
        _check_save_freq(save_freq, "BackupAndRestore", "steps")
        self.backup_dir = check_checkpoint_target(backup_dir, argument="backup_dir")
        self.previous_dir = os.path.normpath(self.backup_dir) + ".previous"
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self.saved_step: int | None = None  # the global step of the last backup this run wrote
        if save_freq != "epoch":
            self.on_train_batch_end = self._on_train_batch_end  # type: ignore[method-assign]

    def resume_path(self) -> str | None:
        """The backup to resume from, if one exists; falls back to the previous copy if corrupt.

        Raises:
            CheckpointError: If a backup exists but neither it nor a previous copy can be read.
        """
        recover_folder(self.backup_dir)
        if not _has_files(self.backup_dir):
            if not _has_files(self.previous_dir):
                return None  # a fresh start
            # `double_checkpoint` moves the latest backup aside before it writes the next one:
            # a kill in between leaves only the previous copy, and starting over would lose it.
            return self._previous_copy(
                f"there is no backup in {self.backup_dir!r} (training was stopped while it was "
                "being replaced)"
            )
        try:
            read_checkpoint(self.backup_dir)
            return self.backup_dir
        except CheckpointError as error:
            previous = self._previous_copy(
                f"the backup in {self.backup_dir!r} cannot be read ({error})"
            )
        if self.trainer.is_main_process:
            # As Keras does, the previous copy replaces the damaged one, so that the next backup
            # moves a readable copy aside.
            atomic_write_folder(self.backup_dir, self._copy_previous, argument="backup_dir")
        return previous

    def _previous_copy(self, problem: str) -> str:
        """The previous copy, once read whole, with a warning that names `problem`."""
        try:
            if not _has_files(self.previous_dir):
                raise CheckpointError("no previous copy")
            read_checkpoint(self.previous_dir)
        except CheckpointError as error:
            raise CheckpointError(
                f"BackupAndRestore: {problem}, and there is no readable previous copy in "
                f"{self.previous_dir!r} ({error}). Delete the backup folder (and its .previous "
                "copy) to start training over; double_checkpoint=True keeps a previous copy to "
                "fall back on."
            ) from None
        warnings.warn(
            f"BackupAndRestore: {problem}; resuming from the previous copy in "
            f"{self.previous_dir!r}.",
            stacklevel=3,
        )
        return self.previous_dir

    def _copy_previous(self, folder: str) -> None:
        for name in os.listdir(self.previous_dir):
            shutil.copy2(os.path.join(self.previous_dir, name), os.path.join(folder, name))

    def backup(self) -> None:
        """Writes the backup now, unless it holds the trainer's current step already.

        `fit` calls it when Ctrl-C stops training at the end of a step.
        """
        if self.saved_step != self.trainer.global_step:
            self._backup()

    def _backup(self) -> None:
        complete = os.path.exists(os.path.join(self.backup_dir, "trainer.json"))
        if self.double_checkpoint and complete and self.trainer.is_main_process:
            # The latest backup becomes the previous one. A crash before the new one is in place
            # leaves the previous copy, which `resume_path` falls back on.
            remove_folder(self.previous_dir)
            with folder_lock(self.backup_dir):  # readers see the backup whole or not at all
                os.rename(self.backup_dir, self.previous_dir)
        save_checkpoint(self.trainer, self.backup_dir)
        self.saved_step = self.trainer.global_step

    def _on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        if self.trainer.global_step % int(self.save_freq) == 0:
            self._backup()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self._backup()

    def on_train_end(self, logs=None) -> None:
        completed = self.trainer.epoch >= self.trainer.epochs or self.trainer.stop_training
        if self.delete_checkpoint and completed and self.trainer.is_main_process:
            remove_folder(self.backup_dir)
            remove_folder(self.previous_dir)


def _has_files(folder: str) -> bool:
    """Whether `folder` holds any file of a checkpoint (a damaged one included)."""
    names = ["trainer.json", *(f"{name}.safetensors" for name in ARRAY_FILES)]
    return any(os.path.exists(os.path.join(folder, name)) for name in names)
