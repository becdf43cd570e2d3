"""Convolution layers that train faster on the CPU: drop-in `mlx.nn` twins and `accelerate`.

MLX's CPU backend computes input-dilated convolutions slowly: the forward pass of a strided
transposed convolution and the input gradient of a strided convolution (which is a transposed
convolution) run 10-70x slower than a stride-1 convolution of the same size. Both are a stride-1
convolution over a zero-inserted tensor, and that is how the layers here compute them in training
mode on the CPU:

- `Conv1d` / `Conv2d` with a stride > 1 keep MLX's forward (which is fast) and give it a custom
  VJP whose input gradient is the zero-inserted output gradient convolved at stride 1 with the
  flipped, channel-swapped kernel; the weight gradient is MLX's own.
- `ConvTranspose1d` / `ConvTranspose2d` with a stride > 1 zero-insert the input and convolve at
  stride 1 with the flipped kernel; the gradients of that formulation are fast as they come.

Everywhere else they run MLX's own ops: at stride 1, on a GPU, where the stride-1 convolution
would produce fewer than 8 channels (MLX's CPU kernel is slow there too: a transposed conv to one
channel, the input gradient of an RGB stem), and in eval mode. Eval mode is included because the
exporters put models in it: `mx.export_function` cannot serialize a custom VJP, and the Core ML
exporter lowers MLX's own convolutions to `conv` / `conv_transpose`. The layers subclass the
`mlx.nn` ones, so parameters, state-dict keys, `isinstance` checks and checkpoints are shared;
`accelerate(model)` switches a model's `mlx.nn` convolutions over.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import cast

import mlx.core as mx
import mlx.nn as nn

__all__ = [
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "accelerate",
    "conv_transpose",
]

_Ints = tuple[int, ...]


def _per_axis(value: int | Sequence[int], spatial: int) -> _Ints:
    return (value,) * spatial if isinstance(value, int) else tuple(value)


# MLX's stride-1 CPU convolution is slow when it produces only a few channels: there the
# reformulation loses (a 64 -> 1 transposed conv, the input gradient of a 3 -> 64 stem conv in
# benchmarks/bench_conv.py), so fewer channels than this keep MLX's own op.
_MIN_CHANNELS = 8


def _fast_path_applies(layer: nn.Module, stride: _Ints, produced_channels: int) -> bool:
    """Whether `layer` should run the stride-1 formulation: training, strided, on the CPU.

    `produced_channels` is the channel count (per group) of the stride-1 convolution it would
    run. Only the CPU was measured faster (benchmarks/bench_conv.py); GPUs keep MLX's op.
    """
    return (
        layer.training
        and any(s > 1 for s in stride)
        and produced_channels >= _MIN_CHANNELS
        and mx.default_device() == mx.cpu
    )


def _zero_insert(x: mx.array, stride: _Ints) -> mx.array:
    """Puts `stride - 1` zeros between neighbouring positions of each spatial axis of `x`."""
    sizes = [(n - 1) * s + 1 for n, s in zip(x.shape[1:-1], stride)]
    dilated = mx.zeros((x.shape[0], *sizes, x.shape[-1]), dtype=x.dtype)
    every = (slice(None), *(slice(None, None, s) for s in stride))
    dilated[every] = x
    return dilated


def _stride_one_conv(
    x: mx.array,
    weight: mx.array,
    pad_lo: Sequence[int],
    pad_hi: Sequence[int],
    dilation: _Ints,
    groups: int,
) -> mx.array:
    """Stride-1 convolution with the flipped kernel; negative padding crops `x`."""
    crop = tuple(
        slice(max(-lo, 0), n - max(-hi, 0)) for n, lo, hi in zip(x.shape[1:-1], pad_lo, pad_hi)
    )
    inside = (slice(None), *crop)
    x = x[inside]
    return mx.conv_general(
        x,
        weight,
        padding=([max(p, 0) for p in pad_lo], [max(p, 0) for p in pad_hi]),
        kernel_dilation=list(dilation),
        groups=groups,
        flip=True,
    )


def conv_transpose(
    x: mx.array,
    weight: mx.array,
    *,
    stride: _Ints,
    padding: _Ints,
    dilation: _Ints,
    output_padding: _Ints,
    groups: int = 1,
) -> mx.array:
    """`mx.conv_transpose{1,2,3}d` as a stride-1 convolution of the zero-inserted input.

    Fast on the CPU for any stride, and so are its gradients. Equal to MLX's op to float32
    rounding; padding beyond the kernel's span `dilation * (kernel - 1)` is computed correctly
    here, where MLX 0.32's op returns a wrongly sized output.

    Args:
        x: Input `(N, *spatial, C_in)`.
        weight: `(C_out, *kernel, C_in / groups)`, the layout of `mx.conv_transpose2d`.
        stride: The stride per spatial axis.
        padding: The padding per spatial axis.
        dilation: The kernel dilation per spatial axis.
        output_padding: Extra size added at the end of each spatial axis.
        groups: The number of groups.

    Returns:
        The output `(N, *spatial_out, C_out)`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import conv_transpose
        >>> x, w = mx.ones((1, 3, 3, 2)), mx.ones((4, 2, 2, 2))
        >>> ones = dict(dilation=(1, 1), output_padding=(0, 0))
        >>> conv_transpose(x, w, stride=(2, 2), padding=(0, 0), **ones).shape
        (1, 6, 6, 4)
    """
    kernel = weight.shape[1:-1]
    span = [d * (k - 1) for k, d in zip(kernel, dilation)]
    pad_lo = [s - p for s, p in zip(span, padding)]
    pad_hi = [s - p + o for s, p, o in zip(span, padding, output_padding)]
    return _stride_one_conv(_zero_insert(x, stride), weight, pad_lo, pad_hi, dilation, groups)


def _conv_input_gradient(
    cotangent: mx.array,
    weight: mx.array,
    input_sizes: Sequence[int],
    stride: _Ints,
    padding: _Ints,
    dilation: _Ints,
    groups: int,
) -> mx.array:
    """The gradient of `conv_general(x, weight, stride, ...)` with respect to `x`."""
    c_out, *kernel, c_in_group = weight.shape
    # (C_out, *K, C_in/g) -> (C_in, *K, C_out/g), group by group.
    swapped = weight.reshape(groups, c_out // groups, *kernel, c_in_group)
    last = swapped.ndim - 1
    swapped = swapped.transpose(0, last, *range(2, last), 1)
    swapped = swapped.reshape(groups * c_in_group, *kernel, c_out // groups)
    dilated = _zero_insert(cotangent, stride)
    pad_lo = [d * (k - 1) - p for k, d, p in zip(kernel, dilation, padding)]
    pad_hi = [n + p - m for n, p, m in zip(input_sizes, padding, dilated.shape[1:-1])]
    return _stride_one_conv(dilated, swapped, pad_lo, pad_hi, dilation, groups)


@functools.lru_cache(maxsize=256)
def _strided_conv(
    stride: _Ints, padding: _Ints, dilation: _Ints, groups: int
) -> Callable[[mx.array, mx.array], mx.array]:
    """`mx.conv_general` with these settings, its input gradient computed at stride 1."""

    def forward(x: mx.array, weight: mx.array) -> mx.array:
        return mx.conv_general(
            x,
            weight,
            stride=list(stride),
            padding=list(padding),
            kernel_dilation=list(dilation),
            groups=groups,
        )

    conv = mx.custom_function(forward)

    @conv.vjp
    def backward(
        primals: tuple[mx.array, mx.array], cotangent: mx.array, output: mx.array
    ) -> tuple[mx.array, mx.array]:
        x, weight = primals
        dx = _conv_input_gradient(
            cotangent, weight, x.shape[1:-1], stride, padding, dilation, groups
        )
        _, (dweight,) = mx.vjp(lambda w: forward(x, w), [weight], [cotangent])
        return dx, dweight

    return cast(Callable[[mx.array, mx.array], mx.array], conv)


def _call_conv(
    layer: nn.Conv1d | nn.Conv2d, x: mx.array, native: Callable[[mx.array], mx.array]
) -> mx.array:
    """The forward pass of `Conv1d` / `Conv2d`: `native` unless the fast path applies."""
    spatial = layer.weight.ndim - 2
    stride = _per_axis(layer.stride, spatial)
    # The input gradient is a convolution producing the layer's input channels.
    if not _fast_path_applies(layer, stride, layer.weight.shape[-1]):
        return native(x)
    conv = _strided_conv(
        stride,
        _per_axis(layer.padding, spatial),
        _per_axis(layer.dilation, spatial),
        layer.groups,
    )
    y = conv(x, layer.weight)
    return y + layer.bias if "bias" in layer else y


def _call_conv_transpose(
    layer: nn.ConvTranspose1d | nn.ConvTranspose2d,
    x: mx.array,
    native: Callable[[mx.array], mx.array],
) -> mx.array:
    """The forward pass of `ConvTranspose1d` / `ConvTranspose2d`."""
    spatial = layer.weight.ndim - 2
    stride = _per_axis(layer.stride, spatial)
    padding = _per_axis(layer.padding, spatial)
    dilation = _per_axis(layer.dilation, spatial)
    spans = [d * (k - 1) for k, d in zip(layer.weight.shape[1:-1], dilation)]
    # MLX 0.32's own op gives a wrongly sized output when the padding exceeds the kernel's span;
    # staying with it there keeps the twins interchangeable.
    fast = _fast_path_applies(layer, stride, layer.weight.shape[0])
    if not fast or any(p > s for p, s in zip(padding, spans)):
        return native(x)
    y = conv_transpose(
        x,
        layer.weight,
        stride=stride,
        padding=padding,
        dilation=dilation,
        output_padding=_per_axis(layer.output_padding, spatial),
    )
    return y + layer.bias if "bias" in layer else y


class Conv1d(nn.Conv1d):
    """`mlx.nn.Conv1d` whose strided input gradient is fast on the CPU.

    Same arguments, parameters and checkpoint keys as `mlx.nn.Conv1d` (see the module docstring
    for when the fast formulation is used).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import Conv1d
        >>> Conv1d(3, 8, kernel_size=3, stride=2, padding=1)(mx.zeros((2, 16, 3))).shape
        (2, 8, 8)
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _call_conv(self, x, super().__call__)


class Conv2d(nn.Conv2d):
    """`mlx.nn.Conv2d` whose strided input gradient is fast on the CPU.

    Same arguments, parameters and checkpoint keys as `mlx.nn.Conv2d`. In training mode on the
    CPU, with a stride > 1, the forward pass is MLX's and the input gradient is a stride-1
    convolution of the zero-inserted output gradient (see the module docstring).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import Conv2d
        >>> Conv2d(3, 8, kernel_size=3, stride=2, padding=1)(mx.zeros((2, 16, 16, 3))).shape
        (2, 8, 8, 8)
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _call_conv(self, x, super().__call__)


class ConvTranspose1d(nn.ConvTranspose1d):
    """`mlx.nn.ConvTranspose1d` computed as a stride-1 convolution when strided, on the CPU.

    Same arguments, parameters and checkpoint keys as `mlx.nn.ConvTranspose1d`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import ConvTranspose1d
        >>> ConvTranspose1d(4, 2, kernel_size=4, stride=2, padding=1)(mx.zeros((1, 8, 4))).shape
        (1, 16, 2)
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _call_conv_transpose(self, x, super().__call__)


class ConvTranspose2d(nn.ConvTranspose2d):
    """`mlx.nn.ConvTranspose2d` computed as a stride-1 convolution when strided, on the CPU.

    Same arguments, parameters and checkpoint keys as `mlx.nn.ConvTranspose2d`. In training mode
    on the CPU, with a stride > 1, the input is zero-inserted and convolved at stride 1 with the
    flipped kernel (see the module docstring).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import ConvTranspose2d
        >>> layer = ConvTranspose2d(8, 4, kernel_size=4, stride=2, padding=1)
        >>> layer(mx.zeros((1, 7, 7, 8))).shape
        (1, 14, 14, 4)
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _call_conv_transpose(self, x, super().__call__)


_ACCELERATED: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: Conv1d,
    nn.Conv2d: Conv2d,
    nn.ConvTranspose1d: ConvTranspose1d,
    nn.ConvTranspose2d: ConvTranspose2d,
}


def accelerate(model: nn.Module) -> nn.Module:
    """Switches every `mlx.nn` convolution in `model` to its `mlxkit.nn` twin, in place.

    Instances of exactly `mlx.nn.Conv1d`, `Conv2d`, `ConvTranspose1d` and `ConvTranspose2d`
    become the `mlxkit.nn` classes of the same name; subclasses of them (which may define their
    own `__call__`) are left alone. The twins add no state, so each layer stays the same object,
    wherever the model holds it, with the same weights; checkpoints load either way.

    Args:
        model: Any `mlx.nn.Module`.

    Returns:
        `model` itself, for chaining.

    Example:
        >>> import mlx.nn as nn
        >>> import mlxkit.nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        >>> type(mlxkit.nn.accelerate(model).layers[0]).__module__
        'mlxkit.nn'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            "accelerate: `model` must be an mlx.nn.Module. "
            f"Received: model={model!r} (type {type(model).__name__})."
        )
    for _, module in model.named_modules():
        twin = _ACCELERATED.get(type(module))
        if twin is not None:
            # The twins are stateless subclasses, so changing the class is the whole switch.
            module.__class__ = twin
    return model
