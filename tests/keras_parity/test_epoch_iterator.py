"""Ports of keras/src/trainers/epoch_iterator_test.py, and the pass-across-epochs rule it tests.

Keras's `EpochIterator` decides which batches each epoch of `fit` trains. mlxkit's equivalent is
the Trainer's pass bookkeeping over a batch source (`LoopState.pass_epoch` / `batch_in_pass`):
these tests drive it through `fit`, recording each trained batch with an eager (`compile=False`)
`train_step`, so every call is one real step.

Not ported: the tf.data / torch DataLoader / PyDataset-specific tests (`test_unsupported_*`,
`test_torch_dataloader`, `test_python_generator_input`): mlxkit has no adapters for those types;
a re-iterable of batches takes their place.
"""

from __future__ import annotations

import warnings

from mlxkit import Trainer, unpack_batch
from mlxkit.callbacks import Callback
from mlxkit.data import Stream

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.keras_parity.common import BatchIndices


class RecordingTrainer(Trainer):
    """Records the first input value of every trained batch, and each batch's arity."""

    def __init__(self, model: nn.Module | None = None, **kwargs):
        super().__init__(model or nn.Linear(1, 1), "sgd", "mse", compile=False, **kwargs)
        self.seen: list[float] = []
        self.arities: list[int] = []

    def train_step(self, batch, update=True):
        self.arities.append(len(batch))
        self.seen.append(float(unpack_batch(batch)[0].reshape(-1)[0].item()))
        return super().train_step(batch, update)


def numbered_batches(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` batches of one sample; batch i (1-based) has input value i."""
    return [
        (np.full((1, 1), i, dtype=np.float32), np.zeros((1, 1), dtype=np.float32))
        for i in range(1, count + 1)
    ]


class UnsizedBatches:
    """A re-iterable of batches without `len()` (Keras: a generator of unknown length)."""

    def __init__(self, count: int):
        self.batches = numbered_batches(count)

    def __iter__(self):
        return iter(self.batches)


# Ports keras/src/trainers/epoch_iterator_test.py::TestEpochIterator::test_basic_flow
def test_basic_flow():
    rng = np.random.default_rng(0)
    x = rng.random((100, 16)).astype(np.float32)
    y = rng.random((100, 4)).astype(np.float32)
    sample_weight = rng.random((100,)).astype(np.float32)
    trainer = RecordingTrainer(nn.Linear(16, 4))
    steps = BatchIndices()
    trainer.fit(
        x, y, sample_weight=sample_weight, batch_size=16, shuffle=True, callbacks=[steps], verbose=0
    )
    # 100 samples in batches of 16: six full batches and the partial seventh, each (x, y, w).
    assert steps.begins == [0, 1, 2, 3, 4, 5, 6]
    assert trainer.arities == [3] * 7


# Ports keras/src/trainers/epoch_iterator_test.py::TestEpochIterator::test_insufficient_data
def test_insufficient_data():
    batch_size, steps_per_epoch = 8, 6
    dataset_size = batch_size * (steps_per_epoch - 2)
    x = np.arange(dataset_size, dtype=np.float32).reshape((dataset_size, 1))
    trainer = RecordingTrainer()
    with pytest.warns(UserWarning, match="Your input ran out of data"):
        trainer.fit(x, x * 2, batch_size=batch_size, steps_per_epoch=steps_per_epoch, verbose=0)
    assert len(trainer.seen) == steps_per_epoch - 2


# Ports keras/src/trainers/epoch_iterator_test.py::TestEpochIterator::
#   test_unknown_length_input_does_not_warn
def test_unknown_length_input_does_not_warn():
    trainer = RecordingTrainer()
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        trainer.fit(UnsizedBatches(4), verbose=0)
    assert trainer.seen == [1, 2, 3, 4]
    assert trainer.steps_per_epoch is None
    assert not [w for w in raised if "ran out of data" in str(w.message)]


# Ports keras/src/trainers/epoch_iterator_test.py::TestEpochIterator::test_unrecognized_data_type
# Deliberate difference: a value of the wrong type raises TypeError (Python's convention), where
# Keras raises ValueError("Unrecognized data type").
def test_unrecognized_data_type():
    with pytest.raises(TypeError, match="re-iterable source of batches"):
        RecordingTrainer().fit("unsupported_data", verbose=0)


class CountingSource:
    """A batch source whose `set_epoch` calls mark the start of each pass (Keras's PyDataset
    `on_epoch_begin`); with `infinite=True` it never ends and has no length."""

    def __init__(self, *, infinite: bool):
        self.infinite = infinite
        self.passes: list[int] = []
        self.epoch, self.start_batch = 0, 0
        self.shard, self.seed = (0, 1), None

    def __len__(self) -> int:
        if self.infinite:
            raise TypeError("unknown length")
        return 4

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        self.passes.append(epoch)
        self.epoch, self.start_batch = epoch, start_batch

    def replace(self, *, seed=None, shard=None):
        return self

    def __iter__(self):
        index = 0
        while self.infinite or index < 4:
            index += 1
            yield np.full((2, 1), index, np.float32), np.zeros((2, 1), np.float32)


# Ports keras/src/trainers/epoch_iterator_test.py::TestEpochIterator::test_epoch_callbacks
# Keras counts its data adapter's epoch hooks; mlxkit's equivalent is `set_epoch`, called once per
# pass over the data: every epoch for a 4-batch source with steps_per_epoch=10 (each epoch ends
# when the data runs out, with Keras's warning), once for an endless one (the pass never ends).
@pytest.mark.parametrize("infinite", [True, False], ids=["infinite", "finite"])
def test_epoch_callbacks(infinite):
    source = CountingSource(infinite=infinite)
    trainer = RecordingTrainer()
    num_epochs = 5
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        trainer.fit(source, epochs=num_epochs, steps_per_epoch=10, verbose=0)
    ran_out = [w for w in raised if "ran out of data" in str(w.message)]
    if infinite:
        assert source.passes == [0]
        assert len(trainer.seen) == 10 * num_epochs and not ran_out
    else:
        assert source.passes == [0, 1, 2, 3, 4]
        assert trainer.seen == [1, 2, 3, 4] * num_epochs and len(ran_out) == num_epochs


# The rule Keras's EpochIterator implements (issue 15): a 20-batch source with steps_per_epoch=9
# trains batches 1-9, 10-18, then 19-20 with a warning, then starts over.
def test_one_pass_runs_on_across_epochs():
    trainer = RecordingTrainer()
    with pytest.warns(UserWarning, match="epoch 3 trained 2 of steps_per_epoch=9"):
        history = trainer.fit(numbered_batches(20), epochs=4, steps_per_epoch=9, verbose=0)
    assert trainer.seen == [*range(1, 21), *range(1, 10)]
    assert history.epoch == [0, 1, 2, 3]


def test_a_source_of_unknown_length_starts_over_when_it_ends_at_an_epoch_boundary():
    trainer = RecordingTrainer()
    trainer.fit(UnsizedBatches(6), epochs=3, steps_per_epoch=3, verbose=0)
    assert trainer.seen == [1, 2, 3, 4, 5, 6, 1, 2, 3]


def test_shuffled_arrays_visit_every_sample_once_per_pass():
    x = np.arange(20, dtype=np.float32)[:, None]
    trainer = RecordingTrainer()
    with pytest.warns(UserWarning, match="ran out of data"):
        trainer.fit(
            x, np.zeros_like(x), batch_size=1, epochs=4, steps_per_epoch=9, seed=3, verbose=0
        )
    first_pass, second_pass = trainer.seen[:20], trainer.seen[20:]
    assert sorted(first_pass) == list(range(20)) and first_pass != list(range(20))
    # The second pass began in epoch 3 (0-based) and is ordered as that epoch.
    assert len(second_pass) == 9 and second_pass != first_pass[:9]


class Interrupted(Exception):
    pass


class SaveAndStop(Callback):
    """Writes a checkpoint after `global_step` batches, then interrupts the run."""

    def __init__(self, path, global_step: int):
        self.path, self.at = path, global_step

    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_step == self.at:
            self.trainer.save_checkpoint(self.path)
            raise Interrupted


@pytest.mark.parametrize("interrupt_at", [9, 12, 19])
@pytest.mark.parametrize("kind", ["arrays", "batches", "stream"])
def test_a_resume_continues_the_pass_exactly(tmp_path, interrupt_at, kind):
    x = np.arange(20, dtype=np.float32)[:, None] / 20
    y = 2 * x + 1

    def run(callbacks=(), resume_from=None):
        mx.random.seed(0)
        if kind == "stream":
            trainer = RecordingTrainer(inputs="x", targets="y")
            data: tuple = (Stream({"x": x, "y": y}, batch_size=1, seed=5),)
        else:
            trainer = RecordingTrainer()
            data = (x, y) if kind == "arrays" else (list(zip(x[:, None], y[:, None])),)
        options = {"batch_size": 1, "seed": 5} if kind == "arrays" else {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Your input ran out of data")
            trainer.fit(
                *data,
                epochs=4,
                steps_per_epoch=9,
                callbacks=list(callbacks),
                resume_from=resume_from,
                verbose=0,
                **options,
            )
        return trainer

    reference = run()
    path = tmp_path / "checkpoint"
    with pytest.raises(Interrupted):
        run([SaveAndStop(path, interrupt_at)])
    resumed = run(resume_from=path)
    assert resumed.seen == reference.seen[interrupt_at:]
    np.testing.assert_array_equal(np.array(resumed.model.weight), np.array(reference.model.weight))
    np.testing.assert_array_equal(np.array(resumed.model.bias), np.array(reference.model.bias))
