"""Argument checks shared by every module: one message format, raised before compiled code runs."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(value: Any, name: str, *, minimum: int = 1, owner: str = "") -> int:
    """Returns `value` as an int; raises a ValueError naming `name` unless it is an int >= minimum.

    Args:
        value: What the user passed.
        name: The argument's name, echoed in the message.
        minimum: The smallest valid value (1: a positive integer).
        owner: A prefix naming the function or class the argument belongs to.

    Example:
        >>> check_int(3, "batch_size")
        3
        >>> check_int(0, "batch_size")
        Traceback (most recent call last):
          ...
        ValueError: `batch_size` must be a positive integer. Received: batch_size=0
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        prefix = f"{owner}: " if owner else ""
        raise ValueError(f"{prefix}`{name}` must be {expected}. Received: {name}={value!r}")
    return int(value)
