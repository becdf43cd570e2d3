"""`.mlxfn` export: MLX's own serialized-function format, written with `mx.export_function`.

An `.mlxfn` file holds the traced graph and its constants; `mx.import_function` loads it back as
a callable in Python, C++ or Swift without the model's source code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from mlxkit._io import atomic_write_file
from mlxkit.export._trace import as_function, normalize_inputs

import mlx.core as mx
import mlx.nn as nn


def to_mlxfn(
    model: nn.Module | Callable[..., Any],
    example_inputs: Any,
    path: str | os.PathLike[str],
    *,
    shapeless: bool = False,
    metadata: str | None = None,
) -> str:
    """Exports a model (or function of arrays) to an `.mlxfn` file and returns its path.

    A Module is put in eval mode and its parameters are evaluated first, so they are stored as
    constants. The file is written beside its destination and renamed into place, so a failed
    export never leaves a truncated file.

    Args:
        model: An `mlx.nn.Module` or a function of `mx.array`s.
        example_inputs: One `mx.array` or a tuple/list of them.
        path: Destination; must end with `.mlxfn`.
        shapeless: Let the imported function accept other input shapes (MLX re-traces nothing;
            only shape-agnostic graphs work).
        metadata: Optional string saved alongside, read back with
            `mx.import_function(path, return_metadata=True)`.

    Returns:
        The path written.

    Example:
        >>> import mlx.core as mx
        >>> import mlx.nn as nn
        >>> from mlxkit.export import to_mlxfn
        >>> path = to_mlxfn(nn.Linear(3, 2), mx.zeros((1, 3)), "linear.mlxfn")
        >>> mx.import_function(path)(mx.zeros((1, 3)))[0].shape
        (1, 2)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike. Received: path={path!r}.")
    target = os.fspath(path)
    if not target.endswith(".mlxfn"):
        raise ValueError(f"`path` must end with `.mlxfn`. Received: path={target!r}.")
    if metadata is not None and not isinstance(metadata, str):
        raise TypeError(f"`metadata` must be a str or None. Received: metadata={metadata!r}.")
    inputs = normalize_inputs(example_inputs)
    with as_function(model) as fn:

        def export(tmp: str) -> None:
            mx.export_function(tmp, fn, *inputs, shapeless=shapeless, metadata=metadata)

        atomic_write_file(target, export)
    return target
