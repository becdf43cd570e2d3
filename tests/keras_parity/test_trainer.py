"""Ports of keras/src/trainers/trainer_test.py, and the fit / evaluate / predict semantics of
Keras's trainer that issue 15 lists (each test names the Keras test or source it follows).

Keras's `ExampleModel(units)` is a bias-free `Dense` with a kernel of ones: here an
`nn.Linear(input_dims, units, bias=False)` whose weight is set to ones.

Not ported, as mlxkit has no such API: the steps_per_execution, jit/eager-mode, sparse/ragged,
nested-trainer, loss-scaling, symbolic-build, distribution and `train_on_batch` /
`test_on_batch` / `predict_on_batch` tests, the custom-metric-in-compute_loss tests and
`test_callback_methods_keys` (mlxkit's logs hold extra keys, listed on the Coming from Keras page).
"""

from __future__ import annotations

import math
import warnings
from functools import partial

from mlxkit import Trainer, losses
from mlxkit.callbacks import Callback, EarlyStopping
from mlxkit.data import Stream
from mlxkit.metrics import MeanSquaredError, Metric

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

from tests.keras_parity.common import BatchIndices


def example_model(input_dims: int, units: int) -> nn.Linear:
    """Keras's `ExampleModel(units)`: `Dense(units, use_bias=False, kernel_initializer=Ones())`."""
    model = nn.Linear(input_dims, units, bias=False)
    model.weight = mx.ones_like(model.weight)
    return model


class StepObserver(Callback):
    """Keras's StepObserver: counts hooks through the `on_batch_*` aliases, records batch "mse"."""

    def __init__(self):
        self.begin_count = self.end_count = 0
        self.epoch_begin_count = self.epoch_end_count = 0
        self.batch_loss_history: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_begin_count += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end_count += 1

    def on_batch_begin(self, batch, logs=None):
        self.begin_count += 1

    def on_batch_end(self, batch, logs=None):
        self.end_count += 1
        self.batch_loss_history.append(logs["mse"])


class EpochAgnosticMeanSquaredError(MeanSquaredError):
    """Keras's test metric: an MSE that is never reset, so it runs on across epochs."""

    def __init__(self):
        super().__init__(name="mse")

    def reset(self) -> None:
        pass  # prevent reset at each starting epoch


class Constant(Metric):
    """A metric that always reports `value` (Keras's test uses plain functions returning it)."""

    def __init__(self, value: float, *, name: str):
        super().__init__(name=name)
        self.value = value
        self.state["unused"] = mx.array(0.0)

    def update(self, outputs, targets, mask=None) -> None:
        pass

    def result(self) -> mx.array:
        return mx.array(self.value)


# ------------------------------------------------------------------ fit / evaluate / predict flow
# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_fit_flow
@pytest.mark.parametrize("use_steps_per_epoch", [False, True])
def test_fit_flow(use_steps_per_epoch):
    batch_size, steps_per_epoch, epochs = 20, 7, 3
    dataset_size = batch_size * (steps_per_epoch - 2)
    x = np.ones((dataset_size, 4), np.float32)
    y = np.zeros((dataset_size, 3), np.float32)
    trainer = Trainer(example_model(4, 3), "sgd", "mse", ["mean_squared_error"])
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        history = trainer.fit(
            x,
            y,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch if use_steps_per_epoch else None,
            epochs=epochs,
            verbose=0,
        ).history
    # 7 steps asked of 5 batches: every epoch runs out of data (Keras warns too) and trains 5.
    ran_out = [w for w in raised if "ran out of data" in str(w.message)]
    assert len(ran_out) == (epochs if use_steps_per_epoch else 0)
    assert "loss" in history and "mean_squared_error" in history
    np.testing.assert_allclose(history["mean_squared_error"], [14.5, 11.5, 8.5], atol=1.0)


# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_val_split
@pytest.mark.parametrize("use_steps_per_epoch", [False, True])
def test_fit_with_val_split(use_steps_per_epoch):
    batch_size, steps_per_epoch = 20, 7
    dataset_size = batch_size * (steps_per_epoch - 2)
    trainer = Trainer(example_model(4, 3), "sgd", "mse", ["mean_squared_error"])
    for x, y in [
        (np.ones((dataset_size, 4)), np.zeros((dataset_size, 3))),
        (mx.ones((dataset_size, 4)), mx.zeros((dataset_size, 3))),  # backend-native arrays
    ]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Your input ran out of data")
            history = trainer.fit(
                x,
                y,
                batch_size=batch_size,
                steps_per_epoch=steps_per_epoch if use_steps_per_epoch else None,
                epochs=3,
                validation_split=0.2,
                verbose=0,
            ).history
        assert "loss" in history and "val_loss" in history


# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_evaluate_flow
def test_evaluate_flow():
    x, y = np.ones((100, 4), np.float32), np.zeros((100, 3), np.float32)
    trainer = Trainer(example_model(4, 3), "sgd", "mse", ["mean_squared_error"])
    output = trainer.evaluate(x, y, batch_size=16)
    np.testing.assert_allclose(output, [16.0, 16.0])
    output = trainer.evaluate(x, y, batch_size=16, return_dict=True)
    assert isinstance(output, dict) and "loss" in output and "mean_squared_error" in output
    np.testing.assert_allclose(output["mean_squared_error"], 16.0)


# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_predict_flow
# Deliberate difference: predict returns an mx.array (NumPy's np.array(...) converts it).
def test_predict_flow():
    x = np.ones((100, 4), np.float32)
    trainer = Trainer(example_model(4, 3), "sgd", "mse")
    outputs = trainer.predict(x, batch_size=16)
    assert isinstance(outputs, mx.array) and outputs.shape == (100, 3)
    np.testing.assert_allclose(np.array(outputs), 4)


class InfiniteBatches:
    """An endless re-iterable of (ones, zeros) batches of 5 (Keras's infinite datasets)."""

    def __iter__(self):
        while True:
            yield np.ones((5, 4), np.float32), np.zeros((5, 3), np.float32)


def dataset(kind: str):
    """Keras's create_dataset, in the data types mlxkit takes."""
    x, y = np.ones((100, 4), np.float32), np.zeros((100, 3), np.float32)
    if kind == "np_array":
        return (x, y), {"batch_size": 5}
    if kind == "native_array":
        return (mx.array(x), mx.array(y)), {"batch_size": 5}
    if kind == "batches":  # Keras's PyDataset / tf.data / DataLoader: a re-iterable of batches
        return ([(x[i : i + 5], y[i : i + 5]) for i in range(0, 100, 5)],), {}
    if kind == "infinite":
        return (InfiniteBatches(),), {"steps_per_epoch": 20}
    assert kind == "stream"
    return (Stream({"x": x, "y": y}, batch_size=5),), {}


# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_fit_with_data_adapter
@pytest.mark.parametrize("class_weight", [None, {0: 1, 1: 2}], ids=["plain", "cw"])
@pytest.mark.parametrize("kind", ["np_array", "native_array", "batches", "infinite", "stream"])
def test_fit_with_data_adapter(kind, class_weight):
    data, options = dataset(kind)
    keys = {"inputs": "x", "targets": "y"} if kind == "stream" else {}
    trainer = Trainer(example_model(4, 3), "adagrad", "mse", ["mean_squared_error"], **keys)
    history = trainer.fit(*data, epochs=3, class_weight=class_weight, verbose=0, **options)
    assert history.epoch == [0, 1, 2] and trainer.global_step == 60
    assert all(math.isfinite(value) for value in history.history["loss"])


# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_predict_preserve_order
def test_predict_preserve_order():
    numbers, batches, sizes = iter(range(100)), [], [2, 3, 4]
    while True:
        size = sizes[len(batches) % len(sizes)]
        batch = [n for _, n in zip(range(size), numbers)]
        if len(batch) < size:
            break
        batches.append(np.array(batch, dtype=np.float32))
    trainer = Trainer(nn.Identity(), "sgd", "mse")
    preds = trainer.predict(batches)
    np.testing.assert_array_equal(np.array(preds), np.arange(len(preds), dtype=np.float32))
    assert len(preds) == 99


# ------------------------------------------------------------------ steps_per_epoch
def steps_per_epoch_for(case: str, num_batches: int, epochs: int) -> int:
    return {
        "match_one_epoch": num_batches,
        "match_multi_epoch": num_batches // (epochs // 2),
        "not_match_too_low": num_batches - 1,
        "not_match_but_high_enough": num_batches + 1,
    }[case]


# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_steps_per_epoch
@pytest.mark.parametrize(
    "case",
    ["match_one_epoch", "match_multi_epoch", "not_match_too_low", "not_match_but_high_enough"],
)
def test_steps_per_epoch(case):
    batch_size, epochs, num_batches = 8, 4, 10
    data_size = num_batches * batch_size
    steps_per_epoch = steps_per_epoch_for(case, num_batches, epochs)
    x, y = np.ones((data_size, 4), np.float32), np.ones((data_size, 1), np.float32)

    def run(run_epochs, steps):
        trainer = Trainer(example_model(4, 1), "sgd", "mse", [EpochAgnosticMeanSquaredError()])
        observer = StepObserver()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Your input ran out of data")
            trainer.fit(
                x,
                y,
                batch_size=batch_size,
                epochs=run_epochs,
                steps_per_epoch=steps,
                callbacks=[observer],
                verbose=0,
            )
        return trainer, observer

    trainer, observer = run(epochs, steps_per_epoch)
    if case != "not_match_too_low":
        training_batch_count = epochs * min(steps_per_epoch, num_batches)
    else:
        complete_epochs = num_batches // steps_per_epoch
        remaining_steps = num_batches % steps_per_epoch
        steps_cycles = [complete_epochs * steps_per_epoch, remaining_steps] * epochs
        training_batch_count = sum(steps_cycles[:epochs])
    assert observer.begin_count == training_batch_count
    assert observer.end_count == observer.begin_count
    assert observer.epoch_begin_count == epochs
    assert observer.epoch_end_count == observer.epoch_begin_count

    if case != "not_match_too_low":
        if case in ("not_match_but_high_enough", "match_one_epoch"):
            epochs_2 = epochs
        else:
            epochs_2 = epochs // (num_batches // steps_per_epoch)
        trainer_2, observer_2 = run(epochs_2, None)
        np.testing.assert_allclose(observer.batch_loss_history, observer_2.batch_loss_history)
        np.testing.assert_allclose(np.array(trainer.model.weight), np.array(trainer_2.model.weight))
        np.testing.assert_allclose(
            np.array(trainer.predict(x, batch_size=batch_size)),
            np.array(trainer_2.predict(x, batch_size=batch_size)),
        )
        np.testing.assert_allclose(
            trainer.evaluate(x, y, return_dict=True)["loss"],
            trainer_2.evaluate(x, y, return_dict=True)["loss"],
        )


# ------------------------------------------------------------------ partial batches
# Ports keras/src/trainers/trainer_test.py::TestTrainer::
#   test_fit_with_different_batch_size_same_loss
# Deliberate difference: Keras trains a frozen model (`model.trainable = False`) without complaint;
# mlxkit refuses it with an error that says what is wrong. With a learning rate of 0 instead, the
# epoch loss is the same whatever the batch size, as Keras's test checks.
def test_fit_with_different_batch_size_same_loss():
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 4)).astype(np.float32), np.ones((100, 1), np.float32)
    frozen = example_model(4, 1)
    frozen.freeze()
    with pytest.raises(ValueError, match=r"no trainable parameters.*model\.freeze\(\)"):
        Trainer(frozen, "sgd", "mse").fit(x, y, verbose=0)

    trainer = Trainer(example_model(4, 1), optim.SGD(learning_rate=0.0), "mse")
    loss1 = trainer.fit(x, y, batch_size=80, verbose=0).history["loss"]
    loss2 = trainer.fit(x, y, batch_size=100, verbose=0).history["loss"]
    np.testing.assert_allclose(loss1, loss2, rtol=1e-6)


# Ports keras/src/trainers/trainer_test.py::TestTrainer::
#   test_evaluate_with_different_batch_size_same_loss
def test_evaluate_with_different_batch_size_same_loss():
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 4)).astype(np.float32), np.ones((100, 1), np.float32)
    trainer = Trainer(example_model(4, 1), "sgd", "mse")
    loss1 = trainer.evaluate(x, y, batch_size=80)
    loss2 = trainer.evaluate(x, y, batch_size=100)
    assert isinstance(loss1, float)
    np.testing.assert_allclose(loss1, loss2, rtol=1e-6)


# Keras (keras/src/trainers/data_adapters/array_data_adapter.py): the last partial batch trains,
# so 10 samples in batches of 4 are 3 steps, and fewer samples than batch_size are one step.
@pytest.mark.parametrize(
    ("samples", "batch_size", "options", "steps"),
    [(10, 4, {}, 3), (10, 32, {}, 1), (10, 4, {"drop_last": True}, 2)],
)
def test_the_last_partial_batch_trains(samples, batch_size, options, steps):
    x = np.arange(samples, dtype=np.float32)[:, None]
    trainer = Trainer(nn.Linear(1, 1), "sgd", "mse")
    counter = BatchIndices()
    history = trainer.fit(
        x, 2 * x, batch_size=batch_size, callbacks=[counter], verbose=0, **options
    )
    assert counter.begins == list(range(steps))
    assert history.params == {"verbose": 0, "epochs": 1, "steps": steps}


# Deliberate difference (Coming from Keras): a Stream keeps its own drop_last, True by default,
# and fit follows it; fit's drop_last=False applies to arrays.
def test_a_stream_drops_its_last_partial_batch_unless_told_otherwise():
    data = {"x": np.arange(10, dtype=np.float32)[:, None]}
    data["y"] = 2 * data["x"]
    trainer = Trainer(nn.Linear(1, 1), "sgd", "mse", inputs="x", targets="y")
    for stream, steps in [
        (Stream(data, batch_size=4, shuffle=False), 2),
        (Stream(data, batch_size=4, shuffle=False, drop_last=False), 3),
    ]:
        counter = BatchIndices()
        trainer.fit(stream, callbacks=[counter], verbose=0, drop_last=False)
        assert counter.begins == list(range(steps))


# Deliberate difference (Coming from Keras): Keras lets `validation_data` override
# `validation_split` silently (keras/src/trainers/trainer.py, `fit`'s docstring); mlxkit refuses.
def test_validation_data_together_with_validation_split_is_refused():
    x = np.arange(10, dtype=np.float32)[:, None]
    trainer = Trainer(nn.Linear(1, 1), "sgd", "mse")
    with pytest.raises(ValueError, match="not both") as caught:
        trainer.fit(x, x, validation_data=(x, x), validation_split=0.2, verbose=0)
    assert "validation_split=0.2" in str(caught.value)
    assert trainer.global_step == 0


# ------------------------------------------------------------------ return values and History
# Ports keras/src/trainers/trainer_test.py::TestTrainer::
#   test_evaluate_return_list_respect_metrics_order
def test_evaluate_return_list_respect_metrics_order():
    x, y = np.ones((3, 2), np.float32), np.ones((3, 3), np.float32)
    for first, second in [(0.0, 1.0), (1.0, 0.0)]:
        metrics = [Constant(first, name=f"metrics_{first}"), Constant(second, name="other")]
        trainer = Trainer(example_model(2, 3), "sgd", "mse", metrics)
        eval_out = trainer.evaluate(x, y)
        assert len(eval_out) == 3
        assert eval_out[1] == first and eval_out[2] == second


def test_the_keras_idiom_unpacks_evaluate():
    x = np.ones((8, 4), np.float32)
    y = np.zeros((8,), np.int32)
    trainer = Trainer(nn.Linear(4, 2), "adam", "cross_entropy", ["accuracy"])
    loss, accuracy = trainer.evaluate(x, y)
    assert isinstance(loss, float) and isinstance(accuracy, float)
    assert trainer.evaluate(x, y, return_dict=True) == {"loss": loss, "accuracy": accuracy}


# Keras's History (keras/src/callbacks/history.py) is made anew by every fit, lists the epochs the
# call ran, and holds `params`.
def test_each_fit_returns_its_own_history():
    x = np.ones((8, 1), np.float32)
    trainer = Trainer(nn.Linear(1, 1), "sgd", "mse")
    h1 = trainer.fit(x, x, batch_size=4, epochs=2, verbose=0)
    h2 = trainer.fit(x, x, batch_size=4, epochs=5, initial_epoch=2, verbose=0)
    assert h1 is not h2 and trainer.history is h2
    assert h1.epoch == [0, 1] and len(h1.history["loss"]) == 2
    assert h2.epoch == [2, 3, 4] and len(h2.history["loss"]) == 3
    assert h1.params == {"verbose": 0, "epochs": 2, "steps": 2}
    assert h2.params == {"verbose": 0, "epochs": 5, "steps": 2}


# ------------------------------------------------------------------ stopping, hooks
# Ports keras/src/trainers/trainer_test.py::TestTrainer::test_stop_loop
@pytest.mark.parametrize(
    ("method", "method_gerund", "on_end_name"),
    [
        ("fit", "training", "train"),
        ("evaluate", "evaluating", "test"),
        ("predict", "predicting", "predict"),
    ],
)
def test_stop_loop(method, method_gerund, on_end_name):
    trainer = Trainer(example_model(2, 3), "sgd", "mse", ["mse"])

    class Stopper(Callback):
        def __init__(self, stop_count):
            self.stop_count = stop_count
            self.counter = 0
            setattr(self, f"on_{on_end_name}_batch_end", self.batch_end)

        def batch_end(self, *args, **kwargs):
            self.counter += 1
            if self.counter == self.stop_count:
                setattr(self.trainer, f"stop_{method_gerund}", True)

    def infinite_gen():
        while True:
            x = np.ones((2, 2), np.float32)
            y = np.ones((2, 3), np.float32)
            yield (x,) if method == "predict" else (x, y)

    stop_count = 5
    stopper = Stopper(stop_count)
    options = {"verbose": 0} if method == "fit" else {}
    getattr(trainer, method)(infinite_gen(), callbacks=[stopper], **options)
    assert stopper.counter == stop_count


# Keras's Callback (keras/src/callbacks/callback.py): on_train_batch_begin / _end call the
# backwards-compatible aliases on_batch_begin / on_batch_end.
def test_the_on_batch_aliases_are_called():
    calls = []

    class Aliases(Callback):
        def on_batch_begin(self, batch, logs=None):
            calls.append(("begin", batch))

        def on_batch_end(self, batch, logs=None):
            calls.append(("end", batch, round(logs["loss"], 6) >= 0))

    x = np.ones((6, 1), np.float32)
    Trainer(nn.Linear(1, 1), "sgd", "mse").fit(x, x, batch_size=3, callbacks=[Aliases()], verbose=0)
    assert calls == [("begin", 0), ("end", 0, True), ("begin", 1), ("end", 1, True)]


# ------------------------------------------------------------------ validation
# Keras's train_validation_split (keras/src/trainers/data_adapters/array_slicing.py):
# split_at = floor(samples * (1 - validation_split)); the last samples validate.
@pytest.mark.parametrize(("samples", "split"), [(25, 0.28), (10, 0.25), (7, 0.5), (100, 0.1)])
def test_validation_split_rounds_as_keras(samples, split):
    split_at = math.floor(samples * (1.0 - split))
    x = np.linspace(-1, 1, samples, dtype=np.float32)[:, None]
    y = 3 * x
    trainer = Trainer(nn.Linear(1, 1), optim.SGD(learning_rate=0.0), "mse")
    counter = BatchIndices()
    history = trainer.fit(
        x, y, batch_size=1, validation_split=split, shuffle=False, callbacks=[counter], verbose=0
    )
    assert len(counter.begins) == split_at
    held_out = trainer.evaluate(x[split_at:], y[split_at:])
    assert history.history["val_loss"] == [pytest.approx(held_out, rel=1e-6)]


def test_validation_split_25_at_0_28_trains_18_samples():
    # The case: mlxkit 0.1 trained 17 (25 - ceil(25 * 0.28)); Keras trains 18.
    assert math.floor(25 * (1.0 - 0.28)) == 18
    x = np.ones((25, 1), np.float32)
    trainer = Trainer(nn.Linear(1, 1), "sgd", "mse")
    counter = BatchIndices()
    trainer.fit(x, x, batch_size=1, validation_split=0.28, callbacks=[counter], verbose=0)
    assert len(counter.begins) == 18


def test_validation_split_that_leaves_one_side_empty_is_refused_with_keras_message():
    x = np.ones((1, 1), np.float32)  # floor(1 * 0.5) = 0 training samples
    with pytest.raises(ValueError, match=r"Training data contains 1 samples.*validation_split"):
        Trainer(nn.Linear(1, 1), "sgd", "mse").fit(x, x, validation_split=0.5, verbose=0)


# Keras's _should_eval (keras/src/trainers/trainer.py): validation on epochs (1-based) divisible
# by validation_freq; monitor callbacks warn and skip the epochs without it.
def test_validation_freq_leaves_out_val_keys_and_monitors_skip_those_epochs():
    x = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
    trainer = Trainer(nn.Linear(1, 1), "sgd", "mse")
    stopper = EarlyStopping(monitor="val_loss", patience=5)
    with pytest.warns(UserWarning, match="val_loss") as raised:
        history = trainer.fit(
            x,
            2 * x,
            batch_size=4,
            epochs=4,
            validation_data=(x, 2 * x),
            validation_freq=2,
            callbacks=[stopper],
            verbose=0,
        )
    assert len(history.history["loss"]) == 4 and len(history.history["val_loss"]) == 2
    assert len([w for w in raised if "val_loss" in str(w.message)]) == 2
    history = trainer.fit(
        x, 2 * x, epochs=3, validation_data=(x, 2 * x), validation_freq=[1, 3], verbose=0
    )
    assert len(history.history["val_loss"]) == 2


def test_a_numpy_int_validation_freq_validates_every_that_many_epochs():
    # The argument check accepts NumPy ints, so the cadence must read them as ints too.
    x = np.linspace(-1, 1, 8, dtype=np.float32)[:, None]
    history = Trainer(nn.Linear(1, 1), "sgd", "mse").fit(
        x, 2 * x, epochs=4, validation_data=(x, 2 * x), validation_freq=np.int64(2), verbose=0
    )
    assert len(history.history["loss"]) == 4 and len(history.history["val_loss"]) == 2


@pytest.mark.parametrize("validation_freq", [0, -1, 1.5, "2", [0, 2], True])
def test_an_invalid_validation_freq_is_refused_naming_the_argument(validation_freq):
    x = np.ones((4, 1), np.float32)
    with pytest.raises(ValueError, match=r"`validation_freq`.*Received: validation_freq="):
        Trainer(nn.Linear(1, 1), "sgd", "mse").fit(
            x, x, validation_data=(x, x), validation_freq=validation_freq, verbose=0
        )


# ------------------------------------------------------------------ sample and class weights
def per_sample_mse(model: nn.Linear, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    outputs = x @ np.array(model.weight).T + np.array(model.bias)
    return ((outputs - y) ** 2).mean(axis=1)


def weighted_reference(values: np.ndarray, weights: np.ndarray) -> float:
    """Keras's "sum_over_batch_size" reduction (keras/src/losses/loss.py::reduce_values)."""
    return float((values * weights).sum() / values.size)


def regression_data(samples=12):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(samples, 3)).astype(np.float32)
    y = rng.normal(size=(samples, 2)).astype(np.float32)
    weights = rng.uniform(0, 2, size=samples).astype(np.float32)
    return x, y, weights


def test_sample_weight_weighs_the_loss_as_keras():
    x, y, weights = regression_data()
    mx.random.seed(0)
    model = nn.Linear(3, 2)
    trainer = Trainer(model, optim.SGD(learning_rate=0.0), "mse")
    expected = weighted_reference(per_sample_mse(model, x, y), weights)
    assert trainer.evaluate(x, y, sample_weight=weights, batch_size=12) == pytest.approx(
        expected, rel=1e-5
    )
    history = trainer.fit(x, y, sample_weight=weights, batch_size=12, verbose=0)
    assert history.history["loss"] == [pytest.approx(expected, rel=1e-5)]
    # validation_data=(x, y, w) weighs the validation loss the same way.
    history = trainer.fit(x, y, validation_data=(x, y, weights), batch_size=5, verbose=0)
    assert history.history["val_loss"] == [pytest.approx(expected, rel=1e-5)]


def test_sample_weight_steps_follow_the_weighted_gradient():
    x, y, weights = regression_data(8)
    mx.random.seed(0)
    model = nn.Linear(3, 2)
    start = {k: mx.array(v) for k, v in [("weight", model.weight), ("bias", model.bias)]}
    Trainer(model, optim.SGD(learning_rate=0.1), "mse").fit(
        x, y, sample_weight=weights, batch_size=8, shuffle=False, verbose=0
    )
    # The same step by hand: the gradient of sum(w_i * mean_j (o_ij - y_ij)^2) / N.
    w, b = np.array(start["weight"]), np.array(start["bias"])
    residual = x @ w.T + b - y  # (N, 2)
    scale = 2 * weights[:, None] / (len(x) * y.shape[1])
    grad_w = (scale * residual).T @ x
    grad_b = (scale * residual).sum(axis=0)
    np.testing.assert_allclose(np.array(model.weight), w - 0.1 * grad_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(model.bias), b - 0.1 * grad_b, rtol=1e-5, atol=1e-6)


def classification_data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    labels = np.array([0, 1, 1, 2, 0, 1, 2, 2, 1, 0], dtype=np.int32)
    return x, labels


def cross_entropy_reference(model: nn.Linear, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logits = x @ np.array(model.weight).T + np.array(model.bias)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


# Keras's class_weight_to_sample_weights (data_adapter_utils.py): a sample weighs its class's
# weight, the argmax of a one-hot target; unlisted classes weigh 1.
@pytest.mark.parametrize("one_hot", [False, True])
def test_class_weight_weighs_each_sample_by_its_class(one_hot):
    x, labels = classification_data()
    class_weight = {0: 0.5, 2: 3.0}  # class 1 unlisted: weight 1
    mx.random.seed(0)
    model = nn.Linear(4, 3)
    if one_hot:
        targets = np.eye(3, dtype=np.float32)[labels]
        loss = partial(losses.categorical_crossentropy, from_logits=True)
    else:
        targets, loss = labels, losses.cross_entropy
    trainer = Trainer(model, optim.SGD(learning_rate=0.0), loss)
    expected_weights = np.array([class_weight.get(int(c), 1.0) for c in labels], np.float32)
    expected = weighted_reference(cross_entropy_reference(model, x, labels), expected_weights)
    history = trainer.fit(x, targets, class_weight=class_weight, batch_size=10, verbose=0)
    assert history.history["loss"] == [pytest.approx(expected, rel=1e-5)]


def test_weights_in_batches_match_the_array_arguments():
    x, labels = classification_data()
    weights = np.linspace(0.2, 2.0, 10).astype(np.float32)
    mx.random.seed(0)
    model = nn.Linear(4, 3)
    trainer = Trainer(model, optim.SGD(learning_rate=0.0), "cross_entropy")
    reference = cross_entropy_reference(model, x, labels)
    batches = [(x[i : i + 5], labels[i : i + 5], weights[i : i + 5]) for i in (0, 5)]
    history = trainer.fit(batches, verbose=0)
    halves = [weighted_reference(reference[i : i + 5], weights[i : i + 5]) for i in (0, 5)]
    assert history.history["loss"] == [pytest.approx(np.mean(halves), rel=1e-5)]
    # class_weight applies per batch to a batch source.
    plain = [(x[i : i + 5], labels[i : i + 5]) for i in (0, 5)]
    history = trainer.fit(plain, class_weight={1: 2.0}, verbose=0)
    class_weights = np.where(labels == 1, 2.0, 1.0)
    halves = [weighted_reference(reference[i : i + 5], class_weights[i : i + 5]) for i in (0, 5)]
    assert history.history["loss"] == [pytest.approx(np.mean(halves), rel=1e-5)]
    with pytest.raises(ValueError, match="class_weight"):
        trainer.fit(batches, class_weight={1: 2.0}, verbose=0)


def test_weight_arguments_are_checked_before_training():
    x, labels = classification_data()
    trainer = Trainer(nn.Linear(4, 3), "sgd", "cross_entropy")
    with pytest.raises(ValueError, match="`class_weight` and `sample_weight`"):
        trainer.fit(x, labels, class_weight={0: 1.0}, sample_weight=np.ones(10), verbose=0)
    with pytest.raises(ValueError, match=r"class indices \(ints"):
        trainer.fit(x, labels, class_weight={"a": 1.0}, verbose=0)
    with pytest.raises(ValueError, match="one entry per sample"):
        trainer.fit(x, labels, sample_weight=np.ones(9), verbose=0)
    plain_loss = Trainer(nn.Linear(4, 3), "sgd", lambda o, t: mx.mean(o))
    with pytest.raises(ValueError, match=r"reduction='none'"):
        plain_loss.fit(x, labels, sample_weight=np.ones(10), verbose=0)
    with pytest.raises(ValueError, match=r"`x` weights the loss.*reduction='none'"):
        plain_loss.fit([(x, labels, np.ones(10))], verbose=0)
    assert trainer.global_step == 0


# ------------------------------------------------------------------ optimizers by name
# Keras's compile(optimizer="adam"): a name gets the optimizer class's defaults.
def test_an_optimizer_name_gets_keras_defaults():
    trainer = Trainer(nn.Linear(2, 1), "adam", "mse")
    assert isinstance(trainer.optimizer, optim.Adam)
    assert trainer.optimizer.learning_rate.item() == pytest.approx(1e-3)
    assert isinstance(Trainer(nn.Linear(2, 1), "SGD", "mse").optimizer, optim.SGD)
    with pytest.raises(ValueError, match="rmsprop"):
        Trainer(nn.Linear(2, 1), "adamm", "mse")
