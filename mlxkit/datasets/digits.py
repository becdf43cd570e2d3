"""`make_synthetic_digits`: MNIST-shaped handwritten-like digits, for examples on a fresh clone.

Each digit is a set of pen strokes (polylines in a unit box) drawn with a random pen width, slant,
rotation, scale and offset, anti-aliased, and lightly noised: a stand-in with MNIST's format and a
similar difficulty for small models, when the real files are not at hand.
"""

from __future__ import annotations

from mlxkit._validation import check_int

import numpy as np


def _arc(cx, cy, rx, ry, start, stop, points=9):
    angles = np.radians(np.linspace(start, stop, points))
    return [(cx + rx * np.cos(a), cy - ry * np.sin(a)) for a in angles]


# Strokes per digit, in a box x in [0, 1] (left to right), y in [0, 1] (top to bottom).
_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.3, 0.42, 0, 360, 17)],
    1: [[(0.35, 0.25), (0.55, 0.08), (0.55, 0.92)]],
    2: [[*_arc(0.5, 0.32, 0.28, 0.24, 160, -30, 9), (0.2, 0.92), (0.82, 0.92)]],
    3: [_arc(0.48, 0.3, 0.26, 0.21, 150, -90, 9), _arc(0.48, 0.7, 0.3, 0.22, 90, -160, 9)],
    4: [[(0.62, 0.92), (0.62, 0.08), (0.18, 0.66), (0.85, 0.66)]],
    5: [[(0.78, 0.1), (0.3, 0.1), (0.26, 0.46), *_arc(0.5, 0.66, 0.3, 0.26, 130, -160, 9)]],
    6: [_arc(0.5, 0.68, 0.27, 0.24, 0, 360, 13), [(0.25, 0.68), (0.35, 0.3), (0.65, 0.08)]],
    7: [[(0.18, 0.1), (0.82, 0.1), (0.42, 0.92)]],
    8: [_arc(0.5, 0.3, 0.23, 0.2, 0, 360, 13), _arc(0.5, 0.7, 0.28, 0.22, 0, 360, 13)],
    9: [_arc(0.5, 0.32, 0.27, 0.24, 0, 360, 13), [(0.76, 0.32), (0.66, 0.7), (0.4, 0.92)]],
}


def _segments(digit: int) -> np.ndarray:
    pieces = []
    for stroke in _STROKES[digit]:
        points = np.array(stroke, dtype=np.float64)
        pieces.append(np.stack([points[:-1], points[1:]], axis=1))
    return np.concatenate(pieces)  # (S, 2, 2): segment, endpoint, (x, y)


def _render(digit: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    segments = _segments(digit) - 0.5
    angle = np.radians(rng.uniform(-12, 12))
    slant = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.72, 0.95) * size
    transform = (
        scale
        * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        @ np.array([[1.0, slant], [0.0, 1.0]])
    )
    center = size / 2 + rng.uniform(-1.5, 1.5, size=2)
    points = segments @ transform.T + center
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (P, 2)
    a, b = points[:, 0], points[:, 1]  # (S, 2)
    direction = b - a
    length2 = np.maximum((direction**2).sum(axis=1), 1e-9)
    t = np.clip(((pixels[:, None] - a) * direction).sum(axis=2) / length2, 0, 1)  # (P, S)
    nearest = a + t[..., None] * direction
    distance = np.sqrt(((pixels[:, None] - nearest) ** 2).sum(axis=2)).min(axis=1)
    width = rng.uniform(0.9, 1.8)
    ink = np.clip(width + 0.5 - distance, 0.0, 1.0)
    ink = np.clip(ink + rng.normal(0, 0.04, size=ink.shape), 0.0, 1.0)
    return (ink.reshape(size, size) * 255).astype(np.uint8)


def make_synthetic_digits(
    num_train: int = 6000, num_test: int = 1000, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Generates MNIST-like data: `((x_train, y_train), (x_test, y_test))`, x `(N, 28, 28)` uint8.

    The format matches `load_mnist`, so an example can fall back on it when no `--data` is given.
    Labels cycle through the ten digits in a seeded random order.

    Args:
        num_train: Training images.
        num_test: Test images.
        seed: Seeds the labels and the handwriting variation.

    Example:
        >>> (x, y), (x_test, y_test) = make_synthetic_digits(20, 10)
        >>> x.shape, x.dtype, np.bincount(np.concatenate([y, y_test])).tolist()
        ((20, 28, 28), dtype('uint8'), [3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    """
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        check_int(value, name)
    rng = np.random.default_rng(seed)
    total = num_train + num_test
    labels = rng.permutation(np.arange(total) % 10).astype(np.uint8)
    images = np.stack([_render(int(label), rng) for label in labels])
    return (images[:num_train], labels[:num_train]), (images[num_train:], labels[num_train:])
