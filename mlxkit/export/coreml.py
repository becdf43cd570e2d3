"""Core ML export: `to_coreml` traces an MLX model and writes an ML Program `.mlpackage`.

The pipeline: trace with `mx.export_function` (`_trace`), fold constants and fuse patterns
(`_optimize`), lower primitives to MIL with coremltools' builder (`_lower`), convert with
`coremltools.convert`, and save atomically. Every unsupported primitive is reported in one error
before anything is written, and a failed export leaves no partial package behind.

coremltools is imported lazily; without it, `to_coreml` raises an `ImportError` saying
`pip install coremltools`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlxkit._io import atomic_write_folder
from mlxkit.export._lower import Lowerer, channels_first, output_var, unsupported
from mlxkit.export._mil_numpy import load_mlpackage
from mlxkit.export._optimize import optimize
from mlxkit.export._trace import Graph, as_function, normalize_inputs, trace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

ComputePrecision = Literal["float16", "float32"]
ComputeUnits = Literal["all", "cpu_only", "cpu_and_gpu", "cpu_and_ne"]
Layout = Literal["channels_last", "channels_first"]

_PRECISIONS = ("float16", "float32")
_UNITS = {
    "all": "ALL",
    "cpu_only": "CPU_ONLY",
    "cpu_and_gpu": "CPU_AND_GPU",
    "cpu_and_ne": "CPU_AND_NE",
}
_LAYOUTS = ("channels_last", "channels_first")
_COLOR_LAYOUTS = ("RGB", "BGR", "GRAYSCALE")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_INSTALL_HINT = "Core ML export needs coremltools: `pip install coremltools`."


class UnsupportedOperationError(NotImplementedError):
    """Raised when a traced graph holds primitives with no Core ML lowering; lists all of them.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.export import to_coreml, UnsupportedOperationError
        >>> try:
        ...     to_coreml(lambda x: mx.sort(x) + mx.cumsum(x), mx.zeros((4,)), "s.mlpackage")
        ... except UnsupportedOperationError as error:
        ...     print(error.operations)
        ['Sort', 'Scan']
    """

    def __init__(self, operations: Sequence[str], message: str):
        super().__init__(message)
        self.operations = list(operations)


@dataclass(frozen=True)
class ImageInput:
    """Declares the first model input as an image (`ct.ImageType`), e.g. a camera frame.

    Core ML computes `pixel * scale + bias` (bias per channel) before the model runs, so the
    model receives the same values it was trained on. The traced example input must be
    `(1, height, width, channels)` with 3 channels for RGB/BGR and 1 for grayscale.

    Args:
        scale: Multiplies every pixel value (0-255), e.g. `1 / 255` for inputs in [0, 1].
        bias: Added after scaling: one number, or one per channel.
        color_layout: `"RGB"`, `"BGR"` or `"GRAYSCALE"`.

    Example:
        >>> from mlxkit.export import ImageInput
        >>> ImageInput(scale=1 / 255, bias=(-0.5, -0.5, -0.5))
        ImageInput(scale=0.00392156862745098, bias=(-0.5, -0.5, -0.5), color_layout='RGB')
    """

    scale: float = 1.0 / 255.0
    bias: float | tuple[float, ...] = 0.0
    color_layout: Literal["RGB", "BGR", "GRAYSCALE"] = "RGB"

    def __post_init__(self) -> None:
        if self.color_layout not in _COLOR_LAYOUTS:
            raise ValueError(
                f"`color_layout` must be one of {list(_COLOR_LAYOUTS)}. "
                f"Received: color_layout={self.color_layout!r}."
            )


@dataclass
class ConversionReport:
    """What an export produced; `str(report)` gives a printable summary.

    Attributes:
        op_counts: Core ML ops in the saved program, by type (constants excluded).
        traced_primitives: MLX primitives in the traced graph, by name.
        compute_precision: `"float16"` or `"float32"`.
        parameter_count: Number of model parameters (constant elements for a plain function).
        file_size_bytes: Size of the `.mlpackage` on disk.
        inputs: `(name, shape, kind)` per input, kind `"tensor"` or `"image"`.
        outputs: `(name, shape)` per output (shape `()` for classifier label outputs).
        minimum_deployment_target: The Core ML target the program was built for.
        fusions: How many subgraphs became one fused op, by kind (e.g. `{"conv": 20}`).

    Example:
        >>> from mlxkit.export import ConversionReport
        >>> print(ConversionReport({"relu": 1}, {"Maximum": 1}, "float32", 0, 1024))
        ... # doctest: +ELLIPSIS
        Core ML export: 1 ops, 0 parameters, precision float32, 1.0 KiB...
    """

    op_counts: dict[str, int]
    traced_primitives: dict[str, int]
    compute_precision: str
    parameter_count: int
    file_size_bytes: int
    inputs: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    outputs: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    minimum_deployment_target: str = "iOS15"
    fusions: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        total = sum(self.op_counts.values())
        lines = [
            f"Core ML export: {total} ops, {self.parameter_count:,} parameters, precision "
            f"{self.compute_precision}, {_human_size(self.file_size_bytes)}, target "
            f"{self.minimum_deployment_target}",
        ]
        for name, shape, kind in self.inputs:
            lines.append(f"  input  {name}: {kind} {tuple(shape)}")
        for name, shape in self.outputs:
            lines.append(f"  output {name}: {tuple(shape)}")
        lines.append("  ops:")
        for op, count in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {op:<28}{count:>6}")
        if self.fusions:
            fused = ", ".join(f"{k} x{v}" for k, v in sorted(self.fusions.items()))
            lines.append(f"  fused from MLX primitives: {fused}")
        traced = sum(self.traced_primitives.values())
        lines.append(f"  traced MLX primitives: {traced}")
        return "\n".join(lines)


@dataclass
class CoreMLExport:
    """The result of `to_coreml`: where the package is and what went into it.

    Example:
        >>> from mlxkit.export import CoreMLExport, ConversionReport
        >>> CoreMLExport("m.mlpackage", ConversionReport({}, {}, "float16", 0, 0)).path
        'm.mlpackage'
    """

    path: str
    report: ConversionReport

    def __str__(self) -> str:
        return f"{self.path}\n{self.report}"


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def require_coremltools() -> Any:
    """Imports coremltools, or raises an ImportError with the install command."""
    # Off macOS, coremltools logs "Failed to load _MLModelProxy" and the like at import: its native
    # runtime exists only on Apple platforms, which mlxkit knows and says in its docs.
    logger = logging.getLogger("coremltools")
    level = logger.level
    if sys.platform != "darwin":
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from error
    finally:
        logger.setLevel(level)
    return coremltools


def _check_names(names: Sequence[str] | None, count: int, argument: str) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if len(names) != count:
        raise ValueError(
            f"`{argument}` needs one name per {argument.split('_')[0]} ({count}). "
            f"Received: {argument}={names!r}."
        )
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"`{argument}` entries must be identifiers (letters, digits, underscores, not "
                f"starting with a digit). Received: {argument}={names!r}."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`{argument}` must not repeat a name. Received: {argument}={names!r}.")
    return names


def _check_path(path: str | os.PathLike[str]) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike. Received: path={path!r}.")
    text = os.fspath(path)
    if not text.endswith(".mlpackage"):
        raise ValueError(
            "`path` must end with `.mlpackage` (Core ML ML Programs are saved as packages). "
            f"Received: path={text!r}."
        )
    return text


def _count_parameters(model: Any, graph: Graph) -> int:
    if isinstance(model, nn.Module):
        leaves: list[tuple[str, mx.array]] = tree_flatten(model.parameters())  # type: ignore[assignment]
        return sum(int(value.size) for _, value in leaves)
    # A plain function's parameters are the arrays it closes over: the traced constants.
    return int(sum(np.prod(graph.shapes[name]) for name in graph.constants))


def _package_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _fusion_counts(graph: Graph) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for node in graph.nodes:
        if node.op in ("act", "pool", "upsample"):
            counts[f"{node.op}:{node.args['kind']}"] += 1
        elif node.op in ("conv", "linear", "affine", "reduce_mean"):
            counts[node.op] += 1
    return dict(counts)


def _unsupported_error(problems: list[str]) -> UnsupportedOperationError:
    counts = Counter(problems)
    listing = ", ".join(f"{op} (x{n})" if n > 1 else op for op, n in counts.items())
    message = (
        f"Cannot export to Core ML: the traced graph uses {len(counts)} MLX primitive(s) with no "
        f"Core ML lowering: {listing}. Nothing was written."
    )
    if any(op.startswith(("RandomBits", "ErfInv")) for op in counts):
        message += (
            " Random-number primitives usually mean an array the model captures was never "
            "evaluated; call mx.eval on it (or on model.parameters()) before exporting."
        )
    return UnsupportedOperationError(list(counts), message)


def _build_program(
    ct: Any,
    graph: Graph,
    input_names: list[str],
    output_names: list[str],
    input_layouts: list[tuple[int, ...]],
    output_layouts: list[tuple[int, ...]],
    opset: Any,
    *,
    track_layout: bool = True,
) -> Any:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types

    placeholders = {}
    for name, tensor, layout in zip(input_names, graph.inputs, input_layouts, strict=True):
        shape = graph.shapes[tensor]
        dtype = types.int32 if graph.dtypes[tensor].startswith(("int", "uint")) else types.fp32
        placeholders[name] = mb.placeholder(shape=[shape[p] for p in layout], dtype=dtype)
    lowerer = Lowerer(graph, mb, track_layout=track_layout)
    with Function(placeholders, opset_version=opset) as function:
        for name, tensor, layout in zip(input_names, graph.inputs, input_layouts, strict=True):
            lowerer.set(tensor, function.inputs[name], layout)
        for node in graph.nodes:
            lowerer.lower(node)
        taken: set[int] = set()
        outputs = [
            output_var(lowerer, tensor, layout, name, taken)
            for tensor, layout, name in zip(
                graph.outputs, output_layouts, output_names, strict=True
            )
        ]
        function.set_outputs(outputs)
    program = Program()
    program.add_function("main", function)
    return program


@contextlib.contextmanager
def _quiet_pass_pipelines() -> Iterator[None]:
    """Hides coremltools' progress bar per MIL pass pipeline; the conversion report replaces it."""
    from coremltools.converters.mil.mil.passes import pass_pipeline

    original = pass_pipeline.tqdm
    pass_pipeline.tqdm = lambda iterable, **kwargs: iterable
    try:
        yield
    finally:
        pass_pipeline.tqdm = original


def to_coreml(
    model: nn.Module | Callable[..., Any],
    example_inputs: Any,
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    compute_precision: ComputePrecision = "float16",
    compute_units: ComputeUnits = "all",
    minimum_deployment_target: str | None = None,
    image_input: ImageInput | None = None,
    class_labels: Sequence[str] | Sequence[int] | None = None,
    class_mask: bool = False,
    layout: Layout = "channels_last",
) -> CoreMLExport:
    """Exports an MLX model (or function of arrays) to a Core ML `.mlpackage`.

    The model is traced on `example_inputs`, so any `__call__` code (skip connections, concat,
    slicing) is captured; shapes are fixed to the examples'. A Module is put in eval mode and its
    parameters evaluated first. Supported: convolutions (strided, padded, dilated, grouped,
    transposed), linear layers, BatchNorm/LayerNorm/GroupNorm arithmetic, common activations,
    pooling, nearest/bilinear upsampling, concatenation, reshapes, transposes, slicing, padding,
    reductions, argmax, softmax and elementwise math. Anything else raises one
    `UnsupportedOperationError` listing every offending primitive, before anything is written.

    Args:
        model: An `mlx.nn.Module` or a function of `mx.array`s returning an array or a tuple.
        example_inputs: One `mx.array`, or a tuple/list of them, one per model input.
        path: Where to write; must end with `.mlpackage`. Replaced atomically if it exists.
        input_names: Names for the Core ML inputs (default `input`, `input_1`, ...).
        output_names: Names for the outputs (default `output`, `output_1`, ...).
        compute_precision: `"float16"` (smaller, runs on the Neural Engine) or `"float32"`.
        compute_units: `"all"`, `"cpu_only"`, `"cpu_and_gpu"` or `"cpu_and_ne"`.
        minimum_deployment_target: A `coremltools.target` name such as `"iOS16"` or
            `"macOS13"`; default: coremltools' default for ML Programs (iOS15).
        image_input: Make the first input a `ct.ImageType` (see `ImageInput`).
        class_labels: Make a classifier: the first output's scores are mapped to these labels
            (`ct.ClassifierConfig`), giving a predicted label and a label->score dict. Apply
            softmax in the model if you want probabilities.
        class_mask: Segmentation: replace the first output `(N, H, W, classes)` by its argmax
            over the last axis, an int32 class mask `(N, H, W)`.
        layout: `"channels_last"` keeps MLX's NHWC for every input and output;
            `"channels_first"` presents rank>=3 inputs and outputs as NCHW (Core ML's native
            layout, which saves the boundary transposes). Image inputs are always images.

    Returns:
        A `CoreMLExport` with `.path` and a printable `.report` (`ConversionReport`).

    Raises:
        UnsupportedOperationError: The graph contains primitives with no lowering (all listed).
        ValueError, TypeError: Invalid arguments, with the received value in the message.
        ImportError: coremltools is not installed.

    Example:
        >>> import mlx.core as mx
        >>> import mlx.nn as nn
        >>> from mlxkit.export import to_coreml
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> result = to_coreml(model, mx.zeros((1, 4)), "mlp.mlpackage")
        >>> result.path
        'mlp.mlpackage'
        >>> result.report.op_counts
        {'cast': 2, 'linear': 2, 'relu': 1}
    """
    text_path = _check_path(path)
    if compute_precision not in _PRECISIONS:
        raise ValueError(
            f"`compute_precision` must be one of {list(_PRECISIONS)}. "
            f"Received: compute_precision={compute_precision!r}."
        )
    if compute_units not in _UNITS:
        raise ValueError(
            f"`compute_units` must be one of {list(_UNITS)}. "
            f"Received: compute_units={compute_units!r}."
        )
    if layout not in _LAYOUTS:
        raise ValueError(f"`layout` must be one of {list(_LAYOUTS)}. Received: layout={layout!r}.")
    if image_input is not None and not isinstance(image_input, ImageInput):
        raise TypeError(
            "`image_input` must be an mlxkit.export.ImageInput or None. "
            f"Received: image_input={image_input!r}."
        )
    if class_labels is not None and (isinstance(class_labels, str) or len(class_labels) == 0):
        raise ValueError(
            "`class_labels` must be a non-empty list of class names (or integer ids). "
            f"Received: class_labels={class_labels!r}."
        )
    if class_labels is not None and class_mask:
        raise ValueError(
            "`class_labels` (a classifier) and `class_mask` (a segmentation mask) cannot be "
            f"combined. Received: class_labels={class_labels!r}, class_mask={class_mask!r}."
        )
    inputs = normalize_inputs(example_inputs)
    in_names = _check_names(input_names, len(inputs), "input_names")
    ct = require_coremltools()
    target = None
    if minimum_deployment_target is not None:
        target = getattr(ct.target, str(minimum_deployment_target), None)
        if target is None:
            raise ValueError(
                "`minimum_deployment_target` must be a coremltools.target name, one of "
                f"{list(ct.target.__members__)}. "
                f"Received: minimum_deployment_target={minimum_deployment_target!r}."
            )
    for index, array in enumerate(inputs):
        if array.dtype not in (mx.float32, mx.float16, mx.bfloat16, mx.int32):
            raise TypeError(
                "Core ML inputs must be float32, float16 or int32 arrays. "
                f"Received: example_inputs[{index}].dtype={array.dtype}."
            )
    if image_input is not None:
        shape = inputs[0].shape
        channels = 1 if image_input.color_layout == "GRAYSCALE" else 3
        if len(shape) != 4 or shape[0] != 1 or shape[3] != channels:
            raise ValueError(
                f"An image input ({image_input.color_layout}) needs an example of shape "
                f"(1, height, width, {channels}). Received: example_inputs[0].shape={shape}."
            )

    was_training = getattr(model, "training", None)
    fn = as_function(model)
    try:
        traced_fn = fn
        if class_mask:

            def traced_fn(*args: mx.array) -> Any:
                result = fn(*args)
                items = list(result) if isinstance(result, (list, tuple)) else [result]
                items[0] = mx.argmax(items[0], axis=-1)
                return tuple(items) if len(items) > 1 else items[0]

        try:
            graph = trace(traced_fn, inputs)
        except ValueError as error:
            if "export_function" not in str(error):
                raise
            raise TypeError(
                "The model must return an mx.array or a tuple/list of mx.array when called with "
                f"the example inputs. MLX said: {error}"
            ) from error
    finally:
        if isinstance(model, nn.Module) and was_training:
            model.train()
    traced_counts = dict(Counter(node.op for node in graph.nodes))
    parameter_count = _count_parameters(model, graph)
    out_names = _check_names(output_names, len(graph.outputs), "output_names")
    in_names = in_names or [f"input_{i}" if i else "input" for i in range(len(graph.inputs))]
    out_names = out_names or [f"output_{i}" if i else "output" for i in range(len(graph.outputs))]
    if set(in_names) & set(out_names):
        raise ValueError(
            "Input and output names must differ. "
            f"Received: input_names={in_names!r}, output_names={out_names!r}."
        )
    if class_mask:
        first = graph.shapes[graph.outputs[0]]
        if len(first) < 2:
            raise ValueError(
                "`class_mask=True` needs a first output with a class axis last, e.g. "
                f"(N, H, W, classes). Received an output of shape {first}."
            )

    optimize(graph)
    problems = unsupported(graph)
    if problems:
        raise _unsupported_error(problems)

    def layout_for(tensor: str, image: bool) -> tuple[int, ...]:
        rank = len(graph.shapes[tensor])
        if image or (layout == "channels_first" and rank >= 3):
            return channels_first(rank)
        return tuple(range(rank))

    input_layouts = [
        layout_for(t, image_input is not None and i == 0) for i, t in enumerate(graph.inputs)
    ]
    output_layouts = [layout_for(t, False) for t in graph.outputs]
    opset = target if target is not None else ct.target.iOS15
    program = _build_program(ct, graph, in_names, out_names, input_layouts, output_layouts, opset)

    convert_kwargs: dict[str, Any] = {
        "convert_to": "mlprogram",
        "compute_precision": getattr(ct.precision, compute_precision.upper()),
        "compute_units": getattr(ct.ComputeUnit, _UNITS[compute_units]),
        "minimum_deployment_target": target,
    }
    if image_input is not None:
        shape = graph.shapes[graph.inputs[0]]
        bias = image_input.bias
        bias_list = [float(b) for b in bias] if isinstance(bias, (tuple, list)) else None
        color = getattr(ct.colorlayout, image_input.color_layout)
        specs = [
            ct.ImageType(
                name=in_names[0],
                shape=(1, shape[3], shape[1], shape[2]),
                scale=float(image_input.scale),
                bias=bias_list if bias_list is not None else float(bias),  # type: ignore[arg-type]
                color_layout=color,
                channel_first=True,
            )
        ]
        for name, tensor, in_layout in zip(
            in_names[1:], graph.inputs[1:], input_layouts[1:], strict=True
        ):
            tensor_shape = graph.shapes[tensor]
            specs.append(ct.TensorType(name=name, shape=[tensor_shape[p] for p in in_layout]))
        convert_kwargs["inputs"] = specs
    if class_labels is not None:
        convert_kwargs["classifier_config"] = ct.ClassifierConfig(list(class_labels))
    with warnings.catch_warnings(), _quiet_pass_pipelines():
        # coremltools leaves its temporary weights directory to the garbage collector, which
        # warns; the directory is removed either way.
        warnings.filterwarnings("ignore", "Implicitly cleaning up", ResourceWarning)
        mlmodel = ct.convert(program, **convert_kwargs)
        atomic_write_folder(text_path, mlmodel.save, argument="path", suffix=".mlpackage")
        del mlmodel

    saved = load_mlpackage(text_path)
    report = ConversionReport(
        op_counts=saved.op_counts(),
        traced_primitives=traced_counts,
        compute_precision=compute_precision,
        parameter_count=parameter_count,
        file_size_bytes=_package_size(text_path),
        inputs=[(f.name, tuple(f.shape), f.kind) for f in saved.inputs],
        outputs=[(f.name, tuple(f.shape)) for f in saved.outputs],
        minimum_deployment_target=str(minimum_deployment_target or "iOS15"),
        fusions=_fusion_counts(graph),
    )
    return CoreMLExport(text_path, report)
