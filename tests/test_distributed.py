"""Data-parallel training with 2 local ranks under `mlx.launch`, against single-process training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import mlxkit
from mlxkit import Trainer

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from tests.distributed_problem import (
    BATCH_PER_RANK,
    NUM_SAMPLES,
    global_batches_order,
    make_data,
    make_model,
)

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")
LAUNCH = shutil.which("mlx.launch", path=os.path.dirname(sys.executable)) or shutil.which(
    "mlx.launch"
)

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(LAUNCH is None, reason="mlx.launch is not installed"),
]


def launch(out, epochs, mode="", timeout=120):
    command = [
        LAUNCH,
        "-n",
        "2",
        "--backend",
        "ring",
        "--",
        sys.executable,
        WORKER,
        str(out),
        str(epochs),
        mode,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return result, time.perf_counter() - start


def single_process_weights(epochs):
    x, y = make_data()
    order = global_batches_order()
    model = make_model(seed=0)
    trainer = Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy", distributed=False)
    trainer.fit(
        x[order], y[order], batch_size=2 * BATCH_PER_RANK, epochs=epochs, shuffle=False, verbose=0
    )
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def load(path):
    return {k: np.array(v) for k, v in mx.load(str(path)).items()}


def test_two_ranks_match_single_process_and_resume(tmp_path):
    result, _ = launch(tmp_path, 2)
    assert result.returncode == 0, result.stdout + result.stderr
    reference = single_process_weights(2)
    for rank in (0, 1):
        weights = load(tmp_path / f"weights-rank{rank}.safetensors")
        for key, value in reference.items():
            np.testing.assert_allclose(weights[key], value, rtol=1e-5, atol=1e-6)
    histories = [json.loads((tmp_path / f"history-rank{r}.json").read_text()) for r in (0, 1)]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert histories[0][key] == histories[1][key], key
    assert (tmp_path / "ckpt" / "trainer.json").exists()
    assert not (tmp_path / "writes-rank1.txt").exists(), "rank 1 must not write checkpoints"
    assert (tmp_path / "writes-rank0.txt").read_text().count("model.safetensors") == 2

    result, _ = launch(tmp_path, 3, "resume")
    assert result.returncode == 0, result.stdout + result.stderr
    reference = single_process_weights(3)
    weights = load(tmp_path / "weights-rank1.safetensors")
    for key, value in reference.items():
        np.testing.assert_allclose(weights[key], value, rtol=1e-5, atol=1e-6)


def test_a_dead_rank_stops_the_others_and_keeps_the_checkpoint(tmp_path):
    result, seconds = launch(tmp_path, 3, "die", timeout=90)
    output = result.stdout + result.stderr
    assert seconds < 60
    # Rank 0 must have failed, with mlxkit's explanation, instead of waiting forever.
    assert "rank 0 exited with code 1" in output
    assert "mlxkit: rank 0 of 2 stopped at epoch 2" in output
    assert not (tmp_path / "weights-rank0.safetensors").exists()
    # Rank 1 died in epoch 2 (global step 6 of 4 per epoch): the epoch-1 checkpoint is intact.
    meta = json.loads((tmp_path / "ckpt" / "trainer.json").read_text())
    assert meta["epoch"] == 1
    model = make_model()
    mlxkit.load_weights(model, tmp_path / "ckpt")


def test_a_stream_the_user_sharded_trains_each_rank_on_half_the_data(tmp_path):
    """Stream(shard=(rank, 2)) is used as it is, not sharded again (which gave 1/4 each)."""
    result, _ = launch(tmp_path, 2, "stream")
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in (0, 1):
        report = json.loads((tmp_path / f"stream-rank{rank}.json").read_text())
        assert report["shard"] == [rank, 2]
        assert report["samples"] == [NUM_SAMPLES / 2] * 2
        assert report["global_step"] == 2 * NUM_SAMPLES // (2 * BATCH_PER_RANK)
    reference = single_process_weights(2)
    weights = load(tmp_path / "weights-rank1.safetensors")
    for key, value in reference.items():
        np.testing.assert_allclose(weights[key], value, rtol=1e-5, atol=1e-6)


def test_a_mid_epoch_resume_of_a_list_of_batches_is_exact_under_two_ranks(tmp_path):
    result, _ = launch(tmp_path, 3, "list-resume")
    assert result.returncode == 0, result.stdout + result.stderr
    # The checkpoint is at epoch 1 after its first batch (4 batches per rank and epoch).
    meta = json.loads((tmp_path / "mid" / "trainer.json").read_text())
    assert (meta["epoch"], meta["batch_in_epoch"], meta["global_step"]) == (1, 1, 5)
    for rank in (0, 1):
        batches = json.loads((tmp_path / f"resumed-batches-rank{rank}.json").read_text())
        assert batches == [1, 2, 3, 0, 1, 2, 3]
        straight = load(tmp_path / f"straight-rank{rank}.safetensors")
        resumed = load(tmp_path / f"resumed-rank{rank}.safetensors")
        for key, value in straight.items():
            np.testing.assert_array_equal(resumed[key], value)
