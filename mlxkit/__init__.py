"""mlxkit: Keras-style training, data streams, checkpoints and export for Apple MLX.

`from mlxkit import Trainer` gives `fit` / `evaluate` / `predict` over a plain `mlx.nn.Module`.
Importing mlxkit before `mlx.core` lets it load an optimized BLAS on Linux (see `mlxkit._blas`).
"""

__version__ = "0.1.0"

from mlxkit import _blas

_blas.load()

from mlxkit import (  # noqa: E402
    callbacks,
    data,
    datasets,
    images,
    losses,
    metrics,
    models,
    optimizers,
    precision,
)
from mlxkit.callbacks import History  # noqa: E402
from mlxkit.checkpoint import CheckpointError, load_weights  # noqa: E402
from mlxkit.seeding import set_seed  # noqa: E402
from mlxkit.summary import summary  # noqa: E402
from mlxkit.trainer import Trainer, unpack_batch  # noqa: E402

__all__ = [
    "CheckpointError",
    "History",
    "Trainer",
    "__version__",
    "callbacks",
    "data",
    "datasets",
    "images",
    "load_weights",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "precision",
    "set_seed",
    "summary",
    "unpack_batch",
]
