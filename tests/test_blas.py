"""The Linux fast-BLAS loader and `mlxkit doctor`, in fresh processes (the swap is at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlxkit
from mlxkit import _blas

import numpy as np
import pytest

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux BLAS swap")

# MLX's matmul against references that need no BLAS: integer-valued float32 inputs, whose products
# and partial sums are all integers below 2**24 and so exact in float32, must match an int64
# product bit for bit; random normal inputs must stay within the classic float32 accumulation
# bound |c - ab| <= k * eps32 * (|a| @ |b|) of a float64 product from `np.einsum` (NumPy's C
# einsum loops, not BLAS).
PROBE = """
import json
import mlxkit
import mlxkit
from mlxkit import _blas
import mlx.core as mx, numpy as np
rng = np.random.default_rng(0)
m, k, n = 64, 784, 64
ia, ib = rng.integers(-8, 9, (m, k)), rng.integers(-8, 9, (k, n))
exact = np.array(mx.array(ia.astype(np.float32)) @ mx.array(ib.astype(np.float32)))
a = rng.standard_normal((m, k)).astype(np.float32)
b = rng.standard_normal((k, n)).astype(np.float32)
c = np.array(mx.array(a) @ mx.array(b)).astype(np.float64)
a64, b64 = a.astype(np.float64), b.astype(np.float64)
reference = np.einsum("ik,kj->ij", a64, b64)
bound = k * np.finfo(np.float32).eps * np.einsum("ik,kj->ij", np.abs(a64), np.abs(b64))
print(json.dumps({"library": _blas.status.library, "source": _blas.status.source,
                  "integers_exact": bool(np.array_equal(exact, ia @ ib)),
                  "error_over_bound": float((np.abs(c - reference) / bound).max())}))
"""


def probe(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_matmul_is_right(probed: dict) -> None:
    assert probed["integers_exact"], probed
    # The bound holds for any summation order and is about 0.05 here, so a wrong kernel (one
    # dropped term is of order 1) fails it.
    assert probed["error_over_bound"] <= 1, probed


@linux_only
def test_an_optimized_blas_is_loaded_and_matmuls_match_blas_free_references():
    loaded = probe()
    assert loaded["library"] is not None, loaded
    assert_matmul_is_right(loaded)


@linux_only
def test_mlxkit_blas_off_keeps_the_reference_blas():
    reference = probe(MLXKIT_BLAS="off")
    assert reference["library"] is None and "MLXKIT_BLAS=off" in reference["source"]
    assert_matmul_is_right(reference)


def test_local_ranks_counts_ranks_on_this_host(tmp_path, monkeypatch):
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([["127.0.0.1:5000"], ["127.0.0.1:5001"], ["10.0.0.2:5000"]]))
    monkeypatch.setenv("MLX_HOSTFILE", str(hostfile))
    monkeypatch.setenv("MLX_RANK", "1")
    assert _blas.local_ranks() == 2
    monkeypatch.setenv("MLX_RANK", "2")
    assert _blas.local_ranks() == 1
    monkeypatch.delenv("MLX_HOSTFILE")
    assert _blas.local_ranks() == 1


@linux_only
def test_shim_forwards_cblas_sgemm(tmp_path, monkeypatch):
    """The compiled shim exports the standard name and computes what NumPy computes."""
    import ctypes

    numpy_blas = _blas._numpy_openblas()
    if numpy_blas is None:
        pytest.skip("this NumPy wheel bundles no scipy_openblas64")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ctypes.CDLL(numpy_blas, mode=ctypes.RTLD_GLOBAL)
    shim = ctypes.CDLL(_blas.build_shim(numpy_blas))
    m, n, k = 3, 4, 5
    a = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
    c = np.zeros((m, n), np.float32)
    pointer = ctypes.POINTER(ctypes.c_float)
    row_major, no_trans = 101, 111
    shim.cblas_sgemm(
        row_major,
        no_trans,
        no_trans,
        m,
        n,
        k,
        ctypes.c_float(1.0),
        a.ctypes.data_as(pointer),
        k,
        b.ctypes.data_as(pointer),
        n,
        ctypes.c_float(0.0),
        c.ctypes.data_as(pointer),
        n,
    )
    # Against float64 einsum (no BLAS), within the float32 accumulation bound k * eps32 * |a||b|.
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    bound = k * np.finfo(np.float32).eps * np.einsum("ik,kj->ij", np.abs(a64), np.abs(b64))
    assert np.all(np.abs(c - np.einsum("ik,kj->ij", a64, b64)) <= bound)


def doctor(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlxkit.cli", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_doctor_reports_versions_and_blas():
    # On Linux a fast BLAS loads (test above), and on macOS MLX uses Accelerate: nothing to advise.
    result = doctor()
    assert "mlxkit " in result.stdout and "blas " in result.stdout and "matmul " in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "advice" not in result.stdout


@linux_only
def test_doctor_exits_1_with_advice_on_the_reference_blas():
    result = doctor(MLXKIT_BLAS="off")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "advice" in result.stdout and "MLXKIT_BLAS" in result.stdout


def test_version_flag_prints_the_version():
    result = subprocess.run(
        [sys.executable, "-m", "mlxkit.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mlxkit {mlxkit.__version__}\n"


@linux_only
def test_importing_mlx_first_is_named_as_the_cause_with_its_fix():
    script = "import mlx.core\nimport mlxkit\nfrom mlxkit import _blas\n_blas.advise_once()\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "mlx was imported before mlxkit" in result.stderr
    assert "Fix: import mlxkit before mlx" in result.stderr
    assert "C compiler" not in result.stderr  # the compiler is not the problem here


def test_advice_follows_the_cause(monkeypatch):
    monkeypatch.setattr(_blas, "status", _blas.BlasStatus(attempts=["cmeel-openblas: not found"]))
    assert "cmeel-openblas: not found" in _blas.advice() and "C compiler" not in _blas.advice()
    no_compiler = "NumPy's OpenBLAS through a compiled cblas shim: no C compiler found (looked...)"
    monkeypatch.setattr(_blas, "status", _blas.BlasStatus(attempts=[no_compiler]))
    assert "install a C compiler" in _blas.advice()
