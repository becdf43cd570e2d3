"""Loss functions: pure `fn(outputs, targets, *, ..., reduction="mean")` callables, and a registry.

Every loss validates its arguments before any maths runs, so a mistake surfaces as a clear Python
error rather than deep inside a compiled step. All of them share one set of reductions: `"mean"`
(the default everywhere), `"sum"` and `"none"`.

Example:
    >>> import mlx.core as mx
    >>> from mlxkit import losses
    >>> logits = mx.array([[2.0, -1.0], [-1.0, 2.0]])
    >>> losses.cross_entropy(logits, mx.array([0, 1])).item()  # doctest: +ELLIPSIS
    0.0485...
    >>> losses.get("mse") is losses.mse
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal, get_args

import mlx.core as mx
import mlx.nn as nn

__all__ = [
    "ALL",
    "Reduction",
    "binary_cross_entropy",
    "binary_crossentropy",
    "categorical_crossentropy",
    "cosine_similarity",
    "cross_entropy",
    "depth_loss",
    "get",
    "huber",
    "mae",
    "mse",
    "names",
    "sparse_categorical_crossentropy",
    "weighted_mean",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS: tuple[str, ...] = get_args(Reduction)

LossFunction = Callable[..., mx.array]


def _check_reduction(reduction: object) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"Unknown reduction. Received: reduction={reduction!r}. "
            f"Expected one of {', '.join(repr(r) for r in _REDUCTIONS)}."
        )


def _reduce(loss: mx.array, reduction: Reduction) -> mx.array:
    if reduction == "mean":
        return mx.mean(loss)
    if reduction == "sum":
        return mx.sum(loss)
    return loss


def weighted_mean(losses: mx.array, sample_weight: mx.array) -> mx.array:
    """Keras's `"sum_over_batch_size"` reduction with sample weights: `sum(losses * w) / size`.

    The divisor is the number of loss values, not the sum of the weights (as in Keras), so a
    weight of 0 removes a sample's contribution and a weight of 2 doubles it. Weights with fewer
    dimensions than `losses` (one per sample, say) broadcast over the trailing axes.

    Args:
        losses: Unreduced losses (`reduction="none"`), samples along the first axis.
        sample_weight: One weight per sample, or one per loss value.

    Returns:
        The scalar weighted loss.

    Example:
        >>> weighted_mean(mx.array([1.0, 3.0]), mx.array([2.0, 0.0])).item()
        1.0
    """
    weights = sample_weight.astype(losses.dtype)
    if weights.ndim < losses.ndim:
        weights = weights.reshape(weights.shape + (1,) * (losses.ndim - weights.ndim))
    elif weights.ndim > losses.ndim:
        # A (batch, 1) column of weights against one loss per sample.
        weights = weights.reshape(weights.shape[: losses.ndim])
    return mx.sum(losses * weights) / losses.size


def _check_same_shape(function: str, outputs: mx.array, targets: mx.array) -> None:
    if outputs.shape != targets.shape:
        raise ValueError(
            f"{function}: outputs and targets must have the same shape. "
            f"Received: outputs.shape={tuple(outputs.shape)}, "
            f"targets.shape={tuple(targets.shape)}. Reshape one of them (for example "
            f"`targets.reshape(outputs.shape)`) so that they match."
        )


def _check_label_smoothing(function: str, label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"{function}: label_smoothing must lie in [0, 1). "
            f"Received: label_smoothing={label_smoothing!r}."
        )


def _normalize_axes(
    function: str, argument: str, axis: int | tuple[int, ...], ndim: int
) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes or any(not isinstance(a, int) or not -ndim <= a < ndim for a in axes):
        raise ValueError(
            f"{function}: {argument} is out of range for arrays with {ndim} dimensions. "
            f"Received: {argument}={axis!r}. Expected integers in [{-ndim}, {ndim - 1}]."
        )
    normalized = tuple(sorted({a % ndim for a in axes}))
    if len(normalized) != len(axes):
        raise ValueError(
            f"{function}: {argument} names the same axis twice. Received: {argument}={axis!r}."
        )
    return normalized


def cross_entropy(
    outputs: mx.array,
    targets: mx.array,
    *,
    axis: int = -1,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
) -> mx.array:
    """Softmax cross-entropy between logits and class targets.

    The kind of target is read from its shape and dtype:

    - **class indices**: an integer array with the class axis of `outputs` removed, e.g. logits
      `(B, C)` with targets `(B,)`, or NHWC segmentation logits `(B, H, W, C)` with targets
      `(B, H, W)`;
    - **probabilities / one-hot**: an array of the same shape as `outputs`.

    Indices outside `[0, C)` are not checked (that would need a device sync inside compiled code)
    and give undefined values; with a void label, use `reduction="none"` and mask it out.

    Args:
        outputs: Unnormalised logits with the classes along `axis`.
        targets: Class indices or per-class probabilities, as described above.
        axis: The class axis of `outputs`. Defaults to the last axis (channels-last).
        label_smoothing: Mixes the targets with the uniform distribution over classes:
            `(1 - label_smoothing) * targets + label_smoothing / C`. Must lie in `[0, 1)`.
        reduction: `"mean"` over every item, `"sum"`, or `"none"` to return one loss per item
            (the shape of `outputs` without `axis`).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction`, an out-of-range `axis` or `label_smoothing`,
            targets whose shape fits neither kind, or float class indices.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import cross_entropy
        >>> logits = mx.zeros((2, 4, 4, 3))  # NHWC segmentation logits
        >>> labels = mx.zeros((2, 4, 4), dtype=mx.int32)
        >>> round(cross_entropy(logits, labels).item(), 4)  # log(3)
        1.0986
    """
    _check_reduction(reduction)
    _check_label_smoothing("cross_entropy", label_smoothing)
    (axis,) = _normalize_axes("cross_entropy", "axis", axis, outputs.ndim)
    index_shape = tuple(outputs.shape[:axis]) + tuple(outputs.shape[axis + 1 :])
    if targets.ndim == outputs.ndim:
        _check_same_shape("cross_entropy (probability targets)", outputs, targets)
        targets = targets.astype(outputs.dtype)
    elif tuple(targets.shape) == index_shape:
        if not mx.issubdtype(targets.dtype, mx.integer):
            raise ValueError(
                f"cross_entropy: class-index targets must have an integer dtype. "
                f"Received: targets.dtype={targets.dtype}. Use `targets.astype(mx.int32)`, "
                f"or pass one-hot/probability targets of shape {tuple(outputs.shape)}."
            )
    else:
        raise ValueError(
            f"cross_entropy: targets must be class indices of shape {index_shape} or "
            f"probabilities of shape {tuple(outputs.shape)} (the shape of outputs). "
            f"Received: outputs.shape={tuple(outputs.shape)}, targets.shape="
            f"{tuple(targets.shape)}, axis={axis}."
        )
    loss = nn.losses.cross_entropy(
        outputs, targets, axis=axis, label_smoothing=label_smoothing, reduction="none"
    )
    return _reduce(loss, reduction)


def binary_cross_entropy(
    outputs: mx.array,
    targets: mx.array,
    *,
    from_logits: bool = True,
    reduction: Reduction = "mean",
) -> mx.array:
    """Binary cross-entropy, elementwise, for one or many independent yes/no labels.

    Logits are the default because `log(1 + exp(x)) - x * t` is exact where computing the sigmoid
    first and then its log loses precision; with `from_logits=False` the log-probabilities are
    clipped at -100, as PyTorch and MLX do, so that a probability of exactly 0 or 1 stays finite.

    Args:
        outputs: Logits (or probabilities if `from_logits=False`), same shape as `targets`.
        targets: Targets in `[0, 1]` (hard labels or soft probabilities).
        from_logits: Whether `outputs` are logits rather than probabilities.
        reduction: `"mean"`, `"sum"` or `"none"` (elementwise losses, shape of `outputs`).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction` or mismatched shapes.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import binary_cross_entropy
        >>> round(binary_cross_entropy(mx.array([0.0]), mx.array([1.0])).item(), 4)  # log(2)
        0.6931
    """
    _check_reduction(reduction)
    _check_same_shape("binary_cross_entropy", outputs, targets)
    loss = nn.losses.binary_cross_entropy(
        outputs, targets, with_logits=from_logits, reduction="none"
    )
    return _reduce(loss, reduction)


# Keras backends clip probabilities to [EPSILON, 1 - EPSILON] before taking their log.
EPSILON = 1e-7


def _log_probabilities(outputs: mx.array, axis: int, from_logits: bool) -> mx.array:
    if from_logits:
        return outputs - mx.logsumexp(outputs, axis=axis, keepdims=True)
    # Keras renormalises probabilities that do not sum to 1, then clips them.
    probabilities = outputs / mx.sum(outputs, axis=axis, keepdims=True)
    return mx.log(mx.clip(probabilities, EPSILON, 1.0 - EPSILON))


def categorical_crossentropy(
    outputs: mx.array,
    targets: mx.array,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    reduction: Reduction = "mean",
) -> mx.array:
    """Keras's categorical cross-entropy: **probabilities** by default, one-hot targets.

    This is the loss behind Keras's name `"categorical_crossentropy"`, with Keras's default
    `from_logits=False`: `outputs` are probabilities (a softmax output layer), which are
    renormalised to sum to 1 and clipped to `[1e-7, 1 - 1e-7]` as Keras does. For logits, the MLX
    convention, pass `from_logits=True` or use `cross_entropy`.

    Args:
        outputs: Probabilities (or logits with `from_logits=True`), classes along `axis`.
        targets: One-hot or probability targets, the shape of `outputs`.
        from_logits: Whether `outputs` are logits.
        label_smoothing: Mixes the targets with the uniform distribution, in `[0, 1)`.
        axis: The class axis.
        reduction: `"mean"`, `"sum"` or `"none"` (one loss per item).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction`, `label_smoothing` out of range or mismatched
            shapes.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import categorical_crossentropy
        >>> probabilities = mx.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
        >>> one_hot = mx.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        >>> round(categorical_crossentropy(probabilities, one_hot).item(), 4)  # -(ln .9 + ln .8)/2
        0.1643
    """
    _check_reduction(reduction)
    _check_label_smoothing("categorical_crossentropy", label_smoothing)
    _check_same_shape("categorical_crossentropy", outputs, targets)
    (axis,) = _normalize_axes("categorical_crossentropy", "axis", axis, outputs.ndim)
    targets = targets.astype(mx.float32)
    if label_smoothing:
        classes = outputs.shape[axis]
        targets = targets * (1.0 - label_smoothing) + label_smoothing / classes
    loss = -mx.sum(targets * _log_probabilities(outputs, axis, from_logits), axis=axis)
    return _reduce(loss, reduction)


def sparse_categorical_crossentropy(
    outputs: mx.array,
    targets: mx.array,
    *,
    from_logits: bool = False,
    axis: int = -1,
    reduction: Reduction = "mean",
) -> mx.array:
    """Keras's sparse categorical cross-entropy: **probabilities** by default, class indices.

    This is the loss behind Keras's name `"sparse_categorical_crossentropy"`, with Keras's default
    `from_logits=False`: `outputs` are probabilities (a softmax output layer). For logits, the MLX
    convention, pass `from_logits=True` or use `cross_entropy`. Targets are integer class indices
    of the shape of `outputs` without the class axis; a trailing axis of size 1 (`(B, 1)`) is
    accepted, as in Keras.

    Args:
        outputs: Probabilities (or logits with `from_logits=True`), classes along `axis`.
        targets: Integer class indices.
        from_logits: Whether `outputs` are logits.
        axis: The class axis.
        reduction: `"mean"`, `"sum"` or `"none"` (one loss per item).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction`, float targets or targets of the wrong shape.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import sparse_categorical_crossentropy
        >>> probabilities = mx.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
        >>> round(sparse_categorical_crossentropy(probabilities, mx.array([0, 1])).item(), 4)
        0.1643
    """
    _check_reduction(reduction)
    (axis,) = _normalize_axes("sparse_categorical_crossentropy", "axis", axis, outputs.ndim)
    index_shape = tuple(outputs.shape[:axis]) + tuple(outputs.shape[axis + 1 :])
    if targets.ndim == outputs.ndim and targets.shape[axis] == 1:
        targets = mx.squeeze(targets, axis=axis)
    if tuple(targets.shape) != index_shape or not mx.issubdtype(targets.dtype, mx.integer):
        raise ValueError(
            f"sparse_categorical_crossentropy: targets must be integer class indices of shape "
            f"{index_shape}. Received: targets.shape={tuple(targets.shape)}, targets.dtype="
            f"{targets.dtype}. For one-hot targets use categorical_crossentropy."
        )
    log_probabilities = _log_probabilities(outputs, axis, from_logits)
    picked = mx.take_along_axis(log_probabilities, mx.expand_dims(targets, axis), axis=axis)
    return _reduce(-mx.squeeze(picked, axis=axis), reduction)


def binary_crossentropy(
    outputs: mx.array,
    targets: mx.array,
    *,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
) -> mx.array:
    """Keras's binary cross-entropy: **probabilities** by default, clipped as Keras clips them.

    This is the loss behind Keras's name `"binary_crossentropy"`, with Keras's default
    `from_logits=False`: `outputs` are probabilities (a sigmoid output layer), clipped to
    `[1e-7, 1 - 1e-7]`. mlxkit's own `binary_cross_entropy` takes logits by default.

    Args:
        outputs: Probabilities (or logits with `from_logits=True`), the shape of `targets`.
        targets: Targets in `[0, 1]`.
        from_logits: Whether `outputs` are logits.
        label_smoothing: Squeezes the targets towards 0.5: `t * (1 - s) + s / 2`, in `[0, 1)`.
        reduction: `"mean"`, `"sum"` or `"none"` (elementwise).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction`, `label_smoothing` out of range or mismatched
            shapes.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import binary_crossentropy
        >>> round(binary_crossentropy(mx.array([0.8, 0.4]), mx.array([1.0, 0.0])).item(), 4)
        0.367
    """
    _check_reduction(reduction)
    _check_label_smoothing("binary_crossentropy", label_smoothing)
    _check_same_shape("binary_crossentropy", outputs, targets)
    targets = targets.astype(mx.float32)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        loss = nn.losses.binary_cross_entropy(outputs, targets, with_logits=True, reduction="none")
    else:
        probabilities = mx.clip(outputs, EPSILON, 1.0 - EPSILON)
        loss = -(targets * mx.log(probabilities) + (1 - targets) * mx.log(1 - probabilities))
    return _reduce(loss, reduction)


def mse(outputs: mx.array, targets: mx.array, *, reduction: Reduction = "mean") -> mx.array:
    """Mean squared error, `(outputs - targets) ** 2`.

    Args:
        outputs: Predictions.
        targets: Targets, same shape as `outputs`.
        reduction: `"mean"`, `"sum"` or `"none"` (elementwise).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction` or mismatched shapes.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import mse
        >>> mse(mx.array([1.0, 2.0]), mx.array([0.0, 0.0])).item()
        2.5
    """
    _check_reduction(reduction)
    _check_same_shape("mse", outputs, targets)
    return _reduce(mx.square(outputs - targets), reduction)


def mae(outputs: mx.array, targets: mx.array, *, reduction: Reduction = "mean") -> mx.array:
    """Mean absolute error, `|outputs - targets|`.

    Args:
        outputs: Predictions.
        targets: Targets, same shape as `outputs`.
        reduction: `"mean"`, `"sum"` or `"none"` (elementwise).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction` or mismatched shapes.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import mae
        >>> mae(mx.array([1.0, -3.0]), mx.array([0.0, 0.0])).item()
        2.0
    """
    _check_reduction(reduction)
    _check_same_shape("mae", outputs, targets)
    return _reduce(mx.abs(outputs - targets), reduction)


def huber(
    outputs: mx.array,
    targets: mx.array,
    *,
    delta: float = 1.0,
    reduction: Reduction = "mean",
) -> mx.array:
    """Huber loss: quadratic for errors up to `delta`, linear beyond it.

    `0.5 * e**2` where `|e| <= delta`, else `delta * (|e| - 0.5 * delta)`, with
    `e = outputs - targets` (the convention of MLX, PyTorch and Keras).

    Args:
        outputs: Predictions.
        targets: Targets, same shape as `outputs`.
        delta: Where the loss turns from quadratic to linear; must be positive.
        reduction: `"mean"`, `"sum"` or `"none"` (elementwise).

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction`, a non-positive `delta` or mismatched shapes.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import huber
        >>> huber(mx.array([0.5, 3.0]), mx.array([0.0, 0.0]), reduction="none").tolist()
        [0.125, 2.5]
    """
    _check_reduction(reduction)
    if not delta > 0:
        raise ValueError(f"huber: delta must be positive. Received: delta={delta!r}.")
    _check_same_shape("huber", outputs, targets)
    loss = nn.losses.huber_loss(outputs, targets, delta=delta, reduction="none")
    return _reduce(loss, reduction)


def _cosine(outputs: mx.array, targets: mx.array, axes: tuple[int, ...], eps: float) -> mx.array:
    dot = mx.sum(outputs * targets, axis=axes)
    norms = mx.sqrt(mx.sum(mx.square(outputs), axis=axes)) * mx.sqrt(
        mx.sum(mx.square(targets), axis=axes)
    )
    return dot / mx.maximum(norms, eps)


def cosine_similarity(
    outputs: mx.array,
    targets: mx.array,
    *,
    axis: int | tuple[int, ...] = -1,
    eps: float = 1e-8,
    reduction: Reduction = "mean",
) -> mx.array:
    """Cosine similarity along `axis`: `sum(o * t) / max(|o| * |t|, eps)`.

    This returns the **similarity** (1 for aligned vectors, -1 for opposite ones), as
    `mlx.nn.losses.cosine_similarity_loss` does, so minimising it pushes vectors apart; to train
    towards agreement minimise `1 - cosine_similarity(...)`. For that reason `get` does not resolve
    `"cosine_similarity"` as a loss name.

    The default `axis=-1` is the feature axis of channels-last data; MLX's own function defaults to
    `axis=1`. A tuple of axes treats them as one flattened vector.

    Args:
        outputs: First set of vectors.
        targets: Second set of vectors, same shape as `outputs`.
        axis: The vector axis, or several axes taken together.
        eps: Lower bound on the product of the norms, so that a zero vector gives 0, not NaN.
        reduction: `"mean"`, `"sum"` or `"none"` (one similarity per vector).

    Returns:
        The similarity, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction`, an out-of-range `axis`, a non-positive `eps` or
            mismatched shapes.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import cosine_similarity
        >>> a = mx.array([[1.0, 0.0], [1.0, 1.0]])
        >>> b = mx.array([[2.0, 0.0], [-1.0, -1.0]])
        >>> [round(x, 4) for x in cosine_similarity(a, b, reduction="none").tolist()]
        [1.0, -1.0]
    """
    _check_reduction(reduction)
    if not eps > 0:
        raise ValueError(f"cosine_similarity: eps must be positive. Received: eps={eps!r}.")
    _check_same_shape("cosine_similarity", outputs, targets)
    axes = _normalize_axes("cosine_similarity", "axis", axis, outputs.ndim)
    return _reduce(_cosine(outputs, targets, axes, eps), reduction)


def depth_loss(
    outputs: mx.array,
    targets: mx.array,
    *,
    mask: mx.array | None = None,
    delta: float = 1.0,
    cosine_weight: float = 0.5,
    cosine_axis: int | tuple[int, ...] | None = None,
    eps: float = 1e-8,
    reduction: Reduction = "mean",
) -> mx.array:
    """Depth-map regression loss: Huber plus `cosine_weight * (1 - cosine similarity)`.

    This is the loss of the MLX depth-map article (edge.aif.tw, "application-apple-mlx-framework"),
    which trained with

    ```python
    huber = nn.losses.huber_loss(pred, y, reduction="mean")
    cosine = nn.losses.cosine_similarity_loss(pred, y, reduction="mean")
    loss = huber + (1 - cosine) * 0.5
    ```

    MLX's `cosine_similarity_loss` defaults to `axis=1`, which on NHWC depth maps `(B, H, W, 1)`
    compares each image **column** (a vector over H), so the article's shape term is the mean over
    columns of a per-column similarity; on NCHW data the same call would compare channels
    instead. By default mlxkit compares each sample's **whole depth map**, flattened, which means
    the same thing whatever the layout, judges the global structure of the map independent of its
    scale (the Huber term already handles scale), and is not skewed by columns that happen to be
    all zeros. Pass `cosine_axis=1` to reproduce the article exactly: without a mask,
    `depth_loss(pred, y, cosine_axis=1)` equals the snippet above.

    Each sample's loss is its mean Huber error plus the weighted mean of `1 - cosine` over its
    vectors (one vector by default); `"mean"` averages the samples.

    Args:
        outputs: Predicted depth, shape `(B, ...)` such as `(B, H, W, 1)`.
        targets: Target depth, same shape as `outputs`.
        mask: Optional validity mask broadcastable to `targets` (nonzero = valid), e.g.
            `targets > 0` for sensors that write 0 where they have no reading. Invalid pixels are
            left out of the Huber mean and zeroed in both maps before the cosine; vectors with no
            valid pixel (and samples with none) contribute 0 and are left out of the averages.
        delta: Huber threshold; must be positive.
        cosine_weight: Weight of the `1 - cosine` term (the article's 0.5).
        cosine_axis: The axes the cosine runs over. `None` (default): every axis but the batch
            axis. `1`: the article's choice. The batch axis 0 is not allowed.
        eps: Lower bound on the product of the norms in the cosine.
        reduction: `"mean"` over samples, `"sum"`, or `"none"` for one loss per sample `(B,)`.

    Returns:
        The loss, a scalar unless `reduction="none"`.

    Raises:
        ValueError: For an unknown `reduction`, mismatched shapes, arrays without a batch axis, a
            `cosine_axis` that is out of range or includes the batch axis, a mask that does not
            broadcast, or a non-positive `delta` / `eps`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.losses import depth_loss
        >>> depth = mx.ones((2, 8, 8, 1))
        >>> depth_loss(2 * depth, depth).item()  # Huber 0.5; same direction, so cosine 1
        0.5
        >>> article = depth_loss(2 * depth, depth, cosine_axis=1)  # compare columns, as MLX does
    """
    _check_reduction(reduction)
    if not delta > 0:
        raise ValueError(f"depth_loss: delta must be positive. Received: delta={delta!r}.")
    if not eps > 0:
        raise ValueError(f"depth_loss: eps must be positive. Received: eps={eps!r}.")
    _check_same_shape("depth_loss", outputs, targets)
    if outputs.ndim < 2:
        raise ValueError(
            f"depth_loss: outputs need a batch axis and at least one more axis, e.g. (B, H, W, 1). "
            f"Received: outputs.shape={tuple(outputs.shape)}."
        )
    sample_axes = tuple(range(1, outputs.ndim))
    if cosine_axis is None:
        cosine_axes = sample_axes
    else:
        cosine_axes = _normalize_axes("depth_loss", "cosine_axis", cosine_axis, outputs.ndim)
        if 0 in cosine_axes:
            raise ValueError(
                f"depth_loss: cosine_axis must not include the batch axis 0, because each sample "
                f"gets its own loss. Received: cosine_axis={cosine_axis!r}. Use None for the "
                f"whole per-sample map or 1 for the MLX article's choice."
            )

    error = nn.losses.huber_loss(outputs, targets, delta=delta, reduction="none")
    if mask is None:
        huber_term = mx.mean(error, axis=sample_axes)
        cosine = _cosine(outputs, targets, cosine_axes, eps)
        cosine_term = 1 - cosine
        if cosine_term.ndim > 1:
            cosine_term = mx.mean(cosine_term, axis=tuple(range(1, cosine_term.ndim)))
    else:
        try:
            valid = mx.broadcast_to(mask != 0, outputs.shape).astype(outputs.dtype)
        except ValueError as error_:
            raise ValueError(
                f"depth_loss: mask must broadcast to the shape of targets. "
                f"Received: mask.shape={tuple(mask.shape)}, targets.shape="
                f"{tuple(targets.shape)}."
            ) from error_
        huber_term = mx.sum(error * valid, axis=sample_axes) / mx.maximum(
            mx.sum(valid, axis=sample_axes), 1
        )
        cosine = _cosine(outputs * valid, targets * valid, cosine_axes, eps)
        # A vector with no valid pixel has cosine 0 whatever the prediction: a constant that
        # would only bias the average, so it is left out.
        vector_valid = (mx.sum(valid, axis=cosine_axes) > 0).astype(outputs.dtype)
        cosine_term = (1 - cosine) * vector_valid
        if cosine_term.ndim > 1:
            rest = tuple(range(1, cosine_term.ndim))
            cosine_term = mx.sum(cosine_term, axis=rest) / mx.maximum(
                mx.sum(vector_valid, axis=rest), 1
            )
    return _reduce(huber_term + cosine_weight * cosine_term, reduction)


_LOSSES: dict[str, LossFunction] = {
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    # Keras's names take probabilities by default (from_logits=False), as in Keras.
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "binary_crossentropy": binary_crossentropy,
    "mse": mse,
    "mean_squared_error": mse,
    "mae": mae,
    "mean_absolute_error": mae,
    "huber": huber,
    "depth_loss": depth_loss,
}

ALL: Mapping[str, LossFunction] = MappingProxyType(_LOSSES)
"""Read-only mapping from every name `get` accepts to its loss function.

Example:
    >>> from mlxkit.losses import ALL
    >>> ALL["mae"].__name__
    'mae'
"""


def names() -> tuple[str, ...]:
    """Returns the loss names that `get` resolves, sorted.

    Example:
        >>> from mlxkit.losses import names
        >>> "cross_entropy" in names()
        True
    """
    return tuple(sorted(_LOSSES))


def get(name_or_callable: str | LossFunction) -> LossFunction:
    """Resolves a loss given by name, or passes a callable through unchanged.

    Configure a loss with `functools.partial`, e.g. `partial(losses.huber, delta=0.5)`.
    `"cosine_similarity"` is deliberately not a loss name: it returns a similarity, which a
    trainer would minimise the wrong way (see `cosine_similarity`).

    Args:
        name_or_callable: A name from `names()` or any callable `(outputs, targets) -> mx.array`.

    Returns:
        The loss function.

    Raises:
        ValueError: For an unknown name; the message lists the valid ones.
        TypeError: For anything that is neither a string nor callable.

    Example:
        >>> from functools import partial
        >>> from mlxkit import losses
        >>> losses.get("cross_entropy") is losses.cross_entropy
        True
        >>> smooth = losses.get(partial(losses.cross_entropy, label_smoothing=0.1))
    """
    if isinstance(name_or_callable, str):
        if name_or_callable in _LOSSES:
            return _LOSSES[name_or_callable]
        hint = (
            " cosine_similarity returns a similarity, not a loss: minimise "
            "`1 - losses.cosine_similarity(outputs, targets)` or use 'depth_loss'."
            if name_or_callable == "cosine_similarity"
            else ""
        )
        raise ValueError(
            f"Unknown loss name. Received: name_or_callable={name_or_callable!r}. "
            f"Expected one of: {', '.join(names())}, or a callable.{hint}"
        )
    if callable(name_or_callable):
        return name_or_callable
    raise TypeError(
        f"A loss must be a name or a callable. Received: name_or_callable={name_or_callable!r} "
        f"of type {type(name_or_callable).__name__}. Expected one of: {', '.join(names())}, "
        f"or a callable (outputs, targets) -> mx.array."
    )
