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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlxkit._io import atomic_write_folder
from mlxkit.export import _flexible as flexible_shapes
from mlxkit.export import _state as state
from mlxkit.export._locate import RANDOM_PRIMITIVES, Locations, locate
from mlxkit.export._lower import HINTS, Lowerer, channels_first, output_var, unsupported
from mlxkit.export._mil_numpy import load_mlpackage
from mlxkit.export._optimize import optimize, range_sensitive_nodes
from mlxkit.export._trace import Graph, Node, as_function, normalize_inputs, trace

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
    """Raised when a traced graph holds primitives with no Core ML lowering; lists all of them,
    each with the submodule path and source line it came from and what to do.

    Attributes:
        operations: The MLX primitives that cannot be lowered.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.export import to_coreml, UnsupportedOperationError
        >>> def spectrum(x):
        ...     return mx.abs(mx.fft.rfft(x)).astype(mx.float32)
        >>> try:
        ...     to_coreml(spectrum, mx.zeros((4,)), "s.mlpackage")
        ... except UnsupportedOperationError as error:
        ...     print(error.operations[0])
        FFT
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
        inputs: `(name, shape, kind)` per input, kind `"tensor"` or `"image"`, with the
            flexible sizes after it (`"tensor, axis 1: 1..512"`); shape is the default one.
        outputs: `(name, shape)` per output (shape `()` for classifier label outputs).
        minimum_deployment_target: The Core ML target the program was built for.
        fusions: How many subgraphs became one fused op, by kind (e.g. `{"conv": 20}`).
        float32_ops: In a float16 export, the Core ML ops kept in float32 for range safety
            (sums of squares inside RMSNorm and `x / norm(x)`, which overflow float16 once an
            element passes ~256), by type.
        states: `(name, shape)` per Core ML state (float16; see `to_coreml`'s `states`).

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
    float32_ops: dict[str, int] = field(default_factory=dict)
    states: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

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
        for name, shape in self.states:
            lines.append(f"  state  {name}: float16 {tuple(shape)}")
        lines.append("  ops:")
        for op, count in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {op:<28}{count:>6}")
        if self.fusions:
            fused = ", ".join(f"{k} x{v}" for k, v in sorted(self.fusions.items()))
            lines.append(f"  fused from MLX primitives: {fused}")
        if self.float32_ops:
            kept = ", ".join(f"{k} x{v}" for k, v in sorted(self.float32_ops.items()))
            lines.append(f"  run in float32 for range safety: {kept}")
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


def _unsupported_error(
    problems: list[tuple[Node, str]],
    model: nn.Module | Callable[..., Any] | None,
    inputs: Sequence[mx.array],
) -> UnsupportedOperationError:
    """One error for every node with no lowering: what, where it came from, and what to do."""
    reasons: dict[str, Counter[str]] = {}
    for node, reason in problems:
        reasons.setdefault(node.op, Counter())[reason] += 1
    places = Locations()
    if model is not None and inputs:
        with as_function(model) as fn:
            places = locate(fn, inputs, set(reasons))
    lines = []
    for op, counts in reasons.items():
        for reason, count in counts.items():
            text = f"  - {op}" + (f" ({reason})" if reason else "")
            text += f" x{count}" if count > 1 else ""
            where = places.describe(op)
            lines.append(text + (f", {where}" if where else ""))
    message = (
        f"Cannot export to Core ML: the traced graph uses {len(reasons)} MLX primitive(s) with "
        "no Core ML lowering. Nothing was written.\n" + "\n".join(lines)
    )
    if any(op in RANDOM_PRIMITIVES for op in reasons):
        if places.sampled_randomly:
            message += (
                "\nThe model samples random numbers in `__call__`: sample outside the model and "
                "pass the noise in as an input."
            )
        else:
            message += (
                "\nRandom-number primitives without sampling in `__call__` mean an array the "
                "model captures was never evaluated; call mx.eval on it (or on "
                "model.parameters()) before exporting."
            )
    elif any(not HINTS.get(op) for op in reasons):
        message += (
            "\nRewrite that part with supported operations (see the table in the Core ML guide), "
            "or compute it outside the model and pass the result in as an input."
        )
    return UnsupportedOperationError(list(reasons), message)


# --------------------------------------------------------------------------------------------
# The stages of `to_coreml`, in order. The export benchmark calls them one by one.


def trace_model(
    model: nn.Module | Callable[..., Any], inputs: Sequence[mx.array], *, class_mask: bool = False
) -> Graph:
    """Stage 1: traces `model(*inputs)` into a `Graph` (a Module in eval mode, then restored).

    With `class_mask`, the first output is replaced by its argmax over the last axis.

    Example:
        >>> import mlx.core as mx, mlx.nn as nn
        >>> graph = trace_model(nn.Linear(4, 2), [mx.zeros((1, 4))])
        >>> [node.op for node in graph.nodes]
        ['Transpose', 'Broadcast', 'AddMM']
    """
    with as_function(model) as fn:
        traced_fn = fn
        if class_mask:

            def traced_fn(*args: mx.array) -> Any:
                result = fn(*args)
                items = list(result) if isinstance(result, (list, tuple)) else [result]
                items[0] = mx.argmax(items[0], axis=-1)
                return tuple(items) if len(items) > 1 else items[0]

        try:
            return trace(traced_fn, inputs)
        except ValueError as error:
            if "Attempting to eval" in str(error):
                raise TypeError(
                    "The model reads an array's value while it is traced (`.item()`, "
                    "`.tolist()`, `np.array(x)`, or Python control flow on an array), which a "
                    "fixed Core ML program cannot express. Compute that value outside the "
                    f"model, or replace the branch with `mx.where`. MLX said: {error}"
                ) from error
            if "export_function" not in str(error):
                raise
            raise TypeError(
                "The model must return an mx.array or a tuple/list of mx.array when called "
                f"with the example inputs. MLX said: {error}"
            ) from error


def optimize_graph(
    graph: Graph,
    *,
    fuse: bool = True,
    model: nn.Module | Callable[..., Any] | None = None,
    inputs: Sequence[mx.array] = (),
) -> None:
    """Stage 2: folds constants and fuses patterns in place, then checks that every node has a
    lowering; raises `UnsupportedOperationError` listing all that do not.

    With `model` and `inputs`, the error says where in the model each primitive came from.
    `fuse=False` keeps one MIL op per primitive (the benchmark's baseline).

    Example:
        >>> import mlx.core as mx, mlx.nn as nn
        >>> graph = trace_model(nn.Linear(4, 2), [mx.zeros((1, 4))])
        >>> optimize_graph(graph)
        >>> [node.op for node in graph.nodes]
        ['linear']
    """
    optimize(graph, fuse=fuse)
    problems = unsupported(graph)
    if problems:
        raise _unsupported_error(problems, model, inputs)


@dataclass
class BuiltProgram:
    """Stage 3's result: the MIL program and the names of the ops kept in float32."""

    program: Any
    float32_ops: list[str]


def build_program(
    graph: Graph,
    input_names: Sequence[str],
    output_names: Sequence[str],
    input_layouts: Sequence[tuple[int, ...]],
    output_layouts: Sequence[tuple[int, ...]],
    opset: Any,
    *,
    track_layout: bool = True,
    states: Sequence[state.StateBinding] = (),
) -> BuiltProgram:
    """Stage 3: lowers every node with the op table into a MIL program.

    The MIL ops lowered from range-sensitive nodes (sums of squares on their way to a square
    root: RMSNorm, `x / norm(x)`) are listed so that a float16 export keeps them in float32.
    `states` turn inputs into Core ML states and their paired outputs into state updates.

    Example:
        >>> import coremltools as ct, mlx.core as mx, mlx.nn as nn
        >>> graph = trace_model(nn.RMSNorm(4), [mx.ones((1, 4))])
        >>> optimize_graph(graph)
        >>> built = build_program(graph, ["x"], ["y"], [(0, 1)], [(0, 1)], ct.target.iOS15)
        >>> len(built.float32_ops)  # square, reduce_mean, add, rsqrt
        4
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types

    state_inputs = {binding.input_index: binding for binding in states}
    state_outputs = {binding.output_index for binding in states}
    placeholders = {}
    for index, (name, tensor, layout) in enumerate(
        zip(input_names, graph.inputs, input_layouts, strict=True)
    ):
        shape = graph.shapes[tensor]
        if index in state_inputs:
            placeholders[name] = state.placeholder(mb, shape)
            continue
        dtype = types.int32 if graph.dtypes[tensor].startswith(("int", "uint")) else types.fp32
        placeholders[name] = mb.placeholder(shape=[shape[p] for p in layout], dtype=dtype)
    lowerer = Lowerer(graph, mb, track_layout=track_layout)
    sensitive = {id(node) for node in range_sensitive_nodes(graph)}
    float32_ops: list[str] = []
    with Function(placeholders, opset_version=opset) as function:
        for index, (name, tensor, layout) in enumerate(
            zip(input_names, graph.inputs, input_layouts, strict=True)
        ):
            if index in state_inputs:
                lowerer.set(tensor, state.read(mb, function.inputs[name]), range(len(layout)))
                continue
            lowerer.set(tensor, function.inputs[name], layout)
            for axis, size in enumerate(function.inputs[name].shape):
                if not isinstance(size, (int, np.integer)) and size not in lowerer.symbol_sizes:
                    sizes = mb.shape(x=function.inputs[name])
                    lowerer.symbol_sizes[size] = mb.slice_by_index(
                        x=sizes, begin=[axis], end=[axis + 1]
                    )
        for node in graph.nodes:
            before = len(function.operations)
            lowerer.lower(node)
            if id(node) in sensitive:
                new_ops = list(function.operations)[before:]
                float32_ops += [op.name for op in new_ops if op.op_type != "const"]
        for binding in states:
            value = lowerer.var(graph.outputs[binding.output_index])
            state.write(mb, function.inputs[binding.name], value)
        taken: set[int] = set()
        outputs = [
            output_var(lowerer, tensor, layout, name, taken)
            for index, (tensor, layout, name) in enumerate(
                zip(graph.outputs, output_layouts, output_names, strict=True)
            )
            if index not in state_outputs
        ]
        function.set_outputs(outputs)
    program = Program()
    program.add_function("main", function)
    return BuiltProgram(program, float32_ops)


def convert_and_save(
    built: BuiltProgram,
    path: str,
    *,
    compute_precision: ComputePrecision = "float16",
    **convert_options: Any,
) -> None:
    """Stage 4: runs coremltools' conversion passes and saves the package atomically.

    In float16, the ops in `built.float32_ops` stay in float32 (Core ML casts around them).
    `convert_options` go to `coremltools.convert` (inputs, classifier_config, compute_units...).

    Example:
        >>> import coremltools as ct, mlx.core as mx, mlx.nn as nn
        >>> graph = trace_model(nn.Linear(4, 2), [mx.zeros((1, 4))])
        >>> optimize_graph(graph)
        >>> built = build_program(graph, ["x"], ["y"], [(0, 1)], [(0, 1)], ct.target.iOS15)
        >>> convert_and_save(built, "linear.mlpackage", compute_precision="float32")
        >>> report_for("linear.mlpackage", graph, {}, compute_precision="float32",
        ...            parameter_count=10, minimum_deployment_target="iOS15").op_counts
        {'linear': 1}
    """
    ct = require_coremltools()
    precision: Any = ct.precision.FLOAT32
    if compute_precision == "float16":
        keep = frozenset(built.float32_ops)
        precision = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.name not in keep)
    with warnings.catch_warnings(), _quiet_pass_pipelines():
        # coremltools leaves its temporary weights directory to the garbage collector, which
        # warns; the directory is removed either way.
        warnings.filterwarnings("ignore", "Implicitly cleaning up", ResourceWarning)
        # Its cast-merging pass tracks each dtype's value range and overflows doing so for
        # int32 -> float16 casts; the ops it writes are unaffected.
        warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
        mlmodel = ct.convert(
            built.program, convert_to="mlprogram", compute_precision=precision, **convert_options
        )
        atomic_write_folder(path, mlmodel.save, argument="path", suffix=".mlpackage")
        del mlmodel


def report_for(
    path: str,
    graph: Graph,
    traced_counts: dict[str, int],
    *,
    compute_precision: str,
    parameter_count: int,
    minimum_deployment_target: str,
    float32_ops: Sequence[str] = (),
) -> ConversionReport:
    """Stage 5: the conversion report, read back from the saved package (see the example of
    `convert_and_save`)."""
    saved = load_mlpackage(path)
    # Read from the package itself: the range-safe ops that still produce float32 there.
    kept = set(float32_ops) if compute_precision == "float16" else set()
    float32_counts = Counter(
        op.type
        for op in saved.operations
        if op.type != "const"
        and op.outputs
        and op.outputs[0][0] in kept
        and op.outputs[0][1].dtype == np.float32
    )
    return ConversionReport(
        op_counts=saved.op_counts(),
        traced_primitives=traced_counts,
        compute_precision=compute_precision,
        parameter_count=parameter_count,
        file_size_bytes=_package_size(path),
        inputs=[(f.name, tuple(f.shape), _input_kind(f)) for f in saved.inputs],
        outputs=[(f.name, tuple(f.shape)) for f in saved.outputs],
        minimum_deployment_target=minimum_deployment_target,
        fusions=_fusion_counts(graph),
        float32_ops=dict(float32_counts),
        states=[(f.name, tuple(f.shape)) for f in saved.states],
    )


def _input_kind(feature: Any) -> str:
    """ "tensor", or with its flexible sizes: "tensor, axis 1: 1..512" / "tensor, shapes [...]"."""
    if feature.ranges is not None:
        flexible = [
            f"axis {a}: {lo}..{hi}" for a, (lo, hi) in enumerate(feature.ranges) if lo != hi
        ]
        return ", ".join([feature.kind, *flexible])
    if feature.enumerated is not None:
        return f"{feature.kind}, shapes {list(feature.enumerated)}"
    return str(feature.kind)


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
    states: Mapping[str, str] | None = None,
    flexible: Mapping[str, Mapping[int, Any]] | None = None,
) -> CoreMLExport:
    """Exports an MLX model (or function of arrays) to a Core ML `.mlpackage`.

    The model is traced on `example_inputs`, so any `__call__` code (skip connections, concat,
    slicing) is captured; shapes are fixed to the examples'. A Module is put in eval mode and its
    parameters evaluated first. Supported: convolutions (strided, padded, dilated, grouped,
    transposed), linear layers, BatchNorm/LayerNorm/GroupNorm/RMSNorm, common activations,
    pooling, nearest/bilinear/cubic upsampling, attention with masks, concatenation, reshapes,
    transposes, slicing, padding, gathers (also by computed index), cumulative sums and
    products, sorting and top-k, reductions, softmax and elementwise math; the Core ML guide
    lists every primitive. Anything else raises one `UnsupportedOperationError` listing every
    offending primitive and where it came from, before anything is written.

    The stages, in order: `trace_model`, `optimize_graph`, `build_program`,
    `convert_and_save`, `report_for`. In float16, the sums of squares on their way to a square
    root (RMSNorm, `x / norm(x)`) stay in float32, and the report lists those ops.

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
        states: Core ML states (iOS 18+), e.g. a KV cache: maps a (float16) input's name to
            the name of the output that holds its new value. The input becomes a state read at
            the start of each prediction, the output its update (no longer a model output).
            See `mlxkit.models.Llama.step` and the LLM tutorial.
        flexible: Input axes that take more than one size: `{"input_ids": {1: (1, 512)}}`
            accepts any size from 1 to 512 on axis 1 (`ct.RangeDim`), `{1: [1, 8, 64]}` those
            sizes only (`ct.EnumeratedShapes`). The model is traced a second time at another
            size to find what follows it; a constant built from the size (`mx.arange(T)`) is
            an error saying how to compute it from the inputs instead.

    Quantized layers (`nn.QuantizedLinear`, `nn.QuantizedEmbedding`) keep their integers: the
    package holds 4 or 8 bits per weight, decompressed by Core ML to exactly `mx.dequantize`'s
    weights. They and `states` need iOS 18 / macOS 15, the default target when present; an
    earlier `minimum_deployment_target` is an error that names the one needed.

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
    _check_options(compute_precision, compute_units, layout, image_input, class_labels, class_mask)
    inputs = normalize_inputs(example_inputs)
    _check_inputs(inputs, image_input)
    in_names = _check_names(input_names, len(inputs), "input_names")
    ct = require_coremltools()
    target = _deployment_target(ct, minimum_deployment_target)

    graph = trace_model(model, inputs, class_mask=class_mask)
    traced_counts = dict(Counter(node.op for node in graph.nodes))
    out_names = _check_names(output_names, len(graph.outputs), "output_names")
    in_names = in_names or [f"input_{i}" if i else "input" for i in range(len(graph.inputs))]
    out_names = out_names or [f"output_{i}" if i else "output" for i in range(len(graph.outputs))]
    if set(in_names) & set(out_names):
        raise ValueError(
            "Input and output names must differ. "
            f"Received: input_names={in_names!r}, output_names={out_names!r}."
        )
    if class_mask and len(graph.shapes[graph.outputs[0]]) < 2:
        raise ValueError(
            "`class_mask=True` needs a first output with a class axis last, e.g. "
            f"(N, H, W, classes). Received an output of shape {graph.shapes[graph.outputs[0]]}."
        )
    parameter_count = _count_parameters(model, graph)
    bindings = state.bind_states(states, graph, in_names, out_names)
    flexible_axes = flexible_shapes.parse(flexible, in_names, inputs)
    if flexible_axes and image_input is not None:
        raise ValueError(
            "`flexible` and `image_input` cannot be combined yet. "
            f"Received: flexible={flexible!r}, image_input={image_input!r}."
        )

    optimize_graph(graph, model=model, inputs=inputs)
    if flexible_axes:
        second = flexible_shapes.second_inputs(inputs, flexible_axes)
        other = trace_model(model, second, class_mask=class_mask)
        optimize_graph(other, model=model, inputs=second)
        flexible_shapes.make_symbolic(graph, other, flexible_axes)
    target = _target_for(ct, graph, bindings, target, minimum_deployment_target)

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
    built = build_program(
        graph, in_names, out_names, input_layouts, output_layouts, opset, states=bindings
    )

    convert_options: dict[str, Any] = {
        "compute_units": getattr(ct.ComputeUnit, _UNITS[compute_units]),
        "minimum_deployment_target": target,
    }
    if image_input is not None:
        convert_options["inputs"] = _input_types(ct, graph, image_input, in_names, input_layouts)
    elif flexible_axes:
        convert_options["inputs"] = _flexible_input_types(
            ct, graph, in_names, input_layouts, bindings, flexible_axes
        )
    if class_labels is not None:
        convert_options["classifier_config"] = ct.ClassifierConfig(list(class_labels))
    if bindings:
        convert_options["pass_pipeline"] = state.pass_pipeline(ct)
    convert_and_save(built, text_path, compute_precision=compute_precision, **convert_options)

    report = report_for(
        text_path,
        graph,
        traced_counts,
        compute_precision=compute_precision,
        parameter_count=parameter_count,
        minimum_deployment_target=str(
            minimum_deployment_target or (target.name if target is not None else "iOS15")
        ),
        float32_ops=built.float32_ops,
    )
    return CoreMLExport(text_path, report)


def _target_for(
    ct: Any,
    graph: Graph,
    bindings: Sequence[state.StateBinding],
    target: Any,
    requested: str | None,
) -> Any:
    """The deployment target: iOS 18 when quantized weights or states need it and none was
    asked for; an error when the one asked for is earlier."""
    needs = [f"state {b.name!r}" for b in bindings]
    if any(node.op in ("quantized_linear", "quantized_gather") for node in graph.nodes):
        needs.append("quantized weights (nn.QuantizedLinear / nn.QuantizedEmbedding)")
    if not needs:
        return target
    if target is None:
        return ct.target.iOS18
    minimum = ct.target.iOS18 if str(requested).startswith("iOS") else ct.target.macOS15
    if target.value < minimum.value:
        raise ValueError(
            f"The model uses {', '.join(needs)}, which Core ML supports from "
            f"{minimum.name} (macOS15 / iOS18) on. "
            f"Received: minimum_deployment_target={requested!r}. Pass "
            f"minimum_deployment_target={minimum.name!r} or later"
            + (", or dequantize the model first." if len(needs) > len(bindings) else ".")
        )
    return target


def _check_options(
    compute_precision: str,
    compute_units: str,
    layout: str,
    image_input: ImageInput | None,
    class_labels: Sequence[str] | Sequence[int] | None,
    class_mask: bool,
) -> None:
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


def _check_inputs(inputs: Sequence[mx.array], image_input: ImageInput | None) -> None:
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


def _deployment_target(ct: Any, name: str | None) -> Any:
    if name is None:
        return None
    target = getattr(ct.target, str(name), None)
    if target is None:
        raise ValueError(
            "`minimum_deployment_target` must be a coremltools.target name, one of "
            f"{list(ct.target.__members__)}. Received: minimum_deployment_target={name!r}."
        )
    return target


def _flexible_input_types(
    ct: Any,
    graph: Graph,
    names: Sequence[str],
    layouts: Sequence[tuple[int, ...]],
    bindings: Sequence[state.StateBinding],
    axes: Sequence[flexible_shapes.FlexibleAxis],
) -> list[Any]:
    """coremltools input types when some axes are flexible (states are not inputs)."""
    stateful = {b.input_index for b in bindings}
    specs = []
    for index, (name, tensor, layout) in enumerate(zip(names, graph.inputs, layouts, strict=True)):
        if index in stateful:
            continue
        shape = [graph.shapes[tensor][p] for p in layout]
        dtype = np.int32 if graph.dtypes[tensor].startswith(("int", "uint")) else np.float32
        mine = [
            flexible_shapes.FlexibleAxis(
                f.input_index, layout.index(f.axis), f.low, f.high, f.sizes, f.symbol
            )
            for f in axes
            if f.input_index == index
        ]
        specs.append(flexible_shapes.input_type(ct, name, shape, dtype, mine))
    return specs


def _input_types(
    ct: Any,
    graph: Graph,
    image_input: ImageInput,
    names: Sequence[str],
    layouts: Sequence[tuple[int, ...]],
) -> list[Any]:
    """coremltools input types: an `ImageType` first, then plain tensors."""
    shape = graph.shapes[graph.inputs[0]]
    bias = image_input.bias
    bias_list = [float(b) for b in bias] if isinstance(bias, (tuple, list)) else None
    specs = [
        ct.ImageType(
            name=names[0],
            shape=(1, shape[3], shape[1], shape[2]),
            scale=float(image_input.scale),
            bias=bias_list if bias_list is not None else float(bias),  # type: ignore[arg-type]
            color_layout=getattr(ct.colorlayout, image_input.color_layout),
            channel_first=True,
        )
    ]
    for name, tensor, layout in zip(names[1:], graph.inputs[1:], layouts[1:], strict=True):
        tensor_shape = graph.shapes[tensor]
        specs.append(ct.TensorType(name=name, shape=[tensor_shape[p] for p in layout]))
    return specs
