"""Dataset loaders."""
from mlxkit.datasets.depth import depth_samples, make_synthetic_depth
