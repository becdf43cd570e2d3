"""Ports keras/src/callbacks/lambda_callback_test.py to mlxkit's `LambdaCallback`.

Keras's tests log with `absl.logging` and read the records back; here the functions append the
hook's name to a list.
"""

from __future__ import annotations

from mlxkit.callbacks import LambdaCallback

import mlx.nn as nn
import numpy as np
import pytest

from tests.keras_parity.common import compiled

BATCH_SIZE = 4


def make_model():
    return compiled(nn.Linear(2, 1), loss="mean_squared_error", optimizer="sgd")


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(16, 2)).astype(np.float32), rng.normal(size=(16, 1)).astype(np.float32)


# Ports keras/src/callbacks/lambda_callback_test.py::LambdaCallbackTest::test_lambda_callback
def test_lambda_callback():
    calls = []
    callback = LambdaCallback(
        on_train_begin=lambda logs: calls.append("on_train_begin"),
        on_epoch_begin=lambda epoch, logs: calls.append("on_epoch_begin"),
        on_epoch_end=lambda epoch, logs: calls.append("on_epoch_end"),
        on_train_end=lambda logs: calls.append("on_train_end"),
    )
    x, y = data()
    make_model().fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        validation_split=0.2,
        callbacks=[callback],
        epochs=5,
        verbose=0,
    )
    assert set(calls) == {"on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end"}
    assert calls[0] == "on_train_begin" and calls[-1] == "on_train_end"


# Ports keras/src/callbacks/lambda_callback_test.py::LambdaCallbackTest::
#   test_lambda_callback_with_batches
def test_lambda_callback_with_batches():
    calls = []
    callback = LambdaCallback(
        on_train_batch_begin=lambda batch, logs: calls.append("on_train_batch_begin"),
        on_train_batch_end=lambda batch, logs: calls.append("on_train_batch_end"),
    )
    x, y = data()
    make_model().fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        validation_split=0.2,
        callbacks=[callback],
        epochs=5,
        verbose=0,
    )
    assert "on_train_batch_begin" in calls and "on_train_batch_end" in calls


# Ports keras/src/callbacks/lambda_callback_test.py::LambdaCallbackTest::
#   test_lambda_callback_with_kwargs
def test_lambda_callback_with_kwargs():
    x, y = data()
    trainer = make_model()
    trainer.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    calls = []
    callback = LambdaCallback(on_test_begin=lambda logs: calls.append("custom_on_test_begin"))
    trainer.evaluate(x, y, batch_size=BATCH_SIZE, callbacks=[callback])
    assert calls == ["custom_on_test_begin"]


# Ports keras/src/callbacks/lambda_callback_test.py::LambdaCallbackTest::
#   test_lambda_callback_no_args
def test_lambda_callback_no_args():
    assert isinstance(LambdaCallback(), LambdaCallback)


# Ports keras/src/callbacks/lambda_callback_test.py::LambdaCallbackTest::
#   test_lambda_callback_with_additional_kwargs
def test_lambda_callback_with_additional_kwargs():
    # Deliberate difference: Keras stores any keyword as an attribute, so a misspelt hook
    # (`on_epoch_ends=`) is silently never called; mlxkit names the valid hooks instead.
    with pytest.raises(ValueError, match=r"unknown hooks \['custom_method'\]. Valid hooks: "):
        LambdaCallback(custom_method=lambda logs: None)


# Ports keras/src/callbacks/lambda_callback_test.py::LambdaCallbackTest::
#   test_lambda_callback_during_prediction
def test_lambda_callback_during_prediction():
    x, _ = data()
    calls = []
    callback = LambdaCallback(on_predict_begin=lambda logs: calls.append("on_predict_begin"))
    make_model().predict(x, batch_size=BATCH_SIZE, callbacks=[callback])
    assert calls == ["on_predict_begin"]
