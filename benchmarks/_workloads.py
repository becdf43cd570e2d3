"""The benchmark workloads, shared by every framework's worker: sizes, data, sample order.

NumPy only, so that the workers running in the peers' virtual environments (PyTorch, Keras) import
it without mlxkit. Every framework trains on the same arrays, in the same order (`order`), from the
same initial weights (written by the MLX worker, converted by each peer), with plain SGD, so the
losses after one epoch can be compared.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import struct
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MNIST = os.path.join(HERE, "..", "..", "shared", "data", "mnist")


@dataclass(frozen=True)
class Workload:
    """One benchmark problem. `num_train // batch_size` steps make an epoch (last batch dropped)."""

    name: str
    model: str  # "mlp", "cnn" or "depth"
    batch_size: int
    num_train: int
    learning_rate: float
    loss: str  # "cross_entropy" or "mse"
    description: str

    @property
    def steps(self) -> int:
        return self.num_train // self.batch_size


WORKLOADS = {
    "mlp": Workload(
        "mlp", "mlp", 64, 60_000, 0.1, "cross_entropy", "MLP 784-64-64-10, MNIST, 60,000 samples"
    ),
    "cnn": Workload(
        "cnn",
        "cnn",
        64,
        6_400,
        0.1,
        "cross_entropy",
        "CNN conv16-pool-conv32-pool-fc64-fc10, MNIST, first 6,400 samples",
    ),
    "depth": Workload(
        "depth",
        "depth",
        8,
        192,
        0.001,
        "mse",
        "depth_resnet20 at 32x64, 192 synthetic scenes",
    ),
}

# The same models on fewer samples: `--quick` for a look in a few minutes, `smoke` for the tests.
SIZES = {
    "full": {"mlp": 60_000, "cnn": 6_400, "depth": 192},
    "quick": {"mlp": 60_000, "cnn": 1_280, "depth": 64},
    "smoke": {"mlp": 2_048, "cnn": 256, "depth": 16},
}
DEPTH_SIZE = (32, 64)


def workload(name: str, size: str = "full") -> Workload:
    return replace(WORKLOADS[name], num_train=SIZES[size][name])


def read_mnist_train(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's training images (60000, 28, 28) uint8 and labels, from the gzipped IDX files."""
    arrays = []
    for name, magic in (("train-images-idx3-ubyte", 2051), ("train-labels-idx1-ubyte", 2049)):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, "rb") as file:
                data = file.read()
        else:
            with gzip.open(path + ".gz", "rb") as file:
                data = file.read()
        found = struct.unpack(">I", data[:4])[0]
        if found != magic:
            raise ValueError(f"{name}: IDX magic {found}, expected {magic}")
        dims = 3 if magic == 2051 else 1
        shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
        arrays.append(np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape))
    return arrays[0], arrays[1]


def synthetic_depth(num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Street-like scenes: depth grows towards the horizon, and the image's shading follows it."""
    height, width = DEPTH_SIZE
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[None, :, None]
    cols = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, None, :]
    horizon = rng.uniform(0.2, 0.5, size=(num, 1, 1)).astype(np.float32)
    tilt = rng.uniform(-0.3, 0.3, size=(num, 1, 1)).astype(np.float32)
    depth = 1.0 + 4.0 * np.clip(1.0 - rows + horizon + tilt * cols, 0.0, 1.5) ** 2
    color = rng.uniform(0.3, 1.0, size=(num, 1, 1, 3)).astype(np.float32)
    noise = rng.normal(0.0, 0.05, size=(num, height, width, 3)).astype(np.float32)
    images = color / depth[..., None] * 2.0 + noise
    return images.astype(np.float32), (depth[..., None] / 5.0).astype(np.float32)


def load_data(name: str, size: str = "full", *, mnist: str = DEFAULT_MNIST, reader=None):
    """`(x, y)` NumPy arrays of one workload: NHWC float32 images (flat for the MLP), int32 labels.

    `reader(folder) -> (images, labels)` reads MNIST's training set (default: `read_mnist_train`).
    """
    spec = workload(name, size)
    if spec.model == "depth":
        return synthetic_depth(spec.num_train)
    images, labels = (reader or read_mnist_train)(mnist)
    images, labels = images[: spec.num_train], labels[: spec.num_train]
    x = images.astype(np.float32) / 255.0
    x = x.reshape(len(x), -1) if spec.model == "mlp" else x[..., None]
    return x, labels.astype(np.int32)


def upsample_matrix(size: int) -> np.ndarray:
    """Bilinear x2 with align_corners=True along one axis, as a (2 * size, size) matrix."""
    out = 2 * size
    matrix = np.zeros((out, size), np.float32)
    positions = np.arange(out) * (size - 1) / max(out - 1, 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, size - 1)
    weight = positions - low
    matrix[np.arange(out), low] += 1 - weight
    matrix[np.arange(out), high] += weight
    return matrix


def order(num: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch, as `mlxkit`'s `fit(shuffle=True, seed=seed)` visits it."""
    return np.random.default_rng([seed, epoch]).permutation(num)


def clock() -> tuple[float, float]:
    """Wall time and this process's CPU time (all its threads).

    Waiting for a busy core adds to the first only: on a machine shared with other jobs the CPU
    time is the steadier measure of the work a framework does.
    """
    return time.perf_counter(), time.process_time()


def epoch_times(start: tuple[float, float], ends: list[tuple[float, float]]) -> dict:
    """First and second epoch, wall and CPU seconds, from `clock()` readings."""
    first, second = ends[0], ends[1]
    return {
        "first_epoch_s": first[0] - start[0],
        "epoch_s": second[0] - first[0],
        "first_epoch_cpu_s": first[1] - start[1],
        "epoch_cpu_s": second[1] - first[1],
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    """Writes a worker's result as one JSON line on stdout, the orchestrator reads the last one."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
