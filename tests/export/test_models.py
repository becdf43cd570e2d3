"""The models of `mlxkit.models` at tiny sizes, in float32 and float16, and the report."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from mlxkit import models
from mlxkit.export import (
    load_mlpackage,
    run_mlpackage_numpy,
    to_coreml,
)

import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.export.helpers import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    darwin_only,
    make_inputs,
    predict,
    relative_error,
    seeded,
)

pytest.importorskip("coremltools")


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
            model = seeded(make)
            inputs = make_inputs(shapes, seed=7)
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
    assert relative_error(got, want) < tolerance
    # NHWC in and out, NCHW inside: at most one transpose at each end.
    assert report.op_counts.get("transpose", 0) <= 2


def test_gcn_with_two_inputs(tmp_path: Any) -> None:
    model = seeded(lambda: models.gcn(in_features=6, hidden=8, num_classes=3))
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    adjacency = models.normalized_adjacency(edges, 5)
    features = make_inputs([(5, 6)], seed=3)[0]
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
    assert relative_error(got["output"], np.array(model(features, adjacency))) < FP32_TOLERANCE


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


@darwin_only
@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_matches_core_ml_runtime(
    exported_models: Callable[[str, str], Any], name: str, precision: str
) -> None:
    path, model, inputs, _ = exported_models(name, precision)
    got = np.asarray(predict(path, inputs)["output"])
    tolerance = FP32_TOLERANCE if precision == "float32" else FP16_TOLERANCE
    assert relative_error(got, np.array(model(*inputs))) < tolerance


@darwin_only
@pytest.mark.parametrize("name", ["depth_resnet20", "lraspp_mobilenet_v3"])
def test_interpreter_agrees_with_core_ml_runtime(
    exported_models: Callable[[str, str], Any], name: str
) -> None:
    path, _, inputs, _ = exported_models(name, "float16")
    runtime = np.asarray(predict(path, inputs)["output"])
    interpreted = run_mlpackage_numpy(path, [np.array(x) for x in inputs])["output"]
    assert relative_error(interpreted, runtime) < FP16_TOLERANCE
    assert math.isfinite(float(np.max(np.abs(runtime))))
