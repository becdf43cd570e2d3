"""Per-sample transforms for `Stream`: the `Transform` base class, file loading and resizing.

Two kinds of transform run inside a `Stream`:

- mlx-data operations (`LoadNumpy`, `LoadImage`, `Resize`, `ResizeShortSide`): native code in
  mlx-data's worker threads, no Python and no GIL per sample. mlx-data resizes `uint8` images only,
  so these come right after `LoadImage`.
- NumPy transforms (`CenterCrop`, `Normalize`, the augmentations in `mlxkit.data.augment`, your own
  `Transform` subclasses and plain `sample -> sample` functions), called once per sample in the same
  worker threads.

A transform receives a sample, a `dict[str, np.ndarray]` whose arrays are read-only (they may
alias the source data, which an in-place edit would silently corrupt), and returns a new dict. A
random transform draws every choice from the `rng` it is given, a NumPy `Generator` that `Stream`
seeds from (seed, epoch, sample index): augmentation is then reproducible, identical after a
mid-epoch resume, and independent of the thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlxkit._validation import check_int

import numpy as np

Sample = dict[str, np.ndarray]
# `mlx.data.Buffer`; the compiled extension ships no type information.
Buffer = Any


class Transform:
    """A per-sample step of a `Stream`, run in mlx-data worker threads.

    Subclass it and override `__call__(sample, rng)`: take the arrays you need from `sample`, return
    a new dict (the input arrays are read-only), and draw every random choice from `rng`. A plain
    function `sample -> sample` also works as a transform when it needs no randomness.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import Stream, Transform
        >>> class AddNoise(Transform):
        ...     def __call__(self, sample, rng):
        ...         x = sample["x"]
        ...         return {**sample, "x": x + rng.normal(0, 0.1, x.shape).astype(x.dtype)}
        >>> stream = Stream({"x": np.zeros((8, 2), "float32")}, batch_size=4,
        ...                 transforms=[AddNoise()])
        >>> next(iter(stream))["x"].shape
        (4, 2)
    """

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        raise NotImplementedError(f"{type(self).__name__} must override __call__(sample, rng).")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class BufferTransform(Transform):
    """A transform that mlx-data runs natively: `Stream` calls `apply(buffer)` once per epoch.

    `apply` chains lazy `mlx.data.Buffer` operations; mlx-data runs them per sample in its worker
    threads without the GIL. Subclass it to wrap an mlx-data operation that `mlxkit.data` lacks.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import BufferTransform, Stream
        >>> class Squeeze(BufferTransform):
        ...     def apply(self, buffer):
        ...         return buffer.squeeze("x")
        >>> stream = Stream({"x": np.zeros((4, 1, 3), "float32")}, batch_size=2,
        ...                 transforms=[Squeeze()])
        >>> next(iter(stream))["x"].shape
        (2, 3)
    """

    def apply(self, buffer: Buffer) -> Buffer:
        raise NotImplementedError(f"{type(self).__name__} must override apply(buffer).")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        raise TypeError(
            f"{type(self).__name__} runs inside mlx-data: put it in a Stream's `transforms` "
            "rather than calling it on a sample."
        )


def as_keys(keys: str | Sequence[str], argument: str = "keys") -> tuple[str, ...]:
    """Normalises `keys` (one name or several) to a non-empty tuple of strings."""
    if isinstance(keys, str):
        return (keys,)
    result = tuple(keys)
    if not result or not all(isinstance(k, str) for k in result):
        raise ValueError(
            f"`{argument}` must be a sample key or a non-empty sequence of keys. "
            f"Received: {argument}={keys!r}"
        )
    return result


def as_size(size: int | Sequence[int], argument: str = "size") -> tuple[int, int]:
    """Normalises an `int` or `(height, width)` to a pair of positive ints."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(
            f"`{argument}` must be a positive int or a (height, width) pair of positive ints. "
            f"Received: {argument}={size!r}"
        )
    return int(pair[0]), int(pair[1])


def get_array(sample: Sample, key: str, owner: object) -> np.ndarray:
    """`sample[key]`, or a KeyError that names the transform and the keys the sample has."""
    try:
        return sample[key]
    except KeyError:
        raise KeyError(
            f"{type(owner).__name__} needs key {key!r}, but the sample has keys "
            f"{sorted(sample)}. Check the transform's `keys`."
        ) from None


class LoadNumpy(BufferTransform):
    """Replaces file paths under `keys` with the arrays in those `.npy` files (mlx-data, no pickle).

    mlx-data reads C-ordered, little-endian numeric `.npy` files and never unpickles; the dataset
    helpers (`mlxkit.datasets.depth_samples`) check every file's header up front and name the file
    that does not qualify.

    Args:
        keys: The sample key, or keys, holding `.npy` paths.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from mlxkit.data import Stream, LoadNumpy
        >>> folder = tempfile.mkdtemp()
        >>> paths = []
        >>> for i in range(4):
        ...     paths.append(os.path.join(folder, f"{i}.npy"))
        ...     np.save(paths[-1], np.full((2, 3), i, "float32"))
        >>> stream = Stream({"x": paths}, batch_size=2, shuffle=False, transforms=[LoadNumpy("x")])
        >>> next(iter(stream))["x"][:, 0, 0].tolist()
        [0.0, 1.0]
    """

    def __init__(self, keys: str | Sequence[str]):
        self.keys = as_keys(keys)

    def apply(self, buffer: Buffer) -> Buffer:
        for key in self.keys:
            buffer = buffer.load_numpy(key)
        return buffer


class LoadImage(BufferTransform):
    """Decodes the image files (JPEG, PNG, BMP, ...) under `keys` to `uint8` arrays (mlx-data).

    A colour image becomes `(height, width, 3)`; a grayscale PNG (a mask) `(height, width, 1)`.

    Args:
        keys: The sample key, or keys, holding image paths.

    Example:
        >>> from mlxkit.data import LoadImage, ResizeShortSide, CenterCrop, Normalize
        >>> imagenet = [LoadImage("image"), ResizeShortSide(256), CenterCrop(224),
        ...             Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), scale=1 / 255)]
    """

    def __init__(self, keys: str | Sequence[str]):
        self.keys = as_keys(keys)

    def apply(self, buffer: Buffer) -> Buffer:
        for key in self.keys:
            buffer = buffer.load_image(key)
        return buffer


class Resize(BufferTransform):
    """Resizes `uint8` images to `size` (mlx-data; the aspect ratio is not kept).

    Args:
        size: `(height, width)`, or one int for a square.
        keys: The sample keys holding `uint8` images `(height, width, channels)`.

    Example:
        >>> from mlxkit.data import LoadImage, Resize
        >>> transforms = [LoadImage("image"), Resize((128, 256))]
    """

    def __init__(self, size: int | Sequence[int], *, keys: str | Sequence[str] = ("image",)):
        self.size = as_size(size)
        self.keys = as_keys(keys)

    def apply(self, buffer: Buffer) -> Buffer:
        height, width = self.size
        for key in self.keys:
            buffer = buffer.image_resize(key, width, height)
        return buffer


class ResizeShortSide(BufferTransform):
    """Resizes `uint8` images so that their shorter side is `size`, keeping the aspect ratio.

    Args:
        size: The length of the shorter side after resizing.
        keys: The sample keys holding `uint8` images `(height, width, channels)`.

    Example:
        >>> from mlxkit.data import LoadImage, ResizeShortSide, CenterCrop
        >>> transforms = [LoadImage("image"), ResizeShortSide(256), CenterCrop(224)]
    """

    def __init__(self, size: int, *, keys: str | Sequence[str] = ("image",)):
        self.size = check_int(size, "size")
        self.keys = as_keys(keys)

    def apply(self, buffer: Buffer) -> Buffer:
        for key in self.keys:
            buffer = buffer.image_resize_smallest_side(key, self.size)
        return buffer


class CenterCrop(Transform):
    """Crops the central `size` region of every array under `keys` (any dtype).

    Args:
        size: `(height, width)`, or one int for a square.
        keys: The sample keys holding `(height, width, ...)` arrays, cropped identically.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import CenterCrop
        >>> x = np.arange(16).reshape(4, 4)
        >>> CenterCrop(2, keys="x")({"x": x}, np.random.default_rng(0))["x"].tolist()
        [[5, 6], [9, 10]]
    """

    def __init__(self, size: int | Sequence[int], *, keys: str | Sequence[str] = ("image",)):
        self.size = as_size(size)
        self.keys = as_keys(keys)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        height, width = self.size
        for key in self.keys:
            x = get_array(sample, key, self)
            if x.ndim < 2 or x.shape[0] < height or x.shape[1] < width:
                raise ValueError(
                    f"CenterCrop(size={self.size}) needs arrays at least that large, but key "
                    f"{key!r} has shape {x.shape}."
                )
            top, left = (x.shape[0] - height) // 2, (x.shape[1] - width) // 2
            out[key] = x[top : top + height, left : left + width]
        return out


class Normalize(Transform):
    """Maps `x` to `(x * scale - mean) / std` in float32, per channel (the last axis).

    Args:
        mean: A number, or one per channel.
        std: A number, or one per channel.
        keys: The sample keys to normalise.
        scale: Applied first; `1 / 255` turns `uint8` pixels into [0, 1].

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import Normalize
        >>> x = np.array([[[0, 64, 255]]], "uint8")
        >>> Normalize(128, 64)({"image": x}, None)["image"].tolist()
        [[[-2.0, -1.0, 1.984375]]]
    """

    def __init__(
        self,
        mean: float | Sequence[float],
        std: float | Sequence[float] = 1.0,
        *,
        keys: str | Sequence[str] = ("image",),
        scale: float = 1.0,
    ):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if self.mean.ndim > 1 or self.std.ndim > 1:
            raise ValueError(
                "`mean` and `std` must be numbers or one value per channel. "
                f"Received: mean={mean!r}, std={std!r}"
            )
        if self.mean.size > 1 and self.std.size > 1 and self.mean.size != self.std.size:
            raise ValueError(
                f"`mean` and `std` must have as many values. Received: mean={mean!r}, std={std!r}"
            )
        if np.any(self.std <= 0):
            raise ValueError(f"`std` must be positive. Received: std={std!r}")
        self.keys = as_keys(keys)
        self.scale = float(scale)

    def __call__(self, sample: Sample, rng: Any) -> Sample:
        out = dict(sample)
        for key in self.keys:
            x = get_array(sample, key, self)
            channels = max(self.mean.size, self.std.size)
            if channels > 1 and (x.ndim == 0 or x.shape[-1] != channels):
                raise ValueError(
                    f"Normalize has {channels} channel values, but key {key!r} has shape "
                    f"{x.shape} (channels last)."
                )
            out[key] = (x.astype(np.float32) * self.scale - self.mean) / self.std
        return out
