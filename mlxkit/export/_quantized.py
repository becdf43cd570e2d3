"""Quantized weights: MLX's affine-quantized layers as Core ML compressed weights.

MLX quantizes a weight `(rows, cols)` in groups of `group_size` along `cols`: each group has a
scale `s` and a bias `b`, and `mx.dequantize` computes `w = s * q + b` (two roundings: the
product, then the sum) from the unsigned integers `q` packed into uint32 words.
`nn.QuantizedLinear` traces to one `QuantizedMatmul`; `nn.QuantizedEmbedding` traces to a
`Gather` of the packed rows followed by the unpacking arithmetic (shifts, masks, a multiply by
the gathered scales and an add of the gathered biases). `fuse_quantized` turns both into fused
nodes that keep the packed integers, scales and biases.

Core ML (iOS 18 / macOS 15) holds such weights as `constexpr_blockwise_shift_scale`, which
computes `scale * (data - offset)` per block: one rounding, which is not MLX's two. So each
weight is two chained constexpr ops, both decompressed when Core ML loads the model:

    product = constexpr_blockwise_shift_scale(data=q (uint4/uint8), scale=s)     # s * q
    weight  = constexpr_blockwise_shift_scale(data=product, scale=1, offset=-b)  # + b

which rounds exactly where MLX does: the weight equals `mx.dequantize` bit for bit (float32
models), while the package stores 4 or 8 bits per weight plus three numbers per group (the
integers, `s`, `-b` and the unit scale). Earlier targets have no blockwise format that can hold
MLX's groups exactly (iOS 16's `constexpr_affine_dequantize` has one scale per output channel
and an integer zero point), so exporting a quantized model below iOS 18 is an error naming the
minimum target.

This module also gives the NumPy interpreter the semantics of the compressed-weight ops
(`NUMPY_OPS`) and the unpacking of sub-byte weight blobs (`unpack_sub_byte`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlxkit.export._trace import Graph, Node

import mlx.core as mx
import numpy as np

# Bits MLX quantizes to, and the Core ML storage type for each (uint4 holds 2-4 bits exactly).
_STORAGE = {2: "uint4", 3: "uint4", 4: "uint4", 5: "uint8", 6: "uint8", 8: "uint8"}


def unpack(packed: np.ndarray, scales: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """The integers `q` (rows, cols) of an MLX-quantized weight, as uint8.

    Computed with `mx.dequantize` itself (scale 1, bias 0), so it follows MLX's packing for
    every bit width.
    """
    ones = mx.ones(scales.shape, dtype=mx.float32)
    values = mx.dequantize(
        mx.array(packed), ones, mx.zeros_like(ones), group_size=group_size, bits=bits
    )
    return np.array(values).astype(np.uint8)


def quantization_of(packed: np.ndarray, scales: np.ndarray, cols: int) -> tuple[int, int] | None:
    """`(bits, group_size)` implied by the shapes of a packed weight, or None if inconsistent."""
    if packed.ndim != 2 or scales.ndim != 2 or cols % scales.shape[1]:
        return None
    bits, remainder = divmod(32 * packed.shape[1], cols)
    if remainder or bits not in _STORAGE:
        return None
    return bits, cols // scales.shape[1]


# --------------------------------------------------------------------------------------------
# Graph rewrites


def _fuse_matmul(graph: Graph, node: Node) -> Node | None:
    """`QuantizedMatmul(x, w, scales, biases)` with constant weights -> `quantized_linear`."""
    if len(node.inputs) != 4 or not all(n in graph.constants for n in node.inputs[1:]):
        return None
    group_size, bits = node.args[0], node.args[1]
    # Arguments: group_size, bits, mode (0: affine, the only mode with biases), transpose.
    if node.args[-1] is not True or (len(node.args) == 4 and node.args[2] != 0):
        return None
    packed, scales, biases = (graph.full_constant(n) for n in node.inputs[1:])
    return Node(
        "quantized_linear",
        [node.inputs[0]],
        list(node.outputs),
        {
            "packed": np.ascontiguousarray(packed),
            "scales": np.ascontiguousarray(scales),
            "biases": np.ascontiguousarray(biases),
            "bits": int(bits),
            "group_size": int(group_size),
        },
    )


def _descendants(graph: Graph, users: dict[str, list[Node]], start: Node) -> list[Node]:
    seen: dict[int, Node] = {}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for out in node.outputs:
            for user in users.get(out, []):
                if id(user) not in seen:
                    seen[id(user)] = user
                    frontier.append(user)
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    return sorted(seen.values(), key=lambda n: order[id(n)])


def _fuse_embedding(graph: Graph, gather: Node, users: dict[str, list[Node]]) -> Node | None:
    """`nn.QuantizedEmbedding`'s traced dequantization -> one `quantized_gather` node.

    Matches the three `Gather`s of one index tensor (packed words, scales, biases) and the
    first node that depends on all three (the add of the biases), plus the reshape after it.
    """
    packed_name, index_names = gather.inputs[0], gather.inputs[1:]
    if len(index_names) != 1:
        return None
    ids = index_names[0]
    companions = [
        n
        for n in graph.nodes
        if n.op == "Gather"
        and n is not gather
        and n.inputs[1:] == [ids]
        and n.inputs[0] in graph.constants
        and graph.dtypes[n.inputs[0]] in ("float32", "float16")
    ]
    if len(companions) < 2:
        return None
    packed_reach = {id(n) for n in _descendants(graph, users, gather)}
    for first in companions:
        for second in companions:
            if first is second:
                continue
            first_reach = _descendants(graph, users, first)
            second_reach = {id(n) for n in _descendants(graph, users, second)}
            # The scales meet the integers in a Multiply before the biases join in an Add.
            multiply = next(
                (n for n in first_reach if id(n) in packed_reach and id(n) not in second_reach),
                None,
            )
            add = next(
                (n for n in first_reach if id(n) in packed_reach and id(n) in second_reach),
                None,
            )
            if multiply is None or add is None or multiply.op != "Multiply" or add.op != "Add":
                continue
            final = add
            after = users.get(add.outputs[0], [])
            if len(after) == 1 and after[0].op == "Reshape" and add.outputs[0] not in graph.outputs:
                final = after[0]
            out = final.outputs[0]
            cols = graph.shapes[out][-1]
            packed = graph.full_constant(packed_name)
            scales = graph.full_constant(first.inputs[0])
            found = quantization_of(packed, scales, cols)
            if found is None or graph.shapes[out] != (*graph.shapes[ids], cols):
                continue
            return Node(
                "quantized_gather",
                [ids],
                [out],
                {
                    "packed": np.ascontiguousarray(packed),
                    "scales": np.ascontiguousarray(scales),
                    "biases": np.ascontiguousarray(graph.full_constant(second.inputs[0])),
                    "bits": found[0],
                    "group_size": found[1],
                },
            )
    return None


def fuse_quantized(graph: Graph) -> None:
    """Replaces quantized linear layers and embeddings by `quantized_linear` /
    `quantized_gather` nodes (in place); the nodes they replace become dead code."""
    users = graph.consumers()
    replacements: dict[int, Node] = {}
    for node in graph.nodes:
        fused = None
        if node.op == "QuantizedMatmul":
            fused = _fuse_matmul(graph, node)
        elif (
            node.op == "Gather"
            and node.inputs[0] in graph.constants
            and graph.dtypes[node.inputs[0]] == "uint32"
        ):
            fused = _fuse_embedding(graph, node, users)
        if fused is not None:
            replacements[id(node)] = fused
    if not replacements:
        return
    # A fused embedding takes the place of its last node, so that its index input is defined.
    produced_by = graph.producers()
    nodes = []
    for node in graph.nodes:
        if id(node) in replacements and replacements[id(node)].op == "quantized_linear":
            nodes.append(replacements[id(node)])
            continue
        nodes.append(node)
        for fused in replacements.values():
            if fused.op == "quantized_gather" and produced_by.get(fused.outputs[0]) is node:
                nodes[-1] = fused
    graph.nodes = nodes


# --------------------------------------------------------------------------------------------
# Lowering


def dequantized_weight(mb: Any, args: dict[str, Any]) -> Any:
    """The two chained constexpr ops that decompress to exactly `mx.dequantize`'s weight."""
    from coremltools.converters.mil.mil import types

    scales = np.asarray(args["scales"], dtype=np.float32)
    biases = np.asarray(args["biases"], dtype=np.float32)
    q = unpack(args["packed"], scales, args["bits"], args["group_size"])
    storage = types.np_uint4_dtype if _STORAGE[args["bits"]] == "uint4" else np.uint8
    product = mb.constexpr_blockwise_shift_scale(data=q.astype(storage), scale=scales)
    return mb.constexpr_blockwise_shift_scale(
        data=product, scale=np.ones_like(scales), offset=-biases
    )


def lower_linear(lowerer: Any, node: Node) -> None:
    """`quantized_linear`: `linear(x, weight)` over the decompressed weight."""
    x = lowerer.var(node.inputs[0])
    weight = dequantized_weight(lowerer.mb, node.args)
    var = lowerer.mb.linear(x=x, weight=weight)
    lowerer.set(node.outputs[0], var, tuple(range(len(lowerer.graph.shapes[node.outputs[0]]))))


def lower_gather(lowerer: Any, node: Node) -> None:
    """`quantized_gather`: rows of the decompressed table."""
    indices = lowerer.var(node.inputs[0])
    if isinstance(indices, np.ndarray):
        indices = indices.astype(np.int32)
    table = dequantized_weight(lowerer.mb, node.args)
    var = lowerer.mb.gather(x=table, indices=indices, axis=0)
    lowerer.set(node.outputs[0], var, tuple(range(len(lowerer.graph.shapes[node.outputs[0]]))))


def quantized_bytes(args: dict[str, Any]) -> int:
    """Bytes MLX holds for one quantized weight: packed words, scales and biases."""
    return int(sum(np.asarray(args[k]).nbytes for k in ("packed", "scales", "biases")))


# --------------------------------------------------------------------------------------------
# NumPy semantics, for the interpreter (coremltools' MIL definitions, iOS18/compression.py)


def blockwise_shift_scale(
    data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None = None
) -> np.ndarray:
    """`constexpr_blockwise_shift_scale`: `scale * (data - offset)`, in the scale's dtype, with
    each scale (and offset) repeated over its block."""
    data = np.asarray(data).astype(scale.dtype)
    for axis, (size, count) in enumerate(zip(data.shape, scale.shape)):
        if size != count:
            scale = np.repeat(scale, size // count, axis)
            if offset is not None:
                offset = np.repeat(offset, size // count, axis)
    if offset is not None:
        data = data - np.asarray(offset).astype(scale.dtype)
    return scale * data


NUMPY_OPS: dict[str, Callable[..., Any]] = {
    "constexpr_blockwise_shift_scale": blockwise_shift_scale,
}

# MIL's BlobDataType codes for sub-byte integers, with their widths.
SUB_BYTE_BLOBS = {8: (4, True), 9: (1, False), 10: (2, False), 11: (4, False), 12: (3, False)}


def unpack_sub_byte(raw: bytes, bits: int, signed: bool, count: int) -> np.ndarray:
    """Values of a sub-byte blob: little-endian bit order, the first value in the low bits."""
    stream = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    bit_rows = stream[: count * bits].reshape(count, bits).astype(np.int16)
    values = (bit_rows << np.arange(bits, dtype=np.int16)).sum(axis=1)
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return values.astype(np.int8 if signed else np.uint8)
