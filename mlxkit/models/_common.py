"""Helpers shared by the model factories: strict weight loading, input checks, initialisers.

Private to `mlxkit.models`; nothing here is re-exported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mlxkit._validation import check_int

import mlx.core as mx
import mlx.nn as nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

_WEIGHT_SUFFIXES = (".safetensors", ".npz")


def load_weights(
    model: ModuleT, weights: str | os.PathLike[str] | None, *, factory: str
) -> ModuleT:
    """Loads `weights` into `model` strictly (every key, every shape) and returns the model.

    `weights=None` returns the model untouched, freshly initialised. The loading itself is
    `mlxkit.load_weights`, so a mismatch raises its `CheckpointError` listing every missing,
    unexpected and wrongly shaped key.
    """
    if weights is None:
        return model
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"{factory}: `weights` must be a path to a .safetensors or .npz file, or None. "
            f"Received: weights={weights!r}"
        )
    path = os.fspath(weights)
    if not path.endswith(_WEIGHT_SUFFIXES):
        raise ValueError(
            f"{factory}: `weights` must name a .safetensors or .npz file (as written by "
            f"`model.save_weights`). Received: weights={path!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{factory}: no weights file at this path. Received: weights={path!r}. "
            "Expected an existing .safetensors or .npz file written by `model.save_weights`."
        )
    from mlxkit.checkpoint import CheckpointError
    from mlxkit.checkpoint import load_weights as load_strictly  # the one weight loader

    try:
        load_strictly(model, path)
    except CheckpointError as error:
        # Say which factory the file was given to, so the mismatch is actionable.
        raise CheckpointError(
            f"{factory}: the file does not match this architecture. Received: weights={path!r}. "
            f"{error}\nBuild the model with the same arguments it was saved with."
        ) from error
    return model


def check_positive_int(value: Any, name: str, factory: str) -> int:
    """Returns `value` if it is a positive `int` (not a bool), else raises a `ValueError`."""
    return check_int(value, name, owner=factory)


def check_probability(value: Any, name: str, factory: str) -> float:
    """Returns `value` as a float if it lies in [0, 1), else raises a `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"{factory}: `{name}` must be a number in [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def check_images(
    x: mx.array,
    model: str,
    *,
    channels: int,
    multiple: int = 1,
    size: tuple[int, int] | None = None,
) -> None:
    """Checks an NHWC image batch before any layer sees it.

    Args:
        x: the input batch.
        model: the model's name, for the message.
        channels: the channel count the first layer expects.
        multiple: height and width must be positive multiples of this (the network's total
            downsampling, so every skip or upsample lines up exactly).
        size: when given, the exact `(height, width)` the model requires.
    """
    if x.ndim != 4:
        raise ValueError(
            f"{model} expects an NHWC batch of shape (batch, height, width, {channels}). "
            f"Received: x.shape={tuple(x.shape)}"
        )
    _, height, width, got = x.shape
    if got != channels:
        raise ValueError(
            f"{model} expects {channels} input channel(s) in the last axis (NHWC layout). "
            f"Received: x.shape={tuple(x.shape)}"
        )
    if size is not None and (height, width) != size:
        raise ValueError(
            f"{model} expects images of height x width {size[0]}x{size[1]}. "
            f"Received: x.shape={tuple(x.shape)}"
        )
    if height % multiple or width % multiple or height < multiple or width < multiple:
        raise ValueError(
            f"{model} needs height and width to be positive multiples of {multiple}. "
            f"Received: x.shape={tuple(x.shape)}. Resize, crop or pad the images to fit."
        )


def apply(layers: nn.Module | Sequence[Any], x: mx.array) -> mx.array:
    """Runs `x` through a module or through a (possibly nested) list of modules in order.

    Plain lists (rather than `nn.Sequential`) keep parameter names identical to the
    reference PyTorch definitions (`features.0.1.weight`, not `features.layers.0.layers.1...`),
    so converted checkpoints need only a layout transpose.
    """
    if isinstance(layers, nn.Module):
        return layers(x)
    for layer in layers:
        x = apply(layer, x)
    return x


def hard_sigmoid(x: mx.array) -> mx.array:
    """PyTorch's hard sigmoid, `relu6(x + 3) / 6`, from plain min/max ops."""
    return mx.minimum(mx.maximum(x + 3, 0), 6) / 6


class GlobalAvgPool(nn.Module):
    """Average over height and width keeping the axes: (B, H, W, C) -> (B, 1, 1, C)."""

    def __call__(self, x: mx.array) -> mx.array:
        return x.mean(axis=(1, 2), keepdims=True)


def init_weights(
    model: nn.Module,
    kinds: tuple[type[nn.Module], ...],
    weight_init: Callable[[mx.array], mx.array],
    *,
    zero_bias: bool = True,
) -> None:
    """Re-initialises the `weight` (and zeroes the `bias`) of every submodule of the given kinds."""
    for _, module in model.named_modules():
        if isinstance(module, kinds):
            module.weight = weight_init(module.weight)
            if zero_bias and "bias" in module:
                module.bias = mx.zeros_like(module.bias)


def kaiming_normal_fan_out(weight: mx.array) -> mx.array:
    """`torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")` for MLX layouts.

    MLX stores conv weights as (out, kh, kw, in), so fan_out = out * kh * kw as in PyTorch.
    """
    return nn.init.he_normal()(weight, "fan_out", math.sqrt(2.0))


def glorot_uniform(weight: mx.array) -> mx.array:
    """Glorot (Xavier) uniform, the Flux and original-GCN default."""
    return nn.init.glorot_uniform()(weight, 1.0)


def normal(std: float) -> Callable[[mx.array], mx.array]:
    """A zero-mean normal initialiser with standard deviation `std`."""

    def init(weight: mx.array) -> mx.array:
        return std * mx.random.normal(weight.shape, dtype=weight.dtype)

    return init
