"""Data pipelines on mlx-data: `Stream` (epoch order, sharding, batching, prefetch) and transforms.

`Stream` turns a list of samples into reproducible batches for `Trainer.fit` or a plain loop;
`mlxkit.data.transforms` loads and resizes, `mlxkit.data.augment` augments images together with
their masks or depth maps. Dataset loaders live in `mlxkit.datasets`.
"""

from mlxkit.data.augment import (
    RandomBlur,
    RandomBrightness,
    RandomCrop,
    RandomFlip,
    RandomNoise,
    RandomRotation,
    RandomTranslation,
)
from mlxkit.data.stream import Stream
from mlxkit.data.transforms import (
    BufferTransform,
    CenterCrop,
    LoadImage,
    LoadNumpy,
    Normalize,
    Resize,
    ResizeShortSide,
    Transform,
)

__all__ = [
    "BufferTransform",
    "CenterCrop",
    "LoadImage",
    "LoadNumpy",
    "Normalize",
    "RandomBlur",
    "RandomBrightness",
    "RandomCrop",
    "RandomFlip",
    "RandomNoise",
    "RandomRotation",
    "RandomTranslation",
    "Resize",
    "ResizeShortSide",
    "Stream",
    "Transform",
]
