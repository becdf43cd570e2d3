"""mlxkit.nn: the fast convolution twins against MLX's own layers, forward and gradients.

Every case builds an `mlx.nn` layer and its `mlxkit.nn` twin with the same weights and compares
the outputs and the gradients with respect to the input and every parameter. Shapes are tiny:
MLX's CPU convolutions are slow.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any
from unittest import mock

import mlxkit.nn as knn
from mlxkit import Trainer
from mlxkit.export import run_mlpackage_numpy, to_coreml, to_mlxfn

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

TOLERANCE = 2e-5  # relative to the largest magnitude: float32 rounding of sums of ~100 terms


def _close(got: mx.array, want: mx.array) -> bool:
    got_np, want_np = np.array(got), np.array(want)
    scale = max(float(np.abs(want_np).max()), 1.0)
    return (
        got_np.shape == want_np.shape and float(np.abs(got_np - want_np).max()) <= TOLERANCE * scale
    )


def _cotangent(shape: tuple[int, ...]) -> mx.array:
    return mx.sin(mx.arange(math.prod(shape), dtype=mx.float32)).reshape(shape)


def _outputs_and_gradients(layer: nn.Module, x: mx.array) -> list[mx.array]:
    """The output and the gradients of a fixed weighted sum of it, for `x` and every parameter."""
    layer.train()

    def loss(params: Any, x: mx.array) -> mx.array:
        layer.update(params)
        y = layer(x)
        return (y * _cotangent(y.shape)).sum()

    params = layer.trainable_parameters()
    output = layer(x)
    grad_params, grad_x = mx.grad(loss, argnums=(0, 1))(params, x)
    return [output, grad_x, *(value for _, value in sorted(tree_flatten(grad_params)))]


def _input_gradient_from_forward(layer: nn.Module, x: mx.array) -> mx.array:
    """The input gradient of the same weighted sum, from forward passes only.

    The layer is affine in its input, so the gradient at sample n is the sum over unit inputs
    e_i of e_i * <layer(e_i) - layer(0), cotangent[n]>. This reference does not use MLX's
    gradient of the op (which has the wrong shape for transposed convolutions with
    `output_padding` in MLX 0.32).
    """
    layer.train()
    size = math.prod(x.shape[1:])
    basis = mx.eye(size).reshape(size, *x.shape[1:])
    responses = layer(basis) - layer(mx.zeros((1, *x.shape[1:])))
    cotangent = _cotangent(layer(x).shape).reshape(x.shape[0], -1)
    return (cotangent @ responses.reshape(size, -1).T).reshape(x.shape)


def _twins(native: nn.Module, fast: nn.Module, x: mx.array) -> None:
    fast.update(native.parameters())
    want = _outputs_and_gradients(native, x)
    want[1] = _input_gradient_from_forward(native, x)
    got = _outputs_and_gradients(fast, x)
    names = ["output", "input gradient", "bias gradient", "weight gradient"]
    for name, g, w in zip(names, got, want):
        assert _close(g, w), f"{name} differs"


CONV2D_CASES = [
    # (stride, padding, dilation, groups, kernel, input H x W)
    *itertools.product([2, 3, (2, 1)], [0, 1, 3], [1], [1], [3], [(9, 8)]),
    *itertools.product([2], [1, 2], [2], [2], [3, (2, 4)], [(11, 10)]),
    (2, 0, 1, 1, 1, (7, 7)),  # the 1x1 stride-2 ResNet shortcut
    (2, 1, 1, 1, 4, (14, 14)),  # DCGAN discriminator
    (2, 3, 1, 1, 7, (13, 12)),  # ResNet stem
    (2, 1, 1, 4, 3, (9, 9)),  # depthwise, as in MobileNet
    (1, 1, 1, 1, 3, (6, 5)),  # stride 1: MLX's op
]
FEW_CHANNEL_CASES = [
    # (input channels, stride, padding, kernel, input H x W): RGB / grayscale stems
    (3, 2, 3, 7, (13, 12)),
    (1, 2, 1, 4, (14, 14)),
    (3, (2, 3), 1, (3, 2), (9, 10)),
]


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "kernel", "size"), CONV2D_CASES
)
def test_conv2d_matches_mlx(
    stride: Any, padding: int, dilation: int, groups: int, kernel: Any, size: tuple[int, int]
) -> None:
    mx.random.seed(0)
    settings = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    channels = 4 if groups == 4 else 16  # 4 groups of one channel: depthwise
    native = nn.Conv2d(channels, 8, kernel, **settings)
    fast = knn.Conv2d(channels, 8, kernel, **settings)
    _twins(native, fast, mx.random.normal((2, *size, channels)))


@pytest.mark.parametrize(("channels", "stride", "padding", "kernel", "size"), FEW_CHANNEL_CASES)
def test_conv2d_with_few_input_channels_matches_mlx(
    channels: int, stride: Any, padding: int, kernel: Any, size: tuple[int, int]
) -> None:
    mx.random.seed(0)
    native = nn.Conv2d(channels, 8, kernel, stride=stride, padding=padding)
    fast = knn.Conv2d(channels, 8, kernel, stride=stride, padding=padding)
    _twins(native, fast, mx.random.normal((2, *size, channels)))


def test_conv_transpose2d_to_one_channel_matches_mlx() -> None:
    mx.random.seed(0)  # the DCGAN generator's last layer
    native = nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)
    fast = knn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)
    _twins(native, fast, mx.random.normal((2, 7, 7, 8)))


CONV_TRANSPOSE2D_CASES = [
    # (stride, padding, output_padding, dilation, kernel, input H x W)
    *itertools.product([2, 3], [0, 1, 2], [0, 1], [1], [3, 4], [(5, 4)]),
    ((1, 2), 1, 0, 1, 3, (4, 5)),
    (2, 1, 1, 2, 3, (5, 6)),
    (2, 0, 0, 1, 2, (4, 4)),  # the U-Net up-convolution
    (2, 1, 0, 1, 4, (7, 7)),  # DCGAN generator
    (1, 2, 0, 1, 5, (4, 4)),  # stride 1: MLX's op
]


@pytest.mark.parametrize(
    ("stride", "padding", "output_padding", "dilation", "kernel", "size"), CONV_TRANSPOSE2D_CASES
)
def test_conv_transpose2d_matches_mlx(
    stride: Any, padding: int, output_padding: int, dilation: int, kernel: int, size: Any
) -> None:
    if output_padding >= (stride if isinstance(stride, int) else min(stride)):
        pytest.skip("output_padding must be smaller than the stride")
    mx.random.seed(0)
    settings = dict(
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation
    )
    native = nn.ConvTranspose2d(4, 8, kernel, **settings)
    fast = knn.ConvTranspose2d(4, 8, kernel, **settings)
    _twins(native, fast, mx.random.normal((2, *size, 4)))


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), [(2, 1, 1, 1), (3, 2, 2, 2)])
def test_conv1d_matches_mlx(stride: int, padding: int, dilation: int, groups: int) -> None:
    mx.random.seed(0)
    settings = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    native, fast = nn.Conv1d(16, 8, 3, **settings), knn.Conv1d(16, 8, 3, **settings)
    _twins(native, fast, mx.random.normal((2, 13, 16)))


@pytest.mark.parametrize(
    ("stride", "padding", "output_padding"), [(2, 1, 1), (3, 0, 2), (2, 2, 0), (2, 0, 3)]
)
def test_conv_transpose1d_matches_mlx(stride: int, padding: int, output_padding: int) -> None:
    mx.random.seed(0)
    settings = dict(stride=stride, padding=padding, output_padding=output_padding)
    native = nn.ConvTranspose1d(4, 8, 3, **settings)
    fast = knn.ConvTranspose1d(4, 8, 3, **settings)
    _twins(native, fast, mx.random.normal((2, 7, 4)))


@pytest.mark.parametrize(
    ("layer", "shape", "route"),
    [
        (knn.Conv2d(16, 8, 3, stride=2), (1, 7, 7, 16), "_col2im"),
        (knn.ConvTranspose2d(8, 8, 3, stride=2), (1, 4, 4, 8), "_col2im"),
        (knn.Conv2d(16, 8, 3), (1, 7, 7, 16), None),  # stride 1
        (knn.ConvTranspose2d(8, 8, 3), (1, 4, 4, 8), None),  # stride 1
        (knn.Conv2d(3, 8, 3, stride=2), (1, 7, 7, 3), "_col2im"),  # 3 input channels
        (knn.ConvTranspose2d(8, 1, 3, stride=2), (1, 4, 4, 8), "_col2im"),  # 1 output channel
        (knn.Conv2d(16, 8, 1), (1, 7, 7, 16), "_pointwise_conv"),
        (knn.Conv2d(16, 8, 1, stride=2), (1, 7, 7, 16), "_pointwise_conv"),
        (knn.Conv1d(16, 8, 1), (1, 7, 16), "_pointwise_conv"),
        (knn.Conv2d(16, 8, 1, padding=1), (1, 7, 7, 16), None),  # padded 1x1: MLX's op
        (knn.Conv2d(16, 8, 1, groups=2), (1, 7, 7, 16), None),  # grouped 1x1: MLX's op
    ],
)
def test_fast_path_is_taken_where_it_pays(layer: nn.Module, shape: Any, route: str | None) -> None:
    x = mx.random.normal(shape)
    routes = ("_col2im", "_pointwise_conv")
    with (
        mock.patch.object(knn, routes[0], wraps=getattr(knn, routes[0])) as col2im,
        mock.patch.object(knn, routes[1], wraps=getattr(knn, routes[1])) as pointwise,
    ):
        mx.eval(mx.grad(lambda x: layer(x).sum())(x))
        assert [col2im.called, pointwise.called] == [r == route for r in routes]
        col2im.reset_mock()
        pointwise.reset_mock()
        layer.eval()
        mx.eval(mx.grad(lambda x: layer(x).sum())(x))
        # Eval mode: MLX's own ops, as the exporters need.
        assert not col2im.called and not pointwise.called


POINTWISE_CASES = [
    # (stride, padding, groups, input H x W): 1x1 convolutions
    (1, 0, 1, (6, 5)),
    (2, 0, 1, (7, 8)),
    ((1, 3), 0, 1, (5, 7)),
    (1, 1, 1, (4, 4)),  # padded: MLX's op
    (2, 0, 2, (6, 6)),  # grouped: the strided route
]


@pytest.mark.parametrize(("stride", "padding", "groups", "size"), POINTWISE_CASES)
def test_conv2d_1x1_matches_mlx(stride: Any, padding: int, groups: int, size: Any) -> None:
    mx.random.seed(0)
    settings = dict(stride=stride, padding=padding, groups=groups)
    native, fast = nn.Conv2d(16, 8, 1, **settings), knn.Conv2d(16, 8, 1, **settings)
    _twins(native, fast, mx.random.normal((2, *size, 16)))


def test_conv1d_1x1_matches_mlx() -> None:
    mx.random.seed(0)
    native, fast = (
        nn.Conv1d(6, 4, 1, stride=2, bias=False),
        knn.Conv1d(6, 4, 1, stride=2, bias=False),
    )
    x = mx.random.normal((2, 9, 6))
    fast.update(native.parameters())
    want, got = _outputs_and_gradients(native, x), _outputs_and_gradients(fast, x)
    want[1] = _input_gradient_from_forward(native, x)
    assert all(_close(g, w) for g, w in zip(got, want))


def _numpy_conv_transpose(
    x: np.ndarray,
    weight: np.ndarray,
    stride: Any,
    padding: Any,
    dilation: Any,
    output_padding: Any,
    groups: int,
) -> np.ndarray:
    """The definition, one scatter per input position and tap: y[s*o + d*k - p] += x[o] W[k]."""
    n, *lengths, _ = x.shape
    c_out, *kernel, c_in_group = weight.shape
    sizes = [
        (m - 1) * s - 2 * p + d * (k - 1) + 1 + o
        for m, k, s, p, d, o in zip(lengths, kernel, stride, padding, dilation, output_padding)
    ]
    y = np.zeros((n, *sizes, c_out))
    per_group = c_out // groups
    for position in itertools.product(*map(range, lengths)):
        for tap in itertools.product(*map(range, kernel)):
            at = [
                s * o + d * k - p for o, k, s, p, d in zip(position, tap, stride, padding, dilation)
            ]
            if not all(0 <= a < size for a, size in zip(at, sizes)):
                continue
            for g in range(groups):
                inputs = x[(slice(None), *position, slice(g * c_in_group, (g + 1) * c_in_group))]
                kernel_tap = weight[(slice(g * per_group, (g + 1) * per_group), *tap)]
                y[(slice(None), *at, slice(g * per_group, (g + 1) * per_group))] += (
                    inputs @ kernel_tap.T
                )
    return y


def test_conv_transpose_function_matches_its_definition() -> None:
    """Random 1-D, 2-D and 3-D settings against the NumPy scatter above (independent of MLX)."""
    rng = np.random.default_rng(0)
    for case in range(75):
        spatial = 1 + case % 3
        kernel = tuple(int(k) for k in rng.integers(1, 5, spatial))
        stride = tuple(int(s) for s in rng.integers(1, 4, spatial))
        dilation = tuple(int(d) for d in rng.integers(1, 3, spatial))
        padding = tuple(int(rng.integers(0, d * (k - 1) + 1)) for k, d in zip(kernel, dilation))
        output_padding = tuple(int(rng.integers(0, s)) for s in stride)
        groups = int(rng.choice([1, 2]))
        lengths = tuple(int(m) for m in rng.integers(1, 6, spatial))
        x = rng.standard_normal((2, *lengths, 2 * groups)).astype(np.float32)
        weight = rng.standard_normal((3 * groups, *kernel, 2)).astype(np.float32)
        settings = dict(
            stride=stride, padding=padding, dilation=dilation, output_padding=output_padding
        )
        sizes = [
            (m - 1) * s - 2 * p + d * (k - 1) + 1 + o
            for m, k, s, p, d, o in zip(lengths, kernel, stride, padding, dilation, output_padding)
        ]
        if min(sizes) < 1:
            continue  # an empty output: refused (next test)
        want = _numpy_conv_transpose(x, weight, groups=groups, **settings)
        got = knn.conv_transpose(mx.array(x), mx.array(weight), groups=groups, **settings)
        assert _close(got, mx.array(want.astype(np.float32))), (case, settings, groups)


def test_conv_transpose_function_rejects_settings_with_an_empty_output() -> None:
    with pytest.raises(ValueError, match=r"empty output.*padding=\(2,\).*expected every size"):
        knn.conv_transpose(
            mx.ones((1, 1, 2)),
            mx.ones((2, 1, 2)),
            stride=(1,),
            padding=(2,),
            dilation=(1,),
            output_padding=(0,),
        )


def test_conv_transpose_function_matches_mx_conv_transpose2d_with_groups() -> None:
    mx.random.seed(0)
    x, weight = mx.random.normal((1, 5, 4, 6)), mx.random.normal((4, 3, 3, 3))
    want = mx.conv_transpose2d(x, weight, stride=2, padding=1, output_padding=1, groups=2)
    got = knn.conv_transpose(
        x, weight, stride=(2, 2), padding=(1, 1), dilation=(1, 1), output_padding=(1, 1), groups=2
    )
    assert _close(got, want)


class _Tiny(nn.Module):
    """A strided encoder and a transposed-conv decoder built from `mlx.nn` layers."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(2, 8, 3, stride=2, padding=1)
        self.blocks = [nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()]
        self.up = nn.ConvTranspose2d(8, 8, 4, stride=4)

    def __call__(self, x: mx.array) -> mx.array:
        x = nn.relu(self.down(x))
        for layer in self.blocks:
            x = layer(x)
        return self.up(x)


class _OwnConv(nn.Conv2d):
    def __call__(self, x: mx.array) -> mx.array:
        return super().__call__(x) * 2


def test_accelerate_switches_layers_in_place_and_keeps_weights() -> None:
    model = _Tiny()
    model.extra = _OwnConv(2, 2, 1)
    before = dict(tree_flatten(model.parameters()))
    down, block = model.down, model.blocks[0]
    assert knn.accelerate(model) is model
    assert model.down is down and model.blocks[0] is block
    assert type(model.down) is knn.Conv2d and type(model.blocks[0]) is knn.Conv2d
    assert type(model.up) is knn.ConvTranspose2d
    assert type(model.extra) is _OwnConv  # a subclass with its own __call__ is left alone
    after = dict(tree_flatten(model.parameters()))
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)


def test_accelerate_rejects_what_is_not_a_module() -> None:
    with pytest.raises(TypeError, match="Received: model="):
        knn.accelerate(lambda x: x)  # type: ignore[arg-type]


def test_checkpoints_load_across_native_and_fast_layers(tmp_path: Any) -> None:
    native = _Tiny()
    native.save_weights(str(tmp_path / "native.safetensors"))
    fast = knn.accelerate(_Tiny())
    fast.load_weights(str(tmp_path / "native.safetensors"))  # strict: same keys and shapes
    x = mx.random.normal((1, 8, 8, 2))
    assert _close(fast.eval()(x), native.eval()(x))
    fast.save_weights(str(tmp_path / "fast.safetensors"))
    _Tiny().load_weights(str(tmp_path / "fast.safetensors"))


def _compiled_step(model: nn.Module, optimizer: optim.Optimizer, x: mx.array, y: mx.array) -> Any:
    loss_and_grad = nn.value_and_grad(model, lambda m: nn.losses.mse_loss(m(x), y))

    @partial(
        mx.compile, inputs=[model.state, optimizer.state], outputs=[model.state, optimizer.state]
    )
    def step() -> mx.array:
        loss, grads = loss_and_grad(model)
        optimizer.update(model, grads)
        return loss

    return step


def test_compiled_training_step_matches_mlx_layers() -> None:
    """The same SGD steps, compiled, from the same weights, give the same weights."""
    mx.random.seed(1)
    native = _Tiny()
    fast = knn.accelerate(_Tiny())
    fast.update(native.parameters())
    x, y = mx.random.normal((2, 8, 8, 2)), mx.random.normal((2, 8, 8, 8))
    for model in (native, fast):
        optimizer = optim.SGD(learning_rate=0.1)
        step = _compiled_step(model, optimizer, x, y)
        for _ in range(3):
            step()
        mx.eval(model.parameters())
    for (key, got), (_, want) in zip(
        tree_flatten(fast.parameters()), tree_flatten(native.parameters())
    ):
        assert _close(got, want), key


def test_trainer_fits_a_model_with_fast_layers() -> None:
    mx.random.seed(2)
    native = _Tiny()
    fast = knn.accelerate(_Tiny())
    fast.update(native.parameters())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 2)).astype(np.float32)
    y = rng.normal(size=(8, 8, 8, 8)).astype(np.float32)
    losses = []
    for model in (native, fast):
        trainer = Trainer(model, optim.SGD(learning_rate=0.05), "mse")
        history = trainer.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        losses.append(history.history["loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


def test_eval_mode_runs_mlx_ops_so_mlxfn_export_works(tmp_path: Any) -> None:
    model = knn.accelerate(_Tiny())
    x = mx.random.normal((1, 8, 8, 2))
    path = to_mlxfn(model, x, tmp_path / "tiny.mlxfn")
    (got,) = mx.import_function(path)(x)
    assert _close(got, model(x))


def test_core_ml_export_lowers_to_conv_and_conv_transpose(tmp_path: Any) -> None:
    pytest.importorskip("coremltools")
    model = knn.accelerate(_Tiny())
    model.train()  # the exporter puts the model in eval mode itself
    x = mx.random.normal((1, 8, 8, 2))
    result = to_coreml(model, x, tmp_path / "tiny.mlpackage", compute_precision="float32")
    assert result.report.op_counts.get("conv", 0) == 2
    assert result.report.op_counts.get("conv_transpose", 0) == 1
    got = run_mlpackage_numpy(result.path, [np.array(x)])["output"]
    assert _close(mx.array(got), model(x))


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_strided_layers_in_half_precision_match_mlx(dtype: mx.Dtype) -> None:
    """Mixed precision runs the layers in 16-bit: outputs and gradients keep the dtype."""
    mx.random.seed(0)
    for native, fast, shape in [
        (nn.Conv2d(8, 6, 3, stride=2, padding=1), knn.Conv2d(8, 6, 3, stride=2, padding=1), 9),
        (
            nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1),
            knn.ConvTranspose2d(8, 6, 4, stride=2, padding=1),
            5,
        ),
        (nn.Conv2d(8, 6, 1), knn.Conv2d(8, 6, 1), 6),
    ]:
        fast.update(native.parameters())
        native.set_dtype(dtype)
        fast.set_dtype(dtype)
        x = mx.random.normal((2, shape, shape, 8)).astype(dtype)
        want, got = _outputs_and_gradients(native, x), _outputs_and_gradients(fast, x)
        for w, g in zip(want, got):
            assert g.dtype == w.dtype == dtype
            w32, g32 = np.array(w.astype(mx.float32)), np.array(g.astype(mx.float32))
            scale = max(float(np.abs(w32).max()), 1.0)
            assert float(np.abs(g32 - w32).max()) <= 2e-2 * scale  # 16-bit rounding


@pytest.mark.parametrize("training", [True, False])
def test_input_smaller_than_the_kernel_is_refused(training: bool) -> None:
    # MLX's own layer returns arbitrary values here when strided (and raises at stride 1).
    layer = knn.Conv2d(1, 3, (1, 5), stride=(2, 3), padding=(0, 1))
    layer.train(training)
    with pytest.raises(
        ValueError,
        match=r"Conv2d: the padded input is smaller than the kernel.*"
        r"input shape \(1, 9, 1, 1\), padding=\(0, 1\).*>= \(1, 5\)",
    ):
        layer(mx.ones((1, 9, 1, 1)))
    assert knn.Conv2d(1, 3, (1, 5), padding=(0, 2))(mx.ones((1, 9, 1, 1))).shape == (1, 9, 1, 3)
