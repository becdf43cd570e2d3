"""`TensorBoard`: scalars, learning rate, weight histograms and images as TensorBoard event files.

The event files are written by `tensorboardX` (`pip install 'mlxkit[tensorboard]'`), a small
writer that needs neither TensorFlow nor PyTorch. The layout is Keras's: `<log_dir>/train` and
`<log_dir>/validation` hold the same tags (`epoch_loss`, `epoch_accuracy`, ...), so TensorBoard
draws a metric's training and validation curves on one chart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from mlxkit._batches import flat_items
from mlxkit.callbacks.base import Callback

import mlx.core as mx
import numpy as np

_INSTALL = "The TensorBoard callback needs tensorboardX: `pip install 'mlxkit[tensorboard]'`."


class TensorBoard(Callback):
    """Writes training logs as TensorBoard event files (`tensorboard --logdir <log_dir>`).

    At every epoch end: each log value as the scalar `epoch_<name>` at step `epoch`, the training
    ones (and the learning rate, throughput and memory) under `<log_dir>/train`, the `val_` ones
    under `<log_dir>/validation` without their prefix. With `update_freq=N`, also the batch logs
    (the epoch's running means, as in Keras) and the learning rate every `N` steps, as
    `batch_<name>` at the global step; they are read from the device only at those steps.

    Only rank 0 writes under distributed training.

    Args:
        log_dir: The folder for the event files; one run per folder, as in Keras.
        update_freq: `"epoch"`, or write batch-level scalars every this many steps.
        histogram_freq: Write a histogram of every trainable parameter every this many epochs
            (`0`: never). It copies the weights to the host, so keep it infrequent on big models.
        images: A function `images(trainer, epoch) -> {tag: image}` called at the end of each
            epoch (every `images_freq`); each image is `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or
            `(H, W, 4)`, uint8 in [0, 255] or float in [0, 1], NumPy or MLX.
        images_freq: Call `images` every this many epochs.

    Example:
        >>> board = TensorBoard("runs/tb", histogram_freq=1)
        >>> history = trainer.fit(x, y, epochs=2, validation_split=0.25, callbacks=[board],
        ...                       verbose=0)
        >>> sorted(os.listdir("runs/tb"))
        ['train', 'validation']
    """

    def __init__(
        self,
        log_dir: str | os.PathLike = "logs",
        *,
        update_freq: Literal["epoch"] | int = "epoch",
        histogram_freq: int = 0,
        images: Callable[[Any, int], Mapping[str, Any]] | None = None,
        images_freq: int = 1,
    ):
        if update_freq != "epoch" and not _positive_int(update_freq):
            raise ValueError(
                "TensorBoard: `update_freq` must be 'epoch' or a positive int (steps). "
                f"Received: update_freq={update_freq!r}"
            )
        if not _positive_int(histogram_freq) and histogram_freq != 0:
            raise ValueError(
                "TensorBoard: `histogram_freq` must be an int >= 0 (0: no histograms). "
                f"Received: histogram_freq={histogram_freq!r}"
            )
        if not _positive_int(images_freq):
            raise ValueError(
                "TensorBoard: `images_freq` must be a positive int. "
                f"Received: images_freq={images_freq!r}"
            )
        if images is not None and not callable(images):
            raise TypeError(
                "TensorBoard: `images` must be a function (trainer, epoch) -> {tag: image}. "
                f"Received: images={images!r}"
            )
        _summary_writer()  # a missing tensorboardX fails here, not at the end of the first epoch
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self.histogram_freq = histogram_freq
        self.images = images
        self.images_freq = images_freq
        self._writers: dict[str, Any] = {}
        if update_freq != "epoch":
            # Only then look at batches: otherwise the batch hook is not dispatched at all.
            self.on_train_batch_end = self._on_train_batch_end  # type: ignore[method-assign]

    def _writer(self, name: Literal["train", "validation"]) -> Any:
        if name not in self._writers:
            self._writers[name] = _summary_writer()(os.path.join(self.log_dir, name))
        return self._writers[name]

    def _writes(self) -> bool:
        return self.trainer.is_main_process

    def _on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        step = self.trainer.global_step
        if not self._writes() or logs is None or step % int(self.update_freq) != 0:
            return
        writer = self._writer("train")
        for key, value in logs.items():
            writer.add_scalar(f"batch_{key}", float(value), step)
        learning_rate = self.trainer.optimizer.learning_rate
        writer.add_scalar("batch_learning_rate", float(np.asarray(learning_rate)), step)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if not self._writes():
            return
        for key, value in (logs or {}).items():
            if key.startswith("val_"):
                self._writer("validation").add_scalar(f"epoch_{key[4:]}", float(value), epoch)
            else:
                self._writer("train").add_scalar(f"epoch_{key}", float(value), epoch)
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            writer = self._writer("train")
            for name, weight in flat_items(self.trainer.model.trainable_parameters()):
                writer.add_histogram(name, np.asarray(weight.astype(mx.float32)), epoch)
        if self.images is not None and (epoch + 1) % self.images_freq == 0:
            writer = self._writer("train")
            for tag, image in self.images(self.trainer, epoch).items():
                writer.add_image(tag, _hwc(tag, image), epoch, dataformats="HWC")
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: Mapping[str, float] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise ImportError(_INSTALL) from error
    return SummaryWriter


def _hwc(tag: str, image: Any) -> np.ndarray:
    """An image as `(H, W, C)` with C in 1, 3, 4: uint8 kept, floats checked to be in [0, 1]."""
    array = np.asarray(image.astype(mx.float32) if isinstance(image, mx.array) else image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"TensorBoard: image {tag!r} must be (H, W) or (H, W, C) with C in 1, 3, 4. "
            f"Received: shape={array.shape}"
        )
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                f"TensorBoard: float image {tag!r} must be in [0, 1]. "
                f"Received: values in [{array.min():g}, {array.max():g}]"
            )
    return array
