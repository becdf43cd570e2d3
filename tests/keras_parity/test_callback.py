"""Ports keras/src/callbacks/callback_test.py: what a callback sees at the end of a batch."""

from __future__ import annotations

from mlxkit.callbacks import Callback

import mlx.nn as nn
import numpy as np

from tests.keras_parity.common import compiled, uniform, weights_of


def fit_with(callback):
    # Keras's TestModel counts its calls in a variable; mlxkit's trainer counts the steps.
    trainer = compiled(nn.Linear(1, 1), loss="mse", optimizer="sgd")
    trainer.fit(
        uniform(8, 1, seed=0), uniform(8, 1, seed=1), callbacks=[callback], batch_size=2, verbose=0
    )
    return trainer


# Ports keras/src/callbacks/callback_test.py::CallbackTest::test_model_state_is_current_on_epoch_end
def test_model_state_is_current_on_epoch_end():
    seen = []

    class CBK(Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, self.trainer.global_step, weights_of(self.trainer.model)))

    trainer = fit_with(CBK())
    assert [(batch, step) for batch, step, _ in seen] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    # The weights a batch-end hook sees are those after that batch's update.
    final = weights_of(trainer.model)
    for key in final:
        np.testing.assert_array_equal(seen[-1][2][key], final[key])
        assert not np.array_equal(seen[0][2][key], seen[1][2][key])


# The same test with Keras's hook name: `on_batch_end`, an alias of `on_train_batch_end`.
# Ports keras/src/callbacks/callback_test.py::CallbackTest::test_model_state_is_current_on_epoch_end
def test_model_state_is_current_on_epoch_end_with_the_on_batch_end_alias():
    steps = []

    class CBK(Callback):
        def on_batch_end(self, batch, logs=None):
            steps.append((batch, self.trainer.global_step))

    fit_with(CBK())
    assert steps == [(0, 1), (1, 2), (2, 3), (3, 4)]
