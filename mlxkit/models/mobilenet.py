"""MobileNetV3-Large as defined by torchvision (`torchvision/models/mobilenetv3.py`), in NHWC.

Inverted-residual blocks (1x1 expand, depthwise kxk, optional squeeze-excite with hard-sigmoid,
1x1 project; ReLU or hard-swish) following the paper's Table 1, with torchvision's choices:
BatchNorm eps 1e-3 / momentum 0.01, squeeze width `make_divisible(expanded // 4, 8)`, channel
rounding `make_divisible(c * width_mult, 8)`, Kaiming-normal (fan_out) convs and Normal(0, 0.01)
linear weights. `dilated=True` is torchvision's segmentation variant: the last stage (C4) keeps
stride 1 and uses dilation 2 instead, so the features have output stride 16.

Parameter names mirror torchvision's (`features.1.block.0.0.weight`, `classifier.3.weight`, ...)
so a converted torchvision checkpoint needs only the OIHW -> OHWI transpose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlxkit.models._common import (
    apply,
    check_images,
    check_positive_int,
    hard_sigmoid,
    init_weights,
    kaiming_normal_fan_out,
    load_weights,
    normal,
)
from mlxkit.nn import Conv2d

import mlx.core as mx
import mlx.nn as nn

__all__ = [
    "BlockConfig",
    "InvertedResidual",
    "MobileNetV3Large",
    "SqueezeExcitation",
    "make_divisible",
    "mobilenet_v3_large",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds a channel count to the nearest multiple of `divisor`, never dropping below 90%.

    torchvision's `_make_divisible` (from the TensorFlow MobileNet code).

    Example:
        >>> from mlxkit.models.mobilenet import make_divisible
        >>> make_divisible(16 * 0.5), make_divisible(72 * 0.75), make_divisible(10)
        (8, 56, 16)
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BlockConfig:
    """One row of MobileNetV3's architecture table, after width scaling.

    Attributes:
        in_channels: channels entering the block.
        kernel: depthwise kernel size (3 or 5).
        expanded: channels after the 1x1 expansion (the depthwise width).
        out_channels: channels after the 1x1 projection.
        use_se: whether a squeeze-excite module follows the depthwise conv.
        use_hardswish: hard-swish activations if true, ReLU otherwise.
        stride: the block's stride (1 or 2).
        dilation: depthwise dilation; above 1 the stride is dropped, as in torchvision.

    Example:
        >>> from mlxkit.models.mobilenet import BlockConfig
        >>> config = BlockConfig(16, 3, 64, 24, False, False, stride=2, dilation=1)
        >>> config.expanded, config.out_channels
        (64, 24)
    """

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    use_hardswish: bool
    stride: int
    dilation: int


def _large_config(width_mult: float, dilated: bool) -> list[BlockConfig]:
    d = 2 if dilated else 1
    table = [  # in, kernel, expanded, out, SE, activation, stride, dilation  (paper Table 1)
        (16, 3, 16, 16, False, "RE", 1, 1),
        (16, 3, 64, 24, False, "RE", 2, 1),  # C1
        (24, 3, 72, 24, False, "RE", 1, 1),
        (24, 5, 72, 40, True, "RE", 2, 1),  # C2
        (40, 5, 120, 40, True, "RE", 1, 1),
        (40, 5, 120, 40, True, "RE", 1, 1),
        (40, 3, 240, 80, False, "HS", 2, 1),  # C3
        (80, 3, 200, 80, False, "HS", 1, 1),
        (80, 3, 184, 80, False, "HS", 1, 1),
        (80, 3, 184, 80, False, "HS", 1, 1),
        (80, 3, 480, 112, True, "HS", 1, 1),
        (112, 3, 672, 112, True, "HS", 1, 1),
        (112, 5, 672, 160, True, "HS", 2, d),  # C4
        (160, 5, 960, 160, True, "HS", 1, d),
        (160, 5, 960, 160, True, "HS", 1, d),
    ]
    return [
        BlockConfig(
            make_divisible(cin * width_mult),
            kernel,
            make_divisible(exp * width_mult),
            make_divisible(cout * width_mult),
            se,
            act == "HS",
            stride,
            dilation,
        )
        for cin, kernel, exp, cout, se, act, stride, dilation in table
    ]


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    activation: type[nn.Module] | None = None,
) -> list[nn.Module]:
    # torchvision's Conv2dNormActivation: "same" padding, no conv bias, BN, optional activation.
    layers: list[nn.Module] = [
        Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=(kernel - 1) // 2 * dilation,
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm(out_channels, eps=1e-3, momentum=0.01),
    ]
    if activation is not None:
        layers.append(activation())
    return layers


class SqueezeExcitation(nn.Module):
    """Channel attention: global average, 1x1 conv, ReLU, 1x1 conv, hard-sigmoid, rescale.

    Args:
        channels: channels of the input (and output).
        squeeze_channels: width of the bottleneck.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.mobilenet import SqueezeExcitation
        >>> SqueezeExcitation(16, 8)(mx.ones((1, 4, 4, 16))).shape
        (1, 4, 4, 16)
    """

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = Conv2d(channels, squeeze_channels, 1)
        self.fc2 = Conv2d(squeeze_channels, channels, 1)

    def __call__(self, x: mx.array) -> mx.array:
        scale = nn.relu(self.fc1(x.mean(axis=(1, 2), keepdims=True)))
        return x * hard_sigmoid(self.fc2(scale))


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: [1x1 expand] -> depthwise -> [SE] -> 1x1 project (+ residual).

    Args:
        config: the block's row of the architecture table (after width scaling).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.mobilenet import InvertedResidual, BlockConfig
        >>> block = InvertedResidual(BlockConfig(16, 3, 64, 24, False, False, 2, 1))
        >>> block(mx.zeros((1, 8, 8, 16))).shape
        (1, 4, 4, 24)
    """

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        c = config
        if c.stride not in (1, 2):
            raise ValueError(
                f"InvertedResidual: stride must be 1 or 2. Received: stride={c.stride!r}"
            )
        activation = nn.Hardswish if c.use_hardswish else nn.ReLU
        self.use_residual = c.stride == 1 and c.in_channels == c.out_channels
        # Strided blocks start a new stage; the segmentation heads tap features there.
        self.is_strided = c.stride > 1
        self.out_channels = c.out_channels
        block: list[nn.Module | list[nn.Module]] = []
        if c.expanded != c.in_channels:
            block.append(_conv_bn(c.in_channels, c.expanded, 1, activation=activation))
        # A dilated block trades its stride for dilation, as in torchvision.
        stride = 1 if c.dilation > 1 else c.stride
        block.append(
            _conv_bn(
                c.expanded,
                c.expanded,
                c.kernel,
                stride=stride,
                dilation=c.dilation,
                groups=c.expanded,
                activation=activation,
            )
        )
        if c.use_se:
            block.append(SqueezeExcitation(c.expanded, make_divisible(c.expanded // 4)))
        block.append(_conv_bn(c.expanded, c.out_channels, 1))
        self.block = block

    def __call__(self, x: mx.array) -> mx.array:
        out = apply(self.block, x)
        return out + x if self.use_residual else out


def large_features(width_mult: float = 1.0, dilated: bool = False) -> list:
    """MobileNetV3-Large's `features`: stem, 15 bottlenecks, and the 1x1 conv to 6x channels.

    Element 0 is the stem (stride 2, hard-swish), elements 1-15 the bottlenecks, element 16 the
    last 1x1 conv + BN + hard-swish. Used by `MobileNetV3Large` and the segmentation models.
    """
    configs = _large_config(width_mult, dilated)
    features: list = [_conv_bn(3, configs[0].in_channels, 3, stride=2, activation=nn.Hardswish)]
    features += [InvertedResidual(config) for config in configs]
    last_in = configs[-1].out_channels
    features.append(_conv_bn(last_in, 6 * last_in, 1, activation=nn.Hardswish))
    return features


def features_channels(features: list, index: int) -> int:
    """Output channels of `features[index]` (a bottleneck or a conv-BN list)."""
    item = features[index]
    if isinstance(item, InvertedResidual):
        return item.out_channels
    return item[1].weight.shape[0]  # the BatchNorm's scale has one entry per channel


def init_backbone(model: nn.Module) -> None:
    """torchvision's MobileNetV3 initialisation for every conv in `model`."""
    init_weights(model, (nn.Conv2d,), kaiming_normal_fan_out)


class MobileNetV3Large(nn.Module):
    """torchvision's MobileNetV3-Large classifier, NHWC (B, H, W, 3) -> (B, num_classes) logits.

    Build it with `mobilenet_v3_large()`.

    Args:
        num_classes: size of the final linear layer.
        width_mult: channel multiplier (channels rounded with `make_divisible`).
        dilated: torchvision's `dilated=True` (output stride 16 instead of 32).
        dropout: dropout before the last linear layer.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.mobilenet import MobileNetV3Large
        >>> MobileNetV3Large(10, width_mult=0.25).eval()(mx.zeros((1, 32, 32, 3))).shape
        (1, 10)
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        width_mult: float = 1.0,
        dilated: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.features = large_features(width_mult, dilated)
        last_conv = features_channels(self.features, len(self.features) - 1)
        last_channel = make_divisible(1280 * width_mult)
        self.classifier = [
            nn.Linear(last_conv, last_channel),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(last_channel, num_classes),
        ]
        init_backbone(self)
        init_weights(self, (nn.Linear,), normal(0.01))

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "mobilenet_v3_large", channels=3)
        x = apply(self.features, x)
        return apply(self.classifier, x.mean(axis=(1, 2)))


def check_width_mult(width_mult: float, factory: str) -> float:
    """Validates a MobileNet width multiplier (a positive number)."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise ValueError(
            f"{factory}: `width_mult` must be a positive number such as 1.0 or 0.5. "
            f"Received: width_mult={width_mult!r}"
        )
    return float(width_mult)


def mobilenet_v3_large(
    num_classes: int = 1000,
    *,
    width_mult: float = 1.0,
    dilated: bool = False,
    weights: str | os.PathLike[str] | None = None,
) -> MobileNetV3Large:
    """Builds torchvision's MobileNetV3-Large (5,483,032 parameters with 1000 classes).

    Args:
        num_classes: size of the final linear layer.
        width_mult: channel multiplier; values below 1 give smaller, faster networks.
        dilated: keep output stride 16 by dilating the last stage (torchvision's `dilated`).
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `MobileNetV3Large` mapping (B, H, W, 3) to (B, num_classes) logits.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import mobilenet_v3_large
        >>> model = mobilenet_v3_large(num_classes=10, width_mult=0.5).eval()
        >>> model(mx.zeros((1, 64, 64, 3))).shape
        (1, 10)
    """
    check_positive_int(num_classes, "num_classes", "mobilenet_v3_large")
    width_mult = check_width_mult(width_mult, "mobilenet_v3_large")
    model = MobileNetV3Large(num_classes, width_mult=width_mult, dilated=bool(dilated))
    return load_weights(model, weights, factory="mobilenet_v3_large")
