"""Regression tests for exports that used to succeed and write a wrong package (issue 17).

Each case reads the saved package's declared output shapes back with coremltools (what an app
sees) and compares them with MLX's, then runs the package's program with the NumPy interpreter
against MLX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlxkit.export import run_mlpackage_numpy, to_coreml

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.export.helpers import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    as_tuple,
    darwin_only,
    predict,
    relative_error,
)

ct = pytest.importorskip("coremltools")

# Float16's largest finite value is 65504: an element of 256 squares past it.
RANGE_SCALE = 300.0


def declared_output_shapes(path: str) -> list[tuple[int, ...]]:
    """The output shapes in the saved package's model description, read by coremltools."""
    spec = ct.utils.load_spec(path)
    return [tuple(int(s) for s in out.type.multiArrayType.shape) for out in spec.description.output]


def export_and_compare(
    tmp_path: Any, fn: Callable[..., Any], inputs: list[mx.array], precision: str
) -> Any:
    path = str(tmp_path / f"case_{precision}.mlpackage")
    result = to_coreml(fn, inputs, path, compute_precision=precision)
    want = [np.array(w.astype(mx.float32)) for w in as_tuple(fn(*inputs))]
    assert declared_output_shapes(path) == [w.shape for w in want]
    assert [shape for _, shape in result.report.outputs] == [w.shape for w in want]
    got = run_mlpackage_numpy(path, [np.array(x) for x in inputs])
    tolerance = FP32_TOLERANCE if precision == "float32" else FP16_TOLERANCE
    for value, reference in zip(got.values(), want, strict=True):
        assert value.shape == reference.shape
        assert relative_error(value, reference) < tolerance
    return result


def _normal(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array((rng.standard_normal(shape) * scale).astype(np.float32))


def _padding_mask_attention(ids: mx.array, scores: mx.array) -> mx.array:
    # BERT's padding mask: 0 for tokens, -1e9 for padding, added to the attention scores.
    mask = mx.where(ids > 0, 0, -1e9)
    return mx.softmax(scores + mask[:, None, :], axis=-1)


WHERE_CASES: dict[str, tuple[Callable[..., Any], Callable[[], list[mx.array]]]] = {
    "scalar_branches": (lambda x: mx.where(x > 0, 1.0, 0.0), lambda: [_normal((2, 3, 4))]),
    "step": (nn.Step(0.1), lambda: [_normal((2, 3, 4))]),
    "followed_by_reshape": (
        lambda x: mx.where(x > 0, 1.0, 0.0).reshape(6, 4) * 2,
        lambda: [_normal((2, 3, 4))],
    ),
    "condition_larger_than_branches": (
        lambda x, y: mx.where(x > 0, y, mx.arange(4, dtype=mx.float32)),
        lambda: [_normal((2, 3, 4)), _normal((1, 3, 1), seed=1)],
    ),
    "padding_mask_idiom": (
        _padding_mask_attention,
        lambda: [
            mx.array(np.array([[5, 2, 9, 0, 0], [3, 0, 0, 0, 0]], np.int32)),
            _normal((2, 3, 5)),
        ],
    ),
}


@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(WHERE_CASES))
def test_where_broadcasts_to_the_condition(tmp_path: Any, name: str, precision: str) -> None:
    fn, make = WHERE_CASES[name]
    export_and_compare(tmp_path, fn, make(), precision)


def _rms_norm_fast(x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, mx.ones((x.shape[-1],)), 1e-5)


def _unit(x: mx.array) -> mx.array:
    return x / mx.linalg.norm(x, axis=-1, keepdims=True)


def _layer_norm_fast(x: mx.array) -> mx.array:
    return mx.fast.layer_norm(x, mx.ones((x.shape[-1],)), mx.zeros((x.shape[-1],)), 1e-5)


# Every normalisation and softmax MLX offers, at inputs scaled by 300: (layer, input shape).
RANGE_CASES: dict[str, tuple[Callable[[], Any], tuple[int, ...]]] = {
    "rms_norm": (lambda: nn.RMSNorm(8), (2, 5, 8)),
    "fast_rms_norm": (lambda: _rms_norm_fast, (2, 5, 8)),
    "unit_vector": (lambda: _unit, (2, 5, 8)),
    "layer_norm": (lambda: nn.LayerNorm(8), (2, 5, 8)),
    "fast_layer_norm": (lambda: _layer_norm_fast, (2, 5, 8)),
    "group_norm": (lambda: nn.GroupNorm(2, 8, pytorch_compatible=True), (1, 4, 4, 8)),
    "instance_norm": (lambda: nn.InstanceNorm(8, affine=True), (1, 4, 4, 8)),
    "batch_norm": (lambda: nn.BatchNorm(8), (1, 4, 4, 8)),
    "softmax": (lambda: lambda x: mx.softmax(x, axis=-1), (2, 5, 8)),
    "log_softmax": (lambda: lambda x: nn.log_softmax(x, axis=-1), (2, 5, 8)),
}


def _range_case(name: str) -> tuple[Any, mx.array]:
    """The layer of `RANGE_CASES[name]` (in inference mode) and its input scaled by 300."""
    make, shape = RANGE_CASES[name]
    layer = make()
    if isinstance(layer, nn.Module):
        layer.eval()
        mx.eval(layer.parameters())
    return layer, _normal(shape, seed=3, scale=RANGE_SCALE)


@pytest.mark.parametrize("name", sorted(RANGE_CASES))
def test_float16_normalisation_survives_large_inputs(tmp_path: Any, name: str) -> None:
    layer, x = _range_case(name)
    result = export_and_compare(tmp_path, layer, [x], "float16")
    if name in ("rms_norm", "fast_rms_norm", "unit_vector"):
        # The sums of squares run in float32, and the report says so.
        assert result.report.float32_ops.get("square") == 1
        assert "float32 for range safety" in str(result.report)


@darwin_only
@pytest.mark.parametrize("name", sorted(RANGE_CASES))
def test_core_ml_runtime_survives_large_inputs_in_float16(tmp_path: Any, name: str) -> None:
    # The interpreter computes fused ops (layer_norm, softmax) in float32 and stores float16;
    # only Core ML itself shows how its own kernels handle the range.
    layer, x = _range_case(name)
    path = str(tmp_path / f"{name}.mlpackage")
    to_coreml(layer, x, path, compute_precision="float16")
    got = np.asarray(predict(path, [x])["output"])
    assert relative_error(got, np.array(layer(x))) < FP16_TOLERANCE


def test_float32_export_keeps_nothing_aside(tmp_path: Any) -> None:
    result = export_and_compare(tmp_path, nn.RMSNorm(8), [_normal((2, 8))], "float32")
    assert result.report.float32_ops == {}


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_empty_slices_are_dropped(tmp_path: Any, precision: str) -> None:
    # Reflect padding of width 0 (Encodec) concatenates empty slices.
    def fn(x: mx.array) -> mx.array:
        return mx.concatenate([x[:, 1:1][:, ::-1], x, x[:, 3:3]], axis=1) * 2

    export_and_compare(tmp_path, fn, [_normal((2, 3, 4))], precision)


def test_interpreter_runs_layer_norm_after_a_conv(tmp_path: Any) -> None:
    # A LayerNorm over channels after a conv is a `layer_norm` over axis 1 in Core ML's NCHW.
    mx.random.seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LayerNorm(4))
    model.eval()
    result = export_and_compare(tmp_path, model, [_normal((1, 6, 6, 3))], "float32")
    assert "layer_norm" in result.report.op_counts


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_indexing_rows_by_computed_int32_indices(tmp_path: Any, precision: str) -> None:
    def fn(h: mx.array, index: mx.array) -> mx.array:
        return h[mx.arange(h.shape[0]), index]

    index = mx.array(np.array([1, 2], np.int32))
    export_and_compare(tmp_path, fn, [_normal((2, 3, 4)), index], precision)
