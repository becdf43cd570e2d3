"""Dataset loaders: files on disk to arrays, or to sample lists for `mlxkit.data.Stream`.

In-memory datasets (`load_mnist`, `load_fashion_mnist`, `load_cifar10`, `load_cora`) return NumPy
arrays, with class names in `CLASS_NAMES`; file datasets
(`depth_samples`, `segmentation_samples`, `image_folder_samples`) return lists of path dicts that a
`Stream` loads in worker threads. `make_synthetic_depth` and `make_synthetic_people` write small
learnable stand-ins in the same layouts; `make_synthetic_digits` returns MNIST-shaped arrays.
Nothing is downloaded and nothing is unpickled.
"""

from mlxkit.datasets.cifar import CIFAR10_CLASSES, load_cifar10
from mlxkit.datasets.cora import Cora, CoraSplit, load_cora
from mlxkit.datasets.depth import depth_samples, make_synthetic_depth
from mlxkit.datasets.digits import make_synthetic_digits
from mlxkit.datasets.image_folder import image_folder_samples
from mlxkit.datasets.mnist import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    load_fashion_mnist,
    load_mnist,
)
from mlxkit.datasets.segmentation import make_synthetic_people, segmentation_samples

#: Class names by dataset: `CLASS_NAMES["fashion_mnist"][label]` names a label.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": MNIST_CLASSES,
    "fashion_mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
}

__all__ = [
    "CIFAR10_CLASSES",
    "CLASS_NAMES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "Cora",
    "CoraSplit",
    "depth_samples",
    "image_folder_samples",
    "load_cifar10",
    "load_cora",
    "load_fashion_mnist",
    "load_mnist",
    "make_synthetic_depth",
    "make_synthetic_digits",
    "make_synthetic_people",
    "segmentation_samples",
]
