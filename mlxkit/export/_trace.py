"""Graph capture: traces an MLX model or function into a flat list of primitives.

`trace` runs `mx.export_function` with a Python callback, which hands over every primitive MLX
records (name, input and output tensors with shapes and dtypes, arguments) plus the constants the
function closes over. The result is a `Graph` that the rest of the exporter rewrites and lowers;
nothing here depends on Core ML.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# MLX dtypes as the NumPy names the rest of the exporter uses. bfloat16 has no NumPy dtype: it is
# widened to float32, which Core ML then computes in the requested precision anyway.
_DTYPES = {
    mx.bool_: "bool",
    mx.uint8: "uint8",
    mx.uint16: "uint16",
    mx.uint32: "uint32",
    mx.uint64: "uint64",
    mx.int8: "int8",
    mx.int16: "int16",
    mx.int32: "int32",
    mx.int64: "int64",
    mx.float16: "float16",
    mx.bfloat16: "float32",
    mx.float32: "float32",
}


@dataclass
class Node:
    """One traced primitive: `outputs = op(*inputs, *args)` over tensor names."""

    op: str
    inputs: list[str]
    outputs: list[str]
    args: Any


@dataclass
class Graph:
    """A traced function: named tensors, constants as NumPy arrays and primitives in order.

    Constants may be stored compactly: a constant has the rank of its tensor but size-1 axes
    wherever all its values along that axis are equal, so broadcasts of scalars stay scalars.
    """

    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]

    def producers(self) -> dict[str, Node]:
        """Maps every tensor produced by a node to that node."""
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Maps every tensor to the nodes that read it (in graph order)."""
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                users.setdefault(name, []).append(node)
        return users

    def full_constant(self, name: str) -> np.ndarray:
        """A constant broadcast to its tensor's full shape."""
        return np.broadcast_to(self.constants[name], self.shapes[name])


def dtype_name(dtype: mx.Dtype) -> str:
    """The NumPy name for an MLX dtype (bfloat16 widens to float32; complex64 is kept as is
    so the exporter can report the ops that use it)."""
    return _DTYPES.get(dtype, str(dtype).rsplit(".", 1)[-1])


def to_numpy(array: mx.array) -> np.ndarray:
    """Copies an evaluated MLX array to NumPy, widening bfloat16 to float32."""
    if array.dtype == mx.bfloat16:
        array = array.astype(mx.float32)
    return np.array(array, copy=True)


def _convert_argument(value: Any) -> Any:
    if isinstance(value, mx.Dtype):
        return dtype_name(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_convert_argument(v) for v in value)
    return value


def normalize_inputs(example_inputs: Any) -> tuple[mx.array, ...]:
    """Checks the example inputs and returns them as a tuple of MLX arrays.

    Accepts one array or a list/tuple of arrays (MLX or NumPy). Anything else raises a
    `TypeError` naming the offending entry.
    """
    items = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
    if not items:
        raise ValueError(
            "`example_inputs` is empty. Pass one example array per model input, e.g. "
            "`mx.zeros((1, 224, 224, 3))`."
        )
    arrays = []
    for index, item in enumerate(items):
        if isinstance(item, np.ndarray):
            item = mx.array(item)
        if not isinstance(item, mx.array):
            where = "example_inputs" if len(items) == 1 else f"example_inputs[{index}]"
            raise TypeError(
                f"`{where}` must be an mx.array (or NumPy array) with the shape and dtype the "
                f"exported model should accept. Received: {where}={item!r} "
                f"(type {type(item).__name__})."
            )
        arrays.append(item)
    return tuple(arrays)


@contextlib.contextmanager
def as_function(model: nn.Module | Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Yields a function of arrays for `model`; a Module is evaluated and put in eval mode for
    the `with` block, and back in training mode after it if it was in training mode before.

    Parameters are evaluated first so that they reach the trace as constants: an unevaluated
    parameter would otherwise be traced back to the random initializer that created it.
    """
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(
                "`model` must be an mlx.nn.Module or a function of arrays. "
                f"Received: model={model!r} (type {type(model).__name__})."
            )
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        mx.eval(model.parameters())
        yield model
    finally:
        if was_training:
            model.train()


def _tuple_outputs(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: mx.array) -> Any:
        result = fn(*args)
        if isinstance(result, list):
            result = tuple(result)
        items = result if isinstance(result, tuple) else (result,)
        for index, item in enumerate(items):
            if not isinstance(item, mx.array):
                raise TypeError(
                    "The model must return an mx.array or a tuple/list of mx.array. "
                    f"Received: output[{index}] of type {type(item).__name__}."
                )
        return result

    return wrapped


def trace(fn: Callable[..., Any], inputs: Sequence[mx.array]) -> Graph:
    """Traces `fn(*inputs)` into a `Graph` with `mx.export_function` and a callback.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.export._trace import trace
        >>> graph = trace(lambda x: mx.maximum(x, 0.0), [mx.zeros((2, 3))])
        >>> [node.op for node in graph.nodes]
        ['Broadcast', 'Maximum']
    """
    graph = Graph([], [], [], {}, {}, {})

    def record(entry: dict[str, Any]) -> None:
        kind = entry["type"]
        if kind == "inputs":
            for name, shape, dtype in entry["inputs"]:
                graph.inputs.append(name)
                graph.shapes[name], graph.dtypes[name] = tuple(shape), dtype_name(dtype)
        elif kind == "keyword_inputs":
            if entry["keywords"]:
                raise TypeError("Keyword inputs are not supported; pass inputs positionally.")
        elif kind == "outputs":
            for name, shape, dtype in entry["outputs"]:
                graph.outputs.append(name)
                graph.shapes[name], graph.dtypes[name] = tuple(shape), dtype_name(dtype)
        elif kind == "constants":
            for name, value in entry["constants"]:
                graph.constants[name] = to_numpy(value)
                graph.shapes[name] = tuple(value.shape)
                graph.dtypes[name] = dtype_name(value.dtype)
        elif kind == "primitive":
            for name, shape, dtype in (*entry["inputs"], *entry["outputs"]):
                graph.shapes[name], graph.dtypes[name] = tuple(shape), dtype_name(dtype)
            graph.nodes.append(
                Node(
                    entry["name"],
                    [name for name, _, _ in entry["inputs"]],
                    [name for name, _, _ in entry["outputs"]],
                    _convert_argument(list(entry["arguments"])),
                )
            )

    # Functions compiled with mx.compile (MLX's cubic upsampling uses some) become one opaque
    # primitive that cannot be exported; run uncompiled, they trace to ordinary primitives.
    mx.disable_compile()
    try:
        mx.export_function(record, _tuple_outputs(fn), *inputs)
    finally:
        mx.enable_compile()
    return graph
