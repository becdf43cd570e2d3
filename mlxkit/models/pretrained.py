"""Pretrained weights from PyTorch checkpoints, and the helpers fine-tuning needs.

`load_pretrained` reads a torchvision (or timm) state dict saved as `.safetensors`, renames its
keys through a per-architecture table, moves conv weights from PyTorch's OIHW layout to MLX's OHWI,
checks every key and shape, and loads it. `freeze_backbone` freezes a backbone and keeps its
BatchNorm layers in inference mode, as Keras advises for fine-tuning. Only safetensors files are
read: a PyTorch `.pth` is a pickle, which can run arbitrary code when loaded.

Converting a torchvision checkpoint, where torch is installed:

    import torch, torchvision
    from safetensors.torch import save_file
    model = torchvision.models.resnet18(weights="IMAGENET1K_V1")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, "resnet18.safetensors")
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from mlxkit.models.resnet import ResNet
from mlxkit.models.segmentation import LRASPP, DeepLabV3

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrozenBatchNorm",
    "LoadReport",
    "fold_input_normalization",
    "freeze_backbone",
    "load_pretrained",
]

# The per-channel statistics torchvision's (and timm's ResNet) ImageNet weights expect inputs
# normalised with: `(pixels / 255 - mean) / std`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Source = Literal["torchvision", "timm"]
_SOURCES = ("torchvision", "timm")

# PyTorch state-dict entries with no MLX counterpart, dropped by every mapping: BatchNorm's step
# counter, and the auxiliary FCN head of torchvision's segmentation checkpoints (a training-time
# loss head that mlxkit's DeepLabV3 leaves out, as `aux_loss=False` does).
_IGNORED = (re.compile(r"(^|\.)num_batches_tracked$"), re.compile(r"^aux_classifier\."))

# Key renames per (architecture, source), applied in order; the first matching pattern wins.
# mlxkit's models already use torchvision's parameter names, so most tables are empty. The
# segmentation models also take a MobileNetV3-Large *classification* checkpoint, whose `features`
# become the `backbone` (torchvision's `weights_backbone`); its ImageNet classifier then shows up
# as unexpected keys, which `strict=False` skips.
_RENAMES: dict[tuple[type[nn.Module], str], tuple[tuple[str, str], ...]] = {
    (LRASPP, "torchvision"): ((r"^features\.", "backbone."),),
    (DeepLabV3, "torchvision"): ((r"^features\.", "backbone."),),
    # timm's ResNet state dict uses torchvision's names (conv1, bn1, layerN.i.downsample.0, fc).
    (ResNet, "timm"): (),
}


@dataclass(frozen=True)
class LoadReport:
    """What `load_pretrained` did with each key of the file.

    Attributes:
        loaded: model parameter names that received a value from the file.
        missing: model parameters the file has no value for (left as initialised).
        unexpected: file keys (after renaming) that name no model parameter.
        mismatched: `"name: file shape -> model shape"` for same-named entries of another shape.
        ignored: file keys dropped by design (BatchNorm step counters, auxiliary heads).

    Example:
        >>> from mlxkit.models.pretrained import LoadReport
        >>> print(LoadReport(loaded=("fc.weight",), missing=("fc.bias",)))
        loaded 1 arrays; missing (left as initialised): fc.bias
    """

    loaded: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    @property
    def skipped(self) -> tuple[str, ...]:
        """Every key not loaded for a reason other than design: missing, unexpected, mismatched."""
        return self.missing + self.unexpected + self.mismatched

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} arrays"]
        for label, keys in (
            ("missing (left as initialised)", self.missing),
            ("unexpected (skipped)", self.unexpected),
            ("mismatched shape (skipped)", self.mismatched),
        ):
            if keys:
                parts.append(f"{label}: {_listing(keys)}")
        return "; ".join(parts)


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    source: Source = "torchvision",
    strict: bool = True,
) -> LoadReport:
    """Loads a PyTorch state dict saved as `.safetensors` into an mlxkit model, in place.

    Keys are renamed through the table for the model's architecture (`_RENAMES` in this module;
    a model not in the table keeps the file's names), conv weights are transposed from
    PyTorch's (out, in, kh, kw) to MLX's (out, kh, kw, in), and BatchNorm running statistics are
    carried over. Linear weights are (out, in) in both libraries and load unchanged.

    Supported: `resnet18` / `resnet50` (torchvision or timm), `mobilenet_v3_large`,
    `lraspp_mobilenet_v3_large` and `deeplabv3_mobilenet_v3_large` (torchvision; the segmentation
    models also take a MobileNetV3-Large ImageNet checkpoint for their backbone with
    `strict=False`), `vgg19_cifar` from a PyTorch port with the same layer order.

    Args:
        model: the model to fill, built with the architecture the checkpoint was saved from.
        path: a `.safetensors` file holding the PyTorch `state_dict()`.
        source: the library whose names the file uses: `"torchvision"` or `"timm"`.
        strict: if true, any missing, unexpected or mis-shaped key raises a `ValueError` and
            nothing is loaded. If false, everything that matches is loaded and the rest skipped
            (for a new head with another number of classes); the report lists what was skipped.

    Returns:
        A `LoadReport` naming the loaded, missing, unexpected, mis-shaped and ignored keys.

    Raises:
        TypeError: if `model` is not a module, `path` not a path or `strict` not a bool.
        FileNotFoundError: if there is no file at `path`.
        ValueError: for an unknown `source`, a pickle checkpoint (the message gives the
            conversion command), or with `strict=True`, a file that does not match the model.

    Example:
        >>> import os, tempfile
        >>> import mlx.core as mx
        >>> from mlxkit.models import load_pretrained, resnet18
        >>> state = {"fc.weight": mx.zeros((10, 512)), "fc.bias": mx.ones((10,))}
        >>> path = os.path.join(tempfile.mkdtemp(), "head.safetensors")
        >>> mx.save_safetensors(path, state)
        >>> model = resnet18(num_classes=10)
        >>> report = load_pretrained(model, path, strict=False)
        >>> report.loaded, len(report.missing) > 0, model.fc.bias[0].item()
        (('fc.bias', 'fc.weight'), True, 1.0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            "load_pretrained: `model` must be an mlx.nn.Module such as "
            f"mlxkit.models.resnet18(). Received: model={model!r:.80}"
        )
    if source not in _SOURCES:
        raise ValueError(
            f"load_pretrained: `source` must be one of {list(_SOURCES)}. "
            f"Received: source={source!r}"
        )
    if not isinstance(strict, bool):
        raise TypeError(f"load_pretrained: `strict` must be a bool. Received: strict={strict!r}")
    renames = _renames_for(model, source)
    state = _read_state_dict(path)

    expected = dict(tree_flatten(model.parameters()))
    ignored, unexpected = [], []
    mismatched: list[tuple[str, str]] = []  # (parameter name, "name: file shape -> model shape")
    weights: dict[str, mx.array] = {}
    for key, value in state.items():
        if any(pattern.search(key) for pattern in _IGNORED):
            ignored.append(key)
            continue
        name = _rename(key, renames)
        if name not in expected:
            unexpected.append(name if name == key else f"{key} (as {name})")
            continue
        target = expected[name]
        # Conv weights: PyTorch's (out, in, *kernel) is MLX's (out, *kernel, in).
        if value.ndim == target.ndim >= 3:
            value = mx.moveaxis(value, 1, -1)
        if value.shape != target.shape:
            mismatched.append((name, f"{name}: {tuple(value.shape)} -> {tuple(target.shape)}"))
            continue
        weights[name] = value.astype(target.dtype)
    report = LoadReport(
        loaded=tuple(sorted(weights)),
        missing=tuple(sorted(expected.keys() - weights.keys() - {name for name, _ in mismatched})),
        unexpected=tuple(sorted(unexpected)),
        mismatched=tuple(sorted(text for _, text in mismatched)),
        ignored=tuple(sorted(ignored)),
    )
    if strict and report.skipped:
        raise ValueError(
            f"load_pretrained: the file does not match {type(model).__name__} "
            f"(source={source!r}). Received: path={os.fspath(path)!r}. {_mismatch_text(report)}"
            " Build the model with the checkpoint's arguments (num_classes, width_mult), or pass "
            "strict=False to load what matches and keep the rest as initialised (a new head)."
        )
    model.load_weights(list(weights.items()), strict=False)
    mx.eval(model.parameters())
    return report


class FrozenBatchNorm(nn.BatchNorm):
    """A BatchNorm that always normalises with its running statistics, in train mode too.

    torchvision's `FrozenBatchNorm2d` for MLX, with `nn.BatchNorm`'s parameter names
    (`weight`, `bias`, `running_mean`, `running_var`), so checkpoints load and save unchanged.
    `model.train()` leaves it in inference mode, which is what fine-tuning a pretrained backbone
    needs (Keras: "keep the BatchNormalization layers in inference mode"). Make one from an
    existing layer with `FrozenBatchNorm.from_batch_norm`, or let `freeze_backbone` do it.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models.pretrained import FrozenBatchNorm
        >>> layer = FrozenBatchNorm(3).train()
        >>> layer(mx.full((2, 3), 5.0)).round(3).tolist()  # running mean 0, var 1: ~unchanged
        [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]
        >>> layer.running_mean.tolist()  # a BatchNorm in train mode would have moved it
        [0.0, 0.0, 0.0]
    """

    @classmethod
    def from_batch_norm(cls, layer: nn.BatchNorm) -> FrozenBatchNorm:
        """A `FrozenBatchNorm` holding `layer`'s configuration, parameters and statistics."""
        if not getattr(layer, "track_running_stats", False):
            raise ValueError(
                "FrozenBatchNorm.from_batch_norm: `layer` must track running statistics "
                f"(track_running_stats=True). Received: layer={layer!r}"
            )
        frozen = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                     affine="weight" in layer)  # fmt: skip
        frozen.update(layer.parameters())
        frozen.train(layer.training)
        return frozen

    def __call__(self, x: mx.array) -> mx.array:
        x = (x - self.running_mean) * mx.rsqrt(self.running_var + self.eps)
        return (self.weight * x + self.bias) if "weight" in self else x


def freeze_backbone(backbone: nn.Module | list[Any]) -> nn.Module | list[Any]:
    """Freezes every parameter of `backbone` and pins its BatchNorm layers to inference mode.

    `module.freeze()` alone stops gradients (the `Trainer` differentiates and optimises
    `trainable_parameters()` only), but an MLX `BatchNorm` in train mode still normalises with
    batch statistics and updates its running averages. This also replaces each `nn.BatchNorm`
    inside `backbone` by a `FrozenBatchNorm` with the same parameters, so `fit` changes neither
    the weights nor the statistics. Parameter names are unchanged; `unfreeze()` later makes the
    weights trainable again while the statistics stay fixed (Keras's fine-tuning advice).

    Args:
        backbone: a module or a list of modules (the segmentation models' `backbone` is a list).
            Pass the container, not a BatchNorm layer itself.

    Returns:
        `backbone`, changed in place.

    Example:
        >>> from mlx.utils import tree_flatten
        >>> from mlxkit.models import freeze_backbone, lraspp_mobilenet_v3_large
        >>> model = lraspp_mobilenet_v3_large(num_classes=2, width_mult=0.25)
        >>> _ = freeze_backbone(model.backbone)
        >>> sorted({name.split(".")[0] for name, _ in tree_flatten(model.trainable_parameters())})
        ['classifier']
    """
    if not isinstance(backbone, (nn.Module, list)) or isinstance(backbone, nn.BatchNorm):
        raise TypeError(
            "freeze_backbone: `backbone` must be a module or a list of modules that contains the "
            f"layers to freeze (e.g. model.backbone). Received: backbone={type(backbone).__name__}"
        )
    _pin_batch_norms(backbone)
    for module in _modules_in(backbone):
        module.freeze()
    return backbone


def fold_input_normalization(
    conv: nn.Conv2d,
    batch_norm: nn.BatchNorm | None = None,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> None:
    """Folds `(x - mean) / std` into a first conv layer, so the model takes raw [0, 1] pixels.

    Pretrained ImageNet weights expect normalised inputs. Scaling the conv weights by `1 / std`
    per input channel and moving the constant `-W . (mean / std)` into the conv bias (or, for a
    conv without bias, into the running mean of the `batch_norm` right after it) gives the same
    outputs for raw pixels, at no run-time cost and with nothing changed in the data pipeline,
    the Core ML export or the parameter names. The one difference is at the image border, where
    the conv's zero padding now stands for a black pixel rather than for the mean colour.

    Call it once, right after `load_pretrained`.

    Args:
        conv: the model's first conv, e.g. `model.conv1` (ResNet) or `model.backbone[0][0]`.
        batch_norm: the BatchNorm applied to `conv`'s output; needed when `conv` has no bias.
        mean: per-input-channel mean the weights were trained with.
        std: per-input-channel standard deviation the weights were trained with.

    Example:
        >>> import mlx.core as mx
        >>> import mlx.nn as nn
        >>> from mlxkit.models import fold_input_normalization
        >>> conv = nn.Conv2d(3, 4, 1)
        >>> x = mx.random.uniform(shape=(1, 2, 2, 3))
        >>> want = conv((x - mx.array([0.5, 0.4, 0.3])) / mx.array([0.2, 0.25, 0.3]))
        >>> fold_input_normalization(conv, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
        >>> mx.allclose(conv(x), want, atol=1e-5).item()
        True
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(
            f"fold_input_normalization: `conv` must be an nn.Conv2d. Received: conv={conv!r}"
        )
    channels = conv.weight.shape[-1]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(
            f"fold_input_normalization: `mean` and `std` need one entry per input channel "
            f"({channels}), with std > 0. Received: mean={mean!r}, std={std!r}"
        )
    has_bias = "bias" in conv
    if not has_bias and not isinstance(batch_norm, nn.BatchNorm):
        raise ValueError(
            "fold_input_normalization: `conv` has no bias, so pass the `batch_norm` that follows "
            f"it to take the shift. Received: batch_norm={batch_norm!r}"
        )
    scale = 1 / mx.array(std, dtype=conv.weight.dtype)
    shift = (conv.weight * (mx.array(mean, dtype=conv.weight.dtype) * scale)).sum(axis=(1, 2, 3))
    conv.weight = conv.weight * scale
    if has_bias:
        conv.bias = conv.bias - shift
    elif batch_norm is not None:
        batch_norm.running_mean = batch_norm.running_mean + shift
    mx.eval(conv.parameters(), batch_norm.parameters() if batch_norm is not None else {})


def _pin_batch_norms(container: Any) -> None:
    """Replaces every `nn.BatchNorm` below `container` (modules, lists, dicts) in place."""
    if isinstance(container, (nn.Module, dict)):
        items = list(container.items())
    elif isinstance(container, list):
        items = list(enumerate(container))
    else:
        return
    for key, child in items:
        if isinstance(child, nn.BatchNorm) and not isinstance(child, FrozenBatchNorm):
            container[key] = FrozenBatchNorm.from_batch_norm(child)
        else:
            _pin_batch_norms(child)


def _modules_in(container: nn.Module | list[Any]) -> list[nn.Module]:
    if isinstance(container, nn.Module):
        return [container]
    found: list[nn.Module] = []
    for item in container:
        if isinstance(item, (nn.Module, list)):
            found += _modules_in(item)
    return found


def _renames_for(model: nn.Module, source: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    for (kind, table_source), rules in _RENAMES.items():
        if isinstance(model, kind) and table_source == source:
            return tuple((re.compile(pattern), replacement) for pattern, replacement in rules)
    if source == "timm":
        raise ValueError(
            "load_pretrained: source='timm' is supported for the ResNets (timm names their "
            f"parameters as torchvision does). Received: source='timm' for a "
            f"{type(model).__name__}. Convert a torchvision checkpoint instead."
        )
    return ()


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, replacement in rules:
        if pattern.search(key):
            return pattern.sub(replacement, key, count=1)
    return key


_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")
_RECIPE = (
    'python -c "import sys, torch; from safetensors.torch import save_file; '
    "save_file({k: v.contiguous() for k, v in torch.load(sys.argv[1], map_location='cpu', "
    'weights_only=True).items()}, sys.argv[2])" model.pth model.safetensors'
)


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, mx.array]:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "load_pretrained: `path` must be a path to a .safetensors file. "
            f"Received: path={path!r}"
        )
    path = os.fspath(path)
    if path.endswith(_PICKLE_SUFFIXES):
        raise ValueError(
            "load_pretrained: PyTorch pickle checkpoints are not read (unpickling can run "
            f"arbitrary code). Received: path={path!r}. Convert it to safetensors once, where "
            f"torch is installed: {_RECIPE}"
        )
    if not path.endswith(".safetensors"):
        raise ValueError(
            "load_pretrained: `path` must name a .safetensors file holding a PyTorch "
            f"state_dict. Received: path={path!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"load_pretrained: no file at this path. Received: path={path!r}. Expected a "
            ".safetensors file holding a PyTorch state_dict."
        )
    state = mx.load(path)
    if not isinstance(state, dict):
        raise ValueError(f"load_pretrained: not a safetensors state dict. Received: path={path!r}")
    return state


def _listing(keys: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _mismatch_text(report: LoadReport) -> str:
    parts = []
    for label, keys in (
        ("Missing", report.missing),
        ("Unexpected", report.unexpected),
        ("Mismatched shape (file -> model)", report.mismatched),
    ):
        if keys:
            parts.append(f"{label} ({len(keys)}): {_listing(keys)}.")
    return " ".join(parts)
