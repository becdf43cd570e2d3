"""Writing images without extra dependencies: PNG encoding, colormaps and image grids.

The examples save what a person would rather look at than read (depth maps next to their inputs,
segmentation composites, generated samples). PNG is zlib-compressed scanlines, so NumPy and the
standard library suffice; no imaging package is needed.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence

from mlxkit._io import atomic_write_bytes

import numpy as np

# Control points of matplotlib's "magma" colormap (perceptually uniform), linearly interpolated.
_MAGMA = np.array(
    [
        [0.001, 0.000, 0.014],
        [0.114, 0.065, 0.277],
        [0.316, 0.071, 0.485],
        [0.513, 0.148, 0.508],
        [0.716, 0.215, 0.475],
        [0.904, 0.320, 0.388],
        [0.988, 0.536, 0.382],
        [0.996, 0.762, 0.507],
        [0.987, 0.991, 0.750],
    ]
)


def colormap(values: np.ndarray, *, vmin: float | None = None, vmax: float | None = None):
    """Maps a 2-D (or `(H, W, 1)`) array to RGB in [0, 1] with the magma colormap.

    Args:
        values: The array to colour.
        vmin: The value mapped to the darkest colour (default: the minimum).
        vmax: The value mapped to the brightest colour (default: the maximum).

    Example:
        >>> colormap(np.array([[0.0, 1.0]])).shape
        (1, 2, 3)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise ValueError(f"colormap: expected a 2-D array. Received: shape={values.shape}")
    low = float(np.nanmin(values)) if vmin is None else vmin
    high = float(np.nanmax(values)) if vmax is None else vmax
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
    position = np.nan_to_num(scaled) * (len(_MAGMA) - 1)
    index = np.minimum(position.astype(int), len(_MAGMA) - 2)
    fraction = (position - index)[..., None]
    return _MAGMA[index] * (1 - fraction) + _MAGMA[index + 1] * fraction


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Writes an image to a PNG file.

    The file is written through a temporary file and a rename, so it is never seen half-written.

    Args:
        image: `(H, W)` grey, `(H, W, 3)` RGB or `(H, W, 4)` RGBA; floats in [0, 1] or `uint8`.
        path: The file to write.

    Returns:
        The path written.

    Example:
        >>> import tempfile, os
        >>> path = save_png(np.zeros((2, 3, 3)), os.path.join(tempfile.mkdtemp(), "black.png"))
        >>> with open(path, "rb") as f:
        ...     f.read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            "save_png: expected an (H, W), (H, W, 3) or (H, W, 4) image. "
            f"Received: shape={array.shape}"
        )
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0) * 255 + 0.5
        array = array.astype(np.uint8)
    height, width = array.shape[:2]
    color_type = 0 if array.ndim == 2 else {3: 2, 4: 6}[array.shape[-1]]
    # Each scanline starts with a filter-type byte; 0 means no filter.
    rows = np.ascontiguousarray(array).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    payload = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    path = os.fspath(path)
    atomic_write_bytes(path, payload)
    return path


def image_grid(rows: Sequence[Sequence[np.ndarray]], *, padding: int = 2) -> np.ndarray:
    """Tiles images into one RGB image: `rows[i][j]` goes to row i, column j.

    Grey `(H, W)` / `(H, W, 1)` images are repeated to RGB; `uint8` images are read as 0-255 and
    float images as 0-1; all images must share H and W.

    Example:
        >>> image_grid([[np.zeros((4, 4)), np.ones((4, 4, 3))]], padding=1).shape
        (6, 11, 3)
    """
    if not rows or not rows[0]:
        raise ValueError("image_grid: `rows` must hold at least one image.")
    tiles = [[_to_rgb(image) for image in row] for row in rows]
    height, width = tiles[0][0].shape[:2]
    for row in tiles:
        for tile in row:
            if tile.shape[:2] != (height, width):
                raise ValueError(
                    f"image_grid: all images must be {height}x{width}. "
                    f"Received: an image of shape {tile.shape}"
                )
    columns = max(len(row) for row in tiles)
    grid = np.ones(
        (padding + len(tiles) * (height + padding), padding + columns * (width + padding), 3)
    )
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            top, left = padding + i * (height + padding), padding + j * (width + padding)
            grid[top : top + height, left : left + width] = tile
    return grid


def _to_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    array = array / 255.0 if array.dtype == np.uint8 else array.astype(np.float64)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image_grid: expected grey or RGB images. Received: shape={array.shape}")
    return array
