"""Ports keras/src/callbacks/learning_rate_scheduler_test.py to mlxkit's `LearningRateScheduler`."""

from __future__ import annotations

from mlxkit.callbacks import LearningRateScheduler

import mlx.optimizers as optim
import pytest

from tests.keras_parity.common import (
    compiled,
    dense_stack,
    keras_test_data,
    to_categorical,
)


@pytest.fixture
def data():
    """Keras's `setUp`: 10 samples of 3 features, 2 one-hot classes."""
    (x_train, y_train), _ = keras_test_data(
        train_samples=10, test_samples=10, input_dims=3, num_classes=2
    )
    return dict(x=x_train, y=to_categorical(y_train, 2), verbose=0)


def make_trainer(optimizer="sgd"):
    return compiled(dense_stack(3, [5, 2]), loss="mse", optimizer=optimizer)


# Ports keras/src/callbacks/learning_rate_scheduler_test.py::LearningRateSchedulerTest::
#   test_updates_learning_rate
def test_updates_learning_rate(data, capsys):
    trainer = make_trainer()
    scheduler = LearningRateScheduler(lambda step: 1.0 / (2.0 + step), verbose=1)
    trainer.fit(callbacks=[scheduler], epochs=1, **data)
    assert trainer.optimizer.learning_rate.item() == 0.5


# Ports keras/src/callbacks/learning_rate_scheduler_test.py::LearningRateSchedulerTest::
#   test_verbose_logging
def test_verbose_logging(data, capsys):
    trainer = make_trainer()
    scheduler = LearningRateScheduler(lambda step: 1.0 / (1.0 + step), verbose=1)
    trainer.fit(callbacks=[scheduler], epochs=1, **data)
    assert "LearningRateScheduler setting learning rate to 1.0" in capsys.readouterr().out


# Ports keras/src/callbacks/learning_rate_scheduler_test.py::LearningRateSchedulerTest::
#   test_schedule_dependent_on_previous_learning_rate
def test_schedule_dependent_on_previous_learning_rate(data):
    initial_lr = 0.03
    trainer = make_trainer(optim.Adam(learning_rate=initial_lr))
    scheduler = LearningRateScheduler(lambda step, lr: lr / 2)
    trainer.fit(callbacks=[scheduler], epochs=2, **data)
    assert trainer.optimizer.learning_rate.item() == pytest.approx(initial_lr / 4.0)


# Ports keras/src/callbacks/learning_rate_scheduler_test.py::LearningRateSchedulerTest::
#   test_throws_when_optimizer_has_schedule
def test_throws_when_optimizer_has_schedule(data):
    trainer = make_trainer(optim.Adam(optim.linear_schedule(0.1, 0.0, steps=10)))
    scheduler = LearningRateScheduler(lambda step, lr: lr / 2)
    with pytest.raises(TypeError, match="already follows a schedule"):
        trainer.fit(callbacks=[scheduler], epochs=2, **data)


# Ports keras/src/callbacks/learning_rate_scheduler_test.py::LearningRateSchedulerTest::
#   test_learning_rate_in_history
def test_learning_rate_in_history(data):
    trainer = make_trainer()
    history = trainer.fit(callbacks=[LearningRateScheduler(lambda step, lr: 0.5)], epochs=1, **data)
    assert "learning_rate" in history.history
    assert type(history.history["learning_rate"][0]) is float
    assert history.history["learning_rate"][0] == 0.5
