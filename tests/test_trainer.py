"""Trainer: fit / evaluate / predict semantics, compiled vs eager, accumulation, clipping, modes."""

from __future__ import annotations

import mlxkit
from mlxkit import Trainer
from mlxkit.callbacks import LambdaCallback

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten


def classification_data(num=256, features=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, features)).astype(np.float32)
    y = (x[:, :2].sum(axis=1) > 0).astype(np.int32)
    return x, y


def small_model(seed=0, dropout=0.0, batch_norm=False):
    mx.random.seed(seed)
    layers = [nn.Linear(8, 16)]
    if batch_norm:
        layers.append(nn.BatchNorm(16))
    layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2)]
    return nn.Sequential(*layers)


def weights(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_fit_history_keys_and_learning():
    x, y = classification_data()
    trainer = Trainer(small_model(), optim.Adam(learning_rate=1e-2), "cross_entropy", ["accuracy"])
    history = trainer.fit(x, y, batch_size=32, epochs=4, validation_split=0.25, verbose=0, seed=0)
    h = history.history
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(h)
    assert len(h["loss"]) == 4 and history.epoch == [0, 1, 2, 3]
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] > 0.8


def test_compile_and_eager_are_identical_with_dropout_and_batchnorm():
    x, y = classification_data()
    results = []
    for compile in (True, False):
        model = small_model(seed=3, dropout=0.3, batch_norm=True)
        trainer = Trainer(
            model,
            optim.SGD(learning_rate=0.1, momentum=0.9),
            "cross_entropy",
            ["accuracy"],
            compile=compile,
        )
        history = trainer.fit(x, y, batch_size=32, epochs=2, seed=5, verbose=0)
        results.append((weights(model), history.history["loss"]))
    (w_compiled, loss_compiled), (w_eager, loss_eager) = results
    assert loss_compiled == loss_eager
    for key in w_compiled:
        np.testing.assert_array_equal(w_compiled[key], w_eager[key])


def test_evaluate_loses_no_sample_in_the_partial_batch():
    x, y = classification_data(num=70)
    model = small_model()
    trainer = Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy", ["accuracy"])
    result = trainer.evaluate(x, y, batch_size=32, return_dict=True)  # batches of 32, 32 and 6
    logits = np.array(model(mx.array(x)))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = -log_probs[np.arange(70), y].mean()
    expected_accuracy = (logits.argmax(axis=1) == y).mean()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(expected_accuracy)


def test_predict_concatenates_every_batch_in_eval_mode():
    x, _ = classification_data(num=70)
    model = small_model(dropout=0.5, batch_norm=True)
    trainer = Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy")
    predictions = trainer.predict(x, batch_size=32)
    model.eval()
    expected = np.array(model(mx.array(x)))
    model.train()
    assert predictions.shape == (70, 2)
    np.testing.assert_allclose(np.array(predictions), expected, rtol=1e-5, atol=1e-6)
    assert model.training, "predict must leave the model in the mode it found it"


def test_batchnorm_statistics_move_in_fit_but_not_in_evaluate():
    x, y = classification_data()
    model = small_model(batch_norm=True)
    trainer = Trainer(model, optim.SGD(learning_rate=0.0), "cross_entropy")
    before = np.array(model.layers[1].running_mean)
    trainer.evaluate(x, y)
    np.testing.assert_array_equal(np.array(model.layers[1].running_mean), before)
    trainer.fit(x, y, batch_size=64, epochs=1, verbose=0, seed=0)
    assert not np.allclose(np.array(model.layers[1].running_mean), before)


def test_training_mode_seen_by_the_model():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(8, 2)

        def __call__(self, x):
            seen.append(self.training)
            return self.linear(x)

    x, y = classification_data(num=64)
    trainer = Trainer(Probe(), optim.SGD(learning_rate=0.1), "cross_entropy", compile=False)
    trainer.fit(x, y, batch_size=32, epochs=1, validation_data=(x, y), verbose=0)
    # The first call builds fit's check of the first batch (a graph only, nothing computed).
    assert seen == [True, True, True, False, False]


def linear_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = rng.normal(size=(64, 2)).astype(np.float32)
    w = rng.normal(size=(2, 3)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    return x, y, w, b


def numpy_mse_grads(x, y, w, b):
    """Hand-derived gradients of mean((x w^T + b - y)^2) over all elements."""
    residual = x @ w.T + b - y
    d_out = 2.0 * residual / residual.size
    return d_out.T @ x, d_out.sum(axis=0)


@pytest.mark.parametrize("compile", [True, False])
def test_gradient_accumulation_and_clipping_match_numpy(compile):
    x, y, w, b = linear_problem()
    learning_rate, max_norm, batch, accumulate = 0.1, 0.05, 8, 2
    model = nn.Linear(3, 2)
    model.update({"weight": mx.array(w), "bias": mx.array(b)})
    trainer = Trainer(
        model,
        optim.SGD(learning_rate=learning_rate),
        "mse",
        compile=compile,
        clip_grad_norm=max_norm,
        accumulate_steps=accumulate,
    )
    trainer.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)

    w_ref, b_ref = w.astype(np.float64), b.astype(np.float64)
    for start in range(0, 64, batch * accumulate):
        grads = [
            numpy_mse_grads(x[s : s + batch], y[s : s + batch], w_ref, b_ref)
            for s in range(start, start + batch * accumulate, batch)
        ]
        gw = sum(g[0] for g in grads) / accumulate
        gb = sum(g[1] for g in grads) / accumulate
        norm = np.sqrt((gw**2).sum() + (gb**2).sum())
        scale = min(max_norm / (norm + 1e-6), 1.0)
        w_ref = w_ref - learning_rate * gw * scale
        b_ref = b_ref - learning_rate * gb * scale
    np.testing.assert_allclose(np.array(model.weight), w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(model.bias), b_ref, rtol=1e-5, atol=1e-6)


def test_dict_batches_use_named_keys_and_train_exactly_like_tuples():
    x, y = classification_data(num=64)
    # A decoy key with the shape of the inputs: picking it instead of "image" would change the run.
    decoy = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    batches = {
        "tuples": [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)],
        "dicts": [
            {"noise": decoy[i : i + 16], "label": y[i : i + 16], "image": x[i : i + 16]}
            for i in range(0, 64, 16)
        ],
    }
    runs = {}
    for kind, data in batches.items():
        keys = {"inputs": "image", "targets": "label"} if kind == "dicts" else {}
        model = small_model()
        trainer = Trainer(model, optim.Adam(learning_rate=1e-2), "cross_entropy", **keys)
        history = trainer.fit(data, epochs=2, verbose=0)
        runs[kind] = (
            history.history["loss"],
            trainer.evaluate(data, return_dict=True),
            weights(model),
        )
    (tuple_losses, tuple_eval, tuple_weights) = runs["tuples"]
    (dict_losses, dict_eval, dict_weights) = runs["dicts"]
    # Same batches, same order, same seed: the dict run is the tuple run, bit for bit.
    assert len(dict_losses) == 2 and dict_losses[1] < dict_losses[0]
    assert dict_losses == tuple_losses
    assert dict_eval == tuple_eval and set(dict_eval) == {"loss"}
    assert tuple_weights.keys() == dict_weights.keys()
    for key in tuple_weights:
        np.testing.assert_array_equal(dict_weights[key], tuple_weights[key])


def test_custom_train_step_with_extra_state():
    """A GAN-like subclass updating a second module with a second optimizer, compiled."""

    class TwoModels(Trainer):
        def __init__(self, model, critic):
            super().__init__(model, optim.SGD(learning_rate=0.1), "mse")
            self.critic = critic
            self.critic_optimizer = optim.SGD(learning_rate=0.1)
            self.critic_optimizer.init(critic.trainable_parameters())

        def compiled_state(self):
            return [*super().compiled_state(), self.critic.state, self.critic_optimizer.state]

        def train_step(self, batch):
            x, y = batch
            loss = super().train_step(batch)

            def critic_loss(x, y):
                return ((self.critic(x) - y) ** 2).mean()

            _, grads = nn.value_and_grad(self.critic, critic_loss)(x, y)
            self.critic_optimizer.update(self.critic, grads)
            return loss

    x, y, w, b = linear_problem()
    results = []
    for compile in (True, False):
        model, critic = nn.Linear(3, 2), nn.Linear(3, 2)
        for module in (model, critic):
            module.update({"weight": mx.array(w), "bias": mx.array(b)})
        trainer = TwoModels(model, critic)
        trainer.compile = compile
        trainer.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        results.append(np.array(critic.weight))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    assert not np.allclose(results[0], w), "the critic's optimizer must have run"


def test_stop_training_and_batch_hooks():
    x, y = classification_data(num=128)
    trainer = Trainer(small_model(), optim.SGD(learning_rate=0.1), "cross_entropy")
    seen = []

    def on_batch_end(batch, logs):
        seen.append((batch, logs["loss"]))
        if batch == 2:
            trainer.stop_training = True

    trainer.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        verbose=0,
        callbacks=[LambdaCallback(on_train_batch_end=on_batch_end)],
    )
    assert [b for b, _ in seen] == [0, 1, 2]
    assert all(np.isfinite(loss) for _, loss in seen)
    assert trainer.history.epoch == [0]


def test_nan_loss_is_reported_with_epoch_and_step(capsys):
    x, y = classification_data(num=64)
    x[40] = np.nan  # the 3rd batch of 16, unshuffled
    trainer = Trainer(small_model(), optim.SGD(learning_rate=0.1), "cross_entropy")
    trainer.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert "epoch 1, step 3" in capsys.readouterr().out


def test_the_first_bad_step_is_reported_when_later_losses_are_finite_again(capsys):
    # A single bad batch (step 2) followed by good ones: the running total stays non-finite, so
    # the count of steps with a finite total still points at step 2.
    x, y = classification_data(num=64)
    x[20] = np.inf
    model = small_model()
    trainer = Trainer(model, optim.SGD(learning_rate=0.0), "cross_entropy")
    trainer.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert "epoch 1, step 2" in capsys.readouterr().out


def test_summary_counts_parameters():
    text = mlxkit.summary(small_model(batch_norm=True), (2, 8), print_fn=None)
    # Linear 8*16+16, BatchNorm 16 weight + 16 bias (+ 32 running stats), Linear 16*2+2
    assert "Total params: 242" in text and "Trainable params: 210" in text
    assert "(2, 16)" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": -3}, "batch_size=-3"),
        ({"epochs": -1}, "epochs=-1"),
        ({"validation_split": 1.0}, "validation_split=1.0"),
        ({"validation_split": -0.1}, "validation_split=-0.1"),
        ({"verbose": 3}, "verbose=3"),
    ],
)
def test_bad_fit_arguments(kwargs, message):
    x, y = classification_data(num=32)
    trainer = Trainer(small_model(), optim.SGD(learning_rate=0.1), "cross_entropy")
    with pytest.raises(ValueError, match=message):
        trainer.fit(x, y, **kwargs)


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="model of type"):
        Trainer("not a model", optim.SGD(learning_rate=0.1), "mse")
    with pytest.raises(TypeError, match="optimizer of type"):
        Trainer(small_model(), 0.01, "mse")
    with pytest.raises(ValueError, match="adam"):
        Trainer(small_model(), "adamm", "mse")
    with pytest.raises(ValueError, match="cross_entropy"):
        Trainer(small_model(), optim.SGD(learning_rate=0.1), "crossentropy")
    with pytest.raises(ValueError, match="accuracy"):
        Trainer(small_model(), optim.SGD(learning_rate=0.1), "mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match="accumulate_steps=0"):
        Trainer(small_model(), optim.SGD(learning_rate=0.1), "mse", accumulate_steps=0)


def test_mismatched_lengths_and_missing_keys():
    x, y = classification_data(num=32)
    trainer = Trainer(small_model(), optim.SGD(learning_rate=0.1), "cross_entropy")
    with pytest.raises(ValueError, match="32 samples in x and 31 in y"):
        trainer.fit(x, y[:31], verbose=0)
    keyed = Trainer(
        small_model(),
        optim.SGD(learning_rate=0.1),
        "cross_entropy",
        inputs="image",
        targets="label",
    )
    with pytest.raises(KeyError, match=r"Keys present: \['img', 'label'\]"):
        keyed.fit([{"img": x, "label": y}], verbose=0)
