"""Metalhead's ImageNet training harness for Flux (`training/ImageNet`), ported to mlxkit.

A ResNet-18 or ResNet-50 (torchvision's definition) trained from scratch on a class-per-folder
image tree with the harness's preprocessing: resize the short side to 256, centre-crop 224x224,
normalise with the ImageNet mean and standard deviation. Images are decoded, resized and cropped
in mlx-data worker threads by an `mlxkit.data.Stream`, so the training step never waits on
Python. Adam (the harness's default optimiser), the cross-entropy, the best weights kept by
`ModelCheckpoint` (the harness saves weights on its best validation epoch) and the loss history
in `CSVLogger`'s `log.csv`.

Run:
    python examples/flux/resnet_imagenet.py                          # a generated tiny tree
    python examples/flux/resnet_imagenet.py --data DIR --image-size 224 --batch-size 64
    python examples/flux/resnet_imagenet.py --arch resnet50 --resumable    # + resume after a kill
    python examples/flux/resnet_imagenet.py --quick                  # seconds (CI smoke test)
    python examples/flux/resnet_imagenet.py --pretrained resnet18.safetensors  # fine-tune

`--data DIR` holds `train/<class>/<image>` and `val/<class>/<image>` (ImageNet's layout, any
JPEG/PNG files). Without it, a small tree of generated texture images (five classes, each its own
pattern and hue, images of assorted sizes and aspect ratios) is written once under
`~/.cache/mlxkit/flux_resnet`.
`--image-size` shrinks the crop for the CPU: the short side is resized to `size * 256 / 224`
first, keeping the harness's proportions; the default 64 trains in minutes.

`--pretrained FILE` starts from torchvision's ImageNet weights instead of from scratch (the way
the Flux tutorials say such models are usually trained): a `.safetensors` state dict converted
once where torch is installed (docs/guides/pretrained.md). Everything but the classifier loads; a
new `fc` for this dataset's classes is trained with the rest. `--freeze-backbone` trains `fc`
only, the convolutions and BatchNorm statistics staying as pretrained.
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
from mlxkit.callbacks import BackupAndRestore, CSVLogger, EarlyStopping, ModelCheckpoint
from mlxkit.data import CenterCrop, LoadImage, Normalize, ResizeShortSide, Stream
from mlxkit.datasets import image_folder_samples
from mlxkit.images import image_grid, save_png
from mlxkit.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    freeze_backbone,
    load_pretrained,
    resnet18,
    resnet50,
)

TEXTURES = ("checkerboard", "dots", "rings", "stripes", "waves")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with train/ and val/ class folders")
    parser.add_argument("--out", type=Path, default=Path("runs/flux_resnet_imagenet"))
    parser.add_argument("--arch", choices=("resnet18", "resnet50"), default="resnet18")
    parser.add_argument("--image-size", type=int, default=64, help="centre crop (harness: 224)")
    parser.add_argument("--epochs", type=int, default=6, help="harness: up to 80")
    parser.add_argument("--batch-size", type=int, default=16, help="harness: 64")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, help="EarlyStopping on val_loss (default: off)")
    parser.add_argument("--per-class", type=int, default=48, help="generated training images")
    parser.add_argument("--resumable", action="store_true", help="back up every epoch, resume")
    parser.add_argument("--pretrained", type=Path, help="torchvision weights (.safetensors)")
    parser.add_argument(
        "--freeze-backbone", action="store_true", help="with --pretrained: train fc"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        # Three epochs of two batches: the first steps of a fresh ResNet barely move the loss.
        args.image_size, args.epochs, args.batch_size, args.per_class = 32, 3, 5, 2
    if args.freeze_backbone and args.pretrained is None:
        parser.error("--freeze-backbone needs --pretrained FILE (a random backbone would stay so)")
    return args


def texture(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One RGB image in [0, 1] of a random size (96-160 pixels a side) showing `kind`.

    Each kind has its own pattern and its own hue (as ImageNet classes have typical colours),
    jittered, on a dark background, with random scale, orientation and phase.
    """
    height, width = rng.integers(96, 161, size=2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(10, 24)
    u = (xs * np.cos(angle) + ys * np.sin(angle)) / period
    v = (-xs * np.sin(angle) + ys * np.cos(angle)) / period
    if kind == "checkerboard":
        pattern = (np.floor(u) + np.floor(v)) % 2
    elif kind == "dots":
        pattern = np.hypot(u - np.round(u), v - np.round(v)) < 0.3
    elif kind == "rings":
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        pattern = np.floor(np.hypot(ys - cy, xs - cx) / (period / 2)) % 2
    elif kind == "stripes":
        pattern = np.floor(2 * u) % 2
    else:  # waves: stripes that bend
        pattern = np.floor(2 * u + np.sin(v * 2) * 0.8) % 2
    hue = 2 * np.pi * TEXTURES.index(kind) / len(TEXTURES)
    foreground = 0.55 + 0.4 * np.cos(hue - np.array([0, 2, 4]) * np.pi / 3)
    foreground = np.clip(foreground + rng.normal(0, 0.05, size=3), 0, 1)
    background = rng.uniform(0, 0.3, size=3)
    image = np.where(pattern[..., None] > 0, foreground, background)
    return np.clip(image + rng.normal(0, 0.04, size=image.shape), 0, 1)


def make_texture_tree(root: Path, *, per_class: int, seed: int) -> Path:
    """Writes `root/{train,val}/<texture>/<n>.png` once: `per_class` training images per class and
    a third as many for validation."""
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(per_class // 3, 2))):
        for kind in TEXTURES:
            for i in range(count):
                save_png(texture(kind, rng), root / split / kind / f"{i:04d}.png")
    (root / "done").write_text("")
    return root


def stream(root: Path, args: argparse.Namespace, *, train: bool) -> tuple[Stream, list[str]]:
    samples, class_names = image_folder_samples(root)
    short_side = round(args.image_size * 256 / 224)  # 256 for the harness's 224
    transforms = [
        LoadImage("image"),  # mlx-data decodes in its worker threads
        ResizeShortSide(short_side),
        CenterCrop(args.image_size),
        Normalize(IMAGENET_MEAN, IMAGENET_STD, scale=1 / 255),
    ]
    batches = Stream(
        samples,
        batch_size=args.batch_size,
        shuffle=train,
        drop_last=train,  # a fixed batch shape for the compiled step; validation sees every image
        seed=args.seed,
        transforms=transforms,
    )
    return batches, class_names


def save_examples(batches: Stream, path: Path, per_class: int = 2) -> None:
    """`per_class` preprocessed validation images of each class, un-normalised: what the model
    sees after resizing and cropping."""
    batches.set_epoch(0)
    chosen: dict[int, list[np.ndarray]] = {}
    for batch in batches:
        for image, label in zip(batch["image"], batch["label"]):
            chosen.setdefault(int(label), []).append(image)
    images = [image for label in sorted(chosen) for image in chosen[label][:per_class]]
    images = np.clip(np.stack(images) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN), 0, 1)
    save_png(image_grid([list(images)]), path)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.data
    if root is None:
        cache = Path.home() / ".cache" / "mlxkit" / "flux_resnet"
        root = make_texture_tree(
            cache / f"textures-{args.per_class}-seed{args.seed}",
            per_class=args.per_class,
            seed=args.seed,
        )
        print(f"No --data: generated texture images in {root} (pass --data for ImageNet)")
    train, class_names = stream(root / "train", args, train=True)
    val, val_names = stream(root / "val", args, train=False)
    if val_names != class_names:
        raise ValueError(
            f"train/ and val/ must hold the same class folders. "
            f"Received: {len(class_names)} in train/, {len(val_names)} in val/"
        )
    print(
        f"{len(class_names)} classes; {len(train)} training batches of {args.batch_size}, "
        f"{len(val)} validation batches; {args.image_size}x{args.image_size} crops"
    )
    save_examples(val, args.out / "val_examples.png")

    mx.random.seed(args.seed)  # the initial weights
    model = {"resnet18": resnet18, "resnet50": resnet50}[args.arch](num_classes=len(class_names))
    if args.pretrained is not None:
        # strict=False: the 1000-class ImageNet `fc` does not fit this dataset's classes, so it
        # keeps its fresh initialisation; anything else that does not match is an error here.
        report = load_pretrained(model, args.pretrained, strict=False)
        if (
            report.missing
            or report.unexpected
            or any(not key.startswith("fc.") for key in report.mismatched)
        ):
            raise SystemExit(f"--pretrained {args.pretrained} does not fit {args.arch}: {report}")
        print(f"Pretrained weights from {args.pretrained}: {report}")
        if args.freeze_backbone:
            freeze_backbone(model)  # every conv and BatchNorm, statistics pinned ...
            model.fc.unfreeze()  # ... except the new classifier
    trainer = Trainer(
        model,
        optim.Adam(learning_rate=args.learning_rate),
        loss="cross_entropy",
        metrics=["accuracy"],
        inputs="image",
        targets="label",
    )
    callbacks = [
        # The harness keeps the weights of its best validation epoch.
        ModelCheckpoint(
            args.out / "best.safetensors",
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        ),
        CSVLogger(args.out / "log.csv"),
    ]
    if args.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=args.patience))
    if args.resumable:  # the harness's --continue: a killed run picks up where it stopped
        callbacks.append(BackupAndRestore(args.out / "backup"))

    start = time.perf_counter()
    history = trainer.fit(
        train, validation_data=val, epochs=args.epochs, callbacks=callbacks, seed=args.seed
    )
    seconds = time.perf_counter() - start
    epochs = len(history.epoch)
    print(f"Trained {epochs} epochs in {seconds:.0f} s ({seconds / max(epochs, 1):.1f} s/epoch)")

    results = trainer.evaluate(val, return_dict=True)
    print(
        f"Validation accuracy of the last epoch: {results['accuracy']:.4f} "
        f"(chance {1 / len(class_names):.2f}); best weights in best.safetensors"
    )
    with open(args.out / "evaluation.json", "w") as f:
        json.dump(
            {"validation": results, "epochs": epochs, "seconds": seconds, "classes": class_names},
            f,
            indent=2,
        )
    print(f"Everything is in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
