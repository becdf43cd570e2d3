"""The `mlxkit` console script: `mlxkit --version`, `mlxkit doctor` and `mlxkit export`."""

from __future__ import annotations

import argparse
import platform
import sys
import time


def doctor(args: argparse.Namespace) -> int:
    """Prints the MLX version, the device, the BLAS in use, and how to get a faster one."""
    from mlxkit import __version__, _blas

    import mlx.core as mx

    status = _blas.status
    a = mx.random.normal((256, 256))
    mx.eval(a @ a)
    start = time.perf_counter()
    for _ in range(20):
        mx.eval(a @ a)
    matmul_ms = (time.perf_counter() - start) / 20 * 1e3
    print(f"mlxkit      {__version__}")
    print(f"mlx         {getattr(mx, '__version__', 'unknown')}")
    print(f"python      {platform.python_version()} ({sys.executable})")
    print(f"platform    {platform.platform()}")
    print(f"device      {mx.default_device()}")
    print(f"blas        {status.source}" + (f" ({status.library})" if status.library else ""))
    for attempt in status.attempts:
        print(f"            tried: {attempt}")
    print(f"matmul      256x256 @ 256x256 in {matmul_ms:.3f} ms")
    if sys.platform.startswith("linux") and status.library is None:
        print(f"\nadvice      {_blas.advice()}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlxkit` console script; returns the exit status.

    Example:
        >>> status = main(["doctor"])
        mlxkit      ...
        >>> status in (0, 1)  # 1: Linux with only MLX's reference BLAS
        True
    """
    from mlxkit import __version__

    parser = argparse.ArgumentParser(prog="mlxkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlxkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="print MLX, device and BLAS information").set_defaults(
        run=doctor
    )
    # coremltools, which Core ML export needs, is a dependency and is imported only on use.
    from mlxkit.export import _cli as export_cli

    export_cli.add_parser(commands)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
