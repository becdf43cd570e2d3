"""mlxkit: Keras-style training, data streams, checkpoints and export for Apple MLX.

Importing mlxkit before `mlx.core` lets it load an optimized BLAS on Linux (see `mlxkit._blas`).
"""

from mlxkit import _blas

_blas.load()

__version__ = "0.1.0"

__all__ = ["__version__"]
