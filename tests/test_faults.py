"""Faults: SIGKILL mid-step, mid-write, between renames and after the swap; SIGINT; a full disk;
concurrent writers and readers of one checkpoint path. Each ends with nothing lost, no partial
checkpoint visible, and a resume bit-identical to an uninterrupted run."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time

from mlxkit._io import PathError
from mlxkit.callbacks import BackupAndRestore, LambdaCallback, ModelCheckpoint
from mlxkit.checkpoint import CheckpointError, load_weights, read_checkpoint

import mlx.core as mx
import numpy as np
import pytest

from tests import _fault_worker as fault
from tests import _resume_worker as worker
from tests._resume_worker import FILES, without_timing

WORKER = os.path.join(os.path.dirname(__file__), "_fault_worker.py")


def launch(mode, out, *args):
    return subprocess.Popen(
        [sys.executable, WORKER, mode, str(out), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(mode, out):
    process = launch(mode, out)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def reference():
    """The worker's problem trained 4 epochs straight, in this process."""
    return worker.reference_run()


def assert_whole_backup(folder, global_steps):
    """The backup is a complete checkpoint of one of `global_steps`."""
    meta, _ = read_checkpoint(folder)  # puts back a backup left aside between two renames
    assert meta["global_step"] in global_steps
    assert sorted(os.listdir(folder)) == FILES


def resume_and_compare(out, reference):
    """Resumes from the backup in this process: the result equals the uninterrupted run."""
    trainer = worker.make_trainer(init_seed=99)  # overwritten by the backup's weights
    history = worker.fit(trainer, [BackupAndRestore(out / "backup")], seed=None)
    for key, value in reference[0].items():
        np.testing.assert_array_equal(worker.weights(trainer)[key], value, err_msg=key)
    assert without_timing(history.history) == reference[1]
    # The finished run deleted its backup and every leftover of the killed writer.
    assert sorted(os.listdir(out)) == []


@pytest.mark.parametrize(
    ("mode", "saved_steps"),
    [
        # The kill comes from another thread: it lands in step 16, rarely in its backup.
        ("kill-mid-step", (fault.KILL_AFTER, fault.KILL_AFTER + 1)),
        ("kill-mid-write", (fault.KILL_AFTER,)),
        ("kill-between-renames", (fault.KILL_AFTER,)),
        ("kill-after-swap", (fault.KILL_AFTER + 1,)),
    ],
)
def test_sigkill_loses_nothing_and_resumes_exactly(tmp_path, reference, mode, saved_steps):
    code, stdout, stderr = run(mode, tmp_path)
    assert code == -signal.SIGKILL, stderr
    assert f"step {fault.KILL_AFTER}\n" in stdout and "finished" not in stdout
    if mode == "kill-between-renames":
        # Nothing at the path, the whole old backup aside: recovered on the next read.
        assert not (tmp_path / "backup").exists()
        assert any(name.startswith(".backup.old-") for name in os.listdir(tmp_path))
    assert_whole_backup(tmp_path / "backup", saved_steps)
    resume_and_compare(tmp_path, reference)


def test_sigint_keeps_the_latest_backup_and_resumes_exactly(tmp_path, reference):
    process = launch("run", tmp_path)
    assert process.stdout is not None
    for line in process.stdout:
        if line == f"step {fault.KILL_AFTER}\n":
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr, stderr
    steps = [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("step")]
    last = max([fault.KILL_AFTER, *steps])  # the last step reported trained
    # Ctrl-C stops fit at the end of a step, after its callbacks (the backup among them): the
    # backup holds the last step trained, and fit said so.
    meta, _ = read_checkpoint(tmp_path / "backup")
    assert meta["global_step"] == last
    assert f"(global step {last})" in stderr and "holds this state" in stderr, stderr
    assert f"BackupAndRestore({str(tmp_path / 'backup')!r})" in stderr, stderr
    assert sorted(os.listdir(tmp_path / "backup")) == FILES
    resume_and_compare(tmp_path, reference)


def _sigint_at(trainer, step):
    """A callback that sends this process SIGINT (as Ctrl-C does) after global step `step`."""

    def on_train_batch_end(batch, logs=None):
        if trainer.global_step == step:
            signal.raise_signal(signal.SIGINT)

    return LambdaCallback(on_train_batch_end=on_train_batch_end)


def test_ctrl_c_in_fit_stops_at_the_step_end_with_a_backup_and_the_call_that_resumes(
    tmp_path, reference, capsys
):
    trainer = worker.make_trainer()
    backup = BackupAndRestore(tmp_path / "backup")  # at epoch ends only: older than step 15
    with pytest.raises(KeyboardInterrupt):
        worker.fit(trainer, [_sigint_at(trainer, fault.KILL_AFTER), backup])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back
    assert (trainer.global_step, trainer.epoch, trainer.batch_in_epoch) == (15, 2, 3)
    message = capsys.readouterr().err
    assert "interrupted at epoch 3, after batch 3 of 6 (global step 15)" in message, message
    assert f"The backup in {str(tmp_path / 'backup')!r} holds this state" in message
    assert f"BackupAndRestore({str(tmp_path / 'backup')!r})" in message
    meta, _ = read_checkpoint(tmp_path / "backup")  # written at the interrupt
    assert (meta["global_step"], meta["epoch"], meta["batch_in_epoch"]) == (15, 2, 3)
    resume_and_compare(tmp_path, reference)


def test_ctrl_c_in_fit_without_a_backup_says_how_to_keep_the_state(tmp_path, reference, capsys):
    trainer = worker.make_trainer()
    with pytest.raises(KeyboardInterrupt):
        worker.fit(trainer, [_sigint_at(trainer, fault.KILL_AFTER)])
    message = capsys.readouterr().err
    assert "No backup holds this state; the trainer does" in message, message
    assert "trainer.save_checkpoint(" in message and "resume_from=" in message
    # Following the advice resumes exactly.
    trainer.save_checkpoint(tmp_path / "ckpt")
    resumed = worker.make_trainer(init_seed=99)
    history = worker.fit(resumed, [], seed=None, resume_from=tmp_path / "ckpt")
    for key, value in reference[0].items():
        np.testing.assert_array_equal(worker.weights(resumed)[key], value, err_msg=key)
    assert without_timing(history.history) == reference[1]


def test_a_keyboard_interrupt_from_a_callback_names_the_last_backup(tmp_path, capsys):
    trainer = worker.make_trainer()

    def on_train_batch_end(batch, logs=None):
        if trainer.global_step == 8:
            raise KeyboardInterrupt

    backup = BackupAndRestore(tmp_path / "backup", save_freq=5)
    with pytest.raises(KeyboardInterrupt):
        worker.fit(trainer, [LambdaCallback(on_train_batch_end=on_train_batch_end), backup])
    message = capsys.readouterr().err
    # Not a stop fit made itself: the backup is left as its last save wrote it (step 6, the
    # end of epoch 1), and the message says so.
    assert "after batch 2 of 6 (global step 8)" in message, message
    assert "holds the state of its last save (global step 6)" in message
    assert read_checkpoint(tmp_path / "backup")[0]["global_step"] == 6


@contextlib.contextmanager
def small_disk(folder, monkeypatch, kind):
    """A 1 MiB tmpfs at `folder` (`kind="tmpfs"`, skipped where this process cannot mount one),
    or a write hook that fails like MLX on a full disk (`"hook"`) once `fill()` was called.
    Yields `(fill, free)`."""
    folder.mkdir()
    mounted = False
    if kind == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]
        mounted = subprocess.run(command, capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("this process cannot mount a tmpfs (not root)")
    filler = folder / "filler"
    full = [False]
    if not mounted:
        original = mx.save_safetensors

        def save(path, arrays, *args, **kwargs):
            if full[0] and str(path).startswith(str(folder)):
                raise RuntimeError("[write] Unable to write 8 bytes to file.")
            original(path, arrays, *args, **kwargs)

        monkeypatch.setattr(mx, "save_safetensors", save)

    def fill():
        full[0] = True
        if mounted:
            with contextlib.suppress(OSError), open(filler, "wb") as f:
                while True:
                    f.write(b"\x00" * 4096)
                    f.flush()

    def free():
        full[0] = False
        filler.unlink(missing_ok=True)

    try:
        yield fill, free
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("kind", ["tmpfs", "hook"])
def test_a_full_disk_names_the_path_keeps_the_backup_and_resumes_exactly(
    tmp_path, reference, monkeypatch, kind
):
    disk = tmp_path / "disk"
    with small_disk(disk, monkeypatch, kind) as (fill, free):
        backup = disk / "backup"
        # Fill the disk once the backup of step 15 is written: the next backup cannot be.
        trainer = worker.make_trainer()
        filled = LambdaCallback(
            on_train_batch_begin=lambda batch, logs: (
                fill() if trainer.global_step == fault.KILL_AFTER else None
            )
        )
        with pytest.raises(OSError) as info:
            worker.fit(trainer, [BackupAndRestore(backup, save_freq=1), filled])
        message = str(info.value)
        assert isinstance(info.value, PathError) and str(backup) in message, message
        assert "full" in message or "No space" in message, message
        # The failed write left no temporary folder, and the backup of step 15 is whole.
        assert sorted(name for name in os.listdir(disk) if name != "filler") == ["backup"]
        assert_whole_backup(backup, (fault.KILL_AFTER,))
        free()
        resumed = worker.make_trainer(init_seed=99)
        history = worker.fit(resumed, [BackupAndRestore(backup, save_freq=1)], seed=None)
        for key, value in reference[0].items():
            np.testing.assert_array_equal(worker.weights(resumed)[key], value, err_msg=key)
        assert without_timing(history.history) == reference[1]
        assert os.listdir(disk) == []


def test_concurrent_writers_and_a_reader_of_one_path(tmp_path, capsys):
    saves = 60
    writers = [launch("hammer", tmp_path, writer_id, saves) for writer_id in (1, 2)]
    target = tmp_path / "ckpt"
    deadline = time.monotonic() + 120
    while not target.exists():
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
        time.sleep(0.01)
    loads, failures, seen = 0, [], set()
    model = worker.make_trainer().model
    while any(w.poll() is None for w in writers):
        try:
            # A reader that takes no lock never finds the path missing (folders are swapped in
            # one step)...
            assert target.is_dir()
            # ...and mlxkit's readers, which take the shared lock, get one whole write: its tag
            # agrees across the files.
            meta, arrays = read_checkpoint(target)
            (key,) = [k for k in meta["callbacks"] if k.endswith(":Tag")]
            tag = meta["callbacks"][key]["tag"]
            assert arrays["callbacks"][f"{key}/tag"].item() == tag, (tag, key)
            load_weights(model, target)
            seen.add(tag)
            loads += 1
        except (AssertionError, OSError, CheckpointError) as error:
            failures.append(repr(error))
    outputs = [w.communicate(timeout=60) for w in writers]
    for writer, (stdout, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
        assert stdout == f"saved {saves}\n"
    assert failures == []
    assert loads >= 20, loads
    assert {tag // 1000 for tag in seen} == {1, 2}  # both writers' saves were read
    # The last write is whole and nothing is left beside it.
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert read_checkpoint(target)[0]["callbacks"]
    with capsys.disabled():
        print(f"\n{2 * saves} saves by 2 writers, {loads} whole loads, {len(failures)} failures")


def test_a_read_only_filesystem_names_the_path(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]
    if subprocess.run(command, capture_output=True).returncode != 0:
        os.chmod(folder, 0o500)
        if os.access(folder, os.W_OK):
            pytest.skip("cannot mount a read-only tmpfs, and this process may write anywhere")
    trainer = worker.make_trainer()
    try:
        with pytest.raises(PathError) as info:
            trainer.save_checkpoint(folder / "ckpt")
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            os.chmod(folder, 0o700)
    message = str(info.value)
    assert (str(folder / "ckpt") in message and "read-only" in message.lower()) or (
        "permission" in message.lower()
    ), message
    assert info.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def test_a_checkpoint_after_an_epochs_last_batch_is_valid_and_resumes_exactly(tmp_path, reference):
    """Saved by a batch-end callback after the last batch, before the epoch's end: the position
    equals the epoch's length, the largest value the load-time range check accepts."""
    trainer = worker.make_trainer()
    steps = worker.STEPS_PER_EPOCH
    worker.fit(trainer, [ModelCheckpoint(tmp_path / "ckpt", every_n_steps=steps)], epochs=1)
    meta, _ = read_checkpoint(tmp_path / "ckpt")
    assert (meta["epoch"], meta["batch_in_epoch"], meta["steps_per_epoch"]) == (0, steps, steps)
    resumed = worker.make_trainer(init_seed=99)
    history = worker.fit(resumed, [], resume_from=tmp_path / "ckpt")
    for key, value in reference[0].items():
        np.testing.assert_array_equal(worker.weights(resumed)[key], value, err_msg=key)
    assert without_timing(history.history) == reference[1]
