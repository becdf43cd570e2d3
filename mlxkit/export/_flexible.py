"""Flexible input shapes: a Core ML program that runs at a range (or a set) of sizes.

`to_coreml(..., flexible={"input_ids": {1: (1, 512)}})` makes axis 1 of `input_ids` accept any
size from 1 to 512 (`ct.RangeDim`); a list, `{1: [1, 8, 64]}`, accepts those sizes only
(`ct.EnumeratedShapes`). MLX traces at fixed shapes, so the model is traced twice, at the
example size and at another size in the range: the tensors whose axes change between the two
traces follow the flexible size, and become symbolic in the program. A constant that changes
between the traces (`mx.arange(T)`, a causal mask built for one length) cannot follow the size,
and is reported: compute it from the inputs instead (`mx.cumsum` of ones, a comparison of
positions), as `mlxkit.models.Llama.step` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlxkit.export._trace import Graph

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class FlexibleAxis:
    """One flexible input axis: its sizes (a range `(low, high)` or a list) and its symbol."""

    input_index: int
    axis: int
    low: int
    high: int
    sizes: tuple[int, ...] | None
    symbol: Any


def parse(
    flexible: Mapping[str, Mapping[int, Any]] | None,
    input_names: Sequence[str],
    inputs: Sequence[mx.array],
) -> list[FlexibleAxis]:
    """Checks `flexible` against the inputs; one `FlexibleAxis` (with a fresh symbol) per axis."""
    if not flexible:
        return []
    from coremltools.converters.mil.mil import get_new_symbol

    example = 'e.g. {"input_ids": {1: (1, 512)}} or {"input_ids": {1: [1, 8, 64]}}'
    if not isinstance(flexible, Mapping):
        raise TypeError(
            f"`flexible` maps input names to {{axis: (low, high) or [sizes]}}, {example}. "
            f"Received: flexible={flexible!r}."
        )
    axes = []
    for name, spec in flexible.items():
        if name not in input_names or not isinstance(spec, Mapping):
            raise ValueError(
                f"`flexible` keys must be input names {list(input_names)}, each mapping axes to "
                f"sizes, {example}. Received: flexible={flexible!r}."
            )
        index = list(input_names).index(name)
        shape = inputs[index].shape
        for axis, sizes in spec.items():
            if not isinstance(axis, int) or not 0 <= axis < len(shape):
                raise ValueError(
                    f"`flexible[{name!r}]` axes must be in 0..{len(shape) - 1} (the input has "
                    f"shape {tuple(shape)}). Received: flexible={flexible!r}."
                )
            listed = isinstance(sizes, list)
            values = list(sizes) if isinstance(sizes, (list, tuple)) else []
            valid = (listed and len(values) >= 2) or (not listed and len(values) == 2)
            if not valid or not all(isinstance(v, int) and v >= 1 for v in values):
                raise ValueError(
                    f"`flexible[{name!r}][{axis}]` must be a (low, high) range or a list of "
                    f"sizes, all positive integers, {example}. Received: flexible={flexible!r}."
                )
            low, high = min(values), max(values)
            if not (low <= shape[axis] <= high) or (listed and shape[axis] not in values):
                raise ValueError(
                    f"The example input {name!r} has size {shape[axis]} on axis {axis}, outside "
                    f"its flexible sizes {sizes}. Received: flexible={flexible!r}."
                )
            axes.append(
                FlexibleAxis(
                    index,
                    axis,
                    low,
                    high,
                    tuple(sorted(values)) if listed else None,
                    get_new_symbol(),
                )
            )
    if len(axes) > 1:
        raise ValueError(
            "`flexible` supports one flexible axis per model for now (e.g. the sequence "
            f"length). Received: flexible={flexible!r}."
        )
    return axes


def second_inputs(inputs: Sequence[mx.array], axes: Sequence[FlexibleAxis]) -> list[mx.array]:
    """Example inputs with every flexible axis at another size in its range (zeros)."""
    shapes = [list(x.shape) for x in inputs]
    for flex in axes:
        current = shapes[flex.input_index][flex.axis]
        if flex.sizes is not None:
            other = next(s for s in flex.sizes if s != current)
        else:
            other = current + 1 if current < flex.high else current - 1
        shapes[flex.input_index][flex.axis] = other
    return [
        x if list(x.shape) == shape else mx.zeros(shape, dtype=x.dtype)
        for x, shape in zip(inputs, shapes)
    ]


def make_symbolic(graph: Graph, other: Graph, axes: Sequence[FlexibleAxis]) -> None:
    """Replaces, in `graph.shapes`, every size that follows a flexible axis by its symbol.

    `other` is the same model traced (and optimized) at the second sizes; the two graphs are
    matched node by node.
    """
    first = {id(f): graph.shapes[graph.inputs[f.input_index]][f.axis] for f in axes}
    second = {id(f): other.shapes[other.inputs[f.input_index]][f.axis] for f in axes}
    by_sizes = {(first[id(f)], second[id(f)]): f.symbol for f in axes}
    if len(graph.nodes) != len(other.nodes) or any(
        a.op != b.op for a, b in zip(graph.nodes, other.nodes)
    ):
        raise ValueError(
            "The model traces to different operations at different sizes of its flexible "
            "inputs (Python control flow on a shape?), so one Core ML program cannot serve "
            "them all. Export one model per size instead."
        )
    names = dict(zip(graph.inputs, other.inputs))
    names.update(zip(graph.outputs, other.outputs))
    for a, b in zip(graph.nodes, other.nodes):
        names.update(zip(a.inputs, b.inputs))
        names.update(zip(a.outputs, b.outputs))
    for name, twin in names.items():
        if name in graph.constants:
            # Constants are stored compact (size 1 along axes where all values are equal), so a
            # broadcast scalar is the same small array at both sizes.
            value, twin_value = graph.constants[name], other.constants.get(twin)
            if twin_value is None or not (
                value.shape == twin_value.shape and np.array_equal(value, twin_value)
            ):
                raise ValueError(
                    "The model builds a constant from the size of a flexible input (such as "
                    "`mx.arange(T)` or a causal mask made for one length), which cannot follow "
                    f"the size in Core ML. Constant of shape {graph.shapes[name]}. Compute it "
                    "from the inputs instead (e.g. positions as `mx.cumsum` of ones, masks by "
                    "comparing positions)."
                )
            continue
        shape, twin_shape = graph.shapes[name], other.shapes[twin]
        if len(shape) != len(twin_shape):
            raise ValueError(f"Tensor ranks differ between traces: {shape} vs {twin_shape}.")
        symbolic = []
        for size, twin_size in zip(shape, twin_shape):
            if size == twin_size:
                symbolic.append(size)
            elif (size, twin_size) in by_sizes:
                symbolic.append(by_sizes[(size, twin_size)])
            else:
                raise ValueError(
                    "A tensor's size is computed from a flexible size (for example two "
                    "flexible axes merged by a reshape), which Core ML's flexible shapes cannot "
                    f"express: shape {shape} at the example size, {twin_shape} at another."
                )
        graph.shapes[name] = tuple(symbolic)


def input_type(ct: Any, name: str, shape: Sequence[Any], dtype: Any, axes: Sequence[Any]) -> Any:
    """The `ct.TensorType` for a flexible input: ranges, or enumerated shapes."""
    enumerated = [f for f in axes if f.sizes is not None]
    if enumerated:
        options = [
            [
                next(
                    (f.sizes[i] if i < len(f.sizes) else f.sizes[-1] for f in axes if f.axis == a),
                    s,
                )
                for a, s in enumerate(shape)
            ]
            for i in range(max(len(f.sizes) for f in enumerated))
        ]
        default = [
            int(s) if isinstance(s, (int, np.integer)) else options[0][a]
            for a, s in enumerate(shape)
        ]
        return ct.TensorType(
            name=name, shape=ct.EnumeratedShapes(shapes=options, default=default), dtype=dtype
        )
    dims = []
    for a, size in enumerate(shape):
        flex = next((f for f in axes if f.axis == a), None)
        dims.append(ct.RangeDim(flex.low, flex.high) if flex is not None else int(size))
    return ct.TensorType(name=name, shape=ct.Shape(dims), dtype=dtype)
