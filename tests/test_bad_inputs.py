"""The bad-input catalogue: one line per mistake a user can make, each refused before a step
trains, with an error of the stated type whose message names the argument or file and echoes
what was received.

A case is `(call, error type, fragments)`: `call(ctx)` makes the mistake; every fragment must
appear in the message (the argument or file, and the value received). After the error the
case's trainer must be untouched: no step trained, no weights or position applied. To add a
case, add one line to `CASES`.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path
from typing import Any

from mlxkit.callbacks import (
    BackupAndRestore,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from mlxkit.checkpoint import CheckpointError, load_weights, save_checkpoint
from mlxkit.data import Stream
from mlxkit.datasets import (
    depth_samples,
    image_folder_samples,
    load_cifar10,
    load_cora,
    load_mnist,
    make_synthetic_digits,
    make_synthetic_people,
    segmentation_samples,
)
from mlxkit.export import to_coreml, to_mlxfn
from mlxkit.images import save_png

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests import _resume_worker as worker


class Context:
    """What a case may use: a scratch folder, a fresh trainer and files made on demand."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.trainer = worker.make_trainer()
        self.x, self.y, _ = worker.make_data()

    def user_folder(self) -> Path:
        """A folder of someone's work: a checkpoint must never replace it."""
        folder = self.tmp / "paper"
        folder.mkdir(exist_ok=True)
        (folder / "paper_draft.txt").write_text("six months of work")
        return folder

    def user_images(self) -> Path:
        """A folder of someone's photos where a generator would write its `images/`."""
        folder = self.user_folder()
        (folder / "images").mkdir()
        (folder / "images" / "holiday.jpg").write_bytes(b"\xff\xd8 ... \xff\xd9")
        return folder

    def checkpoint(self, callbacks: list[Any] = ()) -> Path:  # type: ignore[assignment]
        """A checkpoint of the worker's problem after one epoch (own trainer, not ctx's)."""
        trainer = worker.make_trainer(init_seed=5)
        trainer.fit(self.x, self.y, batch_size=8, epochs=1, callbacks=list(callbacks), verbose=0)
        return Path(trainer.save_checkpoint(self.tmp / "ckpt"))

    def edited(self, **changes: Any) -> Path:
        """A checkpoint whose trainer.json fields are changed."""
        path = self.checkpoint()
        meta_path = path / "trainer.json"
        meta = json.loads(meta_path.read_text())
        meta.update(changes)
        meta_path.write_text(json.dumps(meta))
        return path

    def malformed_callback_state(self) -> Path:
        path = self.checkpoint([ModelCheckpoint(self.tmp / "best")])
        meta_path = path / "trainer.json"
        meta = json.loads(meta_path.read_text())
        (key,) = [k for k in meta["callbacks"] if k.endswith(":ModelCheckpoint")]
        meta["callbacks"][key]["best"] = "oops"
        meta_path.write_text(json.dumps(meta))
        return path

    def resume(self, path: Path, callbacks: list[Any] = ()) -> None:  # type: ignore[assignment]
        self.trainer.fit(
            self.x,
            self.y,
            batch_size=8,
            epochs=2,
            resume_from=path,
            callbacks=list(callbacks),
            verbose=0,
        )

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """`ctx.trainer.fit` on the worker's arrays, with any of them replaced."""
        x = self.x if x is None else x
        y = self.y if y is None and not isinstance(x, list) and "no_y" not in kwargs else y
        kwargs.pop("no_y", None)
        return self.trainer.fit(x, y, **{"batch_size": 8, "verbose": 0, **kwargs})

    def old_checkpoint(self, batch_in_epoch: int) -> Path:
        """A checkpoint that stopped at `batch_in_epoch` and, like those before 0.2, does not
        record its epoch length."""
        return self.edited(batch_in_epoch=batch_in_epoch, epoch=0, steps_per_epoch=None)

    def without_learning_rate(self) -> Any:
        """A trainer whose optimizer has no learning rate (Adafactor's relative steps)."""
        trainer = worker.make_trainer()
        trainer.optimizer = optim.Adafactor()
        trainer.optimizer.init(trainer.model.trainable_parameters())
        return trainer

    def half_weights(self) -> Path:
        model = self.trainer.model
        path = self.tmp / "half.safetensors"
        mx.save_safetensors(
            str(path), {k: v.astype(mx.float16) for k, v in tree_flatten(model.parameters())}
        )
        return path

    def cora(self, *, labels: bool) -> Path:
        folder = self.tmp / "cora"
        folder.mkdir()
        rows = [f"p{i} 1 0 1 0 {'Theory' if i % 2 else 'Neural_Networks'}" for i in range(4)]
        if not labels:
            rows = [row.rsplit(" ", 1)[0] for row in rows]
        (folder / "cora.content").write_text("\n".join(rows) + "\n")
        (folder / "cora.cites").write_text("p0 p1\np2 p3\n")
        return folder

    def mnist(self, *, label: int = 3, truncate: bool = False) -> Path:
        folder = self.tmp / "mnist"
        folder.mkdir()
        for split, count in (("train", 3), ("t10k", 2)):
            images = struct.pack(">IIII", 2051, count, 28, 28) + bytes(count * 28 * 28)
            labels = struct.pack(">II", 2049, count) + bytes([label] * count)
            if truncate and split == "train":
                images = images[:-100]
            (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
            (folder / f"{split}-labels-idx1-ubyte").write_bytes(labels)
        return folder

    def truncated_images(self, kind: str) -> Path:
        """An image folder (and a segmentation layout) where one file lost its second half."""
        root = self.tmp / "images"
        make_synthetic_people(self.tmp / "people", 2, size=(32, 32))
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True)
            for name in ("0.png", "1.png"):
                data = (self.tmp / "people" / sub / name).read_bytes()
                (root / sub / name).write_bytes(data)
        good = (root / "images" / "1.png").read_bytes()
        if kind == "jpeg":  # the start of a baseline JPEG with no end-of-image marker
            (root / "images" / "1.png").unlink()
            (root / "images" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(600))
        else:
            (root / "images" / "1.png").write_bytes(good[: len(good) // 2])
        return root


def truncated_class_folder(ctx: Context) -> None:
    root = ctx.truncated_images("jpeg")
    (root / "cats").mkdir()
    (root / "images" / "1.jpg").rename(root / "cats" / "broken.jpg")
    image_folder_samples(root)


def generator(ctx: Context) -> Any:
    return ((ctx.x[i : i + 8], ctx.y[i : i + 8]) for i in range(0, 48, 8))


HOME = os.path.expanduser("~")
X, Y = worker.make_data()[:2]  # 48 samples of 8 features, 3 classes
CASES: list[Any] = [
    # ------------------------------------------------------------------ Trainer: fit / evaluate
    (
        "fit(x of the wrong width)",
        lambda c: c.fit(X[:, :5]),
        ValueError,
        ["first batch of `x`", "[addmm]", "Received: a batch of x of shape (8, 5)"],
    ),
    (
        "fit(y = 7 with 3 classes)",
        lambda c: c.fit(y=np.where(Y == 2, 7, Y)),
        ValueError,
        ["`y`", "outside [0, 3)", "model outputs 3 classes", "Received: y values 7", "max 7"],
    ),
    (
        "fit(y = -1)",
        lambda c: c.fit(y=Y - 1),
        ValueError,
        ["`y`", "outside [0, 3)", "Received: y values -1", "min -1"],
    ),
    (
        "fit(y of another length)",
        lambda c: c.fit(y=Y[:40]),
        ValueError,
        ["`x` and `y`", "48 samples in x and 40 in y"],
    ),
    ("fit(no y)", lambda c: c.fit(no_y=True), ValueError, ["`y` is missing", "(48, 8), y=None"]),
    (
        "fit(x a file name)",
        lambda c: c.trainer.fit("train.csv", verbose=0),
        TypeError,
        ["`x` must be", "Received: str"],
    ),
    (
        "fit(validation_data of the wrong width)",
        lambda c: c.fit(validation_data=(X[:16, :5], Y[:16])),
        ValueError,
        ["`validation_data`", "(8,)", "Received: validation_data inputs of shape (16, 5)"],
    ),
    (
        "fit(validation_data labels 9)",
        lambda c: c.fit(validation_data=(X[:16], np.full(16, 9, np.int32))),
        ValueError,
        ["`validation_data`", "outside [0, 3)", "Received: validation_data values 9"],
    ),
    (
        "fit(validation_data one-hot targets)",
        lambda c: c.fit(validation_data=(X[:16], np.eye(3, dtype=np.float32)[Y[:16]])),
        ValueError,
        ["targets in `validation_data`", "Received: validation_data targets of shape (16, 3)"],
    ),
    (
        "fit(validation_data without targets)",
        lambda c: c.fit(validation_data=X[:16]),
        ValueError,
        ["`validation_data` has no targets", "Received: validation_data inputs of shape (16, 8)"],
    ),
    (
        "fit(validation_data a 4-tuple)",
        lambda c: c.fit(validation_data=(X[:16], Y[:16], Y[:16], Y[:16])),
        ValueError,
        ["`validation_data` must be", "Received: a tuple of 4 items", "shape (16, 8)"],
    ),
    (
        "fit(validation_data sample weights of another length)",
        lambda c: c.fit(validation_data=(X[:16], Y[:16], np.ones(3))),
        ValueError,
        ["`validation_data`", "one entry per sample: 16", "validation_data[2] of shape (3,)"],
    ),
    (
        "fit(validation_data sample weights a list)",
        lambda c: c.fit(validation_data=(X[:16], Y[:16], [1.0, 2.0])),
        ValueError,
        ["`validation_data`", "sample weight", "validation_data[2] of type list"],
    ),
    (
        "fit(one-shot generator, epochs=2)",
        lambda c: c.trainer.fit(generator(c), epochs=2, verbose=0),
        ValueError,
        ["`x` is a one-shot iterator", "Received: x of type generator, epochs=2"],
    ),
    ("fit(batch_size=0)", lambda c: c.fit(batch_size=0), ValueError, ["batch_size=0"]),
    ("fit(epochs=-1)", lambda c: c.fit(epochs=-1), ValueError, ["epochs=-1"]),
    (
        "fit(steps_per_epoch=0)",
        lambda c: c.fit(steps_per_epoch=0),
        ValueError,
        ["steps_per_epoch=0"],
    ),
    (
        "fit(validation_split=1.5)",
        lambda c: c.fit(validation_split=1.5),
        ValueError,
        ["validation_split=1.5"],
    ),
    ("fit(verbose=3)", lambda c: c.fit(verbose=3), ValueError, ["verbose=3"]),
    (
        "fit(resume_from past this run's epoch)",
        lambda c: c.resume(c.old_checkpoint(batch_in_epoch=7)),
        CheckpointError,
        ["ckpt", "after batch 7 of epoch 1", "steps_per_epoch=6", "nothing was loaded"],
    ),
    (
        "fit(ReduceLROnPlateau, optimizer without a learning rate)",
        lambda c: c.without_learning_rate().fit(X, Y, callbacks=[ReduceLROnPlateau()], verbose=0),
        ValueError,
        ["ReduceLROnPlateau", "Received: optimizer Adafactor without learning_rate"],
    ),
    (
        "evaluate(x) without y",
        lambda c: c.trainer.evaluate(X),
        ValueError,
        ["`y` is missing", "Received: x of shape (48, 8), y=None"],
    ),
    (
        "evaluate(x of the wrong width)",
        lambda c: c.trainer.evaluate(X[:, :6], Y),
        ValueError,
        ["first batch of `x`", "[addmm]", "shape (32, 6)"],
    ),
    (
        "Trainer(clip_grad_norm=0)",
        lambda c: type(c.trainer)(c.trainer.model, c.trainer.optimizer, "mse", clip_grad_norm=0),
        ValueError,
        ["clip_grad_norm=0"],
    ),
    (
        "Trainer(accumulate_steps=0)",
        lambda c: type(c.trainer)(c.trainer.model, c.trainer.optimizer, "mse", accumulate_steps=0),
        ValueError,
        ["accumulate_steps=0"],
    ),
    (
        "Trainer(model='mlp')",
        lambda c: type(c.trainer)("mlp", c.trainer.optimizer, "mse"),
        TypeError,
        ["`model`", "Received: model of type str"],
    ),
    # ------------------------------------------------------------------ checkpoint targets
    ("save_checkpoint('')", lambda c: save_checkpoint(c.trainer, ""), ValueError, ["path=''"]),
    ("save_checkpoint('.')", lambda c: save_checkpoint(c.trainer, "."), ValueError, ["path='.'"]),
    (
        "save_checkpoint('..')",
        lambda c: save_checkpoint(c.trainer, ".."),
        ValueError,
        ["parent of the current working directory", "path='..'"],
    ),
    ("save_checkpoint(home)", lambda c: save_checkpoint(c.trainer, HOME), ValueError, [HOME]),
    ("save_checkpoint('/')", lambda c: save_checkpoint(c.trainer, "/"), ValueError, ["path='/'"]),
    (
        "save_checkpoint(user folder)",
        lambda c: save_checkpoint(c.trainer, c.user_folder()),
        FileExistsError,
        ["paper_draft.txt", "overwrite=True", "paper"],
    ),
    (
        "save_checkpoint(a file)",
        lambda c: save_checkpoint(c.trainer, c.user_folder() / "paper_draft.txt"),
        FileExistsError,
        ["paper_draft.txt", "a file"],
    ),
    ("ModelCheckpoint('')", lambda c: ModelCheckpoint(""), ValueError, ["filepath=''"]),
    ("ModelCheckpoint('.')", lambda c: ModelCheckpoint("."), ValueError, ["filepath='.'"]),
    (
        "ModelCheckpoint(user folder)",
        lambda c: ModelCheckpoint(c.user_folder()),
        FileExistsError,
        ["filepath=", "paper_draft.txt"],
    ),
    (
        "ModelCheckpoint(folder, weights only)",
        lambda c: ModelCheckpoint(
            c.user_folder().rename(c.tmp / "w.safetensors"), save_weights_only=True
        ),
        FileExistsError,
        ["filepath=", "w.safetensors"],
    ),
    ("BackupAndRestore('')", lambda c: BackupAndRestore(""), ValueError, ["backup_dir=''"]),
    ("BackupAndRestore('.')", lambda c: BackupAndRestore("."), ValueError, ["backup_dir='.'"]),
    ("BackupAndRestore(home)", lambda c: BackupAndRestore(HOME), ValueError, ["home", HOME]),
    ("BackupAndRestore('/')", lambda c: BackupAndRestore("/"), ValueError, ["backup_dir='/'"]),
    (
        "BackupAndRestore(user folder)",
        lambda c: BackupAndRestore(c.user_folder()),
        FileExistsError,
        ["backup_dir=", "paper_draft.txt"],
    ),
    # ------------------------------------------------------------------ callback arguments
    (
        "ModelCheckpoint(save_top_k=0)",
        lambda c: ModelCheckpoint(c.tmp / "m", save_top_k=0),
        ValueError,
        ["save_top_k=0"],
    ),
    # A bool is not a count: every integer argument of the callbacks refuses True alike.
    (
        "ModelCheckpoint(save_top_k=True)",
        lambda c: ModelCheckpoint(c.tmp / "m", save_top_k=True),
        ValueError,
        ["ModelCheckpoint", "save_top_k=True", "positive integer"],
    ),
    (
        "EarlyStopping(patience=True)",
        lambda c: EarlyStopping(patience=True),
        ValueError,
        ["EarlyStopping", "patience=True", "integer >= 0"],
    ),
    (
        "ReduceLROnPlateau(cooldown=True)",
        lambda c: ReduceLROnPlateau(cooldown=True),
        ValueError,
        ["ReduceLROnPlateau", "cooldown=True"],
    ),
    (
        "BackupAndRestore(save_freq=True)",
        lambda c: BackupAndRestore(c.tmp / "b", save_freq=True),
        ValueError,
        ["BackupAndRestore", "save_freq=True"],
    ),
    (
        "ModelCheckpoint(every_n_epochs=0)",
        lambda c: ModelCheckpoint(c.tmp / "m", every_n_epochs=0),
        ValueError,
        ["every_n_epochs=0"],
    ),
    (
        "ModelCheckpoint(every_n_steps=-1)",
        lambda c: ModelCheckpoint(c.tmp / "m", every_n_steps=-1),
        ValueError,
        ["every_n_steps=-1"],
    ),
    (
        "ModelCheckpoint(every_n_steps, save_best_only)",
        lambda c: ModelCheckpoint(c.tmp / "m", every_n_steps=2, save_best_only=True),
        ValueError,
        ["every_n_steps=2", "save_best_only=True"],
    ),
    (
        "ModelCheckpoint(mode='best')",
        lambda c: ModelCheckpoint(c.tmp / "m", mode="best"),  # type: ignore[arg-type]
        ValueError,
        ["mode='best'"],
    ),
    (
        "BackupAndRestore(save_freq=0)",
        lambda c: BackupAndRestore(c.tmp / "b", save_freq=0),
        ValueError,
        ["save_freq=0"],
    ),
    (
        "BackupAndRestore(save_freq='batch')",
        lambda c: BackupAndRestore(c.tmp / "b", save_freq="batch"),
        ValueError,
        ["save_freq='batch'"],
    ),
    (
        "EarlyStopping(patience=-1)",
        lambda c: EarlyStopping(patience=-1),
        ValueError,
        ["patience=-1"],
    ),
    ("EarlyStopping(mode='up')", lambda c: EarlyStopping(mode="up"), ValueError, ["mode='up'"]),  # type: ignore[arg-type]
    (
        "ReduceLROnPlateau(factor=1.5)",
        lambda c: ReduceLROnPlateau(factor=1.5),
        ValueError,
        ["factor=1.5"],
    ),
    (
        "LambdaCallback(unknown hook)",
        lambda c: LambdaCallback(on_epoch_finish=print),
        ValueError,
        ["on_epoch_finish"],
    ),
    (
        "LambdaCallback(hook not callable)",
        lambda c: LambdaCallback(on_epoch_end=3),
        TypeError,
        ["on_epoch_end=3"],
    ),
    ("CSVLogger('')", lambda c: CSVLogger(""), ValueError, ["filename=''"]),
    (
        "CSVLogger(a folder)",
        lambda c: CSVLogger(c.user_folder()),
        IsADirectoryError,
        ["filename=", "paper"],
    ),
    (
        "CSVLogger(separator=';;')",
        lambda c: CSVLogger(c.tmp / "log.csv", separator=";;"),
        ValueError,
        ["separator=';;'"],
    ),
    # ------------------------------------------------------------------ checkpoint contents
    (
        "load_checkpoint(missing)",
        lambda c: c.trainer.load_checkpoint(c.tmp / "nothing"),
        CheckpointError,
        ["nothing"],
    ),
    (
        "trainer.json batch_in_epoch past the epoch",
        lambda c: c.resume(c.edited(batch_in_epoch=99, epoch=0)),
        CheckpointError,
        ["trainer.json", "batch_in_epoch=99", "steps_per_epoch=6"],
    ),
    (
        "trainer.json epoch=-1",
        lambda c: c.resume(c.edited(epoch=-1)),
        CheckpointError,
        ["trainer.json", "epoch=-1"],
    ),
    (
        "trainer.json global_step='3'",
        lambda c: c.resume(c.edited(global_step="3")),
        CheckpointError,
        ["trainer.json", "global_step"],
    ),
    (
        "trainer.json format_version=99",
        lambda c: c.resume(c.edited(format_version=99)),
        CheckpointError,
        ["trainer.json", "format_version=99"],
    ),
    (
        "trainer.json malformed callback state",
        lambda c: c.resume(c.malformed_callback_state(), [ModelCheckpoint(c.tmp / "again")]),
        CheckpointError,
        ["ModelCheckpoint", "'best': 'oops'", "nothing was loaded"],
    ),
    (
        "load_weights(float16 into float32)",
        lambda c: load_weights(c.trainer.model, c.half_weights()),
        CheckpointError,
        ["half.safetensors", "layers.0.weight: expected mlx.core.float32, found mlx.core.float16"],
    ),
    (
        "load_weights(missing)",
        lambda c: load_weights(c.trainer.model, c.tmp / "w.safetensors"),
        CheckpointError,
        ["w.safetensors"],
    ),
    # ------------------------------------------------------------------ loaders and datasets
    (
        "load_cora(no label column)",
        lambda c: load_cora(c.cora(labels=False)),
        ValueError,
        ["cora.content", "label column is missing", "['0']"],
    ),
    ("load_cora(missing)", lambda c: load_cora(c.tmp / "no"), FileNotFoundError, ["path="]),
    (
        "Cora.split(seed=-1)",
        lambda c: load_cora(c.cora(labels=True)).split(seed=-1),
        ValueError,
        ["seed=-1"],
    ),
    (
        "load_mnist(label 200)",
        lambda c: load_mnist(c.mnist(label=200)),
        ValueError,
        ["train-labels-idx1-ubyte", "label 200"],
    ),
    (
        "load_mnist(truncated)",
        lambda c: load_mnist(c.mnist(truncate=True)),
        ValueError,
        ["train-images-idx3-ubyte", "truncated"],
    ),
    ("load_mnist(missing)", lambda c: load_mnist(c.tmp / "no"), FileNotFoundError, ["path="]),
    ("load_cifar10(missing)", lambda c: load_cifar10(c.tmp / "no"), FileNotFoundError, ["no"]),
    (
        "segmentation_samples(truncated PNG)",
        lambda c: segmentation_samples(c.truncated_images("png")),
        ValueError,
        ["1.png", "IEND"],
    ),
    (
        "segmentation_samples(truncated JPEG)",
        lambda c: segmentation_samples(c.truncated_images("jpeg")),
        ValueError,
        ["1.jpg", "FFD9"],
    ),
    (
        "image_folder_samples(truncated JPEG)",
        truncated_class_folder,
        ValueError,
        ["broken.jpg", "FFD9"],
    ),
    (
        "image_folder_samples(missing)",
        lambda c: image_folder_samples(c.tmp / "no"),
        FileNotFoundError,
        ["root="],
    ),
    ("depth_samples(missing)", lambda c: depth_samples(c.tmp / "no"), FileNotFoundError, ["no"]),
    (
        "make_synthetic_people(num=0)",
        lambda c: make_synthetic_people(c.tmp / "p", 0),
        ValueError,
        ["num=0"],
    ),
    (
        "make_synthetic_people(user folder)",
        lambda c: make_synthetic_people(c.user_images(), 2, size=(32, 32)),
        FileExistsError,
        ["paper", "images", "`root`"],
    ),
    (
        "make_synthetic_digits(num=0)",
        lambda c: make_synthetic_digits(0),
        ValueError,
        ["num_train=0"],
    ),
    (
        "save_png(5 channels)",
        lambda c: save_png(np.zeros((2, 2, 5)), c.tmp / "x.png"),
        ValueError,
        ["(2, 2, 5)"],
    ),
    # ------------------------------------------------------------------ Stream
    (
        "Stream(batch_size=0)",
        lambda c: Stream({"x": c.x}, batch_size=0),
        ValueError,
        ["batch_size=0"],
    ),
    (
        "Stream(prefetch=-1)",
        lambda c: Stream({"x": c.x}, batch_size=4, prefetch=-1),
        ValueError,
        ["prefetch=-1"],
    ),
    (
        "Stream(num_threads=0)",
        lambda c: Stream({"x": c.x}, batch_size=4, num_threads=0),
        ValueError,
        ["num_threads=0"],
    ),
    (
        "Stream(shuffle='yes')",
        lambda c: Stream({"x": c.x}, batch_size=4, shuffle="yes"),  # type: ignore[arg-type]
        TypeError,
        ["shuffle='yes'"],
    ),
    (
        "Stream(shard=(2, 2))",
        lambda c: Stream({"x": c.x}, batch_size=4, shard=(2, 2)),
        ValueError,
        ["shard=(2, 2)"],
    ),
    (
        "Stream(paths, no loader)",
        lambda c: Stream({"image": ["a.png", "b.png"]}, batch_size=1),
        ValueError,
        ["'image'", "LoadNumpy"],
    ),
    # ------------------------------------------------------------------ export arguments
    (
        "to_mlxfn(path='f.bin')",
        lambda c: to_mlxfn(lambda x: x, mx.zeros(2), str(c.tmp / "f.bin")),
        ValueError,
        ["path=", "f.bin"],
    ),
    (
        "to_mlxfn(example_inputs='x')",
        lambda c: to_mlxfn(lambda x: x, "x", str(c.tmp / "f.mlxfn")),
        TypeError,
        ["example_inputs"],
    ),
    (
        "to_mlxfn(metadata=3)",
        lambda c: to_mlxfn(lambda x: x, mx.zeros(2), str(c.tmp / "f.mlxfn"), metadata=3),
        TypeError,
        ["metadata=3"],
    ),
    (
        "to_coreml(path='m.mlmodel')",
        lambda c: to_coreml(lambda x: x, mx.zeros(2), str(c.tmp / "m.mlmodel")),
        ValueError,
        ["path=", "m.mlmodel"],
    ),
    (
        "to_coreml(compute_precision='half')",
        lambda c: to_coreml(
            lambda x: x, mx.zeros(2), str(c.tmp / "m.mlpackage"), compute_precision="half"
        ),
        ValueError,
        ["compute_precision='half'"],
    ),
    (
        "to_coreml(layout='nchw')",
        lambda c: to_coreml(lambda x: x, mx.zeros(2), str(c.tmp / "m.mlpackage"), layout="nchw"),
        ValueError,
        ["layout='nchw'"],
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "fragments"),
    [pytest.param(call, error, fragments, id=name) for name, call, error, fragments in CASES],
)
def test_bad_input_is_refused_clearly_before_training(tmp_path, call, error, fragments):
    ctx = Context(tmp_path)
    before = worker.weights(ctx.trainer)
    with pytest.raises(error) as info:
        call(ctx)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    # Refused before a step trained, and nothing of a refused checkpoint was applied.
    assert (ctx.trainer.global_step, ctx.trainer.epoch) == (0, 0)
    for key, value in worker.weights(ctx.trainer).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    for folder in (tmp_path / "paper", tmp_path / "w.safetensors"):
        if folder.exists():  # the user's files are intact
            assert "paper_draft.txt" in os.listdir(folder)


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 60
