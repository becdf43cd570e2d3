"""Tests for mlxkit.models: parameter counts against published or hand-derived figures, output
shapes on tiny inputs, numerics against NumPy, strict weight round-trips and input checks."""

from __future__ import annotations

import math

# isort: off
import mlxkit  # first, so the fast BLAS loads before mlx.core
import mlx.core as mx
import mlx.nn as nn

# isort: on
from mlxkit import models
from mlxkit.models import BilinearUpsample
from mlxkit.models.depth import DepthResNet20
from mlxkit.models.mobilenet import make_divisible
from mlxkit.models.segmentation import LRASPP

import numpy as np
import pytest
from mlx.utils import tree_flatten


def count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def conv_bn_params(k: int, cin: int, cout: int, *, bias: bool = False) -> int:
    """A k x k conv (optionally with bias) followed by BatchNorm (scale + shift)."""
    return k * k * cin * cout + (cout if bias else 0) + 2 * cout


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("factory", "kwargs", "expected"),
    [
        # The depth-map article's resnet20 (github.com/GuffreyKu/depth_map, model/model.py).
        (models.depth_resnet20, {}, 1_108_369),
        # torchvision's published `num_params` metadata.
        (models.resnet18, {}, 11_689_512),
        (models.resnet50, {}, 25_557_032),
        (models.mobilenet_v3_large, {}, 5_483_032),
        (models.lraspp_mobilenet_v3_large, {"num_classes": 21}, 3_221_538),
        # Buda et al.'s U-Net (3 -> 1, base 32), widely reported as 7,763,041.
        (models.unet, {"in_channels": 3, "num_classes": 1}, 7_763_041),
    ],
)
def test_published_parameter_counts(factory, kwargs, expected):
    assert count(factory(**kwargs)) == expected


def test_deeplabv3_count_is_torchvision_figure_without_aux_head():
    # torchvision publishes 11,029,328 for its pretrained weights, which carry the auxiliary
    # FCNHead(40, 21): 3x3 conv 40 -> 10 (no bias) + BN(10) + 1x1 conv 10 -> 21 with bias.
    aux = conv_bn_params(3, 40, 40 // 4) + (40 // 4) * 21 + 21
    assert aux == 3_851
    assert count(models.deeplabv3_mobilenet_v3_large(num_classes=21)) == 11_029_328 - aux


def test_hand_derived_parameter_counts():
    # Gluon MLP: 784 -> 64 -> 64 -> 10 dense layers with biases.
    assert count(models.gluon_mlp()) == (784 * 64 + 64) + (64 * 64 + 64) + (64 * 10 + 10)
    # Flux conv MNIST: 2x2 convs 1 -> 16 -> 8, then Dense(288, 10).
    assert count(models.flux_mnist_cnn()) == (4 * 16 + 16) + (4 * 16 * 8 + 8) + (288 * 10 + 10)
    assert count(models.flux_mnist_cnn()) == 3_490
    # VGG-19: 16 biased 3x3 convs each with BatchNorm, then 512 -> 4096 -> 4096 -> 10.
    widths = [64, 64, 128, 128] + [256] * 4 + [512] * 8
    pairs = zip([3, *widths[:-1]], widths, strict=True)
    convs = sum(conv_bn_params(3, cin, cout, bias=True) for cin, cout in pairs)
    dense = (512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10)
    assert count(models.vgg19_cifar(num_classes=10)) == convs + dense
    # DCGAN generator: Dense(100, 12544) + BN(12544), then biased transposed convs with BN.
    generator = (100 * 12544 + 12544) + 2 * 12544
    generator += (25 * 256 * 128 + 128) + 2 * 128 + (16 * 128 * 64 + 64) + 2 * 64 + (16 * 64 + 1)
    assert count(models.dcgan_generator(latent_dim=100)) == generator
    discriminator = (16 * 64 + 64) + (16 * 64 * 128 + 128) + (7 * 7 * 128 + 1)
    assert count(models.dcgan_discriminator()) == discriminator
    # Kipf & Welling GCN on Cora: two bias-free weight matrices.
    assert count(models.gcn()) == 1433 * 16 + 16 * 7


# ----------------------------------------------------------------------------- output shapes


@pytest.mark.parametrize(
    ("factory", "kwargs", "shape", "expected"),
    [
        (models.depth_resnet20, {}, (2, 32, 64, 3), (2, 32, 64, 1)),
        (models.gluon_mlp, {}, (3, 28, 28, 1), (3, 10)),
        (models.flux_mnist_cnn, {}, (3, 28, 28, 1), (3, 10)),
        (models.vgg19_cifar, {"num_classes": 7}, (1, 32, 32, 3), (1, 7)),
        (models.resnet18, {"num_classes": 5}, (1, 32, 32, 3), (1, 5)),
        (models.resnet50, {"num_classes": 5}, (1, 32, 32, 3), (1, 5)),
        (models.dcgan_discriminator, {}, (2, 28, 28, 1), (2, 1)),
        (
            models.unet,
            {"in_channels": 2, "num_classes": 3, "base_channels": 4},
            (2, 32, 48, 2),
            (2, 32, 48, 3),
        ),
        (models.mobilenet_v3_large, {"num_classes": 4, "width_mult": 0.5}, (1, 32, 32, 3), (1, 4)),
        (models.lraspp_mobilenet_v3_large, {"num_classes": 3}, (1, 32, 48, 3), (1, 32, 48, 3)),
        (models.lraspp_mobilenet_v3_large, {"width_mult": 0.25}, (2, 64, 32, 3), (2, 64, 32, 2)),
        (models.deeplabv3_mobilenet_v3_large, {"num_classes": 3}, (1, 32, 32, 3), (1, 32, 32, 3)),
        (
            models.deeplabv3_mobilenet_v3_large,
            {"width_mult": 0.25},
            (2, 48, 32, 3),
            (2, 48, 32, 2),
        ),
    ],
)
def test_output_shapes(factory, kwargs, shape, expected):
    model = factory(**kwargs).eval()
    y = model(mx.random.normal(shape))
    mx.eval(y)
    assert tuple(y.shape) == expected
    assert bool(mx.all(mx.isfinite(y)))


def test_dcgan_generator_makes_28x28_images_in_tanh_range():
    generator = models.dcgan_generator(latent_dim=16)
    images = generator(mx.random.normal((4, 16)))  # training mode: batch statistics
    assert tuple(images.shape) == (4, 28, 28, 1)
    assert float(mx.abs(images).max()) <= 1.0


def test_segmentation_heads_tap_torchvision_features():
    # torchvision: low = C2 block (40 ch, stride 8), high = last 1x1 conv (960 ch, stride 16).
    model = models.lraspp_mobilenet_v3_large(num_classes=21)
    assert model.low_index == 4
    assert tuple(model.classifier.low_classifier.weight.shape) == (21, 1, 1, 40)
    assert tuple(model.classifier.cbr[0].weight.shape) == (128, 1, 1, 960)
    assert tuple(model.classifier.high_classifier.weight.shape) == (21, 1, 1, 128)
    # The dilated C4 stage: depthwise 5x5 with dilation 2 and stride 1.
    depthwise = model.backbone[13].block[1][0]
    assert depthwise.stride == (1, 1) and depthwise.dilation in (2, (2, 2))
    assert depthwise.padding == (4, 4)


# ----------------------------------------------------------------------------- numerics


def test_make_divisible_matches_torchvision_rounding():
    # Hand-applied rule: round to the nearest multiple of 8 (at least 8), bump if < 90%.
    assert [make_divisible(v) for v in (16, 20, 4, 72 * 0.75, 960 * 0.25, 1280 * 0.35)] == [
        16,
        24,
        8,
        56,
        240,
        448,
    ]
    assert make_divisible(11) == 16  # 11 -> 8 would drop below 90% (9.9), so 16


def test_gluon_mlp_init_statistics():
    mx.random.seed(0)
    model = models.gluon_mlp()
    first = np.array(model.layers[0].weight)
    assert abs(first.std() - 0.1) < 0.003  # 50,176 samples of Normal(0, 0.1)
    assert abs(first.mean()) < 0.003
    for layer in model.layers:
        assert np.all(np.array(layer.bias) == 0.0)


def test_resnet_conv_init_is_kaiming_fan_out():
    mx.random.seed(0)
    weight = np.array(models.resnet18().layer4[1].conv2.weight)  # (512, 3, 3, 512)
    expected = math.sqrt(2.0 / (512 * 3 * 3))
    assert abs(weight.std() / expected - 1) < 0.01


def test_gluon_mlp_matches_numpy():
    model = models.gluon_mlp()
    x = np.random.default_rng(0).normal(size=(5, 28, 28, 1)).astype(np.float32)
    h = x.reshape(5, 784)
    for layer in model.layers[:-1]:
        h = np.maximum(h @ np.array(layer.weight).T + np.array(layer.bias), 0)
    last = model.layers[-1]
    expected = h @ np.array(last.weight).T + np.array(last.bias)
    np.testing.assert_allclose(np.array(model(mx.array(x))), expected, rtol=1e-4, atol=1e-4)


def test_normalized_adjacency_hand_computed():
    # Path 0-1-2, given once reversed, once duplicated, plus an explicit self-loop on 2;
    # node 3 is isolated. A + I has degrees 2, 3, 2, 1.
    edges = np.array([[0, 1], [2, 1], [1, 2], [2, 2]])
    s6 = 1 / math.sqrt(6)
    expected = np.array(
        [
            [1 / 2, s6, 0, 0],
            [s6, 1 / 3, s6, 0],
            [0, s6, 1 / 2, 0],
            [0, 0, 0, 1],
        ]
    )
    result = models.normalized_adjacency(edges, 4)
    assert result.dtype == mx.float32
    np.testing.assert_allclose(np.array(result), expected, rtol=1e-6)


def test_gcn_forward_matches_numpy_and_dropout_only_in_training():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(4, 5)).astype(np.float32)
    adjacency = models.normalized_adjacency(np.array([[0, 1], [1, 2], [2, 3]]), 4)
    model = models.gcn(in_features=5, hidden=6, num_classes=3, dropout=0.5)
    w1, w2 = np.array(model.gc1.weight), np.array(model.gc2.weight)
    a = np.array(adjacency)
    expected = a @ np.maximum(a @ features @ w1, 0) @ w2
    model.eval()
    np.testing.assert_allclose(
        np.array(model(mx.array(features), adjacency)), expected, rtol=1e-5, atol=1e-5
    )
    model.train()
    assert not np.allclose(np.array(model(mx.array(features), adjacency)), expected)
    # Glorot-uniform bound sqrt(6 / (fan_in + fan_out)).
    assert np.abs(w1).max() <= math.sqrt(6 / (5 + 6))


def _bilinear_reference(x: np.ndarray, scale: int, align_corners: bool) -> np.ndarray:
    """PyTorch's F.interpolate(mode="bilinear") on one (H, W) plane, written out in NumPy."""

    def axis(size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = np.arange(size_in * scale, dtype=np.float64)
        if align_corners:
            src = out * (size_in - 1) / (size_in * scale - 1)
        else:
            src = np.maximum((out + 0.5) / scale - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), size_in - 1)
        hi = np.minimum(lo + 1, size_in - 1)
        return lo, hi, src - lo

    (r0, r1, fr), (c0, c1, fc) = axis(x.shape[0]), axis(x.shape[1])
    rows = x[r0] * (1 - fr)[:, None] + x[r1] * fr[:, None]
    return rows[:, c0] * (1 - fc)[None, :] + rows[:, c1] * fc[None, :]


@pytest.mark.parametrize(
    ("build", "scale", "align_corners"),
    [
        (DepthResNet20, 2, True),  # the article's decoder
        (lambda: LRASPP(2, width_mult=0.25), 8, False),  # torchvision's final resize
    ],
)
def test_upsampling_matches_pytorch_bilinear(build, scale, align_corners):
    upsample = build().upsample
    plane = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    result = np.array(upsample(mx.array(plane)[None, :, :, None]))[0, :, :, 0]
    expected = _bilinear_reference(plane.astype(np.float64), scale, align_corners)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("scale", "align_corners"), [(2, True), (2, False), (3, True), (8, False), (16, False)]
)
def test_matrix_upsampling_equals_mlx_upsample_forward_and_backward(scale, align_corners):
    # The models' BilinearUpsample (two matrix products) against MLX's nn.Upsample (gathers).
    x = mx.array(np.random.default_rng(scale).normal(size=(2, 5, 7, 3)).astype(np.float32))
    ours = BilinearUpsample(scale, align_corners=align_corners)
    mlx_upsample = nn.Upsample(scale, mode="linear", align_corners=align_corners)
    weights = mx.array(np.random.default_rng(0).normal(size=(2, 5 * scale, 7 * scale, 3)))
    for fn in (lambda up: up(x), lambda up: mx.grad(lambda v: (up(v) * weights).sum())(x)):
        np.testing.assert_allclose(
            np.array(fn(ours)), np.array(fn(mlx_upsample)), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BilinearUpsample(1.5), r"`scale_factor` must be an integer >= 1.*1\.5"),
        (lambda: BilinearUpsample(0), r"`scale_factor` must be an integer >= 1.*=0"),
        (lambda: BilinearUpsample(2)(mx.zeros((4, 4, 3))), r"\(B, H, W, C\).*\(4, 4, 3\)"),
    ],
)
def test_matrix_upsampling_rejects_bad_input(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_depth_shortcut_subsamples_and_zero_pads_channels():
    block = DepthResNet20().layer2.layers[0]  # 16 -> 32 channels, stride 2
    x = mx.random.normal((1, 8, 8, 16))
    shortcut = np.array(block.shortcut(x))
    assert shortcut.shape == (1, 4, 4, 32)
    np.testing.assert_array_equal(shortcut[..., 8:24], np.array(x)[:, ::2, ::2, :])
    assert np.all(shortcut[..., :8] == 0) and np.all(shortcut[..., 24:] == 0)


# ----------------------------------------------------------------------------- weights


def _train_step_changes_stats(model: nn.Module, x: mx.array) -> None:
    model.train()
    mx.eval(model(x))  # updates BatchNorm running statistics, which must round-trip too


@pytest.mark.parametrize(
    ("factory", "kwargs", "shape"),
    [
        (models.depth_resnet20, {}, (2, 32, 32, 3)),
        (models.lraspp_mobilenet_v3_large, {"width_mult": 0.25}, (2, 32, 32, 3)),
        (models.unet, {"base_channels": 4}, (2, 16, 16, 1)),
        (models.dcgan_generator, {"latent_dim": 8}, (3, 8)),
    ],
)
def test_weights_round_trip_safetensors(tmp_path, factory, kwargs, shape):
    x = mx.random.normal(shape)
    model = factory(**kwargs)
    _train_step_changes_stats(model, x)
    path = tmp_path / "model.safetensors"
    model.save_weights(str(path))
    restored = factory(**kwargs, weights=path)  # a PathLike is accepted
    np.testing.assert_array_equal(np.array(model.eval()(x)), np.array(restored.eval()(x)))
    fresh = factory(**kwargs).eval()
    assert not np.allclose(np.array(fresh(x)), np.array(model(x)))


def test_weights_round_trip_npz(tmp_path):
    model = models.gcn(in_features=3, hidden=4, num_classes=2)
    path = str(tmp_path / "gcn.npz")
    model.save_weights(path)
    restored = models.gcn(in_features=3, hidden=4, num_classes=2, weights=path)
    np.testing.assert_array_equal(np.array(restored.gc2.weight), np.array(model.gc2.weight))


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="Received: weights="):
        models.flux_mnist_cnn(weights=missing)


def test_weights_with_wrong_extension(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        models.flux_mnist_cnn(weights=tmp_path / "model.pt")
    with pytest.raises(TypeError, match="Received: weights=3"):
        models.flux_mnist_cnn(weights=3)


def test_weights_from_another_architecture_list_keys(tmp_path):
    path = str(tmp_path / "mlp.safetensors")
    models.gluon_mlp().save_weights(path)
    # The one weight loader (mlxkit.load_weights) lists every key, under the factory's name.
    with pytest.raises(
        mlxkit.CheckpointError, match=r"(?s)flux_mnist_cnn.*unexpected keys.*layers\.0\.weight"
    ):
        models.flux_mnist_cnn(weights=path)


def test_weights_with_wrong_shapes(tmp_path):
    path = str(tmp_path / "unet.safetensors")
    models.unet(base_channels=4).save_weights(path)
    with pytest.raises(ValueError, match="same arguments"):
        models.unet(base_channels=8, weights=path)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("factory", "kwargs", "shape", "message"),
    [
        (models.depth_resnet20, {}, (1, 40, 64, 3), "multiples of 16"),
        (models.depth_resnet20, {}, (1, 32, 64, 1), "3 input channel"),
        (models.unet, {"base_channels": 4}, (1, 24, 32, 1), "multiples of 16"),
        (models.lraspp_mobilenet_v3_large, {"width_mult": 0.25}, (1, 32, 40, 3), "multiples of 16"),
        (models.deeplabv3_mobilenet_v3_large, {"width_mult": 0.25}, (1, 8, 8, 3), "multiples"),
        (models.flux_mnist_cnn, {}, (1, 32, 32, 1), "28x28"),
        (models.vgg19_cifar, {}, (1, 64, 64, 3), "32x32"),
        (models.resnet18, {}, (1, 32, 32), "NHWC"),
        (models.gluon_mlp, {}, (2, 100), "784"),
    ],
)
def test_bad_input_shapes(factory, kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)(mx.zeros(shape))


def test_bad_graph_inputs():
    model = models.gcn(in_features=3, hidden=4, num_classes=2)
    with pytest.raises(ValueError, match=r"adjacency\.shape"):
        model(mx.zeros((4, 3)), mx.eye(5))
    with pytest.raises(ValueError, match=r"features\.shape"):
        model(mx.zeros((4, 2)), mx.eye(4))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        models.normalized_adjacency(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match="num_edges, 2"):
        models.normalized_adjacency(np.array([0, 1, 2]), 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: models.resnet18(num_classes=0), "num_classes=0"),
        (lambda: models.vgg19_cifar(num_classes=2.5), "num_classes=2.5"),
        (lambda: models.lraspp_mobilenet_v3_large(width_mult=0), "width_mult=0"),
        (lambda: models.gcn(dropout=1.0), "dropout=1.0"),
        (lambda: models.dcgan_generator(latent_dim=-1), "latent_dim=-1"),
        (lambda: models.unet(base_channels=True), "base_channels=True"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
