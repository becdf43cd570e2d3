"""Worker for tests/test_checkpoint.py: trains a small dropout MLP and may SIGKILL itself.

Usage: python tests/_resume_worker.py MODE OUT_DIR

- `crash`: BackupAndRestore(save_freq=BACKUP_STEPS) and a CSVLogger; the process SIGKILLs itself
  right after global step KILL_STEP, in the middle of epoch 3 (after 2 full epochs).
- `resume`: the same fit, with no seed given and no kill: the backup must be picked up by itself.
- `write-kill`: ModelCheckpoint(every_n_steps=2) into OUT_DIR/ckpt; `mx.save_safetensors` is patched
  so the process SIGKILLs itself after the first file of the second checkpoint.

Every mode that finishes writes OUT_DIR/weights.npz and OUT_DIR/history.json. The test modules
(tests/test_checkpoint.py, tests/test_faults.py) import `make_trainer`, `make_data`, `fit`,
`reference_run` and the checkpoint's expected `FILES` from here.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import mlxkit  # noqa: F401  (loads the fast BLAS before mlx.core)

# isort: split
from mlxkit import Trainer
from mlxkit.callbacks import BackupAndRestore, CSVLogger, LambdaCallback, ModelCheckpoint

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

EPOCHS = 4
BATCH_SIZE = 8
STEPS_PER_EPOCH = 6  # 48 training samples / 8
BACKUP_STEPS = 5  # backups after steps 5, 10, 15 and at every epoch end (6, 12)
KILL_STEP = 16  # epoch 3 (0-based 2), batch 4 of 6: the last backup is mid-epoch, at step 15
SEED = 7
FILES = [
    "callbacks.safetensors",
    "model.safetensors",
    "optimizer.safetensors",
    "state.safetensors",
    "trainer.json",
]  # what a checkpoint folder holds
TIMING = {"samples_per_second", "peak_memory_mb", "active_memory_mb"}  # differ run to run


def make_data() -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
    return x[:48], y[:48], (x[48:], y[48:])


def make_trainer(init_seed: int = 0, accumulate_steps: int = 1) -> Trainer:
    mx.random.seed(init_seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    optimizer = optim.Adam(learning_rate=1e-2)
    return Trainer(
        model, optimizer, "cross_entropy", ["accuracy"], accumulate_steps=accumulate_steps
    )


def fit(trainer: Trainer, callbacks: list, seed: int | None = SEED, epochs: int = EPOCHS, **kwargs):
    x, y, validation = make_data()
    return trainer.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        validation_data=validation,
        shuffle=True,
        seed=seed,
        callbacks=callbacks,
        verbose=0,
        **kwargs,
    )


def weights(trainer: Trainer) -> dict[str, np.ndarray]:
    return {key: np.array(value) for key, value in tree_flatten(trainer.model.parameters())}


def without_timing(history: dict) -> dict:
    return {key: values for key, values in history.items() if key not in TIMING}


def reference_run() -> tuple[dict[str, np.ndarray], dict, list[int]]:
    """The problem trained EPOCHS epochs straight: weights, history without timing, epochs."""
    trainer = make_trainer()
    history = fit(trainer, [])
    return weights(trainer), without_timing(history.history), history.epoch


def _kill_at(step: int) -> LambdaCallback:
    def on_train_batch_end(batch, logs):
        if trainer.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return LambdaCallback(on_train_batch_end=on_train_batch_end)


def _kill_during_second_checkpoint() -> None:
    original = mx.save_safetensors
    calls = [0]

    def save_then_maybe_die(path, arrays, *args, **kwargs):
        original(path, arrays, *args, **kwargs)
        calls[0] += 1
        # A checkpoint writes 4 safetensors files: call 5 is the first file of the second one.
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGKILL)

    mx.save_safetensors = save_then_maybe_die


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    # A different initialisation: resuming must overwrite it with the checkpoint's weights.
    trainer = make_trainer(init_seed=0 if mode != "resume" else 99)
    backup = BackupAndRestore(os.path.join(out, "backup"), save_freq=BACKUP_STEPS)
    csv_logger = CSVLogger(os.path.join(out, "log.csv"))
    if mode == "crash":
        history = fit(trainer, [backup, csv_logger, _kill_at(KILL_STEP)])
    elif mode == "resume":
        history = fit(trainer, [backup, csv_logger], seed=None)
    elif mode == "write-kill":
        _kill_during_second_checkpoint()
        history = fit(trainer, [ModelCheckpoint(os.path.join(out, "ckpt"), every_n_steps=2)])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    np.savez(os.path.join(out, "weights.npz"), **weights(trainer))
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump({"history": history.history, "epoch": history.epoch}, f)
