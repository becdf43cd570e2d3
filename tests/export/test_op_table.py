"""The op table is the one source of truth: it decides what is supported and how it lowers, and
the Core ML guide's tables are generated from it."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from mlxkit.export import UnsupportedOperationError, run_mlpackage_numpy, to_coreml
from mlxkit.export._lower import OPS, Lowerer

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("coremltools")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_entry_lowers_with_a_lowerer_method() -> None:
    for name, rule in OPS.items():
        method = getattr(rule.build, "func", rule.build)
        assert getattr(Lowerer, method.__name__) is method, name
        assert rule.mlx and rule.mil, name


def test_removing_an_entry_makes_the_primitive_unsupported(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = mx.array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    path = str(tmp_path / "sin.mlpackage")
    to_coreml(mx.sin, x, path, compute_precision="float32")
    np.testing.assert_allclose(
        run_mlpackage_numpy(path, np.array(x))["output"], np.sin(np.array(x)), rtol=1e-6
    )
    monkeypatch.delitem(OPS, "Sin")
    with pytest.raises(UnsupportedOperationError, match="Sin"):
        to_coreml(mx.sin, x, str(tmp_path / "gone.mlpackage"))


def test_guide_tables_match_the_op_table() -> None:
    script = os.path.join(ROOT, "docs", "scripts", "coreml_tables.py")
    spec = importlib.util.spec_from_file_location("coreml_tables", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(module.GUIDE, encoding="utf-8") as file:
        text = file.read()
    assert module.render(text) == text, "run `python docs/scripts/coreml_tables.py`"
    for name in OPS:
        assert f"`{name}`" in text
