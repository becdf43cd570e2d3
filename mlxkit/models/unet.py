"""U-Net for dense (per-pixel) prediction.

Source: Buda et al.'s U-Net (github.com/mateuszbuda/brain-segmentation-pytorch `unet.py`, also on
PyTorch Hub): four encoder levels and a bottleneck of "conv3x3 (no bias) - BatchNorm - ReLU"
twice, with 32-64-128-256-512 channels at the default width; 2x2 max-pool down; 2x2 stride-2
transposed conv up, concatenated with the encoder feature of the same size and refined by the
same double conv; a final 1x1 conv. Unlike the source, the output is raw logits (no sigmoid), so
it pairs with a logits loss and has any number of classes. 7,763,041 parameters for 3 input
channels, 1 class and base 32.
"""

from __future__ import annotations

import os

from mlxkit.models._common import apply, check_images, check_positive_int, load_weights
from mlxkit.nn import Conv2d, ConvTranspose2d

import mlx.core as mx
import mlx.nn as nn

__all__ = ["UNet", "unet"]


def _double_conv(in_channels: int, channels: int) -> list[nn.Module]:
    return [
        Conv2d(in_channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm(channels),
        nn.ReLU(),
        Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm(channels),
        nn.ReLU(),
    ]


class UNet(nn.Module):
    """U-Net mapping (B, H, W, in_channels) to (B, H, W, num_classes) logits.

    H and W must be multiples of 16 (four 2x2 poolings). Build it with `unet()`.

    Args:
        in_channels: channels of the input images.
        num_classes: channels of the output logits.
        base_channels: width of the first level; level i has `base_channels * 2**i`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.unet import UNet
        >>> UNet(3, 2, base_channels=4)(mx.zeros((1, 32, 32, 3))).shape
        (1, 32, 32, 2)
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, base_channels: int = 32):
        super().__init__()
        f = base_channels
        self.in_channels = in_channels
        self.encoder1 = _double_conv(in_channels, f)
        self.encoder2 = _double_conv(f, 2 * f)
        self.encoder3 = _double_conv(2 * f, 4 * f)
        self.encoder4 = _double_conv(4 * f, 8 * f)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = _double_conv(8 * f, 16 * f)
        self.upconv4 = ConvTranspose2d(16 * f, 8 * f, kernel_size=2, stride=2)
        self.decoder4 = _double_conv(16 * f, 8 * f)
        self.upconv3 = ConvTranspose2d(8 * f, 4 * f, kernel_size=2, stride=2)
        self.decoder3 = _double_conv(8 * f, 4 * f)
        self.upconv2 = ConvTranspose2d(4 * f, 2 * f, kernel_size=2, stride=2)
        self.decoder2 = _double_conv(4 * f, 2 * f)
        self.upconv1 = ConvTranspose2d(2 * f, f, kernel_size=2, stride=2)
        self.decoder1 = _double_conv(2 * f, f)
        self.conv = Conv2d(f, num_classes, kernel_size=1)

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "unet", channels=self.in_channels, multiple=16)
        enc1 = apply(self.encoder1, x)
        enc2 = apply(self.encoder2, self.pool(enc1))
        enc3 = apply(self.encoder3, self.pool(enc2))
        enc4 = apply(self.encoder4, self.pool(enc3))
        x = apply(self.bottleneck, self.pool(enc4))
        x = apply(self.decoder4, mx.concatenate([self.upconv4(x), enc4], axis=-1))
        x = apply(self.decoder3, mx.concatenate([self.upconv3(x), enc3], axis=-1))
        x = apply(self.decoder2, mx.concatenate([self.upconv2(x), enc2], axis=-1))
        x = apply(self.decoder1, mx.concatenate([self.upconv1(x), enc1], axis=-1))
        return self.conv(x)


def unet(
    in_channels: int = 1,
    num_classes: int = 1,
    *,
    base_channels: int = 32,
    weights: str | os.PathLike[str] | None = None,
) -> UNet:
    """Builds a U-Net (see `UNet`); `base_channels=32` gives the 32-64-128-256-512 original.

    Args:
        in_channels: channels of the input images.
        num_classes: channels of the output logits (1 for binary masks).
        base_channels: width of the first level; small values give tiny, fast variants.
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `UNet` mapping (B, H, W, in_channels) to (B, H, W, num_classes); H, W multiples of 16.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import unet
        >>> model = unet(in_channels=1, num_classes=1, base_channels=4)
        >>> model(mx.zeros((2, 32, 32, 1))).shape
        (2, 32, 32, 1)
    """
    for name, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("base_channels", base_channels),
    ):
        check_positive_int(value, name, "unet")
    return load_weights(UNet(in_channels, num_classes, base_channels), weights, factory="unet")
