"""The Flux model-zoo MNIST convnet (`mnist/conv.jl`), ported to mlxkit.

Conv 2x2 1->16 relu, max-pool 2, Conv 2x2 16->8 relu, max-pool 2, flatten, Dense 288->10
(3,490 parameters); softmax cross-entropy on logits; Adam with learning rate 0.01; batches of
1000; 5 epochs. Like the zoo's throttled callback, the accuracy on the first 1000 test images is
shown as training goes (here once per epoch, as `val_accuracy`); the final accuracy is measured on
the whole test set.

Run:
    python examples/flux/mnist_cnn.py                        # ../shared/data/mnist if present
    python examples/flux/mnist_cnn.py --data DIR             # any folder of MNIST IDX files
    python examples/flux/mnist_cnn.py --quick                # seconds (CI smoke test)

Without `--data`, the repository's reference copy of MNIST (`../shared/data/mnist`) is used when
it exists, and synthetic MNIST-like digits otherwise (a fresh clone has no `../shared`).
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
from mlxkit.datasets import load_mnist, make_synthetic_digits
from mlxkit.models import flux_mnist_cnn

REFERENCE_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with the four MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/flux_mnist_cnn"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.batch_size = 1, 250
    return args


def load(args: argparse.Namespace):
    folder = args.data
    if folder is None and REFERENCE_MNIST.is_dir() and not args.quick:
        folder = REFERENCE_MNIST
    if folder is not None:
        print(f"MNIST from {folder}")
        (x_train, y_train), (x_test, y_test) = load_mnist(folder)
    else:
        sizes = (1000, 200) if args.quick else (6000, 1000)
        print(f"No MNIST folder: {sizes[0]} synthetic training digits (pass --data for MNIST)")
        (x_train, y_train), (x_test, y_test) = make_synthetic_digits(*sizes, seed=args.seed)
    if args.quick:
        x_train, y_train = x_train[:1000], y_train[:1000]
        x_test, y_test = x_test[:200], y_test[:200]

    # Flux's `float.(imgs)`: pixels in [0, 1]; mlxkit models are NHWC, so add the channel axis.
    def prepare(x):
        return x[..., None].astype(np.float32) / 255

    return (prepare(x_train), y_train.astype(np.int32)), (prepare(x_test), y_test.astype(np.int32))


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = load(args)

    mx.random.seed(args.seed)  # the initial weights
    model = flux_mnist_cnn()
    trainer = Trainer(
        model,
        optim.Adam(learning_rate=args.learning_rate),
        loss="cross_entropy",  # Flux: crossentropy(softmax(m(x)), y); here on logits
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = trainer.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        # The zoo's `evalcb` reports the accuracy on the first 1000 test images.
        validation_data=(x_test[:1000], y_test[:1000]),
        callbacks=[CSVLogger(args.out / "log.csv")],
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    epochs = len(history.epoch)

    test = trainer.evaluate(x_test, y_test, batch_size=1000, return_dict=True)
    print(
        f"Test accuracy on {len(x_test)} images: {test['accuracy']:.4f} "
        f"({epochs} epochs in {seconds:.0f} s, {seconds / max(epochs, 1):.1f} s/epoch)"
    )
    model.save_weights(str(args.out / "flux_mnist_cnn.safetensors"))
    with open(args.out / "evaluation.json", "w") as f:
        json.dump({"test": test, "epochs": epochs, "seconds": seconds}, f, indent=2)
    print(f"Everything is in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
