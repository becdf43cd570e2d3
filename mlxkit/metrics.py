"""Streaming metrics: state in a dict of `mx.array` sums and counts, safe to update in `mx.compile`.

A `Metric` keeps everything it has seen in `metric.state`, a dict created once in `__init__`.
Updates only reassign its values (`state["total"] = state["total"] + x`), never replace the dict,
so a trainer can pass `[m.state for m in metrics]` as the `inputs` and `outputs` of `mx.compile`
and update metrics inside its compiled step. `update` uses array operations only: no `.item()`, no
Python branches on array values, no data-dependent shapes. The state holds sums and counts, never
running means, so summing the state across processes (an all-reduce) gives the global metric.

Example:
    >>> import mlx.core as mx
    >>> from mlxkit import metrics
    >>> accuracy = metrics.Accuracy()
    >>> accuracy.update(mx.array([[2.0, 0.0], [0.0, 1.0]]), mx.array([0, 0]))
    >>> accuracy.result().item()
    0.5
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Literal, get_args

import mlx.core as mx

__all__ = [
    "RMSE",
    "AbsRel",
    "Accuracy",
    "DeltaAccuracy",
    "Mean",
    "MeanAbsoluteError",
    "MeanIoU",
    "MeanSquaredError",
    "Metric",
    "RootMeanSquaredError",
    "TopKAccuracy",
    "get",
    "names",
]

AccuracyKind = Literal["auto", "sparse", "categorical", "binary"]
Average = Literal["pixels", "images"]


def _check_option(owner: str, argument: str, value: object, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(
            f"{owner}: unknown {argument}. Received: {argument}={value!r}. "
            f"Expected one of {', '.join(repr(o) for o in options)}."
        )


# Counters are int64, which every MLX backend adds (CPU, Metal, CUDA): int32 overflows past 2**31
# items per epoch, which full-resolution segmentation reaches; float32 is exact only to 2**24.
COUNT_DTYPE = mx.int64


def _safe_divide(numerator: mx.array, denominator: mx.array) -> mx.array:
    # 0 rather than NaN before anything has been counted, as Keras does.
    positive = denominator > 0
    return mx.where(positive, numerator / mx.where(positive, denominator, 1), 0.0)


def _shape_error(owner: str, outputs: mx.array, targets: mx.array, expected: str) -> ValueError:
    return ValueError(
        f"{owner}: outputs and targets have incompatible shapes. "
        f"Received: outputs.shape={tuple(outputs.shape)}, targets.shape={tuple(targets.shape)}. "
        f"Expected {expected}."
    )


def _expand_mask(owner: str, mask: mx.array, shape: tuple[int, ...]) -> mx.array:
    """Broadcasts `mask` to `shape`, also accepting a prefix shape such as `(B,)` per sample."""
    mask_shape = tuple(mask.shape)
    if mask.ndim < len(shape) and mask_shape == shape[: mask.ndim]:
        mask = mask.reshape(mask_shape + (1,) * (len(shape) - mask.ndim))
    try:
        return mx.broadcast_to(mask, shape)
    except ValueError as error:
        raise ValueError(
            f"{owner}: mask must broadcast to {shape}, or have a prefix of that shape such as "
            f"(batch,) for one flag per sample. Received: mask.shape={mask_shape}."
        ) from error


def _validity(owner: str, mask: mx.array | None, shape: tuple[int, ...]) -> mx.array:
    if mask is None:
        return mx.ones(shape, dtype=mx.bool_)
    return _expand_mask(owner, mask, shape) != 0


class Metric(abc.ABC):
    """Base class: `update` batch by batch, read `result()`, `reset()` between epochs.

    Subclasses create every entry of `self.state` in `__init__` (scalars or fixed-shape arrays of
    sums and counts) and in `update` only reassign existing keys with array operations, so that
    the state can be captured by `mx.compile` and summed across processes. `reset` zeros each
    entry in place, keeping the same dict object.

    Args:
        name: The key under which the metric is logged, e.g. `"accuracy"` (`val_accuracy` for
            validation).

    Attributes:
        name: The logged name.
        state: `dict[str, mx.array]` of sums and counts.
        direction: `"max"` if higher is better, `"min"` if lower is, `None` if neither (a class
            attribute). Monitor callbacks with `mode="auto"` read it, as Keras reads a metric's
            `_direction`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import Metric
        >>> class MaxError(Metric):
        ...     def __init__(self, *, name="max_error"):
        ...         super().__init__(name=name)
        ...         self.state["max"] = mx.array(0.0)
        ...
        ...     def update(self, outputs, targets, mask=None):
        ...         error = mx.max(mx.abs(outputs - targets))
        ...         self.state["max"] = mx.maximum(self.state["max"], error)
        ...
        ...     def result(self):
        ...         return self.state["max"]
        >>> metric = MaxError()
        >>> metric.update(mx.array([1.0, 5.0]), mx.array([1.5, 2.0]))
        >>> metric.result().item()
        3.0
    """

    direction: Literal["min", "max"] | None = None

    def __init__(self, *, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Metric name must be a non-empty string. Received: name={name!r}.")
        self.name = name
        self.state: dict[str, mx.array] = {}

    @abc.abstractmethod
    def update(self, outputs: mx.array, targets: mx.array, mask: mx.array | None = None) -> None:
        """Adds one batch to the state.

        Args:
            outputs: The model's outputs for the batch.
            targets: The batch targets.
            mask: Optional validity (nonzero = counted) broadcastable to the per-item shape, or a
                prefix of it such as `(B,)` to drop whole samples (e.g. a padded last batch).
        """

    @abc.abstractmethod
    def result(self) -> mx.array:
        """Returns the metric over everything seen since the last `reset`, as a scalar array."""

    def reset(self) -> None:
        """Zeros every state entry in place (the dict object stays the same)."""
        for key in list(self.state):
            self.state[key] = mx.zeros_like(self.state[key])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Weighted mean of a value, typically the loss.

    `update(values)` adds every element of `values` with weight 1; `mask` gives per-element (or
    prefix, e.g. per-sample) weights instead, so `update(batch_loss, mask=batch_size)` weighs a
    batch-mean loss by its batch size. `targets` is ignored.

    Args:
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import Mean
        >>> loss = Mean(name="loss")
        >>> loss.update(mx.array(1.0), mask=mx.array(3.0))  # mean 1.0 over 3 samples
        >>> loss.update(mx.array(3.0), mask=mx.array(1.0))  # mean 3.0 over 1 sample
        >>> loss.result().item()
        1.5
    """

    def __init__(self, *, name: str = "mean") -> None:
        super().__init__(name=name)
        self.state["total"] = mx.array(0.0)
        self.state["count"] = mx.array(0.0)

    def update(
        self, outputs: mx.array, targets: mx.array | None = None, mask: mx.array | None = None
    ) -> None:
        values = outputs.astype(mx.float32)
        if mask is None:
            weights = mx.ones(values.shape, dtype=mx.float32)
        else:
            weights = _expand_mask(self.name, mask.astype(mx.float32), tuple(values.shape))
        self.state["total"] = self.state["total"] + mx.sum(values * weights)
        self.state["count"] = self.state["count"] + mx.sum(weights)

    def result(self) -> mx.array:
        return _safe_divide(self.state["total"], self.state["count"])


class _CountingMetric(Metric):
    """Fraction of valid items that are correct, with integer counts so they stay exact.

    `state["counts"]` is `[correct, count]`: one vector rather than two scalars, so that a
    compiled step adds both in one fused kernel (each kernel costs MLX's CPU scheduler several
    microseconds a step).
    """

    direction = "max"

    def __init__(self, *, name: str) -> None:
        super().__init__(name=name)
        self.state["counts"] = mx.zeros((2,), dtype=COUNT_DTYPE)

    def _add(self, correct: mx.array, mask: mx.array | None) -> None:
        count: int | mx.array
        if mask is None:
            hits, count = mx.sum(correct).astype(COUNT_DTYPE), correct.size  # a graph constant
        else:
            valid = _validity(self.name, mask, tuple(correct.shape))
            hits = mx.sum(correct & valid).astype(COUNT_DTYPE)
            count = mx.sum(valid).astype(COUNT_DTYPE)
        hits_or_count = mx.array([True, False])
        self.state["counts"] = self.state["counts"] + mx.where(hits_or_count, hits, count)

    def result(self) -> mx.array:
        correct, count = self.state["counts"]
        return _safe_divide(correct, count)


class Accuracy(_CountingMetric):
    """Fraction of correct predictions, for class indices, one-hot or binary targets.

    With `kind="auto"` the targets decide, classes running along the last axis of `outputs`:

    - targets with the class axis removed (`(B,)` for `(B, C)` outputs, `(B, H, W)` for NHWC
      segmentation logits): **sparse**, compared with `argmax(outputs)`;
    - targets of the same shape as `outputs` with more than one class: **categorical** (one-hot
      or probabilities), `argmax(outputs) == argmax(targets)`;
    - outputs with a single channel, `(..., 1)`: **binary**, predicting 1 where
      `outputs > threshold` and comparing with `targets > 0.5`.

    `argmax` works equally on logits and probabilities. The binary threshold defaults to 0, right
    for logits; for sigmoid probabilities pass `threshold=0.5`. Binary outputs without a trailing
    channel (`(B,)` or `(B, H, W)` maps) need `kind="binary"`, because they are indistinguishable
    from one-hot targets by shape. `mask` has the shape of the targets (sparse, binary) or of
    `outputs` without the class axis (categorical).

    Args:
        kind: `"auto"`, `"sparse"`, `"categorical"` or `"binary"`.
        threshold: Binary decision threshold on `outputs`.
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import Accuracy
        >>> metric = Accuracy()
        >>> metric.update(mx.array([[0.1, 0.9], [0.8, 0.2]]), mx.array([1, 1]))
        >>> metric.result().item()
        0.5
        >>> binary = Accuracy(kind="binary")
        >>> binary.update(mx.array([2.0, -1.0, 0.5]), mx.array([1.0, 0.0, 0.0]))
        >>> round(binary.result().item(), 4)
        0.6667
    """

    def __init__(
        self, *, kind: AccuracyKind = "auto", threshold: float = 0.0, name: str = "accuracy"
    ) -> None:
        _check_option("Accuracy", "kind", kind, get_args(AccuracyKind))
        super().__init__(name=name)
        self.kind = kind
        self.threshold = threshold

    def _resolve_kind(self, outputs: mx.array, targets: mx.array) -> str:
        out_shape, target_shape = tuple(outputs.shape), tuple(targets.shape)
        if self.kind != "auto":
            return self.kind
        if outputs.ndim < 2:
            raise ValueError(
                f"{self.name}: outputs need a class axis last, e.g. (B, C) or (B, 1). "
                f"Received: outputs.shape={out_shape}. For a single-logit binary model with "
                f"outputs of shape (B,), use Accuracy(kind='binary')."
            )
        if out_shape[-1] == 1 and target_shape in (out_shape, out_shape[:-1]):
            return "binary"
        if target_shape == out_shape:
            return "categorical"
        if target_shape == out_shape[:-1]:
            return "sparse"
        raise _shape_error(
            self.name,
            outputs,
            targets,
            f"class indices of shape {out_shape[:-1]} or one-hot targets of shape {out_shape}",
        )

    def update(self, outputs: mx.array, targets: mx.array, mask: mx.array | None = None) -> None:
        kind = self._resolve_kind(outputs, targets)
        out_shape, target_shape = tuple(outputs.shape), tuple(targets.shape)
        if kind == "binary":
            if target_shape not in (out_shape, out_shape[:-1]):
                raise _shape_error(
                    self.name, outputs, targets, "binary targets of the same shape as outputs"
                )
            predicted = (outputs > self.threshold).reshape(target_shape)
            correct = predicted == (targets > 0.5)
        elif kind == "categorical":
            if target_shape != out_shape:
                raise _shape_error(
                    self.name, outputs, targets, f"one-hot targets of shape {out_shape}"
                )
            correct = mx.argmax(outputs, axis=-1) == mx.argmax(targets, axis=-1)
        else:
            if target_shape != out_shape[:-1]:
                raise _shape_error(
                    self.name, outputs, targets, f"class indices of shape {out_shape[:-1]}"
                )
            # argmax's uint32 compares exactly with any integer targets (negatives included).
            correct = mx.argmax(outputs, axis=-1) == targets
        self._add(correct, mask)


class TopKAccuracy(_CountingMetric):
    """Fraction of items whose target class is among the `k` highest outputs.

    An item counts as correct when fewer than `k` classes score strictly higher than the target
    class, so ties are resolved in the prediction's favour. Targets are class indices (outputs'
    shape without the last axis) or one-hot (same shape, compared through `argmax`); indices
    outside `[0, C)` count as misses.

    Args:
        k: How many top classes count; at least 1 and at most the number of classes.
        name: Logged name; defaults to `"top_{k}_accuracy"`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import TopKAccuracy
        >>> metric = TopKAccuracy(k=2)
        >>> metric.update(mx.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]), mx.array([1, 2]))
        >>> metric.result().item()
        0.5
    """

    def __init__(self, k: int = 5, *, name: str | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"TopKAccuracy: k must be an integer >= 1. Received: k={k!r}.")
        super().__init__(name=name if name is not None else f"top_{k}_accuracy")
        self.k = k

    def update(self, outputs: mx.array, targets: mx.array, mask: mx.array | None = None) -> None:
        out_shape, target_shape = tuple(outputs.shape), tuple(targets.shape)
        if outputs.ndim < 2:
            raise ValueError(
                f"{self.name}: outputs need a class axis last, e.g. (B, C). "
                f"Received: outputs.shape={out_shape}."
            )
        num_classes = out_shape[-1]
        if self.k > num_classes:
            raise ValueError(
                f"{self.name}: k must not exceed the number of classes ({num_classes}). "
                f"Received: k={self.k}."
            )
        if target_shape == out_shape:
            labels = mx.argmax(targets, axis=-1).astype(mx.int32)
        elif target_shape == out_shape[:-1]:
            labels = targets.astype(mx.int32)
        else:
            raise _shape_error(
                self.name,
                outputs,
                targets,
                f"class indices of shape {out_shape[:-1]} or one-hot targets of shape {out_shape}",
            )
        in_range = (labels >= 0) & (labels < num_classes)
        safe_labels = mx.where(in_range, labels, 0)
        target_score = mx.take_along_axis(outputs, mx.expand_dims(safe_labels, -1), axis=-1)
        higher = mx.sum(outputs > target_score, axis=-1)
        self._add((higher < self.k) & in_range, mask)


class MeanIoU(Metric):
    """Mean intersection-over-union over classes, from a streamed confusion matrix.

    The state is a `(num_classes, num_classes)` int32 confusion matrix (rows: targets, columns:
    predictions), so results are exact and an all-reduce sum gives the global matrix. IoU of a
    class is `TP / (TP + FP + FN)`; the mean runs over the classes that occur in the targets or the
    predictions (classes absent from both are skipped, as in Keras). Targets outside
    `[0, num_classes)`, such as a void label 255, are ignored.

    Outputs are logits or probabilities with classes on the last axis and targets class indices
    (e.g. `(B, H, W, C)` and `(B, H, W)`), or one-hot targets of the same shape as the outputs, or
    integer predicted labels of the same shape as the targets.

    Args:
        num_classes: Number of classes, at least 2.
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import MeanIoU
        >>> metric = MeanIoU(num_classes=2)
        >>> metric.update(mx.array([0, 0, 1, 1]), mx.array([0, 1, 1, 1]))  # labels, not logits
        >>> round(metric.result().item(), 4)  # (1/2 + 2/3) / 2
        0.5833
    """

    direction = "max"

    def __init__(self, num_classes: int, *, name: str = "mean_iou") -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"MeanIoU: num_classes must be an integer >= 2. "
                f"Received: num_classes={num_classes!r}."
            )
        super().__init__(name=name)
        self.num_classes = num_classes
        self.state["confusion"] = mx.zeros((num_classes, num_classes), dtype=COUNT_DTYPE)

    def _labels(self, outputs: mx.array, targets: mx.array) -> tuple[mx.array, mx.array]:
        out_shape, target_shape = tuple(outputs.shape), tuple(targets.shape)
        if out_shape == target_shape and mx.issubdtype(outputs.dtype, mx.integer):
            return outputs.astype(mx.int32), targets.astype(mx.int32)
        if out_shape[-1:] != (self.num_classes,):
            raise ValueError(
                f"{self.name}: outputs must have num_classes={self.num_classes} channels on the "
                f"last axis, or be integer labels of the shape of targets. "
                f"Received: outputs.shape={out_shape}, outputs.dtype={outputs.dtype}."
            )
        predicted = mx.argmax(outputs, axis=-1).astype(mx.int32)
        if target_shape == out_shape:
            return predicted, mx.argmax(targets, axis=-1).astype(mx.int32)
        if target_shape == out_shape[:-1]:
            return predicted, targets.astype(mx.int32)
        raise _shape_error(
            self.name,
            outputs,
            targets,
            f"class indices of shape {out_shape[:-1]} or one-hot targets of shape {out_shape}",
        )

    def update(self, outputs: mx.array, targets: mx.array, mask: mx.array | None = None) -> None:
        predicted, labels = self._labels(outputs, targets)
        size = self.num_classes
        valid = _validity(self.name, mask, tuple(labels.shape))
        valid = valid & (labels >= 0) & (labels < size) & (predicted >= 0) & (predicted < size)
        cells = mx.where(valid, labels * size + predicted, 0).reshape(-1)
        # One batch's counts fit int32, whose scatter-add every backend has; the total is int64.
        ones = valid.reshape(-1).astype(mx.int32)
        batch = mx.zeros((size * size,), dtype=mx.int32).at[cells].add(ones)
        self.state["confusion"] += batch.reshape(size, size).astype(COUNT_DTYPE)

    def result(self) -> mx.array:
        confusion = self.state["confusion"]
        true_positive = mx.diagonal(confusion)
        union = mx.sum(confusion, axis=0) + mx.sum(confusion, axis=1) - true_positive
        # Absent classes get IoU 0 from `_safe_divide` and are left out of the count.
        iou = _safe_divide(true_positive, union)
        return _safe_divide(mx.sum(iou), mx.sum(union > 0))


class _ErrorMetric(Metric):
    """Mean of a per-pixel error over valid pixels, optionally per image then over images."""

    direction: Literal["min", "max"] | None = "min"

    def __init__(self, *, ignore_zero: bool, average: Average, name: str) -> None:
        _check_option(type(self).__name__, "average", average, get_args(Average))
        super().__init__(name=name)
        self.ignore_zero = ignore_zero
        self.average = average
        self.state["total"] = mx.array(0.0)
        self.state["count"] = mx.array(0, dtype=COUNT_DTYPE)

    @abc.abstractmethod
    def _error(self, outputs: mx.array, targets: mx.array) -> mx.array:
        """The per-element error, or 1/0 for hit/miss."""

    def _finish(self, mean: mx.array) -> mx.array:
        return mean

    def update(self, outputs: mx.array, targets: mx.array, mask: mx.array | None = None) -> None:
        if outputs.shape != targets.shape:
            raise _shape_error(self.name, outputs, targets, "outputs and targets of one shape")
        shape = tuple(targets.shape)
        if self.average == "images" and len(shape) < 2:
            raise ValueError(
                f"{self.name}: average='images' needs a batch axis and per-image axes, e.g. "
                f"(B, H, W). Received: targets.shape={shape}."
            )
        outputs, targets = outputs.astype(mx.float32), targets.astype(mx.float32)
        valid = _validity(self.name, mask, shape)
        if self.ignore_zero:
            valid = valid & (targets != 0)
        # `where` (not a product) so that inf or NaN at invalid pixels cannot leak into the sum.
        error = mx.where(valid, self._error(outputs, targets), 0.0)
        if self.average == "pixels":
            total, count = mx.sum(error), mx.sum(valid)
        else:
            axes = tuple(range(1, len(shape)))
            per_image_count = mx.sum(valid, axis=axes)
            per_image = self._finish(_safe_divide(mx.sum(error, axis=axes), per_image_count))
            has_pixels = per_image_count > 0
            total, count = mx.sum(mx.where(has_pixels, per_image, 0.0)), mx.sum(has_pixels)
        self.state["total"] = self.state["total"] + total
        self.state["count"] = self.state["count"] + count.astype(COUNT_DTYPE)

    def result(self) -> mx.array:
        mean = _safe_divide(self.state["total"], self.state["count"])
        return self._finish(mean) if self.average == "pixels" else mean


class MeanAbsoluteError(_ErrorMetric):
    """Mean of `|outputs - targets|` over all elements seen.

    Args:
        ignore_zero: Leave out elements whose target is exactly 0 (invalid depth).
        average: `"pixels"` averages every valid element of the set; `"images"` averages each
            sample first, then the samples that have a valid element.
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import MeanAbsoluteError
        >>> metric = MeanAbsoluteError()
        >>> metric.update(mx.array([1.0, 2.0]), mx.array([0.0, 0.0]))
        >>> metric.result().item()
        1.5
    """

    def __init__(
        self, *, ignore_zero: bool = False, average: Average = "pixels", name: str = "mae"
    ) -> None:
        super().__init__(ignore_zero=ignore_zero, average=average, name=name)

    def _error(self, outputs: mx.array, targets: mx.array) -> mx.array:
        return mx.abs(outputs - targets)


class MeanSquaredError(_ErrorMetric):
    """Mean of `(outputs - targets) ** 2` over all elements seen (Keras's `"mse"` metric).

    Args:
        ignore_zero: Leave out elements whose target is exactly 0.
        average: `"pixels"` or `"images"`, as in `MeanAbsoluteError`.
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import MeanSquaredError
        >>> metric = MeanSquaredError()
        >>> metric.update(mx.array([3.0, 0.0]), mx.array([0.0, 4.0]))
        >>> metric.result().item()  # (9 + 16) / 2
        12.5
    """

    def __init__(
        self, *, ignore_zero: bool = False, average: Average = "pixels", name: str = "mse"
    ) -> None:
        super().__init__(ignore_zero=ignore_zero, average=average, name=name)

    def _error(self, outputs: mx.array, targets: mx.array) -> mx.array:
        return mx.square(outputs - targets)


class RootMeanSquaredError(_ErrorMetric):
    """Square root of the mean of `(outputs - targets) ** 2` over all elements seen.

    The mean runs over the whole set before the root, so the result is the RMSE of the set, not
    a mean of batch RMSEs (with `average="images"`: the mean of per-image RMSEs).

    Args:
        ignore_zero: Leave out elements whose target is exactly 0 (invalid depth).
        average: `"pixels"` or `"images"`, as in `MeanAbsoluteError`.
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import RootMeanSquaredError
        >>> metric = RootMeanSquaredError()
        >>> metric.update(mx.array([3.0, 0.0]), mx.array([0.0, 4.0]))
        >>> round(metric.result().item(), 4)  # sqrt((9 + 16) / 2)
        3.5355
    """

    def __init__(
        self, *, ignore_zero: bool = False, average: Average = "pixels", name: str = "rmse"
    ) -> None:
        super().__init__(ignore_zero=ignore_zero, average=average, name=name)

    def _error(self, outputs: mx.array, targets: mx.array) -> mx.array:
        return mx.square(outputs - targets)

    def _finish(self, mean: mx.array) -> mx.array:
        return mx.sqrt(mean)


class RMSE(RootMeanSquaredError):
    """Depth RMSE: `RootMeanSquaredError` that by default ignores pixels whose target depth is 0.

    Eigen et al. (2014) define it over the valid pixels `T` of the whole test set,
    `sqrt(1/|T| * sum (d - d*)^2)`, which is `average="pixels"` (the default). Many public
    evaluation scripts instead average per-image RMSEs; `average="images"` gives that number.

    Args:
        ignore_zero: Leave out pixels whose target depth is exactly 0 (no sensor reading).
        average: `"pixels"` or `"images"`.
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import RMSE
        >>> metric = RMSE()
        >>> metric.update(mx.array([[1.0, 9.0]]), mx.array([[2.0, 0.0]]))  # the 0 is ignored
        >>> metric.result().item()
        1.0
    """

    def __init__(
        self, *, ignore_zero: bool = True, average: Average = "pixels", name: str = "rmse"
    ) -> None:
        super().__init__(ignore_zero=ignore_zero, average=average, name=name)


class AbsRel(_ErrorMetric):
    """Mean absolute relative depth error, `mean(|d - d*| / d*)` over valid pixels (Eigen et al.).

    Args:
        ignore_zero: Leave out pixels whose target depth is exactly 0; with `False` such pixels
            give `inf`, as the formula does.
        average: `"pixels"` (the paper's mean over all valid pixels of the set) or `"images"`
            (mean of per-image values, as many evaluation scripts compute).
        name: Logged name.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import AbsRel
        >>> metric = AbsRel()
        >>> metric.update(mx.array([[1.5, 3.0, 7.0]]), mx.array([[1.0, 4.0, 0.0]]))
        >>> metric.result().item()  # (0.5 + 0.25) / 2
        0.375
    """

    def __init__(
        self, *, ignore_zero: bool = True, average: Average = "pixels", name: str = "abs_rel"
    ) -> None:
        super().__init__(ignore_zero=ignore_zero, average=average, name=name)

    def _error(self, outputs: mx.array, targets: mx.array) -> mx.array:
        return mx.abs(outputs - targets) / targets


def _delta_name(threshold: float) -> str:
    for power in (1, 2, 3):
        if math.isclose(threshold, 1.25**power):
            return "delta_1.25" if power == 1 else f"delta_1.25^{power}"
    return f"delta_{threshold:g}"


class DeltaAccuracy(_ErrorMetric):
    """Threshold accuracy: the fraction of valid pixels with `max(d / d*, d* / d) < threshold`.

    The standard thresholds are 1.25, 1.25² and 1.25³ (Eigen et al., 2014), named
    `"delta_1.25"`, `"delta_1.25^2"` and `"delta_1.25^3"`. Predictions that are not positive
    count as misses (a negative ratio would otherwise pass the test).

    Args:
        threshold: The ratio bound, greater than 1.
        ignore_zero: Leave out pixels whose target depth is exactly 0.
        average: `"pixels"` or `"images"`, as in `AbsRel`.
        name: Logged name; derived from `threshold` by default.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.metrics import DeltaAccuracy
        >>> metric = DeltaAccuracy()
        >>> metric.update(mx.array([[1.1, 2.0, -1.0]]), mx.array([[1.0, 1.0, 1.0]]))
        >>> round(metric.result().item(), 4)  # only 1.1 / 1.0 < 1.25
        0.3333
        >>> DeltaAccuracy(1.25**2).name
        'delta_1.25^2'
    """

    direction = "max"

    def __init__(
        self,
        threshold: float = 1.25,
        *,
        ignore_zero: bool = True,
        average: Average = "pixels",
        name: str | None = None,
    ) -> None:
        if not threshold > 1:
            raise ValueError(
                f"DeltaAccuracy: threshold must be greater than 1. "
                f"Received: threshold={threshold!r}."
            )
        super().__init__(
            ignore_zero=ignore_zero,
            average=average,
            name=name if name is not None else _delta_name(threshold),
        )
        self.threshold = threshold

    def _error(self, outputs: mx.array, targets: mx.array) -> mx.array:
        ratio = mx.maximum(outputs / targets, targets / outputs)
        return ((ratio < self.threshold) & (outputs > 0)).astype(mx.float32)


_FACTORIES: dict[str, Callable[[], Metric]] = {
    "mean": Mean,
    "accuracy": Accuracy,
    # Keras's names: each logs under its own name and means what it means in Keras.
    "acc": lambda: Accuracy(name="acc"),
    "sparse_categorical_accuracy": lambda: Accuracy(
        kind="sparse", name="sparse_categorical_accuracy"
    ),
    "categorical_accuracy": lambda: Accuracy(kind="categorical", name="categorical_accuracy"),
    # Keras's binary accuracy reads probabilities: 1 above 0.5.
    "binary_accuracy": lambda: Accuracy(kind="binary", threshold=0.5, name="binary_accuracy"),
    "mse": MeanSquaredError,
    "mean_squared_error": lambda: MeanSquaredError(name="mean_squared_error"),
    "top_k_accuracy": TopKAccuracy,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": lambda: MeanAbsoluteError(name="mean_absolute_error"),
    "rmse": RootMeanSquaredError,
    "root_mean_squared_error": lambda: RootMeanSquaredError(name="root_mean_squared_error"),
    "abs_rel": AbsRel,
    "depth_rmse": RMSE,
    "delta_1.25": lambda: DeltaAccuracy(1.25),
    "delta_1.25^2": lambda: DeltaAccuracy(1.25**2),
    "delta_1.25^3": lambda: DeltaAccuracy(1.25**3),
}

_OBJECT_ONLY = {"mean_iou": "MeanIoU(num_classes=...)"}


def names() -> tuple[str, ...]:
    """Returns the metric names that `get` resolves, sorted.

    `"mean_iou"` is not among them: it needs `num_classes`, so pass a `MeanIoU` object.

    Example:
        >>> from mlxkit.metrics import names
        >>> "abs_rel" in names()
        True
    """
    return tuple(sorted(_FACTORIES))


def get(name_or_metric: str | Metric) -> Metric:
    """Makes a fresh metric from a name, or passes a `Metric` object through unchanged.

    `"rmse"` is the plain `RootMeanSquaredError`; the depth variant that ignores zero targets is
    `"depth_rmse"` (both log as `"rmse"`). `"top_k_accuracy"` uses k=5. Keras's names
    (`"sparse_categorical_accuracy"`, `"categorical_accuracy"`, `"binary_accuracy"`, `"acc"`,
    `"mse"`, `"mean_squared_error"`, `"mean_absolute_error"`, ...) mean what they mean in Keras and
    log under the name given, as Keras does.

    Args:
        name_or_metric: A name from `names()` or a `Metric` instance.

    Returns:
        The metric; a new object for each name lookup.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones) or `"mean_iou"`, which
            needs `num_classes` and so must be passed as an object.
        TypeError: For anything that is neither a string nor a `Metric`.

    Example:
        >>> from mlxkit import metrics
        >>> metrics.get("accuracy").name
        'accuracy'
        >>> metrics.get(metrics.MeanIoU(num_classes=3)).name
        'mean_iou'
    """
    if isinstance(name_or_metric, Metric):
        return name_or_metric
    if isinstance(name_or_metric, str):
        if name_or_metric in _FACTORIES:
            return _FACTORIES[name_or_metric]()
        if name_or_metric in _OBJECT_ONLY:
            raise ValueError(
                f"Metric {name_or_metric!r} needs arguments, so it cannot be made from a name. "
                f"Received: name_or_metric={name_or_metric!r}. "
                f"Pass an object instead: metrics.{_OBJECT_ONLY[name_or_metric]}."
            )
        raise ValueError(
            f"Unknown metric name. Received: name_or_metric={name_or_metric!r}. "
            f"Expected one of: {', '.join(names())}, or a Metric object "
            f"(mean_iou is object-only: {_OBJECT_ONLY['mean_iou']})."
        )
    raise TypeError(
        f"A metric must be a name or a Metric object. Received: name_or_metric="
        f"{name_or_metric!r} of type {type(name_or_metric).__name__}. "
        f"Expected one of: {', '.join(names())}, or a Metric object."
    )
