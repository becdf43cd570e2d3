"""NumPy semantics of the MLX primitives that traced graphs contain.

The exporter uses these to fold constant subgraphs (index arithmetic, BatchNorm statistics) and to
check, by evaluating a subgraph on a random probe, that a fused Core ML op computes the same thing
as the primitives it replaces. Arguments follow the order `mx.export_function` reports them in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# np.vectorize(math.erf) is slow but exact; erf only appears in folded constants and probes.
_erf = np.vectorize(math.erf, otypes=[np.float64])

# MLX enums, as the exporter callback reports them.
REDUCE_TYPES = {0: "and", 1: "or", 2: "sum", 3: "prod", 4: "min", 5: "max"}
ARG_REDUCE_TYPES = {0: "argmin", 1: "argmax"}
LOG_BASES = {0: 2.0, 1: 10.0, 2: math.e}
BITWISE_OPS = {0: np.logical_and, 1: np.logical_or, 2: np.logical_xor}


def _sqrt(x: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    root = np.sqrt(x)
    return 1.0 / root if args and args[0] else root


def _log(x: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    base = LOG_BASES[args[0]] if args else math.e
    return np.log(x) / math.log(base) if base != math.e else np.log(x)


def _round(x: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    return np.round(x)


UNARY: dict[str, Callable[[np.ndarray, Sequence[Any]], np.ndarray]] = {
    "Abs": lambda x, a: np.abs(x),
    "Negative": lambda x, a: -x,
    "Exp": lambda x, a: np.exp(x),
    "Expm1": lambda x, a: np.expm1(x),
    "Log": _log,
    "Log1p": lambda x, a: np.log1p(x),
    "Sqrt": _sqrt,
    "Rsqrt": lambda x, a: 1.0 / np.sqrt(x),
    "Square": lambda x, a: x * x,
    "Sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": lambda x, a: np.tanh(x),
    "Erf": lambda x, a: _erf(x).astype(x.dtype),
    "Sin": lambda x, a: np.sin(x),
    "Cos": lambda x, a: np.cos(x),
    "Tan": lambda x, a: np.tan(x),
    "ArcTan": lambda x, a: np.arctan(x),
    "ArcSin": lambda x, a: np.arcsin(x),
    "ArcCos": lambda x, a: np.arccos(x),
    "Sinh": lambda x, a: np.sinh(x),
    "Cosh": lambda x, a: np.cosh(x),
    "Floor": lambda x, a: np.floor(x),
    "Ceil": lambda x, a: np.ceil(x),
    "Round": _round,
    "Sign": lambda x, a: np.sign(x),
    "LogicalNot": lambda x, a: np.logical_not(x),
    "StopGradient": lambda x, a: x,
    "Copy": lambda x, a: x,
    "Full": lambda x, a: x,
}


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return np.floor_divide(a, b)
    return a / b


BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Subtract": np.subtract,
    "Multiply": np.multiply,
    "Divide": _divide,
    "Maximum": np.maximum,
    "Minimum": np.minimum,
    "Power": np.power,
    "LogAddExp": np.logaddexp,
    "FloorDivide": np.floor_divide,
    "Remainder": np.remainder,
    "Greater": np.greater,
    "GreaterEqual": np.greater_equal,
    "Less": np.less,
    "LessEqual": np.less_equal,
    "Equal": np.equal,
    "NotEqual": np.not_equal,
    "LogicalAnd": np.logical_and,
    "LogicalOr": np.logical_or,
}


def gather(
    source: np.ndarray,
    indices: Sequence[np.ndarray],
    axes: Sequence[int],
    slice_sizes: Sequence[int],
) -> np.ndarray:
    """MLX `Gather`: output shape is `broadcast(indices).shape + slice_sizes`."""
    index_shape = np.broadcast_shapes(*[np.shape(i) for i in indices]) if indices else ()
    rank, lead = source.ndim, len(index_shape)
    grids = []
    for axis in range(rank):
        offsets = np.arange(slice_sizes[axis]).reshape(
            (1,) * lead + tuple(-1 if j == axis else 1 for j in range(rank))
        )
        if axis in axes:
            index = np.broadcast_to(indices[list(axes).index(axis)], index_shape).astype(np.int64)
            index = np.where(index < 0, index + source.shape[axis], index)
            grids.append(index.reshape(index_shape + (1,) * rank) + offsets)
        else:
            grids.append(offsets)
    return source[tuple(grids)]


def as_strided(
    x: np.ndarray, shape: Sequence[int], strides: Sequence[int], offset: int
) -> np.ndarray:
    """MLX `AsStrided` over the row-major layout of `x`."""
    return x.reshape(-1)[strided_indices(shape, strides, offset)]


def strided_indices(shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    """Flat element indices that an `as_strided` view with these strides reads."""
    index = np.full(tuple(shape), offset, dtype=np.int64)
    for axis, (size, stride) in enumerate(zip(shape, strides)):
        view = [1] * len(shape)
        view[axis] = size
        index = index + (np.arange(size, dtype=np.int64) * stride).reshape(view)
    return index


def convolution(
    x: np.ndarray,
    weight: np.ndarray,
    strides: Sequence[int],
    padding_lo: Sequence[int],
    padding_hi: Sequence[int],
    kernel_dilation: Sequence[int],
    input_dilation: Sequence[int],
    groups: int,
    flip: bool,
) -> np.ndarray:
    """MLX `Convolution` on channels-last data: x `(N, *S, C_in)`, weight `(C_out, *K, C_in/g)`."""
    spatial = x.ndim - 2
    if flip:
        weight = np.flip(weight, axis=tuple(range(1, 1 + spatial)))
    if any(d > 1 for d in input_dilation):
        sizes = [(s - 1) * d + 1 for s, d in zip(x.shape[1:-1], input_dilation)]
        dilated = np.zeros((x.shape[0], *sizes, x.shape[-1]), dtype=x.dtype)
        every_other = (slice(None), *(slice(None, None, d) for d in input_dilation))
        dilated[every_other] = x
        x = dilated
    pads = [(max(lo, 0), max(hi, 0)) for lo, hi in zip(padding_lo, padding_hi)]
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    # Negative padding crops.
    crop = tuple(
        slice(-min(lo, 0), x.shape[i + 1] + min(hi, 0))
        for i, (lo, hi) in enumerate(zip(padding_lo, padding_hi))
    )
    inside = (slice(None), *crop)
    x = x[inside]
    kernel = weight.shape[1:-1]
    span = [(k - 1) * d + 1 for k, d in zip(kernel, kernel_dilation)]
    out_spatial = [(s - e) // st + 1 for s, e, st in zip(x.shape[1:-1], span, strides)]
    c_out, c_in_group = weight.shape[0], weight.shape[-1]
    grouped_weight = weight.reshape(groups, c_out // groups, *kernel, c_in_group)
    out = np.zeros((x.shape[0], *out_spatial, groups, c_out // groups), dtype=np.result_type(x))
    for position in itertools.product(*[range(k) for k in kernel]):
        window = tuple(
            slice(p * d, p * d + st * (o - 1) + 1, st)
            for p, d, st, o in zip(position, kernel_dilation, strides, out_spatial)
        )
        strided = (slice(None), *window)
        patch = x[strided]
        patch = patch.reshape(*patch.shape[:-1], groups, c_in_group)
        tap_index: tuple[Any, ...] = (slice(None), slice(None), *position)
        taps = grouped_weight[tap_index]
        out += np.einsum("...gc,goc->...go", patch, taps)
    return out.reshape(x.shape[0], *out_spatial, c_out)


def _reduce(x: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    kind, axes = REDUCE_TYPES[args[0]], tuple(args[1])
    fns: dict[str, Callable[..., np.ndarray]] = {
        "and": np.all,
        "or": np.any,
        "sum": np.sum,
        "prod": np.prod,
        "min": np.min,
        "max": np.max,
    }
    return fns[kind](x, axis=axes, keepdims=True)


def _arg_reduce(x: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    fn = np.argmin if ARG_REDUCE_TYPES[args[0]] == "argmin" else np.argmax
    return fn(x, axis=args[1], keepdims=True)


def _pad(x: np.ndarray, value: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    axes, low, high = args[0], args[1], args[2]
    widths = [(0, 0)] * x.ndim
    for axis, lo, hi in zip(axes, low, high):
        widths[axis] = (lo, hi)
    return np.pad(x, widths, constant_values=np.asarray(value).reshape(()).item())


def _slice(x: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    index = []
    for start, stop, step in zip(args[0], args[1], args[2]):
        index.append(slice(start, stop if stop >= 0 else None, step))
    return x[tuple(index)]


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / np.sum(shifted, axis=-1, keepdims=True)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = np.max(x, axis=-1, keepdims=True)
    return peak + np.log(np.sum(np.exp(x - peak), axis=-1, keepdims=True))


# Primitives whose inputs may stay compact (broadcastable, same rank) during evaluation.
ELEMENTWISE = set(UNARY) | set(BINARY) | {"Select", "BitwiseBinary", "AsType"}

SUPPORTED = ELEMENTWISE | {
    "Broadcast",
    "Reshape",
    "Transpose",
    "Squeeze",
    "ExpandDims",
    "Flatten",
    "Unflatten",
    "Slice",
    "Concatenate",
    "Split",
    "Pad",
    "Gather",
    "AsStrided",
    "Arange",
    "Reduce",
    "ArgReduce",
    "LogSumExp",
    "Softmax",
    "Matmul",
    "AddMM",
    "Convolution",
}


def evaluate(
    op: str,
    args: Sequence[Any],
    inputs: Sequence[np.ndarray],
    out_shapes: Sequence[tuple[int, ...]],
    out_dtypes: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Evaluates one MLX primitive in NumPy.

    Elementwise primitives accept compact inputs (same rank, size-1 where broadcast) and return a
    compact result; everything else expects full-shape inputs. With `out_dtypes` the results are
    cast to MLX's output dtypes; without, they keep NumPy's (used for float64 probes).

    Example:
        >>> import numpy as np
        >>> from mlxkit.export._primitives import evaluate
        >>> evaluate("Add", [], [np.ones((2, 1)), np.ones((1, 3))], [(2, 3)])[0].shape
        (2, 3)
    """
    # Arange is the only primitive without inputs; it never reads `x`.
    x: np.ndarray = inputs[0] if inputs else np.zeros(())
    results: list[np.ndarray]
    if op in UNARY:
        results = [UNARY[op](x, args)]
    elif op in BINARY:
        results = [BINARY[op](x, inputs[1])]
    elif op == "Select":
        results = [np.where(inputs[0], inputs[1], inputs[2])]
    elif op == "BitwiseBinary":
        results = [BITWISE_OPS[args[0]](x, inputs[1])]
    elif op == "AsType":
        target = np.dtype(args[0])
        if np.issubdtype(target, np.integer) and np.issubdtype(x.dtype, np.floating):
            x = np.trunc(x)
        results = [x.astype(target)]
    elif op == "Broadcast":
        # Stays compact: the caller's shapes table knows the broadcast shape.
        rank = len(args[0])
        results = [np.reshape(x, (1,) * (rank - x.ndim) + tuple(x.shape))]
    elif op in ("Reshape", "Flatten", "Unflatten"):
        results = [np.reshape(x, tuple(out_shapes[0]))]
    elif op == "Transpose":
        results = [np.transpose(x, args[0])]
    elif op == "Squeeze":
        results = [np.squeeze(x, axis=tuple(args[0]))]
    elif op == "ExpandDims":
        results = [np.expand_dims(x, axis=tuple(args[0]))]
    elif op == "Slice":
        results = [_slice(x, args)]
    elif op == "Concatenate":
        results = [np.concatenate(inputs, axis=args[0])]
    elif op == "Split":
        results = np.split(x, list(args[0]), axis=args[1])
    elif op == "Pad":
        results = [_pad(x, inputs[1], args)]
    elif op == "Gather":
        results = [gather(x, inputs[1:], args[0], args[1])]
    elif op == "AsStrided":
        results = [as_strided(x, args[0], args[1], args[2])]
    elif op == "Arange":
        start, _, step = args
        results = [start + step * np.arange(out_shapes[0][0], dtype=np.float64)]
    elif op == "Reduce":
        results = [_reduce(x, args)]
    elif op == "ArgReduce":
        results = [_arg_reduce(x, args)]
    elif op == "LogSumExp":
        results = [_logsumexp(x)]
    elif op == "Softmax":
        results = [_softmax(x)]
    elif op == "Matmul":
        results = [np.matmul(x, inputs[1])]
    elif op == "AddMM":
        alpha, beta = args
        results = [alpha * np.matmul(x, inputs[1]) + beta * inputs[2]]
    elif op == "Convolution":
        results = [convolution(x, inputs[1], *args)]
    else:
        raise KeyError(f"No NumPy rule for MLX primitive {op!r}.")
    if out_dtypes is not None:
        results = [
            np.asarray(r).astype(np.dtype(d), copy=False) for r, d in zip(results, out_dtypes)
        ]
    return [np.asarray(r) for r in results]
