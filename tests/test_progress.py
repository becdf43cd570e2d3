"""ProgressBar at fixed terminal widths: a visible bar mid-epoch, one full line at epoch end."""

from __future__ import annotations

import re

from mlxkit import Trainer
from mlxkit.callbacks import ProgressBar

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest


def make_data(num, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def fit_with_bar(bar, epochs=2):
    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    trainer = Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy", ["accuracy"])
    x, y = make_data(64, 0)
    return trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        validation_data=make_data(16, 1),
        callbacks=[bar],
        verbose=0,
        seed=0,
    )


def screens(stream: str) -> list[str]:
    """What a terminal shows after each redraw: tqdm redraws a line after each carriage return."""
    return [part for part in re.split(r"[\r\n]", stream) if part.strip()]


@pytest.mark.parametrize("terminal", [80, 120])
def test_bar_fits_the_terminal_and_the_epoch_line_holds_every_metric(terminal, monkeypatch, capsys):
    # COLUMNS is what a terminal of that width reports through shutil.get_terminal_size.
    monkeypatch.setenv("COLUMNS", str(terminal))
    history = fit_with_bar(ProgressBar("bar", refresh_seconds=0.0))
    err = capsys.readouterr().err
    epoch_lines = [line for line in screens(err) if re.match(r"Epoch \d/2 - \d+\.\ds - ", line)]
    bars = [s for s in screens(err) if "|" in s]

    assert len(bars) > 8  # a redraw per step
    for drawn in bars:
        assert len(drawn) <= terminal - 1, drawn
        # the bar itself stays visible: its body between the pipes keeps 10+ columns
        body = drawn.split("|")[1]
        assert len(body) >= 10, drawn
    # the compact postfix shows the loss, and the accuracy where it fits, mid-epoch
    assert any("loss " in drawn for drawn in bars)
    assert any("accuracy " in drawn for drawn in bars)

    # one full line per epoch with the value of every metric, as History recorded them
    assert len(epoch_lines) == 2
    for epoch, line in enumerate(epoch_lines):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert f"{key} {history.history[key][epoch]:.4f}" in line, (key, line)
    assert max(len(line) for line in epoch_lines) > 80  # wider than the bar: nothing was cut


def test_columns_argument_fixes_the_width(capsys):
    fit_with_bar(ProgressBar("bar", refresh_seconds=0.0, columns=60), epochs=1)
    bars = [s for s in screens(capsys.readouterr().err) if "|" in s]
    assert bars and all(len(drawn) <= 60 for drawn in bars)
    with pytest.raises(ValueError, match=r"Received: columns=5"):
        ProgressBar("bar", columns=5)


def test_line_mode_writes_no_cursor_codes(capsys):
    fit_with_bar(ProgressBar("line"))
    captured = capsys.readouterr()
    assert "\r" not in captured.out and "\x1b" not in captured.out
    assert len(captured.out.splitlines()) == 2
    assert "val_accuracy" in captured.out
