"""Mixed precision: peak memory, epoch time and the loss / accuracy reached at each precision.

Run:

    python benchmarks/bench_precision.py                  # MNIST MLP and depth model, 3 epochs
    python benchmarks/bench_precision.py --epochs 5 --models mlp
    python benchmarks/bench_precision.py --quick          # a smoke run in seconds
    python benchmarks/bench_precision.py --markdown benchmarks/precision.md  # the docs' table

Two models, each trained by `Trainer(..., precision=p)` for p in float32, bfloat16 and float16,
from the same initial weights and on the same batch order:

- `mlp`: `mlxkit.models.gluon_mlp` (784-64-64-10) on MNIST (60,000 training images, batch 64,
  Adam 1e-3), test accuracy on the 10,000 test images;
- `depth`: `depth_resnet20` at 32x64 (small input) on synthetic street scenes (the benchmark's
  depth workload, batch 8, Adam 1e-3), validation MSE on held-out scenes.

The precisions are interleaved: each round trains one epoch of every precision in turn, so the
machine's load falls on all of them alike. Per epoch the script resets MLX's peak-memory counter
(`mx.reset_peak_memory`) and reads it after (`mx.get_peak_memory`): the largest live allocation
of the epoch, weights, optimizer state, activations and gradients included, and the working
memory: that peak less what was allocated when the epoch began. Epoch time is the
median over the rounds after the first (the first compiles the steps). The table shows each
precision's figures and their ratio to float32. BLAS threads are capped at one, as in
`benchmarks/run.py` (OpenBLAS's spinning threads distort timings on a shared machine; set
`OPENBLAS_NUM_THREADS` to override). `--markdown PATH` also writes the table as the Markdown
section that the Benchmarks page includes.
"""

# ruff: noqa: E402  (the BLAS thread cap must be set before mlxkit loads the BLAS)
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # before the BLAS loads

import mlxkit  # noqa: F401  (first: loads the fast BLAS before mlx.core)  # isort: skip
from mlxkit import Trainer
from mlxkit.datasets import load_mnist
from mlxkit.models import depth_resnet20, gluon_mlp

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _workloads import DEFAULT_MNIST, synthetic_depth

PRECISIONS = ["float32", "bfloat16", "float16"]


def mnist_data(quick: bool, folder: str):
    (x_train, y_train), (x_test, y_test) = load_mnist(folder)
    if quick:
        x_train, y_train, x_test, y_test = (
            x_train[:2048],
            y_train[:2048],
            x_test[:512],
            y_test[:512],
        )

    def flat(images):
        return (images.reshape(len(images), -1) / 255.0).astype(np.float32)

    return (flat(x_train), y_train.astype(np.int32)), (flat(x_test), y_test.astype(np.int32))


def depth_data(quick: bool):
    x, y = synthetic_depth(48 if quick else 224, seed=0)
    cut = len(x) - (16 if quick else 32)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def build(model_name: str, precision: str, initial: dict) -> Trainer:
    if model_name == "mlp":
        model = gluon_mlp()
        trainer = Trainer(
            model,
            optim.Adam(learning_rate=1e-3),
            loss="cross_entropy",
            metrics=["accuracy"],
            precision=precision,
        )
    else:
        model = depth_resnet20()
        trainer = Trainer(model, optim.Adam(learning_rate=1e-3), loss="mse", precision=precision)
    model.load_weights(list(initial.items()))
    return trainer


def run(model_name: str, epochs: int, quick: bool, mnist: str) -> list[str]:
    """Trains the model at every precision; prints the table and returns it as Markdown lines."""
    train, test = mnist_data(quick, mnist) if model_name == "mlp" else depth_data(quick)
    batch_size = 64 if model_name == "mlp" else 8
    # On the device once, so that the working memory below leaves the training set out.
    train = (mx.array(train[0]), mx.array(train[1]))
    mx.eval(train)
    mx.random.seed(0)
    reference = gluon_mlp() if model_name == "mlp" else depth_resnet20()
    initial = dict(tree_flatten(reference.parameters()))
    trainers = {p: build(model_name, p, initial) for p in PRECISIONS}
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    peaks: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    # The peak above what was allocated before the epoch (weights, optimizer state, the
    # training set when fit holds it on the device): the working memory of the steps.
    working: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    losses: dict[str, float] = {}
    for epoch in range(epochs):
        for precision, trainer in trainers.items():
            mx.eval(trainer.compiled_state())
            mx.reset_peak_memory()
            resting = mx.get_active_memory()
            start = time.perf_counter()
            history = trainer.fit(
                *train,
                batch_size=batch_size,
                epochs=epoch + 1,
                initial_epoch=epoch,
                seed=0,
                verbose=0,
            )
            seconds[precision].append(time.perf_counter() - start)
            peaks[precision].append(mx.get_peak_memory() / 2**20)
            working[precision].append((mx.get_peak_memory() - resting) / 2**20)
            losses[precision] = history.history["loss"][-1]
    title = f"{model_name}: {len(train[0])} training samples, batch {batch_size}, {epochs} epochs"
    print(f"\n{title}")
    quality = "test accuracy" if model_name == "mlp" else "val MSE"
    markdown = [
        f"### {title}",
        "",
        f"| precision | peak MiB | x float32 | working MiB | x float32 | s/epoch | x float32 "
        f"| train loss | {quality} | skipped steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print(
        f"{'precision':10s} {'peak MiB':>9s} {'x f32':>6s} {'working':>8s} {'x f32':>6s} "
        f"{'epoch s':>8s} {'x f32':>6s} "
        f"{'train loss':>10s} {quality:>13s} {'skipped':>7s}"
    )
    base_peak = max(peaks["float32"])
    base_working = max(working["float32"])
    base_time = statistics.median(seconds["float32"][1:] or seconds["float32"])
    for precision, trainer in trainers.items():
        peak = max(peaks[precision])
        work = max(working[precision])
        epoch_time = statistics.median(seconds[precision][1:] or seconds[precision])
        results = trainer.evaluate(
            *test, batch_size=256 if model_name == "mlp" else 16, return_dict=True
        )
        score = results["accuracy"] if model_name == "mlp" else results["loss"]
        skipped = trainer.loss_scale_state.get("skipped_steps")
        skipped_text = "-" if skipped is None else str(skipped.item())
        print(
            f"{precision:10s} {peak:9.1f} {peak / base_peak:6.2f} {work:8.1f} "
            f"{work / base_working:6.2f} {epoch_time:8.2f} "
            f"{epoch_time / base_time:6.2f} {losses[precision]:10.4f} {score:13.4f} "
            f"{skipped_text:>7s}"
        )
        markdown.append(
            f"| {precision} | {peak:.1f} | {peak / base_peak:.2f} | {work:.1f} | "
            f"{work / base_working:.2f} | {epoch_time:.2f} | "
            f"{epoch_time / base_time:.2f} | {losses[precision]:.4f} | {score:.4f} | "
            f"{skipped_text} |"
        )
    return [*markdown, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["mlp", "depth"], choices=["mlp", "depth"])
    parser.add_argument("--mnist", default=DEFAULT_MNIST, help="folder of MNIST's IDX files")
    parser.add_argument("--markdown", help="also write the tables as Markdown to this file")
    parser.add_argument("--quick", action="store_true", help="few samples, 2 epochs: a smoke run")
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs
    machine = (
        f"mlx {mx.__version__}, device {mx.default_device()}, {_cpu_name()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}, BLAS threads "
        f"{os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print(machine, flush=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    tables = []
    for model_name in args.models:
        tables += run(model_name, epochs, args.quick, args.mnist)
    if args.markdown:
        minutes = (time.perf_counter() - start) / 60
        load_after = os.getloadavg()
        header = [
            "## Mixed precision",
            "",
            "<!-- Written by `python benchmarks/bench_precision.py --markdown "
            "benchmarks/precision.md`; edit the script, not this file. -->",
            "",
            "`Trainer(..., precision=p)` at each precision, interleaved epoch by epoch in one "
            "process, from the same initial weights and batch order (the script's docstring "
            "says what is measured). Peak MiB is `mx.get_peak_memory()` over an epoch after "
            "`mx.reset_peak_memory()`, working MiB that peak less the memory allocated when the "
            "epoch began (weights, optimizer state and the training set, passed to `fit` as MLX "
            "arrays); s/epoch the median of the epochs after the first.",
            "",
            f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{minutes:.0f} minutes{', --quick' if args.quick else ''}.",
            f"- Machine: {machine}.",
            f"- Load average (1, 5, 15 min) before: {_rounded(load_before)}, after: "
            f"{_rounded(load_after)}, on 2 cores.",
            "",
            "On a Linux CPU, as here, the low precisions are slower: float32 matrix products and "
            "convolutions run on the optimized BLAS that mlxkit loads, bfloat16 and float16 on "
            "MLX's own CPU kernels, without BLAS, and float16 adds the loss-scale bookkeeping. "
            "What they save is activation memory (the depth model's working memory); the MLP's "
            "activations at batch 64 are too small to show. On Apple silicon GPUs the low "
            "precisions run on native kernels; these CPU figures say nothing about speed there. "
            "The machine is shared with other jobs (load average above): each table's "
            "precisions are interleaved epoch by epoch, and only ratios within a table mean much.",
            "",
        ]
        with open(args.markdown, "w") as file:
            file.write("\n".join(header + tables).rstrip() + "\n")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _rounded(values) -> list[float]:
    return [round(value, 2) for value in values]


if __name__ == "__main__":
    main()
