"""MLX side of the trainer benchmark: mlxkit's `fit` and the hand-written compiled loop.

`benchmarks/run.py` starts it in a fresh process per measurement; each mode prints one
`RESULT {json}` line. Modes:

- `init`: seeds MLX, builds a workload's model and saves its initial weights (`.npz`), which every
  framework then starts from.
- `run`: two epochs of one workload with `mlxkit` (`Trainer.fit`) or `hand` (the loop below):
  the first epoch (copy to the device and compilation included), the second (steady state), the
  mean training loss of epoch 1 and peak memory.
- `h2h`: fit and the hand loops alternating in one process (less noise than across processes).
- `overhead`: per-step time on a model too small to cost anything: the loop's own cost.
- `profile`: cProfile of one `fit` epoch of the MLP.
- `memory`: active and peak memory after each of many MLP epochs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import mlxkit  # noqa: F401  (the fast BLAS loads before mlx.core)
from mlxkit import Trainer, _blas
from mlxkit.callbacks import Callback, ProgressBar
from mlxkit.datasets import load_mnist
from mlxkit.models import depth_resnet20

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _workloads as W

# The hand loop evaluating each step with `mx.eval`, as mlx-lm's trainer does.
EVAL_EACH_STEP = "hand, mx.eval each step"
# fit without the accuracy metric: what the loop itself costs, apart from the metric's bookkeeping.
LOSS_ONLY = "mlxkit, loss only"
# The overhead model: 16 inputs, 10 classes, batches of 8; samples per size.
TINY_SAMPLES = {"full": 60_000, "quick": 16_000, "smoke": 2_048}


class Flatten(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return x.reshape(x.shape[0], -1)


def build_model(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        )
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            Flatten(),
            nn.Linear(7 * 7 * 32, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
    if kind == "tiny":
        return nn.Sequential(nn.Linear(16, 10))
    return depth_resnet20()


def load_initial(model: nn.Module, path: str | None) -> None:
    if path:
        model.update(tree_unflatten(list(mx.load(path).items())))
    mx.eval(model.parameters())


def load_data(workload: str, size: str, mnist: str):
    return W.load_data(workload, size, mnist=mnist, reader=lambda folder: load_mnist(folder)[0])


class HandLoop:
    """The best loop we know how to write by hand, in the style of mlx-lm's trainer.

    One `mx.compile` over `[model.state, optimizer.state, mx.random.state, sums]`; each batch is a
    gather from arrays copied to the device once; the loss sum and the metric (correct predictions
    or absolute error) accumulate on the device, and Python reads a value back only at the end of
    the epoch. Each step is queued with `mx.async_eval(state)` and the loop waits for the step
    before (`evaluate="async"`, the default: Python builds step n+1 while step n computes, never
    more than one step ahead, as fit does), or evaluated with `mx.eval(state)` before the next, as
    mlx-lm's trainer does (`evaluate="eval"`). Which is faster depends on the machine. An unbounded
    queue (no wait) was no faster here and slowed down the loops timed after it in the same
    process by a few percent.
    """

    def __init__(self, model: nn.Module, spec: W.Workload, *, evaluate: str = "async"):
        self.spec = spec
        self.evaluate = mx.eval if evaluate == "eval" else mx.async_eval
        self.optimizer = optim.SGD(learning_rate=spec.learning_rate)
        self.sums = {"loss": mx.array(0.0), "metric": mx.array(0.0)}
        self.state = [model.state, self.optimizer.state, mx.random.state, self.sums]
        classify = spec.loss == "cross_entropy"
        loss = nn.losses.cross_entropy if classify else nn.losses.mse_loss

        def loss_fn(x, y):
            outputs = model(x)
            return loss(outputs, y, reduction="mean"), outputs

        @partial(mx.compile, inputs=self.state, outputs=self.state)
        def step(x, y):
            (value, outputs), grads = nn.value_and_grad(model, loss_fn)(x, y)
            self.optimizer.update(model, grads)
            if classify:
                metric = (mx.argmax(outputs, axis=-1) == y).sum()
            else:
                metric = mx.abs(outputs - y).mean()
            self.sums["loss"] = self.sums["loss"] + value
            self.sums["metric"] = self.sums["metric"] + metric
            return value

        self.step = step

    def epoch(self, x: mx.array, y: mx.array, epoch: int, seed: int) -> float:
        """One epoch in `fit(shuffle=True, seed=seed)`'s order; returns the mean loss."""
        self.sums["loss"], self.sums["metric"] = mx.array(0.0), mx.array(0.0)
        size = self.spec.batch_size
        steps = x.shape[0] // size
        order = mx.array(W.order(x.shape[0], seed, epoch))
        pending = None
        for i in range(steps):
            index = order[i * size : (i + 1) * size]
            self.step(x[index], y[index])
            self.evaluate(self.state)
            if self.evaluate is mx.async_eval:
                # At most one step ahead: Python builds step n+1 while step n computes.
                if pending is not None:
                    mx.eval(pending)
                pending = self.sums["loss"]
        mx.eval(self.state)
        return self.sums["loss"].item() / steps


class EpochClock(Callback):
    """Notes when each epoch ends (wall and CPU time); an epoch hook costs nothing per step."""

    def __init__(self):
        self.ends: list[tuple[float, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(W.clock())


# Every mlxkit fit here passes drop_last=True: a Workload's epoch is its whole batches only, in
# every framework (fit trains the last partial batch by default, as Keras does).
def make_trainer(model: nn.Module, spec: W.Workload, metrics: list | None = None) -> Trainer:
    classify = spec.loss == "cross_entropy"
    return Trainer(
        model,
        optim.SGD(learning_rate=spec.learning_rate),
        loss=spec.loss,
        metrics=["accuracy" if classify else "mae"] if metrics is None else metrics,
    )


def mode_init(args) -> dict:
    spec = W.workload(args.workload)
    mx.random.seed(args.seed)
    model = build_model(spec.model)
    mx.eval(model.parameters())
    np.savez(args.out, **{key: np.array(value) for key, value in tree_flatten(model.parameters())})
    count = sum(value.size for _, value in tree_flatten(model.trainable_parameters()))
    return {"path": args.out, "parameters": int(count)}


def mode_run(args) -> dict:
    spec = W.workload(args.workload, args.size)
    x, y = load_data(args.workload, args.size, args.mnist)
    model = build_model(spec.model)
    load_initial(model, args.init)
    mx.reset_peak_memory()
    if args.framework == "mlxkit":
        trainer = make_trainer(model, spec)
        clock = EpochClock()
        start = W.clock()
        history = trainer.fit(
            x,
            y,
            batch_size=spec.batch_size,
            drop_last=True,
            epochs=2,
            seed=args.seed,
            callbacks=[clock],
            verbose=0,
        )
        ends = clock.ends
        loss = history.history["loss"][0]
    else:
        loop = HandLoop(model, spec)
        start = W.clock()
        xd, yd = mx.array(x), mx.array(y)
        loss = loop.epoch(xd, yd, 0, args.seed)
        ends = [W.clock()]
        loop.epoch(xd, yd, 1, args.seed)
        ends.append(W.clock())
    return {
        **W.epoch_times(start, ends),
        "loss": loss,
        "steps": spec.steps,
        "peak_rss_mb": W.peak_rss_mb(),
        "mlx_peak_mb": mx.get_peak_memory() / 2**20,
        "blas": _blas.status.source,
        "version": f"mlx {mx.__version__}",
    }


def alternate(contenders: dict, rounds: int, cpu: dict | None = None) -> dict[str, list[float]]:
    """Runs each of `contenders[name](round)` once per round, in a new random order each round.

    A contender's time depends a little on which one ran before it (a pipelined loop leaves the
    cores in another state than one that waits for each step), so a fixed or merely reversed
    order biases the comparison by a few percent; a seeded shuffle spreads that evenly.

    Returns the wall times; `cpu`, when given, receives the process CPU times (all threads), which
    waiting for a busy core does not inflate. Round 0 compiles and is not timed.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu = {} if cpu is None else cpu
    cpu.update({name: [] for name in names})
    order = np.random.default_rng(0)
    for round_ in range(rounds + 1):
        for name in order.permutation(names).tolist():
            start, start_cpu = time.perf_counter(), time.process_time()
            contenders[name](round_)
            if round_:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return times


def mode_h2h(args) -> dict:
    """fit and the hand loops, alternating epochs in one process, from identical weights."""
    spec = W.workload(args.workload, args.size)
    x, y = load_data(args.workload, args.size, args.mnist)
    xd, yd = mx.array(x), mx.array(y)
    models = {}
    for name in ("mlxkit", LOSS_ONLY, "hand", EVAL_EACH_STEP):
        models[name] = build_model(spec.model)
        load_initial(models[name], args.init)
    trainers = {
        "mlxkit": make_trainer(models["mlxkit"], spec),
        LOSS_ONLY: make_trainer(models[LOSS_ONLY], spec, metrics=[]),
    }
    loops = {
        "hand": HandLoop(models["hand"], spec),
        EVAL_EACH_STEP: HandLoop(models[EVAL_EACH_STEP], spec, evaluate="eval"),
    }
    losses: dict[str, list[float]] = {name: [] for name in models}

    def fit_epoch(epoch: int, name: str) -> None:
        trainer = trainers[name]
        trainer.fit(
            xd,
            yd,
            batch_size=spec.batch_size,
            drop_last=True,
            epochs=epoch + 1,
            initial_epoch=epoch,
            seed=args.seed,
            verbose=0,
        )
        losses[name].append(trainer.history.history["loss"][-1])

    def hand_epoch(epoch: int, name: str) -> None:
        losses[name].append(loops[name].epoch(xd, yd, epoch, args.seed))

    contenders = {name: partial(fit_epoch, name=name) for name in trainers}
    contenders.update({name: partial(hand_epoch, name=name) for name in loops})
    cpu: dict[str, list[float]] = {}
    times = alternate(contenders, args.repeats, cpu)
    ratios = {
        name: [a / b for a, b in zip(times[name], times["hand"])]
        for name in times
        if name != "hand"
    }
    pipeline = trainers["mlxkit"].pipeline
    trial = {
        "pipelined": pipeline.pipelined,
        "us_per_step": {
            ("pipelined" if mode else "one at a time"): statistics.median(times) * 1e6
            for mode, times in pipeline.seconds_per_step.items()
            if times
        },
    }
    return {
        "times": times,
        "cpu": cpu,
        "losses": losses,
        "ratios": ratios,
        "steps": spec.steps,
        "pipeline": trial,
    }


class _EmptyBatchHook(Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


class _ReadsLoss(Callback):
    def on_train_batch_end(self, batch, logs=None):
        logs["loss"]


def mode_overhead(args) -> dict:
    """Per-step wall time on a 16->10 linear model with batches of 8: compute costs ~nothing."""
    spec = W.Workload("tiny", "tiny", 8, TINY_SAMPLES[args.size], 0.1, "cross_entropy", "tiny")
    x, y = load_data("mlp", "full", args.mnist)
    # 16 pixels from the middle row: the first ones are blank in every MNIST image.
    xd, yd = mx.array(x[: spec.num_train, 392:408]), mx.array(y[: spec.num_train])
    variants = {
        "hand loop": "async",
        "hand loop, mx.eval each step": "eval",
        "fit, verbose=0": [],
        "fit, progress bar": [ProgressBar("bar")],
        "fit, a callback with an empty batch hook": [_EmptyBatchHook()],
        "fit, a callback reading the loss every batch": [_ReadsLoss()],
    }
    contenders = {}
    for name, extra in variants.items():
        mx.random.seed(0)
        model = build_model("tiny")
        mx.eval(model.parameters())
        if not isinstance(extra, list):
            loop = HandLoop(model, spec, evaluate=extra)
            contenders[name] = partial(lambda epoch, loop: loop.epoch(xd, yd, epoch, 0), loop=loop)
            continue
        trainer = make_trainer(model, spec)

        def run(epoch, trainer=trainer, extra=extra):
            trainer.fit(
                xd,
                yd,
                batch_size=spec.batch_size,
                drop_last=True,
                epochs=epoch + 1,
                initial_epoch=epoch,
                seed=0,
                verbose=0,
                callbacks=extra,
            )

        contenders[name] = run
    cpu: dict[str, list[float]] = {}
    times = alternate(contenders, args.repeats, cpu)
    return {
        "us_per_step_min": {name: min(t) / spec.steps * 1e6 for name, t in times.items()},
        "us_per_step_median": {
            name: statistics.median(t) / spec.steps * 1e6 for name, t in times.items()
        },
        "times": times,
        "cpu": cpu,
        "steps": spec.steps,
    }


def mode_profile(args) -> dict:
    spec = W.workload("mlp", args.size)
    x, y = load_data("mlp", args.size, args.mnist)
    xd, yd = mx.array(x), mx.array(y)
    model = build_model("mlp")
    load_initial(model, args.init)
    trainer = make_trainer(model, spec)
    trainer.fit(
        xd, yd, batch_size=spec.batch_size, drop_last=True, epochs=1, seed=0, verbose=0
    )  # compiles
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    trainer.fit(
        xd,
        yd,
        batch_size=spec.batch_size,
        drop_last=True,
        epochs=2,
        initial_epoch=1,
        seed=0,
        verbose=0,
    )
    profiler.disable()
    seconds = time.perf_counter() - start
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(args.top)
    text = stream.getvalue()
    lines = [_shorten(line) for line in text[text.index("ncalls") :].rstrip().splitlines()]
    calls = stats.total_calls  # type: ignore[attr-defined]
    return {
        "steps": spec.steps,
        "seconds_profiled": seconds,
        "total_calls": calls,
        "calls_per_step": calls / spec.steps,
        "table": "\n".join(lines),
    }


def _shorten(line: str) -> str:
    """Drops the directories before the package in a pstats line."""
    checkout = str(Path(__file__).resolve().parent.parent) + "/"
    for marker in ("site-packages/", checkout, "lib/python3.11/"):
        if marker in line:
            head, _, tail = line.partition(marker)
            line = head.rsplit(" ", 1)[0] + " " + tail
    return line


def mode_memory(args) -> dict:
    spec = W.workload("mlp", args.size)
    x, y = load_data("mlp", args.size, args.mnist)
    model = build_model("mlp")
    load_initial(model, args.init)
    trainer = make_trainer(model, spec)
    rows: list[dict] = []

    class Probe(Callback):
        def on_epoch_end(self, epoch, logs=None):
            rows.append(
                {
                    "epoch": epoch + 1,
                    "active_mb": mx.get_active_memory() / 2**20,
                    "peak_mb": mx.get_peak_memory() / 2**20,
                    "cache_mb": mx.get_cache_memory() / 2**20,
                    "rss_peak_mb": W.peak_rss_mb(),
                    "loss": logs["loss"],
                    "seconds": time.perf_counter(),
                }
            )

    start = time.perf_counter()
    trainer.fit(
        x,
        y,
        batch_size=spec.batch_size,
        drop_last=True,
        epochs=args.epochs,
        seed=0,
        verbose=0,
        callbacks=[Probe()],
    )
    for row in rows:
        row["seconds"], start = row["seconds"] - start, row["seconds"]
    return {"rows": rows}


MODES = {
    "init": mode_init,
    "run": mode_run,
    "h2h": mode_h2h,
    "overhead": mode_overhead,
    "profile": mode_profile,
    "memory": mode_memory,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--workload", default="mlp", choices=sorted(W.WORKLOADS))
    parser.add_argument("--framework", default="mlxkit", choices=["mlxkit", "hand"])
    parser.add_argument("--init")
    parser.add_argument("--out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--size", default="full", choices=sorted(W.SIZES))
    parser.add_argument("--mnist", default=W.DEFAULT_MNIST)
    args = parser.parse_args()
    W.emit(MODES[args.mode](args))


if __name__ == "__main__":
    main()
