"""Helpers that stand in for the Keras test utilities the ported tests use.

Keras's tests build `Sequential` models of `Dense` layers and call `model.compile(...)` then
`model.fit(...)`; here the same model is an `mlx.nn.Sequential` of `Linear` layers in a `Trainer`
made with the same loss, optimizer and metric names (`mlxkit.optimizers.get` gives an optimizer
name Keras's defaults, `mlxkit.losses.get` and `mlxkit.metrics.get` resolve Keras's names).

Like Keras, `fit` trains the last partial batch by default, so the ports train what Keras's tests
train with the same arguments.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from mlxkit import Trainer, optimizers
from mlxkit.callbacks import Callback

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def dense_stack(
    input_dims: int,
    units: Sequence[int],
    *,
    activation: str | None = None,
    last_activation: str | None = None,
    seed: int = 0,
) -> nn.Sequential:
    """`Sequential([Dense(u, activation=...) for u in units])`, as in Keras's tests."""
    mx.random.seed(seed)
    layers: list[Any] = []
    sizes = [input_dims, *units]
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        is_last = index == len(units) - 1
        kind = last_activation if is_last else activation
        if kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "softmax":
            layers.append(nn.Softmax())
    return nn.Sequential(*layers)


def compiled(
    model: nn.Module, *, loss: Any, optimizer: Any = "sgd", metrics: list[Any] | None = None
) -> Trainer:
    """`model.compile(loss=..., optimizer=..., metrics=...)`: a Trainer with the same names."""
    return Trainer(model, optimizers.get(optimizer), loss, metrics)


def keras_test_data(
    *, train_samples: int, test_samples: int, input_dims: int, num_classes: int, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keras's `test_utils.get_test_data`: one Gaussian blob per class, integer labels."""
    rng = np.random.default_rng(seed)
    total = train_samples + test_samples
    centers = rng.random((num_classes, input_dims)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=total)
    x = (centers[labels] * 10 + rng.normal(size=(total, input_dims))).astype(np.float32)
    return (x[:train_samples], labels[:train_samples].astype(np.int32)), (
        x[train_samples:],
        labels[train_samples:].astype(np.int32),
    )


def to_categorical(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keras's `numerical_utils.to_categorical`: one-hot rows, float32."""
    return np.eye(num_classes, dtype=np.float32)[labels]


def uniform(*shape: int, seed: int = 0) -> np.ndarray:
    """`np.random.random(shape)` as float32 (MLX trains in float32)."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


class BatchIndices(Callback):
    """Records the index of every training batch `fit` begins, in order."""

    def __init__(self):
        self.begins: list[int] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.begins.append(batch)


def weights_of(model: nn.Module) -> dict[str, np.ndarray]:
    from mlx.utils import tree_flatten

    return {key: np.array(value) for key, value in tree_flatten(model.parameters())}


__all__ = [
    "BatchIndices",
    "compiled",
    "dense_stack",
    "keras_test_data",
    "to_categorical",
    "uniform",
    "weights_of",
]
