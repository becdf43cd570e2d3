"""Segmenting cell membranes with a U-Net: the Flux model-zoo U-Net, ported to mlxkit.

The Flux version (model-zoo `vision/carvana image masking/unet.jl`) trains a U-Net with the logit
binary cross-entropy and Adam and watches the Dice coefficient; the U-Net itself is Ronneberger et
al.'s, made for the ISBI 2012 challenge: finding the membranes between cells in electron
microscopy. Here the U-Net is `mlxkit.models.unet` (double 3x3 conv + BatchNorm + ReLU blocks,
four poolings, transposed-conv upsampling, skip connections), the loss is
`mlxkit.losses.binary_cross_entropy` on logits, and the metrics are the Dice coefficient and the
pixel accuracy of the membrane mask.

Run:
    python examples/flux/unet.py                           # generated membrane images, minutes
    python examples/flux/unet.py --base-channels 32        # the full-width U-Net (7.8M params)
    python examples/flux/unet.py --data DIR --size 256     # train/ and val/ with images/, masks/
    python examples/flux/unet.py --quick                   # seconds (CI smoke test)

Without `--data`, membrane-like images are generated once under `~/.cache/mlxkit/flux_unet`:
Voronoi cells (the cells) whose boundaries are dark, blurred membranes, with dark vesicles inside
the cells as distractors (dark is not enough: the network has to find thin closed curves),
uneven cell shading and noise. `--data DIR` reads `DIR/train` and `DIR/val`, each with `images/`
and `masks/` of the same names (masks nonzero on the membranes; `--invert-masks` for ISBI 2012,
whose labels are 0 on the membranes).
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
from mlxkit.data import LoadImage, Resize, Stream
from mlxkit.datasets import segmentation_samples
from mlxkit.images import colormap, image_grid, save_png
from mlxkit.metrics import Accuracy, Metric
from mlxkit.models import unet


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with train/ and val/ (images/, masks/)")
    parser.add_argument("--invert-masks", action="store_true", help="masks are 0 on membranes")
    parser.add_argument("--out", type=Path, default=Path("runs/flux_unet"))
    parser.add_argument("--base-channels", type=int, default=8, help="32: the full U-Net")
    parser.add_argument("--size", type=int, default=64, help="image side, a multiple of 16")
    parser.add_argument("--num-train", type=int, default=128, help="generated training images")
    parser.add_argument("--num-val", type=int, default=32, help="generated validation images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        # Four epochs of 16 images: enough for the training loss and Dice to show it learns.
        args.base_channels, args.size, args.epochs, args.batch_size = 4, 32, 4, 4
        args.num_train, args.num_val = 16, 4
    if args.size % 16:
        parser.error(f"--size must be a multiple of 16 (four 2x2 poolings). Received: {args.size}")
    return args


def membrane_image(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One grey image of cells and its membrane mask, both `(size, size)` uint8 (mask 0/255)."""
    num_cells = rng.integers(8, 16) * size**2 // 64**2
    centres = rng.uniform(-4, size + 4, size=(num_cells, 2))
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    pixels = np.stack([ys.ravel(), xs.ravel()], axis=1)
    distance = np.sqrt(((pixels[:, None, :] - centres[None]) ** 2).sum(axis=-1))
    nearest = np.sort(distance, axis=1)
    owner = np.argmin(distance, axis=1).reshape(size, size)
    # Distance to the boundary between the two nearest cells (exact for Voronoi bisectors).
    gap = ((nearest[:, 1] - nearest[:, 0]) / 2).reshape(size, size)
    width = rng.uniform(0.8, 1.4)
    mask = gap < width

    shade = rng.uniform(0.55, 0.85, size=num_cells)[owner]  # each cell its own grey
    image = shade - 0.45 * np.exp(-((gap / (width + 0.3)) ** 2))  # dark, soft-edged membranes
    for _ in range(rng.integers(3, 8) * size**2 // 64**2):  # vesicles: dark round distractors
        cy, cx = rng.uniform(0, size, size=2)
        radius = rng.uniform(1.2, 2.5)
        image = image - 0.35 * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / radius**2)
    image = _blur(image + rng.normal(0, 0.06, size=image.shape))
    image = image + rng.normal(0, 0.03, size=image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask.astype(np.uint8) * 255


def _blur(image: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur with edge padding: the microscope's point spread, roughly."""
    taps = np.array([0.25, 0.5, 0.25])
    padded = np.pad(image, 1, mode="edge")
    rows = sum(t * padded[i : i + image.shape[0], :] for i, t in enumerate(taps))
    return sum(t * rows[:, j : j + image.shape[1]] for j, t in enumerate(taps))


def make_membranes(root: Path, *, num_train: int, num_val: int, size: int, seed: int) -> Path:
    """Writes `root/{train,val}/{images,masks}/<n>.png` once."""
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        for i in range(count):
            image, mask = membrane_image(size, rng)
            save_png(image, root / split / "images" / f"{i:04d}.png")
            save_png(mask, root / split / "masks" / f"{i:04d}.png")
    (root / "done").write_text("")
    return root


class Dice(Metric):
    """Dice coefficient 2|P n T| / (|P| + |T|) of the predicted (logit > 0) and true masks."""

    direction = "max"  # what EarlyStopping / ModelCheckpoint with mode="auto" read

    def __init__(self, *, name: str = "dice") -> None:
        super().__init__(name=name)
        self.state["overlap"] = mx.array(0.0)
        self.state["total"] = mx.array(0.0)

    def update(self, outputs, targets, mask=None):
        predicted = (outputs > 0).astype(mx.float32)
        self.state["overlap"] = self.state["overlap"] + mx.sum(predicted * targets)
        self.state["total"] = self.state["total"] + mx.sum(predicted) + mx.sum(targets)

    def result(self):
        return 2 * self.state["overlap"] / mx.maximum(self.state["total"], 1.0)


def stream(root: Path, args: argparse.Namespace, *, train: bool) -> Stream:
    def to_float(sample):
        mask = sample["mask"][..., :1] > 127
        if args.invert_masks:
            mask = ~mask
        return {"image": sample["image"] / np.float32(255), "mask": mask.astype(np.float32)}

    resize = [Resize(args.size, keys=("image", "mask"))] if args.data is not None else []
    return Stream(
        segmentation_samples(root),
        batch_size=args.batch_size,
        shuffle=train,
        drop_last=train,
        seed=args.seed,
        transforms=[LoadImage(("image", "mask")), *resize, to_float],
    )


def save_predictions(trainer: Trainer, val: Stream, path: Path, count: int = 4) -> None:
    """Rows of input | true membranes | predicted membrane probability, for validation images."""
    val.set_epoch(0)
    batch = next(iter(val))
    images, masks = batch["image"][:count], batch["mask"][:count]
    probabilities = np.array(mx.sigmoid(trainer.predict(images, batch_size=count)))
    rows = [
        [image, mask, colormap(probability, vmin=0, vmax=1)]
        for image, mask, probability in zip(images, masks, probabilities)
    ]
    save_png(image_grid(rows), path)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.data
    if root is None:
        cache = Path.home() / ".cache" / "mlxkit" / "flux_unet"
        name = f"membranes-{args.size}-{args.num_train}-{args.num_val}-seed{args.seed}"
        root = make_membranes(
            cache / name,
            num_train=args.num_train,
            num_val=args.num_val,
            size=args.size,
            seed=args.seed,
        )
        print(f"No --data: generated membrane images in {root}")
    train, val = stream(root / "train", args, train=True), stream(root / "val", args, train=False)
    in_channels = next(iter(val))["image"].shape[-1]

    mx.random.seed(args.seed)  # the initial weights
    model = unet(in_channels, 1, base_channels=args.base_channels)
    trainer = Trainer(
        model,
        optim.Adam(learning_rate=args.learning_rate),
        loss="binary_cross_entropy",  # on logits, as Flux's logitbinarycrossentropy
        metrics=[Dice(), Accuracy(kind="binary")],
        inputs="image",
        targets="mask",
    )
    start = time.perf_counter()
    history = trainer.fit(
        train,
        validation_data=val,
        epochs=args.epochs,
        callbacks=[CSVLogger(args.out / "log.csv")],
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    epochs = len(history.epoch)
    print(f"Trained {epochs} epochs in {seconds:.0f} s ({seconds / max(epochs, 1):.1f} s/epoch)")

    results = trainer.evaluate(val, return_dict=True)
    membrane = float(np.mean([batch["mask"].mean() for batch in val]))
    print(
        f"Validation Dice {results['dice']:.4f}, pixel accuracy {results['accuracy']:.4f} "
        f"(all-background baseline: accuracy {1 - membrane:.4f}, Dice 0)"
    )
    save_predictions(trainer, val, args.out / "predictions.png")
    model.save_weights(str(args.out / "unet.safetensors"))
    with open(args.out / "evaluation.json", "w") as f:
        json.dump({"validation": results, "epochs": epochs, "seconds": seconds}, f, indent=2)
    print(f"Everything is in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
