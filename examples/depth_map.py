"""Monocular depth estimation: the MLX depth-map article, ported to mlxkit.

A ResNet-20 encoder with a UNet-style decoder learns to predict (inverse) depth from a single RGB
image, trained with the article's loss (Huber + 0.5 * (1 - cosine similarity)), Adam with a cosine
learning-rate decay, early stopping on the validation loss and the best checkpoint kept.

Run:
    python examples/depth_map.py                 # built-in synthetic street scenes, a few minutes
    python examples/depth_map.py --quick            # seconds (CI smoke test)
    python examples/depth_map.py --data DIR      # Kaggle "Cityscapes depth and segmentation" layout
    python examples/depth_map.py --height 128 --width 256 --batch-size 64 --epochs 100  # article

Everything lands in one folder (printed at the end): the training log, the evaluation next to a
mean-depth baseline, a PNG grid of validation images (input | ground truth | prediction), the best
checkpoint, and the Core ML export of the best model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from mlxkit import Trainer
from mlxkit.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint
from mlxkit.data import LoadNumpy, RandomBlur, RandomBrightness, RandomNoise, Stream, Transform
from mlxkit.datasets import depth_samples, make_synthetic_depth
from mlxkit.images import colormap, image_grid, save_png
from mlxkit.metrics import RMSE, AbsRel, DeltaAccuracy
from mlxkit.models import depth_resnet20

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="Kaggle-layout folder (train/ and val/)")
    parser.add_argument("--out", type=Path, default=Path("runs/depth_map"))
    parser.add_argument("--epochs", type=int, default=12, help="upper bound (article: 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="article: 64")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5, help="EarlyStopping on val_loss")
    parser.add_argument("--height", type=int, default=64, help="synthetic scenes (article: 128)")
    parser.add_argument("--width", type=int, default=128, help="synthetic scenes (article: 256)")
    parser.add_argument("--num-train", type=int, default=512, help="synthetic training scenes")
    parser.add_argument("--num-val", type=int, default=96, help="synthetic validation scenes")
    parser.add_argument(
        "--no-augment", action="store_true", help="skip the photometric augmentation"
    )
    parser.add_argument("--no-export", action="store_true", help="skip the Core ML export")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.batch_size, args.height, args.width = 2, 4, 32, 64
        args.num_train, args.num_val = 16, 8
    return args


def load_data(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return args.data
    cache = Path.home() / ".cache" / "mlxkit" / "depth_map"
    name = f"synthetic-{args.height}x{args.width}-{args.num_train}-{args.num_val}-seed{args.seed}"
    print(f"Synthetic scenes in {cache / name} (generated once)")
    return make_synthetic_depth(
        cache / name,
        args.num_train,
        args.num_val,
        seed=args.seed,
        height=args.height,
        width=args.width,
    )


class OneOf(Transform):
    """The article's augmentation: one of its options per image, chosen uniformly."""

    def __init__(self, *options: Transform | None):
        self.options = options

    def __call__(self, sample, rng):
        option = self.options[rng.integers(len(self.options))]
        return sample if option is None else option(sample, rng)


def streams(root: Path, args: argparse.Namespace) -> tuple[Stream, Stream]:
    # The article's imgaug choice, on the image only so the depth map stays exact: brightness
    # Add(-30, 15) on 0-255 pixels, Gaussian blur with sigma in [0.1, 1], nothing, or Gaussian
    # noise of imgcorruptlike severity 2 (sigma 0.12; the article's code drops this result).
    augment = OneOf(
        RandomBrightness((-30 / 255, 15 / 255), keys="image"),
        RandomBlur((0.1, 1.0), keys="image"),
        None,
        RandomNoise(0.12, keys="image"),
    )
    train = Stream(
        depth_samples(root, "train"),
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed,
        transforms=[LoadNumpy(["image", "depth"]), *([] if args.no_augment else [augment])],
    )
    val = Stream(
        depth_samples(root, "val"),
        batch_size=args.batch_size,
        shuffle=False,
        drop_last=False,
        transforms=[LoadNumpy(["image", "depth"])],
    )
    return train, val


def depth_metrics() -> list:
    return [AbsRel(), RMSE(), DeltaAccuracy(1.25)]


def mean_depth_baseline(train: Stream, val: Stream) -> dict[str, float]:
    """The metrics of predicting the training set's mean valid depth at every pixel."""
    total, count = 0.0, 0
    train.set_epoch(0)
    for batch in train:
        depth = batch["depth"]
        total, count = total + float(depth[depth > 0].sum()), count + int((depth > 0).sum())
    mean = total / max(count, 1)
    metrics = depth_metrics()
    val.set_epoch(0)
    for batch in val:
        target = mx.array(batch["depth"])
        for metric in metrics:
            metric.update(mx.full(target.shape, mean), target)
    return {metric.name: metric.result().item() for metric in metrics}


def save_examples(trainer: Trainer, val: Stream, path: Path, count: int = 6) -> None:
    val.set_epoch(0)
    batch = next(iter(val))
    images, depths = batch["image"][:count], batch["depth"][:count]
    predictions = np.array(trainer.predict(images, batch_size=count))
    rows = []
    for image, depth, prediction in zip(images, depths, predictions):
        valid = depth[..., 0] > 0
        low, high = np.percentile(depth[..., 0][valid], [1, 99]) if valid.any() else (0, 1)
        rows.append(
            [
                image,
                colormap(depth, vmin=low, vmax=high),
                colormap(prediction, vmin=low, vmax=high),
            ]
        )
    save_png(image_grid(rows), path)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(args.seed)
    root = load_data(args)
    train, val = streams(root, args)
    height, width = next(iter(val))["image"].shape[1:3]
    print(
        f"{len(train)} training batches of {args.batch_size}, {len(val)} validation batches, "
        f"images of {height}x{width}"
    )

    model = depth_resnet20()
    # The article decays over batch_size * epochs steps; decaying over the steps actually taken
    # reaches the end of the schedule at the last epoch, which is what that line intends.
    total_steps = max(1, args.epochs * len(train))
    optimizer = optim.Adam(learning_rate=optim.cosine_decay(args.learning_rate, total_steps))
    trainer = Trainer(
        model,
        optimizer,
        loss="depth_loss",
        metrics=depth_metrics(),
        inputs="image",
        targets="depth",
    )
    best = args.out / "best"
    callbacks = [
        EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True),
        ModelCheckpoint(best, monitor="val_loss", save_best_only=True),
        CSVLogger(args.out / "log.csv"),
    ]
    start = time.perf_counter()
    history = trainer.fit(
        train, validation_data=val, epochs=args.epochs, callbacks=callbacks, seed=args.seed
    )
    seconds = time.perf_counter() - start
    epochs_run = len(history.epoch)
    print(f"Trained {epochs_run} epochs in {seconds:.0f} s ({seconds / epochs_run:.1f} s/epoch)")

    results = trainer.evaluate(val, return_dict=True)  # EarlyStopping restored the best weights
    baseline = mean_depth_baseline(train, val)
    print(f"\n{'':24}{'AbsRel':>10}{'RMSE':>10}{'delta<1.25':>12}")
    for name, values in (("mlxkit depth_resnet20", results), ("mean-depth baseline", baseline)):
        print(
            f"{name:24}{values['abs_rel']:>10.4f}{values['rmse']:>10.4f}"
            f"{values['delta_1.25']:>12.4f}"
        )
    improvement = 1 - results["abs_rel"] / baseline["abs_rel"]
    print(f"AbsRel {improvement:.0%} below the mean-depth baseline")
    with open(args.out / "evaluation.json", "w") as f:
        json.dump(
            {
                "model": results,
                "mean_depth_baseline": baseline,
                "epochs": epochs_run,
                "seconds": seconds,
            },
            f,
            indent=2,
        )

    save_examples(trainer, val, args.out / "predictions.png")
    try:
        history.plot(args.out / "curves.png")
    except ImportError:
        print("(training curves need matplotlib: pip install 'mlxkit[plot]')")

    if not args.no_export:
        from mlxkit.export import to_coreml

        exported = to_coreml(
            model,
            [mx.zeros((1, height, width, 3))],
            args.out / "depth_resnet20.mlpackage",
            input_names=["image"],
            output_names=["depth"],
        )
        print(exported.report)
    print(f"\nEverything is in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
