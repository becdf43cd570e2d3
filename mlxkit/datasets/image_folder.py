"""Class-per-folder image trees (ImageNet style): `<root>/<class>/<image>` to labelled samples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mlxkit.datasets._files import check_image_complete

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def image_folder_samples(
    root: str | os.PathLike, *, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> tuple[list[dict[str, object]], list[str]]:
    """Lists `<root>/<class name>/<file>` as samples with integer labels.

    Classes are the subfolders, sorted by name; label `i` is `class_names[i]`. Files are found at
    any depth below a class folder and matched by extension, case-insensitively (ImageNet's
    `.JPEG`). A JPEG or PNG whose end marker is missing (a truncated copy) is refused here,
    naming the file, rather than decoded half grey later. Decoding and resizing happen in a
    `Stream`, in mlx-data's worker threads.

    Args:
        root: The folder whose subfolders are the classes.
        suffixes: The accepted file extensions.

    Returns:
        `(samples, class_names)`: one `{"image": path, "label": int}` per file, in class then file
        name order, and the sorted class names.

    Example:
        >>> from mlxkit.data import CenterCrop, LoadImage, Normalize, ResizeShortSide, Stream
        >>> from mlxkit.datasets import image_folder_samples
        >>> def imagenet(root):  # the Flux ResNet tutorial's evaluation pipeline
        ...     samples, class_names = image_folder_samples(root)
        ...     return Stream(samples, batch_size=64, shuffle=False, drop_last=False, transforms=[
        ...         LoadImage("image"), ResizeShortSide(256), CenterCrop(224),
        ...         Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), scale=1 / 255)])
    """
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist. Received: root={root!r}")
    allowed = {s.lower() for s in suffixes}
    class_names = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not class_names:
        raise FileNotFoundError(
            f"{folder} has no class subfolders; expected <root>/<class name>/<image files>."
        )
    samples: list[dict[str, object]] = []
    for label, name in enumerate(class_names):
        files = sorted(
            p
            for p in (folder / name).rglob("*")
            if p.is_file() and p.suffix.lower() in allowed and not p.name.startswith(".")
        )
        if not files:
            raise FileNotFoundError(
                f"Class folder {folder / name} holds no {'/'.join(sorted(allowed))} files; remove "
                "it or add images, since its label would never be seen."
            )
        for path in files:
            check_image_complete(path)
        samples.extend({"image": str(path), "label": label} for path in files)
    return samples, class_names
