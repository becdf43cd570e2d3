"""Interfaces: image inputs, classifiers, class masks, layout, names, integer inputs."""

from __future__ import annotations

from typing import Any

from mlxkit import models
from mlxkit.export import (
    ImageInput,
    run_mlpackage_numpy,
    to_coreml,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.export.helpers import (
    FP32_TOLERANCE,
    function_of,
    make_inputs,
    relative_error,
    seeded,
)

pytest.importorskip("coremltools")


# --------------------------------------------------------------------------------------------
# Interfaces: images, classifiers, class masks, layout, names


def test_image_input_rgb_scale_and_bias(tmp_path: Any) -> None:
    model = seeded(lambda: models.unet(in_channels=3, num_classes=2, base_channels=4))
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
    assert relative_error(got, want) < FP32_TOLERANCE


def test_image_input_bgr_reverses_channels(tmp_path: Any) -> None:
    fn = function_of(nn.Conv2d(3, 2, 1))
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
    assert relative_error(got, want) < FP32_TOLERANCE


def test_classifier_labels(tmp_path: Any) -> None:
    model = seeded(models.flux_mnist_cnn)
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
    model = seeded(lambda: models.lraspp_mobilenet_v3_large(num_classes=3, width_mult=0.25))
    x = make_inputs([(1, 64, 64, 3)], seed=5)[0]
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
    model = seeded(models.depth_resnet20)
    x = make_inputs([(1, 32, 64, 3)], seed=9)[0]
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
    assert relative_error(got, want) < FP32_TOLERANCE


def test_names_and_multiple_outputs(tmp_path: Any) -> None:
    def fn(a: mx.array, b: mx.array) -> tuple[mx.array, ...]:
        return a + b, a, mx.ones((3,))

    inputs = make_inputs([(2, 6), (2, 6)], seed=4)
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
    embed = mx.array(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32))

    def fn(ids: mx.array) -> mx.array:
        return mx.take(embed, ids, axis=0)

    ids = mx.array([[1, 4, 9, 0]], dtype=mx.int32)
    result = to_coreml(fn, ids, str(tmp_path / "embed.mlpackage"), compute_precision="float32")
    got = run_mlpackage_numpy(result.path, np.array([[3, 3, 2, 8]], dtype=np.int32))["output"]
    np.testing.assert_allclose(got, np.array(embed)[[3, 3, 2, 8]][None], rtol=1e-6)


def test_module_training_mode_is_restored(tmp_path: Any) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    to_coreml(model, mx.zeros((1, 4)), str(tmp_path / "mode.mlpackage"))
    assert model.training
