"""DCGAN generator and discriminator for 28x28 MNIST digits.

Source: FluxML/model-zoo `vision/dcgan_mnist/dcgan_mnist.jl` (`Generator`, `Discriminator`).

Generator: Dense(latent -> 7*7*256) -> BatchNorm over those 12,544 features -> ReLU -> reshape to
7x7x256 -> ConvTranspose 5x5 stride 1 padding 2 (-> 7x7x128) -> BatchNorm -> ReLU ->
ConvTranspose 4x4 stride 2 padding 1 (-> 14x14x64) -> BatchNorm -> ReLU -> ConvTranspose 4x4
stride 2 padding 1 (-> 28x28x1) -> tanh. Transposed-conv output size is
(in - 1) * stride - 2 * padding + kernel, so the paddings give exactly 7 -> 7 -> 14 -> 28.

Discriminator: Conv 4x4 stride 2 padding 1 (-> 14x14x64) -> LeakyReLU(0.2) -> Dropout(0.25) ->
Conv 4x4 stride 2 padding 1 (-> 7x7x128) -> LeakyReLU(0.2) -> Dropout(0.25) -> flatten ->
Dense(6272 -> 1) logit.

Convolution weights are drawn from Normal(0, 0.02) as in the DCGAN paper (the zoo's
`dcgan_init`); dense layers use Flux's Glorot-uniform default; all biases start at zero.
"""

from __future__ import annotations

import os

from mlxkit.models._common import (
    check_images,
    check_positive_int,
    glorot_uniform,
    init_weights,
    load_weights,
    normal,
)
from mlxkit.nn import Conv2d, ConvTranspose2d

import mlx.core as mx
import mlx.nn as nn

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "dcgan_discriminator", "dcgan_generator"]


class DCGANGenerator(nn.Module):
    """Maps latent vectors (B, latent_dim) to images (B, 28, 28, 1) in [-1, 1].

    Build it with `dcgan_generator()`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import dcgan_generator
        >>> dcgan_generator(latent_dim=100).eval()(mx.zeros((2, 100))).shape
        (2, 28, 28, 1)
    """

    def __init__(self, latent_dim: int = 100) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.dense = nn.Linear(latent_dim, 7 * 7 * 256)
        self.bn0 = nn.BatchNorm(7 * 7 * 256)
        self.deconv1 = ConvTranspose2d(256, 128, kernel_size=5, stride=1, padding=2)
        self.bn1 = nn.BatchNorm(128)
        self.deconv2 = ConvTranspose2d(128, 64, kernel_size=4, stride=2, padding=1)
        self.bn2 = nn.BatchNorm(64)
        self.deconv3 = ConvTranspose2d(64, 1, kernel_size=4, stride=2, padding=1)
        init_weights(self, (nn.Linear,), glorot_uniform)
        init_weights(self, (nn.ConvTranspose2d,), normal(0.02))

    def __call__(self, z: mx.array) -> mx.array:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"dcgan_generator expects latent vectors of shape (batch, {self.latent_dim}). "
                f"Received: z.shape={tuple(z.shape)}"
            )
        x = nn.relu(self.bn0(self.dense(z)))
        x = x.reshape(z.shape[0], 7, 7, 256)
        x = nn.relu(self.bn1(self.deconv1(x)))
        x = nn.relu(self.bn2(self.deconv2(x)))
        return mx.tanh(self.deconv3(x))


class DCGANDiscriminator(nn.Module):
    """Maps images (B, 28, 28, 1) to one real-vs-fake logit each, shape (B, 1).

    Build it with `dcgan_discriminator()`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import dcgan_discriminator
        >>> dcgan_discriminator().eval()(mx.zeros((2, 28, 28, 1))).shape
        (2, 1)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2d(1, 64, kernel_size=4, stride=2, padding=1)
        self.conv2 = Conv2d(64, 128, kernel_size=4, stride=2, padding=1)
        self.dropout = nn.Dropout(0.25)
        self.dense = nn.Linear(7 * 7 * 128, 1)
        init_weights(self, (nn.Conv2d,), normal(0.02))
        init_weights(self, (nn.Linear,), glorot_uniform)

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "dcgan_discriminator", channels=1, size=(28, 28))
        x = self.dropout(nn.leaky_relu(self.conv1(x), 0.2))
        x = self.dropout(nn.leaky_relu(self.conv2(x), 0.2))
        return self.dense(x.reshape(x.shape[0], -1))


def dcgan_generator(
    latent_dim: int = 100, *, weights: str | os.PathLike[str] | None = None
) -> DCGANGenerator:
    """Builds the Flux model-zoo DCGAN generator (see `DCGANGenerator`).

    Args:
        latent_dim: length of the noise vectors it takes.
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `DCGANGenerator` mapping (B, latent_dim) to (B, 28, 28, 1) images in [-1, 1].

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import dcgan_generator
        >>> generator = dcgan_generator(latent_dim=16)
        >>> generator(mx.random.normal((8, 16))).shape
        (8, 28, 28, 1)
    """
    check_positive_int(latent_dim, "latent_dim", "dcgan_generator")
    return load_weights(DCGANGenerator(latent_dim), weights, factory="dcgan_generator")


def dcgan_discriminator(*, weights: str | os.PathLike[str] | None = None) -> DCGANDiscriminator:
    """Builds the Flux model-zoo DCGAN discriminator (see `DCGANDiscriminator`).

    Args:
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `DCGANDiscriminator` mapping (B, 28, 28, 1) to (B, 1) logits.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import dcgan_discriminator
        >>> dcgan_discriminator()(mx.zeros((4, 28, 28, 1))).shape
        (4, 1)
    """
    return load_weights(DCGANDiscriminator(), weights, factory="dcgan_discriminator")
