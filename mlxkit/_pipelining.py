"""How `fit` waits for its training steps: pipelined with `mx.async_eval`, or one at a time.

Queueing step n with `mx.async_eval` and then waiting for step n-1 lets Python build step n+1
while step n computes, never more than one step ahead. On an accelerator that is always right. On
the CPU, Python's thread and MLX's compute thread share the cores: with a core free for each,
pipelining hides the Python time of every step (28% of a small MLP's epoch on an idle 2-core AMD
machine); on cores busy with other work, or on some virtual machines, the threads slow each other
down and evaluating each step before building the next is as fast or faster (by 10-20% on the
same AMD machine when loaded, by 0-4% on an idle 2-vCPU Intel one), and it spends ~15% less CPU
time. No fixed choice wins everywhere, so on the CPU `"auto"` times both on the first steps of
training and pipelines only where that is clearly faster.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Literal

import mlx.core as mx

PipelineMode = Literal["auto"] | bool


class StepPipeline:
    """Evaluates or queues each training step; with `mode="auto"` on the CPU, picks the faster.

    The trial alternates blocks of `block` steps evaluated one at a time and pipelined, each timed
    from one synchronised point to the next, and after `blocks` of each pipelines only if its
    median time per step is at least `margin` lower: pipelining costs more CPU time, so a tie goes
    to evaluating each step. Blocks do not span epochs (validation and callbacks run between them),
    and the first step of a block may compile, which the median shrugs off. The choice only changes
    when Python waits, never what is computed.

    Args:
        mode: `"auto"`, `True` (always pipeline) or `False` (evaluate every step).
        block: Steps per timed block.
        blocks: Timed blocks of each mode before deciding.
        margin: How much faster, as a fraction, pipelining must be to be kept.
    """

    def __init__(
        self,
        mode: PipelineMode = "auto",
        *,
        block: int = 16,
        blocks: int = 6,
        margin: float = 0.05,
    ):
        if mode != "auto" and not isinstance(mode, bool):
            raise ValueError(f"`pipeline` must be 'auto', True or False. Received: {mode!r}")
        self.block, self.blocks, self.margin = block, blocks, margin
        self.pipelined: bool | None = mode if isinstance(mode, bool) else None
        if self.pipelined is None and mx.default_device().type != mx.DeviceType.cpu:
            self.pipelined = True  # an accelerator computes apart from Python's thread
        self.seconds_per_step: dict[bool, list[float]] = {True: [], False: []}
        self._trying = False
        self._block_start: float | None = None
        self._block_steps = 0
        self._pending: Any = None

    def start_epoch(self) -> None:
        """Forgets the partial block and the queued step of the epoch before."""
        self._block_start, self._pending = None, None

    def step_built(self, state: Any, marker: mx.array) -> None:
        """Evaluates or queues the step just built; `marker` is an output that step writes."""
        pipelined = self._trying if self.pipelined is None else self.pipelined
        if pipelined:
            mx.async_eval(state)
            if self._pending is not None:
                mx.eval(self._pending)
            self._pending = marker
        else:
            mx.eval(state)
        if self.pipelined is None:
            self._time(state)

    def _time(self, state: Any) -> None:
        if self._block_start is not None:
            self._block_steps += 1
            if self._block_steps < self.block:
                return
            mx.eval(state)
            elapsed = time.perf_counter() - self._block_start
            self.seconds_per_step[self._trying].append(elapsed / self.block)
            self._trying = not self._trying
            if min(len(times) for times in self.seconds_per_step.values()) >= self.blocks:
                self.pipelined = self._decide()
        else:
            mx.eval(state)  # a block starts from a point where nothing is queued
        self._pending = None
        self._block_start, self._block_steps = time.perf_counter(), 0

    def _decide(self) -> bool:
        pipelined = statistics.median(self.seconds_per_step[True])
        one_at_a_time = statistics.median(self.seconds_per_step[False])
        return pipelined < (1 - self.margin) * one_at_a_time
