"""Tests of examples/segmentation.py: a quick run end to end (training, blur demo, timing, Core ML
export, then `--blur` on a folder), its blur and resize helpers against NumPy references, and the
parameter counts of the two models with the example's two classes."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

# isort: off
import mlxkit  # noqa: F401  (first, so the fast BLAS loads before mlx.core)
import mlx.core as mx
import mlx.nn as nn

# isort: on
from mlxkit import models
from mlxkit.images import save_png

import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.examples_common import run_example

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "segmentation.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("segmentation_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> str:
    return run_example(SCRIPT, *args)


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return height, width


def test_quick_run_then_blur_a_folder(tmp_path):
    out = tmp_path / "run"
    output = run("--quick", "--out", str(out))
    for name in (
        "log.csv",
        "evaluation.json",
        "blur_demo.png",
        "best/model.safetensors",
        "segmenter.safetensors",
        "segmenter.json",
        "segmenter.mlpackage",
        "time_coreml.py",
    ):
        assert (out / name).exists(), name
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert {"loss", "mean_iou"} <= set(evaluation["model"])
    iou = evaluation["iou"]
    baseline, model = iou["all-background baseline"], iou["mlxkit lraspp"]
    # All background: person IoU 0, background IoU the background share, their mean half of it.
    assert baseline["person"] == 0 and 0.5 < baseline["background"] < 1
    assert abs(baseline["mean_iou"] - baseline["background"] / 2) < 1e-6
    # The per-class table agrees with the Trainer's streamed MeanIoU.
    assert abs(model["mean_iou"] - evaluation["model"]["mean_iou"]) < 1e-5
    assert abs(model["mean_iou"] - (model["background"] + model["person"]) / 2) < 1e-5
    assert set(evaluation["timing_ms_per_frame"]) == {"mask (model + argmax)", "mask + 55x55 blur"}
    # It learned: the seeded quick run (8 epochs of 32 images) finds people, where the baseline
    # finds none. Observed: person IoU 0.129, mean IoU 0.474 against the baseline's 0.428.
    assert model["person"] > baseline["person"] + 0.05
    assert model["mean_iou"] > baseline["mean_iou"] + 0.02
    # The exported float16 program, run by the NumPy interpreter, against MLX's float32 masks:
    # on all pixels, and on the person pixels, which an all-background model would not have.
    # Observed: 99.98% of pixels, 99.7% of 334 person pixels.
    coreml = evaluation["coreml"]
    assert coreml["agreement"] > 0.95
    assert coreml["person_pixels"] >= 100 and coreml["person_agreement"] > 0.95
    assert "Core ML float16 program (NumPy interpreter) mask" in output
    assert "all-background baseline" in output and "python time_coreml.py" in output
    compile(  # the Mac timing script is valid Python that loads the package with all units
        (out / "time_coreml.py").read_text(), "time_coreml.py", "exec"
    )
    assert "ComputeUnit.ALL" in (out / "time_coreml.py").read_text()
    assert str(out) in output
    # A 16:9 grayscale frame and an RGB one of the model's size: composites keep their sizes.
    frames = tmp_path / "frames"
    rng = np.random.default_rng(0)
    save_png(rng.integers(0, 256, (36, 64), dtype=np.uint8), frames / "wide.png")
    save_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), frames / "square.png")
    output = run("--blur", str(frames), "--out", str(out))
    assert "2 image(s)" in output
    assert png_size(out / "blurred" / "wide.png") == (36, 64)
    assert png_size(out / "blurred" / "square.png") == (32, 32)


def test_blur_without_weights_says_how_to_train(tmp_path):
    image = tmp_path / "frame.png"
    save_png(np.zeros((32, 32, 3)), image)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--blur", str(image), "--out", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "No trained weights" in result.stderr


def test_blur_sigma_is_opencvs_default_for_55(example):
    # OpenCV's getGaussianKernel with sigma <= 0: 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8.
    assert example.BLUR_KERNEL == 55
    assert abs(example.BLUR_SIGMA - 8.6) < 1e-12


@pytest.mark.parametrize("shape", [(1, 40, 33, 3), (2, 12, 20, 1)])
def test_gaussian_blur_matches_a_direct_55x55_convolution(example, shape):
    images = np.random.default_rng(1).random(shape).astype(np.float32)
    # Reference: pad with reflection without repeating the edge (numpy's "reflect" is OpenCV's
    # BORDER_REFLECT_101, repeated for pads wider than the image), slide the 2-D kernel.
    radius, sigma = 27, 0.3 * (27 - 1) + 0.8
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (55, 55), axis=(1, 2))
    expected = np.einsum("bhwcij,ij->bhwc", windows, kernel)
    blurred = np.array(example.gaussian_blur(mx.array(images)))
    np.testing.assert_allclose(blurred, expected, atol=1e-5)


def test_resize_enlarges_like_bilinear_upsampling_and_shrinks_by_area(example):
    images = mx.array(np.random.default_rng(2).random((1, 6, 10, 2)).astype(np.float32))
    upsampled = nn.Upsample(scale_factor=2, mode="linear", align_corners=False)(images)
    np.testing.assert_allclose(
        np.array(example.resize(images, 12, 20)), np.array(upsampled), atol=1e-6
    )
    area = np.array(images).reshape(1, 3, 2, 5, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(np.array(example.resize(images, 3, 5)), area, atol=1e-6)
    np.testing.assert_allclose(np.array(example.resize(images, 6, 10)), np.array(images))
    # A non-integer shrink keeps every row a weighted mean (weights summing to one).
    np.testing.assert_allclose(np.array(example.resize_matrix(10, 7)).sum(axis=1), 1, atol=1e-6)


def test_person_mask_at_model_size_is_the_argmax(example):
    mx.random.seed(0)
    model = models.lraspp_mobilenet_v3_large(2, width_mult=0.25).eval()
    # Make the untrained head's logits large enough that argmax ties cannot occur.
    model.classifier.low_classifier.weight = model.classifier.low_classifier.weight * 1e3
    frames = mx.random.uniform(shape=(2, 32, 32, 3))
    mask = example.person_mask(model, frames, 32)
    expected = mx.argmax(model(frames), axis=-1) == 1
    assert mask.shape == (2, 32, 32)
    assert mx.array_equal(mask, expected).item()
    composite, _ = example.blur_background(model, frames, 32)
    blurred = example.gaussian_blur(frames)
    np.testing.assert_array_equal(
        np.array(composite), np.where(np.array(mask)[..., None], frames, blurred)
    )


def count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def test_two_class_parameter_counts_from_torchvisions_21_class_figures():
    # The classes only change the last convs: LR-ASPP's two 1x1 classifiers (from the 40-channel
    # C2 features and the 128-channel branch, with biases), DeepLabV3's final 1x1 from 256.
    lraspp = 3_221_538 - (40 + 1 + 128 + 1) * (21 - 2)
    deeplab = 11_029_328 - 3_851 - (256 + 1) * (21 - 2)  # minus the aux head (test_models.py)
    assert count(models.lraspp_mobilenet_v3_large(2)) == lraspp == 3_218_308
    assert count(models.deeplabv3_mobilenet_v3_large(2)) == deeplab == 11_020_594
