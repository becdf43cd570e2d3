"""The `mlxkit export` subcommand: build a model from a factory, load weights, export it.

    mlxkit export --format coreml --model mlxkit.models:depth_resnet20 \\
        --weights depth.safetensors --input-shape 1,128,256,3 -o depth.mlpackage

`add_parser(subparsers)` registers the command on the `mlxkit` console script; `run(args)` does
the work and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive sizes such as 1,128,256,3; got {text!r}"
        )
    return shape


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds `export` to the `mlxkit` command's subparsers and returns its parser.

    Example:
        >>> import argparse
        >>> from mlxkit.export import _cli
        >>> parser = argparse.ArgumentParser(prog="mlxkit")
        >>> _ = _cli.add_parser(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["export", "--model", "m:f", "--input-shape", "1,4", "-o",
        ...                           "m.mlxfn", "--format", "mlxfn"])
        >>> args.input_shape
        [(1, 4)]
    """
    parser = subparsers.add_parser(
        "export",
        help="export a model to Core ML (.mlpackage) or MLX (.mlxfn)",
        description="Build a model from a factory, optionally load weights, trace it on zero "
        "inputs of the given shapes and export it.",
    )
    parser.add_argument(
        "--format",
        choices=("coreml", "mlxfn"),
        default="coreml",
        help="output format (default: coreml)",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODULE:FACTORY",
        help="import path of a function returning an nn.Module, e.g. mlxkit.models:depth_resnet20",
    )
    parser.add_argument(
        "--kwargs",
        default="{}",
        metavar="JSON",
        help="keyword arguments for the factory as JSON, e.g. '{\"num_classes\": 21}'",
    )
    parser.add_argument(
        "--weights", metavar="FILE", help=".safetensors or .npz weights, loaded strictly"
    )
    parser.add_argument(
        "--input-shape",
        type=_shape,
        action="append",
        required=True,
        metavar="N,H,W,C",
        help="shape of an input; repeat for several inputs",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help="destination (.mlpackage for coreml, .mlxfn for mlxfn)",
    )
    parser.add_argument(
        "--precision",
        choices=("float16", "float32"),
        default="float16",
        help="Core ML compute precision (default: float16)",
    )
    parser.add_argument(
        "--compute-units", choices=("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne"), default="all"
    )
    parser.add_argument(
        "--minimum-deployment-target",
        metavar="TARGET",
        help="coremltools target such as iOS16 or macOS13",
    )
    parser.add_argument(
        "--layout",
        choices=("channels_last", "channels_first"),
        default="channels_last",
        help="layout of Core ML inputs and outputs",
    )
    parser.add_argument(
        "--image",
        action="store_true",
        help="make the first input an image (RGB unless --color-layout)",
    )
    parser.add_argument(
        "--image-scale", type=float, default=1 / 255, help="pixel scale for --image (default 1/255)"
    )
    parser.add_argument(
        "--image-bias",
        type=float,
        nargs="+",
        default=[0.0],
        help="bias added after scaling, one value or one per channel",
    )
    parser.add_argument("--color-layout", choices=("RGB", "BGR", "GRAYSCALE"), default="RGB")
    parser.add_argument(
        "--class-mask",
        action="store_true",
        help="segmentation: output the argmax class mask instead of logits",
    )
    parser.add_argument(
        "--class-labels",
        metavar="FILE",
        help="classifier: a text file with one class label per line",
    )
    parser.set_defaults(run=run)
    return parser


def _load_factory(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"--model must look like package.module:factory. Received: --model {spec!r}."
        )
    module = importlib.import_module(module_name)
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}.")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"--model {spec!r} is not callable.")
    return factory


def run(args: argparse.Namespace) -> int:
    """Runs `mlxkit export` with parsed arguments; returns the process exit status."""
    from mlxkit.export import ImageInput, UnsupportedOperationError, to_coreml, to_mlxfn

    import mlx.core as mx
    import mlx.nn as nn

    try:
        kwargs = json.loads(args.kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError(f"--kwargs must be a JSON object. Received: --kwargs {args.kwargs!r}.")
        model = _load_factory(args.model)(**kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"--model {args.model!r} returned {type(model).__name__}, not an mlx.nn.Module."
            )
        if args.weights:
            if not os.path.isfile(args.weights):
                raise FileNotFoundError(f"--weights {args.weights!r} does not exist.")
            model.load_weights(args.weights, strict=True)
        inputs = [mx.zeros(shape) for shape in args.input_shape]
        if args.format == "mlxfn":
            path = to_mlxfn(model, inputs, args.output)
            print(f"wrote {path}")
            return 0
        labels = None
        if args.class_labels:
            with open(args.class_labels) as f:
                labels = [line.strip() for line in f if line.strip()]
        image = None
        if args.image:
            bias = args.image_bias[0] if len(args.image_bias) == 1 else tuple(args.image_bias)
            image = ImageInput(scale=args.image_scale, bias=bias, color_layout=args.color_layout)
        result = to_coreml(
            model,
            inputs,
            args.output,
            compute_precision=args.precision,
            compute_units=args.compute_units,
            minimum_deployment_target=args.minimum_deployment_target,
            image_input=image,
            class_labels=labels,
            class_mask=args.class_mask,
            layout=args.layout,
        )
    except (
        ValueError,
        TypeError,
        KeyError,
        OSError,
        ImportError,
        UnsupportedOperationError,
    ) as error:
        print(f"mlxkit export: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {result.path}")
    print(result.report)
    return 0
