"""How fit waits for its steps (`Trainer(pipeline=...)`): same results in every mode, and the
automatic choice on the CPU."""

from __future__ import annotations

import mlxkit._pipelining as pipelining
from mlxkit import Trainer
from mlxkit._pipelining import StepPipeline

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten


def make_trainer(pipeline):
    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
    return Trainer(
        model,
        optim.Adam(learning_rate=1e-2),
        "cross_entropy",
        metrics=["accuracy"],
        pipeline=pipeline,
    )


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(480, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1)


@pytest.mark.parametrize("mode", [True, "auto"])
def test_every_mode_trains_exactly_as_evaluating_each_step(mode):
    x, y = data()
    reference = make_trainer(False)
    expected = reference.fit(x, y, batch_size=8, epochs=4, seed=3, verbose=0).history
    trainer = make_trainer(mode)
    history = trainer.fit(x, y, batch_size=8, epochs=4, seed=3, verbose=0).history
    for key in ("loss", "accuracy"):
        assert history[key] == expected[key]
    for (name, a), (_, b) in zip(
        tree_flatten(trainer.model.parameters()), tree_flatten(reference.model.parameters())
    ):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=name)


@pytest.mark.parametrize(("mode", "queued"), [(True, 60), (False, 0)])
def test_a_fixed_mode_queues_every_step_or_none(monkeypatch, mode, queued):
    calls = []
    real = mx.async_eval
    monkeypatch.setattr(pipelining.mx, "async_eval", lambda *a: calls.append(1) or real(*a))
    x, y = data()
    make_trainer(mode).fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert len(calls) == queued


def test_auto_times_both_on_the_cpu_then_decides():
    x, y = data()
    trainer = make_trainer("auto")
    pipeline = trainer.pipeline
    assert pipeline.pipelined is None  # the default device here is the CPU
    # 60 steps an epoch: one untimed step starts each epoch's first block, then 3 blocks of 16.
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert [len(pipeline.seconds_per_step[mode]) for mode in (False, True)] == [2, 1]
    assert pipeline.pipelined is None
    trainer.fit(x, y, batch_size=8, epochs=4, verbose=0)
    assert [len(pipeline.seconds_per_step[mode]) for mode in (False, True)] == [6, 6]
    assert isinstance(pipeline.pipelined, bool)
    assert pipeline.pipelined == pipeline._decide()


@pytest.mark.parametrize(
    ("pipelined_seconds", "expected"), [(0.90, True), (0.97, False), (1.10, False)]
)
def test_pipelining_is_kept_only_when_at_least_5_percent_faster(pipelined_seconds, expected):
    pipeline = StepPipeline("auto")
    pipeline.seconds_per_step = {True: [pipelined_seconds, 5.0, 0.1], False: [1.0, 1.0, 1.0]}
    assert pipeline._decide() is expected


def test_a_bad_pipeline_value_is_named_and_echoed():
    with pytest.raises(ValueError, match=r"`pipeline` must be 'auto', True or False.*'yes'"):
        make_trainer("yes")
