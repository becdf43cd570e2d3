"""set_seed: the reproducibility recipe of the Trainer guide gives identical histories."""

from __future__ import annotations

import random

import mlxkit
from mlxkit import Trainer

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest


def run(seed):
    """The guide's recipe: seed everything, then build the data, the model and the trainer."""
    mlxkit.set_seed(seed)
    x = np.random.normal(size=(64, 4)).astype(np.float32)  # NumPy's global generator
    y = (x[:, 0] + random.random() > 0.5).astype(np.int32)  # Python's random
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    trainer = Trainer(model, optim.Adam(learning_rate=1e-2), "cross_entropy", ["accuracy"])
    history = trainer.fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0, seed=7)
    return {k: v for k, v in history.history.items() if k in ("loss", "accuracy", "val_loss")}


def test_set_seed_then_build_gives_identical_histories():
    first, second = run(0), run(0)
    assert first == second  # bit-identical floats, not merely close
    assert run(1)["loss"] != first["loss"]  # and the seed matters


def test_set_seed_seeds_all_three_generators():
    mlxkit.set_seed(3)
    drawn = (random.random(), np.random.random(), mx.random.uniform().item())
    mlxkit.set_seed(3)
    assert (random.random(), np.random.random(), mx.random.uniform().item()) == drawn
    # against each library's own seeding
    random.seed(3)
    np.random.seed(3)
    mx.random.seed(3)
    assert (random.random(), np.random.random(), mx.random.uniform().item()) == drawn


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match=r"Received: seed="):
        mlxkit.set_seed(bad)
