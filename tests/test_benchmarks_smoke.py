"""The trainer benchmark (`benchmarks/run.py`) on tiny settings, the peer frameworks skipped.

It runs every code path the full benchmark runs (each workload with fit and the hand loop, the
one-process comparison, the overhead loop, the profile, the memory probe, the BLAS switch) and
checks the figures it relies on: fit and the hand loop reach the SGD trajectory computed in NumPy,
every framework would see the samples in fit's order, and Keras's upsampling port matches MLX.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mlxkit._batches import ArrayBatches

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
MNIST = ROOT.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(BENCHMARKS))

import _mlx_worker  # noqa: E402
import _workloads  # noqa: E402

needs_mnist = pytest.mark.skipif(
    not MNIST.is_dir(), reason=f"the benchmark trains on MNIST, not found at {MNIST}"
)


def numpy_mlp_epoch(weights: dict, x: np.ndarray, y: np.ndarray, order, lr, batch) -> float:
    """Mean loss of one SGD epoch of the 784-64-64-10 ReLU MLP, backpropagation by hand."""
    w = {key: value.astype(np.float64) for key, value in weights.items()}
    losses = []
    for start in range(0, len(order) - batch + 1, batch):
        index = order[start : start + batch]
        xb, yb = x[index].astype(np.float64), y[index]
        a1 = xb @ w["layers.0.weight"].T + w["layers.0.bias"]
        h1 = np.maximum(a1, 0)
        a2 = h1 @ w["layers.2.weight"].T + w["layers.2.bias"]
        h2 = np.maximum(a2, 0)
        z = h2 @ w["layers.4.weight"].T + w["layers.4.bias"]
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        losses.append(-np.log(p[np.arange(batch), yb]).mean())
        dz = p.copy()
        dz[np.arange(batch), yb] -= 1
        dz /= batch
        grads = {"layers.4.weight": dz.T @ h2, "layers.4.bias": dz.sum(0)}
        d2 = (dz @ w["layers.4.weight"]) * (a2 > 0)
        grads.update({"layers.2.weight": d2.T @ h1, "layers.2.bias": d2.sum(0)})
        d1 = (d2 @ w["layers.2.weight"]) * (a1 > 0)
        grads.update({"layers.0.weight": d1.T @ xb, "layers.0.bias": d1.sum(0)})
        for key in w:
            w[key] -= lr * grads[key]
    return float(np.mean(losses))


def test_benchmark_order_is_fits_shuffled_order():
    # The loss comparison across frameworks rests on every one of them visiting this order.
    batches = ArrayBatches(np.arange(100), None, batch_size=10, shuffle=True, seed=3)
    batches.set_epoch(2)
    seen = np.concatenate([np.array(batch[0]) for batch in batches])
    np.testing.assert_array_equal(seen, _workloads.order(100, seed=3, epoch=2))


def test_keras_upsampling_matrix_matches_mlx_align_corners():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)
    expected = np.array(nn.Upsample(2, mode="linear", align_corners=True)(mx.array(x)))
    rows, cols = _workloads.upsample_matrix(3), _workloads.upsample_matrix(5)
    result = np.einsum("pw,bowc->bopc", cols, np.einsum("oh,bhwc->bowc", rows, x))
    np.testing.assert_allclose(result, expected, atol=1e-5)


@needs_mnist
def test_smoke_run_measures_everything_and_fit_follows_the_numpy_trajectory(tmp_path):
    page, raw = tmp_path / "benchmarks.md", tmp_path / "results.json"
    command = [
        sys.executable,
        str(BENCHMARKS / "run.py"),
        "--size=smoke",
        "--skip-peers",
        "--workloads=mlp,depth",
        f"--mnist={MNIST}",
        f"--out={page}",
        f"--json={raw}",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    results = json.loads(raw.read_text())

    # The MLP's first epoch, recomputed in float64 NumPy from the same initial weights and order.
    init = tmp_path / "mlp_init.npz"
    _mlx_worker.mode_init(argparse.Namespace(workload="mlp", seed=0, out=str(init)))
    spec = _workloads.workload("mlp", "smoke")
    x, y = _workloads.load_data("mlp", "smoke", mnist=str(MNIST))
    weights = dict(np.load(init, allow_pickle=False))
    order = _workloads.order(len(x), 0, 0)
    expected = numpy_mlp_epoch(weights, x, y, order, spec.learning_rate, spec.batch_size)
    runs = results["workloads"]["mlp"]["runs"]
    assert runs["mlxkit"][0]["loss"] == pytest.approx(expected, rel=1e-4)
    assert runs["hand"][0]["loss"] == pytest.approx(expected, rel=1e-4)
    assert runs["mlxkit"][0]["steps"] == len(x) // spec.batch_size

    depth = results["workloads"]["depth"]["runs"]
    assert depth["mlxkit"][0]["loss"] == pytest.approx(depth["hand"][0]["loss"], rel=1e-4)
    h2h = results["h2h"]["losses"]
    assert h2h["mlxkit"] == pytest.approx(h2h["hand"], rel=1e-4)
    assert h2h["mlxkit"][0] == pytest.approx(expected, rel=1e-4)

    memory = results["memory"]["rows"]
    assert [row["epoch"] for row in memory] == [1, 2]
    assert memory[1]["active_mb"] == pytest.approx(memory[0]["active_mb"], abs=1.0)
    assert memory[1]["loss"] < memory[0]["loss"]
    assert set(results["overhead"]["us_per_step_min"]) >= {"hand loop", "fit, verbose=0"}
    assert results["profile"]["calls_per_step"] > 0
    reference = results["blas"]["MLX's reference BLAS (MLXKIT_BLAS=off)"]
    assert reference and reference[0]["blas"] == "reference BLAS (MLXKIT_BLAS=off)"

    text = page.read_text()
    for heading in ("## Summary", "## Epoch time", "## The loop's own cost", "## Profile"):
        assert heading in text
    for peer in ("Keras 3 on MLX (keras-mlx)", "plain PyTorch, eager", "PyTorch Lightning"):
        assert f"{peer}: skipped (--skip-peers)" in text
