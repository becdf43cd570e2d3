"""The batch-source protocol: one rank share, the iterable wrapper, per-run views."""

from __future__ import annotations

import mlxkit  # noqa: F401  (before mlx: loads the fast BLAS)
from mlxkit import Trainer
from mlxkit.data import Stream
from mlxkit.sources import BatchSource, IterableBatches, rank_share

import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest


@pytest.mark.parametrize("count, num_ranks", [(10, 2), (11, 3), (7, 4), (3, 3)])
def test_rank_shares_are_disjoint_equal_and_strided(count, num_ranks):
    shares = [list(range(count)[rank_share(count, r, num_ranks)]) for r in range(num_ranks)]
    assert {len(s) for s in shares} == {count // num_ranks}
    covered = sorted(p for share in shares for p in share)
    assert covered == list(range((count // num_ranks) * num_ranks))
    for rank, share in enumerate(shares):
        assert all(position % num_ranks == rank for position in share)


class Unsized:
    """A re-iterable without len()."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


class Skipping:
    """A re-iterable that can skip batches itself; records what it was asked to skip."""

    def __init__(self, count):
        self.count, self.calls, self.start = count, [], 0

    def __len__(self):
        return self.count

    def set_epoch(self, epoch, *, start_batch=0):
        self.calls.append((epoch, start_batch))
        self.start = start_batch

    def __iter__(self):
        return iter(range(self.start, self.count))


@pytest.mark.parametrize("make", [list, Unsized, Skipping])
@pytest.mark.parametrize("rank", [0, 1, 2])
def test_the_wrapper_shards_and_resumes_any_iterable(make, rank):
    items = list(range(11))
    wrapped = IterableBatches(
        make(items) if make is not Skipping else Skipping(11), shard=(rank, 3)
    )
    mine = items[rank_share(11, rank, 3)]  # [rank, rank + 3, rank + 6]
    assert list(wrapped) == mine
    for start in range(len(mine) + 1):
        wrapped.set_epoch(1, start_batch=start)
        assert list(wrapped) == mine[start:], start
    if make is Skipping:
        # Skips were handed to the wrapped object, in its own batches: 3 per batch of this rank.
        assert wrapped.batches.calls[-1] == (1, 3 * len(mine))


def test_the_wrapper_has_the_length_of_its_share():
    assert len(IterableBatches(list(range(11)), shard=(2, 3))) == 3
    assert len(IterableBatches(list(range(11)))) == 11


def small_trainer():
    model = nn.Sequential(nn.Linear(2, 2))
    return Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy", inputs="x", targets="y")


def test_fit_and_evaluate_leave_the_users_stream_unchanged():
    data = {"x": np.random.default_rng(0).normal(size=(32, 2)).astype("float32")}
    data["y"] = (data["x"][:, 0] > 0).astype("int32")
    stream = Stream(data, batch_size=8, seed=3)
    assert isinstance(stream, BatchSource)
    trainer = small_trainer()
    trainer.fit(stream, epochs=3, seed=11, verbose=0, validation_data=stream)
    trainer.evaluate(stream)
    assert (stream.seed, stream.shard, stream.epoch) == (3, (0, 1), 0)
    assert trainer.seed == 11


def test_accumulation_needs_a_train_step_that_takes_update():
    class OldStyle(Trainer):
        def train_step(self, batch):
            return super().train_step(batch)

    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"accumulate_steps=2 needs `train_step\(batch, update\)`"):
        OldStyle(model, optim.SGD(learning_rate=0.1), "mse", accumulate_steps=2)
    OldStyle(model, optim.SGD(learning_rate=0.1), "mse")  # fine without accumulation


def test_arrays_without_a_seed_get_a_fresh_one_per_fit():
    """Arrays carry no seed of their own: `seed=None` draws one (1 in 2**31 to repeat)."""
    x = np.random.default_rng(0).normal(size=(16, 2)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    trainer = Trainer(nn.Linear(2, 2), optim.SGD(learning_rate=0.1), "cross_entropy")
    seeds = set()
    for _ in range(2):
        trainer.fit(x, y, batch_size=8, verbose=0)
        seeds.add(trainer.seed)
    assert len(seeds) == 2 and None not in seeds
