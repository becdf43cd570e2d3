"""Shared helpers for the export tests: tolerances, seeded models, the macOS runtime."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

# Non-trivial BatchNorm statistics, so that folding them is actually tested: the one copy is the
# export benchmark's, which needs them too.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
from bench_export import trained_like

FP32_TOLERANCE = 1e-4  # max |error| / max |reference|
FP16_TOLERANCE = 1e-2  # float16 storage: ~3 significant digits after dozens of layers

darwin_only = pytest.mark.skipif(
    sys.platform != "darwin", reason="Core ML's runtime (MLModel.predict) exists only on macOS"
)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want))), 1e-6)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) / scale)


def as_tuple(result: Any) -> tuple[mx.array, ...]:
    return tuple(result) if isinstance(result, (list, tuple)) else (result,)


def seeded(make: Callable[[], nn.Module]) -> nn.Module:
    mx.random.seed(0)
    model = trained_like(make())
    model.eval()
    mx.eval(model.parameters())
    return model


def function_of(module: nn.Module) -> Callable[..., mx.array]:
    module.eval()
    mx.eval(module.parameters())
    return module


def make_inputs(shapes: list[tuple[int, ...]], seed: int) -> list[mx.array]:
    rng = np.random.default_rng(seed)
    return [mx.array(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def prepare(factory: Callable[[], Any]) -> Callable[..., Any]:
    made = factory()
    return function_of(made) if isinstance(made, nn.Module) else made


def leftovers(directory: Any) -> list[str]:
    return sorted(os.listdir(directory))


def predict(path: str, inputs: list[mx.array]) -> dict[str, np.ndarray]:
    """Runs a package with Core ML itself (macOS only)."""
    import coremltools as ct

    model = ct.models.MLModel(path, compute_units=ct.ComputeUnit.CPU_ONLY)
    names = [i.name for i in model.get_spec().description.input]
    return model.predict({n: np.array(x) for n, x in zip(names, inputs, strict=True)})
