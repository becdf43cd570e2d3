"""MNIST and Fashion-MNIST: the four IDX files, gzipped or raw, to uint8 arrays; class names."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
NUM_CLASSES = 10


MNIST_CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

Split = tuple[np.ndarray, np.ndarray]


def load_mnist(path: str | os.PathLike) -> tuple[Split, Split]:
    """Reads MNIST from the folder holding its four IDX files.

    The files are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
    and `t10k-labels-idx1-ubyte`, each optionally gzipped (`.gz`); the `train-images.idx3-ubyte`
    spelling is accepted too. Magic numbers, dimensions and byte counts are checked, and an error
    names the file at fault. Nothing is downloaded: fetch the four files once (for example from
    the `ossci-datasets` mirror that torchvision uses) into a folder of your choice.

    Args:
        path: The folder holding the four files (`~` is expanded).

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images `(N, 28, 28)` uint8 in [0, 255] and labels
        `(N,)` uint8 indexing `MNIST_CLASSES`, as `keras.datasets.mnist.load_data()`.

    Example:
        >>> from mlxkit.datasets import load_mnist
        >>> (x_train, y_train), (x_test, y_test) = load_mnist("~/data/mnist")  # doctest: +SKIP
        >>> x_train.shape, y_test.shape  # doctest: +SKIP
        ((60000, 28, 28), (10000,))
    """
    return _load_idx_folder(path, "MNIST")


def load_fashion_mnist(path: str | os.PathLike) -> tuple[Split, Split]:
    """Reads Fashion-MNIST (Zalando) from the folder holding its four IDX files.

    Fashion-MNIST has MNIST's format and file names (`train-images-idx3-ubyte.gz`, ...): 60,000
    training and 10,000 test images of clothing, 28x28 grey levels, in the ten classes of
    `FASHION_MNIST_CLASSES`. The checks and errors are `load_mnist`'s.

    Args:
        path: The folder holding the four files (`~` is expanded).

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images `(N, 28, 28)` uint8 and labels `(N,)`
        uint8 indexing `FASHION_MNIST_CLASSES`, as `keras.datasets.fashion_mnist.load_data()`.

    Example:
        >>> from mlxkit.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
        >>> FASHION_MNIST_CLASSES[9]
        'Ankle boot'
        >>> (x_train, y_train), _ = load_fashion_mnist("~/data/fashion-mnist")  # doctest: +SKIP
        >>> [FASHION_MNIST_CLASSES[i] for i in y_train[:3]]  # doctest: +SKIP
        ['Ankle boot', 'T-shirt/top', 'T-shirt/top']
    """
    return _load_idx_folder(path, "Fashion-MNIST")


def _load_idx_folder(path: str | os.PathLike, dataset: str) -> tuple[Split, Split]:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{dataset} folder {folder} does not exist. Received: path={path!r}"
        )
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
