"""Random augmentation for `Stream`: paired geometric transforms and image-only photometric ones.

Geometric transforms (`RandomFlip`, `RandomRotation`, `RandomTranslation`, `RandomCrop`) draw one
set of parameters per sample and apply it to every key listed in `keys`, so an image and its mask or
depth map stay aligned pixel for pixel. Photometric transforms (`RandomBrightness`, `RandomBlur`,
`RandomNoise`) change pixel values only and are listed for the image alone. This is the
segmentation article's imgaug pipeline, in NumPy:

    transforms = [
        LoadImage(("image", "mask")),
        RandomFlip(keys=("image", "mask")),
        RandomRotation(15, keys=("image", "mask")),
        RandomBrightness(0.2, value_range=(0, 255)),
        RandomBlur((0.0, 1.0)),
    ]

Arrays are `(height, width)` or `(height, width, channels)`. Every random choice comes from the
`rng` that `Stream` derives from (seed, epoch, sample index), so a resumed epoch sees the same
augmentation. Integer arrays (masks, class ids) are never interpolated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from mlxkit.data.transforms import Sample, Transform, as_keys, as_size, get_array

import numpy as np

_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def _range(
    value: float | Sequence[float], argument: str, *, symmetric: bool
) -> tuple[float, float]:
    """`v` -> (-v, v) (or (0, v)); `(low, high)` kept; validated."""
    if isinstance(value, bool):
        raise ValueError(f"`{argument}` must be a number or a (low, high) pair. Received: {value}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        if value < 0:
            raise ValueError(f"`{argument}` must be non-negative. Received: {argument}={value!r}")
        return (-float(value), float(value)) if symmetric else (0.0, float(value))
    pair = tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, (int, float, np.integer, np.floating)) for v in pair
    ):
        raise ValueError(
            f"`{argument}` must be a number or a (low, high) pair. Received: {argument}={value!r}"
        )
    low, high = float(pair[0]), float(pair[1])
    if low > high:
        raise ValueError(f"`{argument}` must have low <= high. Received: {argument}={value!r}")
    return low, high


def _probability(value: float, argument: str = "probability") -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"`{argument}` must be in [0, 1]. Received: {argument}={value!r}")
    return float(value)


def _spatial(sample: Sample, keys: tuple[str, ...], owner: object) -> tuple[int, int]:
    """The common (height, width) of the arrays under `keys`; a clear error if they differ."""
    shapes = {key: get_array(sample, key, owner).shape for key in keys}
    sizes = {shape[:2] for shape in shapes.values() if len(shape) >= 2}
    if len(sizes) != 1 or any(len(shape) < 2 for shape in shapes.values()):
        raise ValueError(
            f"{type(owner).__name__} moves {list(keys)} together, so they need the same "
            f"(height, width). Received shapes: {shapes}"
        )
    height, width = next(iter(sizes))
    return int(height), int(width)


def _restore_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Casts float results back, rounding and clipping for integer dtypes."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


class RandomFlip(Transform):
    """Flips `keys` together, each sample with probability `probability`.

    Args:
        mode: `"horizontal"` (left-right), `"vertical"` (up-down) or `"horizontal_and_vertical"`
            (each axis decided independently).
        keys: The sample keys flipped together (an image and its mask or depth map).
        probability: The chance of flipping, per axis.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import RandomFlip
        >>> flip = RandomFlip(keys=("image", "mask"), probability=1.0)
        >>> x = np.arange(3)[None]
        >>> out = flip({"image": x, "mask": x}, np.random.default_rng())
        >>> out["image"].tolist(), out["mask"].tolist()
        ([[2, 1, 0]], [[2, 1, 0]])
    """

    def __init__(
        self,
        mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal",
        *,
        keys: str | Sequence[str] = ("image",),
        probability: float = 0.5,
    ):
        if mode not in _FLIP_MODES:
            raise ValueError(f"`mode` must be one of {list(_FLIP_MODES)}. Received: mode={mode!r}")
        self.mode = mode
        self.keys = as_keys(keys)
        self.probability = _probability(probability)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        _spatial(sample, self.keys, self)
        axes = []
        if self.mode != "vertical" and rng.random() < self.probability:
            axes.append(1)
        if self.mode != "horizontal" and rng.random() < self.probability:
            axes.append(0)
        if not axes:
            return sample
        return {**sample, **{key: np.flip(sample[key], axis=tuple(axes)) for key in self.keys}}


class RandomRotation(Transform):
    """Rotates `keys` together about the image centre by an angle drawn uniformly from `degrees`.

    Floating-point arrays are sampled bilinearly, integer arrays (masks, class ids) and the keys in
    `nearest` by nearest neighbour; pixels that come from outside the image get `fill`.

    Args:
        degrees: `d` for angles in `[-d, d]`, or `(low, high)`; positive is counter-clockwise.
        keys: The sample keys rotated together.
        nearest: Floating-point keys to sample by nearest neighbour too: a depth map, whose
            invalid pixels (0) must not blend into valid ones.
        fill: The value of pixels that come from outside the image.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import RandomRotation
        >>> x = np.arange(9, dtype="float32").reshape(3, 3)
        >>> out = RandomRotation((90, 90), keys="x")({"x": x}, np.random.default_rng())
        >>> np.allclose(out["x"], np.rot90(x))
        True
    """

    def __init__(
        self,
        degrees: float | Sequence[float],
        *,
        keys: str | Sequence[str] = ("image",),
        nearest: str | Sequence[str] = (),
        fill: float = 0.0,
    ):
        self.degrees = _range(degrees, "degrees", symmetric=True)
        self.keys = as_keys(keys)
        self.nearest = (nearest,) if isinstance(nearest, str) else tuple(nearest)
        unknown = [key for key in self.nearest if key not in self.keys]
        if unknown:
            raise ValueError(
                f"`nearest` must list some of keys={list(self.keys)}. Received: nearest={unknown}"
            )
        self.fill = float(fill)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = _spatial(sample, self.keys, self)
        angle = math.radians(rng.uniform(*self.degrees))
        # Output pixel p samples the input at R(-angle) p about the centre; with rows growing
        # downwards this turns the content counter-clockwise as displayed, like np.rot90.
        cos, sin = math.cos(angle), math.sin(angle)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = (height - 1) / 2, (width - 1) / 2
        source_x = _snap(cos * (x - cx) - sin * (y - cy) + cx)
        source_y = _snap(sin * (x - cx) + cos * (y - cy) + cy)
        # One "inside" for every key, so an image and its mask share the same filled border.
        inside = (
            (source_y >= 0) & (source_y <= height - 1) & (source_x >= 0) & (source_x <= width - 1)
        )
        out = dict(sample)
        for key in self.keys:
            array = sample[key]
            if key in self.nearest or not np.issubdtype(array.dtype, np.floating):
                out[key] = _sample_nearest(array, source_y, source_x, inside, self.fill)
            else:
                out[key] = _sample_bilinear(array, source_y, source_x, inside, self.fill)
        return out


def _snap(coordinates: np.ndarray) -> np.ndarray:
    # Float noise (cos 90° = 6e-17) would otherwise blur exact quarter turns.
    nearest = np.rint(coordinates)
    return np.where(np.abs(coordinates - nearest) < 1e-4, nearest, coordinates)


def _sample_nearest(
    array: np.ndarray, ys: np.ndarray, xs: np.ndarray, inside: np.ndarray, fill: float
) -> np.ndarray:
    height, width = array.shape[:2]
    yi = np.clip(np.rint(ys).astype(np.int64), 0, height - 1)
    xi = np.clip(np.rint(xs).astype(np.int64), 0, width - 1)
    out = array[yi, xi]
    out[~inside] = fill
    return out


def _sample_bilinear(
    array: np.ndarray, ys: np.ndarray, xs: np.ndarray, inside: np.ndarray, fill: float
) -> np.ndarray:
    height, width = array.shape[:2]
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, height - 1)
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, width - 1)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy, wx = ys - y0, xs - x0
    extra = (slice(None),) * 2 + (None,) * (array.ndim - 2)
    wy, wx = wy[extra], wx[extra]
    values = array.astype(np.float32, copy=False)
    top = values[y0, x0] * (1 - wx) + values[y0, x1] * wx
    bottom = values[y1, x0] * (1 - wx) + values[y1, x1] * wx
    out = top * (1 - wy) + bottom * wy
    out[~inside] = fill
    return out.astype(array.dtype, copy=False)


class RandomTranslation(Transform):
    """Shifts `keys` together by whole pixels, up to a fraction of the height and width.

    Args:
        factor: The largest shift as a fraction of the size: one number for both axes, or
            `(height_factor, width_factor)`; shifts are drawn uniformly in `[-f, f]`.
        keys: The sample keys shifted together.
        fill: The value of the pixels uncovered by the shift.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import RandomTranslation
        >>> shift = RandomTranslation(0.25, keys=("image", "mask"))
        >>> x = np.arange(64, dtype="float32").reshape(8, 8)
        >>> out = shift({"image": x, "mask": x.astype("int32")}, np.random.default_rng(0))
        >>> np.array_equal(out["image"], out["mask"])
        True
    """

    def __init__(
        self,
        factor: float | Sequence[float],
        *,
        keys: str | Sequence[str] = ("image",),
        fill: float = 0.0,
    ):
        pair = (factor, factor) if isinstance(factor, (int, float)) else tuple(factor)
        if len(pair) != 2 or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f <= 1 for f in pair
        ):
            raise ValueError(
                "`factor` must be a fraction in [0, 1] or a (height_factor, width_factor) pair. "
                f"Received: factor={factor!r}"
            )
        self.factor = (float(pair[0]), float(pair[1]))
        self.keys = as_keys(keys)
        self.fill = float(fill)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = _spatial(sample, self.keys, self)
        max_y, max_x = int(self.factor[0] * height), int(self.factor[1] * width)
        dy, dx = int(rng.integers(-max_y, max_y + 1)), int(rng.integers(-max_x, max_x + 1))
        target = (slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0)))
        source = (slice(max(-dy, 0), height - max(dy, 0)), slice(max(-dx, 0), width - max(dx, 0)))
        out = dict(sample)
        for key in self.keys:
            shifted = np.full_like(sample[key], self.fill)
            shifted[target] = sample[key][source]
            out[key] = shifted
        return out


class RandomCrop(Transform):
    """Crops the same random `size` window out of every array under `keys`.

    Args:
        size: `(height, width)` of the crop, or one int for a square.
        keys: The sample keys cropped together.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import RandomCrop
        >>> x = np.arange(100).reshape(10, 10)
        >>> out = RandomCrop((4, 6), keys=("image", "mask"))({"image": x, "mask": x},
        ...                                                  np.random.default_rng(0))
        >>> out["image"].shape, np.array_equal(out["image"], out["mask"])
        ((4, 6), True)
    """

    def __init__(self, size: int | Sequence[int], *, keys: str | Sequence[str] = ("image",)):
        self.size = as_size(size)
        self.keys = as_keys(keys)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = _spatial(sample, self.keys, self)
        crop_height, crop_width = self.size
        if crop_height > height or crop_width > width:
            raise ValueError(
                f"RandomCrop(size={self.size}) is larger than the arrays under {list(self.keys)}, "
                f"which are {(height, width)}."
            )
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        window = (slice(top, top + crop_height), slice(left, left + crop_width))
        return {**sample, **{key: sample[key][window] for key in self.keys}}


class RandomBrightness(Transform):
    """Adds one random offset to all pixels, `factor * (high - low)` at most, then clips.

    Args:
        factor: `f` for offsets drawn in `[-f, f]` of the value range, or `(low, high)`.
        keys: The image keys (never a mask or a depth map).
        value_range: The pixel range, `(0, 1)` for float images or `(0, 255)` for `uint8`.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import RandomBrightness
        >>> x = np.full((2, 2, 3), 0.5, "float32")
        >>> out = RandomBrightness((0.2, 0.2))({"image": x}, np.random.default_rng())
        >>> round(float(out["image"][0, 0, 0]), 4)
        0.7
    """

    def __init__(
        self,
        factor: float | Sequence[float],
        *,
        keys: str | Sequence[str] = ("image",),
        value_range: tuple[float, float] = (0.0, 1.0),
    ):
        self.factor = _range(factor, "factor", symmetric=True)
        self.keys = as_keys(keys)
        self.value_range = _range(value_range, "value_range", symmetric=False)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        low, high = self.value_range
        delta = rng.uniform(*self.factor) * (high - low)
        out = dict(sample)
        for key in self.keys:
            x = get_array(sample, key, self)
            shifted = np.clip(x.astype(np.float32) + np.float32(delta), low, high)
            out[key] = _restore_dtype(shifted, x.dtype)
        return out


class RandomBlur(Transform):
    """Gaussian blur with a standard deviation (in pixels) drawn uniformly from `sigma`.

    Args:
        sigma: `s` for sigmas in `[0, s]`, or `(low, high)`. Below 0.1 pixel the image is returned
            unchanged.
        keys: The image keys (never a mask or a depth map).

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import RandomBlur
        >>> x = np.zeros((11, 11), "float32"); x[5, 5] = 1.0
        >>> out = RandomBlur((1.0, 1.0), keys="x")({"x": x}, np.random.default_rng())
        >>> round(float(out["x"].sum()), 4), bool(out["x"][5, 5] < 1)
        (1.0, True)
    """

    def __init__(self, sigma: float | Sequence[float], *, keys: str | Sequence[str] = ("image",)):
        self.sigma = _range(sigma, "sigma", symmetric=False)
        if self.sigma[0] < 0:
            raise ValueError(f"`sigma` must be non-negative. Received: sigma={sigma!r}")
        self.keys = as_keys(keys)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sigma = rng.uniform(*self.sigma)
        if sigma < 0.1:
            return sample
        radius = max(1, math.ceil(3 * sigma))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
        taps /= taps.sum()
        out = dict(sample)
        for key in self.keys:
            x = get_array(sample, key, self)
            if x.ndim < 2:
                raise ValueError(
                    f"RandomBlur needs (height, width, ...) arrays; {key!r} is {x.shape}."
                )
            blurred = x.astype(np.float32)
            for axis in (0, 1):
                blurred = _convolve_axis(blurred, taps, axis)
            out[key] = _restore_dtype(blurred, x.dtype)
        return out


def _convolve_axis(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Separable convolution along `axis` with reflected borders, as a sum of shifted slices."""
    radius = len(taps) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    # Reflection needs radius < size; a wider kernel falls back to edge padding.
    padded = np.pad(x, pad, mode="reflect" if radius < x.shape[axis] else "edge")
    length = x.shape[axis]
    out = np.zeros_like(x)
    for offset, weight in enumerate(taps):
        out += weight * np.take(padded, np.arange(offset, offset + length), axis=axis)
    return out


class RandomNoise(Transform):
    """Adds Gaussian noise of standard deviation `stddev` (in pixel units), then clips.

    Args:
        stddev: The noise standard deviation, or `(low, high)` to draw it per sample.
        keys: The image keys (never a mask or a depth map).
        value_range: The pixel range to clip to: `(0, 1)` for float images, `(0, 255)` for `uint8`.

    Example:
        >>> import numpy as np
        >>> from mlxkit.data import RandomNoise
        >>> x = np.full((64, 64), 0.5, "float32")
        >>> out = RandomNoise(0.05, keys="x")({"x": x}, np.random.default_rng(0))
        >>> round(float(out["x"].std()), 2)
        0.05
    """

    def __init__(
        self,
        stddev: float | Sequence[float],
        *,
        keys: str | Sequence[str] = ("image",),
        value_range: tuple[float, float] = (0.0, 1.0),
    ):
        if isinstance(stddev, (int, float)) and not isinstance(stddev, bool) and stddev >= 0:
            self.stddev = (float(stddev), float(stddev))
        else:
            self.stddev = _range(stddev, "stddev", symmetric=False)
            if self.stddev[0] < 0:
                raise ValueError(f"`stddev` must be non-negative. Received: stddev={stddev!r}")
        self.keys = as_keys(keys)
        self.value_range = _range(value_range, "value_range", symmetric=False)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        stddev = rng.uniform(*self.stddev)
        low, high = self.value_range
        out = dict(sample)
        for key in self.keys:
            x = get_array(sample, key, self)
            noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(stddev)
            out[key] = _restore_dtype(np.clip(x.astype(np.float32) + noise, low, high), x.dtype)
        return out
