"""MNIST and Fashion-MNIST: the four IDX files, gzipped or raw, to uint8 arrays."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
NUM_CLASSES = 10


def load_mnist(
    path: str | os.PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Reads MNIST (or Fashion-MNIST, same format) from the folder holding its four IDX files.

    The files are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
    and `t10k-labels-idx1-ubyte`, each optionally gzipped (`.gz`); the `train-images.idx3-ubyte`
    spelling is accepted too. Magic numbers, dimensions and byte counts are checked, and an error
    names the file at fault.

    Args:
        path: The folder holding the four files.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images `(N, 28, 28)` uint8 in [0, 255] and labels
        `(N,)` uint8, as `keras.datasets.mnist.load_data()`.

    Example:
        >>> from pathlib import Path
        >>> from mlxkit.datasets import load_mnist
        >>> folder = Path("../shared/data/mnist")
        >>> if folder.is_dir():  # the repository's reference data, when present
        ...     (x_train, y_train), (x_test, y_test) = load_mnist(folder)
        ...     assert x_train.shape == (60000, 28, 28) and y_test.shape == (10000,)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist. Received: path={path!r}")
    arrays = []
    for split in ("train", "t10k"):
        images = _read_idx(_find(folder, split, "images", 3), _IMAGES_MAGIC, ndim=3)
        labels = _read_idx(_find(folder, split, "labels", 1), _LABELS_MAGIC, ndim=1)
        if len(images) != len(labels):
            raise ValueError(
                f"{split} has {len(images)} images but {len(labels)} labels in {folder}."
            )
        if len(labels) and labels.max() >= NUM_CLASSES:
            index = int(np.argmax(labels >= NUM_CLASSES))
            raise ValueError(
                f"{_find(folder, split, 'labels', 1)} holds label {labels[index]} at index "
                f"{index}; MNIST and Fashion-MNIST labels are 0 to {NUM_CLASSES - 1}. Is the "
                "file corrupt or of another dataset?"
            )
        arrays.append((images, labels))
    return arrays[0], arrays[1]


def _find(folder: Path, split: str, kind: str, ndim: int) -> Path:
    names = [f"{split}-{kind}-idx{ndim}-ubyte", f"{split}-{kind}.idx{ndim}-ubyte"]
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"No {split} {kind} file in {folder}: looked for {names[0]}(.gz) and {names[1]}(.gz). "
        f"The folder holds {sorted(p.name for p in folder.iterdir())}."
    )


def _read_idx(path: Path, magic: int, *, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} could not be read ({error}); is the download complete?") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is {len(data)} bytes, too short for an IDX header.")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise ValueError(
            f"{path} has IDX magic number {found}, expected {magic} "
            f"({'images' if magic == _IMAGES_MAGIC else 'labels'}, unsigned bytes). "
            "Is it the right file?"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path} holds {len(data)} bytes, but its header {shape} calls for {expected}: "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
