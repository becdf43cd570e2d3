"""Operation families that could not be exported before (issue 17): gathers by computed index,
cumulative reductions, sorting, windowed attention's rank-6 transposes, edge padding, arcsin /
arccos and cubic upsampling. Each is run by the package's NumPy interpreter against MLX, in
float32 and float16, and its declared output shapes are read back from the saved package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlxkit.export import UnsupportedOperationError, to_coreml

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.export.test_wrong_packages import export_and_compare

pytest.importorskip("coremltools")

SHAPE = (2, 5, 6)


def _window_partition(x: mx.array, w: int = 2) -> mx.array:
    b, h, width, c = x.shape
    x = x.reshape(b, h // w, w, width // w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w, w, c)


def _window_unpartition(x: mx.array, b: int, h: int, width: int, w: int = 2) -> mx.array:
    c = x.shape[-1]
    x = x.reshape(b, h // w, width // w, w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, width, c)


def _windowed(x: mx.array) -> mx.array:
    b, h, width, _ = x.shape
    windows = _window_partition(x)
    return _window_unpartition(mx.softmax(windows, axis=-1) * windows, b, h, width)


def _clip_text_pool(h: mx.array) -> mx.array:
    # CLIP's text pooling: the hidden state at the end-of-text token (the largest id).
    ids = mx.argmax(h[..., 0], axis=-1)
    return h[mx.arange(h.shape[0]), ids]


# name -> (function, input shape, whether the output's order within ties is arbitrary)
CASES: dict[str, tuple[Callable[[mx.array], Any], tuple[int, ...]]] = {
    "take_along_axis": (
        lambda x: mx.take_along_axis(x, mx.argmax(x, axis=-1, keepdims=True), axis=-1),
        SHAPE,
    ),
    "take_along_axis_sorted": (
        lambda x: mx.take_along_axis(x, mx.argsort(x, axis=1)[:, :2], axis=1),
        SHAPE,
    ),
    "clip_text_pooling": (_clip_text_pool, SHAPE),
    "take_computed_axis1": (lambda x: mx.take(x, mx.argmax(x[:, :, 0], axis=-1), axis=1), SHAPE),
    "take_computed_axis2": (lambda x: mx.take(x, mx.argmin(x[0, 0]), axis=2) + x[..., 0], SHAPE),
    "cumsum": (lambda x: mx.cumsum(x, axis=1), SHAPE),
    "cumsum_reverse_exclusive": (
        lambda x: mx.cumsum(x, axis=-1, reverse=True, inclusive=False),
        SHAPE,
    ),
    "cumprod": (lambda x: mx.cumprod(x, axis=2), SHAPE),
    "cummax": (lambda x: mx.cummax(x, axis=1), SHAPE),
    "cummin_reverse": (lambda x: mx.cummin(x, axis=1, reverse=True), SHAPE),
    "positional_ids": (
        lambda x: mx.cumsum((x[..., 0] > 0).astype(mx.int32), axis=1) * 1.5,
        SHAPE,
    ),
    "sort": (lambda x: mx.sort(x, axis=-1), SHAPE),
    "argsort": (lambda x: mx.argsort(x, axis=1), SHAPE),
    # MLX leaves the order of topk's results unspecified: compare them sorted.
    "topk": (lambda x: mx.sort(mx.topk(x, 3, axis=-1), axis=-1), SHAPE),
    "windowed_attention_transposes": (_windowed, (2, 4, 6, 3)),
    "pad_edge": (lambda x: mx.pad(x, [(0, 0), (2, 1), (1, 3)], mode="edge"), SHAPE),
    "arcsin_arccos": (lambda x: mx.arcsin(mx.tanh(x)) * mx.arccos(mx.tanh(x * 0.5)), SHAPE),
    "upsample_cubic": (nn.Upsample(2, mode="cubic"), (1, 4, 4, 2)),
    "upsample_cubic_align_corners": (
        nn.Upsample(2, mode="cubic", align_corners=True),
        (1, 4, 4, 2),
    ),
}


@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_operation_matches_mlx(tmp_path: Any, name: str, precision: str) -> None:
    fn, shape = CASES[name]
    x = mx.array(np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32))
    export_and_compare(tmp_path, fn, [x], precision)


def test_transpose_that_stays_rank_6_is_refused(tmp_path: Any) -> None:
    def fn(x: mx.array) -> mx.array:
        # No two neighbouring axes stay neighbours: no rank <= 5 form exists.
        return x.reshape(2, 2, 2, 3, 2, 3).transpose(5, 3, 1, 0, 4, 2).reshape(6, 24)

    with pytest.raises(UnsupportedOperationError, match="rank 6"):
        to_coreml(fn, mx.zeros((2, 4, 6, 3)), str(tmp_path / "six.mlpackage"))
