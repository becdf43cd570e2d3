"""Ports keras/src/callbacks/backup_and_restore_test.py to mlxkit's `BackupAndRestore`.

Keras's `CanaryLayer` counts the batches the model has run in a non-trainable weight that the
backup restores; mlxkit restores `trainer.global_step`, the same count, from its checkpoint.

Two differences of design show in the numbers, each asserted with its reason:

- checkpoint writers run each hook after the other callbacks (so a checkpoint holds every
  callback's state of that epoch or step), so a callback that raises in `on_epoch_end` or
  `on_train_batch_end` stops training before that epoch's or step's backup is written;
- a backup taken mid-epoch resumes at the next batch (Keras restarts the interrupted epoch from
  its first batch with the backed-up weights, training some batches twice).
"""

from __future__ import annotations

import os

from mlxkit.callbacks import BackupAndRestore, Callback
from mlxkit.checkpoint import read_checkpoint

import mlx.nn as nn
import pytest

from tests.keras_parity.common import compiled, uniform


class InterruptingCallback(Callback):
    """Raises after `steps_int` batches or `epoch_int` epochs (Keras's test callback)."""

    def __init__(self, steps_int, epoch_int):
        self.batch_count = 0
        self.epoch_count = 0
        self.steps_int = steps_int
        self.epoch_int = epoch_int

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_count += 1
        if self.epoch_int is not None and self.epoch_count == self.epoch_int:
            raise RuntimeError("EpochInterruption")

    # Keras's test overrides the alias `on_batch_end`, which mlxkit calls only after the trainer
    # follow-up of issue 15 (see test_best_case_step_with_the_on_batch_end_alias).
    def on_train_batch_end(self, batch, logs=None):
        self.batch_count += 1
        if self.steps_int is not None and self.batch_count == self.steps_int:
            raise RuntimeError("StepsInterruption")


def make_model():
    return compiled(nn.Linear(3, 1), loss="mse", optimizer="sgd", metrics=["mse"])


def fit(trainer, callbacks, epochs):
    # 10 samples in batches of 4: 3 batches an epoch, the last one partial (as in Keras).
    x_train, y_train = uniform(10, 3, seed=0), uniform(10, 1, seed=1)
    return trainer.fit(
        x_train, y_train, batch_size=4, callbacks=callbacks, epochs=epochs, verbose=0
    )


def backed_up_position(backup_dir):
    meta = read_checkpoint(backup_dir)[0]
    return meta["epoch"], meta["batch_in_epoch"], meta["global_step"]


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_save_freq_unknown_error
def test_save_freq_unknown_error():
    with pytest.raises(ValueError, match=r"`save_freq` must be 'epoch' or a positive number"):
        BackupAndRestore(backup_dir="backup_dir", save_freq="batch")
    with pytest.raises(ValueError, match=r"`save_freq` must be 'epoch' or a positive number"):
        BackupAndRestore(backup_dir="backup_dir", save_freq=0.15)


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_best_case_step
def test_best_case_step(tmp_path):
    backup_dir = tmp_path / "subdir"
    assert not backup_dir.exists()
    trainer = make_model()
    backup = BackupAndRestore(backup_dir, save_freq=1)
    with pytest.raises(RuntimeError, match="StepsInterruption"):
        fit(trainer, [backup, InterruptingCallback(steps_int=2, epoch_int=None)], epochs=2)
    assert backup_dir.exists()
    assert trainer.global_step == 2  # Keras: counter == 2
    # The second step raised before its backup: the backup is of step 1.
    assert backed_up_position(backup_dir) == (0, 1, 1)
    resumed = make_model()
    history = fit(resumed, [backup], epochs=5)
    assert history.epoch[-1] == 4
    # Keras: 2 + 5 epochs x 3 batches = 17 (it restarts epoch 0). mlxkit resumes after step 1:
    # 1 + 2 batches left in epoch 0 + 4 epochs x 3 = 15.
    assert resumed.global_step == 15


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_best_case_epoch
def test_best_case_epoch(tmp_path):
    backup_dir = tmp_path / "subdir"
    assert not backup_dir.exists()
    trainer = make_model()
    assert trainer.global_step == 0
    backup = BackupAndRestore(backup_dir=backup_dir, save_freq="epoch")
    with pytest.raises(RuntimeError, match="EpochInterruption"):
        fit(trainer, [backup, InterruptingCallback(steps_int=None, epoch_int=2)], epochs=6)
    assert backup_dir.exists()
    assert trainer.global_step == 6  # Keras: counter == 6
    assert backed_up_position(backup_dir) == (1, 0, 3)  # epoch 2's backup was not written
    resumed = make_model()
    history = fit(resumed, [backup], epochs=5)
    assert history.epoch[-1] == 4
    assert resumed.global_step == 5 * 3  # Keras: counter == 5 * 3


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_backup_corrupted
def test_backup_corrupted(tmp_path):
    backup_dir = tmp_path / "subdir"
    trainer = make_model()
    backup = BackupAndRestore(backup_dir=backup_dir, save_freq="epoch", double_checkpoint=True)
    # Keras interrupts at the end of epoch 2 after both backups exist; mlxkit's end-of-epoch-3
    # interruption leaves the same pair (epochs 1 and 2), since epoch 3's is not written.
    with pytest.raises(RuntimeError, match="EpochInterruption"):
        fit(trainer, [backup, InterruptingCallback(steps_int=None, epoch_int=3)], epochs=6)
    assert backed_up_position(backup_dir) == (2, 0, 6)
    assert backed_up_position(backup.previous_dir) == (1, 0, 3)
    # Corrupt the latest weights, as Keras's test does.
    (backup_dir / "model.safetensors").write_text("0")
    resumed = make_model()
    with pytest.warns(UserWarning, match=r"cannot be read.*resuming from the previous copy"):
        history = fit(resumed, [backup], epochs=5)
    assert history.epoch[-1] == 4
    # From the previous copy (step 3), epochs 1 to 4: 3 + 4 x 3 = 15, Keras's 5 * 3.
    assert resumed.global_step == 5 * 3
    assert not os.path.exists(backup_dir) and not os.path.exists(backup.previous_dir)


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_model_deleted_case_epoch
def test_model_deleted_case_epoch(tmp_path):
    backup_dir = tmp_path / "subdir"
    fit(make_model(), [BackupAndRestore(backup_dir, save_freq="epoch")], epochs=2)
    assert not backup_dir.exists()


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_backup_dir_empty_error
def test_backup_dir_empty_error():
    with pytest.raises(
        ValueError, match=r"`backup_dir` must be a folder path. Received: backup_dir=''"
    ):
        BackupAndRestore(backup_dir="", save_freq="epoch")


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_backup_dir_none_error
def test_backup_dir_none_error():
    with pytest.raises(
        ValueError, match=r"`backup_dir` must be a folder path. Received: backup_dir=None"
    ):
        BackupAndRestore(backup_dir=None, save_freq="epoch")


class AliasInterruptingCallback(Callback):
    """Keras's `InterruptingCallback` as Keras writes it: with the `on_batch_end` alias."""

    def __init__(self):
        self.batch_count = 0

    def on_batch_end(self, batch, logs=None):
        self.batch_count += 1
        if self.batch_count == 2:
            raise RuntimeError("StepsInterruption")


# Ports keras/src/callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::
#   test_best_case_step
def test_best_case_step_with_the_on_batch_end_alias(tmp_path):
    backup = BackupAndRestore(tmp_path / "subdir", save_freq=1)
    with pytest.raises(RuntimeError, match="StepsInterruption"):
        fit(make_model(), [backup, AliasInterruptingCallback()], epochs=2)
