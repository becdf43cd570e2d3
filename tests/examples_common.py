"""Running the examples and reading the logs they write, for the example smoke tests."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(script: Path, *args: str, cwd: Path = ROOT) -> str:
    """Runs `python script *args` in `cwd`; asserts it succeeds and returns its standard output."""
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def csv_log(path: Path) -> dict[str, list[float]]:
    """A CSVLogger file as {column: per-epoch values}."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}
