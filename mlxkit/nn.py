"""Convolution layers that train faster on the CPU: drop-in `mlx.nn` twins and `accelerate`.

MLX's CPU backend computes input-dilated convolutions slowly: the forward pass of a strided
transposed convolution and the input gradient of a strided convolution (which is a transposed
convolution) run 10-100x slower than a stride-1 convolution of the same size. The layers here
compute every such transposed convolution as one matrix product and a sum of shifted slices
(`conv_transpose`: each input position times each kernel tap, added where that tap lands), which
does only the multiplications that reach the output:

- `Conv1d` / `Conv2d` with a stride > 1 keep MLX's forward and weight gradient (both fast) and
  get a custom VJP whose input gradient is that transposed convolution of the output gradient.
- `ConvTranspose1d` / `ConvTranspose2d` with a stride > 1 compute their forward pass that way;
  their custom VJP takes the input gradient as MLX's strided convolution of the output gradient
  (the adjoint of the forward pass) and the weight gradient as MLX's weight gradient of that same
  convolution, both fast.
- Unpadded one-group 1x1 convolutions (`Conv1d` / `Conv2d`, any stride) are the matrix product
  they are: MLX's CPU op copies the input into a patch matrix first, 3-6x slower.

Everywhere else they run MLX's own ops: other stride-1 convolutions (no formulation in MLX ops
measured faster), stride-1 transposed convolutions, on a GPU, and in eval mode.
Eval mode is included because the exporters put models in it: `mx.export_function` cannot
serialize a custom VJP, and the Core ML exporter lowers MLX's own convolutions to `conv` /
`conv_transpose`. The layers subclass the `mlx.nn` ones, so parameters, state-dict keys,
`isinstance` checks and checkpoints are shared; `accelerate(model)` switches a model's `mlx.nn`
convolutions over.
"""

from __future__ import annotations

import functools
import itertools
import math
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


def _fast_path_applies(layer: nn.Module) -> bool:
    """Whether `layer` may run the formulations here: in training mode, on the CPU.

    Only the CPU was measured faster (benchmarks/bench_conv.py); GPUs keep MLX's ops.
    """
    return layer.training and mx.default_device() == mx.cpu


def _pointwise_conv(x: mx.array, weight: mx.array, stride: _Ints) -> mx.array:
    """An unpadded one-group 1x1 convolution as the matrix product it is.

    MLX's CPU op first copies the input into a patch matrix, which for a 1x1 kernel is the
    input itself: the product alone was 1.8x (96 -> 64 channels) to 24x (64 -> 1) faster
    forward, 1.2x to 2.1x forward + backward (benchmarks/bench_conv.py).
    """
    if any(s > 1 for s in stride):
        every = (slice(None), *(slice(None, None, s) for s in stride))
        x = x[every]
    *outer, channels = x.shape
    y = x.reshape(-1, channels) @ weight.reshape(weight.shape[0], channels).T
    return y.reshape(*outer, weight.shape[0])


def _swap_channels(weight: mx.array, groups: int) -> mx.array:
    """`(A, *K, B / groups)` -> `(B, *K, A / groups)`, group by group (its own inverse).

    Turns a transposed convolution's kernel into the kernel of the convolution it is the
    adjoint of, and back.
    """
    a, *kernel, b_group = weight.shape
    grouped = weight.reshape(groups, a // groups, *kernel, b_group)
    last = grouped.ndim - 1
    grouped = grouped.transpose(0, last, *range(2, last), 1)
    return grouped.reshape(groups * b_group, *kernel, a // groups)


def _taps(x: mx.array, weight: mx.array) -> mx.array:
    """Each position of `x` times each kernel tap: `(N, *L, C_x)` -> `(N, *L, taps, C_y)`.

    `weight` is `(groups, C_x / groups, taps, C_y / groups)`; one matrix product per group.
    """
    n, *lengths, channels = x.shape
    groups, _, taps, produced = weight.shape
    if groups == 1:
        products = x.reshape(-1, channels) @ weight.reshape(channels, taps * produced)
        return products.reshape(n, *lengths, taps, produced)
    rows = x.reshape(-1, groups, channels // groups).swapaxes(0, 1)
    products = rows @ weight.reshape(groups, channels // groups, taps * produced)
    products = products.reshape(groups, -1, taps, produced).transpose(1, 2, 0, 3)
    return products.reshape(n, *lengths, taps, groups * produced)


def _col2im(
    products: mx.array,
    kernel: _Ints,
    stride: _Ints,
    padding: _Ints,
    dilation: _Ints,
    sizes: _Ints,
) -> mx.array:
    """Adds each tap's products where it lands: `y[s * o + d * k - p] += products[o, k]`.

    `products` is `(N, *L, taps, C)` from `_taps`; returns `(N, *sizes, C)`. Output positions
    are split by their remainder modulo the stride (a phase): a tap lands on one phase only, so
    each phase is a sum of shifted, unstrided slices, and the phases are interleaved at the end.
    """
    n, *lengths, _, channels = products.shape
    # Each phase covers quotients `first .. first + count - 1` of padded positions s * q + r.
    first = [p // s for p, s in zip(padding, stride)]
    counts = [(p + size - 1) // s - f + 1 for p, size, s, f in zip(padding, sizes, stride, first)]
    phases: dict[_Ints, mx.array] = {}
    for index, tap in enumerate(itertools.product(*map(range, kernel))):
        offsets = [d * k for d, k in zip(dilation, tap)]
        phase = tuple(o % s for o, s in zip(offsets, stride))
        # Input position o lands on quotient o + offset // s: row o + lo of the phase.
        lo = [o // s - f for o, s, f in zip(offsets, stride, first)]
        hi = [c - m - a for c, m, a in zip(counts, lengths, lo)]
        keep = [slice(max(-a, 0), m - max(-b, 0)) for a, b, m in zip(lo, hi, lengths)]
        if any(k.start >= k.stop for k in keep):
            continue  # this tap lands only outside the output
        inside = (slice(None), *keep, index)
        part = products[inside]
        part = mx.pad(part, [(0, 0), *((max(a, 0), max(b, 0)) for a, b in zip(lo, hi)), (0, 0)])
        phases[phase] = phases[phase] + part if phase in phases else part
    zeros = mx.zeros((n, *counts, channels), dtype=products.dtype)
    stacked = mx.stack(
        [phases.get(phase, zeros) for phase in itertools.product(*map(range, stride))]
    )
    # (prod(s), N, *counts, C) -> (N, counts_0 * s_0, ..., C): interleave the phases.
    spatial = len(kernel)
    stacked = stacked.reshape(*stride, n, *counts, channels)
    order = [spatial, *itertools.chain(*((spatial + 1 + i, i) for i in range(spatial)))]
    woven = stacked.transpose(*order, stacked.ndim - 1)
    woven = woven.reshape(n, *(c * s for c, s in zip(counts, stride)), channels)
    start = [p - s * f for p, s, f in zip(padding, stride, first)]
    window = (slice(None), *(slice(b, b + size) for b, size in zip(start, sizes)))
    return woven[window]


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
    """`mx.conv_transpose{1,2,3}d` as one matrix product and a sum of shifted slices.

    Fast on the CPU for any stride, dilation and group count (MLX's op computes strided ones
    as an input-dilated convolution, its slowest CPU path), and differentiable as it stands.
    Equal to MLX's op to float32 rounding; padding beyond the kernel's span
    `dilation * (kernel - 1)` is computed correctly here, where MLX 0.32's op returns a wrongly
    sized output.

    Args:
        x: Input `(N, *spatial, C_in)`.
        weight: `(C_out, *kernel, C_in / groups)`, the layout of `mx.conv_transpose2d`.
        stride: The stride per spatial axis.
        padding: The padding per spatial axis.
        dilation: The kernel dilation per spatial axis.
        output_padding: Extra size added at the end of each spatial axis.
        groups: The number of groups.

    Returns:
        The output `(N, *spatial_out, C_out)`, each spatial size
        `(L - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1 + output_padding`.

    Raises:
        ValueError: If that size is below 1 on some axis.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import conv_transpose
        >>> x, w = mx.ones((1, 3, 3, 2)), mx.ones((4, 2, 2, 2))
        >>> ones = dict(dilation=(1, 1), output_padding=(0, 0))
        >>> conv_transpose(x, w, stride=(2, 2), padding=(0, 0), **ones).shape
        (1, 6, 6, 4)
    """
    c_out, *kernel, c_in_group = weight.shape
    settings = zip(x.shape[1:-1], kernel, stride, padding, dilation, output_padding)
    sizes = tuple((n - 1) * s - 2 * p + d * (k - 1) + 1 + o for n, k, s, p, d, o in settings)
    if min(sizes) < 1:
        raise ValueError(
            "conv_transpose: the settings give an empty output. Received: "
            f"input {x.shape}, kernel {tuple(kernel)}, stride={stride}, padding={padding}, "
            f"dilation={dilation}, output_padding={output_padding}: output sizes {sizes}; "
            "expected every size >= 1."
        )
    # (C_out, *K, C_in/g) -> (g, C_in/g, taps, C_out/g): input channels -> taps x output channels.
    taps = math.prod(kernel)
    matrix = weight.reshape(groups, c_out // groups, taps, c_in_group).transpose(0, 3, 2, 1)
    return _col2im(_taps(x, matrix), tuple(kernel), stride, padding, dilation, sizes)


def _conv_input_gradient(
    cotangent: mx.array,
    weight: mx.array,
    input_sizes: _Ints,
    stride: _Ints,
    padding: _Ints,
    dilation: _Ints,
    groups: int,
) -> mx.array:
    """The gradient of `conv_general(x, weight, stride, ...)` with respect to `x`."""
    c_out, *kernel, c_in_group = weight.shape
    # Each output position's gradient goes back through every tap: C_out -> taps x C_in.
    matrix = weight.reshape(groups, c_out // groups, math.prod(kernel), c_in_group)
    return _col2im(_taps(cotangent, matrix), tuple(kernel), stride, padding, dilation, input_sizes)


def _mlx_conv(
    x: mx.array, weight: mx.array, stride: _Ints, padding: _Ints, dilation: _Ints, groups: int
) -> mx.array:
    """`mx.conv_general`: fast on the CPU with one group and no dilation, weight gradient too."""
    return mx.conv_general(
        x,
        weight,
        stride=list(stride),
        padding=list(padding),
        kernel_dilation=list(dilation),
        groups=groups,
    )


@functools.lru_cache(maxsize=256)
def _strided_conv(
    stride: _Ints, padding: _Ints, dilation: _Ints, groups: int
) -> Callable[[mx.array, mx.array], mx.array]:
    """`mx.conv_general` with these settings, its input gradient a `_col2im` sum."""

    def forward(x: mx.array, weight: mx.array) -> mx.array:
        return _mlx_conv(x, weight, stride, padding, dilation, groups)

    conv = mx.custom_function(forward)

    @conv.vjp
    def backward(
        primals: tuple[mx.array, mx.array], cotangent: mx.array, output: mx.array
    ) -> tuple[mx.array, mx.array]:
        x, weight = primals
        dx = _conv_input_gradient(
            cotangent, weight, tuple(x.shape[1:-1]), stride, padding, dilation, groups
        )
        _, (dweight,) = mx.vjp(lambda w: forward(x, w), [weight], [cotangent])
        return dx, dweight

    return cast(Callable[[mx.array, mx.array], mx.array], conv)


@functools.lru_cache(maxsize=256)
def _strided_conv_transpose(
    stride: _Ints, padding: _Ints, dilation: _Ints, output_padding: _Ints, groups: int
) -> Callable[[mx.array, mx.array], mx.array]:
    """`conv_transpose` with these settings, differentiated through its adjoint convolution."""

    def forward(x: mx.array, weight: mx.array) -> mx.array:
        return conv_transpose(
            x,
            weight,
            stride=stride,
            padding=padding,
            dilation=dilation,
            output_padding=output_padding,
            groups=groups,
        )

    conv = mx.custom_function(forward)

    @conv.vjp
    def backward(
        primals: tuple[mx.array, mx.array], cotangent: mx.array, output: mx.array
    ) -> tuple[mx.array, mx.array]:
        x, weight = primals
        # The forward pass is the adjoint of a strided convolution with the channel-swapped
        # kernel. That convolution of the cotangent is the input gradient, and its weight
        # gradient against `x` is the weight gradient; MLX computes both fast. It has one row
        # too many per `stride` of output padding: rows no input position produced.
        sizes = x.shape[1:-1]

        def adjoint(kernel: mx.array) -> mx.array:
            y = _mlx_conv(cotangent, kernel, stride, padding, dilation, groups)
            if y.shape[1:-1] == sizes:
                return y
            produced = (slice(None), *(slice(0, n) for n in sizes))
            return y[produced]

        swapped = _swap_channels(weight, groups)
        dx = adjoint(swapped)
        _, (dswapped,) = mx.vjp(adjoint, [swapped], [x])
        return dx, _swap_channels(dswapped, groups)

    return cast(Callable[[mx.array, mx.array], mx.array], conv)


def _call_conv(
    layer: nn.Conv1d | nn.Conv2d, x: mx.array, native: Callable[[mx.array], mx.array]
) -> mx.array:
    """The forward pass of `Conv1d` / `Conv2d`: `native` unless a fast path applies."""
    spatial = layer.weight.ndim - 2
    stride = _per_axis(layer.stride, spatial)
    padding = _per_axis(layer.padding, spatial)
    dilation = _per_axis(layer.dilation, spatial)
    kernel = layer.weight.shape[1:-1]
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    sizes = x.shape[1:-1] if x.ndim == spatial + 2 else ()
    if any(n + 2 * p < span for n, p, span in zip(sizes, padding, spans)):
        # MLX 0.32 raises here at stride 1 but returns arbitrary values when strided.
        raise ValueError(
            f"{type(layer).__name__}: the padded input is smaller than the kernel. Received: "
            f"input shape {x.shape}, padding={padding}, kernel {tuple(kernel)}, "
            f"dilation={dilation}; expected each spatial size + 2 * padding >= {spans}."
        )
    if not _fast_path_applies(layer):
        return native(x)
    if kernel == (1,) * spatial and layer.groups == 1 and not any(padding):
        y = _pointwise_conv(x, layer.weight, stride)
    elif any(s > 1 for s in stride):
        conv = _strided_conv(stride, padding, dilation, layer.groups)
        y = conv(x, layer.weight)
    else:
        return native(x)  # MLX's stride-1 convolution is as fast as any formulation here
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
    strided = any(s > 1 for s in stride)
    fits = all(p <= s for p, s in zip(padding, spans))
    if not (_fast_path_applies(layer) and strided and fits):
        return native(x)
    # `mlx.nn`'s transposed convolutions have no groups.
    conv = _strided_conv_transpose(
        stride, padding, dilation, _per_axis(layer.output_padding, spatial), 1
    )
    y = conv(x, layer.weight)
    return y + layer.bias if "bias" in layer else y


class Conv1d(nn.Conv1d):
    """`mlx.nn.Conv1d` that trains faster on the CPU when strided or 1x1.

    Same arguments, parameters and checkpoint keys as `mlx.nn.Conv1d` (see `Conv2d` and the
    module docstring for when the fast formulations are used).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import Conv1d
        >>> Conv1d(3, 8, kernel_size=3, stride=2, padding=1)(mx.zeros((2, 16, 3))).shape
        (2, 8, 8)
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _call_conv(self, x, super().__call__)


class Conv2d(nn.Conv2d):
    """`mlx.nn.Conv2d` that trains faster on the CPU when strided or 1x1.

    Same arguments, parameters and checkpoint keys as `mlx.nn.Conv2d`. In training mode on the
    CPU, with a stride > 1, the forward pass is MLX's and the input gradient is a transposed
    convolution computed by `conv_transpose`'s method; an unpadded one-group 1x1 convolution is
    a matrix product (see the module docstring).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import Conv2d
        >>> Conv2d(3, 8, kernel_size=3, stride=2, padding=1)(mx.zeros((2, 16, 16, 3))).shape
        (2, 8, 8, 8)
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _call_conv(self, x, super().__call__)


class ConvTranspose1d(nn.ConvTranspose1d):
    """`mlx.nn.ConvTranspose1d` that trains faster on the CPU when strided.

    Same arguments, parameters and checkpoint keys as `mlx.nn.ConvTranspose1d` (see
    `ConvTranspose2d`).

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.nn import ConvTranspose1d
        >>> ConvTranspose1d(4, 2, kernel_size=4, stride=2, padding=1)(mx.zeros((1, 8, 4))).shape
        (1, 16, 2)
    """

    def __call__(self, x: mx.array) -> mx.array:
        return _call_conv_transpose(self, x, super().__call__)


class ConvTranspose2d(nn.ConvTranspose2d):
    """`mlx.nn.ConvTranspose2d` that trains faster on the CPU when strided.

    Same arguments, parameters and checkpoint keys as `mlx.nn.ConvTranspose2d`. In training mode
    on the CPU, with a stride > 1, the forward pass is `conv_transpose` and the gradients are
    MLX's strided convolution of the output gradient (the adjoint) and MLX's weight gradient of
    it (see the module docstring).

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
