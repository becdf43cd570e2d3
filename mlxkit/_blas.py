"""Optimized BLAS for MLX's Linux CPU wheel.

MLX's Linux wheel links the netlib reference BLAS, which makes every matmul 10-20x slower than
it need be. `mlx.core` resolves `cblas_sgemm` when it is loaded, so a library loaded earlier with
`RTLD_GLOBAL` takes its place. `load()` runs when `mlxkit` is imported and tries, in order:

1. `MLXKIT_BLAS=/path/to/libopenblas.so` (or `MLXKIT_BLAS=off` to keep the reference BLAS);
2. a system OpenBLAS (Debian/Ubuntu: `apt install libopenblas0-pthread`);
3. `cmeel-openblas` from PyPI, when the system has the `libgfortran.so.5` it needs;
4. the OpenBLAS that NumPy's wheel bundles. Its symbols carry a `scipy_` prefix and 64-bit integers,
   so a 20-line C shim, compiled once with the system C compiler into `~/.cache/mlxkit`, forwards
   the standard `cblas_*gemm` names to it.

With several `mlx.launch` ranks on one host, each rank's OpenBLAS gets an equal share of the cores
(`OPENBLAS_NUM_THREADS`, unless set). Nothing here is fatal: if no BLAS loads, MLX runs as before
and `mlxkit doctor` says how to fix it.
On macOS MLX uses Accelerate and none of this runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from mlxkit._io import atomic_write_file

_SHIM_SOURCE = r"""
#include <stdint.h>
typedef int64_t bi;
extern void scipy_cblas_sgemm64_(int, int, int, bi, bi, bi, float, const float*, bi,
                                 const float*, bi, float, float*, bi);
extern void scipy_cblas_dgemm64_(int, int, int, bi, bi, bi, double, const double*, bi,
                                 const double*, bi, double, double*, bi);
extern void scipy_cblas_cgemm64_(int, int, int, bi, bi, bi, const void*, const void*, bi,
                                 const void*, bi, const void*, void*, bi);
void cblas_sgemm(int o, int ta, int tb, int m, int n, int k, float al, const float *a, int lda,
                 const float *b, int ldb, float be, float *c, int ldc) {
  scipy_cblas_sgemm64_(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc);
}
void cblas_dgemm(int o, int ta, int tb, int m, int n, int k, double al, const double *a, int lda,
                 const double *b, int ldb, double be, double *c, int ldc) {
  scipy_cblas_dgemm64_(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc);
}
void cblas_cgemm(int o, int ta, int tb, int m, int n, int k, const void *al, const void *a, int lda,
                 const void *b, int ldb, const void *be, void *c, int ldc) {
  scipy_cblas_cgemm64_(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc);
}
"""

_SYSTEM_OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

_SLOW = "MLX is using its bundled reference BLAS, which makes matmuls 10-20x slower on Linux."
_IMPORTED_TOO_LATE = "mlx.core was imported before mlxkit: too late to swap the BLAS"
_NO_COMPILER = "no C compiler found"
HINT = (
    f"{_SLOW} Fix: install a C compiler (mlxkit then builds a shim over NumPy's OpenBLAS), or "
    "`apt install libopenblas0-pthread`, or set MLXKIT_BLAS=/path/to/libopenblas.so. "
    "Run `mlxkit doctor` to check."
)


@dataclass
class BlasStatus:
    """What `load()` did: the library in use (`None` for MLX's reference BLAS) and why."""

    library: str | None = None
    source: str = "reference BLAS bundled with MLX"
    attempts: list[str] = field(default_factory=list)


status = BlasStatus()
_loaded = False


def _open(path: str) -> None:
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def _system_openblas() -> str | None:
    for path in _SYSTEM_OPENBLAS:
        if os.path.exists(path):
            return path
    return ctypes.util.find_library("openblas")


def _cmeel_openblas() -> str | None:
    for base in sys.path:
        hits = glob.glob(os.path.join(base, "cmeel.prefix", "lib", "libopenblas.so*"))
        if hits:
            return sorted(hits)[0]
    return None


def _numpy_openblas() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("numpy")
    if spec is None or spec.origin is None:
        return None
    site = os.path.dirname(os.path.dirname(spec.origin))
    hits = glob.glob(os.path.join(site, "numpy.libs", "libscipy_openblas64_*.so"))
    return hits[0] if hits else None


def _cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "mlxkit")


def build_shim(numpy_blas: str) -> str:
    """Compiles (once) the `cblas_*` forwarding shim for NumPy's OpenBLAS and returns its path."""
    key = hashlib.sha256((_SHIM_SOURCE + numpy_blas).encode()).hexdigest()[:16]
    target = os.path.join(_cache_dir(), f"libmlxkit_cblas_{key}.so")
    if os.path.exists(target):
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError(f"{_NO_COMPILER} (looked for $CC, cc, gcc)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(target)) as tmp:
        source = os.path.join(tmp, "shim.c")
        with open(source, "w") as f:
            f.write(_SHIM_SOURCE)

        def build(output: str) -> None:
            subprocess.run(
                [compiler, "-O2", "-shared", "-fPIC", "-o", output, source],
                check=True,
                capture_output=True,
            )

        atomic_write_file(target, build)  # a concurrent import never loads half a file
    return target


def _shim() -> str | None:
    numpy_blas = _numpy_openblas()
    if numpy_blas is None:
        return None
    _open(numpy_blas)
    return build_shim(numpy_blas)


def local_ranks() -> int:
    """How many `mlx.launch` ranks share this host (1 outside `mlx.launch`).

    `mlx.launch` gives each rank `MLX_RANK` and a JSON host file listing every rank's addresses.
    """
    try:
        with open(os.environ["MLX_HOSTFILE"]) as f:
            hosts = [entry[0].rsplit(":", 1)[0] for entry in json.load(f)]
        return hosts.count(hosts[int(os.environ["MLX_RANK"])])
    except (KeyError, OSError, ValueError, TypeError, IndexError):
        return 1


def _share_cores_between_ranks() -> None:
    # OpenBLAS threads spin while they wait. With several ranks on one host, each spawning a thread
    # per core, they fight over the cores: 2 ranks on 2 cores trained the MNIST MLP 10x slower.
    ranks = local_ranks()
    if ranks > 1 and "OPENBLAS_NUM_THREADS" not in os.environ:
        os.environ["OPENBLAS_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))


def load() -> BlasStatus:
    """Loads the first optimized BLAS that works; safe to call more than once."""
    global _loaded
    if _loaded:
        return status
    _loaded = True
    if not sys.platform.startswith("linux"):
        status.source = "platform BLAS (Accelerate on macOS)"
        return status
    _share_cores_between_ranks()
    if "mlx.core" in sys.modules:
        status.attempts.append(_IMPORTED_TOO_LATE)
        return status

    choice = os.environ.get("MLXKIT_BLAS", "").strip()
    if choice.lower() in {"off", "0", "none", "reference"}:
        status.source = "reference BLAS (MLXKIT_BLAS=off)"
        return status
    candidates = (
        [("MLXKIT_BLAS", lambda: choice)]
        if choice
        else [
            ("system OpenBLAS", _system_openblas),
            ("cmeel-openblas", _cmeel_openblas),
            ("NumPy's OpenBLAS through a compiled cblas shim", _shim),
        ]
    )
    for source, find in candidates:
        try:
            path = find()
            if path is None:
                status.attempts.append(f"{source}: not found")
                continue
            _open(path)
        except (OSError, subprocess.CalledProcessError) as error:
            status.attempts.append(f"{source}: {error}")
            continue
        status.library, status.source = path, source
        return status
    return status


_advised = False


def advise_once() -> None:
    """Prints, once per process, how to get a fast BLAS when only the reference one is in use."""
    global _advised
    if _advised or not sys.platform.startswith("linux") or status.library is not None:
        return
    _advised = True
    if status.source.startswith("reference BLAS (MLXKIT_BLAS=off)"):
        return
    print(f"mlxkit: {advice()}", file=sys.stderr, flush=True)


def advice() -> str:
    """Why the fast BLAS is not in use and the fix for that cause, from `status.attempts`."""
    if _IMPORTED_TOO_LATE in status.attempts:
        return (
            f"{_SLOW} Cause: mlx was imported before mlxkit, and MLX picks its BLAS when it is "
            "first imported. Fix: import mlxkit before mlx (put `import mlxkit` above "
            "`import mlx.core as mx`, in the script and in modules it imports first)."
        )
    if any(_NO_COMPILER in attempt for attempt in status.attempts):
        return HINT
    tried = "; ".join(status.attempts) or "nothing"
    return (
        f"{_SLOW} Tried: {tried}. Fix: `apt install libopenblas0-pthread`, or set "
        "MLXKIT_BLAS=/path/to/libopenblas.so. Run `mlxkit doctor` to check."
    )
