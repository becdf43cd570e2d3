"""Tests for mlxkit.export: Core ML lowering checked by running the saved packages.

Core ML itself only runs on macOS. Everywhere, each exported `.mlpackage` is read back from disk
and executed by the NumPy MIL interpreter (`run_mlpackage_numpy`); its outputs are compared with
the MLX forward pass on random inputs. On macOS the same packages also go through
`MLModel.predict`. The interpreter's own semantics are pinned to published figures (the MIL
spec's bilinear sampling grids) and its weight reader to coremltools' native blob reader.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

from mlxkit import models
from mlxkit.export import (
    ImageInput,
    UnsupportedOperationError,
    load_mlpackage,
    run_mlpackage_numpy,
    to_coreml,
    to_mlxfn,
)
from mlxkit.export._mil_numpy import read_blob, upsample_bilinear_nchw
from mlxkit.models import BilinearUpsample

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

pytest.importorskip("coremltools")

FP32_TOLERANCE = 1e-4  # max |error| / max |reference|
FP16_TOLERANCE = 1e-2  # float16 storage: ~3 significant digits after dozens of layers

darwin_only = pytest.mark.skipif(
    sys.platform != "darwin", reason="Core ML's runtime (MLModel.predict) exists only on macOS"
)


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want))), 1e-6)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) / scale)


def _as_tuple(result: Any) -> tuple[mx.array, ...]:
    return tuple(result) if isinstance(result, (list, tuple)) else (result,)


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm non-trivial statistics so that folding them is actually tested."""
    rng = np.random.default_rng(seed)
    for _, module in model.named_modules():
        if isinstance(module, nn.BatchNorm):
            c = module.running_mean.shape[0]
            module.running_mean = mx.array(rng.normal(0, 0.5, c).astype(np.float32))
            module.running_var = mx.array(rng.uniform(0.5, 2.0, c).astype(np.float32))
            if "weight" in module:
                module.weight = mx.array(rng.uniform(0.5, 1.5, c).astype(np.float32))
                module.bias = mx.array(rng.normal(0, 0.2, c).astype(np.float32))
    return model


def _seeded(make: Callable[[], nn.Module]) -> nn.Module:
    mx.random.seed(0)
    model = _random_bn(make())
    model.eval()
    mx.eval(model.parameters())
    return model


def _function_of(module: nn.Module) -> Callable[..., mx.array]:
    module.eval()
    mx.eval(module.parameters())
    return module


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


def _make_inputs(shapes: list[tuple[int, ...]], seed: int) -> list[mx.array]:
    rng = np.random.default_rng(seed)
    return [mx.array(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def _prepare(factory: Callable[[], Any]) -> Callable[..., Any]:
    made = factory()
    return _function_of(made) if isinstance(made, nn.Module) else made


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Any]:
    """Exports each op case once per precision; returns (path, function, inputs, report)."""
    root = tmp_path_factory.mktemp("ops")
    cache: dict[tuple[str, str], Any] = {}

    def get(name: str, precision: str) -> Any:
        key = (name, precision)
        if key not in cache:
            factory, shapes, _ = OP_CASES[name]
            fn = _prepare(factory)
            inputs = _make_inputs(shapes, seed=len(name))
            path = str(root / f"{name}_{precision}.mlpackage")
            result = to_coreml(fn, inputs, path, compute_precision=precision)
            cache[key] = (result.path, fn, inputs, result.report)
        return cache[key]

    return get


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_op_matches_mlx_in_fp32(exported: Callable[[str, str], Any], name: str) -> None:
    path, fn, inputs, report = exported(name, "float32")
    want = _as_tuple(fn(*inputs))
    got = run_mlpackage_numpy(path, [np.array(x) for x in inputs])
    assert len(got) == len(want)
    for (_, value), reference in zip(got.items(), want, strict=True):
        assert value.shape == reference.shape
        assert _relative_error(value, np.array(reference)) < FP32_TOLERANCE
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
    want = _as_tuple(fn(*inputs))
    got = run_mlpackage_numpy(path, [np.array(x) for x in inputs])
    for (_, value), reference in zip(got.items(), want, strict=True):
        assert _relative_error(value, np.array(reference)) < FP16_TOLERANCE
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


# --------------------------------------------------------------------------------------------
# Models from mlxkit.models, at tiny sizes

MODEL_CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]]]] = {
    "depth_resnet20": (models.depth_resnet20, [(1, 32, 64, 3)]),
    "lraspp_mobilenet_v3": (
        lambda: models.lraspp_mobilenet_v3_large(num_classes=3, width_mult=0.25),
        [(1, 64, 64, 3)],
    ),
    "deeplabv3_mobilenet_v3": (
        lambda: models.deeplabv3_mobilenet_v3_large(num_classes=3, width_mult=0.25),
        [(1, 64, 64, 3)],
    ),
    "unet": (lambda: models.unet(in_channels=3, num_classes=2, base_channels=4), [(1, 32, 32, 3)]),
    "resnet18": (lambda: models.resnet18(num_classes=10), [(1, 32, 32, 3)]),
    "flux_mnist_cnn": (models.flux_mnist_cnn, [(2, 28, 28, 1)]),
    "gluon_mlp": (models.gluon_mlp, [(2, 28, 28, 1)]),
    "dcgan_generator": (lambda: models.dcgan_generator(latent_dim=16), [(2, 16)]),
    "dcgan_discriminator": (models.dcgan_discriminator, [(2, 28, 28, 1)]),
}


@pytest.fixture(scope="module")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Any]:
    root = tmp_path_factory.mktemp("models")
    cache: dict[tuple[str, str], Any] = {}

    def get(name: str, precision: str) -> Any:
        if (name, precision) not in cache:
            make, shapes = MODEL_CASES[name]
            model = _seeded(make)
            inputs = _make_inputs(shapes, seed=7)
            path = str(root / f"{name}_{precision}.mlpackage")
            result = to_coreml(model, inputs, path, compute_precision=precision)
            cache[(name, precision)] = (result.path, model, inputs, result.report)
        return cache[(name, precision)]

    return get


@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_matches_mlx(
    exported_models: Callable[[str, str], Any], name: str, precision: str
) -> None:
    path, model, inputs, report = exported_models(name, precision)
    want = np.array(model(*inputs))
    got = run_mlpackage_numpy(path, [np.array(x) for x in inputs])["output"]
    tolerance = FP32_TOLERANCE if precision == "float32" else FP16_TOLERANCE
    assert _relative_error(got, want) < tolerance
    # NHWC in and out, NCHW inside: at most one transpose at each end.
    assert report.op_counts.get("transpose", 0) <= 2


def test_gcn_with_two_inputs(tmp_path: Any) -> None:
    model = _seeded(lambda: models.gcn(in_features=6, hidden=8, num_classes=3))
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    adjacency = models.normalized_adjacency(edges, 5)
    features = _make_inputs([(5, 6)], seed=3)[0]
    result = to_coreml(
        model,
        [features, adjacency],
        str(tmp_path / "gcn.mlpackage"),
        compute_precision="float32",
        input_names=["features", "adjacency"],
    )
    got = run_mlpackage_numpy(
        result.path, {"features": np.array(features), "adjacency": np.array(adjacency)}
    )
    assert _relative_error(got["output"], np.array(model(features, adjacency))) < FP32_TOLERANCE


def test_depth_model_decoder_uses_fused_resampling(
    exported_models: Callable[[str, str], Any],
) -> None:
    _, _, _, report = exported_models("depth_resnet20", "float32")
    assert report.op_counts["upsample_bilinear"] == 4
    assert report.op_counts["conv"] == 29  # 25 encoder + 4 decoder convs, BatchNorms folded
    assert "batch_norm" not in report.op_counts
    assert report.fusions["upsample:bilinear"] == 4


# --------------------------------------------------------------------------------------------
# Report


def test_report_counts_and_prints(exported_models: Callable[[str, str], Any]) -> None:
    path, model, _, report = exported_models("flux_mnist_cnn", "float16")
    assert report.parameter_count == sum(v.size for _, v in tree_flatten(model.parameters()))
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    assert report.file_size_bytes == size
    assert report.op_counts == load_mlpackage(path).op_counts()
    text = str(report)
    assert "precision float16" in text
    assert f"{report.parameter_count:,} parameters" in text
    for op, count in report.op_counts.items():
        assert any(line.split() == [op, str(count)] for line in text.splitlines())


# --------------------------------------------------------------------------------------------
# Interfaces: images, classifiers, class masks, layout, names


def test_image_input_rgb_scale_and_bias(tmp_path: Any) -> None:
    model = _seeded(lambda: models.unet(in_channels=3, num_classes=2, base_channels=4))
    image = ImageInput(scale=1 / 127.5, bias=(-1.0, -0.5, 0.0))
    result = to_coreml(
        model,
        mx.zeros((1, 32, 32, 3)),
        str(tmp_path / "img.mlpackage"),
        compute_precision="float32",
        image_input=image,
    )
    assert result.report.inputs[0][2] == "image"
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    got = run_mlpackage_numpy(result.path, pixels)["output"]
    normalized = pixels.astype(np.float32) / 127.5 + np.array([-1.0, -0.5, 0.0], np.float32)
    want = np.array(model(mx.array(normalized[None])))
    assert _relative_error(got, want) < FP32_TOLERANCE


def test_image_input_bgr_reverses_channels(tmp_path: Any) -> None:
    fn = _function_of(nn.Conv2d(3, 2, 1))
    result = to_coreml(
        fn,
        mx.zeros((1, 4, 4, 3)),
        str(tmp_path / "bgr.mlpackage"),
        compute_precision="float32",
        image_input=ImageInput(scale=1.0, color_layout="BGR"),
    )
    pixels = np.random.default_rng(1).integers(0, 256, (4, 4, 3)).astype(np.float32)
    got = run_mlpackage_numpy(result.path, pixels)["output"]
    # Core ML hands a BGR model the channels in B, G, R order.
    want = np.array(fn(mx.array(pixels[None, ..., ::-1].copy())))
    assert _relative_error(got, want) < FP32_TOLERANCE


def test_classifier_labels(tmp_path: Any) -> None:
    model = _seeded(models.flux_mnist_cnn)
    labels = [f"digit_{i}" for i in range(10)]
    result = to_coreml(
        lambda x: mx.softmax(model(x), axis=-1),
        mx.zeros((1, 28, 28, 1)),
        str(tmp_path / "cls.mlpackage"),
        compute_precision="float32",
        image_input=ImageInput(scale=1 / 255, color_layout="GRAYSCALE"),
        class_labels=labels,
    )
    pixels = np.random.default_rng(2).integers(0, 256, (28, 28, 1)).astype(np.uint8)
    out = run_mlpackage_numpy(result.path, pixels)
    probs = np.array(mx.softmax(model(mx.array(pixels[None].astype(np.float32) / 255)), -1))[0]
    label = next(v for v in out.values() if isinstance(v, str))
    scores = next(v for v in out.values() if isinstance(v, dict))
    assert label == labels[int(np.argmax(probs))]
    np.testing.assert_allclose([scores[k] for k in labels], probs, rtol=1e-4, atol=1e-6)


def test_segmentation_class_mask(tmp_path: Any) -> None:
    model = _seeded(lambda: models.lraspp_mobilenet_v3_large(num_classes=3, width_mult=0.25))
    x = _make_inputs([(1, 64, 64, 3)], seed=5)[0]
    result = to_coreml(
        model,
        x,
        str(tmp_path / "mask.mlpackage"),
        compute_precision="float32",
        class_mask=True,
        output_names=["mask"],
    )
    got = run_mlpackage_numpy(result.path, np.array(x))["mask"]
    logits = np.array(model(x))
    assert got.shape == (1, 64, 64) and got.dtype == np.int32
    # Pixels whose top two logits nearly tie may flip under float rounding; all others match.
    top2 = np.sort(logits, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 1e-4
    np.testing.assert_array_equal(got[clear], logits.argmax(-1)[clear])
    assert clear.mean() > 0.99


def test_channels_first_layout_has_no_transposes(tmp_path: Any) -> None:
    model = _seeded(models.depth_resnet20)
    x = _make_inputs([(1, 32, 64, 3)], seed=9)[0]
    result = to_coreml(
        model,
        x,
        str(tmp_path / "cf.mlpackage"),
        compute_precision="float32",
        layout="channels_first",
    )
    assert "transpose" not in result.report.op_counts
    got = run_mlpackage_numpy(result.path, np.array(x).transpose(0, 3, 1, 2))["output"]
    want = np.array(model(x)).transpose(0, 3, 1, 2)
    assert _relative_error(got, want) < FP32_TOLERANCE


def test_names_and_multiple_outputs(tmp_path: Any) -> None:
    def fn(a: mx.array, b: mx.array) -> tuple[mx.array, ...]:
        return a + b, a, mx.ones((3,))

    inputs = _make_inputs([ROWS, ROWS], seed=4)
    result = to_coreml(
        fn,
        inputs,
        str(tmp_path / "names.mlpackage"),
        input_names=["left", "right"],
        output_names=["total", "same", "ones"],
    )
    got = run_mlpackage_numpy(
        result.path, {"left": np.array(inputs[0]), "right": np.array(inputs[1])}
    )
    assert list(got) == ["total", "same", "ones"]
    np.testing.assert_allclose(got["same"], np.array(inputs[0]), rtol=1e-3)
    np.testing.assert_allclose(got["ones"], np.ones(3))


def test_integer_input_embedding(tmp_path: Any) -> None:
    def fn(ids: mx.array) -> mx.array:
        return mx.take(_EMBED, ids, axis=0)

    ids = mx.array([[1, 4, 9, 0]], dtype=mx.int32)
    result = to_coreml(fn, ids, str(tmp_path / "embed.mlpackage"), compute_precision="float32")
    got = run_mlpackage_numpy(result.path, np.array([[3, 3, 2, 8]], dtype=np.int32))["output"]
    np.testing.assert_allclose(got, np.array(_EMBED)[[3, 3, 2, 8]][None], rtol=1e-6)


def test_module_training_mode_is_restored(tmp_path: Any) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    to_coreml(model, mx.zeros((1, 4)), str(tmp_path / "mode.mlpackage"))
    assert model.training


# --------------------------------------------------------------------------------------------
# Errors: clear messages, nothing written


def _leftovers(directory: Any) -> list[str]:
    return sorted(os.listdir(directory))


def test_unsupported_primitives_are_listed_together(tmp_path: Any) -> None:
    target = tmp_path / "bad.mlpackage"

    def fn(x: mx.array) -> mx.array:
        # Supported ops around the unsupported ones must not hide them.
        return mx.sort(x) * 2 + mx.cumsum(nn.relu(x))

    with pytest.raises(UnsupportedOperationError) as info:
        to_coreml(fn, mx.zeros((4,)), str(target))
    assert set(info.value.operations) == {"Sort", "Scan"}
    assert "Sort" in str(info.value) and "Scan" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_unevaluated_closure_arrays_explain_the_fix(tmp_path: Any) -> None:
    weight = mx.random.normal((4, 4))  # deliberately left unevaluated
    with pytest.raises(UnsupportedOperationError, match=r"mx\.eval"):
        to_coreml(lambda x: x @ weight, mx.zeros((1, 4)), str(tmp_path / "lazy.mlpackage"))
    assert _leftovers(tmp_path) == []


def test_module_parameters_are_evaluated_for_the_user(tmp_path: Any) -> None:
    model = nn.Linear(4, 2)  # fresh, lazily initialised parameters
    result = to_coreml(
        model, mx.zeros((1, 4)), str(tmp_path / "fresh.mlpackage"), compute_precision="float32"
    )
    x = np.ones((1, 4), np.float32)
    got = run_mlpackage_numpy(result.path, x)["output"]
    assert _relative_error(got, np.array(model(mx.array(x)))) < FP32_TOLERANCE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "model.mlmodel"}, "must end with `.mlpackage`"),
        ({"example_inputs": [1.0]}, "Received: example_inputs"),
        ({"example_inputs": None}, "Received: example_inputs=None"),
        ({"compute_precision": "half"}, "compute_precision='half'"),
        ({"compute_units": "gpu"}, "compute_units='gpu'"),
        ({"minimum_deployment_target": "iOS99"}, "minimum_deployment_target='iOS99'"),
        ({"layout": "nchw"}, "layout='nchw'"),
        ({"input_names": ["a", "b"]}, "one name per input"),
        ({"output_names": ["bad name"]}, "identifiers"),
        ({"image_input": ImageInput()}, "needs an example of shape"),
        ({"example_inputs": mx.zeros((1, 4), dtype=mx.uint8)}, "float32, float16 or int32"),
    ],
)
def test_bad_arguments_raise_before_writing(
    tmp_path: Any, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "model": lambda x: x * 2,
        "example_inputs": mx.zeros((1, 4)),
        "path": "m.mlpackage",
    }
    arguments.update(kwargs)
    arguments["path"] = str(tmp_path / arguments["path"])
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        to_coreml(
            arguments.pop("model"),
            arguments.pop("example_inputs"),
            arguments.pop("path"),
            **arguments,
        )
    assert _leftovers(tmp_path) == []


def test_failed_conversion_leaves_existing_package_untouched(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coremltools as ct

    target = tmp_path / "keep.mlpackage"
    to_coreml(lambda x: x + 1, mx.zeros((2,)), str(target), compute_precision="float32")
    before = run_mlpackage_numpy(str(target), np.zeros(2, np.float32))["output"]

    def broken_save(self: Any, path: str) -> None:
        os.makedirs(path, exist_ok=True)  # the real save replaces what is there
        with open(os.path.join(path, "partial"), "w") as f:
            f.write("half")
        raise OSError("disk full")

    monkeypatch.setattr(ct.models.MLModel, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        to_coreml(lambda x: x * 3, mx.zeros((2,)), str(target))
    assert _leftovers(tmp_path) == ["keep.mlpackage"]
    after = run_mlpackage_numpy(str(target), np.zeros(2, np.float32))["output"]
    np.testing.assert_array_equal(before, after)


def test_export_replaces_an_existing_package(tmp_path: Any) -> None:
    target = str(tmp_path / "twice.mlpackage")
    to_coreml(lambda x: x + 1, mx.zeros((2,)), target, compute_precision="float32")
    to_coreml(lambda x: x * 3, mx.zeros((2,)), target, compute_precision="float32")
    got = run_mlpackage_numpy(target, np.ones(2, np.float32))["output"]
    np.testing.assert_array_equal(got, [3.0, 3.0])
    assert _leftovers(tmp_path) == ["twice.mlpackage"]


def test_interpreter_rejects_wrong_inputs(exported: Callable[[str, str], Any]) -> None:
    path, _, _, _ = exported("relu", "float32")
    with pytest.raises(ValueError, match="expects shape"):
        run_mlpackage_numpy(path, np.zeros((3, 3), np.float32))
    with pytest.raises(KeyError, match="Missing"):
        run_mlpackage_numpy(path, {"other": np.zeros(ROWS, np.float32)})
    with pytest.raises(FileNotFoundError, match=r"Manifest\.json"):
        run_mlpackage_numpy(os.path.dirname(path), np.zeros(ROWS, np.float32))


# --------------------------------------------------------------------------------------------
# .mlxfn


def test_mlxfn_round_trip_is_identical(tmp_path: Any) -> None:
    model = _seeded(models.depth_resnet20)
    x = _make_inputs([(1, 32, 64, 3)], seed=11)[0]
    path = to_mlxfn(model, x, str(tmp_path / "depth.mlxfn"), metadata='{"name": "depth"}')
    imported, metadata = mx.import_function(path, return_metadata=True)
    np.testing.assert_array_equal(np.array(imported(x)[0]), np.array(model(x)))
    assert metadata == '{"name": "depth"}'
    assert _leftovers(tmp_path) == ["depth.mlxfn"]


def test_mlxfn_rejects_bad_path_and_inputs(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"must end with `\.mlxfn`"):
        to_mlxfn(lambda x: x, mx.zeros(2), str(tmp_path / "f.bin"))
    with pytest.raises(TypeError, match="Received: example_inputs"):
        to_mlxfn(lambda x: x, "not an array", str(tmp_path / "f.mlxfn"))
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# CLI


def _tiny_factory(width: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))


def test_cli_exports_with_weights(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from mlxkit.export import _cli

    model = _seeded(lambda: _tiny_factory(width=5))
    weights = str(tmp_path / "w.safetensors")
    model.save_weights(weights)
    parser = argparse.ArgumentParser(prog="mlxkit")
    _cli.add_parser(parser.add_subparsers(dest="command", required=True))
    out = str(tmp_path / "cli.mlpackage")
    args = parser.parse_args(
        [
            "export",
            "--model",
            "tests.test_export:_tiny_factory",
            "--kwargs",
            '{"width": 5}',
            "--weights",
            weights,
            "--input-shape",
            "1,8,8,3",
            "-o",
            out,
            "--precision",
            "float32",
        ]
    )
    assert args.run(args) == 0
    assert "max_pool" in capsys.readouterr().out
    x = _make_inputs([(1, 8, 8, 3)], seed=12)[0]
    got = run_mlpackage_numpy(out, np.array(x))["output"]
    assert _relative_error(got, np.array(model(x))) < FP32_TOLERANCE

    mlxfn = str(tmp_path / "cli.mlxfn")
    args = parser.parse_args(
        [
            "export",
            "--format",
            "mlxfn",
            "--model",
            "tests.test_export:_tiny_factory",
            "--kwargs",
            '{"width": 5}',
            "--weights",
            weights,
            "--input-shape",
            "1,8,8,3",
            "-o",
            mlxfn,
        ]
    )
    assert args.run(args) == 0
    np.testing.assert_array_equal(np.array(mx.import_function(mlxfn)(x)[0]), np.array(model(x)))

    args = parser.parse_args(
        [
            "export",
            "--model",
            "tests.test_export:nope",
            "--input-shape",
            "1,8,8,3",
            "-o",
            str(tmp_path / "x.mlpackage"),
        ]
    )
    assert args.run(args) == 1
    assert "no attribute 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# macOS: the real Core ML runtime on the same packages


def _predict(path: str, inputs: list[mx.array]) -> dict[str, np.ndarray]:
    import coremltools as ct

    model = ct.models.MLModel(path, compute_units=ct.ComputeUnit.CPU_ONLY)
    names = [i.name for i in model.get_spec().description.input]
    return model.predict({n: np.array(x) for n, x in zip(names, inputs, strict=True)})


@darwin_only
@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_op_matches_core_ml_runtime(exported: Callable[[str, str], Any], name: str) -> None:
    path, fn, inputs, _ = exported(name, "float32")
    got = _predict(path, inputs)
    for (_, value), reference in zip(got.items(), _as_tuple(fn(*inputs)), strict=True):
        assert _relative_error(np.asarray(value), np.array(reference)) < FP32_TOLERANCE


@darwin_only
@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_matches_core_ml_runtime(
    exported_models: Callable[[str, str], Any], name: str, precision: str
) -> None:
    path, model, inputs, _ = exported_models(name, precision)
    got = np.asarray(_predict(path, inputs)["output"])
    tolerance = FP32_TOLERANCE if precision == "float32" else FP16_TOLERANCE
    assert _relative_error(got, np.array(model(*inputs))) < tolerance


@darwin_only
@pytest.mark.parametrize("name", ["depth_resnet20", "lraspp_mobilenet_v3"])
def test_interpreter_agrees_with_core_ml_runtime(
    exported_models: Callable[[str, str], Any], name: str
) -> None:
    path, _, inputs, _ = exported_models(name, "float16")
    runtime = np.asarray(_predict(path, inputs)["output"])
    interpreted = run_mlpackage_numpy(path, [np.array(x) for x in inputs])["output"]
    assert _relative_error(interpreted, runtime) < FP16_TOLERANCE
    assert math.isfinite(float(np.max(np.abs(runtime))))
