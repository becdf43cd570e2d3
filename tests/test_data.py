"""Tests for `mlxkit.data`: Stream order, resume, sharding, transforms and paired augmentation."""

from __future__ import annotations

import mlxkit  # noqa: F401  (before mlx: loads the fast BLAS)
from mlxkit.data import (
    CenterCrop,
    LoadImage,
    LoadNumpy,
    Normalize,
    RandomBlur,
    RandomBrightness,
    RandomCrop,
    RandomFlip,
    RandomNoise,
    RandomRotation,
    RandomTranslation,
    Resize,
    ResizeShortSide,
    Stream,
    Transform,
)
from mlxkit.images import save_png

import numpy as np
import pytest


def ids(batches) -> list[list[int]]:
    return [b["id"].tolist() for b in batches]


def flat(lists: list[list[int]]) -> list[int]:
    return [item for inner in lists for item in inner]


def identical(first: list[dict], second: list[dict]) -> bool:
    return len(first) == len(second) and all(
        a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        for a, b in zip(first, second, strict=True)
    )


def coordinate_samples(count: int, height: int = 16, width: int = 20) -> dict[str, np.ndarray]:
    """Images whose two channels hold each pixel's (row, column); masks hold row * width + col."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols], axis=-1).astype(np.float32)
    mask = (rows * width + cols).astype(np.int32)
    return {
        "id": np.arange(count),
        "image": np.repeat(image[None], count, axis=0),
        "mask": np.repeat(mask[None], count, axis=0),
    }


# ---------------------------------------------------------------------- epoch order
def test_epoch_visits_every_sample_once_in_the_seeded_order():
    stream = Stream({"id": np.arange(103)}, batch_size=8, seed=7, drop_last=False)
    assert len(stream) == 13
    for epoch in range(3):
        stream.set_epoch(epoch)
        seen = np.concatenate(ids(stream))
        expected = np.random.default_rng([7, epoch]).permutation(103)
        np.testing.assert_array_equal(seen, expected)
    assert sorted(seen.tolist()) == list(range(103))


def test_order_changes_across_epochs_and_repeats_for_an_epoch():
    stream = Stream({"id": np.arange(64)}, batch_size=8)
    first, second = ids(stream), ids(stream)  # no set_epoch: moves on to epoch 1
    assert first != second
    assert sorted(flat(first)) == sorted(flat(second)) == list(range(64))
    stream.set_epoch(0)
    assert ids(stream) == first
    assert ids(Stream({"id": np.arange(64)}, batch_size=8)) == first  # a pure function of seed


def test_no_shuffle_keeps_order_and_drop_last_drops_the_remainder():
    stream = Stream({"id": np.arange(10)}, batch_size=4, shuffle=False)
    assert len(stream) == 2
    assert ids(stream) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    partial = Stream({"id": np.arange(10)}, batch_size=4, shuffle=False, drop_last=False)
    assert ids(partial) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_seed_attribute_changes_the_order():
    stream = Stream({"id": np.arange(32)}, batch_size=4)
    before = stream.indices(0)
    stream.seed = 1  # a stream may be re-seeded by its owner (fit uses replace(seed=...))
    np.testing.assert_array_equal(stream.indices(0), np.random.default_rng([1, 0]).permutation(32))
    assert not np.array_equal(before, stream.indices(0))


# ---------------------------------------------------------------------- resume
def test_start_batch_yields_the_tail_without_loading_the_head():
    loaded: list[int] = []

    def record(sample):
        loaded.append(int(sample["id"]))
        return sample

    data = coordinate_samples(40)
    transforms = [record, RandomFlip(keys=("image", "mask")), RandomNoise(0.1)]
    stream = Stream(data, batch_size=4, transforms=transforms, seed=3, num_threads=2)
    stream.set_epoch(2)
    full = list(stream)
    loaded.clear()
    stream.set_epoch(2, start_batch=6)
    tail = list(stream)
    assert identical(tail, full[6:])
    # Only the tail's samples went through the pipeline: the skipped head was never loaded.
    assert sorted(loaded) == sorted(np.concatenate([b["id"] for b in full[6:]]).tolist())
    stream.set_epoch(2, start_batch=len(stream))
    assert list(stream) == []


def test_batches_do_not_depend_on_threads_or_prefetch():
    data = coordinate_samples(48)
    transforms = [
        RandomFlip(keys=("image", "mask")),
        RandomRotation(20, keys=("image", "mask")),
        RandomBrightness(0.2, value_range=(0, 20)),
    ]
    runs = []
    for threads, prefetch in [(1, 0), (1, 1), (3, 4)]:
        stream = Stream(
            data,
            batch_size=6,
            transforms=transforms,
            prefetch=prefetch,
            num_threads=threads,
            seed=5,
        )
        stream.set_epoch(4)
        runs.append(list(stream))
    assert identical(runs[0], runs[1]) and identical(runs[0], runs[2])


def test_augmentation_follows_the_sample_not_its_batch_position():
    data = coordinate_samples(24)
    transforms = [
        RandomRotation(30, keys=("image", "mask")),
        RandomNoise(0.5, value_range=(-1, 99)),
    ]
    by_id = []
    for batch_size in (4, 6):
        stream = Stream(data, batch_size=batch_size, transforms=transforms, seed=9)
        stream.set_epoch(1)
        by_id.append({int(i): x for b in stream for i, x in zip(b["id"], b["image"], strict=True)})
    assert by_id[0].keys() == by_id[1].keys()
    assert all(np.array_equal(by_id[0][i], by_id[1][i]) for i in by_id[0])
    # and it changes with the epoch
    stream.set_epoch(2)
    later = {int(i): x for b in stream for i, x in zip(b["id"], b["image"], strict=True)}
    assert not all(np.array_equal(later[i], by_id[1][i]) for i in later)


# ---------------------------------------------------------------------- sharding
@pytest.mark.parametrize("count, num_ranks", [(101, 2), (105, 4)])
def test_shards_are_disjoint_equal_and_cover_the_epoch(count, num_ranks):
    streams = [
        Stream({"id": np.arange(count)}, batch_size=5, shard=(rank, num_ranks), seed=2)
        for rank in range(num_ranks)
    ]
    lengths = {len(s) for s in streams}
    assert len(lengths) == 1
    per_rank = []
    for stream in streams:
        stream.set_epoch(3)
        batches = ids(stream)
        assert len(batches) == len(stream)
        per_rank.append(flat(batches))
    seen = flat(per_rank)
    assert len(seen) == len(set(seen))  # disjoint
    # Same permutation on every rank, truncated to a multiple of the ranks, then rank-strided.
    order = np.random.default_rng([2, 3]).permutation(count)[: (count // num_ranks) * num_ranks]
    for rank, got in enumerate(per_rank):
        expected = order[rank::num_ranks]
        assert got == expected[: len(got)].tolist()
    if (count // num_ranks) % 5 == 0:
        assert sorted(seen) == sorted(order.tolist())  # together they cover the epoch


def test_shard_can_be_set_after_construction():
    stream = Stream({"id": np.arange(20)}, batch_size=2)
    assert stream.shard == (0, 1) and len(stream) == 10
    stream.shard = (1, 4)  # as a script may before a data-parallel run
    assert len(stream) == 2
    np.testing.assert_array_equal(
        stream.indices(0), np.random.default_rng([0, 0]).permutation(20)[1::4][:4]
    )
    with pytest.raises(ValueError, match="larger than the 1 samples"):
        stream.shard = (0, 11)
    with pytest.raises(ValueError, match="rank < num_ranks"):
        stream.shard = (4, 4)


# ---------------------------------------------------------------------- paired augmentation
def test_geometric_augmentation_keeps_image_and_mask_aligned():
    width = 20
    data = coordinate_samples(32, width=width)
    paired = ("image", "mask")
    # Rotation first: interpolating across a border that an earlier shift filled would blend the
    # fill value into the image (by design), which this coordinate check cannot tell apart.
    transforms = [
        RandomRotation(25, keys=paired, fill=-1),
        RandomFlip("horizontal_and_vertical", keys=paired),
        RandomTranslation(0.2, keys=paired, fill=-1),
        RandomCrop((12, 14), keys=paired),
    ]
    stream = Stream(data, batch_size=8, transforms=transforms, num_threads=2)
    moved = 0
    for batch in stream:
        for image, mask in zip(batch["image"], batch["mask"], strict=True):
            assert image.shape == (12, 14, 2) and mask.shape == (12, 14)
            valid = mask >= 0
            np.testing.assert_array_equal(image[..., 0] >= 0, valid)  # same fill region
            # The image is sampled bilinearly, the mask by nearest neighbour: within half a pixel.
            assert np.abs(image[..., 0][valid] - mask[valid] // width).max() <= 0.5 + 1e-3
            assert np.abs(image[..., 1][valid] - mask[valid] % width).max() <= 0.5 + 1e-3
            moved += not np.array_equal(mask, data["mask"][0][:12, :14])
    assert moved >= 28  # the transforms did move things


def test_photometric_augmentation_leaves_the_mask_alone():
    data = coordinate_samples(16)
    data["image"] = data["image"] / 20
    transforms = [RandomBrightness(0.3), RandomNoise(0.1), RandomBlur((0.5, 1.5))]
    stream = Stream(data, batch_size=4, transforms=transforms, shuffle=False)
    for batch in stream:
        np.testing.assert_array_equal(batch["mask"], data["mask"][:4])
        assert not np.allclose(batch["image"], data["image"][:4])
        assert batch["image"].min() >= 0 and batch["image"].max() <= 1


def test_source_arrays_are_never_modified():
    data = coordinate_samples(8)
    copy = {k: v.copy() for k, v in data.items()}
    stream = Stream(
        data, batch_size=4, transforms=[RandomFlip(keys=("image", "mask"), probability=1)]
    )
    list(stream)
    assert all(np.array_equal(data[k], copy[k]) for k in data)

    def in_place(sample):
        sample["image"] += 1
        return sample

    with pytest.raises(ValueError, match="in place"):
        list(Stream(data, batch_size=4, transforms=[in_place]))
    assert all(np.array_equal(data[k], copy[k]) for k in data)


# ---------------------------------------------------------------------- single transforms
RNG = np.random.default_rng(0)


@pytest.mark.parametrize("degrees, turns", [((90, 90), 1), ((-90, -90), -1), ((180, 180), 2)])
def test_rotation_by_quarter_turns_matches_rot90(degrees, turns):
    x = np.arange(25, dtype=np.float32).reshape(5, 5)
    out = RandomRotation(degrees, keys=("x", "m"))({"x": x, "m": x.astype(np.int32)}, RNG)
    np.testing.assert_allclose(out["x"], np.rot90(x, turns), atol=1e-4)
    np.testing.assert_array_equal(out["m"], np.rot90(x, turns).astype(np.int32))


def test_rotation_bilinear_matches_a_hand_computed_point():
    # 45° about the centre (2, 2) of a 5x5 ramp f = column: output pixel (row 2, column 3) samples
    # column 2 + cos45 = 2.7071 and row 2 + sin45 = 2.7071, where the ramp is 2.7071.
    x = np.tile(np.arange(5, dtype=np.float32), (5, 1))
    out = RandomRotation((45, 45), keys="x", fill=-1)({"x": x}, RNG)["x"]
    assert out[2, 3] == pytest.approx(2 + np.cos(np.pi / 4), abs=1e-5)
    assert out[0, 0] == -1  # the corner comes from outside the image


def test_translation_is_a_shift_with_fill():
    x = np.arange(1, 81, dtype=np.float32).reshape(8, 10)
    out = RandomTranslation(0.3, keys="x", fill=0)({"x": x}, np.random.default_rng(3))["x"]
    row, col = np.argwhere(out == 45)[0]  # 45 sits at (4, 4) in x
    dy, dx = row - 4, col - 4
    expected = np.zeros_like(x)
    expected[max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 10 + min(dx, 0)] = x[
        max(-dy, 0) : 8 - max(dy, 0), max(-dx, 0) : 10 - max(dx, 0)
    ]
    assert (dy, dx) != (0, 0)
    np.testing.assert_array_equal(out, expected)


def test_crop_and_center_crop_are_windows():
    x = np.arange(120).reshape(10, 12)
    out = RandomCrop((4, 5), keys="x")({"x": x}, np.random.default_rng(1))["x"]
    top, left = np.argwhere(x == out[0, 0])[0]
    np.testing.assert_array_equal(out, x[top : top + 4, left : left + 5])
    np.testing.assert_array_equal(CenterCrop((4, 6), keys="x")({"x": x}, RNG)["x"], x[3:7, 3:9])
    with pytest.raises(ValueError, match="larger than"):
        RandomCrop(11, keys="x")({"x": x}, RNG)


def test_blur_matches_a_direct_gaussian_convolution():
    x = np.random.default_rng(0).random((15, 17)).astype(np.float32)
    out = RandomBlur((1.2, 1.2), keys="x")({"x": x}, RNG)["x"]
    radius = 4  # ceil(3 * 1.2)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / 1.2) ** 2)
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    for row in range(radius, 15 - radius):  # interior: no border handling involved
        for col in range(radius, 17 - radius):
            window = x[row - radius : row + radius + 1, col - radius : col + radius + 1]
            assert out[row, col] == pytest.approx((window * kernel).sum(), abs=1e-5)


def test_brightness_and_noise_keep_dtype_and_range():
    x = np.array([[0, 100, 250]], dtype=np.uint8)
    out = RandomBrightness((0.2, 0.2), keys="x", value_range=(0, 255))({"x": x}, RNG)["x"]
    assert out.dtype == np.uint8 and out.tolist() == [[51, 151, 255]]
    flat = np.full((200, 200), 0.5, np.float32)
    noisy = RandomNoise(0.1, keys="x")({"x": flat}, np.random.default_rng(0))["x"]
    assert noisy.dtype == np.float32 and abs(float(noisy.std()) - 0.1) < 0.005


def test_normalize_matches_numpy():
    x = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = Normalize(mean, std, scale=1 / 255)({"image": x}, RNG)["image"]
    expected = (x / 255 - np.array(mean)) / np.array(std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="channel"):
        Normalize((0.5, 0.5), keys="image")({"image": x}, RNG)


def test_custom_transform_subclass_gets_a_seeded_rng():
    class Jitter(Transform):
        def __call__(self, sample, rng):
            return {**sample, "x": sample["x"] + rng.integers(0, 1000)}

    data = {"x": np.zeros((8, 1), np.int64)}
    first = list(Stream(data, batch_size=4, transforms=[Jitter()], shuffle=False))
    second = list(Stream(data, batch_size=4, transforms=[Jitter()], shuffle=False))
    assert identical(first, second)
    assert len(np.unique(np.concatenate([b["x"] for b in first]))) > 1


# ---------------------------------------------------------------------- file loading
def test_load_numpy_and_images_from_files(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(6):
        array = rng.random((3, 4)).astype(np.float32)
        np.save(tmp_path / f"{i}.npy", array)
        image = rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)
        save_png(image, tmp_path / f"{i}.png")
        samples.append({"array": str(tmp_path / f"{i}.npy"), "image": tmp_path / f"{i}.png"})
    stream = Stream(
        samples, batch_size=3, shuffle=False, transforms=[LoadNumpy("array"), LoadImage("image")]
    )
    batches = list(stream)
    for i in range(6):
        np.testing.assert_array_equal(
            batches[i // 3]["array"][i % 3], np.load(tmp_path / f"{i}.npy")
        )
    assert batches[0]["image"].shape == (3, 40, 60, 3) and batches[0]["image"].dtype == np.uint8

    resized = Stream(
        [{"image": sample["image"]} for sample in samples],
        batch_size=2,
        transforms=[LoadImage("image"), ResizeShortSide(20), CenterCrop(16), Resize((8, 12))],
        shuffle=False,
        drop_last=False,
    )
    assert next(iter(resized))["image"].shape == (2, 8, 12, 3)
    flat = np.full((40, 60, 3), 200, np.uint8)
    save_png(flat, tmp_path / "flat.png")
    flat_stream = Stream(
        [{"image": tmp_path / "flat.png"}],
        batch_size=1,
        transforms=[LoadImage("image"), ResizeShortSide(20), Normalize(100, 50)],
    )
    out = next(iter(flat_stream))["image"]
    assert out.shape == (1, 20, 30, 3)
    np.testing.assert_allclose(out, 2.0, atol=0.05)  # (200 - 100) / 50 after any resampling


# ---------------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        Stream([], batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        Stream({"x": np.zeros((0, 3))}, batch_size=2)
    with pytest.raises(ValueError, match=r"same length.*'x': 3.*'y': 4"):
        Stream({"x": np.zeros(3), "y": np.zeros(4)}, batch_size=1)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"batch_size={bad}"):
            Stream({"x": np.zeros(3)}, batch_size=bad)
    with pytest.raises(ValueError, match=r"samples\[1\]\['x'\].*\(3,\)"):
        Stream([{"x": np.zeros(2)}, {"x": np.zeros(3)}], batch_size=2)
    with pytest.raises(ValueError, match="dtype"):
        Stream([{"x": np.zeros(2, np.float32)}, {"x": np.zeros(2, np.int32)}], batch_size=2)
    with pytest.raises(ValueError, match="same keys"):
        Stream([{"x": np.zeros(2)}, {"y": np.zeros(2)}], batch_size=2)
    with pytest.raises(ValueError, match="larger than the 3 samples"):
        Stream({"x": np.zeros(3)}, batch_size=4)
    with pytest.raises(ValueError, match=r"shard=\(2, 2\)"):
        Stream({"x": np.zeros(3)}, batch_size=1, shard=(2, 2))
    with pytest.raises(TypeError, match="float16"):
        Stream({"x": np.zeros(3, np.float16)}, batch_size=1)
    with pytest.raises(ValueError, match="no transform loads them"):
        Stream([{"x": "a.npy"}], batch_size=1)
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        Stream({"x": np.zeros(3)}, batch_size=1, transforms=[RandomFlip(), 3])
    with pytest.raises(ValueError, match="start_batch"):
        Stream({"x": np.zeros(4)}, batch_size=2).set_epoch(0, start_batch=3)
    with pytest.raises(ValueError, match="mode"):
        RandomFlip("diagonal")
    with pytest.raises(ValueError, match="nearest"):
        RandomRotation(10, keys="image", nearest="mask")


def test_mismatched_files_are_caught_before_batching(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((2, 4), np.float32))
    samples = [{"x": tmp_path / "a.npy"}, {"x": tmp_path / "b.npy"}]
    with pytest.raises(ValueError, match=r"b\.npy.*\(2, 4\)|a\.npy.*\(2, 3\)"):
        list(Stream(samples, batch_size=2, transforms=[LoadNumpy("x")]))
    with pytest.raises(ValueError, match="still holds the text"):
        list(
            Stream(
                [{**s, "y": s["x"]} for s in samples[:1]] * 2,
                batch_size=2,
                transforms=[LoadNumpy("x")],
            )
        )
    with pytest.raises(KeyError, match="RandomFlip needs key 'mask'"):
        list(
            Stream(
                {"image": np.zeros((2, 4, 4))},
                batch_size=2,
                transforms=[RandomFlip(keys=("image", "mask"))],
            )
        )
    with pytest.raises(TypeError, match="must return a dict"):
        list(Stream({"x": np.zeros(2)}, batch_size=2, transforms=[lambda s: s["x"]]))
