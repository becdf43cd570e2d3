"""Callbacks: hook dispatch, lazy batch logs and every built-in, each through a real short `fit`."""

from __future__ import annotations

import csv
import os
import re
import shutil

import mlxkit
from mlxkit import Trainer
from mlxkit.callbacks import (
    BackupAndRestore,
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LazyLogs,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
    TerminateOnNaN,
)

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

STEPS = 3  # 48 training samples in batches of 16


def make_data(num=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int32)
    return x, y


VALIDATION = make_data(16, seed=1)


def make_trainer(learning_rate=0.1, *, optimizer=None, metrics=None, dropout=0.0, init_seed=0):
    mx.random.seed(init_seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 2))
    optimizer = optimizer or optim.SGD(learning_rate=learning_rate)
    return Trainer(model, optimizer, "cross_entropy", metrics)


def fit(trainer, epochs=3, callbacks=(), **kwargs):
    x, y = make_data()
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("seed", 0)
    return trainer.fit(x, y, batch_size=16, epochs=epochs, callbacks=list(callbacks), **kwargs)


def weights(model):
    return {key: np.array(value) for key, value in tree_flatten(model.parameters())}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def inject(key, values):
    """Writes `values[epoch]` into the epoch logs as `key`: a sequence the test controls."""

    def on_epoch_end(epoch, logs):
        logs[key] = values[epoch]

    return LambdaCallback(on_epoch_end=on_epoch_end)


def snapshot_each_epoch(trainer, into):
    return LambdaCallback(on_epoch_end=lambda epoch, logs: into.append(weights(trainer.model)))


# ---------------------------------------------------------------------------- dispatch and logs
class AllHooks(Callback):
    def __init__(self):
        self.calls = []
        self.trainers = set()

    def _record(self, name, *args):
        self.trainers.add(id(self.trainer))
        self.calls.append((name, *(a for a in args if isinstance(a, int))))


for _hook in mlxkit.callbacks.base.HOOKS:
    setattr(
        AllHooks,
        _hook,
        lambda self, *args, _name=_hook: self._record(_name, *args),
    )


def test_hooks_run_in_keras_order_with_the_trainer_set():
    trainer = make_trainer()
    recorder = AllHooks()
    fit(trainer, epochs=2, callbacks=[recorder], validation_data=VALIDATION)
    expected = [("on_train_begin",)]
    for epoch in range(2):
        expected.append(("on_epoch_begin", epoch))
        for batch in range(STEPS):
            expected += [("on_train_batch_begin", batch), ("on_train_batch_end", batch)]
        expected += [("on_test_begin",), ("on_test_batch_begin", 0), ("on_test_batch_end", 0)]
        expected += [("on_test_end",), ("on_epoch_end", epoch)]
    expected.append(("on_train_end",))
    assert recorder.calls == expected
    assert recorder.trainers == {id(trainer)}

    # As in Keras, a standalone predict or evaluate builds its own callback list: the last fit's
    # callbacks do not fire.
    recorder.calls.clear()
    trainer.predict(VALIDATION[0], batch_size=8)
    trainer.evaluate(*VALIDATION, batch_size=16)
    assert recorder.calls == []
    trainer.predict(VALIDATION[0], batch_size=8, callbacks=[recorder])
    assert recorder.calls == [
        ("on_predict_begin",),
        ("on_predict_batch_begin", 0),
        ("on_predict_batch_end", 0),
        ("on_predict_batch_begin", 1),
        ("on_predict_batch_end", 1),
        ("on_predict_end",),
    ]
    recorder.calls.clear()
    trainer.evaluate(*VALIDATION, batch_size=16, callbacks=[recorder])
    assert recorder.calls == [
        ("on_test_begin",),
        ("on_test_batch_begin", 0),
        ("on_test_batch_end", 0),
        ("on_test_end",),
    ]


def test_hooks_that_no_callback_overrides_are_not_dispatched(monkeypatch):
    counts = {hook: 0 for hook in mlxkit.callbacks.base.HOOKS}
    for hook in counts:

        def counting(self, *args, _hook=hook):
            counts[_hook] += 1

        # Patched on the base class: a dispatched, non-overridden hook would land here.
        monkeypatch.setattr(Callback, hook, counting)

    class EpochOnly(Callback):
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(epoch)

    trainer = make_trainer()
    epoch_only = EpochOnly()
    fit(trainer, epochs=2, callbacks=[epoch_only, ProgressBar("line")], validation_data=VALIDATION)
    trainer.predict(VALIDATION[0])
    assert epoch_only.epochs == [0, 1]
    assert counts == {hook: 0 for hook in counts}
    for hook in ("on_train_batch_begin", "on_train_batch_end", "on_test_batch_end"):
        assert not trainer.callbacks.wants(hook)


def test_batch_logs_are_read_from_the_device_only_when_a_callback_reads_them():
    trainer = make_trainer(metrics=["accuracy"])
    original = trainer._logs
    synced = {"batch": 0, "epoch": 0}

    def counting_logs(*, synchronize=False):
        synced["epoch" if synchronize else "batch"] += 1
        return original(synchronize=synchronize)

    trainer._logs = counting_logs
    received = []
    ignore = LambdaCallback(on_train_batch_end=lambda batch, logs: received.append(logs))
    fit(trainer, epochs=2, callbacks=[ignore])
    assert synced == {"batch": 0, "epoch": 2}
    assert all(isinstance(logs, LazyLogs) for logs in received) and len(received) == 2 * STEPS

    seen = []

    def read_twice(batch, logs):
        seen.append((logs["loss"], dict(logs)["accuracy"]))

    synced.update(batch=0, epoch=0)
    fit(trainer, epochs=2, callbacks=[LambdaCallback(on_train_batch_end=read_twice)])
    assert synced == {"batch": 2 * STEPS, "epoch": 2}  # one sync per batch, however many reads
    # The running mean after the last batch of an epoch is the epoch's logged loss.
    assert seen[STEPS - 1][0] == pytest.approx(trainer.history.history["loss"][0], rel=1e-6)


def test_stop_training_from_a_callback_stops_after_that_batch():
    trainer = make_trainer()

    def stop(batch, logs):
        if trainer.epoch == 1 and batch == 1:
            trainer.stop_training = True

    history = fit(trainer, epochs=5, callbacks=[LambdaCallback(on_train_batch_end=stop)])
    assert history.epoch == [0, 1]
    assert trainer.global_step == STEPS + 2


def test_epoch_logs_hold_learning_rate_throughput_and_memory():
    trainer = make_trainer(0.05, metrics=["accuracy"])
    history = fit(trainer, epochs=2, validation_data=VALIDATION)
    h = history.history
    assert set(h) == {
        "loss",
        "accuracy",
        "learning_rate",
        "samples_per_second",
        "peak_memory_mb",
        "active_memory_mb",
        "val_loss",
        "val_accuracy",
    }
    assert h["learning_rate"] == [pytest.approx(0.05)] * 2
    assert all(v > 0 for v in h["samples_per_second"])
    assert all(
        peak >= active > 0 for peak, active in zip(h["peak_memory_mb"], h["active_memory_mb"])
    )
    # The logged validation loss is what evaluate computes on the same weights.
    loss, _ = trainer.evaluate(*VALIDATION)  # [loss, accuracy], as in Keras
    assert loss == pytest.approx(h["val_loss"][-1], rel=1e-6)


# ---------------------------------------------------------------------------- History, ProgressBar
def test_history_is_returned_and_plots_a_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    trainer = make_trainer(metrics=["accuracy"])
    history = fit(trainer, epochs=3, validation_data=VALIDATION)
    assert isinstance(history, History) and history is trainer.history
    assert history.epoch == [0, 1, 2] and len(history.history["val_accuracy"]) == 3

    path = history.plot(tmp_path / "curves.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.pyplot.imread(path)
    # Two panels (loss, accuracy) of 4.5 x 3.5 inches at 100 dpi.
    assert image.shape[:2] == (350, 900)
    with pytest.raises(ValueError, match=r"unknown keys \['nope'\]. Available: \['accuracy'"):
        history.plot(tmp_path / "x.png", keys=["nope"])
    with pytest.raises(ValueError, match="empty"):
        History().plot(tmp_path / "empty.png")

    # Each fit returns a new History (Keras): the earlier one keeps its record, and one started
    # at initial_epoch=2 lists the epochs it ran.
    second = fit(trainer, epochs=2)
    assert second is not history and second is trainer.history
    assert history.epoch == [0, 1, 2] and len(history.history["val_accuracy"]) == 3
    assert second.epoch == [0, 1] and len(second.history["loss"]) == 2
    third = fit(trainer, epochs=4, initial_epoch=2)
    assert third.epoch == [2, 3] and len(third.history["loss"]) == 2
    assert third.params == {"verbose": 0, "epochs": 4, "steps": STEPS}


def test_progress_line_mode_prints_one_plain_line_per_epoch(capsys):
    trainer = make_trainer()
    history = fit(trainer, epochs=3, verbose=2, validation_data=VALIDATION)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3
    assert "\x1b" not in out and "\r" not in out
    pattern = re.compile(
        r"Epoch (\d)/3 - \d+\.\ds - loss (\d\.\d{4}) - lr 0\.1 - [\d,]+ samples/s - "
        r"val_loss (\d\.\d{4})"
    )
    for epoch, line in enumerate(lines):
        match = pattern.fullmatch(line)
        assert match, line
        assert int(match[1]) == epoch + 1
        assert match[2] == f"{history.history['loss'][epoch]:.4f}"
        assert match[3] == f"{history.history['val_loss'][epoch]:.4f}"

    # verbose="auto" with stdout not a terminal (captured) is line mode too; verbose=0 is silent.
    fit(make_trainer(), epochs=2, verbose="auto")
    assert len(capsys.readouterr().out.splitlines()) == 2
    fit(make_trainer(), epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_progress_bar_mode_draws_a_tqdm_bar(capsys):
    bar = ProgressBar("bar", refresh_seconds=0.0)  # refresh every step: batch logs are read
    trainer = make_trainer()
    fit(trainer, epochs=2, callbacks=[bar])
    captured = capsys.readouterr()
    assert "Epoch 1/2" in captured.err and "Epoch 2/2" in captured.err
    assert f"{STEPS}/{STEPS}" in captured.err and "loss" in captured.err
    assert captured.out == ""
    assert trainer.callbacks.wants("on_train_batch_end")
    with pytest.raises(ValueError, match=r"'auto', 'bar' or 'line'. Received: mode='fancy'"):
        ProgressBar("fancy")


# ---------------------------------------------------------------------------- EarlyStopping
@pytest.mark.parametrize(
    "values, kwargs, epochs_run, best_epoch",
    [
        # 1.0 best, then no improvement for `patience`=2 epochs: stops after epoch index 3.
        ([1.0, 0.8, 0.9, 0.85, 0.7, 0.6], {"patience": 2}, 4, 1),
        # Improvements smaller than min_delta do not count.
        ([1.0, 0.97, 0.96, 0.95, 0.5, 0.4], {"patience": 2, "min_delta": 0.05}, 3, 0),
        ([1.0, 0.97, 0.96, 0.95, 0.5, 0.4], {"patience": 2}, 6, 5),
        # mode="max" (also what "auto" picks for an accuracy).
        ([0.5, 0.7, 0.6, 0.65, 0.9, 0.9], {"patience": 1, "mode": "max"}, 3, 1),
        # Improving, but never below the baseline within `patience` epochs: stop.
        ([0.9, 0.8, 0.7, 0.6, 0.4, 0.3], {"patience": 2, "baseline": 0.5}, 2, 1),
        ([0.9, 0.4, 0.45, 0.42, 0.3, 0.3], {"patience": 2, "baseline": 0.5}, 4, 1),
        # patience=0: the first epoch without improvement stops.
        ([3.0, 2.0, 2.5, 1.0, 1.0, 1.0], {"patience": 0}, 3, 1),
    ],
)
def test_early_stopping_stops_at_the_right_epoch_and_restores_best(
    values, kwargs, epochs_run, best_epoch
):
    trainer = make_trainer(0.2)
    snapshots = []
    kwargs.setdefault("mode", "min")
    stop = EarlyStopping("val_metric", restore_best_weights=True, **kwargs)
    callbacks = [inject("val_metric", values), snapshot_each_epoch(trainer, snapshots), stop]
    history = fit(trainer, epochs=len(values), callbacks=callbacks)
    assert history.epoch == list(range(epochs_run))
    assert stop.best_epoch == best_epoch and stop.best == values[best_epoch]
    assert stop.stopped_epoch == (epochs_run - 1 if epochs_run < len(values) else 0)
    assert_same_weights(weights(trainer.model), snapshots[best_epoch])
    if best_epoch != epochs_run - 1:
        assert not np.array_equal(
            snapshots[best_epoch]["layers.0.weight"], snapshots[-1]["layers.0.weight"]
        )


def test_early_stopping_auto_mode_and_no_restore():
    trainer = make_trainer(0.2, metrics=["accuracy"])
    snapshots = []
    stop = EarlyStopping("val_accuracy", patience=1)  # "auto" -> max for an accuracy
    values = [0.5, 0.7, 0.6, 0.65, 0.9]
    callbacks = [inject("val_accuracy", values), snapshot_each_epoch(trainer, snapshots), stop]
    history = fit(trainer, epochs=5, callbacks=callbacks)
    assert history.epoch == [0, 1, 2] and stop.tracker.mode == "max"  # Accuracy.direction
    assert_same_weights(weights(trainer.model), snapshots[-1])  # not restored


def test_early_stopping_on_real_val_loss_with_zero_learning_rate():
    # A learning rate of 0: val_loss never changes, so it stops after patience + 1 epochs.
    trainer = make_trainer(0.0)
    stop = EarlyStopping(patience=2)
    history = fit(trainer, epochs=10, callbacks=[stop], validation_data=VALIDATION)
    assert history.epoch == [0, 1, 2] and stop.stopped_epoch == 2
    assert len(set(history.history["val_loss"])) == 1


def test_monitor_errors_name_the_problem():
    trainer = make_trainer()
    # An absent key skips the epoch with a warning (Keras), naming why it is absent.
    with pytest.warns(UserWarning, match=r"monitor='val_loss', but no validation ran this epoch"):
        fit(trainer, epochs=1, callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match=r"monitor='f1' should be minimised or maximised"):
        fit(trainer, epochs=1, callbacks=[ModelCheckpoint("unused", monitor="f1", save_top_k=1)])
    with pytest.raises(ValueError, match=r"'auto', 'min' or 'max'. Received: mode='maximum'"):
        EarlyStopping(mode="maximum")
    with pytest.raises(ValueError, match=r"Received: mode='low'"):
        ReduceLROnPlateau(mode="low")
    with pytest.raises(ValueError, match=r"patience=-1"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match=r"factor=1.5"):
        ReduceLROnPlateau(factor=1.5)


# ---------------------------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_keeps_exactly_the_top_k(tmp_path):
    trainer = make_trainer(0.2)
    values = [0.5, 0.3, 0.4, 0.1, 0.6, 0.2]
    saver = ModelCheckpoint(
        tmp_path / "e{epoch:02d}-{val_metric:.2f}", monitor="val_metric", mode="min", save_top_k=2
    )
    fit(trainer, epochs=6, callbacks=[inject("val_metric", values), saver])
    # The two lowest: epoch 4 (0.1) and epoch 6 (0.2), 1-based in the names.
    assert sorted(os.listdir(tmp_path)) == ["e04-0.10", "e06-0.20"]
    assert saver.best_path == str(tmp_path / "e04-0.10") and saver.best == 0.1
    assert sorted(os.listdir(tmp_path / "e06-0.20")) == [
        "callbacks.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "state.safetensors",
        "trainer.json",
    ]


def test_model_checkpoint_top_k_deletes_only_on_the_main_process(tmp_path, monkeypatch):
    """Under data parallelism rank 0 writes the checkpoints; other ranks must not delete them."""
    values = [0.5, 0.3, 0.4, 0.1]
    template = tmp_path / "e{epoch:02d}-{val_metric:.2f}"
    writer = ModelCheckpoint(template, monitor="val_metric", mode="min", save_top_k=4)
    fit(make_trainer(0.2), epochs=4, callbacks=[inject("val_metric", values), writer])
    written = sorted(os.listdir(tmp_path))
    assert len(written) == 4
    monkeypatch.setattr(Trainer, "is_main_process", property(lambda self: False))
    other_rank = ModelCheckpoint(template, monitor="val_metric", mode="min", save_top_k=1)
    fit(make_trainer(0.2), epochs=4, callbacks=[inject("val_metric", values), other_rank])
    assert sorted(os.listdir(tmp_path)) == written  # nothing written, nothing deleted
    assert other_rank.top_k == [(0.1, str(tmp_path / "e04-0.10"))]  # the ranking is kept


def test_model_checkpoint_top_k_on_real_val_loss_with_a_template(tmp_path):
    trainer = make_trainer(0.3, metrics=["accuracy"])
    saver = ModelCheckpoint(
        tmp_path / "epoch{epoch:03d}-{val_loss:.4f}", save_top_k=3, save_weights_only=True
    )
    history = fit(trainer, epochs=5, callbacks=[saver], validation_data=VALIDATION)
    val_loss = history.history["val_loss"]
    best = sorted(range(5), key=lambda e: val_loss[e])[:3]
    expected = sorted(f"epoch{e + 1:03d}-{val_loss[e]:.4f}.safetensors" for e in best)
    assert sorted(os.listdir(tmp_path)) == expected


def test_model_checkpoint_best_only_saves_at_improvements(tmp_path):
    trainer = make_trainer(0.2)
    snapshots = []
    values = [0.9, 0.95, 0.8, 0.8, 0.5]
    saver = ModelCheckpoint(
        tmp_path / "w{epoch}",
        monitor="val_metric",
        mode="min",
        save_best_only=True,
        save_weights_only=True,
    )
    callbacks = [inject("val_metric", values), snapshot_each_epoch(trainer, snapshots), saver]
    fit(trainer, epochs=5, callbacks=callbacks)
    assert sorted(os.listdir(tmp_path)) == ["w1.safetensors", "w3.safetensors", "w5.safetensors"]
    # Each file holds the weights of its epoch.
    for epoch in (1, 3, 5):
        model = make_trainer(init_seed=9).model
        mlxkit.load_weights(model, tmp_path / f"w{epoch}.safetensors")
        assert_same_weights(weights(model), snapshots[epoch - 1])
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]


def test_model_checkpoint_every_n_epochs_and_steps(tmp_path):
    trainer = make_trainer()
    fit(
        trainer,
        epochs=5,
        callbacks=[ModelCheckpoint(tmp_path / "a" / "ep{epoch}", every_n_epochs=2)],
    )
    assert sorted(os.listdir(tmp_path / "a")) == ["ep2", "ep4"]

    trainer = make_trainer()
    saver = ModelCheckpoint(tmp_path / "b" / "s{step:02d}-e{epoch}", every_n_steps=4)
    fit(trainer, epochs=3, callbacks=[saver])  # 9 steps: saves after steps 4 and 8
    assert sorted(os.listdir(tmp_path / "b")) == ["s04-e2", "s08-e3"]
    meta = mlxkit.checkpoint.read_checkpoint(tmp_path / "b" / "s04-e2")[0]
    assert (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (1, 1, 4)

    # A fixed path is overwritten in place, atomically, with no leftover temporary folders.
    fit(make_trainer(), epochs=3, callbacks=[ModelCheckpoint(tmp_path / "c" / "last")])
    assert os.listdir(tmp_path / "c") == ["last"]
    assert mlxkit.checkpoint.read_checkpoint(tmp_path / "c" / "last")[0]["epoch"] == 3


def test_model_checkpoint_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"save_top_k=0"):
        ModelCheckpoint(tmp_path, save_top_k=0)
    with pytest.raises(ValueError, match=r"every_n_epochs=0"):
        ModelCheckpoint(tmp_path, every_n_epochs=0)
    with pytest.raises(ValueError, match=r"every_n_steps=5, save_best_only=True"):
        ModelCheckpoint(tmp_path, every_n_steps=5, save_best_only=True)
    with pytest.raises(ValueError, match=r"'auto', 'min' or 'max'. Received: mode='best'"):
        ModelCheckpoint(tmp_path, mode="best")
    trainer = make_trainer()
    with pytest.raises(
        ValueError, match=r"uses 'val_f1', which is not in the logs. Keys available"
    ):
        fit(trainer, epochs=1, callbacks=[ModelCheckpoint(tmp_path / "{val_f1}")])


def test_checkpoint_writers_see_every_other_callbacks_state_of_that_epoch(tmp_path):
    # ModelCheckpoint comes first in the list, but writes after EarlyStopping has seen the epoch.
    trainer = make_trainer()
    stop = EarlyStopping("loss", patience=5)
    history = fit(trainer, epochs=2, callbacks=[ModelCheckpoint(tmp_path / "ckpt"), stop])
    meta = mlxkit.checkpoint.read_checkpoint(tmp_path / "ckpt")[0]
    assert meta["callbacks"]["2:EarlyStopping"]["best"] == min(history.history["loss"])


# ---------------------------------------------------------------------------- learning rates
@pytest.mark.parametrize(
    "schedule, expected",
    [
        (lambda epoch: 0.1 / (epoch + 1), [0.1, 0.05, 0.1 / 3]),
        (lambda epoch, lr: lr if epoch == 0 else lr * 0.5, [0.2, 0.1, 0.05]),  # Keras's form
        (optim.step_decay(0.1, 0.5, 1), [0.1, 0.05, 0.025]),
        (optim.cosine_decay(0.1, 2), [0.1, 0.05, 0.0]),
    ],
)
def test_learning_rate_scheduler(schedule, expected):
    trainer = make_trainer(0.2)
    history = fit(trainer, epochs=3, callbacks=[LearningRateScheduler(schedule)])
    assert history.history["learning_rate"] == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_learning_rate_scheduler_rate_is_used_by_the_compiled_step():
    trainer = make_trainer()
    snapshots = []
    schedule = LearningRateScheduler(lambda epoch: 0.5 if epoch != 1 else 0.0)
    fit(trainer, epochs=3, callbacks=[schedule, snapshot_each_epoch(trainer, snapshots)])
    assert_same_weights(snapshots[0], snapshots[1])  # a rate of 0 during epoch 1
    assert not np.array_equal(snapshots[1]["layers.0.weight"], snapshots[2]["layers.0.weight"])
    with pytest.raises(TypeError, match="already follows a schedule"):
        scheduled = make_trainer(optimizer=optim.SGD(learning_rate=optim.step_decay(0.1, 0.5, 3)))
        fit(scheduled, epochs=1, callbacks=[schedule])
    with pytest.raises(TypeError, match="Received: schedule of type float"):
        LearningRateScheduler(0.1)


def test_reduce_lr_on_plateau_reduces_at_the_right_epochs():
    trainer = make_trainer(0.1)
    values = [1.0, 0.9, 0.95, 0.93, 0.8, 0.85, 0.86, 0.87]
    reduce = ReduceLROnPlateau(
        "val_metric", mode="min", factor=0.5, patience=2, min_delta=0.0, min_lr=0.03
    )
    history = fit(trainer, epochs=8, callbacks=[inject("val_metric", values), reduce])
    # No improvement at epochs 2 and 3: reduced after epoch 3; again after 5 and 6, but min_lr
    # stops it at 0.03; the learning_rate logged is the one each epoch trained with.
    assert history.history["learning_rate"] == pytest.approx(
        [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03], rel=1e-6
    )


def test_reduce_lr_on_plateau_cooldown():
    trainer = make_trainer(0.1)
    values = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    reduce = ReduceLROnPlateau("val_metric", mode="min", factor=0.5, patience=1, cooldown=2)
    history = fit(trainer, epochs=6, callbacks=[inject("val_metric", values), reduce])
    # As in Keras: reduced after epoch 1; the cooldown counts down over epochs 2 and 3, and
    # epoch 3, where it reaches 0, counts towards patience again: reduced after epoch 3 too.
    assert history.history["learning_rate"] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rel=1e-6
    )


# ---------------------------------------------------------------------------- CSV, NaN, lambda
def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_csv_matches_history(rows, history):
    assert [int(row["epoch"]) for row in rows] == history.epoch
    assert set(rows[0]) == {"epoch", *history.history}
    for key, values in history.history.items():
        assert [float(row[key]) for row in rows] == values, key


def test_csv_logger_rows_equal_history_and_append_on_resume(tmp_path):
    path = tmp_path / "log.csv"
    trainer = make_trainer(metrics=["accuracy"])
    fit(trainer, epochs=2, callbacks=[CSVLogger(path)], validation_data=VALIDATION)
    assert_csv_matches_history(read_csv(path), trainer.history)
    trainer.save_checkpoint(tmp_path / "ckpt")
    # A row of an epoch the resumed run redoes (written after the checkpoint) is dropped.
    with open(path, "a") as f:
        f.write("2" + ",0.5" * len(trainer.history.history) + "\n")

    resumed = make_trainer(metrics=["accuracy"], init_seed=5)
    history = fit(
        resumed,
        epochs=4,
        callbacks=[CSVLogger(path)],
        validation_data=VALIDATION,
        resume_from=tmp_path / "ckpt",
    )
    assert history.epoch == [0, 1, 2, 3]
    assert_csv_matches_history(read_csv(path), history)

    # A fresh fit rewrites the file.
    fit(make_trainer(metrics=["accuracy"]), epochs=1, callbacks=[CSVLogger(path)])
    assert len(read_csv(path)) == 1


def test_csv_logger_widens_its_header_when_validation_starts_later(tmp_path):
    path = tmp_path / "log.csv"
    trainer = make_trainer()
    callbacks = [CSVLogger(path, separator=";")]
    fit(trainer, epochs=3, callbacks=callbacks, validation_data=VALIDATION, validation_freq=2)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert [row["val_loss"] for row in rows][::2] == ["NA", "NA"]  # Keras writes NA
    assert float(rows[1]["val_loss"]) == trainer.history.history["val_loss"][0]
    assert [float(row["loss"]) for row in rows] == trainer.history.history["loss"]


def test_nan_messages_print_on_the_main_process_only(capsys, monkeypatch):
    monkeypatch.setattr(Trainer, "is_main_process", property(lambda self: False))
    x, y = make_data()
    x[20] = np.nan
    trainer = make_trainer()
    trainer.fit(
        x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[TerminateOnNaN()]
    )
    assert trainer.global_step == 2  # every rank stops
    out = capsys.readouterr().out
    assert "TerminateOnNaN: batch" not in out and "training loss was NaN" not in out


def test_terminate_on_nan_stops_at_the_first_bad_batch(capsys):
    x, y = make_data()
    x[20] = np.nan  # in batch 1 (samples 16..31), unshuffled
    trainer = make_trainer()
    trainer.fit(
        x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[TerminateOnNaN()]
    )
    assert trainer.global_step == 2 and trainer.history.epoch == [0]
    assert "TerminateOnNaN: batch 1: invalid loss" in capsys.readouterr().out
    # Without it, training runs through every epoch.
    trainer = make_trainer()
    trainer.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert trainer.global_step == 9


def test_lambda_callback_calls_its_functions():
    events = []
    callback = LambdaCallback(
        on_train_begin=lambda logs: events.append("begin"),
        on_epoch_end=lambda epoch, logs: events.append((epoch, round(logs["loss"], 6))),
        on_train_end=lambda logs: events.append(("end", round(logs["loss"], 6))),
    )
    history = fit(make_trainer(), epochs=2, callbacks=[callback])
    losses = [round(loss, 6) for loss in history.history["loss"]]
    assert events == ["begin", (0, losses[0]), (1, losses[1]), ("end", losses[1])]
    with pytest.raises(ValueError, match=r"unknown hooks \['on_epoch_finish'\]. Valid hooks"):
        LambdaCallback(on_epoch_finish=print)
    with pytest.raises(TypeError, match="Received: an element of type str"):
        fit(make_trainer(), epochs=1, callbacks=["EarlyStopping"])


# ---------------------------------------------------------------------------- BackupAndRestore
def test_backup_and_restore_resumes_mid_epoch_after_a_crash(tmp_path):
    reference = make_trainer(0.2, dropout=0.25)
    fit(reference, epochs=4, validation_data=VALIDATION, seed=3)

    class Crash(Exception):
        pass

    def crash(batch, logs):
        if trainer.global_step == 9:
            raise Crash

    backup_dir = tmp_path / "backup"
    trainer = make_trainer(0.2, dropout=0.25)
    callbacks = [
        BackupAndRestore(backup_dir, save_freq=4),
        LambdaCallback(on_train_batch_end=crash),
    ]
    with pytest.raises(Crash):
        fit(trainer, epochs=4, callbacks=callbacks, validation_data=VALIDATION, seed=3)
    # Backups after steps 3 (epoch end), 4, 6 (epoch end) and 8: the last is mid-epoch 3.
    meta = mlxkit.checkpoint.read_checkpoint(backup_dir)[0]
    assert (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (2, 2, 8)

    # A new process would build a new trainer: different initial weights, no seed given.
    trainer = make_trainer(0.2, dropout=0.25, init_seed=1)
    history = fit(
        trainer,
        epochs=4,
        callbacks=[BackupAndRestore(backup_dir, save_freq=4)],
        validation_data=VALIDATION,
        seed=None,
    )
    assert_same_weights(weights(trainer.model), weights(reference.model))
    for key in ("loss", "val_loss", "learning_rate"):
        assert history.history[key] == reference.history.history[key]
    assert not backup_dir.exists()  # removed once training completed
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".backup")]


def test_backup_and_restore_arguments_and_kept_backup(tmp_path):
    with pytest.raises(ValueError, match=r"'epoch' or a positive number of steps. Received: "):
        BackupAndRestore(tmp_path, save_freq=0)
    backup = BackupAndRestore(tmp_path / "b", delete_checkpoint=False)
    assert backup.resume_path() is None
    trainer = make_trainer()
    fit(trainer, epochs=2, callbacks=[backup])
    assert backup.resume_path() == str(tmp_path / "b")
    # A finished backup resumes at the end: nothing left to train.
    again = make_trainer(init_seed=4)
    history = fit(again, epochs=2, callbacks=[BackupAndRestore(tmp_path / "b")])
    assert history.epoch == [0, 1] and again.global_step == 2 * STEPS
    assert_same_weights(weights(again.model), weights(trainer.model))


def test_evaluate_with_callbacks_after_fit_leaves_fits_callbacks(tmp_path):
    """Keras builds a fresh callback list per call: a later checkpoint holds fit's states."""
    import json

    trainer = make_trainer()
    stop = EarlyStopping("val_loss", patience=5)
    fit(trainer, epochs=2, callbacks=[stop], validation_data=VALIDATION)
    expected = stop.state_dict()
    assert expected["best"] < float("inf")

    class CountTestBatches(Callback):
        def __init__(self):
            self.batches = 0

        def on_test_batch_end(self, batch, logs=None):
            self.batches += 1

    counter = CountTestBatches()
    trainer.evaluate(*VALIDATION, batch_size=8, callbacks=[counter])
    assert counter.batches == 2
    assert stop in trainer.callbacks.callbacks and counter not in trainer.callbacks.callbacks

    path = trainer.save_checkpoint(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "trainer.json").read_text())["callbacks"]
    states = {key.split(":", 1)[1]: value for key, value in saved.items()}
    assert states["EarlyStopping"]["best"] == expected["best"]
    assert states["EarlyStopping"]["wait"] == expected["wait"]
    assert "CountTestBatches" not in states and path.endswith("ckpt")


# ---------------------------------------------------------------------------- Keras semantics
def test_auto_mode_reads_the_metric_direction_and_lists_the_known_names():
    trainer = make_trainer(metrics=["accuracy"])
    stop = EarlyStopping("val_accuracy", mode="auto")
    fit(trainer, epochs=1, callbacks=[stop], validation_data=VALIDATION)
    assert stop.tracker.mode == "max"
    # A key no metric declares (a custom log, say) needs an explicit mode, before training runs.
    with pytest.raises(ValueError, match=r"direction \(accuracy, loss, val_accuracy, val_loss\)"):
        fit(trainer, epochs=1, callbacks=[ReduceLROnPlateau("val_f1")])


def test_absent_validation_key_does_not_blame_validation_when_it_ran(tmp_path):
    trainer = make_trainer(metrics=["accuracy"])
    saver = ModelCheckpoint(tmp_path / "best", monitor="val_rmse", mode="min", save_best_only=True)
    with pytest.warns(UserWarning, match=r"monitor='val_rmse', but it is not among this epoch"):
        fit(trainer, epochs=1, callbacks=[saver], validation_data=VALIDATION)
    assert not (tmp_path / "best").exists()


def test_corrupt_backup_without_a_previous_copy_says_what_to_do(tmp_path):
    backup = BackupAndRestore(tmp_path / "backup", delete_checkpoint=False)
    fit(make_trainer(), epochs=1, callbacks=[backup])
    (tmp_path / "backup" / "optimizer.safetensors").write_bytes(b"\0" * 7)
    with pytest.raises(mlxkit.checkpoint.CheckpointError, match=r"no readable previous copy"):
        fit(make_trainer(), epochs=2, callbacks=[backup])


def test_corrupt_backup_is_replaced_by_the_previous_copy(tmp_path):
    backup = BackupAndRestore(tmp_path / "backup", double_checkpoint=True, delete_checkpoint=False)
    fit(make_trainer(), epochs=2, callbacks=[backup])
    (tmp_path / "backup" / "trainer.json").write_text("{")
    trainer = make_trainer()
    with pytest.warns(UserWarning, match=r"resuming from the previous copy"):
        history = fit(trainer, epochs=3, callbacks=[backup])
    # Resumed after epoch 1 (the previous copy): epochs 1 and 2 ran, and the backup is whole.
    assert history.epoch == [0, 1, 2] and trainer.global_step == 3 * STEPS
    assert mlxkit.checkpoint.read_checkpoint(tmp_path / "backup")[0]["epoch"] == 3
    assert mlxkit.checkpoint.read_checkpoint(backup.previous_dir)[0]["epoch"] == 2


def test_kill_while_the_backup_rotates_resumes_from_the_previous_copy(tmp_path, monkeypatch):
    """double_checkpoint moves the latest backup aside before writing the new one: a kill in
    between leaves only the previous copy, which must be resumed from (not epoch 0)."""
    from mlxkit.callbacks import checkpointing

    calls = []
    real_save = checkpointing.save_checkpoint

    def killed_at_the_third_backup(trainer, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # after the rotation, before anything is written
        real_save(trainer, path)

    monkeypatch.setattr(checkpointing, "save_checkpoint", killed_at_the_third_backup)
    backup = BackupAndRestore(tmp_path / "backup", double_checkpoint=True)
    with pytest.raises(KeyboardInterrupt):
        fit(make_trainer(), epochs=4, callbacks=[backup])
    assert not (tmp_path / "backup").exists()
    assert mlxkit.checkpoint.read_checkpoint(backup.previous_dir)[0]["epoch"] == 2
    monkeypatch.setattr(checkpointing, "save_checkpoint", real_save)
    trainer, batches = make_trainer(), []
    count = LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    with pytest.warns(UserWarning, match=r"no backup in .* resuming from the previous copy"):
        fit(trainer, epochs=4, callbacks=[BackupAndRestore(tmp_path / "backup"), count])
    # Epochs 3 and 4 ran; the first two came from the previous copy.
    assert len(batches) == 2 * STEPS and trainer.global_step == 4 * STEPS


def test_missing_backup_with_an_unreadable_previous_copy_says_what_to_do(tmp_path):
    backup = BackupAndRestore(tmp_path / "backup", double_checkpoint=True, delete_checkpoint=False)
    fit(make_trainer(), epochs=2, callbacks=[backup])
    shutil.rmtree(tmp_path / "backup")
    (tmp_path / "backup.previous" / "trainer.json").write_text("{")
    with pytest.raises(
        mlxkit.checkpoint.CheckpointError, match=r"no backup in .*Delete .*previous"
    ):
        fit(make_trainer(), epochs=3, callbacks=[backup])


def test_model_checkpoint_save_freq_is_every_n_steps(tmp_path):
    with pytest.raises(ValueError, match=r"save_freq=3, every_n_steps=2"):
        ModelCheckpoint(tmp_path / "x", save_freq=3, every_n_steps=2)
    saver = ModelCheckpoint(tmp_path / "s{step}-b{batch}", save_freq=2)
    fit(make_trainer(), epochs=2, callbacks=[saver])  # 6 steps of 3 an epoch
    assert sorted(os.listdir(tmp_path)) == ["s2-b2", "s4-b1", "s6-b3"]


def test_verbose_callbacks_print_keras_messages(capsys, tmp_path):
    stop = EarlyStopping("loss", mode="max", patience=0, verbose=1, restore_best_weights=True)
    saver = ModelCheckpoint(tmp_path / "ckpt", monitor="loss", save_best_only=True, verbose=1)
    fit(make_trainer(0.1), epochs=3, callbacks=[stop, saver])
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 1." in out
    assert "Epoch 1: loss improved from None to " in out and "saving model to" in out


def test_integer_arguments_take_numpy_integers(tmp_path):
    assert EarlyStopping(patience=np.int64(3)).patience == 3
    assert ReduceLROnPlateau(patience=np.int32(2), cooldown=np.int64(1)).cooldown == 1
    saver = ModelCheckpoint(tmp_path / "m", save_top_k=np.int64(2), every_n_epochs=np.int8(2))
    assert (saver.save_top_k, saver.every_n_epochs) == (2, 2)
    assert type(saver.save_top_k) is int
