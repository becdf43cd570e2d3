"""Ports keras/src/callbacks/early_stopping_test.py to mlxkit's `EarlyStopping`.

Keras's tests that drive the callback by hand (`set_model`, `on_epoch_end(epoch, logs)`) attach it
to a Trainer with `set_trainer` and call the same hooks.
"""

from __future__ import annotations

from mlxkit.callbacks import EarlyStopping

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_map

from tests.keras_parity.common import compiled, dense_stack, uniform
from tests.keras_parity.metrics_for_tests import BinaryF1Score, Hinge
from tests.keras_parity.test_monitor_callback import CASES


def relu_regressor(metrics):
    model = dense_stack(5, [1, 1], activation="relu", last_activation="relu")
    return compiled(model, loss="mae", optimizer="sgd", metrics=metrics)


def attached(stopper, metrics=None):
    """`stopper.set_model(model)` for a callback driven by hand."""
    trainer = compiled(nn.Linear(1, 1), loss="mse", metrics=metrics)
    stopper.set_trainer(trainer)
    return trainer


# Ports keras/src/callbacks/early_stopping_test.py::EarlyStoppingTest::test_early_stopping
def test_early_stopping():
    x_train, y_train = uniform(10, 5, seed=0), uniform(10, 1, seed=1)
    x_test, y_test = uniform(10, 5, seed=2), uniform(10, 1, seed=3)
    model = dense_stack(5, [1, 1], activation="relu", last_activation="relu")
    metrics = ["mse", "acc", "accuracy", Hinge(), BinaryF1Score()]
    trainer = compiled(model, loss="mae", optimizer="adam", metrics=metrics)
    fit = dict(batch_size=5, validation_data=(x_test, y_test), epochs=2, verbose=0)
    for mode, monitor, expected_mode in CASES:
        stopper = EarlyStopping(patience=0, monitor=monitor, mode=mode)
        trainer.fit(x_train, y_train, callbacks=[stopper], **fit)
        assert stopper.tracker.mode == expected_mode, (mode, monitor)
    try:
        trainer.fit(x_train, y_train, callbacks=[EarlyStopping(monitor="unknown")], **fit)
    except ValueError as error:
        assert "monitor='unknown'" in str(error) and "Pass mode='min'" in str(error)
    else:
        raise AssertionError("an unknown monitor with mode='auto' must raise")


# Ports keras/src/callbacks/early_stopping_test.py::EarlyStoppingTest::test_early_stopping_patience
def test_early_stopping_patience():
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    for patience in [0, 1, 2, 3]:
        stopper = EarlyStopping(monitor="loss", patience=patience)
        trainer = attached(stopper)
        stopper.on_train_begin()
        for epoch, loss in enumerate(losses):
            stopper.on_epoch_end(epoch=epoch, logs={"loss": loss})
            if trainer.stop_training:
                break
        assert stopper.stopped_epoch == max(patience, 1) + 2


# Ports keras/src/callbacks/early_stopping_test.py::EarlyStoppingTest::test_early_stopping_reuse
def test_early_stopping_reuse():
    patience = 3
    data = uniform(100, 1, seed=0)
    labels = np.where(data > 0.5, 1.0, 0.0).astype(np.float32)
    model = dense_stack(1, [1, 1], activation="relu", last_activation="relu")
    trainer = compiled(model, loss="mae", optimizer="sgd", metrics=["mse"])
    stopper = EarlyStopping(monitor="mse", patience=patience)
    history1 = trainer.fit(data, labels, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history1.epoch) >= patience
    history2 = trainer.fit(data, labels, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history2.epoch) >= patience


# Ports keras/src/callbacks/early_stopping_test.py::EarlyStoppingTest::
#   test_state_reset_across_fit_calls
def test_state_reset_across_fit_calls():
    stopper = EarlyStopping(monitor="loss", patience=3)
    attached(stopper)
    stopper.on_train_begin()
    stopper.best = 0.1
    stopper.wait = 3
    stopper.stopped_epoch = 5
    stopper.best_epoch = 5
    stopper.best_weights = {"weight": mx.zeros((1,))}
    stopper.on_train_begin()
    assert stopper.best is None
    assert stopper.wait == 0
    assert stopper.stopped_epoch == 0
    assert stopper.best_epoch == 0
    assert stopper.best_weights is None


# Ports keras/src/callbacks/early_stopping_test.py::EarlyStoppingTest::
#   test_early_stopping_with_baseline
def test_early_stopping_with_baseline():
    x_train, y_train = uniform(10, 5, seed=0), uniform(10, 1, seed=1)
    trainer = relu_regressor(["mse"])
    patience = 3
    stopper = EarlyStopping(monitor="mse", patience=patience, baseline=0.6)
    history = trainer.fit(x_train, y_train, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history.epoch) >= patience


def set_weights_to(model, epoch):
    """Keras's `DummyModel.set_weight_to_epoch`: every weight holds the epoch index."""
    model.update(tree_map(lambda p: mx.full(p.shape, float(epoch)), model.parameters()))


def restored_epoch(model):
    values = {float(np.array(p).flat[0]) for p in model.parameters().values()}
    (value,) = values
    return value


# Ports keras/src/callbacks/early_stopping_test.py::EarlyStoppingTest::
#   test_early_stopping_final_weights_when_restoring_model_weights
def test_early_stopping_final_weights_when_restoring_model_weights():
    def run(stopper, losses, stop_at=None):
        trainer = attached(stopper)
        epochs_trained = 0
        stopper.on_train_begin()
        for epoch in range(len(losses)):
            epochs_trained += 1
            set_weights_to(trainer.model, epoch)
            stopper.on_epoch_end(epoch, logs={"val_loss": losses[epoch]})
            if epoch == stop_at:
                trainer.stop_training = True
            if trainer.stop_training:
                break
        stopper.on_train_end()
        return epochs_trained, restored_epoch(trainer.model)

    # The best epoch is 2 (0.1); patience 2 stops at epoch 4 and restores epoch 2.
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    assert run(stopper, [0.2, 0.15, 0.1, 0.11, 0.12])[1] == 2

    # No epoch beats the baseline: 5 epochs, then the best of them (epoch 2) is restored.
    losses = [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]
    stopper = EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    assert run(stopper, losses) == (5, 2)

    # Another callback stops training: the best weights are restored all the same.
    stopper = EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    assert run(stopper, losses, stop_at=3) == (4, 2)


# Ports keras/src/callbacks/early_stopping_test.py::EarlyStoppingTest::
#   test_early_stopping_with_start_from_epoch
def test_early_stopping_with_start_from_epoch():
    x_train, y_train = uniform(10, 5, seed=0), uniform(10, 1, seed=1)
    trainer = relu_regressor(["mse"])
    stopper = EarlyStopping(monitor="mse", patience=3, start_from_epoch=2)
    history = trainer.fit(x_train, y_train, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history.epoch) >= 3 + 2
    # Boundary condition: patience=0.
    stopper = EarlyStopping(monitor="mse", patience=0, start_from_epoch=2)
    history = trainer.fit(x_train, y_train, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history.epoch) >= 2


# Keras behaviour: keras/src/callbacks/early_stopping.py::EarlyStopping.get_monitor_value warns
# and skips an epoch whose logs lack the monitored value (here: validation every other epoch).
def test_absent_monitor_warns_and_skips_the_epoch():
    x_train, y_train = uniform(10, 5, seed=0), uniform(10, 1, seed=1)
    trainer = relu_regressor(["mse"])
    stopper = EarlyStopping(monitor="val_loss", patience=0)
    validation = (uniform(4, 5, seed=2), uniform(4, 1, seed=3))
    with pytest.warns(UserWarning, match=r"monitor='val_loss', but no validation ran this epoch"):
        history = trainer.fit(
            x_train,
            y_train,
            validation_data=validation,
            validation_freq=2,
            epochs=4,
            callbacks=[stopper],
            verbose=0,
        )
    # Epochs 0 and 2 had no value: they neither improved nor counted towards patience.
    assert history.epoch == [0, 1, 2, 3] or stopper.stopped_epoch == 3
    assert len(history.history["val_loss"]) == 2
