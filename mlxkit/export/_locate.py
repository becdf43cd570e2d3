"""Where a primitive came from: the submodule path and the source line, for error messages.

A trace only records primitives, so when some cannot be exported this module runs the model once
more to find them: each submodule call is recorded and traced on its own (the deepest module whose
trace holds the primitive is its home, e.g. `encoder.layers.3.attn`), and the `mlx.core`
functions that create such primitives are wrapped for the run to note the line of user code that
called them (e.g. `model.py:42`). This runs only on the error path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import FrameType, ModuleType
from typing import Any

from mlxkit.export._trace import trace

import mlx.core as mx
import mlx.nn as nn

# MLX primitives and the `mlx.core` functions that create them, where the names differ.
_CREATORS: dict[str, tuple[str, ...]] = {
    "Scan": ("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"),
    "Sort": ("sort",),
    "ArgSort": ("argsort",),
    "Partition": ("partition", "topk"),
    "ArgPartition": ("argpartition",),
    "RandomBits": ("normal", "uniform", "randint", "bernoulli", "bits", "categorical"),
    "ErfInv": ("erfinv", "normal", "truncated_normal"),
    "SliceUpdate": ("pad", "slice_update"),
    "Scatter": ("scatter", "scatter_add"),
    "QuantizedMatmul": ("quantized_matmul",),
    "ArcSin": ("arcsin",),
    "ArcCos": ("arccos",),
    "FFT": ("fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "fftn", "ifftn", "rfftn"),
}
# The primitives that sampling random numbers traces to.
RANDOM_PRIMITIVES = ("RandomBits", "ErfInv")
_MLX_DIR = os.path.dirname(os.path.abspath(mx.__file__)) + os.sep
_EXPORT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass
class Locations:
    """What the second run found: module paths and source lines per primitive."""

    modules: dict[str, str] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)
    sampled_randomly: bool = False

    def describe(self, primitive: str) -> str:
        """`in encoder.layers.3 (model.py:42)`-style text, or "" when nothing was found."""
        parts = []
        if primitive in self.modules:
            parts.append(f"in `{self.modules[primitive]}`")
        if primitive in self.lines:
            parts.append(f"at {self.lines[primitive]}")
        return " ".join(parts)


def locate(
    model: nn.Module | Callable[..., Any], inputs: Sequence[mx.array], primitives: set[str]
) -> Locations:
    """Runs `model(*inputs)` again to find where each primitive in `primitives` comes from."""
    found = Locations()
    calls = _record_calls(model, inputs, found, primitives)
    # Deepest modules first, so the most specific path wins.
    for path, module, args, kwargs in sorted(calls, key=lambda c: -c[0].count(".")):
        missing = primitives - set(found.modules)
        if not missing:
            break
        try:
            graph = trace(partial(module, **kwargs), args)
        except Exception:  # a submodule that cannot be traced alone is skipped
            continue
        for node in graph.nodes:
            if node.op in missing:
                found.modules[node.op] = path or type(module).__name__
    return found


def _record_calls(
    model: nn.Module | Callable[..., Any],
    inputs: Sequence[mx.array],
    found: Locations,
    primitives: set[str],
) -> list[tuple[str, Any, tuple[mx.array, ...], dict[str, Any]]]:
    calls: list[tuple[str, Any, tuple[mx.array, ...], dict[str, Any]]] = []
    swapped: list[tuple[nn.Module, type]] = []
    if isinstance(model, nn.Module):
        for path, module in model.named_modules():
            original = type(module)

            def call(
                self: Any, *args: Any, _path: str = path, _cls: type = original, **kwargs: Any
            ) -> Any:
                if args and all(isinstance(a, mx.array) for a in args):
                    calls.append((_path, self, args, kwargs))
                return _cls.__call__(self, *args, **kwargs)

            recording = type(original.__name__, (original,), {"__call__": call})
            module.__class__ = recording
            swapped.append((module, original))
    wanted = {name for p in primitives for name in _CREATORS.get(p, (p.lower(),))}
    seen: dict[str, str] = {}
    patched: list[tuple[Any, str, Any]] = []
    # nanobind functions raise no profiler events, so the creators are wrapped for this run.
    for namespace in (mx, mx.random, mx.fft, mx.linalg):
        for name in wanted | set(_CREATORS["RandomBits"]):
            original_fn = getattr(namespace, name, None)
            if callable(original_fn) and not isinstance(original_fn, ModuleType):
                patched.append((namespace, name, original_fn))
                setattr(namespace, name, _watch(original_fn, namespace is mx.random, seen, found))
    try:
        mx.eval(model(*inputs))
    except Exception:  # locating is best effort; the export error still stands
        pass
    finally:
        for namespace, name, original_fn in patched:
            setattr(namespace, name, original_fn)
        for module, original in swapped:
            module.__class__ = original
    for primitive in primitives:
        for name in _CREATORS.get(primitive, (primitive.lower(),)):
            if name in seen:
                found.lines[primitive] = seen[name]
                break
    return calls


def _watch(
    fn: Callable[..., Any], random: bool, seen: dict[str, str], found: Locations
) -> Callable[..., Any]:
    """Wraps an `mlx.core` function to note the first line of user code that calls it."""
    name = fn.__name__

    def watched(*args: Any, **kwargs: Any) -> Any:
        if random:
            found.sampled_randomly = True
        frame: FrameType | None = sys._getframe(1)
        # MLX's own layers and this module's call recorder are not the user's code; when only
        # the exporter is left (a model made of MLX layers alone), there is no line to name.
        while frame is not None and (
            frame.f_code.co_filename.startswith(_MLX_DIR) or frame.f_code.co_filename == __file__
        ):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename.startswith(_EXPORT_DIR):
            frame = None
        if frame is not None and name not in seen:
            seen[name] = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        return fn(*args, **kwargs)

    return watched
