"""Callbacks: hooks into `Trainer.fit` / `evaluate` / `predict`, with Keras's names.

Built-ins: `History` and `ProgressBar` (added by default), `EarlyStopping`, `ModelCheckpoint`,
`BackupAndRestore`, `LearningRateScheduler`, `ReduceLROnPlateau`, `CSVLogger`, `TerminateOnNaN`,
`LambdaCallback`, `TensorBoard` (with `pip install 'mlxkit[tensorboard]'`).
"""

from mlxkit.callbacks.base import Callback, CallbackList, LazyLogs
from mlxkit.callbacks.checkpointing import BackupAndRestore, ModelCheckpoint
from mlxkit.callbacks.history import History
from mlxkit.callbacks.logging import CSVLogger, LambdaCallback, TerminateOnNaN
from mlxkit.callbacks.monitor import EarlyStopping, ReduceLROnPlateau
from mlxkit.callbacks.progress import ProgressBar
from mlxkit.callbacks.schedule import LearningRateScheduler
from mlxkit.callbacks.tensorboard import TensorBoard

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LazyLogs",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]
