"""VGG-19 with batch normalisation for 32x32 images (CIFAR-10).

Source: FluxML/model-zoo `vision/vgg_cifar10/vgg_cifar10.jl` (`vgg19`): every 3x3 convolution
(padding 1) is followed by ReLU and then BatchNorm, in that order; 2x2 max-pools after each of the
five stages; then Dense 512 -> 4096 -> 4096 -> classes with ReLU and Dropout(0.5). Weights use
Flux's Glorot-uniform default with zero biases.

One deliberate difference: the zoo's `vgg19` leaves out the BatchNorm after the fourth conv of
stages 3, 4 and 5 (its `vgg16` has one after every conv), an evident copy-paste slip; here every
conv has its BatchNorm, which adds 2 * (256 + 512 + 512) = 2,560 parameters.
"""

from __future__ import annotations

import os

from mlxkit.models._common import (
    apply,
    check_images,
    check_positive_int,
    glorot_uniform,
    init_weights,
    load_weights,
)
from mlxkit.nn import Conv2d

import mlx.core as mx
import mlx.nn as nn

__all__ = ["VGG19CIFAR", "VGG19_CONFIG", "vgg19_cifar"]

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool.
VGG19_CONFIG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip


class VGG19CIFAR(nn.Module):
    """VGG-19 (conv-ReLU-BatchNorm) for (B, 32, 32, 3) images, returning (B, num_classes) logits.

    Build it with `vgg19_cifar()`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import vgg19_cifar
        >>> model = vgg19_cifar(num_classes=10)
        >>> model.eval()(mx.zeros((1, 32, 32, 3))).shape
        (1, 10)
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        features: list[nn.Module] = []
        channels = 3
        for item in VGG19_CONFIG:
            if isinstance(item, str):  # "M"
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            features += [Conv2d(channels, item, 3, padding=1), nn.ReLU(), nn.BatchNorm(item)]
            channels = item
        self.features = features
        self.classifier = [
            nn.Linear(512, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        ]
        init_weights(self, (nn.Conv2d, nn.Linear), glorot_uniform)

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "vgg19_cifar", channels=3, size=(32, 32))
        x = apply(self.features, x)  # (B, 1, 1, 512)
        return apply(self.classifier, x.reshape(x.shape[0], -1))


def vgg19_cifar(
    num_classes: int = 10, *, weights: str | os.PathLike[str] | None = None
) -> VGG19CIFAR:
    """Builds the Flux model-zoo VGG-19 for CIFAR-10 (see `VGG19CIFAR`).

    Args:
        num_classes: size of the final layer.
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `VGG19CIFAR` mapping (B, 32, 32, 3) to (B, num_classes) logits. Call `.eval()` before
        inference so dropout and batch statistics are off.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import vgg19_cifar
        >>> vgg19_cifar(num_classes=100).eval()(mx.zeros((2, 32, 32, 3))).shape
        (2, 100)
    """
    check_positive_int(num_classes, "num_classes", "vgg19_cifar")
    return load_weights(VGG19CIFAR(num_classes), weights, factory="vgg19_cifar")
