"""Checkpoints: folder contents, exact resume (in process and after SIGKILL), strict loading,
atomic writes, `load_weights`, rank-0-only writes and the data-order seed."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import subprocess
import sys

import mlxkit
from mlxkit import Trainer
from mlxkit.callbacks import (
    BackupAndRestore,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
)
from mlxkit.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests import _resume_worker as worker
from tests._resume_worker import FILES, without_timing

WORKER = os.path.join(os.path.dirname(__file__), "_resume_worker.py")


def run_worker(mode, out):
    return subprocess.run(
        [sys.executable, WORKER, mode, str(out)], capture_output=True, text=True, timeout=120
    )


def numpy_tree(tree):
    return {
        key: np.array(value) for key, value in tree_flatten(tree) if isinstance(value, mx.array)
    }


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference():
    """The worker's problem trained 4 epochs straight, in this process."""
    return worker.reference_run()


# ---------------------------------------------------------------------------- contents
def test_checkpoint_folder_holds_everything_to_resume(tmp_path):
    trainer = worker.make_trainer()
    x, y, _ = worker.make_data()
    trainer.fit(x, y, batch_size=8, epochs=2, seed=4, verbose=0)
    path = trainer.save_checkpoint(tmp_path / "ckpt")
    assert path == str(tmp_path / "ckpt")
    assert sorted(os.listdir(path)) == FILES
    assert os.listdir(tmp_path) == ["ckpt"]  # no temporary folder left

    with open(os.path.join(path, "trainer.json")) as f:
        meta = json.load(f)
    assert meta["format_version"] == 1
    assert (meta["epoch"], meta["global_step"], meta["batch_in_epoch"], meta["seed"]) == (
        2,
        12,
        0,
        4,
    )
    assert meta["model_class"] == "Sequential" and meta["mlx_version"] == mx.__version__
    assert meta["mlxkit_version"] == mlxkit.__version__
    assert meta["callbacks"]["0:History"]["epoch"] == [0, 1]

    model = mx.load(os.path.join(path, "model.safetensors"))
    assert_same_arrays(numpy_tree(model), worker.weights(trainer))
    optimizer = mx.load(os.path.join(path, "optimizer.safetensors"))
    assert optimizer["step"].item() == 12
    assert optimizer["learning_rate"].item() == pytest.approx(1e-2)
    assert_same_arrays(numpy_tree(optimizer), numpy_tree(trainer.optimizer.state))
    state = mx.load(os.path.join(path, "state.safetensors"))
    assert state["random.key"].tolist() == mx.random.state[0].tolist()
    # The running loss of the last epoch: its mean is the logged loss.
    total, count = state["loss.sums"].tolist()
    assert total / count == pytest.approx(trainer.history.history["loss"][-1], rel=1e-6)
    assert count == 48 and state["loss.finite_steps"].tolist() == [6, 6]


def test_load_checkpoint_restores_model_optimizer_position_and_random_key(tmp_path):
    trainer = worker.make_trainer()
    x, y, _ = worker.make_data()
    trainer.fit(x, y, batch_size=8, epochs=1, seed=2, verbose=0)
    trainer.save_checkpoint(tmp_path / "ckpt")
    key = mx.random.state[0].tolist()

    other = worker.make_trainer(init_seed=5)
    mx.random.seed(123)
    other.load_checkpoint(tmp_path / "ckpt")
    assert_same_arrays(worker.weights(other), worker.weights(trainer))
    assert_same_arrays(numpy_tree(other.optimizer.state), numpy_tree(trainer.optimizer.state))
    assert (other.epoch, other.global_step, other.batch_in_epoch, other.seed) == (1, 6, 0, 2)
    assert mx.random.state[0].tolist() == key


# ---------------------------------------------------------------------------- exact resume
def test_resume_from_an_epoch_checkpoint_is_exact(tmp_path, reference):
    ref_weights, ref_history, ref_epochs = reference
    first = worker.make_trainer()
    worker.fit(first, [], epochs=2)
    first.save_checkpoint(tmp_path / "ckpt")
    resumed = worker.make_trainer(init_seed=3)
    history = worker.fit(resumed, [], seed=None, resume_from=tmp_path / "ckpt")
    assert_same_arrays(worker.weights(resumed), ref_weights)
    assert without_timing(history.history) == ref_history and history.epoch == ref_epochs


@pytest.mark.parametrize("accumulate_steps", [1, 2])
def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path, accumulate_steps):
    # Checkpoints every 3 steps: step 9 is mid-epoch 2 and, with accumulation over 2 batches,
    # holds a half-filled gradient buffer.
    straight = worker.make_trainer(accumulate_steps=accumulate_steps)
    saver = ModelCheckpoint(tmp_path / "step{step}", every_n_steps=3)
    worker.fit(straight, [saver])
    assert read_checkpoint(tmp_path / "step9")[0]["batch_in_epoch"] == 3

    resumed = worker.make_trainer(init_seed=8, accumulate_steps=accumulate_steps)
    history = worker.fit(resumed, [], resume_from=tmp_path / "step9")
    assert_same_arrays(worker.weights(resumed), worker.weights(straight))
    assert without_timing(history.history) == without_timing(straight.history.history)


def test_a_mid_epoch_checkpoint_of_mlxkit_0_1_0_still_resumes_exactly(tmp_path):
    # 0.1.0 kept the running sums as scalars; rewrite a checkpoint into its layout and resume.
    straight = worker.make_trainer()
    worker.fit(straight, [ModelCheckpoint(tmp_path / "step{step}", every_n_steps=3)])
    path = tmp_path / "step9" / "state.safetensors"
    state = mx.load(str(path))
    total, count = state.pop("loss.sums")
    _, steps = state.pop("loss.finite_steps")
    correct, items = state.pop("metrics.metric0.counts")
    state.update(
        {
            "loss.total": total,
            "loss.count": count,
            "loss.steps": steps,
            "loss.first_bad_step": mx.array(-1, dtype=mx.int32),
            "metrics.metric0.correct": correct,
            "metrics.metric0.count": items,
        }
    )
    mx.save_safetensors(str(path), state)
    # Nor did 0.1.0 record a pass over the data apart from the epoch (each epoch began one).
    meta_path = tmp_path / "step9" / "trainer.json"
    meta = json.loads(meta_path.read_text())
    assert (meta.pop("pass_epoch"), meta.pop("batch_in_pass")) == (1, 3)
    meta_path.write_text(json.dumps(meta))

    resumed = worker.make_trainer(init_seed=8)
    history = worker.fit(resumed, [], resume_from=tmp_path / "step9")
    assert_same_arrays(worker.weights(resumed), worker.weights(straight))
    assert without_timing(history.history) == without_timing(straight.history.history)


def test_trainer_json_is_strict_json_and_keeps_infinities(tmp_path):
    # Mid-way through the first epoch the best-only ModelCheckpoint's best is still its threshold
    # +inf, which Python's json writes as the non-standard `Infinity`; the checkpoint must stay
    # readable by strict parsers. (EarlyStopping's best is None, JSON null, until an epoch ends.)
    trainer = worker.make_trainer()
    x, y, _ = worker.make_data()
    callbacks = [
        ModelCheckpoint(
            tmp_path / "best",
            monitor="loss",
            save_best_only=True,
            initial_value_threshold=math.inf,
        ),
        ModelCheckpoint(tmp_path / "step{step}", every_n_steps=2),
    ]
    trainer.fit(x, y, batch_size=8, epochs=1, seed=0, verbose=0, callbacks=callbacks)
    text = (tmp_path / "step2" / "trainer.json").read_text()

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    strict = json.loads(text, parse_constant=refuse)
    assert strict["callbacks"]["1:ModelCheckpoint"]["best"] == {"__float__": "inf"}
    meta = read_checkpoint(tmp_path / "step2")[0]
    assert meta["callbacks"]["1:ModelCheckpoint"]["best"] == math.inf


def test_exact_resume_after_sigkill_mid_epoch(tmp_path, reference):
    ref_weights, ref_history, ref_epochs = reference
    crashed = run_worker("crash", tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert not (tmp_path / "weights.npz").exists()
    meta = read_checkpoint(tmp_path / "backup")[0]
    # Killed at step 16; the last backup is from step 15, mid-way through epoch index 2.
    assert (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (2, 3, 15)

    resumed = run_worker("resume", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as saved:
        assert_same_arrays(dict(saved), ref_weights)
    with open(tmp_path / "history.json") as f:
        saved_history = json.load(f)
    assert without_timing(saved_history["history"]) == ref_history
    assert saved_history["epoch"] == ref_epochs
    assert not (tmp_path / "backup").exists()  # deleted once training completed

    # The CSV log: rows of epochs 0-1 from the killed run, 2-3 appended by the resumed one.
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == ref_epochs
    for key, values in saved_history["history"].items():
        assert [float(row[key]) for row in rows] == values, key


def test_callback_state_and_arrays_survive_a_resume(tmp_path):
    # EarlyStopping's best epoch (0) is only known to the resumed run through the checkpoint:
    # its best weights come back from callbacks.safetensors.
    values = [0.5, 0.9, 0.8, 0.7, 0.6]

    def callbacks():
        def on_epoch_end(epoch, logs):
            logs["val_metric"] = values[epoch]

        stop = EarlyStopping("val_metric", mode="min", patience=10, restore_best_weights=True)
        return [LambdaCallback(on_epoch_end=on_epoch_end), stop], stop

    first = worker.make_trainer()
    snapshots = []
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(worker.weights(first)))
    listed, _ = callbacks()
    worker.fit(first, [*listed, keep, ModelCheckpoint(tmp_path / "ckpt")], epochs=3)
    arrays = mx.load(str(tmp_path / "ckpt" / "callbacks.safetensors"))
    assert sorted(arrays) == [f"2:EarlyStopping/{key}" for key in sorted(snapshots[0])]

    resumed = worker.make_trainer(init_seed=2)
    listed, stop = callbacks()
    history = worker.fit(resumed, listed, epochs=5, resume_from=tmp_path / "ckpt")
    assert history.epoch == [0, 1, 2, 3, 4] and (stop.best_epoch, stop.wait) == (0, 4)
    assert_same_arrays(worker.weights(resumed), snapshots[0])


def test_callback_state_follows_its_class_when_the_list_is_reordered(tmp_path, capsys):
    values = [0.5, 0.9, 0.8, 0.7, 0.6]

    def record(epoch, logs):
        logs["val_metric"] = values[epoch]

    first = worker.make_trainer()
    stop = EarlyStopping("val_metric", mode="min", patience=10)
    saver = ModelCheckpoint(tmp_path / "ckpt")
    worker.fit(first, [LambdaCallback(on_epoch_end=record), stop, saver], epochs=3)
    saved = read_checkpoint(tmp_path / "ckpt")[0]["callbacks"]
    assert "2:EarlyStopping" in saved and "3:ModelCheckpoint" in saved

    # EarlyStopping moves from position 2 to 3, and no ModelCheckpoint takes the saved one's state.
    resumed = worker.make_trainer(init_seed=2)
    stop = EarlyStopping("val_metric", mode="min", patience=10)
    listed = [LambdaCallback(on_epoch_end=record), LambdaCallback(), stop]
    capsys.readouterr()
    history = worker.fit(resumed, listed, epochs=5, resume_from=tmp_path / "ckpt")
    assert history.epoch == [0, 1, 2, 3, 4] and (stop.best_epoch, stop.wait) == (0, 4)
    out = capsys.readouterr().out
    assert "holds the state of callbacks ['3:ModelCheckpoint']" in out


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, reference):
    killed = run_worker("write-kill", tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = [name for name in os.listdir(tmp_path) if name.startswith(".ckpt.tmp-")]
    assert len(leftovers) == 1
    assert os.listdir(tmp_path / leftovers[0]) == ["model.safetensors"]

    # The first checkpoint (after step 2) is intact and untouched by the killed second write.
    assert sorted(os.listdir(tmp_path / "ckpt")) == FILES
    meta = read_checkpoint(tmp_path / "ckpt")[0]
    assert (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (0, 2, 2)
    trainer = worker.make_trainer(init_seed=4)
    history = worker.fit(trainer, [], resume_from=tmp_path / "ckpt")
    assert_same_arrays(worker.weights(trainer), reference[0])
    assert without_timing(history.history) == reference[1]

    # The next successful write to the same path clears the killed write's leftover.
    trainer.save_checkpoint(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = worker.make_trainer()
    x, y, _ = worker.make_data()
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    trainer.save_checkpoint(tmp_path / "ckpt")
    saved = worker.weights(trainer)
    trainer.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, verbose=0)

    original = mx.save_safetensors
    calls = []

    def failing(path, arrays, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("No space left on device")
        original(path, arrays, *args, **kwargs)

    monkeypatch.setattr(mx, "save_safetensors", failing)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(tmp_path / "ckpt")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt"]
    fresh = worker.make_trainer(init_seed=6)
    fresh.load_checkpoint(tmp_path / "ckpt")
    assert fresh.epoch == 1
    assert_same_arrays(worker.weights(fresh), saved)


def test_a_checkpoint_moved_aside_by_a_crash_between_renames_is_recovered(tmp_path):
    trainer = worker.make_trainer()
    trainer.save_checkpoint(tmp_path / "ckpt")
    # What a kill between "move the old folder aside" and "rename the new one in" leaves.
    os.rename(tmp_path / "ckpt", tmp_path / ".ckpt.old-x1y2")
    os.makedirs(tmp_path / ".ckpt.tmp-z3")  # and an incomplete new one
    assert BackupAndRestore(tmp_path / "ckpt").resume_path() == str(tmp_path / "ckpt")
    worker.make_trainer(init_seed=2).load_checkpoint(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == FILES
    # A killed first write leaves only a temporary folder: there is nothing to resume from.
    os.makedirs(tmp_path / ".other.tmp-a1")
    assert BackupAndRestore(tmp_path / "other").resume_path() is None


# ---------------------------------------------------------------------------- strict loading
class Wrapped(nn.Module):
    """The worker's layers under another class: same keys and shapes, another architecture."""

    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3)]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def trainer_with(model, optimizer=None, metrics=("accuracy",)):
    return Trainer(
        model, optimizer or optim.Adam(learning_rate=1e-2), "cross_entropy", list(metrics)
    )


@pytest.fixture
def saved_checkpoint(tmp_path):
    trainer = worker.make_trainer()
    x, y, _ = worker.make_data()
    trainer.fit(x, y, batch_size=8, epochs=1, seed=0, verbose=0)
    return trainer.save_checkpoint(tmp_path / "ckpt")


def snapshot(trainer):
    return (
        worker.weights(trainer),
        numpy_tree(trainer.optimizer.state),
        numpy_tree(trainer.loss_state),
        (trainer.epoch, trainer.global_step, trainer.batch_in_epoch, trainer.seed),
        mx.random.state[0].tolist(),
    )


def assert_unchanged(before, trainer):
    after = snapshot(trainer)
    for a, b in zip(before[:3], after[:3]):
        assert_same_arrays(a, b)
    assert before[3:] == after[3:]


@pytest.mark.parametrize(
    "make, messages",
    [
        (
            lambda: trainer_with(
                nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
            ),
            [
                "model.safetensors: wrongly shaped keys",
                "layers.0.weight: expected (16, 8), found (32, 8)",
                "optimizer.safetensors: wrongly shaped keys",
            ],
        ),
        (
            lambda: trainer_with(
                nn.Sequential(
                    nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3), nn.Linear(3, 3)
                )
            ),
            ["model.safetensors: missing keys ['layers.4.bias', 'layers.4.weight']"],
        ),
        (
            lambda: trainer_with(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3))),
            ["model.safetensors: unexpected keys ['layers.3.bias', 'layers.3.weight']"],
        ),
        (
            lambda: trainer_with(Wrapped()),
            ["model class: the checkpoint holds a Sequential, the trainer's model is a Wrapped"],
        ),
        (
            lambda: trainer_with(worker.make_trainer().model, optim.SGD(learning_rate=0.1)),
            ["optimizer.safetensors: unexpected keys ['layers.0.bias.m'"],
        ),
        (
            lambda: trainer_with(worker.make_trainer().model, metrics=()),
            ["state.safetensors: unexpected keys ['metrics.metric0.counts'"],
        ),
    ],
    ids=["shapes", "missing", "unexpected", "class", "optimizer", "metrics"],
)
def test_a_mismatched_checkpoint_lists_the_problems_and_applies_nothing(
    saved_checkpoint, make, messages
):
    trainer = make()
    x, y, _ = worker.make_data()
    trainer.fit(x, y, batch_size=8, epochs=1, seed=1, verbose=0)
    before = snapshot(trainer)
    with pytest.raises(
        CheckpointError, match="does not match this trainer; nothing was loaded"
    ) as e:
        trainer.load_checkpoint(saved_checkpoint)
    for message in messages:
        assert message in str(e.value)
    assert_unchanged(before, trainer)
    with pytest.raises(CheckpointError):  # the same through fit(resume_from=...)
        trainer.fit(x, y, batch_size=8, epochs=2, resume_from=saved_checkpoint, verbose=0)
    # fit itself resets the position and draws a seed before loading; no array was touched.
    after = snapshot(trainer)
    for a, b in zip(before[:3], after[:3]):
        assert_same_arrays(a, b)
    assert before[4] == after[4]


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def garble(path):
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"\x00garbage{")


def edit_meta(**changes):
    def edit(path):
        with open(path) as f:
            meta = json.load(f)
        meta.update(changes)
        for key in [k for k, v in changes.items() if v is None and k != "seed"]:
            del meta[key]
        with open(path, "w") as f:
            json.dump(meta, f)

    return edit


@pytest.mark.parametrize(
    "file, damage, message",
    [
        ("optimizer.safetensors", truncate, r"optimizer.safetensors: the file is truncated or"),
        ("model.safetensors", garble, r"model.safetensors: the file is truncated or corrupt"),
        ("state.safetensors", os.remove, r"Checkpoint file missing: .*state.safetensors"),
        ("trainer.json", truncate, r"Cannot read .*trainer.json"),
        (
            "trainer.json",
            edit_meta(format_version=2),
            r"format_version=2; this mlxkit reads "
            r"versions up to 1. Upgrade mlxkit",
        ),
        ("trainer.json", edit_meta(epoch=None), r"lacks or mistypes the fields \['epoch'\]"),
        ("trainer.json", edit_meta(global_step="12"), r"the fields \['global_step'\]; expected"),
    ],
    ids=["truncated", "garbled", "missing", "json", "newer-format", "no-epoch", "bad-step"],
)
def test_a_damaged_checkpoint_is_a_clear_error_and_applies_nothing(
    saved_checkpoint, file, damage, message
):
    damage(os.path.join(saved_checkpoint, file))
    trainer = worker.make_trainer(init_seed=3)
    before = snapshot(trainer)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(trainer, saved_checkpoint)
    assert_unchanged(before, trainer)


def test_no_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint folder at"):
        worker.make_trainer().load_checkpoint(tmp_path / "nowhere")


# ---------------------------------------------------------------------------- load_weights
@pytest.mark.parametrize("name", ["w.npz", "w.safetensors", "ckpt"])
def test_load_weights_from_npz_safetensors_or_a_checkpoint(tmp_path, name):
    trainer = worker.make_trainer(init_seed=1)
    path = tmp_path / name
    if name == "ckpt":
        trainer.save_checkpoint(path)
    else:
        trainer.model.save_weights(str(path))
    model = worker.make_trainer(init_seed=2).model
    assert not np.array_equal(
        np.array(model.layers[0].weight), worker.weights(trainer)["layers.0.weight"]
    )
    mlxkit.load_weights(model, path)
    assert_same_arrays(numpy_tree(model.parameters()), worker.weights(trainer))


def test_load_weights_is_strict(tmp_path):
    source = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    source.save_weights(str(tmp_path / "w.npz"))
    model = worker.make_trainer().model
    before = numpy_tree(model.parameters())
    with pytest.raises(CheckpointError, match="nothing was loaded") as e:
        mlxkit.load_weights(model, tmp_path / "w.npz")
    text = str(e.value)
    assert "missing keys ['layers.3.bias', 'layers.3.weight']" in text
    assert "unexpected keys ['layers.2.bias', 'layers.2.weight']" in text
    assert_same_arrays(numpy_tree(model.parameters()), before)

    smaller = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    smaller.save_weights(str(tmp_path / "w.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"layers.3.weight: expected \(3, 32\), found \(3, 16\)"
    ):
        mlxkit.load_weights(model, tmp_path / "w.safetensors")
    truncate(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        mlxkit.load_weights(model, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="No weights file at"):
        mlxkit.load_weights(model, tmp_path / "absent.npz")
    assert_same_arrays(numpy_tree(model.parameters()), before)


def test_a_mismatched_safetensors_file_is_refused_from_its_header(tmp_path, monkeypatch):
    """The key and shape diff reads the header (safetensors.safe_open), not the tensors."""
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    other.save_weights(str(tmp_path / "w.safetensors"))
    model = worker.make_trainer().model

    def no_tensor_reads(*args, **kwargs):
        raise AssertionError("a tensor was read")

    monkeypatch.setattr(mx, "load", no_tensor_reads)
    with pytest.raises(
        CheckpointError, match=r"layers.0.weight: expected \(32, 8\), found \(16, 8\)"
    ):
        mlxkit.load_weights(model, tmp_path / "w.safetensors")
    assert mlxkit.checkpoint.tensor_shapes(tmp_path / "w.safetensors")["layers.3.weight"] == (3, 16)


# ---------------------------------------------------------------------------- distributed, seed
def test_only_rank_0_writes(tmp_path):
    trainer = worker.make_trainer()
    trainer.rank = 1  # what a second data-parallel process sees
    assert trainer.save_checkpoint(tmp_path / "ckpt") == str(tmp_path / "ckpt")
    callbacks = [
        ModelCheckpoint(tmp_path / "e{epoch}"),
        ModelCheckpoint(tmp_path / "s{step}", every_n_steps=2, save_weights_only=True),
        BackupAndRestore(tmp_path / "backup", save_freq=1),
        CSVLogger(tmp_path / "log.csv"),
    ]
    worker.fit(trainer, callbacks, epochs=2)
    assert os.listdir(tmp_path) == []


class SeededSource:
    """A batch source with its own seed, following `mlxkit.sources.BatchSource`."""

    def __init__(self, seed):
        self.seed, self.epoch, self.start_batch = seed, 0, 0
        self.shard = (0, 1)
        self.x, self.y, _ = worker.make_data()
        self.seen = []  # (epoch, seed) of every epoch iterated, by this source and its copies

    def replace(self, *, seed=None, shard=None):
        view = copy.copy(self)  # shares `seen`
        view.seed = self.seed if seed is None else seed
        view.shard = self.shard if shard is None else shard
        return view

    def __len__(self):
        return 6

    def set_epoch(self, epoch, *, start_batch=0):
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        self.seen.append((self.epoch, self.seed))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(48)
        for batch in range(self.start_batch, 6):
            index = order[batch * 8 : (batch + 1) * 8]
            yield self.x[index], self.y[index]


def test_the_data_order_seed_of_a_batch_source(tmp_path):
    source = SeededSource(5)
    trainer = worker.make_trainer()
    trainer.fit(source, epochs=1, verbose=0)  # seed=None: the source keeps its own
    assert trainer.seed == 5 and source.seen == [(0, 5)]
    trainer.save_checkpoint(tmp_path / "ckpt")

    # An explicit seed drives a copy of the source: the object passed is not changed.
    trainer.fit(source, epochs=1, seed=11, verbose=0)
    assert trainer.seed == 11 and source.seen[-1] == (0, 11)
    assert source.seed == 5 and source.epoch == 0

    # After a resume the checkpoint's seed drives the source, whatever it was built with.
    other = SeededSource(9)
    resumed = worker.make_trainer(init_seed=1)
    resumed.fit(other, epochs=3, verbose=0, resume_from=tmp_path / "ckpt")
    assert resumed.seed == 5 and other.seen == [(1, 5), (2, 5)]


def test_state_a_subclass_adds_is_saved_and_restored(tmp_path):
    """A GAN-style Trainer's extra module and optimizer travel in the checkpoint."""
    from mlxkit import Trainer

    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten

    class WithCritic(Trainer):
        def __init__(self):
            super().__init__(nn.Linear(3, 2), optim.SGD(learning_rate=0.1), "mse")
            self.critic = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
            self.critic_optimizer = optim.Adam(learning_rate=0.01)
            self.critic_optimizer.init(self.critic.trainable_parameters())

        def compiled_state(self):
            return [*super().compiled_state(), self.critic.state, self.critic_optimizer.state]

    def snapshot(trainer):
        trees = (trainer.critic.parameters(), trainer.critic_optimizer.state)
        return [{k: np.array(v) for k, v in tree_flatten(t)} for t in trees]

    trainer = WithCritic()
    trainer.critic_optimizer.state["step"] = mx.array(7, dtype=mx.uint64)
    saved = snapshot(trainer)
    trainer.save_checkpoint(tmp_path / "ckpt")

    other = WithCritic()  # fresh random critic weights and optimizer state
    assert not np.array_equal(snapshot(other)[0]["layers.0.weight"], saved[0]["layers.0.weight"])
    other.load_checkpoint(tmp_path / "ckpt")
    for restored, expected in zip(snapshot(other), saved):
        assert restored.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(restored[key], expected[key])
