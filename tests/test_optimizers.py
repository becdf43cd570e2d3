"""`mlxkit.optimizers.get`: Keras's optimizer names, with Keras's default hyperparameters."""

from __future__ import annotations

from mlxkit import optimizers

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

# keras/src/optimizers/<name>.py defaults.
KERAS_LEARNING_RATES = {
    "adam": 0.001,
    "adamw": 0.001,
    "adamax": 0.001,
    "sgd": 0.01,
    "rmsprop": 0.001,
    "adagrad": 0.001,
    "adadelta": 0.001,
    "lion": 0.001,
}


@pytest.mark.parametrize("name, learning_rate", sorted(KERAS_LEARNING_RATES.items()))
def test_names_give_keras_default_learning_rates(name, learning_rate):
    optimizer = optimizers.get(name)
    assert isinstance(optimizer, optim.Optimizer)
    assert optimizer.learning_rate.item() == np.float32(learning_rate)
    assert type(optimizers.get(name.upper())) is type(optimizer)  # Keras matches any case
    assert optimizers.get(name) is not optimizer  # a fresh object for each lookup


def test_keras_hyperparameters_other_than_the_learning_rate():
    assert optimizers.get("adamw").weight_decay == 0.004
    assert optimizers.get("rmsprop").alpha == 0.9  # Keras's rho
    assert optimizers.get("adadelta").rho == 0.95
    assert optimizers.get("adam").eps == 1e-7
    assert optimizers.get("adam").bias_correction


def test_adam_first_step_matches_keras_update():
    # Keras's Adam, step 1: m = (1 - b1) g, v = (1 - b2) g^2, and the parameter moves by
    # lr * sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps), which is about lr * sign(g).
    model = nn.Linear(2, 1)
    model.update({"weight": mx.array([[1.0, -2.0]]), "bias": mx.array([0.5])})
    optimizer = optimizers.get("adam")
    grads = {"weight": mx.array([[0.3, -4.0]]), "bias": mx.array([2.0])}
    optimizer.update(model, grads)
    g = np.array([0.3, -4.0])
    m, v = 0.1 * g, 0.001 * g**2
    keras_step = 0.001 * np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(
        np.array(model.weight)[0], np.array([1.0, -2.0]) - keras_step, rtol=0, atol=1e-6
    )


def test_objects_pass_through_and_errors_name_the_choices():
    mine = optim.SGD(learning_rate=0.5)
    assert optimizers.get(mine) is mine
    with pytest.raises(ValueError, match=r"optimizer='nadam'. Expected one of: adadelta, "):
        optimizers.get("nadam")
    with pytest.raises(TypeError, match=r"Received: optimizer of type int"):
        optimizers.get(3)  # type: ignore[arg-type]
