"""Two metrics Keras's monitor tests compile with that mlxkit does not ship: F1 score and hinge.

Each declares its `direction`, which is what `mode="auto"` reads: the tests check that a metric's
own declaration decides, not its name.
"""

from __future__ import annotations

from mlxkit.metrics import Metric

import mlx.core as mx


class BinaryF1Score(Metric):
    """F1 of `outputs > 0.5` against `targets > 0.5`, as Keras's `F1Score(threshold=0.5)`."""

    direction = "max"

    def __init__(self, *, name: str = "f1_score") -> None:
        super().__init__(name=name)
        self.state["counts"] = mx.zeros((3,), dtype=mx.float32)  # true pos., false pos., false neg.

    def update(self, outputs, targets, mask=None) -> None:
        predicted, actual = outputs > 0.5, targets > 0.5
        counts = mx.stack(
            [mx.sum(predicted & actual), mx.sum(predicted & ~actual), mx.sum(~predicted & actual)]
        )
        self.state["counts"] = self.state["counts"] + counts.astype(mx.float32)

    def result(self) -> mx.array:
        true_positive, false_positive, false_negative = self.state["counts"]
        denominator = 2 * true_positive + false_positive + false_negative
        return mx.where(denominator > 0, 2 * true_positive / mx.maximum(denominator, 1), 0.0)


class Hinge(Metric):
    """Keras's hinge metric: the mean of `max(1 - t * y, 0)`, with 0/1 targets mapped to -1/1."""

    direction = "min"

    def __init__(self, *, name: str = "hinge") -> None:
        super().__init__(name=name)
        self.state["sums"] = mx.zeros((2,), dtype=mx.float32)

    def update(self, outputs, targets, mask=None) -> None:
        signs = mx.where(targets > 0.5, 1.0, -1.0)
        losses = mx.maximum(1 - signs * outputs, 0.0)
        self.state["sums"] = self.state["sums"] + mx.stack(
            [mx.sum(losses), mx.array(losses.size, dtype=mx.float32)]
        )

    def result(self) -> mx.array:
        total, count = self.state["sums"]
        return total / mx.maximum(count, 1)
