"""The MXNet/Gluon MNIST multilayer perceptron tutorial, ported to mlxkit.

Dense 64 relu, Dense 64 relu, Dense 10; weights from Normal(sigma=0.1), zero biases; softmax
cross-entropy; plain SGD with learning rate 0.01; batches of 64; 10 epochs; pixels / 255. Every
epoch prints the tutorial's line: the mean per-sample training loss, then the accuracy on the whole
training and test sets measured after the epoch.

Run:
    python examples/gluon_mnist_mlp.py --data ../shared/data/mnist   # the real MNIST IDX files
    python examples/gluon_mnist_mlp.py                               # synthetic digits, no download
    python examples/gluon_mnist_mlp.py --keras-style                 # + validation, early stop
    mlx.launch -n 2 --backend ring -- python examples/gluon_mnist_mlp.py   # data-parallel, 2 ranks
    python examples/gluon_mnist_mlp.py --quick                       # seconds (CI smoke test)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mlxkit import Trainer
from mlxkit.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint
from mlxkit.datasets import load_mnist, make_synthetic_digits
from mlxkit.models import gluon_mlp

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with the four MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/gluon_mnist_mlp"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument(
        "--keras-style",
        action="store_true",
        help="hold out 10%% for validation, stop early, keep the best checkpoint",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        # Two epochs of 600 digits are 20 steps: at 10x the tutorial's rate they show learning.
        args.epochs, args.learning_rate = 2, 0.1
    return args


def load(args: argparse.Namespace):
    if args.data is not None:
        (x_train, y_train), (x_test, y_test) = load_mnist(args.data)
    else:
        sizes = (600, 200) if args.quick else (12000, 2000)
        print(f"No --data: {sizes[0]} synthetic training digits (pass --data for MNIST)")
        (x_train, y_train), (x_test, y_test) = make_synthetic_digits(*sizes, seed=args.seed)

    # Gluon's transform: flatten and scale the pixels to [0, 1].
    def prepare(x):
        return x.reshape(len(x), -1).astype(np.float32) / 255

    return (prepare(x_train), y_train.astype(np.int32)), (prepare(x_test), y_test.astype(np.int32))


def main() -> None:
    args = parse_args()
    (x_train, y_train), (x_test, y_test) = load(args)
    mx.random.seed(args.seed)  # the initial weights, then fit(seed=) the data order
    model = gluon_mlp()
    trainer = Trainer(
        model,
        optim.SGD(learning_rate=args.learning_rate),
        loss="cross_entropy",
        metrics=["accuracy"],
    )

    def report(epoch, logs):
        # Like the tutorial, accuracy over the whole training and test sets after each epoch.
        _, train_accuracy = trainer.evaluate(x_train, y_train, batch_size=1000)
        _, test_accuracy = trainer.evaluate(x_test, y_test, batch_size=1000)
        if trainer.rank == 0:
            print(
                f"Epoch {epoch}. Loss: {logs['loss']}, Train_acc {train_accuracy}, "
                f"Test_acc {test_accuracy}",
                flush=True,
            )

    callbacks = [LambdaCallback(on_epoch_end=report)]
    extra = {}
    if args.keras_style:
        callbacks += [
            EarlyStopping(monitor="val_accuracy", patience=3, restore_best_weights=True),
            ModelCheckpoint(args.out / "best", monitor="val_accuracy", save_best_only=True),
        ]
        extra["validation_split"] = 0.1
    # The tutorial's data loader keeps the last partial batch, as fit does by default.
    trainer.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=0,
        drop_last=False,
        seed=args.seed,
        **extra,
    )
    if trainer.rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(args.out / "gluon_mlp.safetensors"))
        print(f"Weights saved in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
