"""Shared test setup. mlxkit is imported first so its fast BLAS loads before `mlx.core`."""

import mlxkit  # noqa: F401
