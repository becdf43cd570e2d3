"""TensorBoard callback: the event files are read back record by record and checked.

The reader below follows TensorBoard's own record format (TFRecord: length, masked CRC-32C of the
length, data, masked CRC-32C of the data) with a CRC written here, so a corrupt file fails it; the
records are decoded with the `Event` protocol buffer that TensorBoard reads.
"""

from __future__ import annotations

import glob
import os
import struct

import pytest

if not os.environ.get("CI"):  # in CI (.ci/run sets CI=1) a missing tensorboardX fails the run
    pytest.importorskip(
        "tensorboardX",
        reason="needs `pip install 'mlxkit[tensorboard]'` (CI installs it with the dev extra)",
    )

from mlxkit import Trainer
from mlxkit.callbacks import TensorBoard

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from tensorboardX.proto.event_pb2 import Event


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(folder: str) -> list[Event]:
    events = []
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        with open(path, "rb") as file:
            data = file.read()
        offset = 0
        while offset < len(data):
            header = data[offset : offset + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
            assert length_crc == masked_crc32c(header), path
            body = data[offset + 12 : offset + 12 + length]
            (body_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
            assert body_crc == masked_crc32c(body), path
            events.append(Event.FromString(body))
            offset += 16 + length
    return events


def scalars(folder: str) -> dict[str, dict[int, float]]:
    found: dict[str, dict[int, float]] = {}
    for event in read_events(folder):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def tiny_fit(callback, epochs=3):
    mx.random.seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    trainer = Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy", ["accuracy"])
    history = trainer.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        validation_split=0.25,
        callbacks=[callback],
        verbose=0,
        seed=0,
    )
    return trainer, history


def test_epoch_scalars_match_the_history(tmp_path):
    _, history = tiny_fit(TensorBoard(tmp_path))
    train, validation = scalars(str(tmp_path / "train")), scalars(str(tmp_path / "validation"))
    for key in ("loss", "accuracy", "learning_rate"):
        assert list(train[f"epoch_{key}"]) == [0, 1, 2]
        np.testing.assert_allclose(
            list(train[f"epoch_{key}"].values()), history.history[key], rtol=1e-6
        )
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(
            list(validation[f"epoch_{key}"].values()), history.history[f"val_{key}"], rtol=1e-6
        )
    assert "epoch_learning_rate" not in validation
    assert not any(tag.startswith("batch_") for tag in train)  # update_freq="epoch"


def test_batch_scalars_every_n_steps(tmp_path):
    _, history = tiny_fit(TensorBoard(tmp_path, update_freq=2))
    train = scalars(str(tmp_path / "train"))
    # 48 training rows / 16 = 3 steps per epoch, 9 steps: global steps 2, 4, 6, 8 are written
    assert list(train["batch_loss"]) == [2, 4, 6, 8]
    assert list(train["batch_learning_rate"].values()) == pytest.approx([0.1] * 4)
    # the batch logs are the epoch's running mean: at step 6, the last of epoch 2, the epoch loss
    assert train["batch_loss"][6] == pytest.approx(history.history["loss"][1], rel=1e-6)


def test_histograms_and_images(tmp_path):
    def images(trainer, epoch):
        weight = trainer.model.layers[0].weight  # (8, 4)
        scaled = (weight - weight.min()) / (weight.max() - weight.min())
        return {
            "first_layer": scaled,
            "checker": (np.indices((6, 6)).sum(0) % 2 * 255).astype(np.uint8),
        }

    trainer, _ = tiny_fit(TensorBoard(tmp_path, histogram_freq=2, images=images), epochs=4)
    events = read_events(str(tmp_path / "train"))
    histograms = {}
    pictures = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("histo"):
                histograms.setdefault(value.tag, []).append((event.step, value.histo))
            if value.HasField("image"):
                pictures.setdefault(value.tag, []).append((event.step, value.image))
    assert sorted(histograms) == ["layers.0.bias", "layers.0.weight", "layers.2.bias",
                                  "layers.2.weight"]  # fmt: skip
    steps, last = zip(*histograms["layers.0.weight"])
    assert steps == (1, 3)  # every second epoch
    final = np.asarray(trainer.model.layers[0].weight)
    assert last[-1].num == final.size
    assert last[-1].min == pytest.approx(final.min()) and last[-1].max == pytest.approx(final.max())
    assert last[-1].sum == pytest.approx(final.sum(), abs=1e-5)
    assert [step for step, _ in pictures["first_layer"]] == [0, 1, 2, 3]
    image = pictures["checker"][0][1]
    assert (image.height, image.width) == (6, 6)  # tensorboardX stores grey as RGB
    assert image.encoded_image_string.startswith(b"\x89PNG")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"Received: update_freq='batch'"):
        TensorBoard(tmp_path, update_freq="batch")
    with pytest.raises(ValueError, match=r"Received: histogram_freq=-1"):
        TensorBoard(tmp_path, histogram_freq=-1)
    with pytest.raises(TypeError, match=r"`images` must be a function"):
        TensorBoard(tmp_path, images=[1])
    board = TensorBoard(tmp_path, images=lambda trainer, epoch: {"bad": np.full((4, 4), 3.0)})
    with pytest.raises(ValueError, match=r"float image 'bad' must be in \[0, 1\]"):
        tiny_fit(board, epochs=1)
