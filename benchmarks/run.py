"""Trainer benchmark: mlxkit's `fit` against the best hand-written MLX loop and the usual peers.

Run (from the repository root):

    python benchmarks/run.py              # everything, ~15 minutes; writes docs/benchmarks.md
    python benchmarks/run.py --quick      # the same on fewer samples and repeats, ~4 minutes
    python benchmarks/run.py --skip-peers # MLX only (no PyTorch / Keras environments)
    python benchmarks/run.py --render benchmarks/results/latest.json   # redo the page only

What it measures, each measurement in a fresh process:

1. Epoch time on three workloads (`_workloads.py`): the MNIST MLP 784-64-64-10, a small CNN and
   `depth_resnet20` at 32x64, for mlxkit `Trainer.fit`, the hand-written `mx.compile` loop
   (`_mlx_worker.HandLoop`), Keras 3 on MLX (keras-mlx), plain PyTorch and PyTorch Lightning.
   Repeats are interleaved (A B C D E, B C D E A, ...) so that load from other processes spreads
   over all of them; the page reports medians and each framework's ratio to the hand loop in the
   same round. All start from the same initial weights and visit the samples in the same order,
   so the loss after one epoch is compared.
2. fit against the hand loop in one process, epochs alternating (the 3% criterion).
3. The per-step cost of the loop itself, on a model too small to cost anything, and a cProfile.
4. Active and peak memory over 20 MLP epochs.
5. The MLP with the fast BLAS that mlxkit loads on Linux, and with MLX's reference BLAS.

The peers live in virtual environments under `benchmarks/.venvs/`, created on first use
(`--setup` forces a rebuild); a peer that cannot be installed or run is reported as skipped.
BLAS and OpenMP threads are capped at `--threads` (default 1) for every framework: the machine
this was written on has 2 cores shared with other jobs, where spinning BLAS threads made epochs
3-10x slower and the timings meaningless; `--threads 0` keeps each library's default.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _workloads as W  # noqa: E402

VENVS = HERE / ".venvs"
RESULTS = HERE / "results"
BASELINE = HERE / "baseline" / "before.json"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"

# What each peer environment installs. Exact pins: `torch==2.13.0+cpu` can only be the CPU build,
# so pip never pulls a CUDA torch; keras-mlx is installed without its `keras` dependency, which
# would overwrite keras-nightly (the only Keras with the pluggable MLX backend).
PEER_ENVS = {
    "torch": {
        "install": [["torch==2.13.0+cpu", "lightning==2.6.6", "numpy"]],
        "check": "import torch, lightning; assert torch.version.cuda is None",
    },
    "keras": {
        "install": [
            ["--pre", "keras-nightly==3.16.0.dev2026102704", "mlx[cpu]==0.31.2", "numpy"],
            ["--no-deps", "keras-mlx==0.0.1"],
        ],
        "check": "import keras; assert keras.backend.backend() == 'mlx'",
        "env": {"KERAS_BACKEND": "mlx"},
    },
}

FRAMEWORKS = {
    "mlxkit": "mlxkit `Trainer.fit`",
    "hand": "hand-written `mx.compile` loop",
    "keras-mlx": "Keras 3 on MLX (keras-mlx)",
    "torch": "plain PyTorch, eager",
    "lightning": "PyTorch Lightning",
}
FRAMEWORK_ENV = {
    "mlxkit": None,
    "hand": None,
    "keras-mlx": "keras",
    "torch": "torch",
    "lightning": "torch",
}

# Loss after one epoch, relative to the hand loop: the criterion for "same loss".
# - mlxkit: identical weights, order and maths; only the compiled graphs differ.
# - the peers: identical weights and order, other kernels and summation orders.
TOLERANCE = {"mlxkit": 1e-3, "torch": 2e-2, "lightning": 2e-2, "keras-mlx": 2e-2}
# The depth model's first epoch amplifies rounding: scaling its initial weights by 1 + 1e-6 in
# MLX moves the loss after one epoch by 1.7%, so other kernels there get a wider criterion.
PEER_TOLERANCE = {"depth": 5e-2}

SETTINGS = {
    "full": {
        "repeats": {"mlp": 5, "cnn": 3, "depth": 3},
        "h2h": 40,
        "overhead": 7,
        "memory": 20,
        "blas": 3,
        "defaults": 3,
    },
    "quick": {
        "repeats": {"mlp": 2, "cnn": 1, "depth": 1},
        "h2h": 4,
        "overhead": 2,
        "memory": 5,
        "blas": 1,
        "defaults": 1,
    },
    "smoke": {
        "repeats": {"mlp": 1, "cnn": 1, "depth": 1},
        "h2h": 1,
        "overhead": 1,
        "memory": 2,
        "blas": 1,
        "defaults": 1,
    },
}


class Runner:
    """Starts the workers with a common environment and collects their `RESULT` lines."""

    def __init__(self, args):
        self.args = args
        self.env = dict(os.environ)
        for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if args.threads:
                self.env[key] = str(args.threads)
        self.python = {"main": sys.executable}
        self.skipped: dict[str, str] = {}

    def log(self, text: str) -> None:
        print(text, flush=True)

    # -------------------------------------------------------------- peer environments
    def prepare_peers(self, needed: set[str]) -> None:
        for name in sorted(needed):
            if self.args.skip_peers:
                self.skipped[name] = "--skip-peers"
                continue
            try:
                self.python[name] = self._venv(name)
            except (OSError, subprocess.SubprocessError) as error:
                self.skipped[name] = f"environment unavailable: {_tail(str(error), 300)}"
                self.log(f"  {name}: skipped ({self.skipped[name]})")

    def _venv(self, name: str) -> str:
        spec = PEER_ENVS[name]
        folder = VENVS / name
        python = folder / "bin" / "python"
        env = {**self.env, **spec.get("env", {})}
        if self.args.setup and folder.exists():
            shutil.rmtree(folder)
        if python.exists() and self._works(python, spec["check"], env):
            return str(python)
        self.log(f"  creating {folder.relative_to(ROOT)} (pip, a few minutes) ...")
        if folder.exists():
            shutil.rmtree(folder)
        # The venv module of the interpreter behind this one, so a venv is never nested.
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(folder)], check=True, capture_output=True)
        for packages in spec["install"]:
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *packages],
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if result.returncode != 0:
                raise OSError(f"pip install {' '.join(packages)} failed: {result.stderr}")
        if not self._works(python, spec["check"], env):
            raise OSError(f"{name} environment built but `{spec['check']}` fails")
        return str(python)

    @staticmethod
    def _works(python: Path, check: str, env: dict) -> bool:
        result = subprocess.run(
            [str(python), "-c", check], capture_output=True, env=env, timeout=300
        )
        return result.returncode == 0

    # -------------------------------------------------------------- workers
    def worker(self, framework: str, workload: str, init: str) -> list[str]:
        size = ["--size", self.args.size, "--mnist", str(self.args.mnist)]
        if framework in ("mlxkit", "hand"):
            return [
                self.python["main"],
                str(HERE / "_mlx_worker.py"),
                "run",
                "--framework",
                framework,
                "--workload",
                workload,
                "--init",
                init,
                *size,
            ]
        if framework == "keras-mlx":
            return [
                self.python["keras"],
                str(HERE / "_keras_worker.py"),
                "--workload",
                workload,
                "--init",
                init,
                *size,
            ]
        return [
            self.python["torch"],
            str(HERE / "_torch_worker.py"),
            "--framework",
            framework,
            "--workload",
            workload,
            "--init",
            init,
            *size,
        ]

    def call(
        self,
        command: list[str],
        extra_env: dict | None = None,
        timeout: int = 900,
        unset: tuple[str, ...] = (),
    ) -> dict:
        env = {**self.env, **(extra_env or {})}
        for key in unset:
            env.pop(key, None)
        if command[0] == self.python.get("keras"):
            env.update(PEER_ENVS["keras"].get("env", {}))
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(_tail(result.stderr or result.stdout, 600))
        return json.loads(lines[-1][len("RESULT ") :])

    def attempt(self, label: str, command: list[str], **call: Any) -> tuple[dict | None, str]:
        """`call`, logging a failure under `label`: (result, "") or (None, the error)."""
        try:
            return self.call(command, **call), ""
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            self.log(f"{label} failed: {_tail(str(error), 200)}")
            return None, str(error)

    def mlx(self, mode: str, *options: str, extra_env: dict | None = None) -> dict:
        command = [self.python["main"], str(HERE / "_mlx_worker.py"), mode, *options]
        command += ["--size", self.args.size, "--mnist", str(self.args.mnist)]
        return self.call(command, extra_env)


def _rotated(items: list[str], shift: int) -> list[str]:
    """`items` started at position `shift` (mod its length): who goes first changes each round."""
    shift %= len(items)
    return items[shift:] + items[:shift]


def _tail(text: str, limit: int) -> str:
    text = " ".join(text.strip().split())
    return text if len(text) <= limit else "..." + text[-limit:]


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "mlxkit"], capture_output=True, text=True, cwd=ROOT
    )
    if commit.returncode == 0:
        info["commit"] = commit.stdout.strip() + (" + local changes" if dirty.stdout else "")
    return info


# ------------------------------------------------------------------ the measurements
def run_all(args) -> dict:
    runner = Runner(args)
    settings = SETTINGS[args.size]
    repeats = settings["repeats"]
    if args.repeats:
        repeats = dict.fromkeys(repeats, args.repeats)
    workloads = args.workloads.split(",")
    frameworks = args.frameworks.split(",")
    started = time.time()
    results: dict = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "size": args.size,
        "threads": args.threads,
        "machine": machine(),
        "load_before": load_average(),
        "workloads": {},
    }
    runner.log("preparing peer environments")
    runner.prepare_peers({FRAMEWORK_ENV[f] for f in frameworks if FRAMEWORK_ENV[f]})
    results["skipped"] = {
        f: runner.skipped[FRAMEWORK_ENV[f]]
        for f in frameworks
        if FRAMEWORK_ENV[f] in runner.skipped
    }
    active = [f for f in frameworks if f not in results["skipped"]]
    with tempfile.TemporaryDirectory() as tmp:
        inits = {}
        for name in workloads:
            inits[name] = str(Path(tmp) / f"{name}_init.npz")
            info = runner.mlx("init", "--workload", name, "--out", inits[name])
            spec = W.workload(name, args.size)
            results["workloads"][name] = {
                "description": spec.description.replace(
                    f"{W.WORKLOADS[name].num_train:,}", f"{spec.num_train:,}"
                ),
                "parameters": info["parameters"],
                "batch_size": spec.batch_size,
                "steps": spec.steps,
                "learning_rate": spec.learning_rate,
                "runs": {f: [] for f in active},
                "errors": {},
            }
        for name in workloads:
            entry = results["workloads"][name]
            for round_ in range(repeats[name]):
                for framework in _rotated(active, round_):
                    label = f"  {name} round {round_ + 1}/{repeats[name]} {framework:10s}"
                    command = runner.worker(framework, name, inits[name])
                    result, error = runner.attempt(label, command)
                    if result is None:
                        entry["errors"].setdefault(framework, error)
                        continue
                    result["round"] = round_
                    entry["runs"][framework].append(result)
                    runner.log(
                        f"{label} {result['epoch_s']:.3f} s/epoch, loss {result['loss']:.4f}"
                    )
        if "mlp" in inits and not args.no_extras:
            run_extras(runner, results, inits["mlp"], settings, active)
    results["load_after"] = load_average()
    results["seconds"] = time.time() - started
    return results


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_extras(
    runner: Runner, results: dict, init: str, settings: dict, frameworks: list[str]
) -> None:
    log = runner.log
    log("  fit against the hand loop, one process")
    results["h2h"] = runner.mlx("h2h", "--init", init, "--repeats", str(settings["h2h"]))
    log("  per-step overhead on a tiny model")
    results["overhead"] = runner.mlx("overhead", "--repeats", str(settings["overhead"]))
    log("  profile")
    results["profile"] = runner.mlx("profile", "--init", init, "--top", "12")
    log("  memory over epochs")
    results["memory"] = runner.mlx("memory", "--init", init, "--epochs", str(settings["memory"]))
    log("  BLAS")
    configs = {
        "fast BLAS, 1 thread": {"OPENBLAS_NUM_THREADS": "1"},
        "fast BLAS, a thread per core (OpenBLAS's default)": {
            "OPENBLAS_NUM_THREADS": str(os.cpu_count() or 1)
        },
        "MLX's reference BLAS (MLXKIT_BLAS=off)": {"MLXKIT_BLAS": "off"},
    }
    blas: dict = {name: [] for name in configs}
    for _ in range(settings["blas"]):
        for name, extra in configs.items():
            # One thread per core can be 10x slower on shared cores: bound the wait.
            command = runner.worker("mlxkit", "mlp", init)
            result, _ = runner.attempt(f"    {name}:", command, extra_env=extra, timeout=300)
            if result is not None:
                log(f"    {name}: {result['epoch_s']:.3f} s/epoch ({result['blas']})")
                blas[name].append(result)
    results["blas"] = blas
    log("  MLP with each library's default threads")
    defaults: dict = {name: [] for name in frameworks}
    for round_ in range(settings["defaults"]):
        for framework in _rotated(frameworks, round_):
            command = runner.worker(framework, "mlp", init)
            result, _ = runner.attempt(
                f"    {framework}:", command, timeout=300, unset=THREAD_VARIABLES
            )
            if result is not None:
                log(f"    {framework}: {result['epoch_s']:.3f} s/epoch")
                defaults[framework].append(result)
    results["defaults"] = defaults


# ------------------------------------------------------------------ the page
def _median(values):
    return statistics.median(values) if values else float("nan")


def summarize(results: dict) -> dict:
    """Per workload and framework: medians, ratios to the hand loop of the same round, losses."""
    summary = {}
    for name, entry in results["workloads"].items():
        runs = entry["runs"]
        hand = {run["round"]: run for run in runs.get("hand", [])}
        hand_loss = _median([run["loss"] for run in runs.get("hand", [])])
        rows = {}
        for framework, items in runs.items():
            if not items:
                continue
            paired = [(run, hand[run["round"]]) for run in items if run["round"] in hand]
            ratios = [run["epoch_s"] / ref["epoch_s"] for run, ref in paired]
            cpu_ratios = [
                run["epoch_cpu_s"] / ref["epoch_cpu_s"]
                for run, ref in paired
                if "epoch_cpu_s" in run and "epoch_cpu_s" in ref
            ]
            loss = _median([run["loss"] for run in items])
            tolerance = TOLERANCE.get(framework)
            if tolerance is not None and framework != "mlxkit":
                tolerance = max(tolerance, PEER_TOLERANCE.get(name, 0.0))
            difference = abs(loss - hand_loss) / abs(hand_loss) if hand_loss else float("nan")
            rows[framework] = {
                "epoch_s": _median([run["epoch_s"] for run in items]),
                "epoch_min": min(run["epoch_s"] for run in items),
                "epoch_max": max(run["epoch_s"] for run in items),
                "first_epoch_s": _median([run["first_epoch_s"] for run in items]),
                "ratio": _median(ratios),
                "cpu_s": _median([run["epoch_cpu_s"] for run in items if "epoch_cpu_s" in run]),
                "cpu_ratio": _median(cpu_ratios),
                "loss": loss,
                "loss_difference": difference,
                "same_loss": None if tolerance is None else bool(difference <= tolerance),
                "tolerance": tolerance,
                "peak_rss_mb": _median([run["peak_rss_mb"] for run in items]),
                "mlx_peak_mb": _median([run.get("mlx_peak_mb", float("nan")) for run in items]),
                "runs": len(items),
                "version": items[0].get("version", ""),
            }
        summary[name] = rows
    return summary


def render(results: dict) -> str:
    summary = summarize(results)
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python benchmarks/run.py`; edit the script, not this page. -->",
        "",
        "How fast `Trainer.fit` trains compared with the best training loop one can write by hand "
        "in MLX, and with what one would use instead (Keras on MLX, PyTorch, PyTorch Lightning).",
        "",
        f"- Date: {results['date']}, {results['seconds'] / 60:.0f} minutes, "
        f"`{results['size']}` settings.",
        f"- Machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gb', '?')} GB, "
        f"{m.get('platform')}, Python {m.get('python')}; mlxkit {m.get('commit', '?')}.",
        f"- Threads: BLAS and OpenMP capped at "
        f"{results['threads'] or 'the libraries defaults'} for every framework.",
        f"- Load average (1, 5, 15 min) before: {results.get('load_before')}, after: "
        f"{results.get('load_after')}. {_noise(results)}",
        "",
    ]
    lines += _headline(results, summary)
    lines += _throughput(results, summary)
    if "h2h" in results:
        lines += _h2h(results)
    lines += _changes()
    if "overhead" in results:
        lines += _overhead(results)
    if "profile" in results:
        lines += _profile(results)
    if "memory" in results:
        lines += _memory(results)
    if "blas" in results:
        lines += _blas(results)
    if results.get("defaults"):
        lines += _defaults(results)
    # bench_precision.py writes the mixed-precision section; the page includes it as a snippet.
    lines += ['--8<-- "benchmarks/precision.md"', ""]
    lines += _method()
    return "\n".join(lines).rstrip() + "\n"


def _noise(results: dict) -> str:
    """How much the reference itself varied between rounds: the noise floor of every ratio."""
    spreads = []
    for entry in results["workloads"].values():
        times = [run["epoch_s"] for run in entry["runs"].get("hand", [])]
        if len(times) >= 3:
            spreads.append((max(times) - min(times)) / statistics.median(times))
    if not spreads:
        return "Too few rounds to tell the noise; other jobs may share the cores."
    return (
        f"Other jobs shared the cores: the hand loop's own epoch time varied by up to "
        f"{max(spreads):.0%} between rounds, so figures are medians of interleaved runs and "
        "differences of a few percent are within the noise."
    )


def _headline(results, summary) -> list[str]:
    lines = ["## Summary", ""]
    for name, rows in summary.items():
        if "mlxkit" not in rows:
            continue
        fit = rows["mlxkit"]
        parts = [
            f"fit {fit['epoch_s']:.2f} s/epoch, {fit['ratio']:.2f}x the hand loop "
            f"({fit['cpu_ratio']:.2f}x in CPU time)"
        ]
        for peer in ("keras-mlx", "torch", "lightning"):
            if peer in rows:
                speed = rows[peer]["epoch_s"] / fit["epoch_s"]
                parts.append(
                    f"{speed:.1f}x faster than {FRAMEWORKS[peer]}"
                    if speed >= 1
                    else f"{1 / speed:.1f}x slower than {FRAMEWORKS[peer]}"
                )
        lines.append(
            f"- **{name}** ({results['workloads'][name]['description']}): " + "; ".join(parts) + "."
        )
    if "h2h" in results:
        h2h = results["h2h"]
        low, middle, high = _quartiles(_vs_faster_hand(h2h, "mlxkit"))
        lines.append(
            f"- fit against the faster of the two hand loops in one process, alternating MLP "
            f"epochs: **{middle:.3f}x** in wall time (median of {len(h2h['ratios']['mlxkit'])} "
            f"rounds, quartiles {low:.3f}-{high:.3f}); against the pipelined hand loop "
            f"{_median(h2h['ratios']['mlxkit']):.3f}x in wall time and "
            f"{_cpu_ratio(h2h, 'mlxkit'):.3f}x in CPU time."
        )
    defaults = {name: runs for name, runs in results.get("defaults", {}).items() if runs}
    if "mlxkit" in defaults:
        fit = _median([run["epoch_s"] for run in defaults["mlxkit"]])
        parts = [
            f"{_median([run['epoch_s'] for run in defaults[peer]]) / fit:.1f}x faster than "
            f"{FRAMEWORKS[peer]}"
            for peer in ("keras-mlx", "torch", "lightning")
            if peer in defaults
        ]
        lines.append(
            f"- Out of the box (each library's default threads), MLP: fit {fit:.2f} s/epoch"
            + (", " + ", ".join(parts) if parts else "")
            + "."
        )
    if results.get("skipped"):
        for framework, reason in results["skipped"].items():
            lines.append(f"- {FRAMEWORKS[framework]}: skipped ({reason}).")
    return [*lines, ""]


def _vs_faster_hand(h2h: dict, name: str) -> list[float]:
    """Per round, `name`'s epoch time over the faster hand loop's of that round."""
    hands = [times for loop, times in h2h["times"].items() if loop.startswith("hand")]
    return [t / min(rivals) for t, *rivals in zip(h2h["times"][name], *hands)]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        value = _median(values)
        return value, value, value
    low, middle, high = statistics.quantiles(values, n=4)
    return low, middle, high


def _best_ratio(h2h: dict, name: str) -> float:
    return min(h2h["times"][name]) / min(h2h["times"]["hand"])


def _cpu_ratio(h2h: dict, name: str) -> float:
    cpu = h2h.get("cpu", {})
    return _median([a / b for a, b in zip(cpu.get(name, []), cpu.get("hand", []))])


def _throughput(results, summary) -> list[str]:
    lines = [
        "## Epoch time",
        "",
        "Seconds per epoch: the second epoch of each run (the first includes copying the data, "
        "tracing and compiling, shown apart). `x hand` is the ratio to the hand-written loop "
        "timed in the same round, median over rounds, in wall time and in CPU time (the "
        "process's, all threads: waiting for a core shared with other jobs does not count, so it "
        "varies less here). The loss is the mean training loss of epoch 1; `same loss` compares "
        "it with the hand loop's (criteria below).",
        "",
    ]
    for name, rows in summary.items():
        entry = results["workloads"][name]
        lines += [
            f"### {name}: {entry['description']}",
            "",
            f"{entry['parameters']:,} parameters, batch {entry['batch_size']}, "
            f"{entry['steps']} steps per epoch, SGD learning rate {entry['learning_rate']}.",
            "",
            "| framework | s/epoch (min-max) | x hand | CPU s | x hand, CPU | first epoch s "
            "| loss epoch 1 | same loss | peak RSS MB | MLX peak MB | runs |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for framework in FRAMEWORKS:
            if framework not in rows:
                reason = results.get("skipped", {}).get(framework) or entry["errors"].get(framework)
                if reason:
                    lines.append(
                        f"| {FRAMEWORKS[framework]} | skipped: {_tail(reason, 120)} |" + " |" * 10
                    )
                continue
            row = rows[framework]
            if row["same_loss"] is None:
                same = "reference"
            else:
                sign = "<=" if row["same_loss"] else ">"
                verdict = "yes" if row["same_loss"] else "**no**"
                same = f"{verdict} ({row['loss_difference']:.1e} {sign} {row['tolerance']:g})"
            peak = row["mlx_peak_mb"]
            mlx_peak = "" if peak != peak else f"{peak:.0f}"  # NaN: not an MLX framework
            lines.append(
                f"| {FRAMEWORKS[framework]} | {row['epoch_s']:.3f} ({row['epoch_min']:.3f}-"
                f"{row['epoch_max']:.3f}) | {row['ratio']:.2f} | {row['cpu_s']:.3f} | "
                f"{row['cpu_ratio']:.2f} | {row['first_epoch_s']:.2f} | {row['loss']:.4f} | "
                f"{same} | {row['peak_rss_mb']:.0f} | {mlx_peak} | {row['runs']} |"
            )
        versions = sorted({row["version"] for row in rows.values() if row["version"]})
        lines += ["", "Versions: " + "; ".join(versions) + ".", ""]
    return lines


def _h2h(results) -> list[str]:
    h2h = results["h2h"]
    lines = [
        "## fit against the hand loop, one process",
        "",
        f"The MLP ({h2h['steps']} steps per epoch) with fit and with the hand loops in the same "
        "process, from the same weights, epochs alternating: less noisy than comparing "
        "processes, in a new random order each round. The hand loop queues each step with "
        "`mx.async_eval(state)` and waits for the one before; the `mx.eval` "
        "variant evaluates each step before building the next, as mlx-lm's trainer does; which "
        "is faster depends on the machine, so `x faster hand` divides by the faster of the two "
        "in each round (median and quartiles over rounds). `x hand` is the median ratio to the "
        "pipelined hand loop; `fastest` compares each loop's fastest epoch, the one least "
        "disturbed by other jobs. `mlxkit, loss only` is fit without the accuracy metric: what "
        "the metric's bookkeeping costs.",
        "",
        "| | s/epoch median | x faster hand | x hand | fastest | x hand, fastest | CPU s median "
        "| x hand, CPU | loss epoch 1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, times in h2h["times"].items():
        ratio = "1" if name == "hand" else f"{_median(h2h['ratios'][name]):.3f}"
        cpu_ratio = "1" if name == "hand" else f"{_cpu_ratio(h2h, name):.3f}"
        low, middle, high = _quartiles(_vs_faster_hand(h2h, name))
        lines.append(
            f"| {name} | {_median(times):.3f} | {middle:.3f} ({low:.3f}-{high:.3f}) | {ratio} | "
            f"{min(times):.3f} | {_best_ratio(h2h, name):.3f} | "
            f"{_median(h2h.get('cpu', {}).get(name, [])):.3f} | {cpu_ratio} | "
            f"{h2h['losses'][name][0]:.6f} |"
        )
    pipeline = h2h.get("pipeline")
    if pipeline and pipeline.get("us_per_step"):
        trial = ", ".join(f"{mode} {us:.0f} us" for mode, us in pipeline["us_per_step"].items())
        chosen = "pipelined" if pipeline["pipelined"] else "evaluated one at a time"
        lines += [
            "",
            f'fit\'s steps were {chosen}: `Trainer(pipeline="auto")` timed both on its first '
            f"steps ({trial} per step, medians of the timed blocks) and pipelines only when that "
            "is at least 5% faster.",
        ]
    before = _load_baseline()
    if before and results["size"] == "full":
        old = before["h2h"]
        lines += [
            "",
            f"Before this work (commit {before['commit']}, same method, wall time, a busier "
            f"machine): fit {_median(old['times']['mlxkit']):.3f} s/epoch, "
            f"**{_median(old['ratios']['mlxkit']):.3f}x** the hand loop "
            f"({_median(old['times']['hand']):.3f} s).",
        ]
    return [*lines, ""]


def _changes() -> list[str]:
    return [
        "## What changed in `fit` for this",
        "",
        "Each change was measured with the one-process comparison and the loop-cost table below, "
        "and kept because it won:",
        "",
        '- How fit waits for each step is chosen per machine (`Trainer(pipeline="auto")`). '
        "Queueing step n with `mx.async_eval` and waiting for step n-1 lets Python build step "
        "n+1 while step n computes: always right on an accelerator, and up to ~30% faster on a "
        "CPU with a core free for each thread. On cores shared with other jobs, or hyperthreads "
        "of one core, the two threads slow each other down, and evaluating each step (`mx.eval`, "
        "mlx-lm's way) is as fast or faster and spends ~15% less CPU time (compare the hand "
        "loop's two variants above, on this machine and in earlier runs). On the CPU, fit times "
        "both on its first ~200 steps and pipelines only if that is at least 5% faster.",
        "- The running loss is one `[total, count]` vector, with the steps after which each "
        "stayed finite (which locates the first NaN step), and the accuracy's counts are one "
        "`[correct, count]` vector: each step updates each in one fused kernel, where scalars "
        "took five. A kernel costs MLX's CPU scheduler several microseconds, and the MLP's whole "
        "step is about 70 of them.",
        "- Accuracy without a mask adds a constant item count instead of summing a mask of ones.",
        "- Shuffled array batches gather with slices of the epoch's order, copied to the device "
        "once per epoch as uint32, instead of an index array built per batch (~2%).",
        "- Batches that `ArrayBatches` yields (two `mx.array`s) skip `_unpack`'s checks and "
        "`tree_map`, and `len()` of array batches no longer draws the epoch's permutation.",
        "",
    ]


def _overhead(results) -> list[str]:
    overhead = results["overhead"]
    steps = overhead["steps"]

    def per_step(times: dict, pick) -> dict:
        return {name: pick(values) / steps * 1e6 for name, values in times.items()}

    best = per_step(overhead["times"], min)
    cpu = per_step(overhead.get("cpu", {}), _median)
    before = _load_baseline() if results["size"] == "full" else None
    old = None
    if before:
        old_steps = before["overhead"]["steps"]
        old = {name: min(t) / old_steps * 1e6 for name, t in before["overhead"]["times"].items()}
    lines = [
        "## The loop's own cost",
        "",
        f"A 16-input linear layer on batches of 8 ({steps:,} steps per epoch): compute is "
        "negligible, so the time per step is the training loop's own: Python, building and "
        "dispatching the MLX graph, waiting for it. Microseconds per step: the best of the "
        "interleaved epochs in wall time, and the median in CPU time; `over hand` subtracts the "
        "hand loop's.",
        "",
        "| loop | us/step, best | over hand | CPU us/step | over hand, CPU |"
        + (" before this work, best |" if old else ""),
        "|---|---|---|---|---|" + ("---|" if old else ""),
    ]
    for name in overhead["times"]:
        row = f"| {name} | {best[name]:.0f} | {best[name] - best['hand loop']:+.0f} |"
        if name in cpu:
            row += f" {cpu[name]:.0f} | {cpu[name] - cpu['hand loop']:+.0f} |"
        else:
            row += " | |"
        if old:
            row += f" {old[name]:.0f} |" if name in old else " |"
        lines.append(row)
    lines += [
        "",
        "Callbacks without batch hooks are not called per step at all; a batch hook that reads "
        "`logs` costs a device sync and the conversion of every metric each step, which is why "
        "the progress bar reads them only when it redraws (every `refresh_seconds`).",
        "",
    ]
    return lines


def _profile(results) -> list[str]:
    profile = results["profile"]
    lines = [
        "## Profile",
        "",
        f"cProfile of one MLP epoch of fit ({profile['steps']} steps, after a compiling epoch), "
        f"sorted by own time: {profile['calls_per_step']:.1f} Python calls per step. MLX's "
        "compiled step, `mx.eval` and the gathers are C++ extension calls that cProfile does not "
        "list, so their time shows up in `_fit_epoch`'s own time.",
        "",
        "```",
        profile["table"],
        "```",
        "",
    ]
    before = _load_baseline() if results["size"] == "full" else None
    if before:
        old = before["profile"]
        table = "\n".join(old["table"].splitlines()[:13])
        lines += [
            f"Before this work (commit {before['commit']}): {old['calls_per_step']:.1f} Python "
            "calls per step; per batch, `ArrayBatches` re-entered `tree_map` and `_unpack` "
            "converted each batch again:",
            "",
            "```",
            table,
            "```",
            "",
        ]
    return lines


def _memory(results) -> list[str]:
    rows = results["memory"]["rows"]
    active = [row["active_mb"] for row in rows]
    peak = [row["peak_mb"] for row in rows]
    lines = [
        f"## Memory over {len(rows)} epochs",
        "",
        "The MLP trained for many epochs in one `fit`: MLX's active memory (arrays alive), its "
        "peak since the start, and the process's peak RSS, read at each epoch end. Flat means "
        "nothing accumulates from epoch to epoch (graphs, batches, logs).",
        "",
        "| epoch | active MB | peak MB | MLX cache MB | peak RSS MB | loss | s |",
        "|---|---|---|---|---|---|---|",
    ]
    shown = sorted({0, 1, len(rows) // 4, len(rows) // 2, (3 * len(rows)) // 4, len(rows) - 1})
    for index in shown:
        row = rows[index]
        lines.append(
            f"| {row['epoch']} | {row['active_mb']:.1f} | {row['peak_mb']:.1f} | "
            f"{row['cache_mb']:.1f} | {row['rss_peak_mb']:.0f} | {row['loss']:.4f} | "
            f"{row['seconds']:.2f} |"
        )
    lines += [
        "",
        f"Active memory from epoch 2 to {len(rows)}: {min(active[1:] or active):.1f}-"
        f"{max(active[1:] or active):.1f} MB; peak: {peak[0]:.1f} MB after epoch 1, "
        f"{peak[-1]:.1f} MB after epoch {len(rows)}.",
        "",
    ]
    return lines


def _blas(results) -> list[str]:
    lines = [
        "## Fast BLAS on Linux",
        "",
        "MLX's Linux wheel multiplies matrices with the reference BLAS; importing mlxkit loads an "
        "optimized one first (`mlxkit/_blas.py`; `MLXKIT_BLAS=off` disables it, which must be set "
        "before the import, hence one process per setting). MLP epoch with fit:",
        "",
        "| BLAS | s/epoch median | runs | BLAS loaded |",
        "|---|---|---|---|",
    ]
    for name, runs in results["blas"].items():
        if not runs:
            lines.append(f"| {name} | failed | 0 | |")
            continue
        lines.append(
            f"| {name} | {_median([r['epoch_s'] for r in runs]):.2f} | {len(runs)} | "
            f"{runs[0]['blas']} |"
        )
    lines += [
        "",
        "OpenBLAS's worker threads spin while they wait for work; on 2 cores shared with other "
        "jobs they fight the MLX thread and the other processes, which is why every other table "
        "here caps them at one thread.",
        "",
    ]
    return lines


def _defaults(results) -> list[str]:
    rows = {name: runs for name, runs in results["defaults"].items() if runs}
    if "mlxkit" not in rows:
        return []
    fit = _median([run["epoch_s"] for run in rows["mlxkit"]])
    lines = [
        "## Out of the box: each library's default threads",
        "",
        "The MLP again, with no thread caps: each library uses the threads it picks by itself "
        "(OpenBLAS, under MLX, and PyTorch one per core). What a user gets without tuning; one "
        "process per run, frameworks interleaved.",
        "",
        "| framework | s/epoch median (min-max) | x fit | runs |",
        "|---|---|---|---|",
    ]
    for name, runs in rows.items():
        times = [run["epoch_s"] for run in runs]
        lines.append(
            f"| {FRAMEWORKS[name]} | {_median(times):.3f} ({min(times):.3f}-{max(times):.3f}) | "
            f"{_median(times) / fit:.2f} | {len(runs)} |"
        )
    return [*lines, ""]


def _method() -> list[str]:
    return [
        "## Method",
        "",
        "- Every framework trains the same model from the same initial weights (written once by "
        "MLX, converted to NCHW for PyTorch and to Keras's kernel layout), with plain SGD (no "
        "momentum), mean cross-entropy (MSE for depth), an accuracy metric (mean absolute error "
        "for depth) accumulated without a host sync per step, and whole batches only.",
        "- The data are NumPy arrays in memory, passed as they are to `fit`, Keras and the "
        "PyTorch `TensorDataset` / `DataLoader`; the hand loops copy them to the device once and "
        "gather each batch there. Every framework visits the samples in the same order "
        "(`benchmarks/_workloads.py: order`): a sampler for Lightning; Keras cannot take an order "
        "per epoch, so its arrays are permuted before `fit(shuffle=False)` (slicing instead of "
        "gathering each batch, if anything an advantage to Keras).",
        "- Same-loss criteria, relative to the hand loop's loss after epoch 1: mlxkit 1e-3 "
        "(identical weights, order and maths; only the compiled graphs differ), the peers 2e-2 "
        "(identical weights and order, other kernels and summation orders), 5e-2 on depth, "
        "whose first epoch amplifies rounding (initial weights scaled by 1 + 1e-6 move its "
        "loss after one epoch by 1.7%).",
        "- The hand-written loop follows mlx-lm's trainer: one `mx.compile` with "
        "`inputs=outputs=[model.state, optimizer.state, mx.random.state, sums]`, batches gathered "
        "from device arrays, the loss and accuracy summed on the device, one `.item()` per "
        "epoch; each step is queued with `mx.async_eval(state)`, which was faster than mlx-lm's "
        "`mx.eval(state)` per step whenever the machine had a core to spare (tables above).",
        "- Peak RSS includes each framework's libraries and the training arrays; the MLX peak is "
        "MLX's allocator only (mlxkit and the hand loop hold the whole training set on the "
        "device, Keras converts batch by batch).",
        "- Reproduce: `python benchmarks/run.py` (add `--quick` for a shorter run); raw results "
        "are written to `benchmarks/results/latest.json`.",
        "",
    ]


def _load_baseline() -> dict | None:
    try:
        return json.loads(BASELINE.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    parser.add_argument("--size", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--workloads", default="mlp,cnn,depth")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--repeats", type=int, help="rounds per workload (default by size)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads, 0: default")
    parser.add_argument("--skip-peers", action="store_true", help="MLX only")
    parser.add_argument("--setup", action="store_true", help="rebuild the peer environments")
    parser.add_argument("--no-extras", action="store_true", help="epoch times only")
    parser.add_argument("--mnist", default=W.DEFAULT_MNIST)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the Markdown page to write")
    parser.add_argument("--json", default=str(RESULTS / "latest.json"), help="raw results")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the page from raw results")
    args = parser.parse_args()
    args.size = args.size or ("quick" if args.quick else "full")
    for name in args.workloads.split(","):
        if name not in W.WORKLOADS:
            parser.error(f"unknown workload {name!r}; choose from {sorted(W.WORKLOADS)}")
    for name in args.frameworks.split(","):
        if name not in FRAMEWORKS:
            parser.error(f"unknown framework {name!r}; choose from {list(FRAMEWORKS)}")
    if "hand" not in args.frameworks.split(","):
        parser.error("the hand loop is the reference: keep `hand` in --frameworks")
    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        if not Path(args.mnist).is_dir():
            parser.error(f"MNIST folder {args.mnist} not found; pass --mnist")
        results = run_all(args)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
