"""The Flux model-zoo VGG on CIFAR-10 (`vision/vgg_cifar10`), ported to mlxkit.

VGG-19 with batch normalisation (every 3x3 conv followed by ReLU then BatchNorm, five max-pools,
Dense 512 -> 4096 -> 4096 -> 10 with Dropout 0.5), trained from scratch with Adam (learning rate
3e-4) on the logit cross-entropy, 10% of the training set held out for validation, and the test
accuracy measured at the end. Pixels are scaled to [0, 1] and nothing else, as in the zoo.

Run:
    python examples/flux/vgg_cifar10.py --data DIR                   # CIFAR-10 binary release
    python examples/flux/vgg_cifar10.py --data DIR --num-train 5000  # a subset of it
    python examples/flux/vgg_cifar10.py                              # built-in shapes, minutes
    python examples/flux/vgg_cifar10.py --quick                      # seconds (CI smoke test)

VGG-19 has 39 million parameters and one training step of 16 images takes a second on a laptop
CPU (an epoch of CIFAR-10 takes hours there). So without `--data` the example trains on a small
generated set instead: 10 classes of coloured shapes (disk, ring, square, ...) on 32x32 images,
640 of them for training, for 3 epochs with batches of 16. The zoo's settings are
`--data DIR --epochs 50 --batch-size 128`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# isort: off
from mlxkit import Trainer  # first: importing mlxkit gives mlx.core a fast BLAS on Linux
import mlx.core as mx
import mlx.optimizers as optim

# isort: on
from mlxkit.callbacks import CSVLogger
from mlxkit.datasets import CIFAR10_CLASSES, load_cifar10
from mlxkit.images import image_grid, save_png
from mlxkit.models import vgg19_cifar

SHAPES = (
    "disk",
    "ring",
    "square",
    "triangle",
    "plus",
    "cross",
    "diamond",
    "horizontal bars",
    "vertical bars",
    "two dots",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with the CIFAR-10 .bin files")
    parser.add_argument("--out", type=Path, default=Path("runs/flux_vgg_cifar10"))
    parser.add_argument("--num-train", type=int, help="training images (default: all of --data)")
    parser.add_argument("--num-test", type=int, help="test images (default: all of --data)")
    parser.add_argument("--epochs", type=int, default=3, help="tutorial: 50")
    parser.add_argument("--batch-size", type=int, default=16, help="tutorial: 128")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        # One shape per class, one full batch (9 after the 10% validation split) per epoch, at a
        # sixth of the learning rate: four steps that visibly fit, where batches of 4 at 3e-4 jump
        # around with BatchNorm and dropout.
        args.num_train, args.num_test, args.epochs, args.batch_size = 10, 8, 4, 9
        args.learning_rate = 5e-5
    return args


def make_shapes(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`num` 32x32 RGB images of the ten `SHAPES` on plain backgrounds, with jitter and noise.

    Each class has its own shape and its own hue (ten hues around the colour wheel, jittered),
    drawn on a dark background: an easy task, so that VGG-19 shows it learns within the few
    hundred steps a CPU affords.

    Returns uint8 images `(num, 32, 32, 3)` and labels, as `load_cifar10` does.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % len(SHAPES))
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    hues = np.arange(len(SHAPES)) / len(SHAPES) * 2 * np.pi
    # Ten saturated colours: cosine waves a third of a turn apart per channel, from each hue.
    palette = 0.55 + 0.4 * np.cos(hues[:, None] - np.array([0, 2, 4]) * np.pi / 3)
    images = np.empty((num, 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(12, 20, size=2)
        r = rng.uniform(7, 11)
        angle = rng.uniform(-0.3, 0.3)
        # Coordinates relative to the centre, rotated a little and scaled so the shape has size 1.
        u = ((xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)) / r
        v = (-(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)) / r
        d = np.hypot(u, v)
        mask = {
            "disk": d < 1,
            "ring": (d < 1) & (d > 0.6),
            "square": (np.abs(u) < 0.8) & (np.abs(v) < 0.8),
            "triangle": (v < 0.7) & (v > 1.6 * np.abs(u) - 0.9),
            "plus": ((np.abs(u) < 0.25) | (np.abs(v) < 0.25)) & (d < 1),
            "cross": ((np.abs(u - v) < 0.35) | (np.abs(u + v) < 0.35)) & (d < 1),
            "diamond": np.abs(u) + np.abs(v) < 1,
            "horizontal bars": (np.abs(u) < 1) & (np.abs(v) < 1) & (np.floor(v * 2.5) % 2 == 0),
            "vertical bars": (np.abs(u) < 1) & (np.abs(v) < 1) & (np.floor(u * 2.5) % 2 == 0),
            "two dots": (np.hypot(u - 0.5, v) < 0.4) | (np.hypot(u + 0.5, v) < 0.4),
        }[SHAPES[label]]
        foreground = np.clip(palette[label] + rng.normal(0, 0.05, size=3), 0, 1)
        background = rng.uniform(0, 0.3, size=3)
        image = np.where(mask[..., None], foreground, background)
        image = image + rng.normal(0, 0.05, size=image.shape)
        images[i] = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def load(args: argparse.Namespace):
    if args.data is not None:
        print(f"CIFAR-10 from {args.data}")
        (x_train, y_train), (x_test, y_test) = load_cifar10(args.data)
        class_names = CIFAR10_CLASSES
    else:
        args.num_train = args.num_train or 640
        args.num_test = args.num_test or 320
        print(
            f"No --data: {args.num_train} generated shape images for training "
            f"({args.num_test} for test); pass --data for CIFAR-10"
        )
        x_train, y_train = make_shapes(args.num_train, seed=args.seed)
        x_test, y_test = make_shapes(args.num_test, seed=args.seed + 1)
        class_names = SHAPES
    x_train, y_train = x_train[: args.num_train], y_train[: args.num_train]
    x_test, y_test = x_test[: args.num_test], y_test[: args.num_test]

    # The zoo's `float(x)`: pixels in [0, 1], no mean or std normalisation.
    def prepare(x):
        return x.astype(np.float32) / 255

    data = (prepare(x_train), y_train.astype(np.int32)), (prepare(x_test), y_test.astype(np.int32))
    return data, class_names


def save_class_grid(images: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 6):
    """One row per class, `per_class` training images each: what the model learns from."""
    rows = []
    for label in range(int(labels.max()) + 1):
        members = images[labels == label][:per_class]
        if len(members):
            rows.append(list(members))
    if rows:
        save_png(image_grid(rows), path)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ((x_train, y_train), (x_test, y_test)), class_names = load(args)
    save_class_grid(x_train, y_train, args.out / "data.png")

    mx.random.seed(args.seed)  # the initial weights
    model = vgg19_cifar(num_classes=len(class_names))
    trainer = Trainer(
        model,
        optim.Adam(learning_rate=args.learning_rate),
        loss="cross_entropy",  # the zoo's logitcrossentropy
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = trainer.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_split=args.validation_split,  # the zoo's splitobs(at=0.9)
        callbacks=[CSVLogger(args.out / "log.csv")],
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    epochs = len(history.epoch)
    print(f"Trained {epochs} epochs in {seconds:.0f} s ({seconds / max(epochs, 1):.1f} s/epoch)")

    test = trainer.evaluate(x_test, y_test, batch_size=64, return_dict=True)
    chance = 1 / len(class_names)
    print(f"Test accuracy on {len(x_test)} images: {test['accuracy']:.4f} (chance {chance:.2f})")
    model.save_weights(str(args.out / "vgg19.safetensors"))
    with open(args.out / "evaluation.json", "w") as f:
        json.dump({"test": test, "epochs": epochs, "seconds": seconds}, f, indent=2)
    print(f"Everything is in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
