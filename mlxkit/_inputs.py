"""Checks of the arrays `fit` / `evaluate` receive, run before anything is compiled or trained.

The Trainer calls them up front, so a mistake in the data (labels outside the model's classes,
validation arrays of another shape, a malformed `validation_data` tuple) is refused with a message
that names the argument and echoes what was received, instead of training on nonsense or failing
from inside MLX after an epoch.
"""

from __future__ import annotations

from typing import Any

from mlxkit._batches import ArrayBatches, flat_items, is_array_tree, num_samples

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map


def shapes(tree: Any) -> Any:
    """The shapes of an array tree, for messages: `(32, 5)`, or a tuple/dict of them."""
    if isinstance(tree, (mx.array, np.ndarray)):
        return tuple(tree.shape)
    return tree_map(lambda a: tuple(a.shape), tree, is_leaf=lambda v: isinstance(v, np.ndarray))


def describe_value(value: Any) -> str:
    """`shape (3, 4)` for an array tree, `type list` for anything else: for messages."""
    if is_array_tree(value):
        return f"shape {shapes(value)}"
    return f"type {type(value).__name__}"


def check_validation_tuple(validation_data: Any) -> None:
    """Refuses a `validation_data` tuple that is neither `(x, y)` nor `(x, y, sample_weight)`."""
    if not isinstance(validation_data, tuple) or not is_array_tree(validation_data[:1]):
        return  # a batch source, or a tree of arrays (inputs without targets)
    if len(validation_data) not in (2, 3):
        raise ValueError(
            "`validation_data` must be (x_val, y_val) or (x_val, y_val, sample_weight). "
            f"Received: a tuple of {len(validation_data)} items: "
            + ", ".join(describe_value(part) for part in validation_data)
        )
    if len(validation_data) == 3 and validation_data[2] is not None:
        x_val, _, weights = validation_data
        samples = num_samples(x_val, "validation_data")
        if not isinstance(weights, (np.ndarray, mx.array)) or weights.ndim == 0:
            raise ValueError(
                "The third item of `validation_data` is a sample weight: an array of one weight "
                f"per sample ({samples} here), or None. Received: validation_data[2] of "
                f"{describe_value(weights)}"
            )
        if weights.shape[0] != samples:
            raise ValueError(
                f"The sample weights in `validation_data` must have one entry per sample: "
                f"{samples}. Received: validation_data[2] of shape {tuple(weights.shape)}"
            )


def check_validation_shapes(train: ArrayBatches, validation: ArrayBatches) -> None:
    """Refuses validation arrays whose samples have another shape than the training arrays'."""
    for name, ours, theirs in (
        ("inputs", train.x, validation.x),
        ("targets", train.y, validation.y),
    ):
        if ours is None:
            continue
        if theirs is None:
            raise ValueError(
                f"`validation_data` has no targets, but `y` was given: pass (x_val, y_val). "
                f"Received: validation_data inputs of shape {shapes(validation.x)}"
            )
        expected, found = _sample_shapes(ours), _sample_shapes(theirs)
        if expected != found:
            raise ValueError(
                f"The {name} in `validation_data` must have the training {name}' shape per "
                f"sample: {_describe_shapes(expected)}. Received: validation_data {name} of shape "
                f"{shapes(theirs)}, training {name} of shape {shapes(ours)}"
            )


def _sample_shapes(tree: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(path, tuple(leaf.shape[1:])) for path, leaf in flat_items(tree)]


def _describe_shapes(shapes: list[tuple[str, tuple[int, ...]]]) -> str:
    return ", ".join(f"{path}: {shape}" if path else str(shape) for path, shape in shapes)


def class_count(outputs: Any, targets: Any, axis: int | None) -> int | None:
    """The number of classes when `targets` are class indices of `outputs` along `axis`."""
    if axis is None or not isinstance(outputs, mx.array) or not isinstance(targets, mx.array):
        return None
    if not mx.issubdtype(targets.dtype, mx.integer) or outputs.ndim != targets.ndim + 1:
        return None
    axis %= outputs.ndim
    index_shape = outputs.shape[:axis] + outputs.shape[axis + 1 :]
    if axis == 0 or index_shape[1:] != targets.shape[1:]:
        return None
    classes = outputs.shape[axis]
    return classes if classes >= 2 else None


def check_class_indices(targets: Any, classes: int, argument: str) -> None:
    """Refuses integer class indices outside `[0, classes)` (one device sync)."""
    if not isinstance(targets, mx.array) or not mx.issubdtype(targets.dtype, mx.integer):
        return
    low, high = (int(value) for value in np.array(mx.stack([mx.min(targets), mx.max(targets)])))
    if low >= 0 and high < classes:
        return
    values = np.asarray(targets)
    bad = np.unique(values[(values < 0) | (values >= classes)])
    shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    raise ValueError(
        f"`{argument}` holds class indices outside [0, {classes}), but the model outputs "
        f"{classes} classes (its last axis). Received: {argument} values {shown} (min {low}, "
        f"max {high}). Map the labels to 0..{classes - 1}, or give the model as many outputs as "
        "there are classes."
    )
