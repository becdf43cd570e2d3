"""Smoke test of examples/llm_to_coreml.py: train, quantize, export with state, generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_llm_to_coreml_quick(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    output = tmp_path / "tiny_llama.mlpackage"
    script = str(ROOT / "examples" / "llm_to_coreml.py")
    result = subprocess.run(
        [sys.executable, script, "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "token for token equal" in result.stdout
    assert "constexpr_blockwise_shift_scale" in result.stdout
    assert "axis 1: 1..128" in result.stdout
    assert output.is_dir()
