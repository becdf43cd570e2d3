"""Layers the reference models share that a user's own models can use too.

`BilinearUpsample` is `nn.Upsample(mode="linear")` computed as matrix products, several times
faster to train on the CPU.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import mlx.nn as nn
import numpy as np

__all__ = ["BilinearUpsample"]


class BilinearUpsample(nn.Module):
    """`nn.Upsample(scale_factor, mode="linear")` for NHWC images, as two matrix products.

    Bilinear interpolation is linear along each spatial axis, so it is a product with a fixed
    (output size x input size) matrix per axis. MLX's `nn.Upsample` gathers and blends pixels
    instead, and the gradient of a gather is a scatter-add, which is slow on the CPU: at the depth
    model's last decoder upsample (8x16x32x64 to 32x64) the forward and backward pass take 19 ms
    there against 5.4 ms as matrix products, which also run on the fast BLAS
    (`benchmarks/bench_upsample.py`, one BLAS thread). The results agree
    with `nn.Upsample` to float32 rounding (the tests compare both directions), and the Core ML
    exporter recognises either as `upsample_bilinear`.

    Args:
        scale_factor: The integer factor for both height and width.
        align_corners: As in `nn.Upsample`: corner pixels of input and output aligned.

    Example:
        >>> import mlx.core as mx
        >>> from mlxkit.models import BilinearUpsample
        >>> BilinearUpsample(2)(mx.zeros((1, 4, 6, 3))).shape
        (1, 8, 12, 3)
    """

    def __init__(self, scale_factor: int, *, align_corners: bool = False) -> None:
        super().__init__()
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(
                "BilinearUpsample: `scale_factor` must be an integer >= 1 (use nn.Upsample for "
                f"fractional factors). Received: scale_factor={scale_factor!r}"
            )
        self.scale_factor = scale_factor
        self.align_corners = align_corners

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim != 4:
            raise ValueError(
                "BilinearUpsample: expected NHWC images of shape (B, H, W, C). "
                f"Received: x.shape={tuple(x.shape)}"
            )
        _, height, width, _ = x.shape
        # In the input's dtype, so that a bfloat16 / float16 forward stays in it.
        rows = mx.array(_interpolation_matrix(height, self.scale_factor, self.align_corners))
        cols = mx.array(_interpolation_matrix(width, self.scale_factor, self.align_corners))
        rows, cols = rows.astype(x.dtype), cols.astype(x.dtype)
        x = mx.einsum("oh,bhwc->bowc", rows, x)
        return mx.einsum("pw,bhwc->bhpc", cols, x)


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(size: int, scale: int, align_corners: bool) -> np.ndarray:
    """The (size * scale, size) matrix of 1-D linear interpolation, with MLX's sample positions."""
    out = size * scale
    if align_corners:
        positions = np.arange(out) * ((size - 1) / max(out - 1, 1))
    else:
        positions = np.clip((np.arange(out) + 0.5) / scale - 0.5, 0, size - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weight = (positions - low).astype(np.float32)
    matrix = np.zeros((out, size), dtype=np.float32)
    np.add.at(matrix, (np.arange(out), low), 1 - weight)
    np.add.at(matrix, (np.arange(out), high), weight)
    return matrix
