"""Bilinear upsampling: MLX's `nn.Upsample(mode="linear")` against `mlxkit.models.BilinearUpsample`.

Run:

    python benchmarks/bench_upsample.py              # the depth model's decoder shapes
    python benchmarks/bench_upsample.py --repeats 50

For each input shape (the four upsamples of `depth_resnet20`'s decoder at 32x64, then its last one
at 64x128 with batch 16) both layers run a compiled forward and backward pass, interleaved
(A B A B ...) in one process, and the script prints the median milliseconds, the ratio, and the
largest difference between the two outputs and between the two input gradients. Then a whole
compiled depth-model training step (batch 16, 64x128, Adam), once with each upsampling.
"""

from __future__ import annotations

import argparse
from functools import partial

import mlxkit  # noqa: F401  (loads the fast BLAS before mlx.core)
from mlxkit import losses
from mlxkit.models import BilinearUpsample, depth_resnet20

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from _timing import interleaved, timed

SHAPES = [(8, 2, 4, 128), (8, 4, 8, 64), (8, 8, 16, 64), (8, 16, 32, 64), (16, 32, 64, 64)]


def layers(repeats: int) -> None:
    print(
        "shape (B, H, W, C)      nn.Upsample ms  BilinearUpsample ms  speed-up  max |diff| out/grad"
    )
    for shape in SHAPES:
        x = mx.random.normal(shape)
        reference = nn.Upsample(2, mode="linear", align_corners=True)
        ours = BilinearUpsample(2, align_corners=True)
        weights = mx.random.normal((shape[0], 2 * shape[1], 2 * shape[2], shape[3]))
        mx.eval(x, weights)  # or the compiled steps would draw them again on every call
        grads = {
            name: mx.compile(mx.grad(lambda v, up=up, w=weights: (up(v) * w).sum()))
            for name, up in (("nn.Upsample", reference), ("BilinearUpsample", ours))
        }
        seconds = interleaved({name: timed(partial(g, x)) for name, g in grads.items()}, repeats)
        out_diff = mx.abs(reference(x) - ours(x)).max().item()
        grad_diff = mx.abs(grads["nn.Upsample"](x) - grads["BilinearUpsample"](x)).max().item()
        old, new = seconds["nn.Upsample"] * 1e3, seconds["BilinearUpsample"] * 1e3
        print(
            f"{shape!s:22s} {old:14.2f} {new:20.2f} {old / new:8.1f}x  "
            f"{out_diff:.1e} / {grad_diff:.1e}"
        )


def training_step(repeats: int) -> None:
    x = mx.random.uniform(shape=(16, 64, 128, 3))
    y = mx.random.uniform(shape=(16, 64, 128, 1))
    mx.eval(x, y)
    steps = {}
    for name, upsample in (
        ("nn.Upsample", nn.Upsample(2, mode="linear", align_corners=True)),
        ("BilinearUpsample", BilinearUpsample(2, align_corners=True)),
    ):
        mx.random.seed(0)
        model = depth_resnet20()
        model.upsample = upsample
        optimizer = optim.Adam(learning_rate=1e-3)
        state = [model.state, optimizer.state]

        def loss_fn(x, y, model=model):
            return losses.depth_loss(model(x), y)

        @partial(mx.compile, inputs=state, outputs=state)
        def step(x, y, model=model, optimizer=optimizer, loss_fn=loss_fn):
            loss, grads = nn.value_and_grad(model, loss_fn)(x, y)
            optimizer.update(model, grads)
            return loss

        steps[name] = timed(partial(lambda step, state: (step(x, y), state), step, state))
    seconds = interleaved(steps, max(3, repeats // 4))
    old, new = seconds["nn.Upsample"], seconds["BilinearUpsample"]
    print(
        f"\ndepth_resnet20 training step, batch 16, 64x128: nn.Upsample {old:.3f} s, "
        f"BilinearUpsample {new:.3f} s ({old / new:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    layers(args.repeats)
    training_step(args.repeats)


if __name__ == "__main__":
    main()
