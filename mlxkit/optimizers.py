"""Optimizers by Keras name: `get("adam")` makes an MLX optimizer with Keras's defaults.

A Keras user writes `model.compile(optimizer="adam")`; `get` turns such a string into the MLX
optimizer of that algorithm, configured with the defaults of the Keras class of that name
(learning rate, betas, epsilon, weight decay), so that the string means the same training run
in both libraries. The update rules are MLX's; where MLX cannot express a Keras default (Keras's
Adagrad starts its accumulator at 0.1, MLX's at 0) the table below says so. An optimizer object
passes through unchanged.

Example:
    >>> from mlxkit import optimizers
    >>> adam = optimizers.get("adam")
    >>> type(adam).__name__, adam.learning_rate.item()
    ('Adam', 0.0010000000474974513)
    >>> optimizers.get("AdamW").weight_decay
    0.004
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.optimizers as optim

__all__ = ["get", "names"]

# Keras 3 defaults (keras/src/optimizers/<name>.py), translated to MLX's argument names.
# Keras's Adam-family update divides by (sqrt(v_hat) + epsilon) after bias correction, which is
# MLX's `bias_correction=True`; MLX defaults to no bias correction and eps=1e-8.
_KERAS_DEFAULTS: dict[str, Callable[[], optim.Optimizer]] = {
    "adam": lambda: optim.Adam(
        learning_rate=0.001, betas=[0.9, 0.999], eps=1e-7, bias_correction=True
    ),
    "adamw": lambda: optim.AdamW(
        learning_rate=0.001,
        betas=[0.9, 0.999],
        eps=1e-7,
        weight_decay=0.004,
        bias_correction=True,
    ),
    "adamax": lambda: optim.Adamax(learning_rate=0.001, betas=[0.9, 0.999], eps=1e-7),
    "sgd": lambda: optim.SGD(learning_rate=0.01),
    "rmsprop": lambda: optim.RMSprop(learning_rate=0.001, alpha=0.9, eps=1e-7),
    # Keras also starts Adagrad's accumulator at 0.1; MLX starts it at 0.
    "adagrad": lambda: optim.Adagrad(learning_rate=0.001, eps=1e-7),
    "adadelta": lambda: optim.AdaDelta(learning_rate=0.001, rho=0.95, eps=1e-7),
    "lion": lambda: optim.Lion(learning_rate=0.001, betas=[0.9, 0.99]),
}


def names() -> tuple[str, ...]:
    """Returns the optimizer names that `get` resolves, sorted (matching ignores case).

    Example:
        >>> from mlxkit.optimizers import names
        >>> "rmsprop" in names()
        True
    """
    return tuple(sorted(_KERAS_DEFAULTS))


def get(name_or_optimizer: str | optim.Optimizer) -> optim.Optimizer:
    """Makes a fresh MLX optimizer from a Keras name, or passes an optimizer through unchanged.

    Names are matched ignoring case, as Keras matches its class names: `"adam"`, `"Adam"`,
    `"sgd"`, `"rmsprop"`, `"adamw"`, `"adagrad"`, `"adadelta"`, `"adamax"`, `"lion"`. Each gets
    the Keras class's default hyperparameters: learning rate 0.001 (0.01 for SGD), epsilon 1e-7,
    RMSprop's rho 0.9, Adadelta's rho 0.95, AdamW's weight decay 0.004, and bias-corrected
    Adam/AdamW.

    Args:
        name_or_optimizer: A name from `names()` or an `mlx.optimizers.Optimizer`.

    Returns:
        The optimizer; a new object for each name lookup.

    Raises:
        ValueError: For an unknown name; the message lists the valid ones.
        TypeError: For anything that is neither a string nor an optimizer.

    Example:
        >>> import mlx.optimizers as optim
        >>> from mlxkit import optimizers
        >>> optimizers.get("sgd").learning_rate.item()
        0.009999999776482582
        >>> mine = optim.Adam(learning_rate=3e-4)
        >>> optimizers.get(mine) is mine
        True
    """
    if isinstance(name_or_optimizer, optim.Optimizer):
        return name_or_optimizer
    if isinstance(name_or_optimizer, str):
        factory = _KERAS_DEFAULTS.get(name_or_optimizer.lower())
        if factory is None:
            raise ValueError(
                f"Unknown optimizer name. Received: optimizer={name_or_optimizer!r}. Expected one "
                f"of: {', '.join(names())} (any case), or an mlx.optimizers.Optimizer."
            )
        return factory()
    raise TypeError(
        "`optimizer` must be a name or an mlx.optimizers.Optimizer. "
        f"Received: optimizer of type {type(name_or_optimizer).__name__}"
    )
