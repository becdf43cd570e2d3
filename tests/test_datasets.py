"""Tests for `mlxkit.datasets`: loaders against published facts, layouts, pairing and bad files."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import mlxkit  # noqa: F401  (before mlx: loads the fast BLAS)
from mlxkit.data import LoadImage, LoadNumpy, Stream
from mlxkit.datasets import (
    CIFAR10_CLASSES,
    CLASS_NAMES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    depth_samples,
    image_folder_samples,
    load_cifar10,
    load_cora,
    load_fashion_mnist,
    load_mnist,
    make_synthetic_depth,
    make_synthetic_people,
    segmentation_samples,
)
from mlxkit.datasets.depth import render_depth_scene
from mlxkit.datasets.segmentation import render_people_scene
from mlxkit.images import save_png

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (DATA / "mnist").is_dir(), reason=f"reference MNIST files not found at {DATA / 'mnist'}"
)
needs_cora = pytest.mark.skipif(
    not (DATA / "cora").is_dir(), reason=f"reference Cora files not found at {DATA / 'cora'}"
)


# ---------------------------------------------------------------------- MNIST
@needs_mnist
def test_mnist_matches_the_published_facts():
    (x_train, y_train), (x_test, y_test) = load_mnist(DATA / "mnist")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_train).tolist() == counts
    pixels = x_train / 255.0
    assert pixels.mean() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std() == pytest.approx(0.3081, abs=5e-5)


def write_idx(path: Path, array: np.ndarray, magic: int, *, compress: bool) -> None:
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def small_mnist(folder: Path, *, compress: bool = True) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    arrays = []
    suffix = ".gz" if compress else ""
    for split, count in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, (count, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, 2051, compress=compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, 2049, compress=compress)
        arrays += [images, labels]
    return tuple(arrays)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_round_trip_gzipped_or_raw(tmp_path, compress):
    expected = small_mnist(tmp_path, compress=compress)
    (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path)
    for got, want in zip((x_train, y_train, x_test, y_test), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_mnist_bad_files_are_named(tmp_path):
    small_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(3), 2051, compress=True)  # an images magic in a labels file
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*magic number 2051"):
        load_mnist(tmp_path)
    data = struct.pack(">II", 2049, 3) + b"\x01\x02"  # the header promises 3 labels, 2 follow
    labels.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*truncated"):
        load_mnist(tmp_path)
    labels.unlink()
    with pytest.raises(FileNotFoundError, match="t10k labels"):
        load_mnist(tmp_path)
    write_idx(labels, np.zeros(4), 2049, compress=True)
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        load_mnist(tmp_path)


def test_fashion_mnist_reads_the_same_files_and_names_its_classes(tmp_path):
    expected = small_mnist(tmp_path)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(tmp_path)
    for got, want in zip((x_train, y_train, x_test, y_test), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # The labels of github.com/zalandoresearch/fashion-mnist's README, in label order.
    assert FASHION_MNIST_CLASSES == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    assert tuple("0123456789") == MNIST_CLASSES
    assert CLASS_NAMES == {
        "mnist": MNIST_CLASSES,
        "fashion_mnist": FASHION_MNIST_CLASSES,
        "cifar10": CIFAR10_CLASSES,
    }
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST folder .* Received: path="):
        load_fashion_mnist(tmp_path / "missing")


def test_mnist_path_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    expected = small_mnist(tmp_path / "mnist")
    (x_train, _), _ = load_mnist("~/mnist")
    np.testing.assert_array_equal(x_train, expected[0])


# ---------------------------------------------------------------------- Cora
@needs_cora
def test_cora_matches_the_published_facts():
    cora = load_cora(DATA / "cora")
    assert cora.features.shape == (2708, 1433) and cora.features.dtype == np.float32
    assert set(np.unique(cora.features).tolist()) == {0.0, 1.0}
    counts = dict(zip(cora.class_names, np.bincount(cora.labels).tolist(), strict=True))
    assert counts == {
        "Neural_Networks": 818,
        "Probabilistic_Methods": 426,
        "Genetic_Algorithms": 418,
        "Theory": 351,
        "Case_Based": 298,
        "Reinforcement_Learning": 217,
        "Rule_Learning": 180,
    }
    edges = cora.edges
    assert edges.shape == (5278, 2)
    assert (edges[:, 0] < edges[:, 1]).all()  # undirected, listed once, no self loops
    assert len(np.unique(edges, axis=0)) == len(edges)
    assert edges.min() >= 0 and edges.max() < 2708


@needs_cora
def test_cora_planetoid_split_is_seeded_and_balanced():
    cora = load_cora(DATA / "cora")
    split = cora.split(seed=0)
    assert np.bincount(cora.labels[split.train]).tolist() == [20] * 7
    assert len(split.validation) == 500 and len(split.test) == 1000
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert sum(map(len, parts)) == len(set().union(*parts))  # disjoint
    again, other = cora.split(seed=0), cora.split(seed=1)
    np.testing.assert_array_equal(split.test, again.test)
    assert not np.array_equal(split.test, other.test)


def test_cora_small_files_and_errors(tmp_path):
    content = ["10\t1\t0\tA", "20\t0\t1\tB", "30\t1\t1\tA"]
    (tmp_path / "cora.content").write_text("\n".join(content) + "\n")
    (tmp_path / "cora.cites").write_text("10\t20\n20\t10\n30\t30\n20\t30\n")
    cora = load_cora(tmp_path)
    np.testing.assert_array_equal(cora.features, [[1, 0], [0, 1], [1, 1]])
    assert cora.labels.tolist() == [0, 1, 0] and cora.class_names == ("A", "B")
    assert cora.edges.tolist() == [[0, 1], [1, 2]]  # duplicate and self loop removed
    (tmp_path / "cora.cites").write_text("10\t20\n20\t99\n")
    with pytest.raises(ValueError, match=r"cora\.cites line 2.*'99'"):
        load_cora(tmp_path)


# ---------------------------------------------------------------------- depth
def test_synthetic_depth_round_trips_through_depth_samples(tmp_path):
    root = make_synthetic_depth(tmp_path / "depth", 6, 3, seed=4, height=32, width=64)
    train, val = depth_samples(root, "train"), depth_samples(root, "val")
    assert len(train) == 6 and len(val) == 3
    assert [Path(s["image"]).name for s in train] == [f"{i}.npy" for i in range(6)]
    assert all(Path(s["image"]).stem == Path(s["depth"]).stem for s in train)
    stream = Stream(train, batch_size=3, shuffle=False, transforms=[LoadNumpy(("image", "depth"))])
    batch = next(iter(stream))
    assert batch["image"].shape == (3, 32, 64, 3) and batch["image"].dtype == np.float32
    assert batch["depth"].shape == (3, 32, 64, 1) and batch["depth"].dtype == np.float32
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    # The files hold exactly the scenes the renderer draws for (seed, split, index).
    image, depth, label = render_depth_scene(np.random.default_rng([4, 0, 1]), 32, 64)
    np.testing.assert_array_equal(batch["image"][1], image)
    np.testing.assert_array_equal(batch["depth"][1], depth)
    with_labels = depth_samples(root, "train", labels=True)
    np.testing.assert_array_equal(np.load(with_labels[1]["label"]), label)


def test_synthetic_depth_follows_perspective():
    for seed in range(5):
        _, depth, label = render_depth_scene(np.random.default_rng(seed), 128, 256)
        depth = depth[..., 0]
        assert (depth[label == 0] == 0).all() and (depth[label > 0] > 0).all()  # sky invalid
        # Ground: inverse depth grows row by row towards the camera, the same across a row.
        ground_rows = [r for r in range(128) if (label[r] == 1).all()]
        values = np.array([depth[r, 0] for r in ground_rows])
        assert len(values) > 20 and (np.diff(values) > 0).all()
        for r in ground_rows:
            assert np.ptp(depth[r]) == 0
        # Objects stand on the ground: where an object's lowest row meets the ground, the ground
        # there is as far away as the object (up to the rounding of the foot row to a pixel).
        foot = (label[:-1] == 2) & (label[1:] == 1)
        assert foot.any()
        object_depth, ground_depth = depth[:-1][foot], depth[1:][foot]
        assert (np.abs(ground_depth - object_depth) / object_depth).max() < 0.2


def test_depth_generator_reuses_redoes_and_refuses(tmp_path):
    root = tmp_path / "depth"
    make_synthetic_depth(root, 2, 1, height=32, width=64)
    marker = json.loads((root / "DONE").read_text())
    assert marker["num_train"] == 2 and marker["height"] == 32
    first = root / "train" / "image" / "0.npy"
    stamp = first.stat().st_mtime_ns
    make_synthetic_depth(root, 2, 1, height=32, width=64)
    assert first.stat().st_mtime_ns == stamp  # finished output is reused
    # An interrupted run: files half written, no DONE. It is detected and redone.
    (root / "DONE").unlink()
    (root / ".STARTED").write_text("{}")
    (root / "train" / "image" / "1.npy").unlink()
    (root / "train" / "image" / "stale.npy").write_bytes(b"partial")
    make_synthetic_depth(root, 2, 1, height=32, width=64)
    assert (root / "DONE").is_file() and not (root / ".STARTED").exists()
    assert len(depth_samples(root, "train")) == 2
    assert not (root / "train" / "image" / "stale.npy").exists()
    # Different parameters: redone with the new size.
    make_synthetic_depth(root, 3, 1, height=32, width=64)
    assert len(depth_samples(root, "train")) == 3
    # A folder holding someone else's data is never cleared.
    foreign = tmp_path / "kaggle"
    (foreign / "train" / "image").mkdir(parents=True)
    (foreign / "train" / "image" / "0.npy").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not written by"):
        make_synthetic_depth(foreign, 1, 1, height=32, width=64)
    assert (foreign / "train" / "image" / "0.npy").read_bytes() == b"x"


def test_depth_pairing_errors_name_the_file(tmp_path):
    root = make_synthetic_depth(tmp_path / "d", 4, 1, height=32, width=64)
    (root / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing.*image/2\.npy"):
        depth_samples(root, "train")
    np.save(root / "train" / "depth" / "2.npy", np.zeros((32, 64, 1), np.float32))
    np.save(root / "train" / "depth" / "extra.npy", np.zeros((32, 64, 1), np.float32))
    with pytest.raises(FileNotFoundError, match=r"depth/extra\.npy"):
        depth_samples(root, "train")
    (root / "train" / "depth" / "extra.npy").unlink()
    np.save(root / "train" / "depth" / "3.npy", np.zeros((32, 63, 1), np.float32))
    with pytest.raises(ValueError, match=r"3\.npy.*\(32, 63, 1\)"):
        depth_samples(root, "train")
    with pytest.raises(FileNotFoundError, match=r"split='test'.*\['train', 'val'\]"):
        depth_samples(root, "test")


def test_pickled_npy_is_refused_without_unpickling(tmp_path):
    root = make_synthetic_depth(tmp_path / "d", 2, 1, height=32, width=64)
    pickled = root / "train" / "image" / "1.npy"
    np.save(pickled, np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"image/1\.npy.*pickled"):
        depth_samples(root, "train")
    np.save(pickled, np.zeros((32, 64, 3), np.float16))
    with pytest.raises(ValueError, match=r"image/1\.npy.*<f2"):
        depth_samples(root, "train")


@pytest.mark.slow
def test_a_small_conv_model_learns_synthetic_depth(tmp_path):
    """The synthetic scenes are learnable: a tiny CNN beats the mean-depth baseline by far."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    root = make_synthetic_depth(tmp_path / "d", 256, 64, height=32, width=64)
    train = Stream(
        depth_samples(root, "train"), batch_size=32, transforms=[LoadNumpy(("image", "depth"))]
    )
    val = next(
        iter(
            Stream(depth_samples(root, "val"), batch_size=64, shuffle=False,
                   transforms=[LoadNumpy(("image", "depth"))])
        )
    )  # fmt: skip

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.down2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.middle = nn.Conv2d(32, 32, 3, padding=1)
            self.up = nn.Upsample(4, mode="nearest")
            self.out1 = nn.Conv2d(32, 16, 3, padding=1)
            self.out2 = nn.Conv2d(16, 1, 3, padding=1)

        def __call__(self, x):
            x = nn.relu(self.middle(nn.relu(self.down2(nn.relu(self.down1(x))))))
            return self.out2(nn.relu(self.out1(self.up(x))))

    mx.random.seed(0)
    model, optimizer = Net(), optim.Adam(learning_rate=1e-3)
    step = nn.value_and_grad(model, lambda m, x, y: mx.mean((m(x) - y) ** 2))
    depths = []
    for _ in range(4):
        for batch in train:
            depths.append(batch["depth"])
            _, grads = step(model, mx.array(batch["image"]), mx.array(batch["depth"]))
            optimizer.update(model, grads)
            mx.eval(model.parameters(), optimizer.state)
    prediction = np.array(model(mx.array(val["image"])))
    model_error = np.abs(prediction - val["depth"]).mean()
    baseline_error = np.abs(np.mean(depths) - val["depth"]).mean()
    print(f"validation MAE {model_error:.4f}, mean-depth baseline {baseline_error:.4f}")
    assert model_error < 0.6 * baseline_error, (model_error, baseline_error)


# ---------------------------------------------------------------------- segmentation
def test_synthetic_people_round_trip(tmp_path):
    root = make_synthetic_people(tmp_path / "people", 5, seed=2, size=(48, 40))
    samples = segmentation_samples(root)
    assert [Path(s["mask"]).name for s in samples] == [f"{i}.png" for i in range(5)]
    stream = Stream(samples, batch_size=5, shuffle=False, transforms=[LoadImage(("image", "mask"))])
    batch = next(iter(stream))
    assert batch["image"].shape == (5, 48, 40, 3) and batch["mask"].shape == (5, 48, 40, 1)
    for index in range(5):  # decoding the PNGs gives back exactly what was rendered
        image, mask = render_people_scene(np.random.default_rng([2, index]), 48, 40)
        np.testing.assert_array_equal(batch["image"][index], image)
        np.testing.assert_array_equal(batch["mask"][index, ..., 0], mask)
    assert set(np.unique(batch["mask"]).tolist()) == {0, 1}
    coverage = batch["mask"].mean()
    assert 0.03 < coverage < 0.6  # people are there, but not everywhere


def test_png_writer_is_read_back_by_an_independent_decoder(tmp_path):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    rng = np.random.default_rng(0)
    for shape in [(7, 9), (7, 9, 3), (5, 4, 4)]:
        array = rng.integers(0, 256, shape).astype(np.uint8)
        save_png(array, tmp_path / "x.png")
        with image_module.open(tmp_path / "x.png") as decoded:
            np.testing.assert_array_equal(np.asarray(decoded), array)


def test_segmentation_pairing_errors_name_the_file(tmp_path):
    root = make_synthetic_people(tmp_path / "p", 3, size=(32, 32))
    (root / "masks" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks.*missing.*images/1\.png"):
        segmentation_samples(root)
    save_png(np.zeros((32, 32), np.uint8), root / "masks" / "1.png")
    save_png(np.zeros((32, 32), np.uint8), root / "masks" / "orphan.png")
    with pytest.raises(FileNotFoundError, match=r"masks/orphan\.png"):
        segmentation_samples(root)
    (root / "masks" / "orphan.png").unlink()
    (root / "images" / "2.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2\.jpg.*same name|2\.png.*same name"):
        segmentation_samples(root)
    with pytest.raises(FileNotFoundError, match="images/ and masks/"):
        segmentation_samples(tmp_path / "nowhere")


# ---------------------------------------------------------------------- CIFAR-10
def write_cifar(folder: Path, counts: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes binary CIFAR files from NHWC arrays: label byte, then red, green, blue planes."""
    rng = np.random.default_rng(1)
    written = {}
    for name, count in counts.items():
        images = rng.integers(0, 256, (count, 32, 32, 3)).astype(np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        records = [
            bytes([label])
            + image[..., 0].tobytes()  # 1024 red bytes, row by row, then green, then blue
            + image[..., 1].tobytes()
            + image[..., 2].tobytes()
            for image, label in zip(images, labels, strict=True)
        ]
        (folder / name).write_bytes(b"".join(records))
        written[name] = (images, labels)
    return written


def test_cifar10_binary_round_trip(tmp_path):
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    written = write_cifar(folder, dict(zip(names, [2, 3, 1, 2, 2, 4], strict=True)))
    (x_train, y_train), (x_test, y_test) = load_cifar10(tmp_path)  # the parent folder works too
    assert x_train.shape == (10, 32, 32, 3) and x_train.dtype == np.uint8
    np.testing.assert_array_equal(x_train, np.concatenate([written[n][0] for n in names[:5]]))
    np.testing.assert_array_equal(y_train, np.concatenate([written[n][1] for n in names[:5]]))
    np.testing.assert_array_equal(x_test, written["test_batch.bin"][0])
    np.testing.assert_array_equal(y_test, written["test_batch.bin"][1])
    assert len(CIFAR10_CLASSES) == 10


def test_cifar10_errors(tmp_path):
    python_release = tmp_path / "cifar-10-batches-py"
    python_release.mkdir()
    (python_release / "data_batch_1").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="pickled 'python' release"):
        load_cifar10(tmp_path)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    write_cifar(tmp_path, dict.fromkeys(names, 1))
    with open(tmp_path / "data_batch_3.bin", "ab") as file:
        file.write(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"data_batch_3\.bin.*3073-byte records"):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------------- image folders
def test_image_folder_samples_and_imagenet_style_pipeline(tmp_path):
    from mlxkit.data import CenterCrop, Normalize, ResizeShortSide

    colors = {"cat": 40, "dog": 120, "emu": 200}
    for name, value in colors.items():
        (tmp_path / name).mkdir()
        for i in range(2):
            save_png(np.full((30, 40, 3), value, np.uint8), tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "2.PNG").write_bytes((tmp_path / "dog" / "0.png").read_bytes())
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    samples, class_names = image_folder_samples(tmp_path)
    assert class_names == ["cat", "dog", "emu"]
    assert [s["label"] for s in samples] == [0, 0, 1, 1, 1, 2, 2]
    stream = Stream(
        samples,
        batch_size=7,
        shuffle=False,
        transforms=[LoadImage("image"), ResizeShortSide(16), CenterCrop(12), Normalize(100, 50)],
    )
    batch = next(iter(stream))
    assert batch["image"].shape == (7, 12, 12, 3)
    expected = np.array([(colors[class_names[label]] - 100) / 50 for label in batch["label"]])
    np.testing.assert_allclose(batch["image"].mean(axis=(1, 2, 3)), expected, atol=0.02)
    (tmp_path / "fox").mkdir()
    with pytest.raises(FileNotFoundError, match="fox holds no"):
        image_folder_samples(tmp_path)
