"""CIFAR-10, binary version: `data_batch_{1..5}.bin` and `test_batch.bin` to NHWC uint8 arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_RECORD = 1 + 3 * 32 * 32


def load_cifar10(
    path: str | os.PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Reads the binary CIFAR-10 release (`cifar-10-binary.tar.gz`, extracted).

    Each record is one label byte then 3072 pixel bytes, channel-major (1024 red, 1024 green,
    1024 blue, rows of 32). The "python" release is pickled and is not read: mlxkit never
    unpickles data.

    Args:
        path: The folder holding the `.bin` files, or its parent holding `cifar-10-batches-bin/`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images `(N, 32, 32, 3)` uint8 (NHWC) and labels
        `(N,)` uint8 indexing `CIFAR10_CLASSES`.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from mlxkit.datasets import load_cifar10
        >>> folder = Path(tempfile.mkdtemp())
        >>> record = np.concatenate([[3], np.zeros(3072)]).astype("uint8")
        >>> for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        ...     _ = (folder / name).write_bytes(record.tobytes() * 2)
        >>> (x_train, y_train), (x_test, y_test) = load_cifar10(folder)
        >>> x_train.shape, y_test.tolist()
        ((10, 32, 32, 3), [3, 3])
    """
    folder = Path(path)
    if (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {folder} does not exist. Received: path={path!r}")
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        pickled = [
            str(place / name)
            for place in (folder, folder / "cifar-10-batches-py")
            for name in ("data_batch_1", "test_batch", "batches.meta")
            if (place / name).is_file()
        ]
        hint = (
            f" Found {pickled}: that is the pickled 'python' release, which mlxkit does not read. "
            "Download the binary version, cifar-10-binary.tar.gz."
            if pickled
            else ""
        )
        raise FileNotFoundError(f"{folder} lacks {missing}.{hint}")
    train = [_read_batch(folder / name) for name in names[:5]]
    x_test, y_test = _read_batch(folder / names[5])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train), (x_test, y_test)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % _RECORD:
        raise ValueError(
            f"{path} holds {data.size} bytes, not a whole number of {_RECORD}-byte records "
            "(1 label byte + 3072 pixel bytes): the file is truncated or not CIFAR-10 binary."
        )
    records = data.reshape(-1, _RECORD)
    labels = records[:, 0].copy()
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise ValueError(
            f"{path} record {bad} has label {labels[bad]}; CIFAR-10 labels are 0-9. "
            "Is this CIFAR-100 (2 label bytes per record)?"
        )
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels
