"""Mixed precision (`mlxkit.precision`, `Trainer(precision=...)`) through real short fits.

References: float32 training of the same model on the same data (the loss bf16/fp16 reach), the
dtypes MLX reports, powers of two (scaling by 2**k is exact, so a skipped step followed by a good
one gives the weights of the run without the bad batch), and an uninterrupted run (resume).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlxkit  # first, so the fast BLAS loads before mlx.core  # isort: skip
from mlxkit import Trainer
from mlxkit.precision import Precision, all_finite, cast_floating, resolve_name

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten


class Probe(nn.Module):
    """Records the dtype of the activations that pass through it (at trace time when compiled)."""

    def __init__(self):
        super().__init__()
        self.seen: list[mx.Dtype] = []

    def __call__(self, h):
        self.seen.append(h.dtype)
        return h


def mlp(probe: Probe | None = None) -> nn.Sequential:
    mx.random.seed(0)
    layers = [nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)]
    if probe is not None:
        layers.insert(1, probe)
    return nn.Sequential(*layers)


def classification(n: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] - x[:, 2] > 0).astype(np.int32)
    return x, y


def dtypes(tree) -> set[mx.Dtype]:
    return {value.dtype for _, value in tree_flatten(tree) if isinstance(value, mx.array)}


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_low_precision_training_reaches_the_loss_of_float32(precision):
    x, y = classification()
    results = {}
    for name in ["float32", precision]:
        trainer = Trainer(
            mlp(),
            optim.Adam(learning_rate=1e-2),
            loss="cross_entropy",
            metrics=["accuracy"],
            precision=name,
        )
        history = trainer.fit(x, y, batch_size=32, epochs=4, verbose=0, seed=0)
        results[name] = (history.history["loss"], trainer.evaluate(x, y, return_dict=True))
    (loss32, eval32), (loss_low, eval_low) = results["float32"], results[precision]
    assert loss_low[-1] < 0.5 * loss_low[0]  # it learns
    assert loss_low[-1] == pytest.approx(loss32[-1], rel=0.25, abs=0.02)
    assert eval_low["accuracy"] >= eval32["accuracy"] - 0.03


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_the_forward_runs_in_low_precision_and_the_state_stays_float32(precision):
    x, y = classification(128)
    probe = Probe()
    model = mlp(probe)
    trainer = Trainer(
        model, optim.Adam(learning_rate=1e-2), loss="cross_entropy", precision=precision
    )
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0, seed=0)
    low = getattr(mx, precision)
    assert probe.seen and set(probe.seen) == {low}
    assert dtypes(model.parameters()) == {mx.float32}
    floating = {d for d in dtypes(trainer.optimizer.state) if mx.issubdtype(d, mx.floating)}
    assert floating == {mx.float32}

    probe.seen.clear()
    results = trainer.evaluate(x, y, return_dict=True)
    outputs = trainer.predict(x[:8])
    assert set(probe.seen) == {low}  # inference computes in low precision too
    assert outputs.dtype == mx.float32 and isinstance(results["loss"], float)
    assert dtypes(model.parameters()) == {mx.float32}  # restored after each inference step


def test_float32_is_the_default_and_runs_in_float32():
    x, y = classification(64)
    probe = Probe()
    trainer = Trainer(mlp(probe), optim.SGD(learning_rate=0.1), loss="cross_entropy")
    history = trainer.fit(x, y, batch_size=32, epochs=1, verbose=0, seed=0)
    assert trainer.precision.name == "float32" and set(probe.seen) == {mx.float32}
    assert "loss_scale" not in history.history and trainer.loss_scale_state == {}


@pytest.mark.parametrize("compile", [True, False])
def test_float16_skips_a_step_with_non_finite_gradients_and_halves_the_scale(compile):
    x, y = classification(96)
    good = [(mx.array(x[i : i + 32]), mx.array(y[i : i + 32])) for i in (0, 32, 64)]
    # 1e5 is past float16's largest value (65504): the forward overflows, the gradients are NaN.
    bad = (mx.array(np.full((32, 8), 1e5, np.float32)), good[0][1])

    def run(batches, initial_scale):
        policy = Precision("float16", initial_scale=initial_scale)
        trainer = Trainer(
            mlp(),
            optim.Adam(learning_rate=1e-2),
            loss="cross_entropy",
            precision=policy,
            compile=compile,
        )
        history = trainer.fit(batches, epochs=1, verbose=0, seed=0)
        return trainer, history

    trainer, history = run([good[0], bad, good[1], good[2]], initial_scale=2.0**10)
    assert history.history["skipped_steps"] == [1.0]
    assert history.history["loss_scale"] == [2.0**9]
    assert trainer.optimizer.state["step"].item() == 3  # the skipped step is not counted
    # The good steps around the bad one applied: the weights are those of the run without it,
    # whose second and third steps used the scale 2**9 (scaling by a power of two is exact).
    reference, _ = run([good[0], good[1], good[2]], initial_scale=2.0**10)
    for (key, value), (_, expected) in zip(
        tree_flatten(trainer.model.parameters()), tree_flatten(reference.model.parameters())
    ):
        np.testing.assert_allclose(np.array(value), np.array(expected), rtol=1e-6, err_msg=key)
    assert all_finite(trainer.model.parameters()).item()


def test_float16_lowers_a_scale_that_overflows_then_trains_and_grows_it_again():
    x, y = classification(256)
    # A start of 2**40 overflows float16 in the backward: steps are skipped and the scale
    # halves until the gradients fit; then growth_interval=4 finite steps double it.
    policy = Precision("float16", initial_scale=2.0**40, growth_interval=4)
    trainer = Trainer(mlp(), optim.Adam(learning_rate=1e-2), loss="cross_entropy", precision=policy)
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0, shuffle=False)
    skipped = history.history["skipped_steps"][-1]
    scale = history.history["loss_scale"][-1]
    assert skipped >= 10  # 2**40 / 2**10 = 2**30 still overflows float16 (max 65504)
    applied = trainer.optimizer.state["step"].item()
    assert applied + skipped == trainer.global_step == 32
    # Each skip halved the scale and every 4 finite steps in a row doubled it: with every skip
    # before the first good step (the scale only falls until the gradients fit), the growth is
    # the number of complete runs of 4 among the good steps that followed.
    assert scale == 2.0 ** (40 - skipped + applied // 4)
    assert history.history["loss"][-1] < 0.6


def test_float16_resume_from_a_checkpoint_is_bit_identical(tmp_path):
    x, y = classification(128)
    policy = Precision("float16", initial_scale=2.0**20, growth_interval=3)

    def trainer():
        return Trainer(
            mlp(), optim.Adam(learning_rate=1e-2), loss="cross_entropy", precision=policy
        )

    straight = trainer()
    straight.fit(x, y, batch_size=16, epochs=4, verbose=0, seed=3)

    first = trainer()
    first.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=3)
    path = first.save_checkpoint(tmp_path / "ckpt")
    assert first.loss_scale_state["scale"].item() != 2.0**20  # the scale moved before the save
    resumed = trainer()
    history = resumed.fit(x, y, batch_size=16, epochs=4, verbose=0, seed=3, resume_from=path)
    assert history.history["skipped_steps"][-1] == straight.history.history["skipped_steps"][-1]
    for key in ["scale", "good_steps", "skipped_steps"]:
        assert resumed.loss_scale_state[key].item() == straight.loss_scale_state[key].item()
    for (key, value), (_, expected) in zip(
        tree_flatten(resumed.model.parameters()), tree_flatten(straight.model.parameters())
    ):
        np.testing.assert_array_equal(np.array(value), np.array(expected), err_msg=key)
    assert dtypes(resumed.model.parameters()) == {mx.float32}


def test_a_float16_checkpoint_does_not_load_into_a_float32_trainer(tmp_path):
    x, y = classification(64)
    trainer = Trainer(
        mlp(), optim.SGD(learning_rate=0.1), loss="cross_entropy", precision="float16"
    )
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0, seed=0)
    path = trainer.save_checkpoint(tmp_path / "ckpt")
    other = Trainer(mlp(), optim.SGD(learning_rate=0.1), loss="cross_entropy")
    with pytest.raises(mlxkit.CheckpointError, match=r"loss_scale\.scale"):
        other.load_checkpoint(path)


@pytest.mark.parametrize(
    "alias, name",
    [
        ("mixed_bfloat16", "bfloat16"),
        ("mixed_float16", "float16"),
        ("bf16-mixed", "bfloat16"),
        ("16-mixed", "float16"),
        ("32-true", "float32"),
    ],
)
def test_keras_and_lightning_spellings_are_accepted(alias, name):
    trainer = Trainer(mlp(), optim.SGD(learning_rate=0.1), loss="mse", precision=alias)
    assert trainer.precision.name == name == resolve_name(alias)


@pytest.mark.parametrize("bad", ["float64", "half", "fp16", None, 16.0])
def test_a_bad_precision_names_the_argument_and_the_options(bad):
    with pytest.raises(ValueError) as error:
        Trainer(mlp(), optim.SGD(learning_rate=0.1), loss="mse", precision=bad)
    message = str(error.value)
    assert "`precision`" in message and f"Received: precision={bad!r}" in message
    assert "'bfloat16'" in message and "'float16'" in message and "'float32'" in message


@pytest.mark.parametrize("bad, mixed", [("bf16-true", "bfloat16"), ("16-true", "float16")])
def test_lightning_true_low_precision_points_at_the_mixed_spelling(bad, mixed):
    with pytest.raises(ValueError, match=f"use precision='{mixed}'"):
        Trainer(mlp(), optim.SGD(learning_rate=0.1), loss="mse", precision=bad)


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"initial_scale": 0}, "initial_scale"), ({"growth_interval": 0}, "growth_interval")],
)
def test_bad_loss_scale_settings_are_refused(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}=0"):
        Precision("float16", **kwargs)


def test_cast_floating_leaves_integers_and_all_finite_finds_nan():
    tree = {"x": mx.ones((2,)), "labels": mx.array([1, 2]), "nested": [mx.zeros((1,))]}
    cast = cast_floating(tree, mx.float16)
    assert dtypes(cast["x"]) == dtypes(cast["nested"]) == {mx.float16}
    assert cast["labels"].dtype == mx.int32
    assert all_finite(tree).item()
    assert not all_finite({"a": mx.array([1.0, float("nan")])}).item()


def test_a_custom_train_step_with_value_and_grad_trains_in_low_precision():
    probe = Probe()

    class PenaltyTrainer(Trainer):
        def train_step(self, batch):
            x, y = batch

            def loss_fn(x, y):
                outputs = self.forward(x)
                return self.compute_loss(outputs, y) + 1e-4 * (outputs**2).mean(), outputs

            (loss, outputs), grads = self.value_and_grad(loss_fn)(x, y)
            self.apply_gradients(grads)
            self.update_metrics(loss, outputs, y)
            return loss

    x, y = classification(256)
    trainer = PenaltyTrainer(
        mlp(probe), optim.Adam(learning_rate=1e-2), loss="cross_entropy", precision="bfloat16"
    )
    history = trainer.fit(x, y, batch_size=32, epochs=3, verbose=0, seed=0)
    assert set(probe.seen) == {mx.bfloat16}
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert dtypes(trainer.model.parameters()) == {mx.float32}


def test_float16_with_gradient_accumulation_skips_a_window_with_a_bad_batch():
    x, y = classification(128)
    batches = [(mx.array(x[i : i + 32]), mx.array(y[i : i + 32])) for i in range(0, 128, 32)]
    bad = (mx.array(np.full((32, 8), 1e5, np.float32)), batches[0][1])
    policy = Precision("float16", initial_scale=2.0**10)
    trainer = Trainer(
        mlp(),
        optim.SGD(learning_rate=0.1),
        loss="cross_entropy",
        precision=policy,
        accumulate_steps=2,
    )
    # Windows: (good, bad) is skipped as a whole; (good, good) applies.
    history = trainer.fit([batches[0], bad, batches[1], batches[2]], epochs=1, verbose=0)
    assert history.history["skipped_steps"] == [1.0]
    assert history.history["loss_scale"] == [2.0**9]
    assert all_finite(trainer.model.parameters()).item()
    assert all_finite(trainer.gradient_buffer["grads"]).item()  # emptied after the skip


MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"the benchmark's MLP trains on MNIST ({MNIST})")
def test_the_precision_benchmark_runs_and_writes_its_table(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_precision.py"
    page = tmp_path / "precision.md"
    command = [sys.executable, str(script), "--quick", "--models", "mlp"]
    command += ["--mnist", str(MNIST), "--markdown", str(page)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == ["float32", "bfloat16", "float16"]
    for row in rows[1:]:
        accuracy = float(row.split("|")[9])
        assert accuracy > 0.7  # 2,048 MNIST images, 2 epochs: every precision learns
