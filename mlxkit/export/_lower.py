"""Lowering: turns an optimized `Graph` into a Core ML MIL program with coremltools' builder.

`OPS` is the op table: it maps every primitive (MLX's, and the fused nodes `_optimize` creates)
to a `Lowering`, which both answers "can this node be lowered?" (`unsupported`) and builds its MIL
ops (`Lowerer.lower`). Supporting a new primitive is one entry there.

Layouts. MLX keeps channels last (NHWC); Core ML's convolutions, pools and resizes want channels
first (NCHW). Rather than wrapping every conv in two transposes, each lowered tensor carries a
permutation `perm` (physical axis i holds logical axis `perm[i]`). Convolutions produce NCHW
(`perm=(0, 3, 1, 2)`), elementwise ops and reductions follow their inputs' layout, an MLX
`Transpose` only relabels axes, and a real `transpose` op is emitted only where a consumer needs
another layout: a reshape, a matmul, or a graph output, which is returned in the layout the caller
asked for.

Broadcasts stay lazy: an MLX `Broadcast` keeps its small tensor (Core ML's elementwise ops
broadcast themselves) and is only materialised with `tile` where a consumer needs the full shape.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from mlxkit.export import _primitives as prim
from mlxkit.export import _quantized as quantized
from mlxkit.export._trace import Graph, Node

import numpy as np

_BITWISE = {0: "logical_and", 1: "logical_or", 2: "logical_xor"}
_REDUCE = {"sum": "reduce_sum", "prod": "reduce_prod", "min": "reduce_min", "max": "reduce_max"}
# Tensor dtypes Core ML can hold. Integers are computed as int32, 64-bit ones included: MLX makes
# those for index arithmetic (`h[mx.arange(B), mx.argmax(ids, -1)]`), whose values fit.
_DTYPES_OK = {
    "float32",
    "float16",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
}
# MLX's Scan::ReduceType and SliceUpdate's plain (non-accumulating) update.
SCAN_TYPES = {0: "max", 1: "min", 2: "sum", 3: "prod"}
_SLICE_UPDATE_SET = 4
# Core ML's largest tensor rank.
MAX_RANK = 5


# --------------------------------------------------------------------------------------------


@dataclass
class Value:
    """A lowered tensor: a MIL var in physical layout `perm`, of logical shape `shape`.

    With `lazy`, the var may have size 1 where `shape` is larger (an unmaterialised broadcast).
    """

    var: Any
    perm: tuple[int, ...]
    shape: tuple[int, ...]
    lazy: bool = False


def static_size(size: Any) -> int | None:
    """A size as an int, or None when it is symbolic (a flexible shape's size)."""
    try:
        return int(size)
    except TypeError:
        return None


def broadcast_shapes(*shapes: Sequence[Any]) -> tuple[Any, ...]:
    """NumPy's broadcast of shapes, for sizes that may be symbolic (flexible shapes)."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for sizes in zip(*padded):
        big = [s for s in sizes if static_size(s) != 1]
        known = {static_size(s) for s in big} - {None}
        if len(known) > 1:
            raise ValueError(f"Shapes {shapes} do not broadcast.")
        # A static size wins; distinct symbols are the same flexible size by construction.
        out.append(known.pop() if known else (big[0] if big else 1))
    return tuple(out)


def tile_reps(target: Sequence[Any], current: Sequence[Any]) -> list[Any]:
    """Repetitions that tile `current` up to `target`; symbolic sizes (one flexible size per
    program, whatever coremltools names it) repeat once over themselves."""
    reps: list[Any] = []
    for t, c in zip(target, current):
        st, sc = static_size(t), static_size(c)
        if st is None and sc is None:
            reps.append(1)
        elif st is None:
            reps.append(t if sc == 1 else None)
        else:
            reps.append(st // sc if sc else 1)
    if any(r is None for r in reps):
        raise ValueError(f"Cannot tile shape {tuple(current)} to {tuple(target)}.")
    return reps


def _identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def channels_first(rank: int) -> tuple[int, ...]:
    """The permutation that moves the last axis to position 1 (NHWC -> NCHW)."""
    if rank < 3:
        return _identity(rank)
    return (0, rank - 1, *range(1, rank - 1))


def _inverse(perm: Sequence[int]) -> tuple[int, ...]:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def _mil_dtype(name: str) -> str:
    if name in ("float32", "float16"):
        return "fp32"
    if name == "bool":
        return "bool"
    return "int32"


def _numpy_const(value: np.ndarray, dtype: str) -> np.ndarray:
    kind = _mil_dtype(dtype)
    if kind == "fp32":
        return np.asarray(value, dtype=np.float32)
    if kind == "bool":
        return np.asarray(value, dtype=bool)
    return np.asarray(value).astype(np.int32)


class Lowerer:
    """Builds MIL ops for each graph node inside an active `mil.Function` context."""

    def __init__(self, graph: Graph, mb: Any, *, track_layout: bool = True):
        self.graph = graph
        self.mb = mb
        self.env: dict[str, Value] = {}
        # Off: every channels-first result is transposed straight back (one transpose pair per
        # conv), the naive lowering the export benchmark measures layout tracking against.
        self.track_layout = track_layout
        # Flexible shapes (`_flexible`): symbolic size -> a MIL var holding it at run time.
        self.symbol_sizes: dict[Any, Any] = {}

    def shape_argument(self, sizes: Sequence[Any], reshape: bool = False) -> Any:
        """`sizes` as a MIL shape argument: a list of ints, or a var built at run time when
        some sizes are symbolic (flexible shapes). A reshape with one symbolic size uses -1,
        which keeps the size's symbol for the ops after it."""
        static = [static_size(s) for s in sizes]
        if all(s is not None for s in static):
            return static
        if reshape and sum(s is None for s in static) == 1:
            return [-1 if s is None else s for s in static]
        parts = [
            self.symbol_sizes[s] if v is None else np.array([v], dtype=np.int32)
            for s, v in zip(sizes, static)
        ]
        return self.mb.concat(values=parts, axis=0)

    # -- access -------------------------------------------------------------------------------

    def const(
        self, name: str, perm: Sequence[int], rank: int | None = None, full: bool = False
    ) -> np.ndarray:
        """A constant as NumPy, rank-expanded to `rank`, transposed into layout `perm`."""
        value = self.graph.full_constant(name) if full else self.graph.constants[name]
        rank = len(perm) if rank is None else rank
        value = np.reshape(value, (1,) * (rank - value.ndim) + value.shape)
        return _numpy_const(np.transpose(value, perm), self.graph.dtypes[name])

    def materialize(self, value: Value) -> Value:
        """Tiles a lazy broadcast to its full shape."""
        if not value.lazy:
            return value
        physical = [value.shape[p] for p in value.perm]
        current = list(value.var.shape)
        reps = tile_reps(physical, current)
        if any(r != 1 for r in reps):
            var = self.mb.tile(x=value.var, reps=self.shape_argument(reps))
        else:
            var = value.var
        return Value(var, value.perm, value.shape)

    def to_perm(self, value: Value, perm: Sequence[int]) -> Value:
        """Transposes a value into layout `perm` (no op when it is already there)."""
        perm = tuple(perm)
        if value.perm == perm:
            return value
        # physical_new[i] = logical perm[i] = physical_old[inv_old[perm[i]]]
        inverse = _inverse(value.perm)
        order = [inverse[p] for p in perm]
        var = self.mb.transpose(x=value.var, perm=order)
        return Value(var, perm, value.shape, value.lazy)

    def var(self, name: str, perm: Sequence[int] | None = None, full: bool = True) -> Any:
        """The MIL var (or NumPy constant) for tensor `name` in layout `perm`."""
        if name in self.graph.constants:
            shape = self.graph.shapes[name]
            return self.const(name, perm if perm is not None else _identity(len(shape)), full=full)
        value = self.env[name]
        if full:
            value = self.materialize(value)
        return self.to_perm(value, perm if perm is not None else _identity(len(value.shape))).var

    def value(self, name: str) -> Value:
        """The lowered value of a non-constant tensor, or a constant as a full materialised var."""
        if name in self.graph.constants:
            shape = self.graph.shapes[name]
            data = self.const(name, _identity(len(shape)), full=True)
            return Value(self.mb.const(val=data), _identity(len(shape)), shape)
        return self.env[name]

    def set(self, name: str, var: Any, perm: Sequence[int], lazy: bool = False) -> None:
        value = Value(var, tuple(perm), self.graph.shapes[name], lazy)
        if not self.track_layout and not lazy:
            value = self.to_perm(value, _identity(len(value.shape)))
        self.env[name] = value

    # -- dispatch -----------------------------------------------------------------------------

    def lower(self, node: Node) -> None:
        """Builds the MIL ops for one node with its entry in the op table `OPS`."""
        OPS[node.op].build(self, node)

    def _passthrough(self, node: Node) -> None:
        source = node.inputs[0]
        if source in self.graph.constants:
            self.env[node.outputs[0]] = self.value(source)
            return
        value = self.env[source]
        shape = self.graph.shapes[node.outputs[0]]
        self.env[node.outputs[0]] = Value(value.var, value.perm, shape, value.lazy)

    # -- elementwise --------------------------------------------------------------------------

    def _layout_for(self, names: Sequence[str], shape: tuple[int, ...]) -> tuple[int, ...]:
        """Picks the layout for an elementwise op: that of a full-size non-constant input."""
        best: tuple[int, ...] | None = None
        for name in names:
            if name in self.graph.constants:
                continue
            value = self.env[name]
            if len(value.shape) != len(shape):
                continue
            if best is None or (not value.lazy and value.perm != _identity(len(shape))):
                best = value.perm
        return best if best is not None else _identity(len(shape))

    def _operands(self, node: Node) -> tuple[list[Any], tuple[int, ...], bool]:
        shape = self.graph.shapes[node.outputs[0]]
        perm = self._layout_for(node.inputs, shape)
        operands = []
        all_lazy = True
        for name in node.inputs:
            if name in self.graph.constants:
                operands.append(self.const(name, perm, len(shape)))
                continue
            value = self.env[name]
            if len(value.shape) < len(shape):
                value = self._expand_front(value, len(shape))
            all_lazy = all_lazy and value.lazy
            operands.append(self.to_perm(value, perm).var)
        return operands, perm, all_lazy

    def _expand_front(self, value: Value, rank: int) -> Value:
        extra = rank - len(value.shape)
        var = self.mb.expand_dims(x=value.var, axes=list(range(extra)))
        perm = tuple(range(extra)) + tuple(p + extra for p in value.perm)
        return Value(var, perm, (1,) * extra + value.shape, value.lazy)

    def _unary(self, node: Node, mil_op: str) -> None:
        x = self.value(node.inputs[0])
        var = getattr(self.mb, mil_op)(x=x.var)
        self.set(node.outputs[0], var, x.perm, x.lazy)

    def _binary(self, node: Node, mil_op: str) -> None:
        operands, perm, lazy = self._operands(node)
        dtypes = [self.graph.dtypes[i] for i in node.inputs]
        if mil_op == "real_div" and all(_mil_dtype(d) == "int32" for d in dtypes):
            mil_op = "floor_div"
        var = getattr(self.mb, mil_op)(x=operands[0], y=operands[1])
        self.set(node.outputs[0], var, perm, lazy)

    def _bitwise(self, node: Node) -> None:
        operands, perm, lazy = self._operands(node)
        var = getattr(self.mb, _BITWISE[node.args[0]])(x=operands[0], y=operands[1])
        self.set(node.outputs[0], var, perm, lazy)

    def _select(self, node: Node) -> None:
        operands, perm, lazy = self._operands(node)
        # MIL's `select` takes its output shape from the two branches alone, so a condition
        # larger than both (`mx.where(x > 0, 1.0, 0.0)`) must broadcast a branch up front.
        shapes = [tuple(np.shape(v) if isinstance(v, np.ndarray) else v.shape) for v in operands]
        full = broadcast_shapes(*shapes)
        if broadcast_shapes(shapes[1], shapes[2]) != full:
            operands[1] = self._broadcast_to(operands[1], full)
        var = self.mb.select(cond=operands[0], a=operands[1], b=operands[2])
        self.set(node.outputs[0], var, perm, lazy)

    def _broadcast_to(self, operand: Any, shape: tuple[int, ...]) -> Any:
        """A constant or var broadcast to the physical `shape` (a NumPy copy or a `tile`)."""
        if isinstance(operand, np.ndarray):
            value = np.reshape(operand, (1,) * (len(shape) - operand.ndim) + operand.shape)
            if all(static_size(s) is not None for s in shape):
                return np.ascontiguousarray(np.broadcast_to(value, shape))
            operand = self.mb.const(val=value)
        current = list(operand.shape)
        if len(current) < len(shape):
            operand = self.mb.expand_dims(x=operand, axes=list(range(len(shape) - len(current))))
            current = [1] * (len(shape) - len(current)) + current
        return self.mb.tile(x=operand, reps=self.shape_argument(tile_reps(shape, current)))

    def _logaddexp(self, node: Node) -> None:
        operands, perm, lazy = self._operands(node)
        mb = self.mb
        for position, name in enumerate(node.inputs):
            if name in self.graph.constants and np.all(self.graph.constants[name] == 0):
                # softplus(x) = log(exp(x) + exp(0)): one op instead of four.
                var = mb.softplus(x=operands[1 - position])
                break
        else:
            high = mb.maximum(x=operands[0], y=operands[1])
            low = mb.minimum(x=operands[0], y=operands[1])
            var = mb.add(x=high, y=mb.softplus(x=mb.sub(x=low, y=high)))
        self.set(node.outputs[0], var, perm, lazy)

    def _sqrt(self, node: Node) -> None:
        self._unary(node, "rsqrt" if node.args and node.args[0] else "sqrt")

    def _negative(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        minus_one = np.array(
            -1,
            dtype=np.int32
            if _mil_dtype(self.graph.dtypes[node.inputs[0]]) == "int32"
            else np.float32,
        )
        self.set(node.outputs[0], self.mb.mul(x=x.var, y=minus_one), x.perm, x.lazy)

    def _log(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        var = self.mb.log(x=x.var)
        base = prim.LOG_BASES[node.args[0]] if node.args else math.e
        if base != math.e:
            var = self.mb.mul(x=var, y=np.float32(1.0 / math.log(base)))
        self.set(node.outputs[0], var, x.perm, x.lazy)

    def _log1p(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        var = self.mb.log(x=self.mb.add(x=x.var, y=np.float32(1.0)))
        self.set(node.outputs[0], var, x.perm, x.lazy)

    def _expm1(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        var = self.mb.sub(x=self.mb.exp(x=x.var), y=np.float32(1.0))
        self.set(node.outputs[0], var, x.perm, x.lazy)

    def _astype(self, node: Node) -> None:
        source, target = self.graph.dtypes[node.inputs[0]], self.graph.dtypes[node.outputs[0]]
        x = self.value(node.inputs[0])
        if source == "float32" and target == "float16":
            # Rounding to float16 is part of what the model computes (a float16 KV cache): keep
            # it, even in a float32 program, by a round trip through float16.
            var = self.mb.cast(x=self.mb.cast(x=x.var, dtype="fp16"), dtype="fp32")
            self.set(node.outputs[0], var, x.perm, x.lazy)
            return
        if _mil_dtype(source) == _mil_dtype(target):
            self.set(node.outputs[0], x.var, x.perm, x.lazy)
            return
        var = self.mb.cast(x=x.var, dtype=_mil_dtype(target))
        self.set(node.outputs[0], var, x.perm, x.lazy)

    # -- fused nodes --------------------------------------------------------------------------

    def _quantized_linear(self, node: Node) -> None:
        quantized.lower_linear(self, node)

    def _quantized_gather(self, node: Node) -> None:
        quantized.lower_gather(self, node)

    def _act(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        mb, kind, v = self.mb, node.args["kind"], x.var
        if kind in ("relu", "relu6", "sigmoid", "tanh", "silu", "softplus"):
            var = getattr(mb, kind)(x=v)
        elif kind.startswith("gelu_"):
            mode = {
                "exact": "EXACT",
                "tanh": "TANH_APPROXIMATION",
                "sigmoid": "SIGMOID_APPROXIMATION",
            }
            var = mb.gelu(x=v, mode=mode[kind[len("gelu_") :]])
        elif kind == "leaky_relu":
            var = mb.leaky_relu(x=v, alpha=np.float32(node.args["alpha"]))
        elif kind == "elu":
            var = mb.elu(x=v, alpha=np.float32(node.args["alpha"]))
        elif kind == "clip":
            var = mb.clip(
                x=v, alpha=np.float32(node.args["low"]), beta=np.float32(node.args["high"])
            )
        elif kind == "hard_sigmoid":
            var = mb.sigmoid_hard(x=v, alpha=np.float32(1 / 6), beta=np.float32(0.5))
        elif kind == "hard_swish":
            gate = mb.sigmoid_hard(x=v, alpha=np.float32(1 / 6), beta=np.float32(0.5))
            var = mb.mul(x=v, y=gate)
        elif kind == "mish":
            var = mb.mul(x=v, y=mb.tanh(x=mb.softplus(x=v)))
        else:
            raise AssertionError(f"unknown activation {kind}")
        self.set(node.outputs[0], var, x.perm, x.lazy)

    def _affine(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        rank = len(x.shape)
        scale = (
            np.transpose(np.reshape(node.args["scale"], (1,) * rank), x.perm)
            if np.ndim(node.args["scale"]) == 0
            else np.transpose(node.args["scale"], x.perm)
        )
        shift = np.transpose(node.args["shift"], x.perm)
        var = x.var
        if not np.all(scale == 1.0):
            var = self.mb.mul(x=var, y=scale.astype(np.float32))
        if not np.all(shift == 0.0):
            var = self.mb.add(x=var, y=shift.astype(np.float32))
        self.set(node.outputs[0], var, x.perm, x.lazy)

    def _layer_norm(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        rank = len(x.shape)
        logical_axes = node.args["axes"]
        physical = sorted(x.perm.index(a) for a in logical_axes)
        param_shape = [x.shape[x.perm[p]] for p in physical]
        kwargs: dict[str, Any] = {}
        for key, source in (("gamma", "gamma"), ("beta", "shift")):
            if source in node.args:
                full = np.broadcast_to(
                    node.args[source],
                    tuple(x.shape[a] if a in logical_axes else 1 for a in range(rank)),
                )
                kwargs[key] = np.transpose(full, x.perm).reshape(param_shape).astype(np.float32)
        var = self.mb.layer_norm(
            x=x.var, axes=physical, epsilon=np.float32(node.args["epsilon"]), **kwargs
        )
        self.set(node.outputs[0], var, x.perm)

    def _conv(self, node: Node) -> None:
        args = node.args
        rank = len(self.graph.shapes[node.inputs[0]])
        layout = channels_first(rank)
        x = self.var(node.inputs[0], layout)
        weight = np.asarray(args["weight"])  # (C_out, *K, C_in / groups), MLX layout
        bias = np.asarray(args["bias"], dtype=np.float32)
        spatial = rank - 2
        kernel = weight.shape[1:-1]
        groups = args["groups"]
        transposed = any(d > 1 for d in args["input_dilation"])
        flip_axes = tuple(range(1, 1 + spatial))
        if not transposed:
            if args["flip"]:
                weight = np.flip(weight, axis=flip_axes)
            pads = [p for lo, hi in zip(args["pad_lo"], args["pad_hi"]) for p in (lo, hi)]
            var = self.mb.conv(
                x=x,
                weight=np.moveaxis(weight, -1, 1).astype(np.float32),
                bias=bias,
                strides=list(args["strides"]),
                pad_type="custom",
                pad=pads,
                dilations=list(args["dilations"]),
                groups=groups,
            )
        else:
            # MLX: conv(dilate(x), flip(w)); Core ML: conv_transpose(x, W) with W laid out
            # (C_in, C_out / groups, *K) and the flip implied.
            if not args["flip"]:
                weight = np.flip(weight, axis=flip_axes)
            c_out, c_in_group = weight.shape[0], weight.shape[-1]
            grouped = weight.reshape(groups, c_out // groups, *kernel, c_in_group)
            grouped = np.moveaxis(grouped, -1, 1)  # (g, C_in/g, C_out/g, *K)
            mil_weight = grouped.reshape(groups * c_in_group, c_out // groups, *kernel)
            pads = []
            for k, d, lo, hi in zip(kernel, args["dilations"], args["pad_lo"], args["pad_hi"]):
                pads += [(k - 1) * d - lo, (k - 1) * d - hi]
            out_shape = self.graph.shapes[node.outputs[0]]
            var = self.mb.conv_transpose(
                x=x,
                weight=mil_weight.astype(np.float32),
                bias=bias,
                strides=list(args["input_dilation"]),
                pad_type="custom",
                pad=pads,
                dilations=list(args["dilations"]),
                groups=groups,
                output_shape=[out_shape[p] for p in layout],
            )
        self.set(node.outputs[0], var, layout)

    def _linear(self, node: Node) -> None:
        x = self.var(node.inputs[0])
        weight = np.asarray(node.args["weight"], dtype=np.float32)
        bias = np.asarray(node.args["bias"], dtype=np.float32)
        var = self.mb.linear(x=x, weight=weight, bias=bias)
        self.set(node.outputs[0], var, _identity(len(self.graph.shapes[node.outputs[0]])))

    def _matmul(self, node: Node) -> None:
        a, b = self.var(node.inputs[0]), self.var(node.inputs[1])
        var = self.mb.matmul(x=a, y=b)
        self.set(node.outputs[0], var, _identity(len(self.graph.shapes[node.outputs[0]])))

    def _addmm(self, node: Node) -> None:
        alpha, beta = node.args
        rank = len(self.graph.shapes[node.outputs[0]])
        a, b = self.var(node.inputs[0]), self.var(node.inputs[1])
        c = self.var(node.inputs[2], _identity(rank), full=False)
        product = self.mb.matmul(x=a, y=b)
        if alpha != 1.0:
            product = self.mb.mul(x=product, y=np.float32(alpha))
        if beta != 1.0:
            c = self.mb.mul(x=c, y=np.float32(beta))
        self.set(node.outputs[0], self.mb.add(x=product, y=c), _identity(rank))

    def _pool(self, node: Node) -> None:
        args = node.args
        rank = len(self.graph.shapes[node.inputs[0]])
        layout = channels_first(rank)
        x = self.var(node.inputs[0], layout)
        pads = [p for lo, hi in zip(args["pad_lo"], args["pad_hi"]) for p in (lo, hi)]
        common = {
            "x": x,
            "kernel_sizes": list(args["kernel"]),
            "strides": list(args["strides"]),
            "pad_type": "custom",
            "pad": pads,
        }
        if args["kind"] == "max":
            var = self.mb.max_pool(**common)
        else:
            var = self.mb.avg_pool(**common, exclude_padding_from_average=False)
            if args["kind"] == "sum":
                var = self.mb.mul(x=var, y=np.float32(math.prod(args["kernel"])))
        self.set(node.outputs[0], var, layout)

    def _upsample(self, node: Node) -> None:
        args = node.args
        layout = channels_first(4)
        x = self.var(node.inputs[0], layout)
        if args["kind"] == "nearest":
            var = self.mb.upsample_nearest_neighbor(
                x=x,
                scale_factor_height=np.int32(args["scale_h"]),
                scale_factor_width=np.int32(args["scale_w"]),
            )
        else:
            var = self.mb.upsample_bilinear(
                x=x,
                scale_factor_height=np.float32(args["scale_h"]),
                scale_factor_width=np.float32(args["scale_w"]),
                align_corners=bool(args["align_corners"]),
            )
        self.set(node.outputs[0], var, layout)

    def _reduce_mean(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        axes = [x.perm.index(a) for a in node.args["axes"]]
        var = self.mb.reduce_mean(x=x.var, axes=axes, keep_dims=True)
        self.set(node.outputs[0], var, x.perm)

    # -- reductions ---------------------------------------------------------------------------

    def _reduce(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        kind = prim.REDUCE_TYPES[node.args[0]]
        axes = [x.perm.index(a) for a in node.args[1]]
        if kind in ("and", "or"):
            as_int = self.mb.cast(x=x.var, dtype="int32")
            reduced = (self.mb.reduce_min if kind == "and" else self.mb.reduce_max)(
                x=as_int, axes=axes, keep_dims=True
            )
            var = self.mb.cast(x=reduced, dtype="bool")
        else:
            var = getattr(self.mb, _REDUCE[kind])(x=x.var, axes=axes, keep_dims=True)
        self.set(node.outputs[0], var, x.perm)

    def _scan(self, node: Node) -> None:
        """Cumulative sums with MIL's `cumsum`; products, maxima and minima by doubling: after
        step k every element holds the reduction of the 2**k elements ending at it."""
        x = self.materialize(self.value(node.inputs[0]))
        kind, axis, reverse, inclusive = node.args
        physical = x.perm.index(axis)
        mb = self.mb
        if SCAN_TYPES[kind] == "sum":
            var = mb.cumsum(x=x.var, axis=physical, exclusive=not inclusive, reverse=reverse)
            self.set(node.outputs[0], var, x.perm)
            return
        combine = {"prod": mb.mul, "max": mb.maximum, "min": mb.minimum}[SCAN_TYPES[kind]]
        identity = self._scan_identity(SCAN_TYPES[kind], self.graph.dtypes[node.inputs[0]])
        var = mb.reverse(x=x.var, axes=[physical]) if reverse else x.var
        size = x.shape[axis]
        shift = 1
        while shift < size:
            var = combine(x=var, y=self._shift(var, physical, shift, identity))
            shift *= 2
        if not inclusive:
            var = self._shift(var, physical, 1, identity)
        if reverse:
            var = mb.reverse(x=var, axes=[physical])
        self.set(node.outputs[0], var, x.perm)

    @staticmethod
    def _scan_identity(kind: str, dtype: str) -> Any:
        if _mil_dtype(dtype) == "int32":
            info = np.iinfo(np.int32)
            value = {"prod": 1, "max": info.min, "min": info.max}[kind]
            return np.int32(value)
        return np.float32({"prod": 1.0, "max": -np.inf, "min": np.inf}[kind])

    def _shift(self, var: Any, axis: int, shift: int, fill: Any) -> Any:
        """`var` moved `shift` places along `axis`, the first places filled with `fill`."""
        rank = len(var.shape)
        end = [int(s) for s in var.shape]
        end[axis] -= shift
        kept = self.mb.slice_by_index(x=var, begin=[0] * rank, end=end)
        pads = [0] * (2 * rank)
        pads[2 * axis] = shift
        return self.mb.pad(x=kept, pad=np.array(pads, np.int32), constant_val=fill)

    def _sort(self, node: Node) -> None:
        """Sort, ArgSort and (as a full sort, which is a valid partition) Partition/ArgPartition."""
        x = self.materialize(self.value(node.inputs[0]))
        axis = node.args[-1]
        physical = x.perm.index(axis)
        order = self.mb.argsort(x=x.var, axis=physical, ascending=True)
        if node.op in ("Sort", "Partition"):
            var = self.mb.gather_along_axis(x=x.var, indices=order, axis=physical)
        else:
            var = order
        self.set(node.outputs[0], var, x.perm)

    def _gather_axis(self, node: Node) -> None:
        """`take_along_axis`: source and indices broadcast to the output shape off the axis."""
        axis = node.args[0]
        out_shape = tuple(self.graph.shapes[node.outputs[0]])
        source_shape = tuple(
            self.graph.shapes[node.inputs[0]][a] if a == axis else out_shape[a]
            for a in range(len(out_shape))
        )
        source = self.var(node.inputs[0])
        if tuple(np.shape(source) if isinstance(source, np.ndarray) else source.shape) != (
            source_shape
        ):
            source = self._broadcast_to(source, source_shape)
        indices = self.var(node.inputs[1])
        if isinstance(indices, np.ndarray):
            indices = np.ascontiguousarray(np.broadcast_to(indices, out_shape)).astype(np.int32)
        else:
            if tuple(indices.shape) != out_shape:
                indices = self._broadcast_to(indices, out_shape)
            if _mil_dtype(self.graph.dtypes[node.inputs[1]]) != "int32":
                indices = self.mb.cast(x=indices, dtype="int32")
        var = self.mb.gather_along_axis(x=source, indices=indices, axis=axis)
        self.set(node.outputs[0], var, _identity(len(out_shape)))

    def _slice_update(self, node: Node) -> None:
        """`x[region] = update` (edge padding builds these): the update padded to full size and
        picked with a constant mask."""
        _, starts, stops, _ = node.args
        shape = tuple(self.graph.shapes[node.outputs[0]])
        source = self.var(node.inputs[0])
        if isinstance(source, np.ndarray):
            source = self.mb.const(val=source)
        widths = [(int(lo), int(size - hi)) for lo, hi, size in zip(starts, stops, shape)]
        region = tuple(slice(lo, hi) for lo, hi in zip(starts, stops))
        update = self.var(node.inputs[1])
        region_shape = tuple(int(hi - lo) for lo, hi in zip(starts, stops))
        if isinstance(update, np.ndarray):
            update = np.broadcast_to(update, region_shape)
            padded: Any = np.pad(update, widths)
        else:
            if tuple(update.shape) != region_shape:
                update = self._broadcast_to(update, region_shape)
            flat = np.array([w for pair in widths for w in pair], np.int32)
            padded = self.mb.pad(x=update, pad=flat)
        mask = np.zeros(shape, bool)
        mask[region] = True
        var = self.mb.select(cond=mask, a=padded, b=source)
        self.set(node.outputs[0], var, _identity(len(shape)))

    def _permute(self, node: Node) -> None:
        """A reshape + transpose + reshape whose middle tensor has rank > 5, done at rank <= 5."""
        shape, perm = merged_permutation(node.args["shape"], node.args["perm"])
        x = self.var(node.inputs[0])
        var = self.mb.transpose(x=self.mb.reshape(x=x, shape=list(shape)), perm=list(perm))
        out_shape = list(self.graph.shapes[node.outputs[0]])
        self.set(
            node.outputs[0], self.mb.reshape(x=var, shape=out_shape), _identity(len(out_shape))
        )

    def _argreduce(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        axis = x.perm.index(node.args[1])
        fn = self.mb.reduce_argmax if node.args[0] == 1 else self.mb.reduce_argmin
        self.set(node.outputs[0], fn(x=x.var, axis=axis, keep_dims=True), x.perm)

    def _logsumexp(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        axis = x.perm.index(len(x.shape) - 1)
        var = self.mb.reduce_log_sum_exp(x=x.var, axes=[axis], keep_dims=True)
        self.set(node.outputs[0], var, x.perm)

    def _softmax(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        axis = x.perm.index(len(x.shape) - 1)
        self.set(node.outputs[0], self.mb.softmax(x=x.var, axis=axis), x.perm)

    # -- shapes -------------------------------------------------------------------------------

    def _broadcast(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        rank = len(node.args[0])
        if len(x.shape) < rank:
            x = self._expand_front(x, rank)
        self.set(node.outputs[0], x.var, x.perm, lazy=True)

    def _transpose(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        inverse = _inverse(node.args[0])
        self.set(node.outputs[0], x.var, tuple(inverse[p] for p in x.perm), x.lazy)

    def _squeeze(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        axes = sorted(node.args[0])
        physical = [x.perm.index(a) for a in axes]
        perm = [p - sum(a < p for a in axes) for p in x.perm if p not in axes]
        if len(perm) == 0:
            var = self.mb.reshape(x=x.var, shape=[1])
            var = self.mb.squeeze(x=var)
        else:
            var = self.mb.squeeze(x=x.var, axes=physical)
        self.set(node.outputs[0], var, perm, x.lazy)

    def _expanddims(self, node: Node) -> None:
        x = self.value(node.inputs[0])
        out_rank = len(self.graph.shapes[node.outputs[0]])
        new_axes = sorted(a % out_rank for a in node.args[0])
        kept = [a for a in range(out_rank) if a not in new_axes]  # new index of old axis i
        if x.perm == _identity(len(x.shape)):
            var = self.mb.expand_dims(x=x.var, axes=new_axes)
            self.set(node.outputs[0], var, _identity(out_rank), x.lazy)
            return
        rank = len(x.shape)
        var = self.mb.expand_dims(x=x.var, axes=list(range(rank, out_rank)))
        perm = [kept[p] for p in x.perm] + new_axes
        self.set(node.outputs[0], var, perm, x.lazy)

    def _reshape(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        out_shape = self.graph.shapes[node.outputs[0]]
        if x.perm != _identity(len(x.shape)):
            in_big = [a for a in range(len(x.shape)) if x.shape[a] != 1]
            out_big = [a for a in range(len(out_shape)) if out_shape[a] != 1]
            if [x.shape[a] for a in in_big] == [out_shape[a] for a in out_big]:
                # Only size-1 axes come and go: keep the layout, relabel the big axes.
                mapping = dict(zip(in_big, out_big))
                perm = [mapping[p] for p in x.perm if p in mapping]
                perm += [a for a in range(len(out_shape)) if a not in out_big]
                physical = [out_shape[a] for a in perm]
                var = self.mb.reshape(x=x.var, shape=self.shape_argument(physical, reshape=True))
                self.set(node.outputs[0], var, perm)
                return
            x = self.to_perm(x, _identity(len(x.shape)))
        var = self.mb.reshape(x=x.var, shape=self.shape_argument(out_shape, reshape=True))
        self.set(node.outputs[0], var, _identity(len(out_shape)))

    def _slice(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        starts, stops, steps = node.args
        out_shape = self.graph.shapes[node.outputs[0]]
        begin, end, stride, end_mask = [], [], [], []
        for p in x.perm:
            begin.append(int(starts[p]))
            stride.append(int(steps[p]))
            # A slice whose size follows a flexible size runs to the end of the axis.
            open_end = (steps[p] < 0 and stops[p] < 0) or static_size(out_shape[p]) is None
            end.append(0 if open_end else int(stops[p]))
            end_mask.append(bool(open_end))
        var = self.mb.slice_by_index(
            x=x.var, begin=begin, end=end, stride=stride, end_mask=end_mask
        )
        self.set(node.outputs[0], var, x.perm)

    def _concatenate(self, node: Node) -> None:
        perm = self._layout_for(node.inputs, self.graph.shapes[node.outputs[0]])
        values = [self.var(name, perm) for name in node.inputs]
        var = self.mb.concat(values=values, axis=perm.index(node.args[0]))
        self.set(node.outputs[0], var, perm)

    def _split(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        axis = node.args[1]
        bounds = [0, *node.args[0], x.shape[axis]]
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
        parts = self.mb.split(x=x.var, split_sizes=sizes, axis=x.perm.index(axis))
        parts = parts if isinstance(parts, (list, tuple)) else [parts]
        for name, part in zip(node.outputs, parts):
            self.set(name, part, x.perm)

    def _pad(self, node: Node) -> None:
        x = self.materialize(self.value(node.inputs[0]))
        axes, low, high = node.args
        widths = {a: (lo, hi) for a, lo, hi in zip(axes, low, high)}
        pads = [p for a in x.perm for p in widths.get(a, (0, 0))]
        value = float(np.asarray(self.graph.constants[node.inputs[1]]).reshape(()))
        var = self.mb.pad(
            x=x.var,
            pad=np.array(pads, dtype=np.int32),
            mode="constant",
            constant_val=np.float32(value),
        )
        self.set(node.outputs[0], var, x.perm)

    def _gather_fused(self, node: Node) -> None:
        """`gather` node: Gather + Squeeze, output `indices.shape + source.shape[non-gathered]`."""
        source = node.inputs[0]
        rank = len(self.graph.shapes[source])
        axes = node.args["axes"]
        index_names = node.inputs[1:]
        x = self.var(source)
        if len(axes) == 1:
            axis = axes[0]
            indices = self.var(index_names[0])
            if isinstance(indices, np.ndarray):
                indices = indices.astype(np.int32)
            var = self.mb.gather(x=x, indices=indices, axis=axis)
            lead = len(self.graph.shapes[index_names[0]])
            perm = [lead + t for t in range(axis)] + list(range(lead))
            perm += [lead + t - 1 for t in range(axis + 1, rank)]
            self.set(node.outputs[0], var, perm)
            return
        rest = [a for a in range(rank) if a not in axes]
        if axes + rest != list(range(rank)):
            x = self.mb.transpose(x=x, perm=axes + rest)
        index_shape = np.broadcast_shapes(*[self.graph.shapes[n] for n in index_names])
        var = self.mb.gather_nd(x=x, indices=self._stacked_indices(index_names, index_shape))
        self.set(node.outputs[0], var, _identity(len(self.graph.shapes[node.outputs[0]])))

    def _gather(self, node: Node) -> None:
        source = node.inputs[0]
        shape = self.graph.shapes[source]
        rank = len(shape)
        axes = list(node.args[0])
        index_names = node.inputs[1:]
        x = self.var(source)
        if len(axes) == 1:
            axis = axes[0]
            indices = self.var(index_names[0])
            if isinstance(indices, np.ndarray):
                indices = indices.astype(np.int32)
            var = self.mb.gather(x=x, indices=indices, axis=axis)
            index_rank = len(self.graph.shapes[index_names[0]])
            var = self.mb.expand_dims(x=var, axes=[rank - 1 + index_rank])
            perm = [index_rank + t for t in range(axis)]
            perm += list(range(index_rank))
            perm += [index_rank + t for t in range(axis + 1, rank)]
            perm += [index_rank + axis]
            self.set(node.outputs[0], var, perm)
            return
        rest = [a for a in range(rank) if a not in axes]
        if axes + rest != list(range(rank)):
            x = self.mb.transpose(x=x, perm=axes + rest)
        index_shape = np.broadcast_shapes(*[self.graph.shapes[n] for n in index_names])
        var = self.mb.gather_nd(x=x, indices=self._stacked_indices(index_names, index_shape))
        lead = len(index_shape)
        var = self.mb.expand_dims(x=var, axes=list(range(lead + len(rest), lead + rank)))
        perm = list(range(lead)) + [lead + r for r in rest] + [lead + a for a in axes]
        self.set(node.outputs[0], var, perm)

    def _stacked_indices(self, names: Sequence[str], shape: tuple[int, ...]) -> Any:
        """Index tensors broadcast to `shape` and stacked on a new last axis, as int32: a NumPy
        constant when all are constants, else a MIL var (`h[mx.arange(B), argmax(ids)]`)."""
        if all(n in self.graph.constants for n in names):
            constants = [np.broadcast_to(self.graph.full_constant(n), shape) for n in names]
            return np.stack(constants, -1).astype(np.int32)
        columns = []
        for name in names:
            if name in self.graph.constants:
                column = np.broadcast_to(self.graph.full_constant(name), shape).astype(np.int32)
                columns.append(self.mb.const(val=np.ascontiguousarray(column[..., None])))
                continue
            value = self.materialize(self.value(name))
            if len(value.shape) < len(shape):
                value = self._expand_front(value, len(shape))
            var = self.to_perm(value, _identity(len(shape))).var
            if tuple(value.shape) != tuple(shape):
                var = self._broadcast_to(var, tuple(shape))
            if _mil_dtype(self.graph.dtypes[name]) != "int32":
                var = self.mb.cast(x=var, dtype="int32")
            columns.append(self.mb.expand_dims(x=var, axes=[-1]))
        return self.mb.concat(values=columns, axis=-1)

    def _asstrided(self, node: Node) -> None:
        shape, strides, offset = node.args
        x = self.var(node.inputs[0])
        flat = self.mb.reshape(x=x, shape=[-1])
        indices = prim.strided_indices(shape, strides, offset).astype(np.int32)
        self.set(
            node.outputs[0], self.mb.gather(x=flat, indices=indices, axis=0), _identity(len(shape))
        )


def output_var(
    lowerer: Lowerer, name: str, layout: Sequence[int], out_name: str, taken: set[int]
) -> Any:
    """The final var for graph output `name`, materialised, in `layout`, named `out_name`.

    The producing op's output is renamed when it is free to take the name; an `identity` op is
    added only for inputs, constants and tensors returned twice.
    """
    mb = lowerer.mb
    var = lowerer.var(name, layout)
    if lowerer.graph.dtypes[name] == "bool":
        return mb.cast(x=var, dtype="int32", name=out_name)
    if isinstance(var, np.ndarray) or var.op is None or id(var) in taken:
        var = mb.identity(x=var, name=out_name)
    else:
        var.name = out_name
    taken.add(id(var))
    return var


# --------------------------------------------------------------------------------------------
# The op table


@dataclass(frozen=True)
class Lowering:
    """How one primitive becomes MIL.

    Attributes:
        build: `build(lowerer, node)` emits the MIL ops for `node` and binds its outputs.
        mlx: The MLX functions that produce the primitive (for the generated docs table).
        mil: The MIL ops it becomes.
        check: `check(graph, node)` returns why this particular node cannot be lowered, or None.
    """

    build: Callable[[Lowerer, Node], None]
    mlx: str
    mil: str
    check: Callable[[Graph, Node], str | None] | None = None


def _conv_check(graph: Graph, node: Node) -> str | None:
    weight = node.args["weight"]
    kernel = weight.shape[1:-1]
    if len(kernel) not in (1, 2, 3):
        return f"{len(kernel)}-D convolution"
    if any(d > 1 for d in node.args["input_dilation"]):
        if any(s != 1 for s in node.args["strides"]):
            return "input dilation combined with strides"
        for k, d, lo, hi in zip(
            kernel, node.args["dilations"], node.args["pad_lo"], node.args["pad_hi"]
        ):
            if lo > (k - 1) * d or hi > (k - 1) * d:
                return "transposed, with more padding than the kernel spans"
    elif any(p < 0 for p in (*node.args["pad_lo"], *node.args["pad_hi"])):
        return "negative padding"
    return None


def _reduce_check(graph: Graph, node: Node) -> str | None:
    kind = prim.REDUCE_TYPES[node.args[0]]
    return None if kind in (*_REDUCE, "and", "or") else f"{kind} reduction"


def _gather_check(graph: Graph, node: Node) -> str | None:
    source = graph.shapes[node.inputs[0]]
    axes, sizes = node.args
    if any(sizes[a] != 1 for a in axes) or any(
        sizes[a] != source[a] for a in range(len(source)) if a not in axes
    ):
        return "partial slices"
    return None


def _bitwise_check(graph: Graph, node: Node) -> str | None:
    if node.args[0] not in _BITWISE or graph.dtypes[node.inputs[0]] != "bool":
        return "on integers"
    return None


def _split_check(graph: Graph, node: Node) -> str | None:
    return "of a scalar" if len(graph.shapes[node.inputs[0]]) == 0 else None


def merged_permutation(
    shape: Sequence[int], perm: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The same transpose on fewer axes: size-1 axes dropped, neighbours that stay neighbours
    merged. Shape `(1, 2, 2, 2, 2, 3)` with perm `(0, 1, 3, 2, 4, 5)` becomes shape
    `(2, 2, 2, 6)` with perm `(0, 2, 1, 3)`."""
    kept = [a for a in range(len(shape)) if shape[a] != 1]
    renumber = {a: i for i, a in enumerate(kept)}
    order = [renumber[a] for a in perm if a in renumber]
    sizes = [shape[a] for a in kept]
    groups: list[list[int]] = []
    for axis in order:
        if groups and groups[-1][-1] + 1 == axis:
            groups[-1].append(axis)
        else:
            groups.append([axis])
    by_input = sorted(range(len(groups)), key=lambda g: groups[g][0])
    merged_shape = tuple(math.prod(sizes[a] for a in groups[g]) for g in by_input)
    merged_perm = tuple(by_input.index(g) for g in range(len(groups)))
    return merged_shape, merged_perm


def _permute_check(graph: Graph, node: Node) -> str | None:
    shape, _ = merged_permutation(node.args["shape"], node.args["perm"])
    if len(shape) > MAX_RANK:
        return (
            f"a transpose of rank {len(shape)} that cannot be split into rank <= {MAX_RANK} steps"
        )
    return None


def _scan_check(graph: Graph, node: Node) -> str | None:
    return None if node.args[0] in SCAN_TYPES else "logcumsumexp"


def _slice_update_check(graph: Graph, node: Node) -> str | None:
    reduce_type, _, _, strides = node.args
    if reduce_type != _SLICE_UPDATE_SET:
        return "with an accumulating update (`.at[...].add` and the like)"
    if any(s != 1 for s in strides):
        return "with strides"
    return None


def _unary(mil_op: str, mlx: str) -> Lowering:
    return Lowering(partial(Lowerer._unary, mil_op=mil_op), mlx, mil_op)


def _binary(mil_op: str, mlx: str) -> Lowering:
    return Lowering(partial(Lowerer._binary, mil_op=mil_op), mlx, mil_op)


OPS: dict[str, Lowering] = {
    # Elementwise, unary.
    "Abs": _unary("abs", "mx.abs"),
    "Exp": _unary("exp", "mx.exp"),
    "Square": _unary("square", "mx.square"),
    "Sigmoid": _unary("sigmoid", "mx.sigmoid, nn.Sigmoid"),
    "Tanh": _unary("tanh", "mx.tanh, nn.Tanh"),
    "Erf": _unary("erf", "mx.erf"),
    "Sin": _unary("sin", "mx.sin"),
    "Cos": _unary("cos", "mx.cos"),
    "Tan": _unary("tan", "mx.tan"),
    "ArcTan": _unary("atan", "mx.arctan"),
    "Sinh": _unary("sinh", "mx.sinh"),
    "Cosh": _unary("cosh", "mx.cosh"),
    "Floor": _unary("floor", "mx.floor"),
    "Ceil": _unary("ceil", "mx.ceil"),
    "Round": _unary("round", "mx.round"),
    "Sign": _unary("sign", "mx.sign"),
    "LogicalNot": _unary("logical_not", "mx.logical_not, ~"),
    "Rsqrt": _unary("rsqrt", "mx.rsqrt"),
    "ArcSin": _unary("asin", "mx.arcsin"),
    "ArcCos": _unary("acos", "mx.arccos"),
    "Sqrt": Lowering(Lowerer._sqrt, "mx.sqrt, mx.rsqrt", "sqrt, rsqrt"),
    "Negative": Lowering(Lowerer._negative, "mx.negative, unary -", "mul"),
    "Log": Lowering(Lowerer._log, "mx.log, mx.log2, mx.log10", "log, mul"),
    "Log1p": Lowering(Lowerer._log1p, "mx.log1p", "add, log"),
    "Expm1": Lowering(Lowerer._expm1, "mx.expm1", "exp, sub"),
    "AsType": Lowering(Lowerer._astype, "mx.array.astype", "cast"),
    "StopGradient": Lowering(Lowerer._passthrough, "mx.stop_gradient", "(none)"),
    "Copy": Lowering(Lowerer._passthrough, "copies", "(none)"),
    "Full": Lowering(Lowerer._passthrough, "mx.full, mx.zeros_like, mx.ones_like", "(none)"),
    # Elementwise, binary.
    "Add": _binary("add", "+, mx.add"),
    "Subtract": _binary("sub", "-, mx.subtract"),
    "Multiply": _binary("mul", "*, mx.multiply"),
    "Divide": _binary("real_div", "/, mx.divide"),
    "Maximum": _binary("maximum", "mx.maximum"),
    "Minimum": _binary("minimum", "mx.minimum"),
    "Power": _binary("pow", "**, mx.power"),
    "FloorDivide": _binary("floor_div", "//, mx.floor_divide"),
    "Remainder": _binary("mod", "%, mx.remainder"),
    "Greater": _binary("greater", ">"),
    "GreaterEqual": _binary("greater_equal", ">="),
    "Less": _binary("less", "<"),
    "LessEqual": _binary("less_equal", "<="),
    "Equal": _binary("equal", "=="),
    "NotEqual": _binary("not_equal", "!="),
    "LogicalAnd": _binary("logical_and", "mx.logical_and"),
    "LogicalOr": _binary("logical_or", "mx.logical_or"),
    "BitwiseBinary": Lowering(
        Lowerer._bitwise, "&, |, ^ on booleans", "logical_and/or/xor", _bitwise_check
    ),
    "LogAddExp": Lowering(Lowerer._logaddexp, "mx.logaddexp", "softplus, maximum"),
    "Select": Lowering(Lowerer._select, "mx.where", "select"),
    # Reductions.
    "Reduce": Lowering(
        Lowerer._reduce,
        "mx.sum, mx.max, mx.min, mx.prod, mx.all, mx.any",
        "reduce_sum/max/min/prod",
        _reduce_check,
    ),
    "ArgReduce": Lowering(
        Lowerer._argreduce, "mx.argmax, mx.argmin", "reduce_argmax, reduce_argmin"
    ),
    "LogSumExp": Lowering(Lowerer._logsumexp, "mx.logsumexp", "reduce_log_sum_exp"),
    "Scan": Lowering(
        Lowerer._scan,
        "mx.cumsum, mx.cumprod, mx.cummax, mx.cummin",
        "cumsum; mul/maximum/minimum by doubling",
        _scan_check,
    ),
    "Sort": Lowering(Lowerer._sort, "mx.sort", "argsort, gather_along_axis"),
    "ArgSort": Lowering(Lowerer._sort, "mx.argsort", "argsort"),
    "Partition": Lowering(Lowerer._sort, "mx.partition, mx.topk", "argsort, gather_along_axis"),
    "ArgPartition": Lowering(Lowerer._sort, "mx.argpartition", "argsort"),
    "Softmax": Lowering(Lowerer._softmax, "mx.softmax, nn.softmax", "softmax"),
    # Linear algebra (with constant weights these become `linear`, see below).
    "Matmul": Lowering(Lowerer._matmul, "@, mx.matmul", "matmul"),
    "AddMM": Lowering(Lowerer._addmm, "mx.addmm", "matmul, add"),
    # Shapes and data movement.
    "Broadcast": Lowering(Lowerer._broadcast, "mx.broadcast_to, implicit", "(lazy), tile"),
    "Reshape": Lowering(Lowerer._reshape, "mx.reshape", "reshape"),
    "Flatten": Lowering(Lowerer._reshape, "mx.flatten", "reshape"),
    "Unflatten": Lowering(Lowerer._reshape, "mx.unflatten", "reshape"),
    "Transpose": Lowering(Lowerer._transpose, "mx.transpose, .T, swapaxes", "transpose"),
    "Squeeze": Lowering(Lowerer._squeeze, "mx.squeeze", "squeeze"),
    "ExpandDims": Lowering(Lowerer._expanddims, "mx.expand_dims, x[None]", "expand_dims"),
    "Slice": Lowering(Lowerer._slice, "x[a:b:c]", "slice_by_index"),
    "Concatenate": Lowering(Lowerer._concatenate, "mx.concatenate, mx.stack", "concat"),
    "Split": Lowering(Lowerer._split, "mx.split", "split", _split_check),
    "Pad": Lowering(Lowerer._pad, "mx.pad (constant)", "pad"),
    "Gather": Lowering(Lowerer._gather, "mx.take, x[indices]", "gather, gather_nd", _gather_check),
    "AsStrided": Lowering(Lowerer._asstrided, "mx.as_strided", "gather"),
    "GatherAxis": Lowering(Lowerer._gather_axis, "mx.take_along_axis", "gather_along_axis"),
    "SliceUpdate": Lowering(
        Lowerer._slice_update,
        "mx.pad (edge), x.at[region] = v",
        "pad, select",
        _slice_update_check,
    ),
    # Fused nodes that `_optimize` builds from recognised patterns.
    "conv": Lowering(
        Lowerer._conv,
        "nn.Conv1d/2d/3d, nn.ConvTranspose1d/2d/3d, mx.conv_general (+ bias, BatchNorm)",
        "conv, conv_transpose",
        _conv_check,
    ),
    "linear": Lowering(Lowerer._linear, "nn.Linear, x @ W (+ bias, BatchNorm)", "linear"),
    "pool": Lowering(Lowerer._pool, "nn.MaxPool1d/2d, nn.AvgPool1d/2d", "max_pool, avg_pool"),
    "upsample": Lowering(
        Lowerer._upsample,
        "nn.Upsample (nearest, linear), mlxkit BilinearUpsample",
        "upsample_nearest_neighbor, upsample_bilinear",
    ),
    "act": Lowering(
        Lowerer._act,
        "nn.ReLU, ReLU6, GELU, SiLU, LeakyReLU, ELU, Softplus, Mish, Hardswish, mx.clip",
        "relu, gelu, silu, ...",
    ),
    "affine": Lowering(Lowerer._affine, "nn.BatchNorm (eval), x * a + b", "mul, add"),
    "reduce_mean": Lowering(Lowerer._reduce_mean, "mx.mean", "reduce_mean"),
    "gather": Lowering(Lowerer._gather_fused, "mx.take, x[indices]", "gather, gather_nd"),
    "permute": Lowering(
        Lowerer._permute,
        "reshape + transpose through rank > 5 (windowed attention)",
        "reshape, transpose",
        _permute_check,
    ),
    "layer_norm": Lowering(
        Lowerer._layer_norm, "nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm", "layer_norm"
    ),
    "quantized_linear": Lowering(
        Lowerer._quantized_linear,
        "nn.QuantizedLinear (2-8 bits, any group size; iOS 18+)",
        "constexpr_blockwise_shift_scale x2, linear",
    ),
    "quantized_gather": Lowering(
        Lowerer._quantized_gather,
        "nn.QuantizedEmbedding (iOS 18+)",
        "constexpr_blockwise_shift_scale x2, gather",
    ),
}

# What to tell the user about primitives that have no lowering (see `unsupported`).
HINTS: dict[str, str] = {
    "Convolution": "a convolution whose weight is computed from the inputs; make the weight a "
    "parameter or constant",
    "QuantizedMatmul": "a quantized matmul whose weights are not constants, or with "
    "transpose=False; use nn.QuantizedLinear",
    "GatherQMM": "a quantized layer; dequantize it (or export the float model) first",
}


def unsupported(graph: Graph) -> list[tuple[Node, str]]:
    """Every node that cannot be lowered, with the reason ("" when the primitive has no entry
    and no hint); empty when the whole graph can be lowered."""
    problems: list[tuple[Node, str]] = []
    for node in graph.nodes:
        reason = _check(graph, node)
        if reason is not None:
            problems.append((node, reason))
    return problems


def _check(graph: Graph, node: Node) -> str | None:
    rule = OPS.get(node.op)
    if rule is None:
        return HINTS.get(node.op, "")
    if rule.check is not None:
        reason = rule.check(graph, node)
        if reason is not None:
            return reason
    if any(len(graph.shapes[o]) > MAX_RANK for o in node.outputs):
        return f"producing a tensor of rank > {MAX_RANK}, Core ML's limit"
    for name in (*node.inputs, *node.outputs):
        dtype = graph.dtypes.get(name, "float32")
        if dtype not in _DTYPES_OK and name not in graph.constants:
            return f"{dtype} tensors"
    return None
