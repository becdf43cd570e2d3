"""Tests of the Flux tutorial ports in `examples/flux/`.

Each example runs with `--quick` in a subprocess and must write its outputs; the models they use
are checked for parameter counts and output shapes not already covered by `test_models.py`; the
examples' own pieces (the GAN trainer, masked loss and metrics, data generators) are checked
against eager MLX or NumPy references.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

# isort: off
import mlxkit  # noqa: F401  (first, so the fast BLAS loads before mlx.core)
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

# isort: on
from mlxkit import models

from tests.examples_common import csv_log, run_example

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "flux"
CORA = ROOT.parent / "shared" / "data" / "cora"


def run(script: str, *args: str) -> str:
    return run_example(EXAMPLES / script, *args)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"flux_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) from a PNG header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def csv_columns(path: Path) -> list[str]:
    with open(path) as f:
        return next(csv.reader(f))


def count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


# ----------------------------------------------------------------------------- smoke tests


def test_mnist_cnn_quick(tmp_path):
    output = run("mnist_cnn.py", "--quick", "--out", str(tmp_path))
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["epochs"] == 1
    # One seeded epoch of 1000 synthetic digits (balanced classes, chance 0.1) learns: observed
    # 0.39 on the 200 test digits; required chance + 0.15.
    assert evaluation["test"]["accuracy"] > 0.1 + 0.15
    assert {"accuracy", "val_accuracy"} <= set(csv_columns(tmp_path / "log.csv"))
    assert (tmp_path / "flux_mnist_cnn.safetensors").exists()
    assert "synthetic" in output and str(tmp_path) in output


def test_gcn_cora_quick(tmp_path):
    output = run("gcn_cora.py", "--quick", "--synthetic", "--out", str(tmp_path))
    assert "planted-partition" in output
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["epochs"] == 5
    # Five seeded full-batch steps on the generated graph beat the 1/7 chance level (seven
    # balanced classes): observed 0.589, required 1/7 + 0.25. The training loss falls too
    # (observed 1.954 -> 1.891 over the five epochs, required a drop of 0.03).
    assert evaluation["test"]["accuracy"] > 1 / 7 + 0.25
    loss = csv_log(tmp_path / "log.csv")["loss"]
    assert loss[-1] < loss[0] - 0.03
    assert (tmp_path / "gcn.safetensors").exists()


@pytest.mark.slow
@pytest.mark.skipif(not CORA.exists(), reason=f"Cora not found at {CORA}")
def test_gcn_cora_reaches_the_published_accuracy(tmp_path):
    output = run("gcn_cora.py", "--out", str(tmp_path))
    assert "Cora from" in output
    accuracy = json.loads((tmp_path / "evaluation.json").read_text())["test"]["accuracy"]
    # Kipf & Welling report 81.5% on the Planetoid split; a random split lands around 78-82%.
    assert accuracy > 0.75


def test_dcgan_quick_writes_a_sample_grid_per_epoch(tmp_path):
    run("dcgan_fashion.py", "--quick", "--out", str(tmp_path))
    # --quick: a 3x3 grid of 28x28 samples with 2-pixel padding, before training and per epoch.
    for epoch in range(3):
        assert png_size(tmp_path / f"samples_epoch_{epoch:03d}.png") == (92, 92)
    log = csv_log(tmp_path / "log.csv")
    assert {"loss", "discriminator_loss", "d_real", "d_fake"} <= set(log)
    # The discriminator learns to tell real from generated images in two seeded epochs. Its
    # trivial baseline, D = 1/2 everywhere, scores log(4) = 1.386: observed 1.266 after the last
    # epoch (1.344 after the first), required log(4) - 0.05; and it rates real images above
    # fakes: observed D(real) 0.705 vs D(fake) 0.590, required a gap of 0.05.
    assert log["discriminator_loss"][-1] < np.log(4) - 0.05
    assert log["discriminator_loss"][-1] < log["discriminator_loss"][0]
    assert log["d_real"][-1] > log["d_fake"][-1] + 0.05
    assert (tmp_path / "generator.safetensors").exists()
    assert (tmp_path / "discriminator.safetensors").exists()


def test_vgg_cifar10_quick(tmp_path):
    run("vgg_cifar10.py", "--quick", "--out", str(tmp_path))
    log = csv_log(tmp_path / "log.csv")
    assert {"val_loss", "val_accuracy"} <= set(log)
    assert (tmp_path / "data.png").exists()
    # Four seeded full-batch steps on 9 shapes fit them: observed training loss 2.316 -> 1.172
    # and accuracy 0.33 -> 0.56 (chance 0.1); required a 30% lower loss and chance + 0.2. (Four
    # steps do not generalise yet: the 8 test images stay at chance.)
    assert len(log["loss"]) == 4 and log["loss"][-1] < 0.7 * log["loss"][0]
    assert log["accuracy"][-1] > 0.1 + 0.2
    # The accuracy the run reports is that of the weights it saved.
    reported = json.loads((tmp_path / "evaluation.json").read_text())["test"]["accuracy"]
    example = load_example("vgg_cifar10")
    images, labels = example.make_shapes(8, seed=1)  # --quick's test set: 8 images, seed + 1
    model = models.vgg19_cifar(10, weights=tmp_path / "vgg19.safetensors").eval()
    predicted = np.array(mx.argmax(model(mx.array(images.astype(np.float32) / 255)), axis=-1))
    assert reported == pytest.approx(np.mean(predicted == labels), abs=1e-6)


def test_resnet_imagenet_quick(tmp_path):
    output = run("resnet_imagenet.py", "--quick", "--out", str(tmp_path))
    assert "5 classes" in output and "32x32 crops" in output
    # One row of preprocessed 32x32 crops, two per class.
    assert png_size(tmp_path / "val_examples.png") == (36, 10 * 34 + 2)
    assert (tmp_path / "best.safetensors").exists()
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["classes"] == ["checkerboard", "dots", "rings", "stripes", "waves"]
    # Three seeded epochs of two batches fit the training crops: observed loss 2.906 -> 1.941
    # and accuracy 0.2 -> 0.7 (chance 0.2, five balanced classes); required a 20% lower loss
    # and chance + 0.3. (The validation loss is not used: five BatchNorm updates are too few
    # for the running statistics to settle.)
    log = csv_log(tmp_path / "log.csv")
    assert len(log["loss"]) == 3 and log["loss"][-1] < 0.8 * log["loss"][0]
    assert log["accuracy"][-1] > 0.2 + 0.3


def test_unet_quick(tmp_path):
    run("unet.py", "--quick", "--out", str(tmp_path))
    # --quick: 4 rows (input, truth, prediction) of 32x32 images.
    assert png_size(tmp_path / "predictions.png") == (4 * 34 + 2, 3 * 34 + 2)
    log = csv_log(tmp_path / "log.csv")
    assert {"dice", "accuracy", "val_dice"} <= set(log)
    assert (tmp_path / "unet.safetensors").exists()
    # Four seeded epochs of 16 images fit the training membranes: observed loss 0.761 -> 0.600
    # and Dice 0.29 -> 0.77, where all-background scores 0; required a loss drop of 0.1 and a
    # final Dice of 0.5. (Validation is not used: 16 BatchNorm updates leave the running
    # statistics far from the batch ones.)
    assert log["loss"][-1] < log["loss"][0] - 0.1
    assert log["dice"][-1] > 0.5


# ----------------------------------------------------------------------------- the models used


def double_conv(cin: int, c: int) -> int:
    """Two bias-free 3x3 convs, each followed by BatchNorm (scale + shift)."""
    return 9 * cin * c + 2 * c + 9 * c * c + 2 * c


def unet_parameters(in_channels: int, num_classes: int, f: int) -> int:
    """Buda et al.'s U-Net counted by hand: encoders, bottleneck, 2x2 up-convs (with bias),
    decoders on the concatenated skips, and the final 1x1 conv."""
    widths = [f, 2 * f, 4 * f, 8 * f]
    encoders = sum(double_conv(cin, c) for cin, c in zip([in_channels, *widths[:-1]], widths))
    bottleneck = double_conv(8 * f, 16 * f)
    ups = sum(4 * 2 * c * c + c for c in widths)  # ConvTranspose2d(2c, c, 2): weights + bias
    decoders = sum(double_conv(2 * c, c) for c in widths)
    return encoders + bottleneck + ups + decoders + f * num_classes + num_classes


def test_unet_counts_by_hand():
    # The formula reproduces the published figure before it is trusted for the other widths.
    assert unet_parameters(3, 1, 32) == 7_763_041
    assert count(models.unet(1, 1, base_channels=32)) == unet_parameters(1, 1, 32)
    assert count(models.unet(1, 1, base_channels=8)) == unet_parameters(1, 1, 8)
    assert count(models.unet(1, 1, base_channels=4)) == unet_parameters(1, 1, 4)


@pytest.mark.parametrize(
    ("factory", "published", "features"),
    [(models.resnet18, 11_689_512, 512), (models.resnet50, 25_557_032, 2048)],
)
def test_resnets_with_few_classes(factory, published, features):
    # torchvision's published count with the 1000-way classifier swapped for a 5-way one.
    expected = published - (features * 1000 + 1000) + (features * 5 + 5)
    model = factory(num_classes=5)
    assert count(model) == expected
    if factory is models.resnet18:  # the example's default 64x64 crops
        y = model.eval()(mx.zeros((2, 64, 64, 3)))
        assert tuple(y.shape) == (2, 5) and bool(mx.all(mx.isfinite(y)))


def test_dcgan_generator_at_the_tutorials_latent_size():
    generator = models.dcgan_generator(latent_dim=100).eval()
    images = generator(mx.random.normal((3, 100)))
    assert tuple(images.shape) == (3, 28, 28, 1)
    assert float(mx.max(mx.abs(images))) <= 1.0
    assert tuple(models.dcgan_discriminator().eval()(images).shape) == (3, 1)


def test_gcn_on_a_cora_sized_feature_matrix():
    model = models.gcn(in_features=1433, hidden=16, num_classes=7).eval()
    adjacency = models.normalized_adjacency(np.array([[0, 1], [1, 2], [3, 4]]), 6)
    assert tuple(model(mx.zeros((6, 1433)), adjacency).shape) == (6, 7)


# ----------------------------------------------------------------------------- example pieces


def test_gan_trainer_compiled_steps_match_eager():
    gan = load_example("dcgan_fashion")
    images = np.random.default_rng(0).uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)
    runs = []
    for compile in (True, False):
        mx.random.seed(0)
        generator, discriminator = (
            models.dcgan_generator(latent_dim=8),
            models.dcgan_discriminator(),
        )
        start = dict(tree_flatten(discriminator.parameters()))
        trainer = gan.GANTrainer(
            generator,
            discriminator,
            optim.Adam(learning_rate=1e-3),
            optim.Adam(learning_rate=1e-3),
            latent_dim=8,
            compile=compile,
        )
        history = trainer.fit(images, batch_size=2, epochs=1, verbose=0, seed=1, shuffle=False)
        weights = {
            **{f"g.{k}": v for k, v in tree_flatten(generator.parameters())},
            **{f"d.{k}": v for k, v in tree_flatten(discriminator.parameters())},
        }
        runs.append((weights, history.history))
        # Both networks moved: the discriminator's update is not lost inside the compiled step.
        moved = [
            k
            for k, v in tree_flatten(discriminator.parameters())
            if not mx.array_equal(v, start[k])
        ]
        assert moved
    (compiled, compiled_logs), (eager, eager_logs) = runs
    for key in compiled:
        np.testing.assert_allclose(np.array(compiled[key]), np.array(eager[key]), atol=1e-5)
    for key in ("loss", "discriminator_loss", "d_real", "d_fake"):
        assert compiled_logs[key] == pytest.approx(eager_logs[key], abs=1e-5)


def test_gan_losses_match_numpy():
    gan = load_example("dcgan_fashion")
    real, fake = np.array([[2.0], [-1.0]]), np.array([[0.5], [-3.0]])

    def softplus(x):
        return np.log1p(np.exp(x))

    # -log(sigmoid(x)) = softplus(-x), -log(1 - sigmoid(x)) = softplus(x)
    expected = softplus(-real).mean() + softplus(fake).mean()
    assert gan.discriminator_loss(mx.array(real), mx.array(fake)).item() == pytest.approx(expected)
    assert gan.generator_loss(mx.array(fake)).item() == pytest.approx(softplus(-fake).mean())


def test_masked_cross_entropy_and_accuracy_skip_unlabelled_nodes():
    example = load_example("gcn_cora")
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 2.0, 3.0]])
    labels = np.array([0, 2, -1, 2])
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -np.mean([log_probabilities[0, 0], log_probabilities[1, 2], log_probabilities[3, 2]])
    loss = example.masked_cross_entropy(mx.array(logits), mx.array(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    metric = example.MaskedAccuracy()
    metric.update(mx.array(logits), mx.array(labels))
    assert metric.result().item() == pytest.approx(2 / 3)  # nodes 0 and 3 right, 1 wrong, 2 skipped

    targets = example.split_targets(np.array([4, 5, 6, 0]), np.array([1, 3]))
    assert targets.tolist() == [-1, 5, -1, 0]


def test_planted_partition_graph_is_cora_sized_and_homophilous():
    example = load_example("gcn_cora")
    graph = example.planted_partition_graph(seed=3)
    assert graph.features.shape == (2708, 1433) and graph.num_classes == 7
    assert np.all(graph.edges[:, 0] < graph.edges[:, 1])  # each edge once, no self loops
    same = np.mean(graph.labels[graph.edges[:, 0]] == graph.labels[graph.edges[:, 1]])
    # 70% of links are drawn within the class, and 1/7 of the rest land there by chance.
    assert same == pytest.approx(0.7 + 0.3 / 7, abs=0.03)
    split = graph.split(seed=0)
    assert len(split.train) == 140 and len(split.test) == 1000


def test_dice_matches_numpy():
    example = load_example("unet")
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(2, 8, 8, 1)), (rng.random((2, 8, 8, 1)) > 0.7) * 1.0
    metric = example.Dice()
    for i in range(2):  # streamed over two batches
        metric.update(mx.array(logits[i : i + 1]), mx.array(targets[i : i + 1]))
    predicted = logits > 0
    expected = 2 * np.sum(predicted * targets) / (predicted.sum() + targets.sum())
    assert metric.result().item() == pytest.approx(expected, rel=1e-6)


def test_membrane_images_have_dark_thin_boundaries():
    example = load_example("unet")
    image, mask = example.membrane_image(64, np.random.default_rng(0))
    assert image.shape == mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    membrane = mask > 0
    assert 0.05 < membrane.mean() < 0.35
    # Membranes are darker than the cells on average, yet not every dark pixel is membrane.
    assert image[membrane].mean() < image[~membrane].mean()


def test_shapes_are_balanced_cifar_like_images():
    example = load_example("vgg_cifar10")
    images, labels = example.make_shapes(40, seed=0)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [4] * 10
