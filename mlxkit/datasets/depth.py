"""Monocular depth data: the Kaggle "Cityscapes depth and segmentation" layout and a synthetic twin.

Layout (the MLX depth article's):

    <root>/<split>/image/<name>.npy   (128, 256, 3) float32 in [0, 1]
    <root>/<split>/depth/<name>.npy   (128, 256, 1) float32 inverse depth, 0 = invalid (sky)
    <root>/<split>/label/<name>.npy   optional segmentation labels

`depth_samples` pairs the files by name and checks their headers; `make_synthetic_depth` renders
scenes in that layout whose depth follows from the image by perspective, so a small conv model can
learn it where the real data is not at hand.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from mlxkit.datasets._files import GeneratedFolder, npy_header, pair_by_stem, save_npy

import numpy as np

SPLITS = ("train", "val")


def depth_samples(
    root: str | os.PathLike, split: str = "train", *, labels: bool = False
) -> list[dict[str, str]]:
    """Lists the image and depth (and label) `.npy` files of one split, paired by file name.

    Every file's header is read (not its data) to check that it is a numeric array mlx-data can
    load, never a pickle, and that all images, depth maps and labels have consistent shapes.

    Args:
        root: The dataset folder, holding `<split>/image`, `<split>/depth` and optionally
            `<split>/label`.
        split: The subfolder, e.g. `"train"` or `"val"`.
        labels: Also pair `<split>/label/*.npy` (segmentation labels) under the key `"label"`.

    Returns:
        One dict per sample, sorted by name: `{"image": path, "depth": path}` (plus `"label"`), for
        a `Stream` with `transforms=[LoadNumpy(("image", "depth"))]`.

    Raises:
        FileNotFoundError: A folder is missing, or a file has no partner (the message names it).
        ValueError: A file is pickled, not loadable by mlx-data, or of the wrong shape.

    Example:
        >>> import tempfile
        >>> from mlxkit.datasets import make_synthetic_depth, depth_samples
        >>> root = make_synthetic_depth(tempfile.mkdtemp(), 4, 2, height=32, width=64)
        >>> samples = depth_samples(root, "train")
        >>> len(samples), sorted(samples[0])
        (4, ['depth', 'image'])
    """
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise FileNotFoundError(
            f"No split folder {folder}. Received: split={split!r}; "
            f"the folders in {root} are {available}."
        )
    keys = ("image", "depth", "label") if labels else ("image", "depth")
    folders = {key: folder / key for key in keys}
    for key in keys:
        if not folders[key].is_dir():
            needs = "image/, depth/ and (with labels=True) label/"
            raise FileNotFoundError(f"{folders[key]} is missing: a depth split needs {needs}.")
    samples = pair_by_stem(folders, {key: (".npy",) for key in folders})

    expected: dict[str, tuple[tuple[int, ...], np.dtype, str]] = {}
    for sample in samples:
        for key, path in sample.items():
            shape, dtype = npy_header(Path(path))
            if key not in expected:
                expected[key] = (shape, dtype, path)
            elif (shape, dtype) != expected[key][:2]:
                raise ValueError(
                    f"{path} holds a {shape} {dtype} array, but {expected[key][2]} holds "
                    f"{expected[key][0]} {expected[key][1]}: every {key} file needs the same shape "
                    "and dtype."
                )
    image_shape, depth_shape = expected["image"][0], expected["depth"][0]
    if len(image_shape) != 3 or image_shape[:2] != depth_shape[:2]:
        raise ValueError(
            f"Images must be (height, width, channels) and depth maps (height, width, 1) of the "
            f"same height and width. Received: image {image_shape} ({expected['image'][2]}), "
            f"depth {depth_shape} ({expected['depth'][2]})."
        )
    return samples


def make_synthetic_depth(
    root: str | os.PathLike,
    num_train: int,
    num_val: int,
    seed: int = 0,
    *,
    height: int = 128,
    width: int = 256,
) -> Path:
    """Renders street-like scenes whose depth follows from the image, in the Kaggle layout.

    Each scene is a pinhole view over a ground plane: the camera's height, pitch (the horizon row)
    and light vary per scene. The ground carries a tiled texture fixed in world units, so its tiles
    shrink and its shading fades into haze with distance; the sky above the horizon has depth 0
    (invalid, as in Cityscapes). Textured, shaded boxes stand on the ground at known distances, with
    their size and foot row set by perspective, and occlude one another far to near. Depth is
    inverse distance in 1/metres, so an image-reading model can recover it, and a mean-depth
    baseline cannot.

    Labels (`label/*.npy`, `(height, width)` int32) are 0 for sky, 1 for ground, 2 for objects.

    Finished output is detected and reused (a `DONE` file holds the parameters); an interrupted
    or different earlier run of this function is detected and redone; a folder holding other data
    is refused. Processes generating into the same folder at once (the ranks of a data-parallel
    run) take turns on a lock file, so one writes and the others reuse its output.

    Args:
        root: The folder to write `train/` and `val/` into.
        num_train: Scenes in `train/`.
        num_val: Scenes in `val/`.
        seed: The scenes are a pure function of the seed (and the other arguments).
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        `root`, as a `Path`.

    Example:
        >>> import tempfile, numpy as np
        >>> from mlxkit.datasets import make_synthetic_depth
        >>> root = make_synthetic_depth(tempfile.mkdtemp(), 2, 1, height=32, width=64)
        >>> np.load(root / "train" / "depth" / "0.npy").shape
        (32, 64, 1)
    """
    for name, value, minimum in (
        ("num_train", num_train, 0),
        ("num_val", num_val, 0),
        ("seed", seed, 0),
        ("height", height, 16),
        ("width", width, 16),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    if num_train + num_val == 0:
        raise ValueError("`num_train` + `num_val` must be positive. Received: 0 scenes.")
    root = Path(root)
    params = {
        "generator": "mlxkit.datasets.make_synthetic_depth",
        "version": 1,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "seed": int(seed),
        "height": int(height),
        "width": int(width),
    }
    marker = GeneratedFolder(root, params, owned=SPLITS)
    with marker.exclusive():
        if marker.is_complete():
            return root
        marker.begin()
        for split, count, stream in (("train", num_train, 0), ("val", num_val, 1)):
            for key in ("image", "depth", "label"):
                (root / split / key).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng([seed, stream, index])
                image, depth, label = render_depth_scene(rng, height, width)
                save_npy(root / split / "image" / f"{index}.npy", image)
                save_npy(root / split / "depth" / f"{index}.npy", depth)
                save_npy(root / split / "label" / f"{index}.npy", label)
        marker.finish()
    return root


def render_depth_scene(
    rng: np.random.Generator, height: int = 128, width: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic scene: image `(H, W, 3)` in [0, 1], inverse depth `(H, W, 1)`, labels `(H, W)`.

    Example:
        >>> import numpy as np
        >>> from mlxkit.datasets.depth import render_depth_scene
        >>> image, depth, label = render_depth_scene(np.random.default_rng(0), 32, 64)
        >>> image.shape, depth.shape, bool(depth[label == 0].max() == 0)
        ((32, 64, 3), (32, 64, 1), True)
    """
    focal = width * rng.uniform(0.9, 1.1)
    camera_height = rng.uniform(1.3, 1.9)
    horizon = height * rng.uniform(0.32, 0.5)
    center = width / 2 + rng.uniform(-0.05, 0.05) * width
    light = rng.uniform(0.75, 1.15)
    haze = np.array([0.72, 0.76, 0.82]) * rng.uniform(0.85, 1.05)
    fog_distance = rng.uniform(35, 70)

    rows = np.arange(height, dtype=np.float64)[:, None] + 0.5
    cols = np.arange(width, dtype=np.float64)[None, :] + 0.5
    below = rows > horizon + 0.5
    # Ground distance from the pinhole model: a row d pixels under the horizon is f*h/d away.
    # Sky rows get a placeholder distance of 1 m; their depth is set to 0 below.
    distance = np.where(below, focal * camera_height / np.maximum(rows - horizon, 1e-3), 1.0)
    distance = np.broadcast_to(distance, (height, width))
    lateral = (cols - center) * distance / focal

    # Ground: 2 m tiles fixed in world units (they shrink with distance) over a road band.
    tiles = (np.floor(lateral / 2.0) + np.floor(distance / 2.0)) % 2
    road = np.abs(lateral) < rng.uniform(3.0, 5.0)
    ground_a, ground_b = rng.uniform(0.25, 0.45, 3), rng.uniform(0.45, 0.65, 3)
    ground = np.where(tiles[..., None] > 0, ground_a, ground_b)
    ground = np.where(road[..., None], ground * 0.7 + 0.1, ground)

    sky_top = np.array([0.35, 0.55, 0.9]) * rng.uniform(0.8, 1.1)
    t = np.clip(rows / max(horizon, 1.0), 0, 1)[..., None]
    sky = np.broadcast_to(sky_top * (1 - t) + haze * t, (height, width, 3))

    image = np.where(below[..., None], ground, sky)
    inverse = np.where(below, 1.0 / distance, 0.0)
    label = np.broadcast_to(np.where(below, 1, 0), (height, width)).astype(np.int32)
    fog = np.where(below, 1 - np.exp(-distance / fog_distance), 0.0)[..., None]

    # Objects, far to near so that nearer ones cover farther ones.
    count = rng.integers(2, 7)
    depths = np.sort(rng.uniform(4.0, 45.0, count))[::-1]
    for z in depths:
        x = rng.uniform(-9, 9)
        box_width, box_height = rng.uniform(1.0, 4.0), rng.uniform(1.2, 4.5)
        left = round(center + focal * (x - box_width / 2) / z)
        right = round(center + focal * (x + box_width / 2) / z)
        bottom = round(horizon + focal * camera_height / z)
        top = round(bottom - focal * box_height / z)
        left, right = max(left, 0), min(right, width)
        top, bottom_clipped = max(top, 0), min(bottom, height)
        if left >= right or top >= bottom_clipped:
            continue
        region = (slice(top, bottom_clipped), slice(left, right))
        # Texture fixed on the object's face in metres (0.5 m stripes), lit from above.
        face_x = (cols[:, left:right] - center) * z / focal - x
        face_y = (bottom - rows[top:bottom_clipped]) * z / focal
        stripes = (np.floor(face_x / 0.5) + np.floor(face_y / 0.5)) % 2
        color = rng.uniform(0.15, 0.95, 3)
        shade = 0.75 + 0.25 * np.clip(face_y / box_height, 0, 1)
        texture = color * (0.8 + 0.2 * stripes[..., None]) * shade[..., None]
        image[region] = texture
        inverse[region] = 1.0 / z
        label[region] = 2
        fog[region] = 1 - math.exp(-z / fog_distance)
        # A contact shadow on the ground just under the box.
        shadow_rows = slice(
            bottom_clipped, min(bottom_clipped + max(1, (right - left) // 12), height)
        )
        image[shadow_rows, left:right] *= 0.6

    image = (image * light) * (1 - fog) + haze * fog
    image = image + rng.normal(0, 0.01, image.shape)
    image = np.clip(image, 0, 1).astype(np.float32)
    return image, inverse[..., None].astype(np.float32), label
