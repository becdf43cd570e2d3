"""Worker for tests/test_faults.py: trains the resume worker's problem and dies on cue.

Usage: python tests/_fault_worker.py MODE OUT_DIR [WRITER_ID SAVES]

Training modes keep a `BackupAndRestore(OUT_DIR/backup, save_freq=1)` (a backup after every
step) and print `step N` after step N (just before its backup: callbacks that save run last):

- `kill-mid-step`: SIGKILL from a second thread as step KILL_AFTER + 1 starts, so it lands
  while the step runs (or, with unlucky scheduling, during or after its backup).
- `kill-mid-write`: the backup of step KILL_AFTER + 1 writes its first file, half of its second,
  and the process SIGKILLs itself.
- `kill-between-renames`: the swap is disabled (as on a system without `renameat2`) and the
  process SIGKILLs itself after moving the old backup aside, before renaming the new one in.
- `kill-after-swap`: SIGKILL right after the new backup was swapped in, before the old one,
  now at the temporary name, is renamed for deletion.
- `run`: no kill (the parent sends SIGINT, or lets it finish).

`hammer`: saves a checkpoint to OUT_DIR/ckpt SAVES times, each tagged `WRITER_ID * 1000 + i`
in trainer.json and in callbacks.safetensors, so a reader can tell a mix of two writes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import mlxkit  # noqa: F401  (loads the fast BLAS before mlx.core)

# isort: split
from mlxkit.callbacks import BackupAndRestore, Callback, LambdaCallback

import mlx.core as mx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import _resume_worker as worker

KILL_AFTER = 15  # epoch 3 (0-based 2), batch 3 of 6: the last whole backup is of step 15


class Tag(Callback):
    """Saves one number in trainer.json and the same number in callbacks.safetensors."""

    def __init__(self) -> None:
        self.value = -1

    def state_dict(self) -> dict[str, int]:
        return {"tag": self.value}

    def state_arrays(self) -> dict[str, mx.array]:
        return {"tag": mx.array(self.value)}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _inject(mode: str, trainer) -> list:
    due = lambda: trainer.global_step == KILL_AFTER + 1  # noqa: E731
    if mode == "kill-mid-step":

        def on_train_batch_begin(batch, logs=None):
            if trainer.global_step == KILL_AFTER:
                sys.setswitchinterval(1e-6)  # let the killer take the GIL at once
                threading.Thread(target=_die).start()

        return [LambdaCallback(on_train_batch_begin=on_train_batch_begin)]
    if mode == "kill-mid-write":
        original, files = mx.save_safetensors, []

        def save(path, arrays, *args, **kwargs):
            if due():
                files.append(path)
                if len(files) == 2:
                    with open(path, "wb") as f:
                        f.write(b"\x00" * 64)  # half a file
                    _die()
            original(path, arrays, *args, **kwargs)

        mx.save_safetensors = save
    if mode in ("kill-between-renames", "kill-after-swap"):
        from mlxkit import _io

        if mode == "kill-between-renames":
            _io._SWAP = None  # as on a system that cannot swap two folders in one step
        original_rename = os.rename

        def rename(source, destination):
            source_name, destination_name = os.path.basename(source), os.path.basename(destination)
            if due() and mode == "kill-between-renames" and ".backup.tmp-" in source_name:
                _die()  # the old backup is aside, the new one not yet in
            if due() and mode == "kill-after-swap" and ".backup.del-" in destination_name:
                _die()  # the new backup is in, the old one sits at the temporary name
            original_rename(source, destination)

        os.rename = rename
    return []


def _progress(trainer) -> LambdaCallback:
    def on_train_batch_end(batch, logs=None):
        print(f"step {trainer.global_step}", flush=True)

    return LambdaCallback(on_train_batch_end=on_train_batch_end)


def hammer(out: str, writer_id: int, saves: int) -> None:
    trainer = worker.make_trainer()
    x, y, _ = worker.make_data()
    tag = Tag()
    trainer.fit(x[:8], y[:8], batch_size=8, epochs=1, callbacks=[tag], verbose=0)
    for i in range(saves):
        tag.value = writer_id * 1000 + i
        trainer.save_checkpoint(os.path.join(out, "ckpt"))
    print(f"saved {saves}", flush=True)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "hammer":
        hammer(out, int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    trainer = worker.make_trainer()
    backup = BackupAndRestore(os.path.join(out, "backup"), save_freq=1)
    injected = _inject(mode, trainer)
    worker.fit(trainer, [backup, _progress(trainer), *injected])
    print("finished", flush=True)
