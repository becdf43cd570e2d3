"""A failing step leaves MLX and the Trainer usable (mlxkit._recovery and the Trainer's step guard).

A compiled step that fails while MLX traces it leaves placeholder arrays in the state it captured;
without the guard every later MLX call in the process fails with "[eval] Attempting to eval an
array without a primitive" (issue 16). Each test fails a step part-way, then checks that MLX still
works and that training continues bit-identically to a run that never met the bad batch.
"""

from __future__ import annotations

import signal

from mlxkit import Trainer
from mlxkit import trainer as trainer_module
from mlxkit._recovery import StepBoundaryInterrupt, batch_signature, restore, snapshot

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten


def make_trainer(compile: bool = True, trainer_class: type[Trainer] = Trainer) -> Trainer:
    mx.random.seed(3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.25), nn.Linear(16, 3))
    return trainer_class(
        model, optim.Adam(learning_rate=1e-2), "cross_entropy", ["accuracy"], compile=compile
    )


def data(width: int = 6, num: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, width)).astype(np.float32)
    return x, (np.abs(x[:, 0] * 2).astype(np.int32) % 3)


def weights(trainer: Trainer) -> dict[str, np.ndarray]:
    return {key: np.array(value) for key, value in tree_flatten(trainer.model.parameters())}


def assert_same(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_a_shape_error_inside_fit_leaves_the_trainer_and_mlx_usable():
    good = [data(num=8, seed=seed) for seed in (1, 2)]
    wide = data(width=5, num=8, seed=3)  # a batch the model cannot take, after two good ones
    x, y = data()
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0)  # no seed: mx.random goes on

    trainer = make_trainer()
    with pytest.raises(ValueError, match=r"\[addmm\]"):
        trainer.fit([*good, wide], epochs=1, verbose=0)
    assert trainer.global_step == 2  # the two good batches trained, the bad one did not
    draw = np.array(mx.random.normal((3,)))  # MLX works: the random key is whole again
    history = trainer.fit(x, y, **fit)  # the same trainer trains on data of the right shape

    # Reference: the same two good batches and the same calls, with no failure in between. The
    # draw and the dropout masks come from mx.random's stream, so equality also shows that the
    # key was put back exactly.
    reference = make_trainer()
    reference.fit(good, epochs=1, verbose=0)
    np.testing.assert_array_equal(draw, np.array(mx.random.normal((3,))))
    expected = reference.fit(x, y, **fit)
    assert_same(weights(trainer), weights(reference))
    assert history.history["loss"] == expected.history["loss"]

    other = make_trainer()  # and a new Trainer on a new model works
    assert np.isfinite(other.fit(x, y, **fit).history["loss"]).all()


class FailsAfterUpdating(Trainer):
    """Raises inside the step after the optimizer and the metrics were updated, on batches of 3."""

    def train_step(self, batch, update=True):
        loss = super().train_step(batch, update=update)
        if batch[0].shape[0] == 3:
            raise RuntimeError("the step failed after its update")
        return loss


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
def test_a_failed_step_puts_back_every_array_it_had_changed(compile):
    x, y = data(num=16)
    trainer = make_trainer(compile, FailsAfterUpdating)
    trainer.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, seed=0)
    after_two = weights(trainer)
    optimizer_state = dict(tree_flatten(trainer.optimizer.state))
    key = np.array(mx.random.state[0])

    with pytest.raises(RuntimeError, match="after its update"):
        trainer.fit([data(num=3, seed=4)], epochs=1, verbose=0)
    # The step had updated the weights, the optimizer's moments and step count, and the key.
    assert_same(weights(trainer), after_two)
    np.testing.assert_array_equal(np.array(mx.random.state[0]), key)
    restored = dict(tree_flatten(trainer.optimizer.state))
    assert restored.keys() == optimizer_state.keys()
    for name, value in optimizer_state.items():
        np.testing.assert_array_equal(np.array(restored[name]), np.array(value), err_msg=name)
    assert trainer.samples_seen() == 0  # the sums of the failed epoch, reset before its step
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)  # and trains on
    assert trainer.global_step == 4


def test_a_failed_evaluate_leaves_the_model_usable():
    x, y = data()
    trainer = make_trainer()
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    expected = trainer.evaluate(x, y)
    with pytest.raises(ValueError, match=r"\[addmm\]"):
        trainer.evaluate([(x[:8], y[:8]), data(width=5, num=8)])
    assert trainer.evaluate(x, y) == expected
    mx.eval(mx.random.normal((3,)))


def test_only_calls_that_may_trace_are_guarded(monkeypatch):
    calls = []

    def counting_snapshot(tree):
        calls.append(1)
        return snapshot(tree)

    monkeypatch.setattr(trainer_module, "snapshot", counting_snapshot)
    x, y = data(num=36)  # 4 full batches of 8 and one of 4: two shapes per epoch
    trainer = make_trainer()
    trainer.fit(x, y, batch_size=8, epochs=3, drop_last=False, verbose=0, seed=0)
    # One for fit's check of the first batch, one per new batch shape (8 and 4); the 13 other
    # steps, of shapes already traced, keep no references.
    assert len(calls) == 3
    assert trainer.global_step == 15


def test_restore_puts_arrays_keys_and_the_random_key_back_in_place():
    inner = {"w": mx.array([1.0]), "grads": {"a": mx.array([2.0])}}
    items = [mx.array([3.0])]
    saved = snapshot([inner, items, mx.random.state])
    expected_draw = mx.random.normal((4,))
    restore([inner, items, mx.random.state], saved)  # the draw above moved the key
    inner["w"], inner["new"], inner["grads"] = mx.array([9.0]), mx.array([0.0]), {}
    items.append(mx.array([4.0]))
    restore([inner, items, mx.random.state], saved)
    assert sorted(inner) == ["grads", "w"] and inner["w"].item() == 1.0
    assert inner["grads"]["a"].item() == 2.0
    assert len(items) == 1 and items[0].item() == 3.0
    np.testing.assert_array_equal(np.array(mx.random.normal((4,))), np.array(expected_draw))


def test_batch_signatures_tell_shapes_and_dtypes_apart():
    a = (mx.zeros((8, 6)), mx.zeros((8,), dtype=mx.int32))
    assert batch_signature(a) == batch_signature((mx.ones((8, 6)), mx.ones((8,), dtype=mx.int32)))
    assert batch_signature(a) != batch_signature((mx.zeros((4, 6)), a[1]))
    assert batch_signature(a) != batch_signature((a[0], mx.zeros((8,), dtype=mx.int64)))
    nested = ((mx.zeros((2, 3)), mx.zeros((2,))), None)
    assert batch_signature(nested) == batch_signature(((mx.ones((2, 3)), mx.ones((2,))), None))
    assert batch_signature(nested) != batch_signature(((mx.ones((2, 3)), mx.ones((3,))), None))


def test_a_second_ctrl_c_interrupts_at_once_and_is_not_taken_for_a_step_end():
    with StepBoundaryInterrupt() as interrupt:
        signal.raise_signal(signal.SIGINT)  # the first: only noted
        assert interrupt.requested and not interrupt.stopped_at_step_end
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the second: at once, wherever it lands
        assert not interrupt.stopped_at_step_end
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()  # where a step ended
        assert interrupt.stopped_at_step_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with StepBoundaryInterrupt(active=False):
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_loss_of_ones_own_may_train_without_targets():
    x, _ = data()
    mx.random.seed(3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    # A loss that needs no targets (and no metric that would).
    trainer = Trainer(model, optim.SGD(learning_rate=0.1), lambda outputs, _: (outputs**2).mean())
    history = trainer.fit(x, batch_size=8, epochs=2, verbose=0, seed=0)
    assert history.history["loss"][1] < history.history["loss"][0]
