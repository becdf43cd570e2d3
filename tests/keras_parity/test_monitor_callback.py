"""Ports keras/src/callbacks/monitor_callback_test.py: the direction `mode="auto"` picks.

Keras's `MonitorCallback` is mlxkit's `Monitor` (shared by EarlyStopping, ReduceLROnPlateau and
ModelCheckpoint); Keras's `_set_monitor_op()` is `Monitor.resolve(trainer.metrics)`.
"""

from __future__ import annotations

from mlxkit.callbacks.monitor import Monitor

import pytest

from tests.keras_parity.common import compiled, dense_stack, uniform
from tests.keras_parity.metrics_for_tests import BinaryF1Score, Hinge

CASES = [
    ("max", "val_mse", "max"),
    ("min", "val_loss", "min"),
    ("auto", "val_mse", "min"),
    ("auto", "loss", "min"),
    ("auto", "acc", "max"),
    ("auto", "val_accuracy", "max"),
    ("auto", "hinge", "min"),
    ("auto", "f1_score", "max"),
]


def fitted_trainer():
    x_train, y_train = uniform(10, 5, seed=0), uniform(10, 1, seed=1)
    x_test, y_test = uniform(10, 5, seed=2), uniform(10, 1, seed=3)
    model = dense_stack(5, [1, 1], activation="relu", last_activation="relu")
    trainer = compiled(
        model,
        loss="mae",
        optimizer="adam",
        metrics=["mse", "acc", "accuracy", Hinge(), BinaryF1Score()],
    )
    trainer.fit(
        x_train,
        y_train,
        batch_size=5,
        validation_data=(x_test, y_test),
        epochs=2,
        verbose=0,
    )
    return trainer


# Ports keras/src/callbacks/monitor_callback_test.py::MonitorCallbackTest::test_monitor_op_logic
def test_monitor_op_logic():
    trainer = fitted_trainer()
    for mode, monitor, expected_mode in CASES:
        assert Monitor("MonitorCallback", monitor, mode, 0.0).resolve(trainer.metrics) == (
            expected_mode
        ), (mode, monitor)
    with pytest.raises(ValueError, match=r"monitor='unknown' should be minimised or maximised"):
        Monitor("MonitorCallback", "unknown", "auto", 0.0).resolve(trainer.metrics)


# Ports keras/src/callbacks/monitor_callback_test.py::MonitorCallbackTest::test_min_delta
def test_min_delta():
    monitor = Monitor("MonitorCallback", "val_loss", "max", 0.5)
    monitor.resolve([])
    assert monitor.improved(0.75, 0)
    assert monitor.improved(0.5, None)
    assert not monitor.improved(0.5, 0)
    assert not monitor.improved(0.2, 0.5)
