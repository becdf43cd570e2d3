"""Export: graph capture from MLX, Core ML `.mlpackage` files, `.mlxfn` files, and a NumPy checker.

- `to_coreml` traces a model and writes a Core ML ML Program (`.mlpackage`) with a report.
- `to_mlxfn` writes MLX's own portable function format (`mx.export_function`).
- `run_mlpackage_numpy` runs a saved `.mlpackage` in NumPy, so exports can be checked on Linux;
  `new_state` gives a stateful package's (zero) states for it.

coremltools is imported only when a Core ML function runs.
"""

from mlxkit.export._mil_numpy import load_mlpackage, new_state, run_mlpackage_numpy
from mlxkit.export.coreml import (
    ConversionReport,
    CoreMLExport,
    ImageInput,
    UnsupportedOperationError,
    to_coreml,
)
from mlxkit.export.mlxfn import to_mlxfn

__all__ = [
    "ConversionReport",
    "CoreMLExport",
    "ImageInput",
    "UnsupportedOperationError",
    "load_mlpackage",
    "new_state",
    "run_mlpackage_numpy",
    "to_coreml",
    "to_mlxfn",
]
