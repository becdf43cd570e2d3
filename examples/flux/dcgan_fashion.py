"""The Flux model-zoo DCGAN (`vision/dcgan_mnist`), ported to mlxkit by subclassing `Trainer`.

A generator (Dense -> BatchNorm -> three transposed convolutions -> tanh) learns to turn noise into
28x28 images in [-1, 1] while a discriminator (two strided convolutions, LeakyReLU 0.2, Dropout
0.25, Dense -> one logit) learns to tell them from real ones. Both use Adam with learning rate
2e-4 and the logit binary cross-entropy; latent vectors of 100.

`GANTrainer` below is the whole port: it overrides `train_step` (one discriminator update and one
generator update per batch, as the Flux code does) and extends `compiled_state()` with the
discriminator and its optimizer, so the step runs under `mx.compile` like any other. `fit`, the
progress bar, the CSV log and the per-epoch sample grid come from the Trainer unchanged.

Run:
    python examples/flux/dcgan_fashion.py --data DIR        # Fashion-MNIST (or MNIST) IDX files
    python examples/flux/dcgan_fashion.py                   # ../shared/data/mnist, else synthetic
    python examples/flux/dcgan_fashion.py --num-train 60000 --epochs 20 --batch-size 128 \
        --beta1 0.9                                         # the zoo's run
    python examples/flux/dcgan_fashion.py --quick           # seconds (CI smoke test)

The default trains on 1,280 images for 3 epochs with batches of 16 (240 steps; a DCGAN step on
128 images takes seconds on a laptop CPU), with Adam's beta1 at the DCGAN paper's 0.5 rather than
the zoo's 0.9 (`--beta1 0.9`), which settles faster: enough to see strokes emerge in the sample
grids. Without `--data`, the repository's reference MNIST (`../shared/data/mnist`) is used when
present, synthetic digits otherwise.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np

# isort: off
from mlxkit import Trainer  # first: importing mlxkit gives mlx.core a fast BLAS on Linux
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

# isort: on
from mlxkit.callbacks import CSVLogger, LambdaCallback
from mlxkit.datasets import load_mnist, make_synthetic_digits
from mlxkit.images import image_grid, save_png
from mlxkit.losses import binary_cross_entropy
from mlxkit.metrics import Mean
from mlxkit.models import dcgan_discriminator, dcgan_generator

REFERENCE_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def discriminator_loss(real_logits: mx.array, fake_logits: mx.array) -> mx.array:
    """Real images should score 1, generated ones 0 (the zoo's `discriminator_loss`)."""
    real = binary_cross_entropy(real_logits, mx.ones_like(real_logits))
    fake = binary_cross_entropy(fake_logits, mx.zeros_like(fake_logits))
    return real + fake


def generator_loss(fake_logits: mx.array, targets: None = None) -> mx.array:
    """Generated images should score 1 (the zoo's `generator_loss`); there are no targets."""
    return binary_cross_entropy(fake_logits, mx.ones_like(fake_logits))


class DiscriminatorLoss(Mean):
    """The discriminator's loss, from the logits it gave the batch (`outputs["real"/"fake"]`)."""

    direction = "min"

    def __init__(self) -> None:
        super().__init__(name="discriminator_loss")

    def update(self, outputs, targets=None, mask=None):
        super().update(discriminator_loss(outputs["real"], outputs["fake"]))


class DiscriminatorScore(Mean):
    """The mean probability that the discriminator gives real (`D(x)`) or generated (`D(G(z))`)
    images: both drift towards 0.5 as the generator gets better."""

    def __init__(self, which: Literal["real", "fake"]) -> None:
        if which not in ("real", "fake"):
            raise ValueError(
                f"DiscriminatorScore: `which` must be 'real' or 'fake'. Received: which={which!r}"
            )
        super().__init__(name=f"d_{which}")
        self.which = which

    def update(self, outputs, targets=None, mask=None):
        super().update(mx.sigmoid(outputs[self.which]))


class GANTrainer(Trainer):
    """Trains `generator` (the Trainer's model) against `discriminator`, one step each per batch.

    The logged `loss` is the generator's; the metrics are computed from the discriminator's
    logits on the batch (`outputs = {"real": ..., "fake": ...}`). `predict(noise)` runs the
    generator.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        generator_optimizer: optim.Optimizer,
        discriminator_optimizer: optim.Optimizer,
        *,
        latent_dim: int,
        compile: bool = True,
    ):
        super().__init__(
            generator,
            generator_optimizer,
            loss=generator_loss,
            metrics=[DiscriminatorLoss(), DiscriminatorScore("real"), DiscriminatorScore("fake")],
            compile=compile,
        )
        self.discriminator = discriminator
        self.discriminator_optimizer = discriminator_optimizer
        self.discriminator_optimizer.init(discriminator.trainable_parameters())
        self.latent_dim = latent_dim

    def compiled_state(self) -> list:
        # The step also reads and writes these: without them mx.compile would bake the
        # discriminator's weights into the graph as constants.
        return [
            *super().compiled_state(),
            self.discriminator.state,
            self.discriminator_optimizer.state,
        ]

    def train_step(self, batch) -> mx.array:
        real, _ = batch  # unlabelled: fit(x) gives (images, None)
        noise = mx.random.normal((real.shape[0], self.latent_dim))

        def discriminator_step(real, fake):
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            loss = discriminator_loss(real_logits, fake_logits)
            return loss, {"real": real_logits, "fake": fake_logits}

        def generator_step(noise):
            fake = self.model(noise)
            # As in the Flux code, the discriminator takes its step inside the generator's loss,
            # on the same fake batch held constant; the generator is then scored by the updated
            # discriminator. One generator forward pass serves both updates.
            (_, logits), grads = nn.value_and_grad(self.discriminator, discriminator_step)(
                real, mx.stop_gradient(fake)
            )
            self.discriminator_optimizer.update(self.discriminator, grads)
            return self.compute_loss(self.discriminator(fake), None), logits

        (loss, logits), grads = nn.value_and_grad(self.model, generator_step)(noise)
        self.apply_gradients(grads)
        self.update_metrics(loss, logits, None)
        return loss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with Fashion-MNIST or MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/flux_dcgan_fashion"))
    parser.add_argument("--num-train", type=int, default=1280, help="tutorial: 60000")
    parser.add_argument("--epochs", type=int, default=3, help="tutorial: 20")
    parser.add_argument("--batch-size", type=int, default=16, help="tutorial: 128")
    parser.add_argument("--latent-dim", type=int, default=100)
    parser.add_argument("--lr-generator", type=float, default=2e-4)
    parser.add_argument("--lr-discriminator", type=float, default=2e-4)
    parser.add_argument("--beta1", type=float, default=0.5, help="Adam's; the zoo's ADAM: 0.9")
    parser.add_argument("--grid", type=int, default=6, help="samples per side of the PNG grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.num_train, args.epochs, args.batch_size, args.grid = 16, 2, 8, 3
    return args


def load(args: argparse.Namespace) -> np.ndarray:
    folder = args.data
    if folder is None and REFERENCE_MNIST.is_dir() and not args.quick:
        folder = REFERENCE_MNIST
    if folder is not None:
        print(f"Images from {folder}")
        (images, _), _ = load_mnist(folder)
    else:
        print(f"No image folder: {args.num_train} synthetic digits (pass --data for real images)")
        (images, _), _ = make_synthetic_digits(args.num_train, 1, seed=args.seed)
    images = images[: args.num_train]
    # The zoo's `2f0 * images - 1f0`: pixels in [-1, 1], the range of the generator's tanh.
    return images[..., None].astype(np.float32) / 127.5 - 1


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images = load(args)
    print(f"{len(images)} images, {len(images) // args.batch_size} steps of {args.batch_size}")

    mx.random.seed(args.seed)  # the initial weights
    generator = dcgan_generator(latent_dim=args.latent_dim)
    discriminator = dcgan_discriminator()
    trainer = GANTrainer(
        generator,
        discriminator,
        optim.Adam(learning_rate=args.lr_generator, betas=[args.beta1, 0.999]),
        optim.Adam(learning_rate=args.lr_discriminator, betas=[args.beta1, 0.999]),
        latent_dim=args.latent_dim,
    )

    # The same noise every epoch, so the grids show one set of samples improving.
    fixed_noise = mx.random.normal((args.grid**2, args.latent_dim), key=mx.random.key(args.seed))

    def save_samples(epoch, logs=None):
        samples = (np.array(trainer.predict(fixed_noise, batch_size=args.grid**2)) + 1) / 2
        rows = [list(samples[i : i + args.grid]) for i in range(0, len(samples), args.grid)]
        return save_png(image_grid(rows), args.out / f"samples_epoch_{epoch + 1:03d}.png")

    save_samples(-1)  # epoch 0: the untrained generator
    start = time.perf_counter()
    history = trainer.fit(
        images,
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=[LambdaCallback(on_epoch_end=save_samples), CSVLogger(args.out / "log.csv")],
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    epochs = len(history.epoch)
    print(f"Trained {epochs} epochs in {seconds:.0f} s ({seconds / max(epochs, 1):.1f} s/epoch)")

    generator.save_weights(str(args.out / "generator.safetensors"))
    discriminator.save_weights(str(args.out / "discriminator.safetensors"))
    print(f"Everything is in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
