"""Mixed precision: the compute dtype of a `Trainer`'s steps and, for float16, dynamic loss scaling.

This module owns the policy (`Precision`: which dtype the forward and backward run in), the casts
(`cast_floating`: the trainable parameters and floating inputs to the compute dtype, the outputs
back to float32), the low-precision `value_and_grad`, and the loss scale: its state (`"scale"`,
`"good_steps"`, `"skipped_steps"`, arrays that live in the Trainer's compiled state and in its
checkpoints) and its update, which skips a step whose gradients are not finite.

The semantics are those of Keras's `mixed_bfloat16` / `mixed_float16` policies and Lightning's
`"bf16-mixed"` / `"16-mixed"`: the model's parameters and the optimizer's state stay float32 (the
master weights, so checkpoints and export see float32); each step computes the forward and the
backward on a low-precision copy of the parameters; the loss and the metrics see float32 outputs;
gradients reach the optimizer in float32. float16's narrow range (largest value 65504, smallest
normal 6e-5) makes small gradients underflow, so the loss is multiplied by a scale before the
backward and the gradients divided by it after (Keras's `LossScaleOptimizer`, PyTorch's
`GradScaler`): the scale halves, and the update is skipped, when a gradient is infinite or NaN,
and doubles after `growth_interval` finite steps in a row. All of it runs inside the compiled step
with `mx.where`, so no step waits for the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Literal, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

PrecisionName = Literal["float32", "bfloat16", "float16"]

_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
# The spellings Keras (dtype policies) and Lightning (`precision=`) users bring: they mean the same
# thing as mlxkit's names, float32 master weights and low-precision compute.
ALIASES = {
    "mixed_bfloat16": "bfloat16",
    "mixed_float16": "float16",
    "bf16-mixed": "bfloat16",
    "16-mixed": "float16",
    "32-true": "float32",
}


def resolve_name(precision: str) -> PrecisionName:
    """The mlxkit name of `precision`, an mlxkit name or a Keras / Lightning alias.

    Raises:
        ValueError: For anything else, listing the names accepted. Lightning's `"bf16-true"` and
            `"16-true"` (parameters stored in low precision) are refused with a pointer to the
            mixed spelling: mlxkit always keeps float32 master weights.

    Example:
        >>> resolve_name("bf16-mixed")
        'bfloat16'
    """
    if isinstance(precision, str) and precision in _DTYPES:
        return precision  # type: ignore[return-value]
    if isinstance(precision, str) and precision in ALIASES:
        return ALIASES[precision]  # type: ignore[return-value]
    hint = ""
    if precision in ("bf16-true", "16-true", "bf16", "16", 16):
        mixed = "bfloat16" if str(precision).startswith("bf") else "float16"
        hint = (
            f" mlxkit keeps the parameters in float32 and computes in low precision (mixed "
            f"precision): use precision={mixed!r}."
        )
    raise ValueError(
        f"`precision` must be one of {sorted(_DTYPES)} (Keras and Lightning spellings "
        f"{sorted(ALIASES)} are accepted too).{hint} Received: precision={precision!r}"
    )


@dataclass(frozen=True)
class Precision:
    """The precision policy of a `Trainer`: what its steps compute in, and float16's loss scale.

    `Trainer(precision="bfloat16")` builds one with the defaults; pass a `Precision` to tune the
    loss scaling. The object holds settings only: the scale itself is state of each Trainer
    (`trainer.loss_scale_state`), saved in its checkpoints.

    Args:
        name: `"float32"` (default), `"bfloat16"` or `"float16"`, or an alias: Keras's
            `"mixed_bfloat16"` / `"mixed_float16"`, Lightning's `"bf16-mixed"` / `"16-mixed"` /
            `"32-true"`.
        initial_scale: float16 only: the loss scale to start from (Keras's default, 2**15).
        growth_interval: float16 only: double the scale after this many finite steps in a row
            (Keras's and PyTorch's default, 2000).

    Example:
        >>> policy = Precision("float16", growth_interval=100)
        >>> policy.compute_dtype, policy.loss_scaling
        (mlx.core.float16, True)
        >>> Precision("bf16-mixed").name
        'bfloat16'
    """

    name: str = "float32"
    initial_scale: float = 2.0**15
    growth_interval: int = 2000
    compute_dtype: mx.Dtype = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", resolve_name(self.name))
        object.__setattr__(self, "compute_dtype", _DTYPES[self.name])
        scale = self.initial_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(
                f"`initial_scale` must be a positive number. Received: initial_scale={scale!r}"
            )
        interval = self.growth_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(
                f"`growth_interval` must be a positive integer. "
                f"Received: growth_interval={interval!r}"
            )

    @property
    def is_mixed(self) -> bool:
        """True when the steps compute in a dtype other than float32."""
        return self.name != "float32"

    @property
    def loss_scaling(self) -> bool:
        """True for float16, the one precision that scales the loss."""
        return self.name == "float16"

    def initial_state(self) -> dict[str, mx.array]:
        """A fresh loss-scale state: empty unless the policy scales the loss.

        Example:
            >>> Precision("float16").initial_state()["scale"].item()
            32768.0
        """
        if not self.loss_scaling:
            return {}
        return {
            "scale": mx.array(float(self.initial_scale), dtype=mx.float32),
            "good_steps": mx.array(0, dtype=mx.int32),
            "skipped_steps": mx.array(0, dtype=mx.int32),
        }

    def cast_inputs(self, tree: Any) -> Any:
        """`tree` with its float32 arrays in the compute dtype (integers are left alone)."""
        if not self.is_mixed:
            return tree
        return cast_floating(tree, self.compute_dtype)

    def cast_outputs(self, tree: Any) -> Any:
        """`tree` with its low-precision floating arrays in float32, for the loss and metrics."""
        if not self.is_mixed:
            return tree
        return cast_floating(tree, mx.float32)

    def value_and_grad(
        self, model: nn.Module, fn: Callable[..., Any], state: dict[str, mx.array]
    ) -> Callable[..., tuple[Any, Any]]:
        """Like `mlx.nn.value_and_grad(model, fn)`, computing in the compute dtype.

        `fn` runs with the model's trainable parameters cast to the compute dtype; its value (a
        scalar loss, or a tuple whose first item is the loss) is differentiated in float32 and,
        for float16, multiplied by `state["scale"]`. The gradients come back in float32 (the
        dtype of the parameters) and divided by the scale again, ready for the optimizer; the
        model holds its float32 parameters again when the function returns.

        Example:
            >>> policy = Precision("bfloat16")
            >>> model = nn.Linear(3, 1)
            >>> loss_fn = lambda x: model(x.astype(mx.bfloat16)).astype(mx.float32).mean()
            >>> loss, grads = policy.value_and_grad(model, loss_fn, {})(mx.ones((2, 3)))
            >>> loss.dtype, grads["weight"].dtype
            (mlx.core.float32, mlx.core.float32)
        """
        if not self.is_mixed:
            return nn.value_and_grad(model, fn)
        scale = state["scale"] if self.loss_scaling else None

        def scaled(parameters, *args, **kwargs):
            model.update(cast_floating(parameters, self.compute_dtype))
            value = fn(*args, **kwargs)
            loss = value[0] if isinstance(value, tuple) else value
            loss = loss.astype(mx.float32)
            return (loss if scale is None else loss * scale), value

        grad_fn = mx.value_and_grad(scaled)

        def wrapped(*args, **kwargs):
            masters = model.trainable_parameters()
            (_, value), grads = grad_fn(masters, *args, **kwargs)
            model.update(masters)
            if scale is not None:
                grads = tree_map(lambda g: g / scale, grads)
            return value, grads

        return wrapped

    def with_compute_parameters(self, model: nn.Module, fn: Callable[..., Any]) -> Callable:
        """`fn`, run with all of the model's floating parameters cast to the compute dtype.

        For the inference steps (`test_step`, `predict_step`), where nothing is differentiated;
        the model holds its float32 parameters again when `fn` returns.
        """
        if not self.is_mixed:
            return fn

        def wrapped(*args, **kwargs):
            originals = model.parameters()
            model.update(cast_floating(originals, self.compute_dtype))
            try:
                return fn(*args, **kwargs)
            finally:
                model.update(originals)

        return wrapped

    def apply_gradients(
        self,
        optimizer: optim.Optimizer,
        model: nn.Module,
        grads: Any,
        state: dict[str, mx.array],
    ) -> None:
        """`optimizer.update(model, grads)`, with float16's finite check and scale update.

        With loss scaling, a step whose gradients hold an infinite or NaN value leaves the
        parameters and the optimizer's state (its step count included) as they were, halves the
        scale and counts the skip; `growth_interval` finite steps in a row double the scale. The
        choice is made on the device (`mx.where`), so the step never waits for the host.
        """
        if not self.loss_scaling:
            optimizer.update(model, grads)
            return
        finite = all_finite(grads)
        old_parameters = model.trainable_parameters()
        old_optimizer_state = tree_map(lambda a: a, optimizer.state)
        optimizer.update(model, grads)

        def keep_if_skipped(new, old):
            return mx.where(finite, new, old) if isinstance(new, mx.array) else new

        model.update(tree_map(keep_if_skipped, model.trainable_parameters(), old_parameters))
        optimizer.state.update(tree_map(keep_if_skipped, optimizer.state, old_optimizer_state))

        good_steps = mx.where(finite, state["good_steps"] + 1, 0)
        grow = good_steps >= self.growth_interval
        scale = state["scale"]
        state["scale"] = mx.where(finite, mx.where(grow, scale * 2, scale), scale / 2)
        state["good_steps"] = mx.where(grow, 0, good_steps).astype(mx.int32)
        state["skipped_steps"] = state["skipped_steps"] + (~finite).astype(mx.int32)


def cast_floating(tree: Any, dtype: mx.Dtype) -> Any:
    """`tree` with every floating-point array cast to `dtype`; other leaves are left alone.

    Example:
        >>> tree = {"x": mx.ones(2), "labels": mx.array([1, 2])}
        >>> {k: v.dtype for k, v in cast_floating(tree, mx.bfloat16).items()}
        {'x': mlx.core.bfloat16, 'labels': mlx.core.int32}
    """

    def cast_leaf(leaf):
        if isinstance(leaf, mx.array) and mx.issubdtype(leaf.dtype, mx.floating):
            return leaf.astype(dtype)
        return leaf

    return tree_map(cast_leaf, tree)


def all_finite(tree: Any) -> mx.array:
    """A boolean scalar: whether every value of every array in `tree` is finite.

    Example:
        >>> all_finite({"a": mx.array([1.0, 2.0]), "b": mx.array([float("inf")])}).item()
        False
    """
    leaves = [leaf for _, leaf in cast(list[tuple[str, Any]], tree_flatten(tree))]
    checks = [mx.isfinite(leaf).all() for leaf in leaves if isinstance(leaf, mx.array)]
    return reduce(mx.logical_and, checks, mx.array(True))
