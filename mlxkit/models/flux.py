"""Small convolutional classifiers from the Flux model zoo.

Source: FluxML/model-zoo `mnist/conv.jl`: `Conv((2,2), 1=>16, relu)`, `maxpool 2`,
`Conv((2,2), 16=>8, relu)`, `maxpool 2`, flatten, `Dense(288, 10)`. Flux convolutions default
to no padding, so 28 -> 27 -> 13 -> 12 -> 6 and 6 * 6 * 8 = 288 features reach the classifier.
Weights use Flux's default Glorot-uniform initialiser with zero biases.
"""

from __future__ import annotations

import os

from mlxkit.models._common import check_images, glorot_uniform, init_weights, load_weights
from mlxkit.nn import Conv2d

import mlx.core as mx
import mlx.nn as nn

__all__ = ["FluxMnistCNN", "flux_mnist_cnn"]


class FluxMnistCNN(nn.Module):
    """Two 2x2 conv + max-pool stages and a linear classifier (3,490 parameters).

    Input (B, 28, 28, 1), output (B, 10) logits. Build it with `flux_mnist_cnn()`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import flux_mnist_cnn
        >>> flux_mnist_cnn()(mx.zeros((3, 28, 28, 1))).shape
        (3, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2d(1, 16, kernel_size=2)
        self.conv2 = Conv2d(16, 8, kernel_size=2)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc = nn.Linear(288, 10)
        init_weights(self, (nn.Conv2d, nn.Linear), glorot_uniform)

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "flux_mnist_cnn", channels=1, size=(28, 28))
        x = self.pool(nn.relu(self.conv1(x)))  # 27 -> 13
        x = self.pool(nn.relu(self.conv2(x)))  # 12 -> 6
        return self.fc(x.reshape(x.shape[0], -1))


def flux_mnist_cnn(*, weights: str | os.PathLike[str] | None = None) -> FluxMnistCNN:
    """Builds the Flux model-zoo MNIST convnet (see `FluxMnistCNN`).

    Args:
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `FluxMnistCNN` mapping (B, 28, 28, 1) to (B, 10) logits.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import flux_mnist_cnn
        >>> flux_mnist_cnn()(mx.zeros((1, 28, 28, 1))).shape
        (1, 10)
    """
    return load_weights(FluxMnistCNN(), weights, factory="flux_mnist_cnn")
