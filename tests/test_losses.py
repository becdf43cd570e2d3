"""Tests for mlxkit.losses against NumPy references written here, independently of the library."""

from __future__ import annotations

from functools import partial

from mlxkit import losses

import numpy as np
import pytest

import mlx.core as mx  # isort: skip  (after mlxkit, which loads the fast BLAS first)
import mlx.nn as nn  # isort: skip

RNG = np.random.default_rng(0)
REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return np.asarray(values.mean())
    if reduction == "sum":
        return np.asarray(values.sum())
    return values


def _check(actual: mx.array, expected: np.ndarray, *, rtol: float = 1e-5, atol: float = 1e-6):
    actual_np = np.array(actual)
    assert actual_np.shape == np.shape(expected)
    np.testing.assert_allclose(actual_np, expected, rtol=rtol, atol=atol)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _one_hot(labels: np.ndarray, classes: int, axis: int = -1) -> np.ndarray:
    return np.moveaxis(np.eye(classes)[labels], -1, axis)


# --- cross_entropy -------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_indices(reduction):
    logits = RNG.normal(size=(6, 5)).astype(np.float32)
    labels = RNG.integers(0, 5, size=6)
    expected = -_log_softmax(logits, -1)[np.arange(6), labels]
    actual = losses.cross_entropy(mx.array(logits), mx.array(labels), reduction=reduction)
    _check(actual, _reduce(expected, reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_targets(reduction):
    logits = RNG.normal(size=(4, 3)).astype(np.float32)
    probabilities = RNG.dirichlet(np.ones(3), size=4).astype(np.float32)
    expected = -(probabilities * _log_softmax(logits, -1)).sum(-1)
    actual = losses.cross_entropy(mx.array(logits), mx.array(probabilities), reduction=reduction)
    _check(actual, _reduce(expected, reduction))


def test_cross_entropy_one_hot_equals_indices():
    logits = RNG.normal(size=(8, 4)).astype(np.float32)
    labels = RNG.integers(0, 4, size=8)
    one_hot_int = mx.array(_one_hot(labels, 4).astype(np.int32))  # integer one-hot works too
    sparse = losses.cross_entropy(mx.array(logits), mx.array(labels), reduction="none")
    dense = losses.cross_entropy(mx.array(logits), one_hot_int, reduction="none")
    _check(dense, np.array(sparse))


@pytest.mark.parametrize("smoothing", [0.1, 0.4])
def test_cross_entropy_label_smoothing(smoothing):
    logits = RNG.normal(size=(5, 6)).astype(np.float32)
    labels = RNG.integers(0, 6, size=5)
    # Reference: the smoothed target distribution, written out explicitly.
    smoothed = (1 - smoothing) * _one_hot(labels, 6) + smoothing / 6
    expected = -(smoothed * _log_softmax(logits, -1)).sum(-1)
    for targets in (mx.array(labels), mx.array(_one_hot(labels, 6).astype(np.float32))):
        actual = losses.cross_entropy(
            mx.array(logits), targets, label_smoothing=smoothing, reduction="none"
        )
        _check(actual, expected)


def test_cross_entropy_nhwc_segmentation():
    logits = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = RNG.integers(0, 5, size=(2, 3, 4))
    log_probs = _log_softmax(logits, -1)
    expected = -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    actual = losses.cross_entropy(mx.array(logits), mx.array(labels), reduction="none")
    _check(actual, expected)
    _check(losses.cross_entropy(mx.array(logits), mx.array(labels)), expected.mean())


def test_cross_entropy_channels_first_axis():
    logits = RNG.normal(size=(2, 5, 3, 4)).astype(np.float32)  # NCHW
    labels = RNG.integers(0, 5, size=(2, 3, 4))
    log_probs = _log_softmax(logits, 1)
    expected = -np.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    actual = losses.cross_entropy(mx.array(logits), mx.array(labels), axis=1, reduction="none")
    _check(actual, expected)


def test_cross_entropy_bad_inputs():
    logits = mx.zeros((4, 3))
    with pytest.raises(ValueError, match=r"targets must be class indices of shape \(4,\)"):
        losses.cross_entropy(logits, mx.zeros((5,), dtype=mx.int32))
    with pytest.raises(ValueError, match="same shape"):
        losses.cross_entropy(logits, mx.zeros((4, 2)))
    with pytest.raises(
        ValueError, match=r"integer dtype.*Received: targets.dtype=mlx.core.float32"
    ):
        losses.cross_entropy(logits, mx.zeros((4,)))
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\).*=1.0"):
        losses.cross_entropy(logits, mx.zeros((4,), dtype=mx.int32), label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"axis is out of range.*Received: axis=2"):
        losses.cross_entropy(logits, mx.zeros((4,), dtype=mx.int32), axis=2)


# --- binary cross-entropy, regression losses -----------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_logits_and_probabilities(reduction):
    logits = RNG.normal(scale=3, size=(4, 3)).astype(np.float32)
    targets = RNG.random(size=(4, 3)).astype(np.float32)  # soft targets
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = -(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities))
    from_logits = losses.binary_cross_entropy(
        mx.array(logits), mx.array(targets), reduction=reduction
    )
    _check(from_logits, _reduce(expected, reduction), rtol=1e-5, atol=1e-5)
    from_probabilities = losses.binary_cross_entropy(
        mx.array(probabilities.astype(np.float32)),
        mx.array(targets),
        from_logits=False,
        reduction=reduction,
    )
    _check(from_probabilities, _reduce(expected, reduction), rtol=1e-4, atol=1e-4)


def test_binary_cross_entropy_saturated_probabilities_stay_finite():
    loss = losses.binary_cross_entropy(
        mx.array([0.0, 1.0]), mx.array([1.0, 0.0]), from_logits=False, reduction="none"
    )
    _check(loss, np.array([100.0, 100.0]))  # log clipped at -100


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_mae(reduction):
    outputs = RNG.normal(size=(3, 4)).astype(np.float32)
    targets = RNG.normal(size=(3, 4)).astype(np.float32)
    difference = outputs.astype(np.float64) - targets
    _check(
        losses.mse(mx.array(outputs), mx.array(targets), reduction=reduction),
        _reduce(difference**2, reduction),
    )
    _check(
        losses.mae(mx.array(outputs), mx.array(targets), reduction=reduction),
        _reduce(np.abs(difference), reduction),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_huber(reduction, delta):
    outputs = RNG.normal(scale=2, size=(5, 3)).astype(np.float32)
    targets = RNG.normal(size=(5, 3)).astype(np.float32)
    error = np.abs(outputs.astype(np.float64) - targets)
    expected = np.where(error <= delta, 0.5 * error**2, delta * (error - 0.5 * delta))
    actual = losses.huber(mx.array(outputs), mx.array(targets), delta=delta, reduction=reduction)
    _check(actual, _reduce(expected, reduction))


def test_huber_hand_values():
    # |e| = 0.5 -> 0.125 (quadratic); |e| = 3 -> 1 * (3 - 0.5) = 2.5 (linear).
    actual = losses.huber(mx.array([0.5, -3.0]), mx.array([0.0, 0.0]), reduction="none")
    _check(actual, np.array([0.125, 2.5]))


# --- cosine similarity and depth loss ------------------------------------------------------------


def _np_cosine(a: np.ndarray, b: np.ndarray, axis) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.sqrt((a * a).sum(axis)) * np.sqrt((b * b).sum(axis))
    return (a * b).sum(axis) / np.maximum(norms, 1e-8)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [-1, 1, (1, 2)])
def test_cosine_similarity(reduction, axis):
    a = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    b = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    actual = losses.cosine_similarity(mx.array(a), mx.array(b), axis=axis, reduction=reduction)
    _check(actual, _reduce(_np_cosine(a, b, axis), reduction))


def test_cosine_similarity_returns_similarity_and_matches_mlx():
    a = mx.array([[1.0, 2.0], [0.0, 0.0]])
    same = losses.cosine_similarity(a, 3 * a, reduction="none")
    _check(same, np.array([1.0, 0.0]))  # a zero vector gives 0, not NaN
    x, y = mx.array(RNG.normal(size=(3, 4))), mx.array(RNG.normal(size=(3, 4)))
    _check(
        losses.cosine_similarity(x, y, axis=1, reduction="none"),
        np.array(nn.losses.cosine_similarity_loss(x, y)),
    )


def _article_loss(pred: mx.array, y: mx.array) -> mx.array:
    """The MLX depth-map article's loss, written with MLX's own functions as it was."""
    huber = nn.losses.huber_loss(pred, y, reduction="mean")
    cosine = nn.losses.cosine_similarity_loss(pred, y, reduction="mean")
    return huber + (1 - cosine) * 0.5


def _depth_maps(shape=(3, 6, 5, 1)):
    targets = RNG.uniform(0.5, 4.0, size=shape).astype(np.float32)
    outputs = (targets + RNG.normal(scale=0.8, size=shape)).astype(np.float32)
    return outputs, targets


def test_depth_loss_reproduces_the_article_with_cosine_axis_1():
    outputs, targets = _depth_maps()
    actual = losses.depth_loss(mx.array(outputs), mx.array(targets), cosine_axis=1)
    _check(actual, np.array(_article_loss(mx.array(outputs), mx.array(targets))))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_depth_loss_default_compares_whole_maps(reduction):
    outputs, targets = _depth_maps()
    error = np.abs(outputs.astype(np.float64) - targets)
    huber = np.where(error <= 1, 0.5 * error**2, error - 0.5).reshape(3, -1).mean(1)
    cosine = _np_cosine(outputs.reshape(3, -1), targets.reshape(3, -1), axis=1)
    expected = huber + 0.5 * (1 - cosine)
    actual = losses.depth_loss(mx.array(outputs), mx.array(targets), reduction=reduction)
    _check(actual, _reduce(expected, reduction))
    weighted = losses.depth_loss(
        mx.array(outputs), mx.array(targets), cosine_weight=2.0, reduction=reduction
    )
    _check(weighted, _reduce(huber + 2.0 * (1 - cosine), reduction))
    column_mode = losses.depth_loss(mx.array(outputs), mx.array(targets), cosine_axis=1)
    assert abs(column_mode.item() - float(expected.mean())) > 1e-4  # the two modes differ


def test_depth_loss_hand_value_and_options():
    ones = mx.ones((2, 4, 4, 1))
    # Huber of an error of 1 is 0.5; the maps point the same way, so the cosine term is 0.
    _check(losses.depth_loss(2 * ones, ones), np.array(0.5))
    # delta=0.5: 0.5 * (1 - 0.25) = 0.375; a cosine weight changes nothing when cosine is 1.
    _check(losses.depth_loss(2 * ones, ones, delta=0.5, cosine_weight=3.0), np.array(0.375))


@pytest.mark.parametrize("cosine_axis", [None, 1])
def test_depth_loss_mask(cosine_axis):
    outputs, targets = _depth_maps((2, 4, 3, 1))
    targets[0, :, 0] = 0  # a whole column without readings in sample 0
    targets[1, 1, 2] = 0
    mask = targets > 0
    o, t, m = outputs.astype(np.float64), targets.astype(np.float64), mask.astype(np.float64)
    error = np.abs(o - t)
    huber = np.where(error <= 1, 0.5 * error**2, error - 0.5)
    expected = []
    for i in range(2):
        huber_term = (huber[i] * m[i]).sum() / m[i].sum()
        oi, ti, mi = o[i] * m[i], t[i] * m[i], m[i]
        if cosine_axis is None:
            cosine_term = 1 - _np_cosine(oi.ravel(), ti.ravel(), axis=0)
        else:  # one cosine per column (over H), averaged over the columns that have data
            cosines = _np_cosine(oi, ti, axis=0)
            has_data = mi.sum(0) > 0
            cosine_term = ((1 - cosines) * has_data).sum() / has_data.sum()
        expected.append(huber_term + 0.5 * cosine_term)
    actual = losses.depth_loss(
        mx.array(outputs),
        mx.array(targets),
        mask=mx.array(mask),
        cosine_axis=cosine_axis,
        reduction="none",
    )
    _check(actual, np.array(expected))
    # Values at masked pixels have no influence on the loss or its gradient.
    changed = outputs.copy()
    changed[~mask] = 1000.0
    again = losses.depth_loss(
        mx.array(changed), mx.array(targets), mask=mx.array(mask), cosine_axis=cosine_axis
    )
    _check(again, np.array(expected).mean())
    gradient = mx.grad(lambda p: losses.depth_loss(p, mx.array(targets), mask=mx.array(mask)))(
        mx.array(outputs)
    )
    assert np.all(np.array(gradient)[~mask] == 0)
    assert np.all(np.isfinite(np.array(gradient)))


def test_depth_loss_sample_without_valid_pixels_contributes_zero():
    targets = mx.zeros((1, 3, 3, 1))
    loss = losses.depth_loss(mx.ones((1, 3, 3, 1)), targets, mask=targets > 0, reduction="none")
    _check(loss, np.array([0.0]))


def test_depth_loss_bad_inputs():
    maps = mx.ones((2, 4, 4, 1))
    with pytest.raises(ValueError, match="must not include the batch axis"):
        losses.depth_loss(maps, maps, cosine_axis=(0, 1))
    with pytest.raises(ValueError, match=r"cosine_axis is out of range.*Received: cosine_axis=4"):
        losses.depth_loss(maps, maps, cosine_axis=4)
    with pytest.raises(ValueError, match=r"mask must broadcast.*mask.shape=\(3,\)"):
        losses.depth_loss(maps, maps, mask=mx.ones((3,)))
    with pytest.raises(ValueError, match="batch axis"):
        losses.depth_loss(mx.ones((4,)), mx.ones((4,)))
    with pytest.raises(ValueError, match=r"delta must be positive.*delta=0"):
        losses.depth_loss(maps, maps, delta=0)


# --- validation shared by every loss -------------------------------------------------------------

ALL_LOSSES = [
    losses.cross_entropy,
    losses.binary_cross_entropy,
    losses.mse,
    losses.mae,
    losses.huber,
    losses.cosine_similarity,
    losses.depth_loss,
]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_unknown_reduction_is_rejected(loss):
    with pytest.raises(ValueError) as info:
        loss(mx.zeros((2, 3)), mx.zeros((2, 3)), reduction="average")
    message = str(info.value)
    assert "Received: reduction='average'" in message
    assert "'mean', 'sum', 'none'" in message


@pytest.mark.parametrize("loss", ALL_LOSSES[1:], ids=lambda f: f.__name__)
def test_shape_mismatch_is_rejected(loss):
    with pytest.raises(ValueError) as info:
        loss(mx.zeros((4, 1)), mx.zeros((4,)))
    message = str(info.value)
    assert loss.__name__ in message
    assert "outputs.shape=(4, 1), targets.shape=(4,)" in message


# --- registry ------------------------------------------------------------------------------------


def test_get_resolves_names_and_callables():
    assert losses.get("cross_entropy") is losses.cross_entropy
    assert losses.get("mean_squared_error") is losses.mse
    assert losses.get("depth_loss") is losses.depth_loss
    custom = partial(losses.huber, delta=0.5)
    assert losses.get(custom) is custom
    assert set(losses.names()) == set(losses.ALL)
    assert losses.names() == tuple(sorted(losses.names()))
    with pytest.raises(TypeError):
        losses.ALL["mine"] = losses.mse  # type: ignore[index]


def test_get_rejects_unknown_names_listing_valid_ones():
    with pytest.raises(ValueError) as info:
        losses.get("crossentropy")
    message = str(info.value)
    assert "Received: name_or_callable='crossentropy'" in message
    for name in losses.names():
        assert name in message
    with pytest.raises(ValueError, match="returns a similarity, not a loss"):
        losses.get("cosine_similarity")
    with pytest.raises(TypeError, match="Received: name_or_callable=3"):
        losses.get(3)  # type: ignore[arg-type]


def test_losses_work_inside_compile_and_grad():
    logits = mx.array(RNG.normal(size=(4, 3)).astype(np.float32))
    labels = mx.array(RNG.integers(0, 3, size=4))
    compiled = mx.compile(lambda x, y: losses.cross_entropy(x, y, label_smoothing=0.1))
    _check(
        compiled(logits, labels),
        np.array(losses.cross_entropy(logits, labels, label_smoothing=0.1)),
    )
    # d/dlogits of mean cross-entropy is (softmax - one_hot) / batch.
    gradient = mx.grad(losses.cross_entropy)(logits, labels)
    probabilities = np.exp(_log_softmax(np.array(logits), -1))
    _check(gradient, (probabilities - _one_hot(np.array(labels), 3)) / 4)


# ---------------------------------------------------------------- Keras's names (probabilities)
def _keras_probabilities(outputs: np.ndarray) -> np.ndarray:
    # keras/src/backend/numpy/nn.py: renormalise, then clip to [1e-7, 1 - 1e-7].
    return np.clip(outputs / outputs.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)


def test_keras_crossentropy_names_take_probabilities_as_keras_does():
    raw = RNG.random((5, 4)).astype(np.float32)
    probabilities = raw / raw.sum(-1, keepdims=True)
    probabilities[0] = [1.0, 0.0, 0.0, 0.0]  # a zero is clipped, not log(0)
    labels = RNG.integers(0, 4, size=5)
    one_hot = _one_hot(labels, 4)
    expected = -np.log(_keras_probabilities(probabilities)[np.arange(5), labels]).mean()
    categorical = losses.get("categorical_crossentropy")
    sparse = losses.get("sparse_categorical_crossentropy")
    _check(categorical(mx.array(probabilities), mx.array(one_hot)), expected)
    _check(sparse(mx.array(probabilities), mx.array(labels)), expected)
    # Keras also accepts sparse targets with a trailing axis of 1.
    _check(sparse(mx.array(probabilities), mx.array(labels[:, None])), expected)
    # Unnormalised "probabilities" are renormalised, as in Keras.
    expected_raw = -np.log(_keras_probabilities(raw)[np.arange(5), labels]).mean()
    _check(categorical(mx.array(raw), mx.array(one_hot)), expected_raw)


def test_keras_crossentropy_names_with_from_logits_match_cross_entropy():
    logits = mx.array(RNG.normal(size=(6, 3)).astype(np.float32))
    labels = mx.array(RNG.integers(0, 3, size=6))
    one_hot = mx.array(_one_hot(np.array(labels), 3))
    reference = np.array(losses.cross_entropy(logits, labels))
    _check(losses.sparse_categorical_crossentropy(logits, labels, from_logits=True), reference)
    _check(losses.categorical_crossentropy(logits, one_hot, from_logits=True), reference)
    smoothed = losses.cross_entropy(logits, one_hot, label_smoothing=0.2)
    _check(
        losses.categorical_crossentropy(logits, one_hot, from_logits=True, label_smoothing=0.2),
        np.array(smoothed),
    )


def test_keras_binary_crossentropy_takes_probabilities():
    probabilities = np.array([0.8, 0.4, 1.0, 0.0], dtype=np.float32)
    targets = np.array([1.0, 0.0, 1.0, 1.0], dtype=np.float32)
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    expected = -(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)).mean()
    _check(losses.get("binary_crossentropy")(mx.array(probabilities), mx.array(targets)), expected)
    logits = mx.array([2.0, -1.0])
    _check(
        losses.binary_crossentropy(logits, mx.array([1.0, 0.0]), from_logits=True),
        np.array(losses.binary_cross_entropy(logits, mx.array([1.0, 0.0]))),
    )
    # mlxkit's own spelling keeps taking logits.
    assert losses.get("binary_cross_entropy") is losses.binary_cross_entropy


def test_keras_crossentropy_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"integer class indices of shape \(2,\)"):
        losses.sparse_categorical_crossentropy(mx.zeros((2, 3)), mx.zeros((2,)))
    with pytest.raises(ValueError, match=r"label_smoothing=1.5"):
        losses.categorical_crossentropy(mx.zeros((2, 3)), mx.zeros((2, 3)), label_smoothing=1.5)
