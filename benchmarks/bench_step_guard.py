"""What the failing-step guard and the Ctrl-C check cost a training step.

Run:

    python benchmarks/bench_step_guard.py              # 784-64-64-10 MLP, batch 32
    python benchmarks/bench_step_guard.py --rounds 30

`fit` calls each compiled step through a guard (`mlxkit._recovery`): a step of a batch signature
it has not traced yet keeps references to the captured arrays, to put them back if the trace
fails; a step of a traced signature only computes the batch's signature and looks it up. Then
`fit` checks whether Ctrl-C was pressed. This script times, interleaved in one process (A B A B
...), blocks of the same compiled MLP training step evaluated one at a time, bare and with exactly
the work the guard and the check add on a traced signature, and prints the median microseconds per
step, their ratio, and the cost of a `snapshot` (what a new signature, or an eager step, adds).
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlxkit  # noqa: F401  (loads the fast BLAS before mlx.core)
from mlxkit import Trainer
from mlxkit._recovery import StepBoundaryInterrupt, batch_signature, snapshot

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed block")
    args = parser.parse_args()

    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    model.layers.append(nn.Linear(64, 10))
    trainer = Trainer(model, optim.Adam(learning_rate=1e-3), "cross_entropy", ["accuracy"])
    state = trainer.compiled_state()
    step = mx.compile(trainer.train_step, inputs=state, outputs=state)
    rng = np.random.default_rng(0)
    batch = (
        mx.array(rng.normal(size=(32, 784)).astype(np.float32)),
        mx.array(rng.integers(0, 10, 32).astype(np.int32)),
    )
    traced = {batch_signature(batch)}
    interrupt = StepBoundaryInterrupt(active=False)

    def bare() -> None:
        for _ in range(args.steps):
            step(batch)
            mx.eval(state)

    def guarded() -> None:
        for _ in range(args.steps):
            if batch_signature(batch) in traced:  # what the guard does on a traced signature
                step(batch)
            mx.eval(state)
            interrupt.check()

    blocks = {"bare step": bare, "guarded step": guarded}
    times: dict[str, list[float]] = {name: [] for name in blocks}
    bare()  # compile and warm up
    for _ in range(args.rounds):
        for name, block in blocks.items():
            start = time.perf_counter()
            block()
            times[name].append((time.perf_counter() - start) / args.steps)
    medians = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:>14}: {value:8.1f} us per step (median of {args.rounds} blocks)")
    print(f"{'ratio':>14}: {medians['guarded step'] / medians['bare step']:.3f}")

    # The guard's own work, alone: steadier than the difference of two noisy step times.
    repeats = 100_000
    start = time.perf_counter()
    for _ in range(repeats):
        if batch_signature(batch) in traced:
            interrupt.check()
    alone = (time.perf_counter() - start) / repeats * 1e6
    share = alone / medians["bare step"]
    print(f"{'guard alone':>14}: {alone:8.2f} us per step ({share:.2%} of the bare step)")
    start = time.perf_counter()
    for _ in range(200):
        snapshot(trainer.compiled_state())
    taken = (time.perf_counter() - start) / 200 * 1e6
    print(f"{'snapshot':>14}: {taken:8.1f} us (per new signature, and per eager step)")


if __name__ == "__main__":
    main()
