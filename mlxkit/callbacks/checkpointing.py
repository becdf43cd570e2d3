"""Callbacks that write checkpoints: `ModelCheckpoint` and `BackupAndRestore`."""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from typing import Any

from mlxkit._io import atomic_write_file, check_folder_target, recover_folder, remove_folder
from mlxkit.callbacks.base import Callback
from mlxkit.callbacks.monitor import Mode, Monitor
from mlxkit.checkpoint import check_checkpoint_target, save_checkpoint

import mlx.core as mx
from mlx.utils import tree_flatten


class ModelCheckpoint(Callback):
    """Saves checkpoints during training: every epoch, every N steps, the best, or the top k.

    Each save is a full resumable checkpoint folder (see `mlxkit.checkpoint`), or with
    `save_weights_only=True` a single `.safetensors` file of the model's weights.

    Args:
        filepath: A path template formatted with `epoch` (1-based), `step` (global, 1-based) and
            the epoch's logs, e.g. `"runs/epoch{epoch:03d}-{val_loss:.4f}"`. A template without
            fields always writes the same path.
        monitor: The log key that ranks checkpoints for `save_best_only` / `save_top_k`.
        mode: `"auto"`, `"min"` or `"max"`.
        save_best_only: Save only when `monitor` improves on the best so far.
        save_top_k: Keep only the k best checkpoints by `monitor`, deleting the others.
        every_n_epochs: Save at the end of every n-th epoch.
        every_n_steps: Save every n optimizer steps instead, mid-epoch (no monitor ranking).
        save_weights_only: Write only the model weights (`.safetensors` appended if missing).

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
        mode: Mode = "auto",
        save_best_only: bool = False,
        save_top_k: int | None = None,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        save_weights_only: bool = False,
    ):
        if save_top_k is not None and (not isinstance(save_top_k, int) or save_top_k < 1):
            raise ValueError(
                f"ModelCheckpoint: `save_top_k` must be a positive integer or None. "
                f"Received: save_top_k={save_top_k!r}"
            )
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(
                    f"ModelCheckpoint: `{name}` must be a positive integer. "
                    f"Received: {name}={value!r}"
                )
        if every_n_steps is not None and (save_best_only or save_top_k):
            raise ValueError(
                "ModelCheckpoint: `every_n_steps` saves mid-epoch, where no epoch metrics exist to "
                f"rank by. Received: every_n_steps={every_n_steps}, save_best_only="
                f"{save_best_only}, save_top_k={save_top_k}"
            )
        self.filepath = os.fspath(filepath)
        self.tracker = Monitor("ModelCheckpoint", monitor, mode, 0.0)
        self.save_best_only = save_best_only
        self.save_top_k = save_top_k
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.save_weights_only = save_weights_only
        if not _fields(self.filepath):  # a fixed path is checked now, a template at each save
            suffix = ".safetensors" if save_weights_only else ""
            self._check_target(self.filepath.removesuffix(suffix) + suffix)
        self.best = self.tracker.worst()
        self.best_path: str | None = None
        self.top_k: list[tuple[float, str]] = []
        if every_n_steps is not None:
            self.on_train_batch_end = self._on_train_batch_end  # type: ignore[method-assign]

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

    def _path(self, epoch: int, logs: Mapping[str, float]) -> str:
        fields = {**logs, "epoch": epoch + 1, "step": self.trainer.global_step}
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
        if getattr(self.trainer, "rank", 0) != 0:
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
            self._save(self._path(self.trainer.epoch, {}))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if self.every_n_steps is not None or (epoch + 1) % self.every_n_epochs:
            return
        logs = dict(logs or {})
        path = self._path(epoch, logs)
        if not (self.save_best_only or self.save_top_k):
            self._save(path)
            return
        current = self.tracker.value(logs)
        if self.save_best_only and not self.tracker.improved(current, self.best):
            return
        if self.save_top_k and len(self.top_k) >= self.save_top_k:
            worst_score, _ = self._ranked()[-1]
            if not self.tracker.improved(current, worst_score):
                return
        if self.tracker.improved(current, self.best):
            self.best, self.best_path = current, path
        self._save(path)
        if self.save_top_k:
            self.top_k = [entry for entry in self.top_k if entry[1] != path] + [(current, path)]
            for _, old_path in self._ranked()[self.save_top_k :]:
                if old_path != path:
                    remove_folder(old_path)
            self.top_k = self._ranked()[: self.save_top_k]

    def _ranked(self) -> list[tuple[float, str]]:
        return sorted(self.top_k, key=lambda e: e[0], reverse=self.tracker.mode == "max")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_path": self.best_path, "top_k": self.top_k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_path = float(state["best"]), state["best_path"]
        self.top_k = [(float(score), path) for score, path in state["top_k"]]


def _fields(template: str) -> list[str]:
    """The `{field}` names of a path template."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


class BackupAndRestore(Callback):
    """Keeps a full checkpoint in `backup_dir` so an interrupted `fit` resumes where it stopped.

    At the start of `fit`, an existing backup is loaded automatically (mid-epoch included); the
    backup is refreshed at every epoch end (and every `save_freq` steps), and deleted once training
    completes.

    Args:
        backup_dir: The folder for the backup.
        save_freq: `"epoch"`, or a number of optimizer steps between backups.
        delete_checkpoint: Delete the backup when training completes.

    Example:
        >>> # Run this twice; if the first run is killed, the second resumes it.
        >>> backup = BackupAndRestore("runs/backup")
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
        delete_checkpoint: bool = True,
    ):
        if save_freq != "epoch" and (not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(
                "BackupAndRestore: `save_freq` must be 'epoch' or a positive number of steps. "
                f"Received: save_freq={save_freq!r}"
            )
        self.backup_dir = check_checkpoint_target(backup_dir, argument="backup_dir")
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        if save_freq != "epoch":
            self.on_train_batch_end = self._on_train_batch_end  # type: ignore[method-assign]

    def resume_path(self) -> str | None:
        """The backup to resume from, if one exists."""
        recover_folder(self.backup_dir)
        marker = os.path.join(self.backup_dir, "trainer.json")
        return self.backup_dir if os.path.exists(marker) else None

    def _backup(self) -> None:
        save_checkpoint(self.trainer, self.backup_dir)

    def _on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        if self.trainer.global_step % int(self.save_freq) == 0:
            self._backup()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self._backup()

    def on_train_end(self, logs=None) -> None:
        completed = self.trainer.epoch >= self.trainer.epochs or self.trainer.stop_training
        if self.delete_checkpoint and completed and getattr(self.trainer, "rank", 0) == 0:
            remove_folder(self.backup_dir)
