"""Reference architectures as plain `mlx.nn.Module` factories (NHWC images, logits out).

Each factory follows a published definition layer for layer (the module docstrings name the
source) and takes `weights=` to load a `.safetensors` / `.npz` file strictly. One module per
family; this package re-exports the factories and the shared `BilinearUpsample` layer, and from
`mlxkit.models.pretrained` the loader of torchvision / timm checkpoints (`load_pretrained`) and
the fine-tuning helpers (`freeze_backbone`, `FrozenBatchNorm`, `fold_input_normalization`).

Example:
    >>> import mlx.core as mx
    >>> from mlxkit.models import flux_mnist_cnn
    >>> flux_mnist_cnn()(mx.zeros((1, 28, 28, 1))).shape
    (1, 10)
"""

from mlxkit.models.dcgan import dcgan_discriminator, dcgan_generator
from mlxkit.models.depth import depth_resnet20
from mlxkit.models.flux import flux_mnist_cnn
from mlxkit.models.gcn import gcn, normalized_adjacency
from mlxkit.models.layers import BilinearUpsample
from mlxkit.models.llama import Llama, llama
from mlxkit.models.mlp import gluon_mlp
from mlxkit.models.mobilenet import mobilenet_v3_large
from mlxkit.models.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenBatchNorm,
    LoadReport,
    fold_input_normalization,
    freeze_backbone,
    load_pretrained,
)
from mlxkit.models.resnet import resnet18, resnet50
from mlxkit.models.segmentation import deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large
from mlxkit.models.unet import unet
from mlxkit.models.vgg import vgg19_cifar

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BilinearUpsample",
    "FrozenBatchNorm",
    "Llama",
    "LoadReport",
    "dcgan_discriminator",
    "dcgan_generator",
    "deeplabv3_mobilenet_v3_large",
    "depth_resnet20",
    "flux_mnist_cnn",
    "fold_input_normalization",
    "freeze_backbone",
    "gcn",
    "gluon_mlp",
    "llama",
    "load_pretrained",
    "lraspp_mobilenet_v3_large",
    "mobilenet_v3_large",
    "normalized_adjacency",
    "resnet18",
    "resnet50",
    "unet",
    "vgg19_cifar",
]
