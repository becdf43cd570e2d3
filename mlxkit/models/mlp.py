"""Multilayer perceptrons: the MXNet/Gluon MNIST MLP.

Source: "Multilayer perceptrons in gluon" (Deep Learning - The Straight Dope, MXNet/Gluon):
`Dense(64, relu)`, `Dense(64, relu)`, `Dense(10)` on flattened 28x28 images, initialised with
`mx.init.Normal(sigma=0.1)` (weights) and zeros (biases, Gluon's default for `bias`).
"""

from __future__ import annotations

import os

from mlxkit.models._common import init_weights, load_weights, normal

import mlx.core as mx
import mlx.nn as nn

__all__ = ["GluonMLP", "gluon_mlp"]


class GluonMLP(nn.Module):
    """784 -> 64 -> 64 -> 10 ReLU perceptron returning logits (55,050 parameters).

    Accepts any batch whose trailing axes hold 784 values, e.g. (B, 784) or (B, 28, 28, 1), and
    flattens it. Build it with `gluon_mlp()`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import gluon_mlp
        >>> gluon_mlp()(mx.zeros((4, 28, 28, 1))).shape
        (4, 10)
    """

    input_dims = 784

    def __init__(self) -> None:
        super().__init__()
        self.layers = [nn.Linear(784, 64), nn.Linear(64, 64), nn.Linear(64, 10)]
        init_weights(self, (nn.Linear,), normal(0.1))

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim < 2 or x.size != x.shape[0] * self.input_dims:
            raise ValueError(
                "gluon_mlp expects a batch of 784 values per example, e.g. (batch, 784) or "
                f"(batch, 28, 28, 1). Received: x.shape={tuple(x.shape)}"
            )
        x = x.reshape(x.shape[0], self.input_dims)
        for layer in self.layers[:-1]:
            x = nn.relu(layer(x))
        return self.layers[-1](x)


def gluon_mlp(*, weights: str | os.PathLike[str] | None = None) -> GluonMLP:
    """Builds the Gluon MNIST perceptron (see `GluonMLP`).

    Weights are drawn from Normal(0, 0.1) and biases start at zero, as in the Gluon tutorial.

    Args:
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `GluonMLP` mapping (B, 784) or (B, 28, 28, 1) to (B, 10) logits.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import gluon_mlp
        >>> gluon_mlp()(mx.zeros((2, 784))).shape
        (2, 10)
    """
    return load_weights(GluonMLP(), weights, factory="gluon_mlp")
