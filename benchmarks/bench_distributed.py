"""Data-parallel throughput: the MNIST MLP trained on 1 process versus 2 local ranks.

Runs, interleaved (1 rank, 2 ranks, 1 rank, 2 ranks, ...), one epoch of the 784-128-10 MLP with a
per-rank batch of 64, and the cost of the gradient all-reduce alone. On a 2-core machine little
gain is expected (both ranks share the cores); the point is that 2 ranks train correctly and what
the all-reduce costs per step.

Run:
    python benchmarks/bench_distributed.py [--data ../shared/data/mnist] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(data: str | None, out: str) -> None:
    """One rank's work: an epoch of fit, then 200 timed all-reduces of the MLP's gradients."""
    import mlxkit  # noqa: F401  (fast BLAS before mlx.core)
    from mlxkit import Trainer
    from mlxkit.datasets import load_mnist, make_synthetic_digits

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np

    if data:
        (x, y), _ = load_mnist(data)
    else:
        (x, y), _ = make_synthetic_digits(6000, 10)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    y = y.astype(np.int32)
    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    trainer = Trainer(model, optim.SGD(learning_rate=0.05), "cross_entropy", ["accuracy"])
    trainer.fit(x, y, batch_size=64, epochs=1, verbose=0, seed=0)  # warm-up and compile
    start = time.perf_counter()
    history = trainer.fit(x, y, batch_size=64, epochs=1, verbose=0, seed=1)
    seconds = time.perf_counter() - start

    reduce_us = 0.0
    if trainer.group is not None:
        grads = model.trainable_parameters()
        average = mx.compile(lambda g: nn.average_gradients(g, group=trainer.group))
        mx.eval(average(grads))
        start = time.perf_counter()
        for _ in range(200):
            mx.eval(average(grads))
        reduce_us = (time.perf_counter() - start) / 200 * 1e6
    if trainer.rank == 0:
        with open(out, "w") as f:
            json.dump(
                {
                    "seconds": seconds,
                    "samples_per_second": history.history["samples_per_second"][-1],
                    "loss": history.history["loss"][-1],
                    "accuracy": history.history["accuracy"][-1],
                    "allreduce_us": reduce_us,
                    "ranks": trainer.world_size,
                },
                f,
            )


def run(ranks: int, data: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, __file__, "--worker", "--out", out]
        if data:
            command += ["--data", data]
        if ranks > 1:
            launch = shutil.which("mlx.launch", path=os.path.dirname(sys.executable))
            launch = launch or shutil.which("mlx.launch")
            if launch is None:
                raise SystemExit("mlx.launch not found: install mlx")
            command = [launch, "-n", str(ranks), "--backend", "ring", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=900)
        with open(out) as f:
            return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MNIST folder (default: synthetic digits)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.data, args.out)
        return
    results: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for ranks in (1, 2):
            results[ranks].append(run(ranks, args.data))
    print(
        f"MLP 784-128-10, batch 64 per rank, {os.cpu_count()} CPU cores, "
        f"median of {args.repeats} interleaved runs"
    )
    print(
        f"{'ranks':>5} {'s/epoch':>9} {'samples/s':>11} {'vs 1 rank':>10} "
        f"{'all-reduce us/step':>19} {'final loss':>11}"
    )
    base = statistics.median(r["samples_per_second"] for r in results[1])
    for ranks, runs in results.items():
        rate = statistics.median(r["samples_per_second"] for r in runs)
        print(
            f"{ranks:>5} {statistics.median(r['seconds'] for r in runs):>9.2f} {rate:>11,.0f} "
            f"{rate / base:>9.2f}x {statistics.median(r['allreduce_us'] for r in runs):>19.0f} "
            f"{statistics.median(r['loss'] for r in runs):>11.4f}"
        )


if __name__ == "__main__":
    main()
