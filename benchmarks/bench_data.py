"""Throughput of the depth pipeline (`.npy` loading, paired augmentation, batching, prefetch).

Run:

    python benchmarks/bench_data.py                      # drain as fast as possible
    python benchmarks/bench_data.py --step-ms 20         # with a consumer that computes 20 ms/batch

It writes a synthetic depth set (`make_synthetic_depth`, 128x256) into a temporary folder (or
`--root`), then times whole epochs of `Stream` at several thread and prefetch settings and prints
samples/s (median over `--repeats` epochs). `--step-ms` makes the consumer sleep per batch, as a
training step that releases the GIL would, to show how prefetching overlaps loading with compute.
The last row times the MLX depth article's own pipeline (`to_stream().batch().prefetch()`), whose
batch contents depend on thread timing, for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlxkit.data import (
    LoadNumpy,
    RandomBrightness,
    RandomFlip,
    RandomNoise,
    RandomTranslation,
    Stream,
)
from mlxkit.datasets import depth_samples, make_synthetic_depth

import mlx.data as dx
import numpy as np

PAIRED = ("image", "depth")


def transforms() -> list:
    return [
        LoadNumpy(PAIRED),
        RandomFlip(keys=PAIRED),
        RandomTranslation(0.1, keys=PAIRED),
        RandomBrightness(0.1),
        RandomNoise(0.02),
    ]


def time_epochs(make_batches, repeats: int, step_seconds: float) -> tuple[float, float]:
    """Median samples/s over `repeats` full epochs, and the process CPU milliseconds per sample.

    CPU time (all threads) per sample does not depend on what else the machine runs, so it still
    compares settings when other processes share the cores and wall-clock rates get noisy.
    """
    rates, costs = [], []
    for epoch in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        count = 0
        for batch in make_batches(epoch):
            count += batch["image"].shape[0]
            if step_seconds:
                time.sleep(step_seconds)
        rates.append(count / (time.perf_counter() - start))
        costs.append(1000 * (time.process_time() - cpu) / count)
    return statistics.median(rates), statistics.median(costs)


def article_pipeline(samples: list[dict], batch_size: int, prefetch: int, threads: int):
    """The depth article's pipeline: fast, but a batch's contents depend on thread timing."""
    records = [{k: v.encode() for k, v in s.items()} for s in samples]

    def make(epoch: int):
        order = np.random.default_rng([0, epoch]).permutation(len(records)).tolist()
        stream = dx.buffer_from_vector(records).perm(order).to_stream()
        stream = stream.load_numpy("image").load_numpy("depth")
        return stream.batch(batch_size).prefetch(prefetch, threads)

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="dataset folder (default: temp)")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--prefetch", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--step-ms", type=float, default=0.0, help="consumer time per batch")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        root = args.root or Path(temporary)
        start = time.perf_counter()
        make_synthetic_depth(root, args.samples, 0)
        print(f"generated {args.samples} scenes in {time.perf_counter() - start:.1f} s")
        samples = depth_samples(root, "train")
        # One untimed pass warms the page cache, so every setting reads from memory.
        for batch in Stream(samples, batch_size=args.batch_size, transforms=[LoadNumpy(PAIRED)]):
            del batch
        step = args.step_ms / 1000
        print(
            f"\nsamples/s (CPU ms per sample), batch {args.batch_size}, "
            f"consumer {args.step_ms:g} ms/batch"
        )
        print("threads \\ prefetch | " + " | ".join(f"{p:>12}" for p in args.prefetch))
        for threads in args.threads:
            row = []
            for prefetch in args.prefetch:
                stream = Stream(
                    samples,
                    batch_size=args.batch_size,
                    transforms=transforms(),
                    prefetch=prefetch,
                    num_threads=threads,
                )

                def make(epoch: int, stream: Stream = stream):
                    stream.set_epoch(epoch)
                    return stream

                row.append(time_epochs(make, args.repeats, step))
            print(f"{threads:>17} | " + " | ".join(f"{r:>5.0f} ({c:4.2f})" for r, c in row))
        loads_only = Stream(samples, batch_size=args.batch_size, transforms=[LoadNumpy(PAIRED)])
        rate, cost = time_epochs(lambda e: loads_only, args.repeats, step)
        print(f"\nStream, loading only, defaults: {rate:.0f} samples/s ({cost:.2f} CPU ms/sample)")
        threads = max(args.threads)
        make = article_pipeline(samples, args.batch_size, 2 * threads, threads)
        rate, cost = time_epochs(make, args.repeats, step)
        print(
            f"article pipeline, loading only, {threads} threads: {rate:.0f} samples/s "
            f"({cost:.2f} CPU ms/sample)"
        )


if __name__ == "__main__":
    main()
