"""ImageNet ResNets as defined by torchvision (`torchvision/models/resnet.py`), in NHWC.

ResNet-18 (basic blocks 2-2-2-2) and ResNet-50 (bottlenecks 3-4-6-3, stride on the 3x3 conv:
"ResNet v1.5"): 7x7/2 conv stem without bias, BatchNorm, ReLU, 3x3/2 max-pool (padding 1), four
stages of 64/128/256/512 base channels, 1x1-conv + BatchNorm projection shortcuts where the shape
changes, global average pooling and a linear classifier. Convolutions start from Kaiming-normal
(fan_out, ReLU gain) and BatchNorm from ones/zeros, as torchvision does.

Parameter names mirror torchvision's (`layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
`fc.weight`, ...) so a converted torchvision checkpoint needs only the OIHW -> OHWI transpose.
"""

from __future__ import annotations

import os
from typing import Literal

from mlxkit.models._common import (
    apply,
    check_images,
    check_positive_int,
    init_weights,
    kaiming_normal_fan_out,
    load_weights,
)
from mlxkit.nn import Conv2d

import mlx.core as mx
import mlx.nn as nn

__all__ = ["ResNet", "resnet18", "resnet50"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual connection; used by ResNet-18/34.

    Args:
        in_channels: channels of the input.
        channels: channels of the output.
        stride: stride of the first conv (and of the 1x1 projection shortcut, when needed).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.resnet import BasicBlock
        >>> BasicBlock(8, 16, stride=2)(mx.zeros((2, 8, 8, 8))).shape
        (2, 4, 4, 16)
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm(channels)
        self.conv2 = Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(channels)
        self.downsample = _projection(in_channels, channels, stride)

    def __call__(self, x: mx.array) -> mx.array:
        out = nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else apply(self.downsample, x)
        return nn.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with BatchNorm; used by ResNet-50/101/152.

    Args:
        in_channels: channels of the input.
        channels: bottleneck width; the output has `4 * channels`.
        stride: stride of the 3x3 conv (and of the 1x1 projection shortcut, when needed).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.resnet import Bottleneck
        >>> Bottleneck(16, 8, stride=2)(mx.zeros((2, 8, 8, 16))).shape
        (2, 4, 4, 32)
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm(channels)
        self.conv2 = Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(channels)
        self.conv3 = Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm(out_channels)
        self.downsample = _projection(in_channels, out_channels, stride)

    def __call__(self, x: mx.array) -> mx.array:
        out = nn.relu(self.bn1(self.conv1(x)))
        out = nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else apply(self.downsample, x)
        return nn.relu(out + identity)


def _projection(in_channels: int, out_channels: int, stride: int) -> list[nn.Module] | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return [Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm(out_channels)]  # fmt: skip


class ResNet(nn.Module):
    """torchvision's ResNet for NHWC input (B, H, W, 3), returning (B, num_classes) logits.

    Any H and W work (global average pooling absorbs the size); ImageNet models are trained at
    224x224. Build one with `resnet18()` or `resnet50()`.

    Args:
        block: `"basic"` (two 3x3 convs) or `"bottleneck"` (1x1-3x3-1x1, 4x expansion).
        layers: number of blocks in each of the four stages.
        num_classes: size of the final linear layer.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.resnet import ResNet
        >>> model = ResNet("basic", (1, 1, 1, 1), num_classes=5)
        >>> model.eval()(mx.zeros((1, 32, 32, 3))).shape
        (1, 5)
    """

    def __init__(
        self,
        block: Literal["basic", "bottleneck"],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        blocks: dict[str, type[BasicBlock] | type[Bottleneck]] = {
            "basic": BasicBlock,
            "bottleneck": Bottleneck,
        }
        if block not in blocks:
            raise ValueError(
                f"ResNet: `block` must be one of {sorted(blocks)}. Received: block={block!r}"
            )
        if len(layers) != 4 or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers
        ):
            raise ValueError(
                "ResNet: `layers` must be four positive block counts, e.g. (2, 2, 2, 2). "
                f"Received: layers={layers!r}"
            )
        check_positive_int(num_classes, "num_classes", "ResNet")
        kind = blocks[block]
        self.conv1 = Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        stages = []
        for index, (count, channels) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stride = 1 if index == 0 else 2
            stage = []
            for i in range(count):
                stage.append(kind(in_channels, channels, stride if i == 0 else 1))
                in_channels = channels * kind.expansion
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512 * kind.expansion, num_classes)
        init_weights(self, (nn.Conv2d,), kaiming_normal_fan_out)

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "ResNet", channels=3)
        x = self.maxpool(nn.relu(self.bn1(self.conv1(x))))
        x = apply([self.layer1, self.layer2, self.layer3, self.layer4], x)
        return self.fc(x.mean(axis=(1, 2)))


def resnet18(num_classes: int = 1000, *, weights: str | os.PathLike[str] | None = None) -> ResNet:
    """Builds torchvision's ResNet-18 (11,689,512 parameters with 1000 classes).

    Args:
        num_classes: size of the final linear layer.
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `ResNet` mapping (B, H, W, 3) to (B, num_classes) logits.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import resnet18
        >>> resnet18(num_classes=10).eval()(mx.zeros((1, 32, 32, 3))).shape
        (1, 10)
    """
    check_positive_int(num_classes, "num_classes", "resnet18")
    return load_weights(ResNet("basic", (2, 2, 2, 2), num_classes), weights, factory="resnet18")


def resnet50(num_classes: int = 1000, *, weights: str | os.PathLike[str] | None = None) -> ResNet:
    """Builds torchvision's ResNet-50 (25,557,032 parameters with 1000 classes).

    Args:
        num_classes: size of the final linear layer.
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `ResNet` mapping (B, H, W, 3) to (B, num_classes) logits.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import resnet50
        >>> resnet50(num_classes=10).eval()(mx.zeros((1, 32, 32, 3))).shape
        (1, 10)
    """
    check_positive_int(num_classes, "num_classes", "resnet50")
    model = ResNet("bottleneck", (3, 4, 6, 3), num_classes)
    return load_weights(model, weights, factory="resnet50")
