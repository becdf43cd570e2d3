"""Monocular depth: the MLX depth-map article's ResNet-20 encoder with a UNet-style decoder.

Source: "以 Apple 深度學習框架 MLX，實作圖片深度圖預測任務" (edge.aif.tw) and its code,
github.com/GuffreyKu/depth_map `model/model.py` (`resnet20`). Layer names follow that code, so its
checkpoints load unchanged.
"""

from __future__ import annotations

import os

from mlxkit.models._common import check_images, load_weights
from mlxkit.models.layers import BilinearUpsample
from mlxkit.nn import Conv2d

import mlx.core as mx
import mlx.nn as nn

__all__ = ["DepthResNet20", "depth_resnet20"]


def _article_init(weight: mx.array) -> mx.array:
    # The article calls MLX's `nn.init.he_normal()` with its defaults: fan_in, gain 1.
    return nn.init.he_normal()(weight, "fan_in", 1.0)


class _ShortcutA(nn.Module):
    """ResNet option-A shortcut: subsample by 2 and zero-pad channels (no parameters)."""

    def __init__(self, dims: int):
        super().__init__()
        self.pad = dims // 4

    def __call__(self, x: mx.array) -> mx.array:
        return mx.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (self.pad, self.pad)])


class _Block(nn.Module):
    """Basic block: conv3x3-BN-ReLU-conv3x3-BN, add shortcut, ReLU."""

    def __init__(self, in_dims: int, dims: int, stride: int):
        super().__init__()
        self.conv1 = Conv2d(in_dims, dims, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm(dims)
        self.conv2 = Conv2d(dims, dims, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(dims)
        self.conv1.weight = _article_init(self.conv1.weight)
        self.conv2.weight = _article_init(self.conv2.weight)
        self.shortcut = _ShortcutA(dims) if stride != 1 else None

    def __call__(self, x: mx.array) -> mx.array:
        out = nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return nn.relu(out)


class DepthResNet20(nn.Module):
    """ResNet-20-style encoder with a bilinear-upsampling, skip-concatenating decoder.

    Maps an NHWC RGB batch (B, H, W, 3) to a depth map (B, H, W, 1) with no output activation.
    H and W must be multiples of 16 (the encoder's total stride), e.g. the article's 128x256.

    Encoder: 7x7/2 conv stem (16 channels, no bias) + BatchNorm + ReLU, then four stages of
    three basic blocks (16, 32, 64, 128 channels; the last three start with stride 2 and an
    option-A shortcut). Decoder: three times "upsample x2 (bilinear, align_corners=True),
    concatenate the encoder feature of that size, 1x1 conv to 64", then upsample x2 and a
    1x1 conv to one channel. 1,108,369 trainable parameters.

    Build it with `depth_resnet20()`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import depth_resnet20
        >>> depth_resnet20()(mx.zeros((1, 32, 64, 3))).shape
        (1, 32, 64, 1)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2d(3, 16, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm(16)
        self.layer1 = nn.Sequential(*self._stage(16, 16, stride=1))
        self.layer2 = nn.Sequential(*self._stage(16, 32, stride=2))
        self.layer3 = nn.Sequential(*self._stage(32, 64, stride=2))
        self.layer4 = nn.Sequential(*self._stage(64, 128, stride=2))
        self.upsample = BilinearUpsample(2, align_corners=True)
        self.conv_cat1 = Conv2d(128 + 64, 64, kernel_size=1)
        self.conv_cat2 = Conv2d(64 + 32, 64, kernel_size=1)
        self.conv_cat3 = Conv2d(64 + 16 + 16, 64, kernel_size=1)
        self.output = Conv2d(64, 1, kernel_size=1)
        for conv in (self.conv1, self.conv_cat1, self.conv_cat2, self.conv_cat3, self.output):
            conv.weight = _article_init(conv.weight)

    @staticmethod
    def _stage(in_dims: int, dims: int, *, stride: int) -> list[_Block]:
        first = _Block(in_dims, dims, stride)
        return [first, _Block(dims, dims, 1), _Block(dims, dims, 1)]

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "depth_resnet20", channels=3, multiple=16)
        stem = nn.relu(self.bn1(self.conv1(x)))  # H/2, 16
        c0 = self.layer1(stem)  # H/2, 16
        c1 = self.layer2(c0)  # H/4, 32
        c2 = self.layer3(c1)  # H/8, 64
        x = self.layer4(c2)  # H/16, 128

        x = self.conv_cat1(mx.concatenate([self.upsample(x), c2], axis=-1))
        x = self.conv_cat2(mx.concatenate([self.upsample(x), c1], axis=-1))
        x = self.conv_cat3(mx.concatenate([self.upsample(x), c0, stem], axis=-1))
        return self.output(self.upsample(x))


def depth_resnet20(*, weights: str | os.PathLike[str] | None = None) -> DepthResNet20:
    """Builds the depth-map article's ResNet-20 encoder-decoder (see `DepthResNet20`).

    Args:
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly (every key and shape must match).

    Returns:
        A `DepthResNet20` mapping (B, H, W, 3) to (B, H, W, 1), H and W multiples of 16.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import depth_resnet20
        >>> model = depth_resnet20()
        >>> model(mx.zeros((2, 32, 64, 3))).shape
        (2, 32, 64, 1)
    """
    return load_weights(DepthResNet20(), weights, factory="depth_resnet20")
