"""A NumPy interpreter for saved Core ML ML Programs (`.mlpackage`), for checking exports anywhere.

Core ML only runs on Apple platforms. `run_mlpackage_numpy` reads what was written to disk (the
package manifest, the `model.mlmodel` protobuf with its MIL program and the `weight.bin` blob
file, parsed here without Core ML's native code) and executes the program op by op in NumPy, so a
Linux machine can check an export against the MLX model it came from.

Every tensor is stored in the dtype the program declares for it: an fp16 program rounds each op's
result to float16, as Core ML's fp16 storage does, while the arithmetic inside an op runs in
float32. Expect fp16 results to differ from Core ML's own in the last bits.

The op set covers what `mlxkit.export.to_coreml` emits plus what coremltools' optimisation
passes turn it into; an unknown op raises `NotImplementedError` naming it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlxkit.export import _primitives as prim
from mlxkit.export import _quantized as quantized

import numpy as np

# MIL DataType enum values (coremltools/proto/MIL.proto) to NumPy dtypes.
_PROTO_DTYPES = {
    "FLOAT16": np.float16,
    "FLOAT32": np.float32,
    "FLOAT64": np.float64,
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT4": np.int8,
    "UINT4": np.uint8,
    "UINT2": np.uint8,
    "UINT1": np.uint8,
    "UINT3": np.uint8,
}

# Blob storage dtype codes (MIL's BlobDataType) to NumPy dtypes.
_BLOB_DTYPES = {
    1: np.float16,
    2: np.float32,
    3: np.uint8,
    4: np.int8,
    6: np.int16,
    7: np.uint16,
    14: np.int32,
    15: np.uint32,
}
_BLOB_SENTINEL = 0xDEADBEEF

_CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


# --------------------------------------------------------------------------------------------
# Reading the package


@dataclass
class TensorSpec:
    """A declared tensor: dtype and static shape (None for a non-tensor such as a dictionary)."""

    dtype: Any
    shape: tuple[int | None, ...] | None


@dataclass
class Operation:
    """One MIL operation as stored in the program."""

    type: str
    inputs: dict[str, list[Any]]  # parameter -> bindings: ("name", str) or ("value", np.ndarray)
    outputs: list[tuple[str, TensorSpec]]
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeatureSpec:
    """A model input or output from the model description."""

    name: str
    kind: str  # "tensor", "image", "string", "int64", "dictionary"
    shape: tuple[int, ...] = ()
    dtype: Any = np.float32
    color_space: str | None = None
    # Flexible inputs: the accepted shapes, as (low, high) per axis or a list of shapes.
    ranges: tuple[tuple[int, int], ...] | None = None
    enumerated: tuple[tuple[int, ...], ...] | None = None


@dataclass
class LoadedProgram:
    """A parsed `.mlpackage`: description, main function inputs and operations."""

    inputs: list[FeatureSpec]
    outputs: list[FeatureSpec]
    function_inputs: dict[str, TensorSpec]
    operations: list[Operation]
    block_outputs: list[str]
    opset: str
    metadata: dict[str, str]
    states: list[FeatureSpec] = field(default_factory=list)

    def op_counts(self) -> dict[str, int]:
        """How many operations of each type the program holds (consts excluded)."""
        counts: dict[str, int] = {}
        for op in self.operations:
            if op.type != "const":
                counts[op.type] = counts.get(op.type, 0) + 1
        return counts


def _model_paths(package: str) -> tuple[str, str]:
    manifest_path = os.path.join(package, "Manifest.json")
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(
            f"{package!r} is not an .mlpackage: it has no Manifest.json. "
            f"Received: path={package!r}."
        )
    with open(manifest_path) as f:
        manifest = json.load(f)
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    model_path = os.path.join(package, "Data", root["path"])
    return model_path, os.path.dirname(model_path)


def read_blob(path: str, offset: int, dtype: Any, count: int) -> np.ndarray:
    """Reads one array from a Core ML weight blob file at a metadata `offset`.

    The file starts with a 64-byte header; each blob has a 64-byte metadata record (sentinel
    0xDEADBEEF, data type, size in bytes, data offset) followed, at the data offset, by the raw
    little-endian values.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        sentinel, code, size, data_offset = struct.unpack("<IIQQ", f.read(24))
        if sentinel != _BLOB_SENTINEL:
            raise ValueError(f"Corrupt weight file {path!r}: no blob metadata at offset {offset}.")
        if code in quantized.SUB_BYTE_BLOBS:
            bits, signed = quantized.SUB_BYTE_BLOBS[code]
            f.seek(data_offset)
            values = quantized.unpack_sub_byte(f.read(size), bits, signed, count)
            return values.astype(dtype, copy=False)
        stored = _BLOB_DTYPES.get(code)
        if stored is None:
            raise NotImplementedError(f"Weight blob data type code {code} is not supported.")
        f.seek(data_offset)
        data = np.frombuffer(f.read(size), dtype=np.dtype(stored).newbyteorder("<"))
    if data.size != count:
        raise ValueError(
            f"Weight blob at offset {offset} holds {data.size} values; the program expects {count}."
        )
    return data.astype(dtype, copy=False)


def _tensor_spec(value_type: Any) -> TensorSpec:
    from coremltools.proto import MIL_pb2

    which = value_type.WhichOneof("type")
    if which == "stateType":
        return _tensor_spec(value_type.stateType.wrappedType)
    if which != "tensorType":
        return TensorSpec(None, None)
    tensor = value_type.tensorType
    dtype = _PROTO_DTYPES.get(MIL_pb2.DataType.Name(tensor.dataType), object)
    dims: list[int | None] = []
    for dim in tensor.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            dims.append(None)  # a flexible size, known when the program runs
            continue
        dims.append(int(dim.constant.size))
    return TensorSpec(dtype, tuple(dims))


def _read_value(value: Any, weights_dir: str) -> Any:
    from coremltools.proto import MIL_pb2

    spec = _tensor_spec(value.type)
    which = value.WhichOneof("value")
    if which == "blobFileValue":
        blob = value.blobFileValue
        path = os.path.join(weights_dir, blob.fileName.split("/")[-1])
        # Weights always have static shapes.
        count = math.prod(int(d or 0) for d in spec.shape or ())
        return read_blob(path, blob.offset, spec.dtype, count).reshape(spec.shape)
    immediate = value.immediateValue
    kind = immediate.WhichOneof("value")
    if kind == "list":
        return [_read_value(item, weights_dir) for item in immediate.list.values]
    if kind != "tensor":
        raise NotImplementedError(f"Immediate value of kind {kind!r} is not supported.")
    tensor = immediate.tensor
    field_name = tensor.WhichOneof("value")
    shape = spec.shape or ()
    if field_name == "strings":
        items = list(tensor.strings.values)
        return items[0] if not shape else np.array(items, dtype=object).reshape(shape)
    if field_name == "bytes":
        raw = np.frombuffer(tensor.bytes.values, dtype=spec.dtype)
        return raw.reshape(shape)
    values = list(getattr(tensor, field_name).values) if field_name else []
    dtype = spec.dtype if spec.dtype is not object else np.float32
    if MIL_pb2.DataType.Name(value.type.tensorType.dataType) == "STRING":
        dtype = object
    return np.array(values, dtype=dtype).reshape(shape)


def _feature(description: Any) -> FeatureSpec:
    kind = description.type.WhichOneof("Type")
    name = description.name
    if kind == "multiArrayType":
        array = description.type.multiArrayType
        codes = {65568: np.float32, 65552: np.float16, 131104: np.int32, 65600: np.float64}
        ranges = enumerated = None
        which = array.WhichOneof("ShapeFlexibility")
        if which == "shapeRange":
            ranges = tuple(
                (int(r.lowerBound), int(r.upperBound)) for r in array.shapeRange.sizeRanges
            )
        elif which == "enumeratedShapes":
            enumerated = tuple(
                tuple(int(d) for d in e.shape) for e in array.enumeratedShapes.shapes
            )
        return FeatureSpec(
            name,
            "tensor",
            tuple(array.shape),
            codes.get(array.dataType, np.float32),
            ranges=ranges,
            enumerated=enumerated,
        )
    if kind == "imageType":
        image = description.type.imageType
        from coremltools.proto import FeatureTypes_pb2

        space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        channels = 1 if space.startswith("GRAYSCALE") else 3
        return FeatureSpec(
            name, "image", (1, channels, image.height, image.width), np.float32, space
        )
    if kind == "stateType":
        array = description.type.stateType.arrayType
        return FeatureSpec(name, "state", tuple(array.shape), np.float16)
    if kind == "stringType":
        return FeatureSpec(name, "string")
    if kind == "int64Type":
        return FeatureSpec(name, "int64")
    if kind == "dictionaryType":
        return FeatureSpec(name, "dictionary")
    raise NotImplementedError(f"Model feature {name!r} of type {kind!r} is not supported.")


def load_mlpackage(path: str | os.PathLike[str]) -> LoadedProgram:
    """Parses a saved `.mlpackage` (manifest, model protobuf, weights) into a `LoadedProgram`.

    Example:
        >>> import mlx.core as mx, mlx.nn as nn
        >>> from mlxkit.export import load_mlpackage, to_coreml
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> _ = to_coreml(model, mx.zeros((1, 4)), "model.mlpackage", compute_precision="float32")
        >>> load_mlpackage("model.mlpackage").op_counts()
        {'linear': 2, 'relu': 1}
    """
    try:
        from coremltools.proto import Model_pb2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading .mlpackage files needs coremltools' protobuf definitions: "
            "`pip install coremltools`."
        ) from error

    package = os.fspath(path)
    model_path, weights_dir = _model_paths(package)
    spec = Model_pb2.Model()
    with open(model_path, "rb") as f:
        spec.ParseFromString(f.read())
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(
            f"{package!r} holds a {spec.WhichOneof('Type')!r} model; only ML Programs are "
            "supported."
        )
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    weights = os.path.join(weights_dir, "weights")
    operations = []
    for op in block.operations:
        inputs: dict[str, list[Any]] = {}
        for param, argument in op.inputs.items():
            bindings: list[Any] = []
            for binding in argument.arguments:
                if binding.WhichOneof("binding") == "name":
                    bindings.append(("name", binding.name))
                else:
                    bindings.append(("value", _read_value(binding.value, weights)))
            inputs[param] = bindings
        attributes = {}
        for key, value in op.attributes.items():
            if key != "name":
                attributes[key] = _read_value(value, weights)
        outputs = [(o.name, _tensor_spec(o.type)) for o in op.outputs]
        if op.blocks:
            raise NotImplementedError(f"Control-flow op {op.type!r} is not supported.")
        operations.append(Operation(op.type, inputs, outputs, attributes))
    function_inputs = {i.name: _tensor_spec(i.type) for i in function.inputs}
    metadata = dict(spec.description.metadata.userDefined)
    return LoadedProgram(
        inputs=[_feature(d) for d in spec.description.input],
        outputs=[_feature(d) for d in spec.description.output],
        function_inputs=function_inputs,
        operations=operations,
        block_outputs=list(block.outputs),
        opset=function.opset,
        metadata=metadata,
        states=[_feature(d) for d in spec.description.state],
    )


# --------------------------------------------------------------------------------------------
# Op semantics (MIL definitions, coremltools/converters/mil/mil/ops/defs)


def _f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _spatial_pads(
    pad_type: str,
    pad: Sequence[int] | None,
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    n = len(in_sizes)
    if pad_type == "valid":
        return [0] * n, [0] * n
    if pad_type == "custom":
        flat = [int(p) for p in (pad if pad is not None else [0] * 2 * n)]
        return flat[0::2], flat[1::2]
    lo, hi = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        first = total // 2 if pad_type == "same" else total - total // 2
        lo.append(first)
        hi.append(total - first)
    return lo, hi


def conv_nchw(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    strides: Sequence[int],
    pad_type: str,
    pad: Sequence[int] | None,
    dilations: Sequence[int],
    groups: int,
) -> np.ndarray:
    """MIL `conv`: x `(N, C_in, *D)`, weight `(C_out, C_in / groups, *K)`."""
    n = x.ndim - 2
    kernel = weight.shape[2:]
    lo, hi = _spatial_pads(pad_type, pad, x.shape[2:], kernel, strides, dilations)
    channels_last = np.moveaxis(x, 1, -1)
    weight_last = np.moveaxis(weight, 1, -1)
    out = prim.convolution(
        channels_last, weight_last, strides, lo, hi, dilations, [1] * n, groups, False
    )
    out = np.moveaxis(out, -1, 1)
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * n)
    return out


def conv_transpose_nchw(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    strides: Sequence[int],
    pad_type: str,
    pad: Sequence[int] | None,
    dilations: Sequence[int],
    groups: int,
    output_shape: Sequence[int] | None,
) -> np.ndarray:
    """MIL `conv_transpose`: x `(N, C_in, *D)`, weight `(C_in, C_out / groups, *K)`."""
    n = x.ndim - 2
    kernel = weight.shape[2:]
    if pad_type == "custom":
        flat = [int(p) for p in (pad if pad is not None else [0] * 2 * n)]
        lo, hi = flat[0::2], flat[1::2]
    elif pad_type == "valid":
        lo, hi = [0] * n, [0] * n
    else:
        raise NotImplementedError(f"conv_transpose with pad_type={pad_type!r} is not supported.")
    natural = [
        (size - 1) * s + (k - 1) * d + 1 - a - b
        for size, s, k, d, a, b in zip(x.shape[2:], strides, kernel, dilations, lo, hi)
    ]
    extra = [0] * n
    if output_shape is not None:
        extra = [int(t) - m for t, m in zip(list(output_shape)[-n:], natural)]
    c_in, c_out_group = weight.shape[0], weight.shape[1]
    grouped = weight.reshape(groups, c_in // groups, c_out_group, *kernel)
    # (g, C_in/g, C_out/g, *K) -> (C_out, *K, C_in/g): the equivalent stride-1 convolution over
    # the input dilated by `strides`, with the kernel flipped.
    equivalent = np.moveaxis(grouped, 1, -1).reshape(groups * c_out_group, *kernel, c_in // groups)
    out = prim.convolution(
        np.moveaxis(x, 1, -1),
        equivalent,
        [1] * n,
        [(k - 1) * d - a for k, d, a in zip(kernel, dilations, lo)],
        [(k - 1) * d - b + e for k, d, b, e in zip(kernel, dilations, hi, extra)],
        dilations,
        strides,
        groups,
        True,
    )
    out = np.moveaxis(out, -1, 1)
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * n)
    return out


def pool_nchw(
    x: np.ndarray,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pad_type: str,
    pad: Sequence[int] | None,
    ceil_mode: bool = False,
    exclude_padding: bool = False,
) -> np.ndarray:
    """MIL `max_pool` / `avg_pool` over the trailing spatial axes of `(N, C, *D)`.

    Max pooling never picks padding; average pooling divides by the whole window unless
    `exclude_padding`, then by the number of real elements in it.
    """
    if ceil_mode:
        raise NotImplementedError("Pooling with ceil_mode=True is not supported.")
    n = len(kernel)
    spatial = x.shape[-n:]
    lo, hi = _spatial_pads(pad_type, pad, spatial, kernel, strides, [1] * n)
    outs = [
        (size + a + b - k) // s + 1 for size, k, s, a, b in zip(spatial, kernel, strides, lo, hi)
    ]
    widths = [(a, b) for a, b in zip(lo, hi)]
    fill = -np.inf if kind == "max" else 0.0
    padded = np.pad(x, [(0, 0)] * (x.ndim - n) + widths, constant_values=fill)
    real = np.pad(np.ones(spatial), widths)
    result = np.full(x.shape[:-n] + tuple(outs), fill)
    counts = np.zeros(tuple(outs))
    for position in np.ndindex(*kernel):
        window = tuple(slice(p, p + s * (o - 1) + 1, s) for p, s, o in zip(position, strides, outs))
        at: tuple[Any, ...] = (Ellipsis, *window)
        values = padded[at]
        if kind == "max":
            result = np.maximum(result, values)
        else:
            result = result + values
            counts = counts + real[window]
    if kind == "max":
        return result
    return result / (counts if exclude_padding else math.prod(kernel))


def _bilinear_axis(
    size_in: int, size_out: int, align_corners: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = np.arange(size_out, dtype=np.float64)
    if align_corners:
        spacing = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        grid = i * spacing
    else:
        spacing = size_in / size_out
        grid = i * spacing + 0.5 * spacing - 0.5
    grid = np.clip(grid, 0.0, size_in - 1)
    low = np.floor(grid).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, grid - low


def upsample_bilinear_nchw(
    x: np.ndarray, scale_h: float, scale_w: float, align_corners: bool
) -> np.ndarray:
    """MIL `upsample_bilinear` on the last two axes; output size is floor(size * scale)."""
    h, w = x.shape[-2:]
    ho, wo = math.floor(h * scale_h + 1e-9), math.floor(w * scale_w + 1e-9)
    lo, hi, frac = _bilinear_axis(h, ho, align_corners)
    frac = frac.reshape(-1, 1)
    x = x[..., lo, :] * (1 - frac) + x[..., hi, :] * frac
    lo, hi, frac = _bilinear_axis(w, wo, align_corners)
    return x[..., lo] * (1 - frac) + x[..., hi] * frac


def _upsample_bilinear(
    x: np.ndarray,
    scale_factor_height: Any = 1,
    scale_factor_width: Any = 1,
    align_corners: Any = True,
    half_pixel_centers: Any = None,
) -> np.ndarray:
    # iOS16 added half_pixel_centers, defaulting to `not align_corners`: the iOS15 behaviour.
    if half_pixel_centers is not None and bool(half_pixel_centers) == bool(align_corners):
        raise NotImplementedError(
            "upsample_bilinear with half_pixel_centers == align_corners is not supported."
        )
    return upsample_bilinear_nchw(
        _f32(x), float(scale_factor_height), float(scale_factor_width), bool(align_corners)
    )


def upsample_nearest_nchw(x: np.ndarray, scale_h: float, scale_w: float) -> np.ndarray:
    """MIL `upsample_nearest_neighbor` on the last two axes: out[i] = in[floor(i / scale)]."""
    h, w = x.shape[-2:]
    ho, wo = math.floor(h * scale_h + 1e-9), math.floor(w * scale_w + 1e-9)
    rows = np.minimum(np.floor(np.arange(ho) * h / ho).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(wo) * w / wo).astype(np.int64), w - 1)
    return x[..., rows, :][..., cols]


def _slice_by_index(
    x: np.ndarray,
    begin: Sequence[int],
    end: Sequence[int],
    stride: Sequence[int] | None = None,
    begin_mask: Sequence[bool] | None = None,
    end_mask: Sequence[bool] | None = None,
    squeeze_mask: Sequence[bool] | None = None,
) -> np.ndarray:
    rank = x.ndim
    stride = list(stride) if stride is not None else [1] * rank
    begin_mask = list(begin_mask) if begin_mask is not None else [False] * rank
    end_mask = list(end_mask) if end_mask is not None else [False] * rank
    index = []
    for axis in range(rank):
        b = None if begin_mask[axis] else int(begin[axis])
        e = None if end_mask[axis] else int(end[axis])
        s = int(stride[axis])
        size = x.shape[axis]
        if b is not None and b < 0:
            b += size
        if e is not None and e < 0:
            e += size
        index.append(slice(b, e, s))
    out = x[tuple(index)]
    if squeeze_mask is not None and any(squeeze_mask):
        out = np.squeeze(out, axis=tuple(i for i, m in enumerate(squeeze_mask) if m))
    return out


def _axes(value: Any, rank: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(int(a) % rank for a in np.atleast_1d(value))


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def run(x: np.ndarray, axes: Any = None, keep_dims: Any = False) -> np.ndarray:
        axis = _axes(axes, x.ndim)
        return fn(_f32(x), axis=axis, keepdims=bool(keep_dims))

    return run


def _log_sum_exp(x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    out = peak + np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def _gelu(x: np.ndarray, mode: str = "EXACT") -> np.ndarray:
    if mode == "EXACT":
        return 0.5 * x * (1.0 + prim.UNARY["Erf"](x / math.sqrt(2.0), []))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    raise NotImplementedError(f"gelu mode {mode!r} is not supported.")


def _pad(
    x: np.ndarray, pad: Sequence[int], mode: str = "constant", constant_val: float = 0.0
) -> np.ndarray:
    pairs = np.asarray(pad, dtype=np.int64).reshape(-1, 2)
    widths = [(0, 0)] * (x.ndim - len(pairs)) + [tuple(p) for p in pairs]
    if mode == "constant":
        return np.pad(x, widths, constant_values=constant_val)
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise NotImplementedError(f"pad mode {mode!r} is not supported.")


def _split(
    x: np.ndarray, num_splits: Any = None, split_sizes: Any = None, axis: int = 0
) -> list[np.ndarray]:
    if split_sizes is not None:
        bounds = np.cumsum(np.asarray(split_sizes))[:-1]
        return np.split(x, bounds, axis=int(axis))
    return np.split(x, int(num_splits), axis=int(axis))


def _layer_norm(
    x: np.ndarray, axes: Any = None, gamma: Any = None, beta: Any = None, epsilon: float = 1e-5
) -> np.ndarray:
    axis = _axes(axes, x.ndim) or tuple(range(x.ndim))
    mean = np.mean(x, axis=axis, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axis, keepdims=True)
    out = (x - mean) / np.sqrt(var + epsilon)
    # gamma and beta have the shape of the normalized axes, wherever those are (axis 1 after
    # a channels-first conv), so they are placed on those axes before broadcasting.
    placed = tuple(x.shape[a] if a in axis else 1 for a in range(x.ndim))
    if gamma is not None:
        out = out * np.reshape(gamma, placed)
    if beta is not None:
        out = out + np.reshape(beta, placed)
    return out


def _channel(v: Any, rank: int) -> np.ndarray:
    return np.asarray(v).reshape((1, -1) + (1,) * (rank - 2))


def _batch_norm(
    x: np.ndarray,
    mean: Any,
    variance: Any,
    gamma: Any = None,
    beta: Any = None,
    epsilon: float = 1e-5,
) -> np.ndarray:
    out = (x - _channel(mean, x.ndim)) / np.sqrt(_channel(variance, x.ndim) + epsilon)
    if gamma is not None:
        out = out * _channel(gamma, x.ndim)
    if beta is not None:
        out = out + _channel(beta, x.ndim)
    return out


def _instance_norm(
    x: np.ndarray, gamma: Any = None, beta: Any = None, epsilon: float = 1e-5
) -> np.ndarray:
    axes = tuple(range(2, x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + epsilon)
    if gamma is not None:
        out = out * _channel(gamma, x.ndim)
    if beta is not None:
        out = out + _channel(beta, x.ndim)
    return out


def _gather(
    x: np.ndarray,
    indices: np.ndarray,
    axis: int = 0,
    batch_dims: int = 0,
    validate_indices: bool = False,
) -> np.ndarray:
    if batch_dims:
        raise NotImplementedError("gather with batch_dims > 0 is not supported.")
    idx = np.asarray(indices).astype(np.int64)
    return np.take(x, np.where(idx < 0, idx + x.shape[int(axis)], idx), axis=int(axis))


def _gather_nd(
    x: np.ndarray, indices: np.ndarray, batch_dims: int = 0, validate_indices: bool = False
) -> np.ndarray:
    if batch_dims:
        raise NotImplementedError("gather_nd with batch_dims > 0 is not supported.")
    idx = np.asarray(indices).astype(np.int64)
    return x[tuple(np.moveaxis(idx, -1, 0))]


def _pixel_shuffle(x: np.ndarray, upscale_factor: int) -> np.ndarray:
    n, c, h, w = x.shape
    f = int(upscale_factor)
    out = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    return out.reshape(n, c // (f * f), h * f, w * f)


def _conv_op(
    x: np.ndarray,
    weight: np.ndarray,
    bias: Any = None,
    strides: Any = None,
    pad_type: Any = "valid",
    pad: Any = None,
    dilations: Any = None,
    groups: Any = 1,
) -> np.ndarray:
    ones = [1] * (x.ndim - 2)
    return conv_nchw(
        _f32(x),
        _f32(weight),
        None if bias is None else _f32(bias),
        ones if strides is None else strides,
        str(pad_type),
        pad,
        ones if dilations is None else dilations,
        int(groups),
    )


def _conv_transpose_op(
    x: np.ndarray,
    weight: np.ndarray,
    bias: Any = None,
    pad: Any = None,
    output_shape: Any = None,
    pad_type: Any = "valid",
    strides: Any = None,
    dilations: Any = None,
    groups: Any = 1,
) -> np.ndarray:
    ones = [1] * (x.ndim - 2)
    return conv_transpose_nchw(
        _f32(x),
        _f32(weight),
        None if bias is None else _f32(bias),
        ones if strides is None else strides,
        str(pad_type),
        pad,
        ones if dilations is None else dilations,
        int(groups),
        output_shape,
    )


def _max_pool_op(
    x: np.ndarray,
    kernel_sizes: Any,
    strides: Any,
    pad_type: Any,
    pad: Any = None,
    ceil_mode: Any = False,
) -> np.ndarray:
    return pool_nchw(_f32(x), "max", kernel_sizes, strides, str(pad_type), pad, bool(ceil_mode))


def _avg_pool_op(
    x: np.ndarray,
    kernel_sizes: Any,
    strides: Any,
    pad_type: Any,
    pad: Any = None,
    exclude_padding_from_average: Any = False,
    ceil_mode: Any = False,
) -> np.ndarray:
    return pool_nchw(
        _f32(x),
        "avg",
        kernel_sizes,
        strides,
        str(pad_type),
        pad,
        bool(ceil_mode),
        bool(exclude_padding_from_average),
    )


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda x: fn(_f32(x))


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda x, y: fn(_f32(x), _f32(y))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _cast(x: np.ndarray, dtype: str) -> np.ndarray:
    target = _CAST_DTYPES[str(dtype)]
    if np.issubdtype(target, np.integer) and np.issubdtype(np.asarray(x).dtype, np.floating):
        x = np.trunc(x)
    return np.asarray(x).astype(target)


def _real_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if np.issubdtype(np.asarray(x).dtype, np.integer) and np.issubdtype(
        np.asarray(y).dtype, np.integer
    ):
        return np.floor_divide(x, y)
    return _f32(x) / _f32(y)


def _cumsum(x: np.ndarray, axis: int = 0, exclusive: bool = False, reverse: bool = False) -> Any:
    axis = int(axis)
    x = np.flip(x, axis) if reverse else x
    out = np.cumsum(_f32(x), axis=axis)
    if exclusive:
        out = out - _f32(x)
    return np.flip(out, axis) if reverse else out


def _argsort(x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    # Stable, like MLX's sort; descending keeps equal elements in order too.
    order = np.argsort(x if ascending else -np.asarray(x), axis=axis, kind="stable")
    return order.astype(np.int32)


_OPS: dict[str, Callable[..., Any]] = {
    # elementwise binary
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _real_div,
    "floor_div": _binary(np.floor_divide),
    "mod": _binary(np.mod),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "logical_and": lambda x, y: np.logical_and(x, y),
    "logical_or": lambda x, y: np.logical_or(x, y),
    "logical_xor": lambda x, y: np.logical_xor(x, y),
    "logical_not": lambda x: np.logical_not(x),
    # elementwise unary
    "abs": _unary(np.abs),
    "ceil": _unary(np.ceil),
    "floor": _unary(np.floor),
    "round": _unary(np.round),
    "sign": _unary(np.sign),
    "sqrt": _unary(np.sqrt),
    "rsqrt": lambda x, epsilon=1e-12: 1.0 / np.sqrt(_f32(x) + epsilon),
    "inverse": lambda x, epsilon=1e-4: 1.0 / (_f32(x) + epsilon),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "log": lambda x, epsilon=1e-45: np.log(_f32(x) + epsilon),
    "erf": _unary(lambda x: prim.UNARY["Erf"](x, [])),
    "sin": _unary(np.sin),
    "cos": _unary(np.cos),
    "tan": _unary(np.tan),
    "tanh": _unary(np.tanh),
    "atan": _unary(np.arctan),
    "asin": _unary(np.arcsin),
    "acos": _unary(np.arccos),
    "reverse": lambda x, axes=None: np.flip(x, axis=_axes(axes, np.ndim(x))),
    "cumsum": _cumsum,
    "argsort": lambda x, axis=-1, ascending=False: _argsort(x, int(axis), bool(ascending)),
    "sinh": _unary(np.sinh),
    "cosh": _unary(np.cosh),
    "square": _unary(np.square),
    "clip": lambda x, alpha, beta: np.clip(_f32(x), alpha, beta),
    "threshold": lambda x, alpha: np.maximum(_f32(x), alpha),
    "cast": _cast,
    "identity": lambda x: x,
    # activations
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "sigmoid": _unary(_sigmoid),
    "sigmoid_hard": lambda x, alpha=0.2, beta=0.5: np.clip(alpha * _f32(x) + beta, 0.0, 1.0),
    "silu": _unary(lambda x: x * _sigmoid(x)),
    "softplus": _unary(lambda x: np.logaddexp(x, 0.0)),
    "softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "gelu": lambda x, mode="EXACT": _gelu(_f32(x), str(mode)),
    "leaky_relu": lambda x, alpha=0.01: np.where(_f32(x) >= 0, _f32(x), alpha * _f32(x)),
    "elu": lambda x, alpha=1.0: np.where(_f32(x) > 0, _f32(x), alpha * np.expm1(_f32(x))),
    "prelu": lambda x, alpha: np.where(_f32(x) >= 0, _f32(x), _channel(alpha, x.ndim) * _f32(x)),
    "clamped_relu": lambda x, alpha=0.0, beta=6.0: np.minimum(
        np.where(_f32(x) >= 0, _f32(x), alpha * _f32(x)), beta
    ),
    "linear_activation": lambda x, alpha=1.0, beta=0.0: alpha * _f32(x) + beta,
    "scaled_tanh": lambda x, alpha=1.0, beta=1.0: alpha * np.tanh(beta * _f32(x)),
    "softmax": lambda x, axis=-1: _softmax(_f32(x), int(axis)),
    # linear algebra
    "linear": lambda x, weight, bias=None: (
        _f32(x) @ _f32(weight).T + (0.0 if bias is None else _f32(bias))
    ),
    "matmul": lambda x, y, transpose_x=False, transpose_y=False: np.matmul(
        np.swapaxes(_f32(x), -1, -2) if transpose_x else _f32(x),
        np.swapaxes(_f32(y), -1, -2) if transpose_y else _f32(y),
    ),
    "conv": _conv_op,
    "conv_transpose": _conv_transpose_op,
    # pooling and resampling
    "max_pool": _max_pool_op,
    "avg_pool": _avg_pool_op,
    "upsample_bilinear": _upsample_bilinear,
    "upsample_nearest_neighbor": lambda x, scale_factor_height=1, scale_factor_width=1: (
        upsample_nearest_nchw(_f32(x), float(scale_factor_height), float(scale_factor_width))
    ),
    # reductions
    "reduce_sum": _reduce(np.sum),
    "reduce_mean": _reduce(np.mean),
    "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "reduce_prod": _reduce(np.prod),
    "reduce_log_sum_exp": _reduce(_log_sum_exp),
    "reduce_sum_square": _reduce(
        lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims)
    ),
    "reduce_argmax": lambda x, axis=-1, keep_dims=False: np.argmax(
        x, axis=int(axis), keepdims=bool(keep_dims)
    ).astype(np.int32),
    "reduce_argmin": lambda x, axis=-1, keep_dims=False: np.argmin(
        x, axis=int(axis), keepdims=bool(keep_dims)
    ).astype(np.int32),
    # shapes and data movement
    "reshape": lambda x, shape: np.reshape(x, [int(s) for s in shape]),
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "squeeze": lambda x, axes=None: np.squeeze(x, axis=_axes(axes, x.ndim)),
    "expand_dims": lambda x, axes: np.expand_dims(
        x, axis=tuple(int(a) % (x.ndim + len(np.atleast_1d(axes))) for a in np.atleast_1d(axes))
    ),
    "concat": lambda values, axis, interleave=False: np.concatenate(values, axis=int(axis)),
    "stack": lambda values, axis: np.stack(values, axis=int(axis)),
    "split": _split,
    "slice_by_index": _slice_by_index,
    "slice_by_size": lambda x, begin, size: x[
        tuple(slice(int(b), None if int(s) == -1 else int(b) + int(s)) for b, s in zip(begin, size))
    ],
    "pad": lambda x, pad, mode="constant", constant_val=0.0: _pad(x, pad, str(mode), constant_val),
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]),
    "gather": _gather,
    "gather_nd": _gather_nd,
    "gather_along_axis": lambda x, indices, axis=0, validate_indices=False: np.take_along_axis(
        x, np.asarray(indices).astype(np.int64), axis=int(axis)
    ),
    "select": lambda cond, a, b: np.where(cond, a, b),
    "fill": lambda shape, value=0.0: np.full([int(s) for s in shape], value),
    "pixel_shuffle": _pixel_shuffle,
    # normalization
    "batch_norm": lambda x, mean, variance, gamma=None, beta=None, epsilon=1e-5: _batch_norm(
        _f32(x), mean, variance, gamma, beta, float(epsilon)
    ),
    "layer_norm": lambda x, axes=None, gamma=None, beta=None, epsilon=1e-5: _layer_norm(
        _f32(x),
        axes,
        None if gamma is None else _f32(gamma),
        None if beta is None else _f32(beta),
        float(epsilon),
    ),
    "instance_norm": lambda x, gamma=None, beta=None, epsilon=1e-5: _instance_norm(
        _f32(x), gamma, beta, float(epsilon)
    ),
}

_OPS.update(quantized.NUMPY_OPS)

SUPPORTED_OPS = frozenset(_OPS) | {"const", "classify"}


# --------------------------------------------------------------------------------------------
# Execution


def _prepare_input(feature: FeatureSpec, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if feature.kind == "image":
        _, channels, height, width = feature.shape
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim == 2:
            array = array[..., None]
        if array.shape != (height, width, channels):
            raise ValueError(
                f"Image input {feature.name!r} expects an array of shape ({height}, {width}, "
                f"{channels}) (height, width, channels; RGB order, 0-255 like a camera frame). "
                f"Received: shape={array.shape}."
            )
        if feature.color_space == "BGR":
            array = array[..., ::-1]
        return np.ascontiguousarray(array.transpose(2, 0, 1)[None]).astype(np.float32)
    if feature.ranges is not None:
        fits = len(array.shape) == len(feature.ranges) and all(
            low <= size <= (high if high > 0 else size)
            for size, (low, high) in zip(array.shape, feature.ranges)
        )
        if not fits:
            raise ValueError(
                f"Input {feature.name!r} accepts shapes within {list(feature.ranges)} (low, "
                f"high per axis). Received: shape={array.shape}."
            )
    elif feature.enumerated is not None:
        if tuple(array.shape) not in feature.enumerated:
            raise ValueError(
                f"Input {feature.name!r} accepts the shapes {list(feature.enumerated)}. "
                f"Received: shape={array.shape}."
            )
    elif tuple(array.shape) != tuple(feature.shape):
        raise ValueError(
            f"Input {feature.name!r} expects shape {tuple(feature.shape)}. "
            f"Received: shape={array.shape}."
        )
    return array.astype(feature.dtype)


def run_program(
    program: LoadedProgram,
    inputs: Mapping[str, Any] | Sequence[Any] | Any,
    state: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Executes a loaded program; see `run_mlpackage_numpy`."""
    state_names = [f.name for f in program.states]
    if state_names and (state is None or sorted(state) != sorted(state_names)):
        raise ValueError(
            f"The model has states {state_names}: pass `state=new_state(path)` and reuse it "
            f"across predictions. Received: state keys {None if state is None else list(state)}."
        )
    names = [f.name for f in program.inputs]
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        unknown = [k for k in inputs if k not in names]
        if missing or unknown:
            raise KeyError(
                f"The model's inputs are {names}. Missing: {missing}; unexpected: {unknown}."
            )
        values = dict(inputs)
    else:
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(items) != len(names):
            raise ValueError(
                f"The model has {len(names)} inputs {names}; received {len(items)} arrays."
            )
        values = dict(zip(names, items))
    env: dict[str, Any] = {f.name: _prepare_input(f, values[f.name]) for f in program.inputs}
    results: dict[str, Any] = {}
    for op in program.operations:
        if op.type == "const":
            env[op.outputs[0][0]] = op.attributes["val"]
            continue
        if op.type in _STATE_OPS:
            assert state is not None  # checked above: a program with state ops declares states
            _run_state_op(op, env, state)
            continue
        kwargs: dict[str, Any] = {}
        for param, bindings in op.inputs.items():
            resolved = [env[ref] if kind == "name" else ref for kind, ref in bindings]
            kwargs[param] = resolved[0] if len(resolved) == 1 and param != "values" else resolved
        if op.type == "classify":
            probabilities = np.asarray(kwargs["probabilities"], dtype=np.float64).reshape(-1)
            classes = kwargs["classes"]
            labels = [c.item() if isinstance(c, np.ndarray) else c for c in classes]
            labels = [str(c) if isinstance(c, (str, np.str_)) else int(c) for c in labels]
            env[op.outputs[0][0]] = labels[int(np.argmax(probabilities))]
            env[op.outputs[1][0]] = dict(zip(labels, probabilities.tolist()))
            continue
        fn = _OPS.get(op.type)
        if fn is None:
            raise NotImplementedError(
                f"The NumPy interpreter has no rule for MIL op {op.type!r}. "
                f"Supported ops: {sorted(SUPPORTED_OPS)}."
            )
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            out = fn(**kwargs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        for (name, spec), value in zip(op.outputs, outs):
            value = np.asarray(value)
            if spec.dtype is not None and spec.dtype is not object:
                value = value.astype(spec.dtype)
            if spec.shape is not None and (
                value.ndim != len(spec.shape)
                or any(d is not None and d != v for d, v in zip(spec.shape, value.shape))
            ):
                raise ValueError(
                    f"MIL op {op.type!r} produced shape {value.shape} for {name!r}; the program "
                    f"declares {spec.shape}. This is a bug in the interpreter or the program."
                )
            env[name] = value
    for feature, name in zip(program.outputs, program.block_outputs):
        results[feature.name] = env[name]
    return results


_STATE_OPS = ("read_state", "write_state", "coreml_update_state")


def _run_state_op(op: Operation, env: dict[str, Any], state: dict[str, np.ndarray]) -> None:
    """MIL's state ops over `state` (updated in place, like Core ML's MLState)."""
    if op.type == "read_state":
        name = op.inputs["input"][0][1]
        env[op.outputs[0][0]] = np.array(state[name], dtype=np.float16)
        return
    # Saved programs hold `write_state(input=, data=)`; `coreml_update_state` is the builder's.
    name = op.inputs["input" if "input" in op.inputs else "state"][0][1]
    kind, ref = op.inputs["data" if "data" in op.inputs else "value"][0]
    value = np.asarray(env[ref] if kind == "name" else ref)
    if value.shape != state[name].shape:
        raise ValueError(
            f"State {name!r} has shape {state[name].shape}; the program wrote {value.shape}."
        )
    state[name][...] = value.astype(np.float16)
    if op.outputs:
        env[op.outputs[0][0]] = state[name].copy()


def new_state(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Fresh (zero) states for a stateful `.mlpackage`, as Core ML's `model.makeState()`.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.export import new_state, run_mlpackage_numpy, to_coreml
        >>> def count(x, total):
        ...     new = (total.astype(mx.float32) + x).astype(mx.float16)
        ...     return new.astype(mx.float32), new
        >>> _ = to_coreml(count, (mx.ones((2,)), mx.zeros((2,), mx.float16)), "c.mlpackage",
        ...     input_names=["x", "total"], output_names=["y", "new_total"],
        ...     states={"total": "new_total"}, compute_precision="float32")
        >>> state = new_state("c.mlpackage")
        >>> for _ in range(3):
        ...     y = run_mlpackage_numpy("c.mlpackage", [[1.0, 2.0]], state=state)["y"]
        >>> y.tolist()
        [3.0, 6.0]
    """
    program = load_mlpackage(path)
    return {f.name: np.zeros(f.shape, dtype=np.float16) for f in program.states}


def run_mlpackage_numpy(
    path: str | os.PathLike[str],
    inputs: Mapping[str, Any] | Sequence[Any] | Any,
    *,
    state: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Runs a saved `.mlpackage` in NumPy and returns its outputs by name.

    Works on any platform: it reads the package from disk and interprets its ML Program. Use it
    to check an export on Linux, where Core ML itself is unavailable.

    Args:
        path: The `.mlpackage` directory.
        inputs: A dict from input name to array, or the arrays in input order (a single array for
            a one-input model). An image input takes an `(height, width, channels)` array with
            RGB pixel values as a camera frame would provide them (0-255).
        state: For a stateful model, the dict from `new_state(path)`; each prediction reads
            and updates it in place (Core ML's `MLState`).

    Returns:
        A dict from output name to NumPy array (classifiers also give the label and a dict of
        class probabilities).

    Example:
        >>> import mlx.core as mx, mlx.nn as nn, numpy as np
        >>> from mlxkit.export import run_mlpackage_numpy, to_coreml
        >>> model = nn.Linear(4, 2)
        >>> _ = to_coreml(model, mx.zeros((1, 4)), "model.mlpackage", compute_precision="float32")
        >>> x = np.ones((1, 4), np.float32)
        >>> outputs = run_mlpackage_numpy("model.mlpackage", x)
        >>> np.allclose(outputs["output"], np.array(model(mx.array(x))), atol=1e-5)
        True
    """
    return run_program(load_mlpackage(path), inputs, state)
