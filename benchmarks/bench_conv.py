"""CPU convolutions: MLX's `mlx.nn` layers against the `mlxkit.nn` twins, PyTorch beside them.

Run:

    python benchmarks/bench_conv.py                 # layers, then training steps
    python benchmarks/bench_conv.py --repeats 9 --threads 2

Part 1 times each strided convolution of the ports (`mlxkit.models`: the DCGAN, the Flux U-Net,
ResNet-18 and `depth_resnet20`) at the port's shape: a compiled forward pass, and a compiled
forward + backward pass (gradients for the input and the parameters), with MLX's layer and with
the `mlxkit.nn` twin holding the same weights. Part 2 times whole compiled training steps (Adam)
of the four models, built once with `mlx.nn` convolutions and once with the `mlxkit.nn` ones.

PyTorch CPU runs the same layers and steps (`_torch_conv_worker.py`, NCHW, `--threads` threads)
when it is installed: in `benchmarks/.venvs/torch` (as `run.py --setup` makes it) or in this
Python. It runs as a second process whose calls are interleaved with MLX's, one call of each
contender in turn (MLX, mlxkit, PyTorch, MLX, ...), so that load from other processes hits all
of them alike; the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import mlxkit  # noqa: F401  (loads the fast BLAS before mlx.core)
import mlxkit.nn as knn
from mlxkit import models

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from _timing import interleaved, timed

HERE = Path(__file__).resolve().parent

# (port, layer, kind, in channels, out channels, kernel, stride, padding, input NHWC shape)
LAYERS = [
    ("dcgan", "discriminator.conv1", "Conv2d", 1, 64, 4, 2, 1, (16, 28, 28, 1)),
    ("dcgan", "discriminator.conv2", "Conv2d", 64, 128, 4, 2, 1, (16, 14, 14, 64)),
    ("dcgan", "generator.deconv1", "ConvTranspose2d", 256, 128, 5, 1, 2, (16, 7, 7, 256)),
    ("dcgan", "generator.deconv2", "ConvTranspose2d", 128, 64, 4, 2, 1, (16, 7, 7, 128)),
    ("dcgan", "generator.deconv3", "ConvTranspose2d", 64, 1, 4, 2, 1, (16, 14, 14, 64)),
    ("unet", "upconv4", "ConvTranspose2d", 128, 64, 2, 2, 0, (8, 4, 4, 128)),
    ("unet", "upconv1", "ConvTranspose2d", 16, 8, 2, 2, 0, (8, 32, 32, 16)),
    ("resnet18", "conv1", "Conv2d", 3, 64, 7, 2, 3, (16, 64, 64, 3)),
    ("resnet18", "layer2.0.conv1", "Conv2d", 64, 128, 3, 2, 1, (16, 16, 16, 64)),
    ("resnet18", "layer2.0.downsample", "Conv2d", 64, 128, 1, 2, 0, (16, 16, 16, 64)),
    ("depth_resnet20", "conv1", "Conv2d", 3, 16, 7, 2, 3, (16, 64, 128, 3)),
    ("depth_resnet20", "layer2.0.conv1", "Conv2d", 16, 32, 3, 2, 1, (16, 32, 64, 16)),
    ("depth_resnet20", "layer4.0.conv1", "Conv2d", 64, 128, 3, 2, 1, (16, 8, 16, 64)),
    ("depth_resnet20", "layer1.0.conv1", "Conv2d", 16, 16, 3, 1, 1, (16, 32, 64, 16)),
    ("depth_resnet20", "conv_cat3", "Conv2d", 96, 64, 1, 1, 0, (16, 32, 64, 96)),
    ("depth_resnet20", "output", "Conv2d", 64, 1, 1, 1, 0, (16, 64, 128, 64)),
]

# (model, batch, image size): the examples' defaults; depth at the article's scale.
STEPS = [
    ("dcgan", 16, (28, 28)),
    ("unet", 8, (64, 64)),
    ("resnet18", 16, (64, 64)),
    ("depth_resnet20", 16, (64, 128)),
]

NATIVE = {
    knn.Conv1d: nn.Conv1d,
    knn.Conv2d: nn.Conv2d,
    knn.ConvTranspose1d: nn.ConvTranspose1d,
    knn.ConvTranspose2d: nn.ConvTranspose2d,
}


def native(model: nn.Module) -> nn.Module:
    """The reverse of `mlxkit.nn.accelerate`: the ports' twins back to MLX's own layers."""
    for _, module in model.named_modules():
        if type(module) in NATIVE:
            module.__class__ = NATIVE[type(module)]
    return model


class TorchPeer:
    """The PyTorch worker process; `call(key)` runs one of its calls and returns the seconds."""

    def __init__(self, python: str, specs: dict, threads: int) -> None:
        self.process = subprocess.Popen(
            [python, str(HERE / "_torch_conv_worker.py"), json.dumps(specs), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            # Idle OpenMP threads sleep instead of spinning on the cores MLX's turn needs.
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        if self.stdout.readline().strip() != "READY":
            raise RuntimeError("the PyTorch worker did not start")

    def call(self, key: str) -> float:
        self.stdin.write(f"run {key}\n")
        self.stdin.flush()
        return float(self.stdout.readline())

    def close(self) -> None:
        self.stdin.close()
        self.process.wait()


def find_torch() -> str | None:
    """A Python that imports torch: the run.py peer venv first, then this interpreter."""
    for python in (HERE / ".venvs" / "torch" / "bin" / "python", Path(sys.executable)):
        if python.exists():
            probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True)
            if probe.returncode == 0:
                return str(python)
    return None


def layer_contenders(spec: tuple, backward: bool) -> dict[str, Callable[[], float]]:
    _, _, kind, cin, cout, k, s, p, shape = spec
    mx.random.seed(0)
    layers = {
        "MLX": getattr(nn, kind)(cin, cout, k, stride=s, padding=p),
        "mlxkit": getattr(knn, kind)(cin, cout, k, stride=s, padding=p),
    }
    layers["mlxkit"].update(layers["MLX"].parameters())
    x = mx.random.normal(shape)
    mx.eval(x, layers["MLX"].parameters())
    result = {}
    for name, layer in layers.items():
        if backward:

            def loss(params, x, layer=layer):
                layer.update(params)
                return layer(x).sum()

            grad = mx.compile(mx.grad(loss, argnums=(0, 1)))
            result[name] = timed(partial(grad, layer.trainable_parameters(), x))
        else:
            result[name] = timed(partial(mx.compile(layer), x))
    return result


def _bce(logits: mx.array, target: float) -> mx.array:
    targets = mx.full(logits.shape, target)
    return nn.losses.binary_cross_entropy(logits, targets, with_logits=True, reduction="mean")


def dcgan_step(convert: Callable[[nn.Module], nn.Module], batch: int) -> Callable[[], float]:
    mx.random.seed(0)
    generator = convert(models.dcgan_generator())
    discriminator = convert(models.dcgan_discriminator())
    adam = partial(optim.Adam, learning_rate=2e-4, betas=[0.5, 0.999])
    g_optimizer, d_optimizer = adam(), adam()
    state = [generator.state, discriminator.state, g_optimizer.state, d_optimizer.state]
    state.append(mx.random.state)
    real = mx.random.uniform(-1, 1, (batch, 28, 28, 1))
    z = mx.random.normal((batch, 100))
    mx.eval(real, z, state)

    def d_loss(discriminator, real, fake):
        return _bce(discriminator(real), 1.0) + _bce(discriminator(fake), 0.0)

    def g_loss(generator, z):
        return _bce(discriminator(generator(z)), 1.0)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(real, z):
        fake = mx.stop_gradient(generator(z))
        loss_d, grads = nn.value_and_grad(discriminator, d_loss)(discriminator, real, fake)
        d_optimizer.update(discriminator, grads)
        loss_g, grads = nn.value_and_grad(generator, g_loss)(generator, z)
        g_optimizer.update(generator, grads)
        return loss_d, loss_g

    return timed(lambda: (step(real, z), state))


def model_step(
    name: str, convert: Callable[[nn.Module], nn.Module], batch: int, size: tuple[int, int]
) -> Callable[[], float]:
    if name == "dcgan":
        return dcgan_step(convert, batch)
    mx.random.seed(0)
    x = mx.random.uniform(shape=(batch, *size, 3))
    if name == "unet":
        model = models.unet(3, 1, base_channels=8)
        y = (mx.random.uniform(shape=(batch, *size, 1)) > 0.5).astype(mx.float32)

        def loss(m, x, y):
            return nn.losses.binary_cross_entropy(m(x), y, with_logits=True, reduction="mean")
    elif name == "resnet18":
        model = models.resnet18(num_classes=10)
        y = mx.random.randint(0, 10, (batch,))

        def loss(m, x, y):
            return nn.losses.cross_entropy(m(x), y, reduction="mean")
    else:
        model = models.depth_resnet20()
        y = mx.random.uniform(shape=(batch, *size, 1))

        def loss(m, x, y):
            return nn.losses.mse_loss(m(x), y)

    model = convert(model)
    optimizer = optim.Adam(learning_rate=1e-3)
    state = [model.state, optimizer.state]
    mx.eval(x, y, model.parameters())

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y):
        value, grads = nn.value_and_grad(model, loss)(model, x, y)
        optimizer.update(model, grads)
        return value

    return timed(lambda: (step(x, y), state))


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        cell.rjust(width) if i else cell.ljust(width)
        for i, (cell, width) in enumerate(zip(cells, widths))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch's intra-op threads")
    parser.add_argument("--no-torch", action="store_true", help="leave the PyTorch column out")
    args = parser.parse_args()

    specs: dict[str, dict] = {}
    for index, (_, _, kind, cin, cout, k, s, p, shape) in enumerate(LAYERS):
        for backward in (False, True):
            specs[f"layer{index}-{backward}"] = dict(
                what="layer", kind=kind, cin=cin, cout=cout, k=k, s=s, p=p, shape=shape,
                backward=backward,
            )  # fmt: skip
    for name, batch, size in STEPS:
        specs[f"step-{name}"] = dict(what="step", model=name, batch=batch, size=size)
    python = None if args.no_torch else find_torch()
    peer = TorchPeer(python, specs, args.threads) if python else None
    print(
        f"MLX {mx.__version__} on {mx.default_device()}, {os.cpu_count()} cores; "
        + (
            f"PyTorch CPU ({python}, {args.threads} threads)"
            if peer
            else "PyTorch left out (--no-torch)"
            if args.no_torch
            else "PyTorch: not installed"
        )
        + f"; medians of {args.repeats} interleaved calls after one warm-up, in ms"
    )
    names = ["MLX", "mlxkit"] + (["torch"] if peer else [])

    widths = [48, 12] + [10] * (2 * len(names)) + [14]
    header = ["layer", "input NHWC"]
    header += [f"fwd {n}" for n in names] + [f"f+b {n}" for n in names] + ["MLX/mlxkit f+b"]
    print("\n" + _row(header, widths))
    for index, spec in enumerate(LAYERS):
        row = [
            f"{spec[0]} {spec[1]} ({spec[2]} k{spec[5]} s{spec[6]})",
            "x".join(map(str, spec[8])),
        ]
        for backward in (False, True):
            contenders = layer_contenders(spec, backward)
            if peer:
                contenders["torch"] = partial(peer.call, f"layer{index}-{backward}")
            seconds = interleaved(contenders, args.repeats)
            row += [f"{seconds[n] * 1e3:.1f}" for n in names]
        row.append(f"{seconds['MLX'] / seconds['mlxkit']:.1f}x")  # the forward + backward pass
        print(_row(row, widths), flush=True)

    widths = [32, 9, 9] + ([9] if peer else []) + [12] + ([14] if peer else [])
    header = ["training step (Adam, compiled)", "MLX", "mlxkit"] + (["torch"] if peer else [])
    header += ["MLX/mlxkit"] + (["mlxkit/torch"] if peer else [])
    print("\n" + _row(header, widths))
    for name, batch, size in STEPS:
        contenders = {
            "MLX": model_step(name, native, batch, size),
            "mlxkit": model_step(name, lambda m: m, batch, size),
        }
        if peer:
            contenders["torch"] = partial(peer.call, f"step-{name}")
        seconds = interleaved(contenders, max(3, args.repeats // 2 + 1))
        row = [f"{name}, batch {batch}, {size[0]}x{size[1]}"]
        row += [f"{seconds[n] * 1e3:.0f}" for n in names]
        row.append(f"{seconds['MLX'] / seconds['mlxkit']:.2f}x")
        if peer:
            row.append(f"{seconds['mlxkit'] / seconds['torch']:.2f}x")
        print(_row(row, widths), flush=True)
    if peer:
        peer.close()


if __name__ == "__main__":
    main()
