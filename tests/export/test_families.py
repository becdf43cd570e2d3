"""Model families MLX users train, at tiny sizes (`families.py`): each exported in float32 and
float16 and run by the package's NumPy interpreter against MLX, with the saved package's
declared output shapes read back."""

from __future__ import annotations

from typing import Any

from mlxkit.export import run_mlpackage_numpy, to_coreml

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from tests.export.families import FAMILIES
from tests.export.helpers import as_tuple
from tests.export.test_wrong_packages import declared_output_shapes

pytest.importorskip("coremltools")

FAMILY_FP32_TOLERANCE = 1e-5  # max |error| / max |reference|
FAMILY_FP16_TOLERANCE = 1e-2


def _model(name: str) -> nn.Module:
    mx.random.seed(0)
    model = FAMILIES[name][0]()
    model.eval()
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_matches_mlx(tmp_path: Any, name: str, precision: str) -> None:
    model = _model(name)
    inputs = FAMILIES[name][1]()
    path = str(tmp_path / f"{name}.mlpackage")
    to_coreml(model, inputs, path, compute_precision=precision)
    want = [np.array(w, dtype=np.float64) for w in as_tuple(model(*inputs))]
    assert declared_output_shapes(path) == [w.shape for w in want]
    got = list(run_mlpackage_numpy(path, [np.array(x) for x in inputs]).values())
    tolerance = FAMILY_FP32_TOLERANCE if precision == "float32" else FAMILY_FP16_TOLERANCE
    for value, reference in zip(got, want, strict=True):
        scale = np.max(np.abs(reference))
        assert np.max(np.abs(value - reference)) / scale < tolerance


def test_llama_with_a_large_activation_keeps_its_predictions_in_float16(tmp_path: Any) -> None:
    # LLM activations pass float16's square-root range (~256): one embedding value of 300 used
    # to zero RMSNorm's output from that token on.
    model = _model("llama_gqa_rope")
    ids = mx.array(np.arange(1, 17, dtype=np.int32).reshape(1, 16))
    weight = np.array(model.embedding.weight)
    weight[5, 3] = 300.0
    model.embedding.weight = mx.array(weight)
    path = str(tmp_path / "llama.mlpackage")
    result = to_coreml(model, ids, path, compute_precision="float16")
    assert result.report.float32_ops["square"] == 5  # 2 norms per layer and the final one
    got = run_mlpackage_numpy(path, np.array(ids))["output"]
    want = np.array(model(ids))
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < FAMILY_FP16_TOLERANCE
