"""Ports keras/src/callbacks/reduce_lr_on_plateau_test.py to mlxkit's `ReduceLROnPlateau`."""

from __future__ import annotations

from mlxkit.callbacks import ReduceLROnPlateau

import mlx.optimizers as optim
import numpy as np
import pytest

from tests.keras_parity.common import (
    compiled,
    dense_stack,
    keras_test_data,
    to_categorical,
)


@pytest.fixture
def setup():
    """Keras's `setUp`: 10 samples of 3 features, 2 one-hot classes, mse, Adam(0.1)."""
    (x_train, y_train), (x_test, y_test) = keras_test_data(
        train_samples=10, test_samples=10, input_dims=3, num_classes=2
    )
    trainer = compiled(dense_stack(3, [5, 2]), loss="mse", optimizer=optim.Adam(learning_rate=0.1))
    data = dict(
        x=x_train,
        y=to_categorical(y_train, 2),
        validation_data=(x_test, to_categorical(y_test, 2)),
        verbose=0,
    )
    return trainer, data


def learning_rate(trainer):
    return trainer.optimizer.learning_rate.item()


# Ports keras/src/callbacks/reduce_lr_on_plateau_test.py::ReduceLROnPlateauTest::
#   test_reduces_lr_with_model_fit
def test_reduces_lr_with_model_fit(setup):
    trainer, data = setup
    reduce_lr = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)
    trainer.fit(callbacks=[reduce_lr], epochs=2, **data)
    assert learning_rate(trainer) == pytest.approx(0.01)


# Ports keras/src/callbacks/reduce_lr_on_plateau_test.py::ReduceLROnPlateauTest::
#   test_throws_when_optimizer_has_schedule
def test_throws_when_optimizer_has_schedule(setup):
    _, data = setup
    reduce_lr = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)
    # Keras's PolynomialDecay(initial_learning_rate=0.1, decay_steps=10) has power 1: linear.
    schedule = optim.linear_schedule(0.1, 0.0, steps=10)
    trainer = compiled(dense_stack(3, [5, 2]), loss="mse", optimizer=optim.Adam(schedule))
    with pytest.raises(TypeError, match="already follows a schedule"):
        trainer.fit(callbacks=[reduce_lr], epochs=2, **data)


# Ports keras/src/callbacks/reduce_lr_on_plateau_test.py::ReduceLROnPlateauTest::
#   test_verbose_logging
def test_verbose_logging(setup, capsys):
    trainer, data = setup
    reduce_lr = ReduceLROnPlateau(
        patience=1, factor=0.1, monitor="val_loss", min_delta=100, verbose=1
    )
    trainer.fit(callbacks=[reduce_lr], epochs=2, **data)
    assert "ReduceLROnPlateau reducing learning rate to 0.01" in capsys.readouterr().out


# Ports keras/src/callbacks/reduce_lr_on_plateau_test.py::ReduceLROnPlateauTest::
#   test_honors_min_lr
def test_honors_min_lr(setup):
    trainer, data = setup
    reduce_lr = ReduceLROnPlateau(
        patience=1, factor=0.1, monitor="val_loss", min_delta=10, min_lr=0.005
    )
    trainer.fit(callbacks=[reduce_lr], epochs=4, **data)
    assert learning_rate(trainer) == np.float32(0.005)


# Ports keras/src/callbacks/reduce_lr_on_plateau_test.py::ReduceLROnPlateauTest::test_cooldown
def test_cooldown(setup):
    trainer, data = setup
    reduce_lr = ReduceLROnPlateau(
        patience=1, factor=0.1, monitor="val_loss", min_delta=100, cooldown=2
    )
    trainer.fit(callbacks=[reduce_lr], epochs=4, **data)
    # With a cooldown of 2 epochs the rate drops every other epoch: twice in 4 epochs.
    assert learning_rate(trainer) == pytest.approx(0.001)


# Ports keras/src/callbacks/reduce_lr_on_plateau_test.py::ReduceLROnPlateauTest::
#   test_state_reset_across_fit_calls
def test_state_reset_across_fit_calls(setup):
    trainer, _ = setup
    reduce_lr = ReduceLROnPlateau(patience=1, factor=0.1, monitor="loss", min_delta=0, cooldown=2)
    reduce_lr.set_trainer(trainer)
    reduce_lr.on_train_begin()
    reduce_lr.best = 0.5
    reduce_lr.wait = 3
    reduce_lr.cooldown_counter = 2
    reduce_lr.on_train_begin()
    assert reduce_lr.best is None
    assert reduce_lr.wait == 0
    assert reduce_lr.cooldown_counter == 0
