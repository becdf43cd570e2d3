"""`summary`: a Keras-style table of a model's layers, output shapes and parameter counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlxkit._batches import flat_items

import mlx.core as mx
import mlx.nn as nn


def _count(tree: Any) -> int:
    return sum(int(v.size) for _, v in flat_items(tree) if isinstance(v, mx.array))


def _shape(value: Any) -> str:
    if isinstance(value, mx.array):
        return str(tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return ", ".join(_shape(v) for v in value)
    return type(value).__name__


def summary(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    dtype: mx.Dtype = mx.float32,
    print_fn: Any = print,
) -> str:
    """Prints (and returns) each layer's name, type, output shape and parameter count.

    With `input_shape` (batch dimension included), a forward pass on zeros records the output
    shape of every layer and the order the layers are called in, which is the order of the table
    (a container before the layers it calls; layers the forward pass never calls come last).
    Without it, only parameters are listed, sorted by attribute path.

    Args:
        model: The `mlx.nn.Module`.
        input_shape: The input's shape, e.g. `(1, 28, 28, 1)`.
        dtype: The dtype of the zeros fed to the model.
        print_fn: Where the table goes (`print_fn=None` only returns it).

    Example:
        >>> import mlx.nn as nn
        >>> text = summary(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (1, 4),
        ...                print_fn=None)
        >>> text.splitlines()[-3]
        'Total params: 58'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"summary: `model` must be an mlx.nn.Module. Received: {type(model).__name__}"
        )
    named = [(name, module) for name, module in model.named_modules() if name]
    named.reverse()  # named_modules() lists children after parents' descendants; show parents first
    named.sort(key=lambda item: [int(p) if p.isdigit() else p for p in item[0].split(".")])
    shapes: dict[int, str] = {}
    if input_shape is not None:
        shapes, rank = _trace(model, tuple(input_shape), dtype)
        # sorted() is stable: modules never called keep their attribute order, after the rest
        named.sort(key=lambda item: rank.get(id(item[1]), len(rank)))

    rows = [("Layer (type)", "Output shape", "Param #")]
    for name, module in named:
        own = (
            _count(module.parameters())
            if not module.children()
            else _count({k: v for k, v in module.items() if isinstance(v, mx.array)})
        )
        rows.append((f"{name} ({type(module).__name__})", shapes.get(id(module), ""), f"{own:,}"))
    if input_shape is not None:
        rows.append((f"(output) ({type(model).__name__})", shapes.get(id(model), ""), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    line = "-" * (sum(widths) + 4)
    lines = [f'Model: "{type(model).__name__}"', line]
    for index, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}")
        if index == 0:
            lines.append(line)
    total = _count(model.parameters())
    trainable = _count(model.trainable_parameters())
    lines += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
    ]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text


def _trace(
    model: nn.Module, input_shape: tuple[int, ...], dtype: mx.Dtype
) -> tuple[dict[int, str], dict[int, int]]:
    """Runs the model once with every module class's `__call__` wrapped.

    Returns each called module's output shape and its rank in the order the modules were first
    entered, both keyed by module id.
    """
    shapes: dict[int, str] = {}
    rank: dict[int, int] = {}
    classes = {type(module) for _, module in model.named_modules()}
    originals = {cls: cls.__call__ for cls in classes}
    own = {cls for cls in classes if "__call__" in vars(cls)}

    def wrap(original):
        def call(self, *args, **kwargs):
            rank.setdefault(id(self), len(rank))
            output = original(self, *args, **kwargs)
            shapes[id(self)] = _shape(output)
            return output

        return call

    was_training = model.training
    model.eval()
    try:
        for cls, original in originals.items():
            cls.__call__ = wrap(original)
        mx.eval(model(mx.zeros(input_shape, dtype=dtype)))
    finally:
        for cls, original in originals.items():
            if cls in own:
                cls.__call__ = original
            else:
                del cls.__call__
        model.train(was_training)
    return shapes, rank
