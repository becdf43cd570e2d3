"""Single operations and layers: each exported, read back from disk and run by the package's
NumPy MIL interpreter against MLX (and on macOS by Core ML itself). The interpreter's own semantics
are pinned to published figures (the MIL spec's bilinear grids) and coremltools' blob reader."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from mlxkit.export import (
    run_mlpackage_numpy,
    to_coreml,
)
from mlxkit.export._mil_numpy import read_blob, upsample_bilinear_nchw
from mlxkit.models import BilinearUpsample

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.export.helpers import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    as_tuple,
    darwin_only,
    make_inputs,
    predict,
    prepare,
    relative_error,
)

pytest.importorskip("coremltools")


# --------------------------------------------------------------------------------------------
# One exported package per case, shared by the interpreter tests and the macOS runtime tests.

mx.random.seed(1234)
_W1 = mx.random.normal((4, 3, 3, 2))
_W2 = mx.random.normal((3, 3, 3, 4))
_EMBED = mx.random.normal((10, 4))
mx.eval(_W1, _W2, _EMBED)

IMAGE = (1, 8, 8, 4)
ROWS = (2, 6)
SEQ = (2, 5, 6)


def _hard_sigmoid(x: mx.array) -> mx.array:
    return nn.relu6(x + 3) / 6


# name -> (function or module factory, input shapes, MIL ops the export must contain)
OP_CASES: dict[str, tuple[Callable[[], Any], list[tuple[int, ...]], set[str]]] = {
    "conv_stride_pad": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), [IMAGE], {"conv"}),
    "conv_dilated_depthwise": (
        lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4),
        [IMAGE],
        {"conv"},
    ),
    "conv_grouped": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), [IMAGE], {"conv"}),
    "conv_asymmetric_pad": (
        lambda: lambda x: mx.conv_general(x, _W2, padding=([0, 1], [2, 1])),
        [IMAGE],
        {"conv"},
    ),
    "conv1d": (lambda: nn.Conv1d(6, 3, 3, padding=1, stride=2), [SEQ], {"conv"}),
    "conv_transpose": (
        lambda: nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1),
        [IMAGE],
        {"conv_transpose"},
    ),
    "conv_transpose_output_padding": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
        [IMAGE],
        {"conv_transpose"},
    ),
    "conv_transpose_grouped": (
        lambda: lambda x: mx.conv_transpose2d(x, _W1, stride=2, padding=1, groups=2),
        [IMAGE],
        {"conv_transpose"},
    ),
    "conv_batchnorm_relu": (
        lambda: nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm(5), nn.ReLU()),
        [IMAGE],
        {"conv", "relu"},
    ),
    "batchnorm_alone": (lambda: nn.BatchNorm(4), [IMAGE], set()),
    "layernorm": (lambda: nn.LayerNorm(6), [ROWS], {"layer_norm"}),
    "groupnorm": (lambda: nn.GroupNorm(2, 4, pytorch_compatible=True), [IMAGE], {"layer_norm"}),
    "linear": (lambda: nn.Linear(6, 3), [ROWS], {"linear"}),
    "linear_no_bias_3d": (lambda: nn.Linear(6, 3, bias=False), [SEQ], {"linear"}),
    "matmul": (lambda: lambda x: x @ x.swapaxes(1, 2), [SEQ], {"matmul"}),
    "relu": (lambda: nn.ReLU(), [ROWS], {"relu"}),
    "relu6": (lambda: nn.ReLU6(), [ROWS], {"relu6"}),
    "sigmoid": (lambda: nn.Sigmoid(), [ROWS], {"sigmoid"}),
    "tanh": (lambda: nn.Tanh(), [ROWS], {"tanh"}),
    "hard_swish": (lambda: nn.Hardswish(), [ROWS], {"sigmoid_hard", "mul"}),
    "hard_sigmoid": (lambda: _hard_sigmoid, [ROWS], {"sigmoid_hard"}),
    "gelu": (lambda: nn.GELU(), [ROWS], {"gelu"}),
    "gelu_tanh": (lambda: nn.GELU(approx="precise"), [ROWS], {"gelu"}),
    "gelu_sigmoid": (lambda: nn.GELU(approx="fast"), [ROWS], {"gelu"}),
    "silu": (lambda: nn.SiLU(), [ROWS], {"silu"}),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), [ROWS], {"leaky_relu"}),
    "mish": (lambda: nn.Mish(), [ROWS], {"softplus", "tanh"}),
    "elu": (lambda: nn.ELU(0.7), [ROWS], {"elu"}),
    "softplus": (lambda: nn.Softplus(), [ROWS], {"softplus"}),
    "clip": (lambda: lambda x: mx.clip(x, -0.5, 0.25), [ROWS], {"clip"}),
    "softmax": (lambda: lambda x: mx.softmax(x, axis=-1), [ROWS], {"softmax"}),
    "log_softmax": (lambda: lambda x: nn.log_softmax(x, axis=-1), [ROWS], {"reduce_log_sum_exp"}),
    "max_pool": (lambda: nn.MaxPool2d(2, 2), [IMAGE], {"max_pool"}),
    "max_pool_padded": (lambda: nn.MaxPool2d(3, 2, padding=1), [IMAGE], {"max_pool"}),
    "avg_pool": (lambda: nn.AvgPool2d(2, 2), [IMAGE], {"avg_pool"}),
    "avg_pool_padded": (lambda: nn.AvgPool2d(3, 2, padding=1), [IMAGE], {"avg_pool"}),
    "global_avg_pool": (lambda: lambda x: mx.mean(x, axis=(1, 2)), [IMAGE], {"reduce_mean"}),
    "upsample_nearest": (
        lambda: nn.Upsample(2, mode="nearest"),
        [IMAGE],
        {"upsample_nearest_neighbor"},
    ),
    "upsample_nearest_fractional": (
        lambda: nn.Upsample(1.5, mode="nearest"),
        [IMAGE],
        {"gather_nd"},
    ),
    "upsample_bilinear": (lambda: nn.Upsample(2, mode="linear"), [IMAGE], {"upsample_bilinear"}),
    "upsample_bilinear_matrices": (
        lambda: BilinearUpsample(2, align_corners=True),
        [IMAGE],
        {"upsample_bilinear"},
    ),
    "upsample_bilinear_matrices_x8": (lambda: BilinearUpsample(8), [IMAGE], {"upsample_bilinear"}),
    "upsample_bilinear_align_corners": (
        lambda: nn.Upsample(2, mode="linear", align_corners=True),
        [IMAGE],
        {"upsample_bilinear"},
    ),
    # Large enough that MLX's float32 sampling positions are visibly rounded.
    "upsample_bilinear_align_corners_large": (
        lambda: nn.Upsample(2, mode="linear", align_corners=True),
        [(1, 64, 128, 2)],
        {"upsample_bilinear"},
    ),
    "upsample_bilinear_fractional": (
        lambda: nn.Upsample((1.5, 2.5), mode="linear"),
        [IMAGE],
        {"upsample_bilinear"},
    ),
    "concatenate": (lambda: lambda x: mx.concatenate([x, x * 2], axis=-1), [IMAGE], {"concat"}),
    "stack_split": (
        lambda: lambda x: mx.concatenate(mx.split(mx.stack([x, -x], axis=1), 2, axis=2), 0),
        [ROWS],
        {"split"},
    ),
    "reshape_flatten": (
        lambda: lambda x: mx.flatten(x, 1).reshape(1, 16, 16),
        [IMAGE],
        {"reshape"},
    ),
    "transpose": (lambda: lambda x: x.transpose(0, 2, 1) * mx.arange(5), [SEQ], set()),
    "strided_slice": (lambda: lambda x: x[:, ::2, 1::3], [IMAGE], {"slice_by_index"}),
    "negative_step_slice": (lambda: lambda x: x[:, 7:0:-2, ::-3], [IMAGE], {"slice_by_index"}),
    "pad": (
        lambda: lambda x: mx.pad(x, [(0, 0), (1, 2), (1, 1), (0, 0)], constant_values=1.5),
        [IMAGE],
        {"pad"},
    ),
    "broadcast": (lambda: lambda x: x[:, :1] * x + mx.broadcast_to(x[:1], x.shape), [ROWS], set()),
    "repeat_tile": (
        lambda: lambda x: mx.repeat(x, 2, axis=1) + mx.tile(x, (1, 2)),
        [ROWS],
        {"tile"},
    ),
    "reductions": (
        lambda: (
            lambda x: (
                mx.sum(x, 1)
                + mx.max(x, 1)
                + mx.min(x, 1)
                + mx.prod(x, 1)
                + mx.var(x, 1)
                + mx.logsumexp(x, 1)
            )
        ),
        [ROWS],
        {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_mean"},
    ),
    "argmax_argmin": (
        lambda: lambda x: (mx.argmax(x, axis=-1), mx.argmin(x, axis=1)),
        [IMAGE],
        {"reduce_argmax", "reduce_argmin"},
    ),
    "math": (
        lambda: (
            lambda x: (
                mx.exp(x)
                + mx.log(mx.abs(x))
                + mx.log2(mx.abs(x) + 1)
                + mx.log1p(mx.abs(x))
                + mx.sqrt(mx.abs(x))
                + mx.rsqrt(mx.abs(x) + 1)
                + mx.erf(x)
                + mx.square(x)
                + mx.power(mx.abs(x), 1.5)
                + mx.sin(x)
                + mx.floor(x)
                + mx.ceil(x)
            )
        ),
        [ROWS],
        {"exp", "log", "sqrt", "rsqrt", "erf", "pow", "sin", "floor", "ceil"},
    ),
    "where_compare": (
        lambda: lambda x: mx.where((x > 0) & (x < 1) | (x == 2), x, x * 0.5) + (x >= -1),
        [ROWS],
        {"select", "logical_and", "logical_or"},
    ),
    "floor_divide_remainder": (lambda: lambda x: x // 0.7 + x % 0.7, [ROWS], {"floor_div", "mod"}),
    "logaddexp": (lambda: lambda x: mx.logaddexp(x, x * 2), [ROWS], {"softplus"}),
    "two_inputs": (lambda: lambda a, b: (mx.maximum(a, b), a - b), [ROWS, ROWS], {"maximum"}),
    "take_constant_indices": (
        lambda: lambda x: mx.take(x, mx.array([0, 2, 1]), axis=1),
        [ROWS],
        {"gather"},
    ),
    "as_strided_window": (
        lambda: lambda x: mx.as_strided(x, (2, 3, 2), (6, 2, 1)).sum(-1),
        [ROWS],
        {"gather"},
    ),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Any]:
    """Exports each op case once per precision; returns (path, function, inputs, report)."""
    root = tmp_path_factory.mktemp("ops")
    cache: dict[tuple[str, str], Any] = {}

    def get(name: str, precision: str) -> Any:
        key = (name, precision)
        if key not in cache:
            factory, shapes, _ = OP_CASES[name]
            fn = prepare(factory)
            inputs = make_inputs(shapes, seed=len(name))
            path = str(root / f"{name}_{precision}.mlpackage")
            result = to_coreml(fn, inputs, path, compute_precision=precision)
            cache[key] = (result.path, fn, inputs, result.report)
        return cache[key]

    return get


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_op_matches_mlx_in_fp32(exported: Callable[[str, str], Any], name: str) -> None:
    path, fn, inputs, report = exported(name, "float32")
    want = as_tuple(fn(*inputs))
    got = run_mlpackage_numpy(path, [np.array(x) for x in inputs])
    assert len(got) == len(want)
    for (_, value), reference in zip(got.items(), want, strict=True):
        assert value.shape == reference.shape
        assert relative_error(value, np.array(reference)) < FP32_TOLERANCE
    assert OP_CASES[name][2] <= set(report.op_counts), report.op_counts


@pytest.mark.parametrize(
    "name",
    [
        "conv_batchnorm_relu",
        "conv_transpose",
        "layernorm",
        "hard_swish",
        "gelu",
        "upsample_bilinear",
        "avg_pool_padded",
        "math",
        "reductions",
    ],
)
def test_op_matches_mlx_in_fp16(exported: Callable[[str, str], Any], name: str) -> None:
    path, fn, inputs, report = exported(name, "float16")
    want = as_tuple(fn(*inputs))
    got = run_mlpackage_numpy(path, [np.array(x) for x in inputs])
    for (_, value), reference in zip(got.items(), want, strict=True):
        assert relative_error(value, np.array(reference)) < FP16_TOLERANCE
    assert report.op_counts.get("cast", 0) >= 2  # fp32 interface around an fp16 program


def test_batchnorm_after_conv_folds_into_its_weights(exported: Callable[[str, str], Any]) -> None:
    _, _, _, report = exported("conv_batchnorm_relu", "float32")
    assert report.op_counts == {"transpose": 2, "conv": 1, "relu": 1}


def test_hard_swish_is_one_fused_activation(exported: Callable[[str, str], Any]) -> None:
    _, _, _, report = exported("hard_swish", "float32")
    assert report.op_counts == {"sigmoid_hard": 1, "mul": 1}


# --------------------------------------------------------------------------------------------
# The interpreter's semantics against published figures and coremltools' own reader


def test_bilinear_grid_matches_mil_spec() -> None:
    # Grid points from the MIL `upsample_bilinear` docstring for an input interval [0, 1]:
    # sampling the identity ramp [0, 1] returns the grid itself.
    ramp = np.array([0.0, 1.0]).reshape(1, 1, 1, 2)
    cases = [
        (2.5, False, [0.0, 0.1, 0.5, 0.9, 1.0]),
        (2.5, True, [0.0, 0.25, 0.5, 0.75, 1.0]),
        (3.0, False, [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]),
        (3.0, True, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ]
    for scale, align, grid in cases:
        out = upsample_bilinear_nchw(ramp, 1.0, scale, align)
        np.testing.assert_allclose(out.reshape(-1), grid, atol=1e-9)


def test_weight_reader_agrees_with_coremltools_blob_reader(
    exported: Callable[[str, str], Any],
) -> None:
    from coremltools.libmilstoragepython import _BlobStorageReader

    path, _, _, _ = exported("conv_stride_pad", "float32")
    weights = os.path.join(path, "Data", "com.apple.CoreML", "weights", "weight.bin")
    reader = _BlobStorageReader(weights)
    # The first blob's metadata follows the 64-byte file header.
    native = np.asarray(reader.read_float_data(64))
    mine = read_blob(weights, 64, np.float32, native.size)
    np.testing.assert_array_equal(mine, native)


def test_interpreter_rejects_wrong_inputs(exported: Callable[[str, str], Any]) -> None:
    path, _, _, _ = exported("relu", "float32")
    with pytest.raises(ValueError, match="expects shape"):
        run_mlpackage_numpy(path, np.zeros((3, 3), np.float32))
    with pytest.raises(KeyError, match="Missing"):
        run_mlpackage_numpy(path, {"other": np.zeros(ROWS, np.float32)})
    with pytest.raises(FileNotFoundError, match=r"Manifest\.json"):
        run_mlpackage_numpy(os.path.dirname(path), np.zeros(ROWS, np.float32))


# macOS: the real Core ML runtime on the same packages


@darwin_only
@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_op_matches_core_ml_runtime(exported: Callable[[str, str], Any], name: str) -> None:
    path, fn, inputs, _ = exported(name, "float32")
    got = predict(path, inputs)
    for (_, value), reference in zip(got.items(), as_tuple(fn(*inputs)), strict=True):
        assert relative_error(np.asarray(value), np.array(reference)) < FP32_TOLERANCE
