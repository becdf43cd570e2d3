"""Segmentation data: `images/` + `masks/` folders paired by name, and synthetic people to segment.

Layout:

    <root>/images/<name>.jpg|.jpeg|.png
    <root>/masks/<name>.png       0/255 (binary) or class ids, one channel

`segmentation_samples` lists and pairs the files; decoding happens in a `Stream` (`LoadImage`, in
mlx-data's worker threads). `make_synthetic_people` writes person-like figures on textured
backgrounds in that layout, as PNGs with masks 0/1 (written by `mlxkit.images.save_png` with the
standard library's zlib, so no imaging package is needed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from mlxkit._validation import check_int
from mlxkit.datasets._files import GeneratedFolder, pair_by_stem
from mlxkit.images import save_png

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def segmentation_samples(root: str | os.PathLike) -> list[dict[str, str]]:
    """Lists `<root>/images/*` and `<root>/masks/*.png`, paired by file name without extension.

    Args:
        root: The folder holding `images/` and `masks/`.

    Returns:
        One `{"image": path, "mask": path}` per pair, sorted by name. Load both with
        `LoadImage(("image", "mask"))`: images decode to `(H, W, 3)` uint8 and one-channel masks
        to `(H, W, 1)` uint8; map 0/255 masks to 0/1 in a transform.

    Raises:
        FileNotFoundError: A folder is missing, or an image has no mask or a mask no image (the
            message names the file).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from mlxkit.data import LoadImage, Stream
        >>> from mlxkit.datasets import make_synthetic_people, segmentation_samples
        >>> root = make_synthetic_people(tempfile.mkdtemp(), 4, size=(64, 48))
        >>> binary = lambda s: {**s, "mask": (s["mask"][..., 0] > 0).astype("int32")}
        >>> stream = Stream(segmentation_samples(root), batch_size=2,
        ...                 transforms=[LoadImage(("image", "mask")), binary])
        >>> batch = next(iter(stream))
        >>> batch["image"].shape, batch["mask"].shape
        ((2, 64, 48, 3), (2, 64, 48))
    """
    root = Path(root)
    folders = {"image": root / "images", "mask": root / "masks"}
    for folder in folders.values():
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is missing: a segmentation dataset needs images/ and masks/ in {root}."
            )
    return pair_by_stem(folders, {"image": IMAGE_SUFFIXES, "mask": (".png",)})


def make_synthetic_people(
    root: str | os.PathLike,
    num: int,
    seed: int = 0,
    *,
    size: Sequence[int] = (128, 128),
) -> Path:
    """Writes `num` images of person-like figures on textured backgrounds, with 0/1 masks.

    A figure is a head, torso, arms and legs (ellipses and capsules) in random poses, sizes and
    clothing colours, lit from one side; one or two stand in each scene, partly out of frame at
    times, among distractor shapes of similar colours, so that the mask is learnable from shape,
    not from colour alone. Output: `images/<i>.png` (RGB) and `masks/<i>.png` (grayscale 0/1).

    A `DONE` file holding the parameters marks finished output, which is reused; an interrupted
    or different earlier run of this function is redone; a folder holding other data is refused.
    Processes generating into the same folder at once take turns on a lock file.

    Args:
        root: The folder to write `images/` and `masks/` into.
        num: The number of images.
        seed: The images are a pure function of the seed (and the other arguments).
        size: `(height, width)` of the images.

    Returns:
        `root`, as a `Path`.

    Example:
        >>> import tempfile
        >>> from mlxkit.datasets import make_synthetic_people
        >>> root = make_synthetic_people(tempfile.mkdtemp(), 2, size=(64, 64))
        >>> sorted(p.name for p in (root / "masks").iterdir())
        ['0.png', '1.png']
    """
    check_int(num, "num")
    check_int(seed, "seed", minimum=0)
    height, width = (int(v) for v in size)
    if len(tuple(size)) != 2 or min(height, width) < 16:
        raise ValueError(f"`size` must be (height, width), each >= 16. Received: size={size!r}")
    root = Path(root)
    params = {
        "generator": "mlxkit.datasets.make_synthetic_people",
        "version": 1,
        "num": int(num),
        "seed": int(seed),
        "size": [height, width],
    }
    marker = GeneratedFolder(root, params, owned=("images", "masks"))
    with marker.exclusive():
        if marker.is_complete():
            return root
        marker.begin()
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        for index in range(num):
            image, mask = render_people_scene(np.random.default_rng([seed, index]), height, width)
            save_png(image, root / "images" / f"{index}.png")
            save_png(mask, root / "masks" / f"{index}.png")
        marker.finish()
    return root


def render_people_scene(
    rng: np.random.Generator, height: int = 128, width: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: a uint8 RGB image `(H, W, 3)` and a uint8 mask `(H, W)` of 0/1.

    Example:
        >>> import numpy as np
        >>> from mlxkit.datasets.segmentation import render_people_scene
        >>> image, mask = render_people_scene(np.random.default_rng(0), 64, 64)
        >>> image.dtype, sorted(np.unique(mask).tolist())
        (dtype('uint8'), [0, 1])
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _background(rng, yy, xx)
    mask = np.zeros((height, width), bool)
    light = rng.uniform(-1, 1)  # horizontal light direction

    # Distractors: blobs and bars in the same colour range as clothing.
    for _ in range(rng.integers(2, 6)):
        color = rng.uniform(0.1, 0.9, 3)
        if rng.random() < 0.5:
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry, rx = rng.uniform(0.05, 0.2) * height, rng.uniform(0.05, 0.2) * width
            shape = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            top, left = rng.uniform(0, height), rng.uniform(0, width)
            shape = (
                (yy >= top)
                & (yy < top + rng.uniform(0.05, 0.4) * height)
                & (xx >= left)
                & (xx < left + rng.uniform(0.05, 0.3) * width)
            )
        image[shape] = color * rng.uniform(0.8, 1.0)

    for _ in range(rng.integers(1, 3)):
        body, parts = _person(rng, yy, xx, height, width)
        for region, color in parts:
            shading = 0.8 + 0.2 * light * np.tanh((xx - xx[region].mean()) / (0.05 * width + 1))
            image[region] = color * shading[region][:, None]
        mask |= body

    image = image + rng.normal(0, 0.02, image.shape)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return image, mask.astype(np.uint8)


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    height = yy.shape[0]
    top, bottom = rng.uniform(0.2, 0.9, 3), rng.uniform(0.1, 0.8, 3)
    t = (yy / height)[..., None]
    image = top * (1 - t) + bottom * t
    # Wallpaper-like texture: a random plane wave and a floor line.
    angle, period = rng.uniform(0, math.pi), rng.uniform(4, 16)
    wave = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * math.pi / period)
    image = image * (1 + rng.uniform(0.05, 0.2) * wave[..., None])
    floor = yy > rng.uniform(0.6, 0.9) * height
    image[floor] *= rng.uniform(0.6, 0.9)
    return image.astype(np.float32)


def _person(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """A figure's mask and coloured parts; `p` is its height, `(fy, fx)` where its feet are."""
    p = rng.uniform(0.45, 0.95) * height
    fy, fx = rng.uniform(0.75, 1.05) * height, rng.uniform(0.15, 0.85) * width
    skin = np.array([0.9, 0.7, 0.55]) * rng.uniform(0.5, 1.05)
    shirt, trousers = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.8, 3)

    def capsule(a: tuple[float, float], b: tuple[float, float], radius: float) -> np.ndarray:
        (ay, ax), (by, bx) = a, b
        dy, dx = by - ay, bx - ax
        t = np.clip(((yy - ay) * dy + (xx - ax) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
        return (yy - ay - t * dy) ** 2 + (xx - ax - t * dx) ** 2 <= radius**2

    def limb(start: tuple[float, float], angle: float, length: float) -> tuple[float, float]:
        # Angles are from straight down, positive towards +x.
        return start[0] + length * math.cos(angle), start[1] + length * math.sin(angle)

    head_y = fy - 0.92 * p
    head = ((yy - head_y) / (0.065 * p)) ** 2 + ((xx - fx) / (0.052 * p)) ** 2 <= 1
    neck = capsule((head_y, fx), (fy - 0.80 * p, fx), 0.025 * p)
    torso = capsule((fy - 0.76 * p, fx), (fy - 0.54 * p, fx), 0.095 * p)

    arms, hands = np.zeros_like(head), np.zeros_like(head)
    for side in (-1, 1):
        shoulder = (fy - 0.78 * p, fx + side * 0.1 * p)
        elbow = limb(shoulder, side * rng.uniform(0.05, 1.2), 0.17 * p)
        hand = limb(elbow, side * rng.uniform(-0.3, 1.6), 0.16 * p)
        arms |= capsule(shoulder, elbow, 0.035 * p) | capsule(elbow, hand, 0.03 * p)
        hands |= capsule(hand, hand, 0.03 * p)

    legs = np.zeros_like(head)
    stride = rng.uniform(-0.35, 0.35)
    for side in (-1, 1):
        hip = (fy - 0.50 * p, fx + side * 0.055 * p)
        knee = limb(hip, side * 0.05 + stride * side, 0.25 * p)
        foot = limb(knee, side * 0.02 + stride * side * 0.5, 0.24 * p)
        legs |= capsule(hip, knee, 0.05 * p) | capsule(knee, foot, 0.042 * p)

    parts = [(legs, trousers), (torso | arms, shirt), (head | neck | hands, skin)]
    body = head | neck | torso | arms | hands | legs
    return body, [(region, color) for region, color in parts if region.any()]
