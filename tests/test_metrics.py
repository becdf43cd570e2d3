"""Tests for mlxkit.metrics: streaming results against one-shot NumPy references written here."""

from __future__ import annotations

from collections.abc import Callable

from mlxkit import metrics

import numpy as np
import pytest

import mlx.core as mx  # isort: skip  (after mlxkit, which loads the fast BLAS first)

RNG = np.random.default_rng(1)
SPLITS = (7, 3, 12, 1, 9)  # uneven batch sizes, 32 samples in all
N = sum(SPLITS)


def _batches(*arrays: np.ndarray | None):
    start = 0
    for size in SPLITS:
        yield tuple(None if a is None else mx.array(a[start : start + size]) for a in arrays)
        start += size


def _stream(metric: metrics.Metric, outputs, targets, mask=None) -> float:
    for o, t, m in _batches(outputs, targets, mask):
        metric.update(o, t, m)
    mx.eval(metric.state)
    return metric.result().item()


def _close(actual: float, expected: float, rtol: float = 1e-5) -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-6)


# --- NumPy references ----------------------------------------------------------------------------


def _np_confusion_miou(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    keep = (labels >= 0) & (labels < classes)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels[keep], predicted[keep]), 1)
    ious = []
    for c in range(classes):
        union = confusion[c].sum() + confusion[:, c].sum() - confusion[c, c]
        if union > 0:
            ious.append(confusion[c, c] / union)
    return float(np.mean(ious))


def _depth_data(shape=(N, 4, 5, 1)):
    targets = RNG.uniform(0.5, 10.0, size=shape).astype(np.float32)
    targets[RNG.random(shape) < 0.2] = 0.0  # missing sensor readings
    targets[3] = 0.0  # one image with no valid pixel at all
    outputs = (targets * RNG.uniform(0.7, 1.4, size=shape) + 0.05).astype(np.float32)
    return outputs, targets


def _np_depth(outputs, targets, valid, statistic: str, average: str) -> float:
    o, t = outputs.astype(np.float64), targets.astype(np.float64)

    def value(o, t):
        if statistic == "abs_rel":
            return np.mean(np.abs(o - t) / t)
        if statistic == "rmse":
            return np.sqrt(np.mean((o - t) ** 2))
        if statistic == "mae":
            return np.mean(np.abs(o - t))
        return np.mean((np.maximum(o / t, t / o) < statistic) & (o > 0))

    if average == "pixels":
        return float(value(o[valid], t[valid]))
    per_image = [value(o[i][valid[i]], t[i][valid[i]]) for i in range(len(o)) if valid[i].any()]
    return float(np.mean(per_image))


# --- Mean ----------------------------------------------------------------------------------------


def test_mean_streams_weighted_values():
    values = RNG.normal(size=N).astype(np.float32)
    weights = RNG.uniform(0, 2, size=N).astype(np.float32)
    _close(_stream(metrics.Mean(), values, None), values.mean())
    _close(_stream(metrics.Mean(), values, None, weights), np.average(values, weights=weights))
    loss = metrics.Mean(name="loss")
    for size, batch_loss in zip(SPLITS, [1.0, 2.0, 0.5, 4.0, 3.0], strict=True):
        loss.update(mx.array(batch_loss), mask=mx.array(float(size)))  # weigh by batch size
    expected = np.dot(SPLITS, [1.0, 2.0, 0.5, 4.0, 3.0]) / N
    _close(loss.result().item(), expected)
    assert loss.name == "loss"


# --- Accuracy ------------------------------------------------------------------------------------


def test_accuracy_sparse_one_hot_and_probabilities_agree_with_numpy():
    logits = RNG.normal(size=(N, 4)).astype(np.float32)
    labels = RNG.integers(0, 4, size=N)
    expected = np.mean(logits.argmax(-1) == labels)
    _close(_stream(metrics.Accuracy(), logits, labels), expected)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    _close(_stream(metrics.Accuracy(), logits, one_hot), expected)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    _close(_stream(metrics.Accuracy(), probabilities, labels), expected)


def test_accuracy_segmentation_with_mask():
    logits = RNG.normal(size=(N, 3, 4, 5)).astype(np.float32)
    labels = RNG.integers(0, 5, size=(N, 3, 4))
    valid = RNG.random((N, 3, 4)) < 0.7
    expected = np.mean((logits.argmax(-1) == labels)[valid])
    _close(_stream(metrics.Accuracy(), logits, labels, valid), expected)
    # A per-sample mask (a prefix of the item shape) drops whole images, as for a padded batch.
    keep = np.arange(N) < N - 4
    expected_kept = np.mean((logits.argmax(-1) == labels)[keep])
    _close(_stream(metrics.Accuracy(), logits, labels, keep), expected_kept)


def test_accuracy_binary_logits_and_probabilities():
    logits = RNG.normal(size=(N, 1)).astype(np.float32)
    labels = (RNG.random(N) < 0.5).astype(np.float32)
    expected = np.mean((logits[:, 0] > 0) == (labels > 0.5))
    _close(_stream(metrics.Accuracy(), logits, labels), expected)  # (B, 1) with (B,)
    _close(_stream(metrics.Accuracy(), logits, labels[:, None]), expected)  # (B, 1) with (B, 1)
    _close(_stream(metrics.Accuracy(kind="binary"), logits[:, 0], labels), expected)  # (B,)
    probabilities = 1 / (1 + np.exp(-logits))
    _close(_stream(metrics.Accuracy(threshold=0.5), probabilities, labels), expected)


def test_accuracy_hand_value():
    metric = metrics.Accuracy()
    metric.update(mx.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), mx.array([0, 0, 0]))
    _close(metric.result().item(), 2 / 3)
    logits, labels = mx.array([[0.3], [-0.2], [2.0]]), mx.array([1.0, 0.0, 0.0])
    binary = metrics.Accuracy()  # threshold 0 on logits: predicts 1, 0, 1
    binary.update(logits, labels)
    _close(binary.result().item(), 2 / 3)
    strict = metrics.Accuracy(threshold=0.5)  # predicts 0, 0, 1
    strict.update(logits, labels)
    _close(strict.result().item(), 1 / 3)


def test_accuracy_bad_inputs():
    with pytest.raises(ValueError, match=r"kind.*Received: kind='multi'.*'auto', 'sparse'"):
        metrics.Accuracy(kind="multi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"outputs.shape=\(4, 3\), targets.shape=\(5,\)"):
        metrics.Accuracy().update(mx.zeros((4, 3)), mx.zeros((5,)))
    with pytest.raises(ValueError, match="kind='binary'"):
        metrics.Accuracy().update(mx.zeros((4,)), mx.zeros((4,)))
    with pytest.raises(ValueError, match=r"mask must broadcast.*mask.shape=\(3,\)"):
        metrics.Accuracy().update(mx.zeros((4, 3)), mx.zeros((4,)), mx.ones((3,)))
    with pytest.raises(ValueError, match="one-hot targets of shape"):
        metrics.Accuracy(kind="categorical").update(mx.zeros((4, 3)), mx.zeros((4,)))


# --- TopKAccuracy --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_top_k_accuracy(k):
    logits = RNG.normal(size=(N, 6)).astype(np.float32)
    labels = RNG.integers(0, 6, size=N)
    top = np.argsort(-logits, axis=-1)[:, :k]
    expected = np.mean([labels[i] in top[i] for i in range(N)])
    metric = metrics.TopKAccuracy(k)
    assert metric.name == f"top_{k}_accuracy"
    _close(_stream(metric, logits, labels), expected)
    _close(_stream(metrics.TopKAccuracy(k), logits, np.eye(6)[labels]), expected)
    valid = RNG.random(N) < 0.5
    expected_masked = np.mean([labels[i] in top[i] for i in range(N) if valid[i]])
    _close(_stream(metrics.TopKAccuracy(k), logits, labels, valid), expected_masked)


def test_top_k_accuracy_bad_inputs():
    with pytest.raises(ValueError, match=r"k must be an integer >= 1.*k=0"):
        metrics.TopKAccuracy(0)
    with pytest.raises(ValueError, match=r"must not exceed the number of classes \(3\).*k=5"):
        metrics.TopKAccuracy().update(mx.zeros((2, 3)), mx.zeros((2,), dtype=mx.int32))
    with pytest.raises(ValueError, match=r"outputs.shape=\(2, 6\), targets.shape=\(2, 5\)"):
        metrics.TopKAccuracy().update(mx.zeros((2, 6)), mx.zeros((2, 5)))


# --- MeanIoU -------------------------------------------------------------------------------------


def test_mean_iou_segmentation_streams_against_numpy():
    classes = 4
    logits = RNG.normal(size=(N, 3, 4, classes)).astype(np.float32)
    logits[..., 3] -= 10  # class 3 is never predicted...
    labels = RNG.integers(0, 3, size=(N, 3, 4))  # ...nor present: it must not count
    labels[RNG.random(labels.shape) < 0.1] = 255  # void label, ignored
    expected = _np_confusion_miou(labels, logits.argmax(-1), classes)
    _close(_stream(metrics.MeanIoU(classes), logits, labels), expected)
    valid = RNG.random(labels.shape) < 0.6
    masked = np.where(valid, labels, 255)
    expected_masked = _np_confusion_miou(masked, logits.argmax(-1), classes)
    _close(_stream(metrics.MeanIoU(classes), logits, labels, valid), expected_masked)


def test_mean_iou_label_and_one_hot_inputs():
    predicted = RNG.integers(0, 3, size=N)
    labels = RNG.integers(0, 3, size=N)
    expected = _np_confusion_miou(labels, predicted, 3)
    _close(_stream(metrics.MeanIoU(3), predicted.astype(np.int32), labels), expected)
    logits = np.eye(3, dtype=np.float32)[predicted]
    _close(_stream(metrics.MeanIoU(3), logits, np.eye(3, dtype=np.float32)[labels]), expected)


def test_mean_iou_hand_value():
    metric = metrics.MeanIoU(num_classes=2)
    metric.update(mx.array([0, 0, 1, 1]), mx.array([0, 1, 1, 1]))
    _close(metric.result().item(), (1 / 2 + 2 / 3) / 2)


def test_mean_iou_bad_inputs():
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2.*num_classes=1"):
        metrics.MeanIoU(1)
    with pytest.raises(ValueError, match=r"num_classes=3 channels.*outputs.shape=\(2, 4\)"):
        metrics.MeanIoU(3).update(mx.zeros((2, 4)), mx.zeros((2,), dtype=mx.int32))
    with pytest.raises(ValueError, match=r"outputs.shape=\(2, 3\), targets.shape=\(3,\)"):
        metrics.MeanIoU(3).update(mx.zeros((2, 3)), mx.zeros((3,), dtype=mx.int32))


# --- regression and depth metrics ----------------------------------------------------------------


@pytest.mark.parametrize("average", ["pixels", "images"])
@pytest.mark.parametrize(
    ("factory", "statistic"),
    [
        (metrics.AbsRel, "abs_rel"),
        (metrics.RMSE, "rmse"),
        (metrics.DeltaAccuracy, 1.25),
        (lambda **kw: metrics.DeltaAccuracy(1.25**2, **kw), 1.25**2),
        (lambda **kw: metrics.MeanAbsoluteError(ignore_zero=True, **kw), "mae"),
    ],
)
def test_depth_metrics_ignore_zero_targets(factory: Callable, statistic, average):
    outputs, targets = _depth_data()
    expected = _np_depth(outputs, targets, targets != 0, statistic, average)
    _close(_stream(factory(average=average), outputs, targets), expected)


@pytest.mark.parametrize("average", ["pixels", "images"])
def test_depth_metrics_with_explicit_mask(average):
    outputs, targets = _depth_data()
    mask = (RNG.random(targets.shape) < 0.8) & (targets > 0)
    mask[5] = False
    for factory, statistic in ((metrics.AbsRel, "abs_rel"), (metrics.RMSE, "rmse")):
        expected = _np_depth(outputs, targets, mask, statistic, average)
        _close(_stream(factory(average=average), outputs, targets, mask), expected)


def test_plain_regression_metrics_keep_zero_targets():
    outputs = RNG.normal(size=(N, 3)).astype(np.float32)
    targets = RNG.normal(size=(N, 3)).astype(np.float32)
    targets[0] = 0.0
    difference = outputs.astype(np.float64) - targets
    _close(_stream(metrics.MeanAbsoluteError(), outputs, targets), np.abs(difference).mean())
    rmse = _stream(metrics.RootMeanSquaredError(), outputs, targets)
    _close(rmse, np.sqrt((difference**2).mean()))
    valid = RNG.random(N) < 0.5  # per-sample mask
    _close(
        _stream(metrics.MeanAbsoluteError(), outputs, targets, valid),
        np.abs(difference[valid]).mean(),
    )


def test_depth_metric_hand_values():
    # Eigen et al.: AbsRel = mean(|d - d*| / d*); delta = mean(max(d/d*, d*/d) < 1.25).
    outputs = mx.array([[1.5, 3.0, 2.0, 9.0]])
    targets = mx.array([[1.0, 4.0, 2.1, 0.0]])  # the 0 is a missing reading
    checks = [
        (metrics.AbsRel(), (0.5 + 0.25 + 0.1 / 2.1) / 3),
        (metrics.RMSE(), np.sqrt((0.25 + 1.0 + 0.01) / 3)),
        (metrics.DeltaAccuracy(), 1 / 3),  # ratios 1.5, 1.33, 1.05: only 1.05 < 1.25
        (metrics.DeltaAccuracy(1.4), 2 / 3),  # 1.33 and 1.05 < 1.4
        (metrics.DeltaAccuracy(1.25**2), 1.0),  # all three < 1.5625
    ]
    for metric, expected in checks:
        metric.update(outputs, targets)
        _close(metric.result().item(), expected)


def test_delta_accuracy_counts_non_positive_predictions_as_misses():
    metric = metrics.DeltaAccuracy()
    metric.update(mx.array([[-1.0, 0.0, 1.0]]), mx.array([[1.0, 1.0, 1.0]]))
    _close(metric.result().item(), 1 / 3)


def test_regression_metric_bad_inputs():
    with pytest.raises(ValueError, match=r"outputs.shape=\(2, 3, 1\), targets.shape=\(2, 3\)"):
        metrics.AbsRel().update(mx.ones((2, 3, 1)), mx.ones((2, 3)))
    with pytest.raises(ValueError, match=r"average.*Received: average='batch'.*'pixels'"):
        metrics.RMSE(average="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"threshold must be greater than 1.*threshold=0.5"):
        metrics.DeltaAccuracy(0.5)
    with pytest.raises(ValueError, match="average='images' needs a batch axis"):
        metrics.AbsRel(average="images").update(mx.ones((3,)), mx.ones((3,)))


def test_default_names():
    assert metrics.AbsRel().name == "abs_rel"
    assert metrics.RMSE().name == "rmse"
    assert metrics.DeltaAccuracy().name == "delta_1.25"
    assert metrics.DeltaAccuracy(1.25**3).name == "delta_1.25^3"
    assert metrics.DeltaAccuracy(1.1).name == "delta_1.1"
    assert metrics.MeanIoU(3).name == "mean_iou"
    assert metrics.Accuracy(name="acc").name == "acc"
    with pytest.raises(ValueError, match="Received: name=''"):
        metrics.Mean(name="")


# --- the compile / reset / all-reduce contract ---------------------------------------------------


def _metric_cases():
    """(factory, outputs, targets) for every metric class, so that each test builds fresh ones."""
    logits = RNG.normal(size=(N, 4)).astype(np.float32)
    labels = RNG.integers(0, 4, size=N)
    depth_out, depth_target = _depth_data((N, 3, 2, 1))
    return [
        (metrics.Mean, logits[:, 0], labels),
        (metrics.Accuracy, logits, labels),
        (lambda: metrics.TopKAccuracy(2), logits, labels),
        (lambda: metrics.MeanIoU(4), logits, labels),
        (metrics.MeanAbsoluteError, depth_out, depth_target),
        (metrics.RootMeanSquaredError, depth_out, depth_target),
        (metrics.AbsRel, depth_out, depth_target),
        (lambda: metrics.RMSE(average="images"), depth_out, depth_target),
        (metrics.DeltaAccuracy, depth_out, depth_target),
    ]


@pytest.mark.parametrize("use_mask", [False, True])
def test_update_inside_compile_matches_eager(use_mask):
    mask = np.arange(N) % 5 != 0
    for factory, outputs, targets in _metric_cases():
        eager, compiled = factory(), factory()
        state = compiled.state
        step = mx.compile(compiled.update, inputs=[compiled.state], outputs=[compiled.state])
        for start in range(0, N, 8):  # equal batches: one static shape, traced once
            batch = [mx.array(a[start : start + 8]) for a in (outputs, targets)]
            batch.append(mx.array(mask[start : start + 8]) if use_mask else None)
            step(*batch)
            eager.update(*batch)
        mx.eval(compiled.state, eager.state)
        assert compiled.state is state
        expected = eager.result().item()
        assert expected != 0.0  # a real value, so the comparison means something
        _close(compiled.result().item(), expected)


def test_reset_zeros_state_in_place():
    for factory, outputs, targets in _metric_cases():
        metric = factory()
        state = metric.state
        metric.update(mx.array(outputs), mx.array(targets))
        metric.reset()
        assert metric.state is state
        for value in metric.state.values():
            assert not np.any(np.array(value))
        assert metric.result().item() == 0.0  # nothing seen yet: 0, not NaN
        _close(_stream(metric, outputs, targets), _stream(factory(), outputs, targets))


def test_summing_states_gives_the_global_metric():
    for factory, outputs, targets in _metric_cases():
        whole, first, second = factory(), factory(), factory()
        half = N // 2
        first.update(mx.array(outputs[:half]), mx.array(targets[:half]))
        second.update(mx.array(outputs[half:]), mx.array(targets[half:]))
        whole.update(mx.array(outputs), mx.array(targets))
        for key in first.state:  # what an all-reduce sum across two processes does
            first.state[key] = first.state[key] + second.state[key]
        _close(first.result().item(), whole.result().item())


# --- registry ------------------------------------------------------------------------------------


def test_get_resolves_names_to_fresh_metrics():
    assert isinstance(metrics.get("accuracy"), metrics.Accuracy)
    assert metrics.get("accuracy") is not metrics.get("accuracy")
    assert metrics.get("top_k_accuracy").k == 5
    assert isinstance(metrics.get("abs_rel"), metrics.AbsRel)
    assert type(metrics.get("rmse")) is metrics.RootMeanSquaredError
    assert metrics.get("depth_rmse").ignore_zero
    assert metrics.get("delta_1.25^2").threshold == pytest.approx(1.5625)
    for name in metrics.names():
        assert isinstance(metrics.get(name), metrics.Metric)
    existing = metrics.MeanIoU(3)
    assert metrics.get(existing) is existing


def test_get_rejects_unknown_and_object_only_names():
    with pytest.raises(ValueError) as info:
        metrics.get("acuracy")
    message = str(info.value)
    assert "Received: name_or_metric='acuracy'" in message
    for name in metrics.names():
        assert name in message
    assert "MeanIoU(num_classes=...)" in message
    with pytest.raises(ValueError, match=r"needs arguments.*MeanIoU\(num_classes=\.\.\.\)"):
        metrics.get("mean_iou")
    with pytest.raises(TypeError, match=r"Received: name_or_metric=1\.5"):
        metrics.get(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [metrics.Accuracy, lambda: metrics.MeanAbsoluteError()])
def test_counts_past_2_to_the_31_stay_exact(make):
    """An int32 count wraps past 2**31 - 1 and a float32 one stops at 2**24: int64 does neither."""
    metric = make()
    key = "counts" if "counts" in metric.state else "count"
    start = 2**31 - 3
    metric.state[key] = metric.state[key] + start  # as if an epoch had counted that far
    outputs = mx.array(np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]])
    targets = mx.array(np.array([0, 1, 1, 0, 1]))
    if key == "count":
        outputs, targets = mx.ones((5,)), mx.zeros((5,))
    metric.update(outputs, targets)
    counted = np.array(metric.state[key]).reshape(-1)[-1]
    assert counted.dtype == np.int64 and int(counted) == start + 5  # 2**31 + 2


def test_mean_iou_confusion_counts_past_2_to_the_31_stay_exact():
    metric = metrics.MeanIoU(2)
    metric.state["confusion"] = metric.state["confusion"] + (2**31 - 1)
    metric.update(mx.array([[1.0, 0.0], [0.0, 1.0]]), mx.array([0, 1]))
    confusion = np.array(metric.state["confusion"])
    np.testing.assert_array_equal(confusion, [[2**31, 2**31 - 1], [2**31 - 1, 2**31]])


def test_the_distributed_sum_keeps_int64_counts_exact():
    """`all_sum_states` sums each dtype as it is; a float32 round trip would round 2**31 + 1."""
    from mlxkit.distributed import all_sum_states

    group = mx.distributed.init()  # a world of one here: the sum is the state itself
    states = [
        {"counts": mx.array([2**31 + 1, 2**40 + 3], dtype=mx.int64)},
        {"total": mx.array(0.5), "count": mx.array(2**24 + 1, dtype=mx.int64)},
    ]
    summed = all_sum_states(states, group)
    assert summed[0]["counts"].dtype == mx.int64
    assert np.array(summed[0]["counts"]).tolist() == [2**31 + 1, 2**40 + 3]
    assert summed[1]["count"].item() == 2**24 + 1 and summed[1]["total"].item() == 0.5


# ---------------------------------------------------------------- direction and Keras's names
def test_every_metric_declares_the_direction_monitors_use():
    # Monitor callbacks with mode="auto" read `direction`: higher is better for accuracies and
    # IoU, lower for errors; a plain Mean has no direction.
    expected = {
        "accuracy": "max",
        "acc": "max",
        "sparse_categorical_accuracy": "max",
        "categorical_accuracy": "max",
        "binary_accuracy": "max",
        "top_k_accuracy": "max",
        "delta_1.25": "max",
        "mae": "min",
        "mean_absolute_error": "min",
        "mse": "min",
        "mean_squared_error": "min",
        "rmse": "min",
        "root_mean_squared_error": "min",
        "depth_rmse": "min",
        "abs_rel": "min",
        "mean": None,
    }
    for name, direction in expected.items():
        assert metrics.get(name).direction == direction, name
    assert metrics.MeanIoU(num_classes=2).direction == "max"


def test_keras_metric_names_log_under_their_name_with_keras_semantics():
    outputs = mx.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    sparse = metrics.get("sparse_categorical_accuracy")
    sparse.update(outputs, mx.array([1, 1, 1]))
    categorical = metrics.get("categorical_accuracy")
    categorical.update(outputs, mx.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]))
    assert (sparse.name, categorical.name) == (
        "sparse_categorical_accuracy",
        "categorical_accuracy",
    )
    assert sparse.result().item() == pytest.approx(2 / 3)
    assert categorical.result().item() == pytest.approx(1 / 3)
    # Keras's binary_accuracy thresholds probabilities at 0.5.
    binary = metrics.get("binary_accuracy")
    binary.update(mx.array([[0.6], [0.4], [0.2]]), mx.array([[1.0], [1.0], [0.0]]))
    assert binary.result().item() == pytest.approx(2 / 3)
    mse = metrics.get("mse")
    mse.update(mx.array([3.0, 0.0]), mx.array([0.0, 4.0]))
    assert (mse.name, mse.result().item()) == ("mse", 12.5)
    assert metrics.get("mean_squared_error").name == "mean_squared_error"
    assert metrics.get("mean_absolute_error").name == "mean_absolute_error"
