"""Core ML export: what the fusion passes and layout tracking buy, and what export costs.

Run:

    python benchmarks/bench_export.py                        # all models, article sizes
    python benchmarks/bench_export.py --models depth --no-verify
    python benchmarks/bench_export.py --repeats 50           # on macOS: more predict() samples

For each model it exports three variants of the same traced graph:

- `naive`: one Core ML op per MLX primitive (constants folded, convs/matmuls made `conv` and
  `linear`) and a transpose pair around every channels-first op: what a straightforward
  converter emits;
- `fused`: the pattern passes (BatchNorm folded into convs, pooling, upsampling, activations,
  LayerNorm), still with transpose pairs;
- `full`: fusions plus layout tracking, which is what `to_coreml` does.

It prints the op count, transposes, package size and export time (trace / optimize / lower /
convert+save) per variant, and checks each package with the NumPy interpreter against MLX (max
error relative to the largest output). On macOS it also times `MLModel.predict` (median of
`--repeats`) on all compute units and on the CPU alone, next to MLX's own forward pass.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import mlxkit  # noqa: F401  (before mlx: loads the fast BLAS)
from mlxkit import models
from mlxkit.export import load_mlpackage, run_mlpackage_numpy
from mlxkit.export.coreml import (
    build_program,
    convert_and_save,
    optimize_graph,
    require_coremltools,
    trace_model,
)

import numpy as np

import mlx.core as mx  # isort: skip  (after mlxkit, which loads the fast BLAS first)

MODELS: dict[str, tuple[Callable[[], Any], tuple[int, ...]]] = {
    # The depth article's 128x256 RGB input.
    "depth": (models.depth_resnet20, (1, 128, 256, 3)),
    "lraspp": (lambda: models.lraspp_mobilenet_v3_large(num_classes=21), (1, 256, 256, 3)),
    "deeplabv3": (lambda: models.deeplabv3_mobilenet_v3_large(num_classes=21), (1, 256, 256, 3)),
    "resnet18": (lambda: models.resnet18(num_classes=1000), (1, 224, 224, 3)),
    "unet": (lambda: models.unet(in_channels=3, num_classes=2), (1, 128, 128, 3)),
}

VARIANTS = {"naive": (False, False), "fused": (True, False), "full": (True, True)}


def export_variant(
    ct: Any, model: Any, x: mx.array, path: str, fuse: bool, track_layout: bool, precision: str
) -> dict[str, Any]:
    """Runs `to_coreml`'s stages one by one, with the variant's switches, timing each."""
    timings = {}
    start = time.perf_counter()
    graph = trace_model(model, [x])
    timings["trace"] = time.perf_counter() - start
    primitives = len(graph.nodes)

    start = time.perf_counter()
    optimize_graph(graph, fuse=fuse)
    timings["optimize"] = time.perf_counter() - start

    start = time.perf_counter()
    rank = len(x.shape)
    output_rank = len(graph.shapes[graph.outputs[0]])
    built = build_program(
        graph,
        ["input"],
        ["output"],
        [tuple(range(rank))],
        [tuple(range(output_rank))],
        ct.target.iOS15,
        track_layout=track_layout,
    )
    timings["lower"] = time.perf_counter() - start

    start = time.perf_counter()
    convert_and_save(built, path, compute_precision=precision)
    timings["convert+save"] = time.perf_counter() - start
    ops = load_mlpackage(path).op_counts()
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return {"timings": timings, "ops": ops, "size": size, "primitives": primitives}


def trained_like(model: Any, seed: int = 0) -> Any:
    """Random BatchNorm statistics and affine parameters, as training leaves them.

    Freshly initialised torchvision-style heads output values around 1e-9, below float16's
    range, so float16 packages would round them to zero; these statistics keep activations at
    the magnitudes a trained network has.
    """
    import mlx.nn as nn

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


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (compilation, caches)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}"
    )
    parser.add_argument("--precision", choices=("float16", "float32"), default="float16")
    parser.add_argument("--repeats", type=int, default=20, help="predict() timings (macOS)")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the NumPy interpreter check (slow for big inputs)",
    )
    args = parser.parse_args()
    ct = require_coremltools()
    tolerance = 1e-2 if args.precision == "float16" else 1e-4

    with tempfile.TemporaryDirectory() as root:
        for name in args.models.split(","):
            make, shape = MODELS[name]
            mx.random.seed(0)
            model = trained_like(make())
            model.eval()
            mx.eval(model.parameters())
            x = mx.random.normal(shape)
            reference = np.array(model(x), dtype=np.float64)
            mlx_seconds = median_seconds(
                lambda model=model, x=x: mx.eval(model(x)), max(3, args.repeats // 4)
            )
            print(
                f"\n{name} {shape} {args.precision}: MLX forward {mlx_seconds * 1e3:.1f} ms "
                f"({mx.default_device()})"
            )
            print(
                f"  {'variant':<8}{'ops':>6}{'transp':>8}{'size MiB':>10}{'trace':>8}"
                f"{'optim':>8}{'lower':>8}{'convert':>9}{'max err':>10}"
            )
            for variant, (fuse, track_layout) in VARIANTS.items():
                path = os.path.join(root, f"{name}_{variant}.mlpackage")
                result = export_variant(ct, model, x, path, fuse, track_layout, args.precision)
                t = result["timings"]
                error = "-"
                if not args.no_verify:
                    got = run_mlpackage_numpy(path, np.array(x))["output"]
                    error_value = float(np.max(np.abs(got - reference)) / np.max(np.abs(reference)))
                    assert error_value < tolerance, f"{name}/{variant}: error {error_value}"
                    error = f"{error_value:.1e}"
                ops = result["ops"]
                print(
                    f"  {variant:<8}{sum(ops.values()):>6}{ops.get('transpose', 0):>8}"
                    f"{result['size'] / 2**20:>10.2f}{t['trace']:>8.2f}{t['optimize']:>8.2f}"
                    f"{t['lower']:>8.2f}{t['convert+save']:>9.2f}{error:>10}"
                )
                if sys.platform == "darwin":
                    for units in ("ALL", "CPU_ONLY"):
                        mlmodel = ct.models.MLModel(
                            path, compute_units=getattr(ct.ComputeUnit, units)
                        )
                        feed = {"input": np.array(x)}
                        seconds = median_seconds(
                            lambda m=mlmodel, feed=feed: m.predict(feed), args.repeats
                        )
                        print(f"           Core ML predict ({units}): {seconds * 1e3:.2f} ms")
            print(f"  MLX primitives traced: {result['primitives']}")


if __name__ == "__main__":
    main()
