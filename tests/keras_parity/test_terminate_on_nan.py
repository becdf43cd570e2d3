"""Ports keras/src/callbacks/terminate_on_nan_test.py to mlxkit's `TerminateOnNaN`."""

from __future__ import annotations

import math
import os

from mlxkit.callbacks import BackupAndRestore, Callback, TerminateOnNaN

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.keras_parity.common import (
    compiled,
    dense_stack,
    keras_test_data,
    to_categorical,
)


def exploding_trainer():
    """Five `Dense(2, relu, kernel_initializer=Constant(1e5))` and a `Dense(2)`, mse, sgd."""
    model = dense_stack(3, [2, 2, 2, 2, 2, 2], activation="relu")
    for layer in list(model.layers)[:-1]:
        if isinstance(layer, nn.Linear):
            layer.weight = mx.full(layer.weight.shape, 1e5)
            layer.bias = mx.zeros(layer.bias.shape)
    return compiled(model, loss="mean_squared_error", optimizer="sgd")


def single_unit_trainer():
    """`Sequential([Dense(1, input_shape=(1,))])` with sgd and mse."""
    mx.random.seed(0)
    return compiled(nn.Linear(1, 1), loss="mse", optimizer="sgd")


# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::test_TerminateOnNaN
def test_terminate_on_nan():
    (x_train, y_train), (x_test, y_test) = keras_test_data(
        train_samples=10, test_samples=10, input_dims=3, num_classes=2, seed=1337
    )
    trainer = exploding_trainer()
    history = trainer.fit(
        x_train,
        to_categorical(y_train, 2),
        batch_size=4,
        validation_data=(x_test, to_categorical(y_test, 2)),
        callbacks=[TerminateOnNaN()],
        epochs=20,
        verbose=0,
    )
    loss = history.history["loss"]
    assert len(loss) == 1
    assert math.isnan(loss[0]) or math.isinf(loss[0])


# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::
#   test_terminate_on_nan_graceful_stop
def test_terminate_on_nan_graceful_stop():
    trainer = single_unit_trainer()
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    y = np.array([[np.inf], [np.inf]], dtype=np.float32)
    history = trainer.fit(
        x, y, epochs=2, batch_size=1, callbacks=[TerminateOnNaN(raise_error=False)], verbose=0
    )
    assert len(history.history["loss"]) < 4


# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::
#   test_terminate_on_nan_raise_error_raises_error
def test_terminate_on_nan_raise_error_raises_error():
    trainer = single_unit_trainer()
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    y = np.array([[np.inf], [np.inf]], dtype=np.float32)
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered"):
        trainer.fit(
            x, y, epochs=1, batch_size=1, callbacks=[TerminateOnNaN(raise_error=True)], verbose=0
        )


class TrackingCallback(Callback):
    def __init__(self):
        self.train_end_called = False

    def on_train_end(self, logs=None):
        self.train_end_called = True


# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::
#   test_raise_error_terminate_does_not_trigger_on_train_end
def test_raise_error_terminate_does_not_trigger_on_train_end():
    trainer = single_unit_trainer()
    x = np.array([[1.0]], dtype=np.float32)
    y = np.array([[np.inf]], dtype=np.float32)
    tracking = TrackingCallback()
    with pytest.raises(RuntimeError):
        trainer.fit(
            x,
            y,
            epochs=1,
            callbacks=[tracking, TerminateOnNaN(raise_error=True)],
            verbose=0,
        )
    assert not tracking.train_end_called


# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::
#   test_raise_error_terminate_preserves_backup
def test_raise_error_terminate_preserves_backup(tmp_path):
    # Keras's test puts a stray file in the backup folder; mlxkit refuses to write a backup over a
    # folder of the user's files (a deliberate difference, see Coming from Keras), so the backup
    # here is a real one, written before the failing run.
    backup_dir = tmp_path / "backups"
    stray = tmp_path / "user_files"
    stray.mkdir()
    (stray / "checkpoint.txt").write_text("dummy checkpoint")
    with pytest.raises(FileExistsError, match="user_files"):
        BackupAndRestore(backup_dir=stray)
    assert (stray / "checkpoint.txt").read_text() == "dummy checkpoint"

    trainer = single_unit_trainer()
    trainer.save_checkpoint(backup_dir)
    saved = (backup_dir / "trainer.json").read_bytes()
    x_nan = np.array([[1.0]], dtype=np.float32)
    y_nan = np.array([[np.inf]], dtype=np.float32)
    backup = BackupAndRestore(backup_dir=backup_dir)
    backup.on_train_end = lambda logs=None: None  # as Keras's test: no cleanup at train end
    with pytest.raises(RuntimeError):
        trainer.fit(
            x_nan,
            y_nan,
            epochs=1,
            callbacks=[backup, TerminateOnNaN(raise_error=True)],
            verbose=0,
        )
    assert os.path.exists(backup_dir)
    assert (backup_dir / "trainer.json").read_bytes() == saved


# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::
#   test_normal_training_does_not_raise
@pytest.mark.parametrize("raise_error", [False, True])
def test_normal_training_does_not_raise(raise_error):
    trainer = single_unit_trainer()
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    y = np.array([[1.0], [2.0]], dtype=np.float32)
    callback = TerminateOnNaN(raise_error=raise_error)
    history = trainer.fit(x, y, epochs=2, callbacks=[callback], verbose=0)
    assert len(history.history["loss"]) == 2


# The same test with the callback's defaults, as Keras writes it: two samples and the default
# batch_size=32 train one partial batch per epoch (mlxkit 0.1 dropped it and raised).
# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::
#   test_normal_training_does_not_raise
def test_normal_training_does_not_raise_with_default_batches():
    trainer = single_unit_trainer()
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    y = np.array([[1.0], [2.0]], dtype=np.float32)
    history = trainer.fit(x, y, epochs=2, callbacks=[TerminateOnNaN()], verbose=0)
    assert len(history.history["loss"]) == 2


# Ports keras/src/callbacks/terminate_on_nan_test.py::TerminateOnNaNTest::
#   test_raise_error_terminate_stops_on_later_batch
def test_raise_error_terminate_stops_on_later_batch():
    trainer = single_unit_trainer()
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    y = np.array([[1.0], [np.inf]], dtype=np.float32)
    with pytest.raises(RuntimeError) as error:
        trainer.fit(
            x, y, epochs=1, batch_size=1, callbacks=[TerminateOnNaN(raise_error=True)], verbose=0
        )
    assert any(f"batch {i}" in str(error.value) for i in [0, 1])
