"""Graph rewrites between tracing and lowering: constant folding, dead-code removal, fusions.

MLX traces layers down to primitives: a BatchNorm is four broadcasts and four arithmetic ops, a
max pool is a strided view and a reduction, a bilinear upsample is a dozen gathers and multiplies.
These passes fold what depends only on constants, then rewrite recognised patterns into fused
nodes with lower-case op names (`pool`, `upsample`, `act`, `conv`, `linear`, `affine`,
`reduce_mean`) that lower to one Core ML op each.

Structural patterns (pooling, conv + bias/BatchNorm) are matched exactly. Activations and
upsampling are recognised by what they compute: the candidate subgraph is evaluated in NumPy on a
probe input and compared with the fused op's definition, so a rewrite only happens when it is
numerically the same function; otherwise the primitives are lowered one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mlxkit.export import _primitives as prim
from mlxkit.export._mil_numpy import upsample_bilinear_nchw, upsample_nearest_nchw
from mlxkit.export._quantized import fuse_quantized
from mlxkit.export._trace import Graph, Node

import numpy as np

# Largest constant (in elements) that folding may create; bigger results stay as ops.
_MAX_FOLDED_ELEMENTS = 1 << 24


def compact(value: np.ndarray) -> np.ndarray:
    """Shrinks every axis along which all values are equal to size 1 (same rank)."""
    for axis in range(value.ndim):
        if value.shape[axis] > 1:
            first = value.take([0], axis=axis)
            if np.array_equal(np.broadcast_to(first, value.shape), value, equal_nan=True):
                value = first
    return np.ascontiguousarray(value)


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Points every reader of tensor `old` (and the graph outputs) at tensor `new`."""
    for node in graph.nodes:
        node.inputs = [new if name == old else name for name in node.inputs]
    graph.outputs = [new if name == old else name for name in graph.outputs]


def eliminate_dead_code(graph: Graph) -> None:
    """Removes nodes whose outputs nothing reads, and constants nothing reads."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(out in live for out in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    graph.nodes = kept[::-1]
    graph.constants = {k: v for k, v in graph.constants.items() if k in live}


def drop_empty_tensors(graph: Graph) -> None:
    """Replaces every zero-size tensor by an empty constant and drops it from concatenations.

    Reflect padding of width 0 slices `x[:, 1:1]`; Core ML's float16 pass cannot cast an empty
    tensor, and the result never depends on it.
    """
    kept = []
    for node in graph.nodes:
        if all(math.prod(graph.shapes[o]) == 0 for o in node.outputs):
            for name in node.outputs:
                graph.constants[name] = np.zeros(graph.shapes[name], dtype=graph.dtypes[name])
            continue
        if node.op == "Concatenate":
            inputs = [i for i in node.inputs if math.prod(graph.shapes[i]) > 0]
            node.inputs = inputs
            if len(inputs) == 1:
                node.op, node.args = "Copy", []
        kept.append(node)
    graph.nodes = kept


def fold_constants(graph: Graph) -> None:
    """Evaluates, in NumPy, every node whose inputs are all constants."""
    kept = []
    for node in graph.nodes:
        foldable = node.op in prim.SUPPORTED and all(i in graph.constants for i in node.inputs)
        if foldable and node.op != "Broadcast":
            size = sum(math.prod(graph.shapes[o]) for o in node.outputs)
            foldable = size <= _MAX_FOLDED_ELEMENTS
        if not foldable:
            kept.append(node)
            continue
        if node.op in prim.ELEMENTWISE or node.op == "Broadcast":
            inputs = [graph.constants[i] for i in node.inputs]
        else:
            inputs = [graph.full_constant(i) for i in node.inputs]
        outputs = prim.evaluate(
            node.op,
            node.args,
            inputs,
            [graph.shapes[o] for o in node.outputs],
            [graph.dtypes[o] for o in node.outputs],
        )
        for name, value in zip(node.outputs, outputs):
            graph.constants[name] = compact(value)
    graph.nodes = kept


# --------------------------------------------------------------------------------------------
# Shared helpers


class _Index:
    """Producer and consumer lookups, rebuilt after each rewrite pass."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.refresh()

    def refresh(self) -> None:
        self.producer = self.graph.producers()
        self.users = self.graph.consumers()
        self.outputs = set(self.graph.outputs)

    def single_user(self, name: str) -> Node | None:
        """The only reader of `name`, or None if it has several readers or is a graph output."""
        users = self.users.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]

    def scalar(self, name: str) -> float | None:
        """The value of a constant that holds one number, else None."""
        value = self.graph.constants.get(name)
        if value is None or value.size != 1:
            return None
        return float(value.reshape(()))

    def other_input(self, node: Node, name: str) -> str | None:
        if len(node.inputs) != 2:
            return None
        a, b = node.inputs
        if a == name:
            return b
        return a if b == name else None


def _is_float(graph: Graph, name: str) -> bool:
    return graph.dtypes[name] in ("float32", "float16")


# --------------------------------------------------------------------------------------------
# Pooling


def _pool_from_windows(graph: Graph, index: _Index, reduce: Node) -> Node | None:
    """Matches `Reduce(windows) -> Squeeze`, windows from reshape+transpose or as_strided."""
    kind = prim.REDUCE_TYPES.get(reduce.args[0])
    if kind not in ("sum", "max"):
        return None
    squeeze = index.single_user(reduce.outputs[0])
    if squeeze is None or squeeze.op != "Squeeze":
        return None
    windows = index.producer.get(reduce.inputs[0])
    if windows is None or index.single_user(windows.outputs[0]) is not reduce:
        return None
    rank = len(graph.shapes[windows.outputs[0]])
    spatial = (rank - 2) // 2
    if spatial not in (1, 2, 3) or rank != 2 * spatial + 2:
        return None
    window_axes = list(range(1 + spatial, 1 + 2 * spatial))
    if list(reduce.args[1]) != window_axes or list(squeeze.args[0]) != window_axes:
        return None
    pad_lo = [0] * spatial
    pad_hi = [0] * spatial
    if windows.op == "Transpose":
        reshape = index.producer.get(windows.inputs[0])
        order = [0, *range(1, 2 * spatial, 2), *range(2, 2 * spatial + 1, 2), 2 * spatial + 1]
        if reshape is None or reshape.op != "Reshape" or list(windows.args[0]) != order:
            return None
        if index.single_user(reshape.outputs[0]) is not windows:
            return None
        source = reshape.inputs[0]
        in_shape = graph.shapes[source]
        split = graph.shapes[reshape.outputs[0]]
        if len(in_shape) != spatial + 2 or split[0] != in_shape[0] or split[-1] != in_shape[-1]:
            return None
        kernel = [split[2 + 2 * i] for i in range(spatial)]
        if any(split[1 + 2 * i] * kernel[i] != in_shape[1 + i] for i in range(spatial)):
            return None
        strides = kernel
    elif windows.op == "AsStrided":
        flat = index.producer.get(windows.inputs[0])
        if flat is None or flat.op not in ("Flatten", "Reshape"):
            return None
        if index.single_user(flat.outputs[0]) is not windows:
            return None
        source = flat.inputs[0]
        in_shape = graph.shapes[source]
        shape, strides_arg, offset = windows.args
        if len(in_shape) != spatial + 2 or offset != 0 or len(graph.shapes[flat.outputs[0]]) != 1:
            return None
        row = [math.prod(in_shape[i + 1 :]) for i in range(len(in_shape))]
        kernel = list(shape[1 + spatial : 1 + 2 * spatial])
        strides = []
        for i in range(spatial):
            step, rem = divmod(strides_arg[1 + i], row[1 + i])
            strides.append(step)
            if rem or step < 1:
                return None
        expected_strides = [row[0], *[row[1 + i] * strides[i] for i in range(spatial)]]
        expected_strides += [*row[1 : 1 + spatial], 1]
        expected_shape = [in_shape[0]]
        expected_shape += [(in_shape[1 + i] - kernel[i]) // strides[i] + 1 for i in range(spatial)]
        expected_shape += [*kernel, in_shape[-1]]
        if list(strides_arg) != expected_strides or list(shape) != expected_shape:
            return None
        # A preceding pad with the pool's neutral value becomes the pool's own padding.
        pad = index.producer.get(source)
        neutral = -math.inf if kind == "max" else 0.0
        if (
            pad is not None
            and pad.op == "Pad"
            and index.single_user(pad.outputs[0]) is flat
            and index.scalar(pad.inputs[1]) == neutral
        ):
            axes, low, high = pad.args
            widths = {a: (lo, hi) for a, lo, hi in zip(axes, low, high) if lo or hi}
            if all(1 <= a <= spatial for a in widths) and all(
                lo >= 0 and hi >= 0 for lo, hi in widths.values()
            ):
                for a, (lo, hi) in widths.items():
                    pad_lo[a - 1], pad_hi[a - 1] = lo, hi
                source = pad.inputs[0]
    else:
        return None
    output = squeeze.outputs[0]
    # A sum pool followed by a multiply by 1/window is an average pool.
    if kind == "sum":
        scale = index.single_user(output)
        other = index.other_input(scale, output) if scale is not None else None
        if (
            scale is not None
            and scale.op == "Multiply"
            and other is not None
            and index.scalar(other) is not None
            and math.isclose(index.scalar(other) or 0.0, 1.0 / math.prod(kernel), rel_tol=1e-6)
        ):
            kind, output = "avg", scale.outputs[0]
    args = {"kind": kind, "kernel": kernel, "strides": strides, "pad_lo": pad_lo, "pad_hi": pad_hi}
    return Node("pool", [source], [output], args)


def fuse_pooling(graph: Graph) -> None:
    """Rewrites MLX's max/avg pooling (windows + reduction) into `pool` nodes."""
    index = _Index(graph)
    replacements: dict[int, Node] = {}
    for node in graph.nodes:
        if node.op == "Reduce":
            fused = _pool_from_windows(graph, index, node)
            if fused is not None:
                replacements[id(node)] = fused
    if not replacements:
        return
    nodes = []
    for node in graph.nodes:
        fused = replacements.get(id(node))
        nodes.append(node)
        if fused is not None:
            nodes.append(fused)
    graph.nodes = nodes
    # The old chain still produces the fused output name: drop the producers it superseded.
    produced_by_fused = {out for fused in replacements.values() for out in fused.outputs}
    graph.nodes = [
        node
        for node in graph.nodes
        if node.op == "pool" or not set(node.outputs) & produced_by_fused
    ]
    eliminate_dead_code(graph)


# --------------------------------------------------------------------------------------------
# reduce_sum * (1/n) -> reduce_mean


def fuse_mean(graph: Graph) -> None:
    """Rewrites `Reduce(sum)` followed by a multiply by 1/count into `reduce_mean`."""
    index = _Index(graph)
    for node in list(graph.nodes):
        if node.op != "Reduce" or prim.REDUCE_TYPES[node.args[0]] != "sum":
            continue
        if not _is_float(graph, node.outputs[0]):
            continue
        axes = list(node.args[1])
        count = math.prod(graph.shapes[node.inputs[0]][a] for a in axes)
        middle = node
        user = index.single_user(node.outputs[0])
        if user is not None and user.op == "Squeeze":
            middle, user = user, index.single_user(user.outputs[0])
        if user is None or user.op not in ("Multiply", "Divide"):
            continue
        other = index.other_input(user, middle.outputs[0])
        value = index.scalar(other) if other is not None else None
        if value is None or (user.op == "Divide" and user.inputs[0] != middle.outputs[0]):
            continue
        factor = value if user.op == "Multiply" else 1.0 / value
        if not math.isclose(factor * count, 1.0, rel_tol=1e-6):
            continue
        node.op, node.args = "reduce_mean", {"axes": axes}
        graph.nodes.remove(user)
        replace_uses(graph, user.outputs[0], middle.outputs[0])
        index = _Index(graph)


# --------------------------------------------------------------------------------------------
# Activations, recognised by probing


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x, 0.0)


def _gelu_exact(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + prim.UNARY["Erf"](x / math.sqrt(2.0), []))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": _softplus,
    "gelu_exact": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    "gelu_sigmoid": lambda x: x * _sigmoid(1.702 * x),
    "hard_swish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "mish": lambda x: x * np.tanh(_softplus(x)),
}

# Probe points: dense around the kinks of ReLU-family functions, wide enough for clip bounds.
_PROBE = np.sort(
    np.concatenate(
        [np.linspace(-12.0, 12.0, 4801), [-1e3, -100.0, -30.0, 30.0, 100.0, 1e3]]
    ).astype(np.float64)
)

_SCALAR_OPS = set(prim.UNARY) - {"Full", "Copy", "StopGradient", "LogicalNot"}
_SCALAR_OPS |= set(prim.BINARY) | {"Select"}


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(got - want) <= 1e-6 * (1.0 + np.abs(want))))


def _identify_activation(values: np.ndarray) -> tuple[str, dict[str, float]] | None:
    if not np.all(np.isfinite(values)):
        return None
    for name, fn in _ACTIVATIONS.items():
        with np.errstate(over="ignore"):
            want = fn(_PROBE)
        if _close(values, want):
            return name, {}
    alpha = -float(values[np.searchsorted(_PROBE, -1.0)])
    if 0.0 < alpha < 1.0 and _close(values, np.where(_PROBE > 0, _PROBE, alpha * _PROBE)):
        return "leaky_relu", {"alpha": alpha}
    alpha = -float(values[0])
    elu = np.where(_PROBE > 0, _PROBE, alpha * (np.exp(np.minimum(_PROBE, 0.0)) - 1.0))
    if alpha > 0.0 and _close(values, elu):
        return "elu", {"alpha": alpha}
    low, high = float(values.min()), float(values.max())
    # Bounds only count when the probe actually went past them on both sides.
    reached = _PROBE[0] < low < high < _PROBE[-1]
    if reached and _close(values, np.clip(_PROBE, low, high)):
        return "clip", {"low": low, "high": high}
    return None


def _scalar_node(graph: Graph, node: Node) -> bool:
    if node.op not in _SCALAR_OPS or len(node.outputs) != 1:
        return False
    if any(graph.constants[i].size != 1 for i in node.inputs if i in graph.constants):
        return False
    return _is_float(graph, node.outputs[0]) or graph.dtypes[node.outputs[0]] == "bool"


def _region(index: _Index, sink: Node, source: str, cone: list[Node]) -> list[Node] | None:
    """Cone nodes on a path from `source` to `sink`, if they form a closed subgraph."""
    cone_ids = {id(n) for n in cone}
    graph = index.graph
    reaches: dict[int, bool] = {}

    def depends(node: Node) -> bool:
        if id(node) in reaches:
            return reaches[id(node)]
        result = False
        for name in node.inputs:
            if name == source:
                result = True
            producer = index.producer.get(name)
            if producer is not None and id(producer) in cone_ids and depends(producer):
                result = True
        reaches[id(node)] = result
        return result

    order = {id(n): i for i, n in enumerate(graph.nodes)}
    members = sorted((n for n in cone if depends(n)), key=lambda n: order[id(n)])
    produced = {out for n in members for out in n.outputs}
    member_ids = {id(n) for n in members}
    for node in members:
        for name in node.inputs:
            if name != source and name not in produced and name not in graph.constants:
                return None
        if node is not sink:
            for out in node.outputs:
                if out in index.outputs:
                    return None
                if any(id(u) not in member_ids for u in index.users.get(out, [])):
                    return None
    return members


def _evaluate_region(
    graph: Graph, members: list[Node], source: str, value: np.ndarray
) -> np.ndarray | None:
    env = {source: value}
    order = members  # already in graph order
    for node in order:
        inputs = []
        for name in node.inputs:
            if name in env:
                inputs.append(env[name])
            else:
                inputs.append(np.asarray(graph.constants[name], dtype=np.float64).reshape(()))
        with np.errstate(all="ignore"):
            env[node.outputs[0]] = prim.evaluate(node.op, node.args, inputs, [value.shape])[0]
    return env[order[-1].outputs[0]] if order else None


def fuse_activations(graph: Graph) -> None:
    """Replaces elementwise subgraphs that compute a known activation with one `act` node."""
    index = _Index(graph)
    removed: set[int] = set()
    fused: list[tuple[Node, list[Node]]] = []
    for sink in reversed(graph.nodes):
        if id(sink) in removed or not _scalar_node(graph, sink):
            continue
        if not _is_float(graph, sink.outputs[0]):
            continue
        # Collect up to 16 scalar-elementwise ancestors.
        cone, frontier = [sink], [sink]
        while frontier and len(cone) < 16:
            node = frontier.pop()
            for name in node.inputs:
                producer = index.producer.get(name)
                if (
                    producer is not None
                    and id(producer) not in removed
                    and all(producer is not c for c in cone)
                    and _scalar_node(graph, producer)
                ):
                    cone.append(producer)
                    frontier.append(producer)
        sources = {
            name
            for n in cone
            for name in n.inputs
            if name not in graph.constants and _is_float(graph, name)
        }
        best: tuple[int, str, str, dict[str, float], list[Node]] | None = None
        for source in sorted(sources):  # sorted: the same fusions on every run
            members = _region(index, sink, source, cone)
            if not members or (best is not None and len(members) <= best[0]):
                continue
            if len(members) == 1 and sink.op not in ("Maximum", "Minimum", "Multiply"):
                continue
            if graph.shapes[source] != graph.shapes[sink.outputs[0]]:
                continue
            values = _evaluate_region(graph, members, source, _PROBE)
            found = _identify_activation(values) if values is not None else None
            if found is not None:
                best = (len(members), source, found[0], found[1], members)
        if best is None:
            continue
        _, source, kind, params, members = best
        removed.update(id(m) for m in members)
        fused.append((Node("act", [source], [sink.outputs[0]], {"kind": kind, **params}), members))
    if not fused:
        return
    _splice(graph, fused)


def _splice(graph: Graph, replacements: list[tuple[Node, list[Node]]]) -> None:
    """Swaps each group of member nodes for its fused node, placed at the first member's slot.

    The first member comes after the fused node's source and before any reader of its output,
    so topological order is kept.
    """
    first = {id(members[0]): fused for fused, members in replacements}
    dead = {id(m) for _, members in replacements for m in members}
    new_nodes: list[Node] = []
    for node in graph.nodes:
        if id(node) in first:
            new_nodes.append(first[id(node)])
        if id(node) not in dead:
            new_nodes.append(node)
    graph.nodes = new_nodes


# --------------------------------------------------------------------------------------------
# Upsampling, recognised by probing

_RESAMPLE_OPS = {
    "Matmul",  # with a constant interpolation matrix (mlxkit.models' BilinearUpsample)
    "Gather",
    "Transpose",
    "Squeeze",
    "ExpandDims",
    "Reshape",
    "Flatten",
    "Unflatten",
    "Broadcast",
    "Multiply",
    "Add",
    "Subtract",
    "Full",
}


def _resample_candidates(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> list[tuple[str, dict[str, Any], Callable[[np.ndarray], np.ndarray]]]:
    _, h, w, _ = in_shape
    _, ho, wo, _ = out_shape
    found: list[tuple[str, dict[str, Any], Callable[[np.ndarray], np.ndarray]]] = []
    scale_h, scale_w = ho / h, wo / w
    if ho % h == 0 and wo % w == 0:
        sh, sw = ho // h, wo // w
        found.append(
            (
                "nearest",
                {"scale_h": sh, "scale_w": sw},
                lambda x: upsample_nearest_nchw(x, sh, sw),
            )
        )
    for align in (False, True):

        def bilinear(x: np.ndarray, align: bool = align) -> np.ndarray:
            return upsample_bilinear_nchw(x, scale_h, scale_w, align)

        params = {"scale_h": scale_h, "scale_w": scale_w, "align_corners": align}
        found.append(("bilinear", params, bilinear))
    return found


def fuse_upsampling(graph: Graph) -> None:
    """Replaces gather/broadcast subgraphs that upsample NHWC tensors with `upsample` nodes."""
    index = _Index(graph)
    rng = np.random.default_rng(0)
    replaced: list[tuple[Node, list[Node]]] = []
    used: set[int] = set()
    for source, shape in list(graph.shapes.items()):
        if len(shape) != 4 or source in graph.constants or not _is_float(graph, source):
            continue
        if shape[1] == 1 or shape[2] == 1:
            # Spreading a 1-pixel map is a broadcast, which elementwise ops do for free.
            continue
        starters = [
            u
            for u in index.users.get(source, [])
            if u.op in ("Gather", "Reshape", "Broadcast", "ExpandDims", "Transpose")
            and id(u) not in used
        ]
        if not starters:
            continue
        # Forward closure of resampling ops fed by `source` (other inputs constant).
        region: list[Node] = []
        reached = {source}
        for node in graph.nodes:
            if len(region) > 400:
                break
            if node.op not in _RESAMPLE_OPS or id(node) in used:
                continue
            inside = [i for i in node.inputs if i in reached]
            others = [i for i in node.inputs if i not in reached]
            if not inside or any(o not in graph.constants for o in others):
                continue
            if node.op == "Gather" and node.inputs[0] not in reached:
                continue
            if node.op in ("Multiply", "Matmul") and len(inside) != 1:
                continue
            region.append(node)
            reached.update(node.outputs)
        n, h, w, c = shape
        sinks = [
            node
            for node in reversed(region)
            if len(graph.shapes[node.outputs[0]]) == 4
            and graph.shapes[node.outputs[0]][0] == n
            and graph.shapes[node.outputs[0]][3] == c
            and graph.shapes[node.outputs[0]][1] >= h
            and graph.shapes[node.outputs[0]][2] >= w
            and graph.shapes[node.outputs[0]][1:3] != (h, w)
        ]
        probe = rng.standard_normal(shape)
        for sink in sinks:
            members = _region(index, sink, source, region)
            if not members:
                continue
            values = _evaluate_full_region(graph, members, source, probe)
            out_shape = graph.shapes[sink.outputs[0]]
            for kind, params, fn in _resample_candidates(shape, out_shape):
                want = fn(probe.transpose(0, 3, 1, 2))
                if want.shape[2:] != out_shape[1:3]:
                    continue
                # MLX computes sampling positions in float32, off by up to ~size * 1e-7 pixels;
                # the candidates differ from each other by a good fraction of a pixel.
                tolerance = 1e-6 * (1 + max(out_shape[1:3])) * float(np.max(np.abs(probe)))
                if np.allclose(values, want.transpose(0, 2, 3, 1), rtol=0, atol=tolerance):
                    node = Node("upsample", [source], [sink.outputs[0]], {"kind": kind, **params})
                    replaced.append((node, members))
                    used.update(id(m) for m in members)
                    break
            if any(r[1] is members for r in replaced):
                break
    if replaced:
        _splice(graph, replaced)


def _evaluate_full_region(
    graph: Graph, members: list[Node], source: str, value: np.ndarray
) -> np.ndarray:
    env = {source: value}
    member_ids = {id(m) for m in members}
    last = None
    for node in graph.nodes:
        if id(node) not in member_ids:
            continue
        inputs = []
        for name in node.inputs:
            if name in env:
                inputs.append(np.broadcast_to(env[name], graph.shapes[name]))
            else:
                inputs.append(graph.full_constant(name))
        outs = prim.evaluate(node.op, node.args, inputs, [graph.shapes[o] for o in node.outputs])
        for name, out in zip(node.outputs, outs):
            env[name] = np.broadcast_to(out, graph.shapes[name])
        last = node.outputs[0]
    assert last is not None  # members is never empty here
    return env[last]


# --------------------------------------------------------------------------------------------
# Convolution / linear with bias and BatchNorm, affine chains


def _channel_vector(graph: Graph, name: str, channels: int) -> np.ndarray | None:
    """A constant as a per-last-axis vector of length `channels`, if it only varies there."""
    value = graph.constants.get(name)
    if value is None or not _is_float(graph, name):
        return None
    if value.ndim and any(s != 1 for s in value.shape[:-1]):
        return None
    flat = value.reshape(-1).astype(np.float64)
    if flat.size not in (1, channels):
        return None
    return np.broadcast_to(flat, (channels,)).copy()


def _absorb_affine(
    graph: Graph,
    index: _Index,
    node: Node,
    channels: int,
    weight: np.ndarray,
    bias: np.ndarray,
    out_axis: int,
) -> str:
    """Folds `+ c`, `- c`, `* c`, `/ c` after `node` into its weight and bias; returns output."""
    output = node.outputs[0]
    while True:
        user = index.single_user(output)
        if user is None or user.op not in ("Add", "Subtract", "Multiply", "Divide"):
            return output
        other = index.other_input(user, output)
        if other is None or other == output:
            return output
        vector = _channel_vector(graph, other, channels)
        if vector is None:
            return output
        first = user.inputs[0] == output
        shape = [1] * weight.ndim
        shape[out_axis] = channels
        if user.op == "Add":
            bias += vector
        elif user.op == "Subtract" and first:
            bias -= vector
        elif user.op == "Multiply":
            weight *= vector.reshape(shape)
            bias *= vector
        elif user.op == "Divide" and first:
            weight /= vector.reshape(shape)
            bias /= vector
        else:
            return output
        graph.nodes.remove(user)
        replace_uses(graph, user.outputs[0], output)
        index.refresh()


def fuse_conv_and_linear(graph: Graph, *, absorb: bool = True) -> None:
    """Turns convolutions and matmuls with constant weights into `conv`/`linear` nodes.

    Following additions, subtractions, multiplications and divisions by per-channel constants
    (bias, BatchNorm statistics and affine parameters) are folded into the weights.
    """
    index = _Index(graph)
    for node in list(graph.nodes):
        if node.op == "Convolution" and node.inputs[1] in graph.constants:
            weight = graph.full_constant(node.inputs[1]).astype(np.float64)
            channels = weight.shape[0]
            bias = np.zeros(channels)
            strides, lo, hi, kdil, idil, groups, flip = node.args
            fused = Node(
                "conv",
                [node.inputs[0]],
                node.outputs,
                {
                    "strides": list(strides),
                    "pad_lo": list(lo),
                    "pad_hi": list(hi),
                    "dilations": list(kdil),
                    "input_dilation": list(idil),
                    "groups": groups,
                    "flip": flip,
                },
            )
            graph.nodes[graph.nodes.index(node)] = fused
            index = _Index(graph)
            if absorb:
                _absorb_affine(graph, index, fused, channels, weight, bias, out_axis=0)
            fused.args["weight"], fused.args["bias"] = weight, bias
            index = _Index(graph)
        elif node.op in ("Matmul", "AddMM") and node.inputs[1] in graph.constants:
            b_shape = graph.shapes[node.inputs[1]]
            if len(b_shape) != 2 or not _is_float(graph, node.inputs[0]):
                continue
            alpha, beta = (node.args[0], node.args[1]) if node.op == "AddMM" else (1.0, 0.0)
            weight = graph.full_constant(node.inputs[1]).astype(np.float64).T * alpha
            channels = weight.shape[0]
            bias = np.zeros(channels)
            if node.op == "AddMM":
                vector = _channel_vector(graph, node.inputs[2], channels)
                if vector is None:
                    continue
                bias += beta * vector
            fused = Node("linear", [node.inputs[0]], node.outputs, {})
            graph.nodes[graph.nodes.index(node)] = fused
            index = _Index(graph)
            if absorb:
                _absorb_affine(graph, index, fused, channels, weight, bias, out_axis=0)
            fused.args["weight"], fused.args["bias"] = weight, bias
            index = _Index(graph)


def fuse_affine_chains(graph: Graph) -> None:
    """Collapses runs of add/sub/mul/div by constants into one `affine` node (x * scale + shift).

    This is where a BatchNorm that does not follow a convolution ends up: four ops become two.
    """
    index = _Index(graph)
    consumed: set[int] = set()
    replacements: list[tuple[Node, list[Node]]] = []
    for head in graph.nodes:
        if id(head) in consumed or head.op not in ("Add", "Subtract", "Multiply", "Divide"):
            continue
        start = next((i for i in head.inputs if i not in graph.constants), None)
        if start is None or not _is_float(graph, start):
            continue
        rank = len(graph.shapes[start])
        scale, shift = np.ones((1,) * rank), np.zeros((1,) * rank)
        chain: list[Node] = []
        current = start
        walker: Node | None = head
        while walker is not None and walker.op in ("Add", "Subtract", "Multiply", "Divide"):
            other = index.other_input(walker, current)
            if other is None or other not in graph.constants or not _is_float(graph, other):
                break
            if graph.shapes[walker.outputs[0]] != graph.shapes[start]:
                break
            value = graph.constants[other].astype(np.float64)
            value = value.reshape((1,) * (rank - value.ndim) + value.shape)
            first = walker.inputs[0] == current
            if walker.op == "Add":
                shift = shift + value
            elif walker.op == "Subtract":
                scale, shift = (scale, shift - value) if first else (-scale, value - shift)
            elif walker.op == "Multiply":
                scale, shift = scale * value, shift * value
            elif first:
                scale, shift = scale / value, shift / value
            else:
                break
            chain.append(walker)
            current = walker.outputs[0]
            walker = index.single_user(current)
        consumed.update(id(n) for n in chain)
        if len(chain) >= 2:
            args = {"scale": compact(scale), "shift": compact(shift)}
            replacements.append((Node("affine", [start], [current], args), chain))
    if replacements:
        _splice(graph, replacements)


def fuse_gather_squeeze(graph: Graph) -> None:
    """Turns `Gather` + `Squeeze` of the gathered size-1 axes (MLX's `take` and fancy indexing)
    into one `gather` node whose output has no size-1 axes, so Core ML never sees the rank-7
    intermediate that multi-axis indexing produces."""
    index = _Index(graph)
    replacements = []
    for node in graph.nodes:
        if node.op != "Gather":
            continue
        axes, sizes = list(node.args[0]), list(node.args[1])
        source = graph.shapes[node.inputs[0]]
        if any(sizes[a] != 1 for a in axes) or any(
            sizes[a] != source[a] for a in range(len(source)) if a not in axes
        ):
            continue
        lead = len(graph.shapes[node.outputs[0]]) - len(source)
        squeeze = index.single_user(node.outputs[0])
        if squeeze is None or squeeze.op != "Squeeze":
            continue
        if sorted(squeeze.args[0]) != sorted(lead + a for a in axes):
            continue
        fused = Node("gather", node.inputs, squeeze.outputs, {"axes": axes})
        replacements.append((fused, [node, squeeze]))
    if replacements:
        _splice(graph, replacements)


def _normalized_axes(graph: Graph, node: Node | None) -> list[int] | None:
    if node is not None and node.op == "reduce_mean":
        return list(node.args["axes"])
    return None


def fuse_layer_norm(graph: Graph) -> None:
    """Rewrites MLX's LayerNorm arithmetic into `layer_norm` nodes (GroupNorm's too).

    Matches `(x - mean(x)) * rsqrt(mean((x - mean(x))^2) + eps)` over the same axes, plus a
    following `affine` node (the LayerNorm weight and bias) when it only varies along them.
    """
    index = _Index(graph)
    replacements = []

    def through_broadcast(name: str) -> str:
        producer = index.producer.get(name)
        if producer is not None and producer.op == "Broadcast":
            return producer.inputs[0]
        return name

    for node in graph.nodes:
        if node.op != "Multiply" or len(node.inputs) != 2:
            continue
        for d_name, r_name in (node.inputs, node.inputs[::-1]):
            centre = index.producer.get(d_name)
            rsqrt = index.producer.get(through_broadcast(r_name))
            if centre is None or centre.op != "Subtract" or rsqrt is None:
                continue
            if rsqrt.op != "Sqrt" or not rsqrt.args or not rsqrt.args[0]:
                continue
            add = index.producer.get(rsqrt.inputs[0])
            if add is None or add.op != "Add":
                continue
            var_mean = next(
                (index.producer.get(i) for i in add.inputs if i not in graph.constants), None
            )
            eps_name = next((i for i in add.inputs if i in graph.constants), None)
            axes = _normalized_axes(graph, var_mean)
            if axes is None or eps_name is None or index.scalar(eps_name) is None:
                continue
            assert var_mean is not None
            square = index.producer.get(var_mean.inputs[0])
            if square is None or square.op != "Square" or square.inputs[0] != d_name:
                continue
            x, mean_name = centre.inputs
            mean = index.producer.get(through_broadcast(mean_name))
            if _normalized_axes(graph, mean) != axes or mean is None or mean.inputs[0] != x:
                continue
            members = [mean, centre, square, var_mean, add, rsqrt, node]
            for name in (mean_name, r_name):
                producer = index.producer.get(name)
                if producer is not None and producer.op == "Broadcast":
                    members.append(producer)
            internal = {o for m in members for o in m.outputs} - {node.outputs[0]}
            member_ids = {id(m) for m in members}
            if any(
                o in index.outputs or any(id(u) not in member_ids for u in index.users.get(o, []))
                for o in internal
            ):
                continue
            args: dict[str, Any] = {"axes": axes, "epsilon": index.scalar(eps_name)}
            output = node.outputs[0]
            follower = index.single_user(output)
            rank = len(graph.shapes[x])
            if follower is not None and follower.op == "affine":
                scale, shift = follower.args["scale"], follower.args["shift"]
                if all(
                    scale.shape[a] == 1 and shift.shape[a] == 1
                    for a in range(rank)
                    if a not in axes
                ):
                    args["gamma"], args["shift"] = scale, shift
                    output = follower.outputs[0]
                    members.append(follower)
            members.sort(key=lambda m: graph.nodes.index(m))
            replacements.append((Node("layer_norm", [x], [output], args), members))
            break
    if replacements:
        _splice(graph, replacements)


def fuse_high_rank_permutes(graph: Graph) -> None:
    """Turns `Reshape -> Transpose -> Reshape` through a tensor of rank > 5 (windowed attention:
    `(B, H/w, w, W/w, w, C)`) into one `permute` node, which the lowering performs in rank <= 5
    steps by merging axes that stay neighbours."""
    index = _Index(graph)
    replacements = []
    for node in graph.nodes:
        if node.op != "Transpose" or len(graph.shapes[node.outputs[0]]) <= 5:
            continue
        before = index.producer.get(node.inputs[0])
        after = index.single_user(node.outputs[0])
        if before is None or before.op != "Reshape" or index.single_user(before.outputs[0]) is None:
            continue
        if after is None or after.op != "Reshape" or len(graph.shapes[after.outputs[0]]) > 5:
            continue
        args = {"shape": graph.shapes[before.outputs[0]], "perm": list(node.args[0])}
        fused = Node("permute", [before.inputs[0]], after.outputs, args)
        replacements.append((fused, [before, node, after]))
    if replacements:
        _splice(graph, replacements)


def optimize(graph: Graph, *, fuse: bool = True) -> None:
    """Runs the passes in order, in place.

    With `fuse=False` constants are folded, convolutions/matmuls with constant weights become
    `conv`/`linear` nodes, and only the rewrites that Core ML's rank-5 limit requires are made
    (windowed pooling, multi-axis gathers, high-rank permutes): otherwise one MIL op per MLX
    primitive, the baseline the export benchmark measures the fusions against.
    """
    drop_empty_tensors(graph)
    fuse_quantized(graph)
    fold_constants(graph)
    eliminate_dead_code(graph)
    fuse_high_rank_permutes(graph)
    if not fuse:
        fuse_pooling(graph)
        fuse_gather_squeeze(graph)
        fuse_conv_and_linear(graph, absorb=False)
        eliminate_dead_code(graph)
        return
    fuse_pooling(graph)
    fuse_mean(graph)
    fuse_upsampling(graph)
    eliminate_dead_code(graph)
    fuse_gather_squeeze(graph)
    fuse_activations(graph)
    fuse_conv_and_linear(graph)
    fuse_affine_chains(graph)
    fuse_layer_norm(graph)
    eliminate_dead_code(graph)


# --------------------------------------------------------------------------------------------
# Float16 range safety

# Ops a sum of squares passes through on its way to a square root: scaling by constants (the
# mean's 1/n), adding epsilon, and the reductions.
_NORM_CHAIN = {"Reduce", "reduce_mean", "Add", "Multiply", "Divide", "Broadcast"}


def range_sensitive_nodes(graph: Graph) -> list[Node]:
    """Nodes that overflow float16 on ordinary activations: every `Square` (or `x * x`) that
    is summed and square-rooted (RMSNorm, `x / norm(x)`, unfused variances), with the nodes in
    between. An element of 256 already squares to float16's largest finite value.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.export._trace import trace
        >>> unit = lambda x: x / mx.linalg.norm(x, axis=-1, keepdims=True)
        >>> graph = trace(unit, [mx.ones((2, 3))])
        >>> [node.op for node in range_sensitive_nodes(graph)]
        ['Square', 'Reduce', 'Sqrt']
    """
    index = _Index(graph)
    marked: dict[int, Node] = {}
    for node in graph.nodes:
        squares = node.op == "Square" or (node.op == "Multiply" and len(set(node.inputs)) == 1)
        if not squares:
            continue
        chain, current, reduced = [node], node, False
        while True:
            user = index.single_user(current.outputs[0])
            if user is None:
                break
            if user.op == "Sqrt":
                if reduced:
                    for member in (*chain, user):
                        marked[id(member)] = member
                break
            if user.op not in _NORM_CHAIN or (
                user.op in ("Add", "Multiply", "Divide")
                and not any(i in graph.constants for i in user.inputs)
            ):
                break
            reduced = reduced or user.op in ("Reduce", "reduce_mean")
            chain.append(user)
            current = user
    return [node for node in graph.nodes if id(node) in marked]
