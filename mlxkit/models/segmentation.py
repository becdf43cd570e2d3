"""Semantic segmentation on a dilated MobileNetV3-Large: LR-ASPP and DeepLabV3 heads.

Sources: torchvision `models/segmentation/lraspp.py` and `deeplabv3.py` (with
`mobilenet_v3_large(dilated=True)` as backbone), followed layer for layer in NHWC:

- LR-ASPP: from the output-stride-16 features (960 channels) a 1x1 conv + BN + ReLU branch
  (128 channels) is gated by a global-average -> 1x1 conv -> sigmoid branch, upsampled x2 to the
  output-stride-8 features (the C2 block, 40 channels), and the two are classified by 1x1 convs
  and summed.
- DeepLabV3: ASPP on the output-stride-16 features (1x1 conv, three 3x3 convs dilated 12/24/36,
  and image pooling, each to 256 channels + BN + ReLU; concatenated, 1x1 conv + BN + ReLU +
  Dropout(0.5)), then 3x3 conv + BN + ReLU and a 1x1 classifier. No auxiliary classifier (the
  `aux_loss=False` configuration).

Both return (B, H, W, num_classes) logits, upsampled bilinearly (align_corners=False) to the
input size. H and W must be multiples of 16 so every upsampling factor is an exact integer.
Parameter names mirror torchvision's (`backbone.4.block.0.0.weight`, `classifier.cbr.0.weight`,
`classifier.0.convs.1.0.weight`, ...).
"""

from __future__ import annotations

import os

from mlxkit.models._common import (
    GlobalAvgPool,
    apply,
    check_images,
    check_positive_int,
    load_weights,
)
from mlxkit.models.layers import BilinearUpsample
from mlxkit.models.mobilenet import (
    InvertedResidual,
    check_width_mult,
    features_channels,
    init_backbone,
    large_features,
)
from mlxkit.nn import Conv2d

import mlx.core as mx
import mlx.nn as nn

__all__ = [
    "LRASPP",
    "DeepLabV3",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
]


def _stage_indices(backbone: list) -> list[int]:
    # torchvision's rule: the stem, every strided bottleneck (start of C1..C4), and the last layer.
    strided = [
        i
        for i, block in enumerate(backbone)
        if isinstance(block, InvertedResidual) and block.is_strided
    ]
    return [0, *strided, len(backbone) - 1]


class LRASPP(nn.Module):
    """Lite R-ASPP ("Searching for MobileNetV3") on a dilated MobileNetV3-Large.

    Maps (B, H, W, 3) to (B, H, W, num_classes) logits; H and W multiples of 16. Build it with
    `lraspp_mobilenet_v3_large()`.

    Args:
        num_classes: number of classes, background included.
        width_mult: backbone channel multiplier.
        inter_channels: width of the head's high-resolution branch (torchvision: 128).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.segmentation import LRASPP
        >>> LRASPP(3, width_mult=0.25).eval()(mx.zeros((1, 32, 32, 3))).shape
        (1, 32, 32, 3)
    """

    def __init__(
        self, num_classes: int = 21, *, width_mult: float = 1.0, inter_channels: int = 128
    ) -> None:
        super().__init__()
        self.backbone = large_features(width_mult, dilated=True)
        init_backbone(self)
        stages = _stage_indices(self.backbone)
        self.low_index = stages[-4]  # C2, output stride 8
        low_channels = features_channels(self.backbone, self.low_index)
        high_channels = features_channels(self.backbone, len(self.backbone) - 1)
        self.classifier = _LRASPPHead(low_channels, high_channels, num_classes, inter_channels)
        self.upsample = BilinearUpsample(8)

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "lraspp_mobilenet_v3_large", channels=3, multiple=16)
        low = x
        for index, layer in enumerate(self.backbone):
            x = apply(layer, x)
            if index == self.low_index:
                low = x
        return self.upsample(self.classifier(low, x))


class _LRASPPHead(nn.Module):
    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter: int):
        super().__init__()
        self.cbr = [Conv2d(high_channels, inter, 1, bias=False), nn.BatchNorm(inter), nn.ReLU()]
        self.scale = [GlobalAvgPool(), Conv2d(high_channels, inter, 1, bias=False), nn.Sigmoid()]
        self.low_classifier = Conv2d(low_channels, num_classes, 1)
        self.high_classifier = Conv2d(inter, num_classes, 1)
        self.upsample = BilinearUpsample(2)

    def __call__(self, low: mx.array, high: mx.array) -> mx.array:
        x = apply(self.cbr, high) * apply(self.scale, high)
        x = self.upsample(x)  # output stride 16 -> 8, the size of `low`
        return self.low_classifier(low) + self.high_classifier(x)


class _ASPP(nn.Module):
    def __init__(self, in_channels: int, rates: tuple[int, ...], out_channels: int = 256):
        super().__init__()

        def conv_bn_relu(kernel: int, dilation: int = 1) -> list[nn.Module]:
            padding = dilation if kernel == 3 else 0
            conv = Conv2d(in_channels, out_channels, kernel, padding=padding,
                             dilation=dilation, bias=False)  # fmt: skip
            return [conv, nn.BatchNorm(out_channels), nn.ReLU()]

        self.convs = [
            conv_bn_relu(1),
            *(conv_bn_relu(3, rate) for rate in rates),
            # Image pooling; its 1x1 output is broadcast back over the feature map below,
            # which is what torchvision's bilinear resize of a 1x1 map amounts to.
            [GlobalAvgPool(), *conv_bn_relu(1)],
        ]
        self.project = [
            Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        ]

    def __call__(self, x: mx.array) -> mx.array:
        branches = []
        for conv in self.convs:
            y = apply(conv, x)
            branches.append(mx.broadcast_to(y, (*x.shape[:3], y.shape[-1])))
        return apply(self.project, mx.concatenate(branches, axis=-1))


class DeepLabV3(nn.Module):
    """DeepLabV3 (ASPP head, rates 12/24/36) on a dilated MobileNetV3-Large, no aux classifier.

    Maps (B, H, W, 3) to (B, H, W, num_classes) logits; H and W multiples of 16. Build it with
    `deeplabv3_mobilenet_v3_large()`.

    Args:
        num_classes: number of classes, background included.
        width_mult: backbone channel multiplier.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.segmentation import DeepLabV3
        >>> DeepLabV3(3, width_mult=0.25).eval()(mx.zeros((1, 32, 32, 3))).shape
        (1, 32, 32, 3)
    """

    def __init__(self, num_classes: int = 21, *, width_mult: float = 1.0):
        super().__init__()
        self.backbone = large_features(width_mult, dilated=True)
        init_backbone(self)
        high_channels = features_channels(self.backbone, len(self.backbone) - 1)
        self.classifier = [
            _ASPP(high_channels, (12, 24, 36)),
            Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm(256),
            nn.ReLU(),
            Conv2d(256, num_classes, 1),
        ]
        self.upsample = BilinearUpsample(16)

    def __call__(self, x: mx.array) -> mx.array:
        check_images(x, "deeplabv3_mobilenet_v3_large", channels=3, multiple=16)
        x = apply(self.backbone, x)
        return self.upsample(apply(self.classifier, x))


def lraspp_mobilenet_v3_large(
    num_classes: int = 2,
    *,
    width_mult: float = 1.0,
    weights: str | os.PathLike[str] | None = None,
) -> LRASPP:
    """Builds torchvision's LR-ASPP with a dilated MobileNetV3-Large backbone (see `LRASPP`).

    With `num_classes=21` it has 3,221,538 parameters, torchvision's published figure.

    Args:
        num_classes: number of classes, background included.
        width_mult: backbone channel multiplier; e.g. 0.25 gives a small, fast variant.
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        An `LRASPP` mapping (B, H, W, 3) to (B, H, W, num_classes) logits; H, W multiples of 16.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import lraspp_mobilenet_v3_large
        >>> model = lraspp_mobilenet_v3_large(num_classes=2, width_mult=0.25).eval()
        >>> model(mx.zeros((1, 64, 64, 3))).shape
        (1, 64, 64, 2)
    """
    check_positive_int(num_classes, "num_classes", "lraspp_mobilenet_v3_large")
    width_mult = check_width_mult(width_mult, "lraspp_mobilenet_v3_large")
    model = LRASPP(num_classes, width_mult=width_mult)
    return load_weights(model, weights, factory="lraspp_mobilenet_v3_large")


def deeplabv3_mobilenet_v3_large(
    num_classes: int = 2,
    *,
    width_mult: float = 1.0,
    weights: str | os.PathLike[str] | None = None,
) -> DeepLabV3:
    """Builds torchvision's DeepLabV3 with a dilated MobileNetV3-Large backbone, `aux_loss=False`.

    With `num_classes=21` it has 11,025,477 parameters; torchvision's published 11,029,328 also
    counts the auxiliary FCN head (3,851 parameters) that its pretrained weights carry.

    Args:
        num_classes: number of classes, background included.
        width_mult: backbone channel multiplier; e.g. 0.25 gives a small, fast variant.
        weights: optional path to a `.safetensors` or `.npz` file written by `save_weights`;
            loaded strictly.

    Returns:
        A `DeepLabV3` mapping (B, H, W, 3) to (B, H, W, num_classes) logits; H, W multiples of 16.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import deeplabv3_mobilenet_v3_large
        >>> model = deeplabv3_mobilenet_v3_large(num_classes=2, width_mult=0.25).eval()
        >>> model(mx.zeros((1, 64, 64, 3))).shape
        (1, 64, 64, 2)
    """
    check_positive_int(num_classes, "num_classes", "deeplabv3_mobilenet_v3_large")
    width_mult = check_width_mult(width_mult, "deeplabv3_mobilenet_v3_large")
    model = DeepLabV3(num_classes, width_mult=width_mult)
    return load_weights(model, weights, factory="deeplabv3_mobilenet_v3_large")
