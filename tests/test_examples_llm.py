"""Smoke test of examples/llm_to_coreml.py: train, quantize, export with state, generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples_common import ROOT, run_example


@pytest.mark.slow
def test_llm_to_coreml_quick(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    output = tmp_path / "tiny_llama.mlpackage"
    script = ROOT / "examples" / "llm_to_coreml.py"
    stdout = run_example(script, "--quick", "--output", str(output), cwd=tmp_path)
    assert "token for token equal" in stdout
    assert "constexpr_blockwise_shift_scale" in stdout
    assert "axis 1: 1..128" in stdout
    assert output.is_dir()
