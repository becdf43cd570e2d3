"""Resumable checkpoints: a folder of safetensors files and one JSON file, written atomically.

A checkpoint folder holds:

- `model.safetensors`: every model array (`model.parameters()`, BatchNorm statistics included);
- `optimizer.safetensors`: the tree-flattened optimizer state (step counter, learning rate,
  moments);
- `state.safetensors`: the running loss and metric sums of the epoch in progress, any gradient
  accumulation buffer, and the random key, so a mid-epoch resume continues the same epoch;
- `callbacks.safetensors`: arrays callbacks keep (EarlyStopping's best weights);
- `trainer.json`: format version, the loop position (`mlxkit.trainer.LoopState`: epoch, batches
  done in the epoch, global step, data-order seed, and the ongoing pass over the data: the epoch
  it began in and its batches done), callback states (EarlyStopping's best and
  wait, ModelCheckpoint's top-k, History), the mlxkit and
  MLX versions and the model's class name.

Writes go to a temporary folder beside the target that is renamed into place, so a crash during a
write leaves the previous checkpoint intact. Loading is strict: every file is read and checked
against the trainer before anything is applied. No pickle is involved anywhere.
"""

from __future__ import annotations

import copy
import json
import math
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from mlxkit._io import atomic_write_folder, check_folder_target, folder_lock, recover_folder

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

if TYPE_CHECKING:
    from mlxkit.trainer import LoopState, Trainer

FORMAT_VERSION = 1
ARRAY_FILES = ("model", "optimizer", "state", "callbacks")
# The trainer.json fields that loading applies, checked before anything is.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "global_step": (int,),
    "batch_in_epoch": (int,),
    "seed": (int, type(None)),
    "callbacks": (dict,),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be applied: missing, corrupt, or of another model or format.

    Example:
        >>> try:
        ...     load_weights(model, "no/such/weights.safetensors")
        ... except CheckpointError as error:
        ...     print(error)
        No weights file at 'no/such/weights.safetensors'.
    """


def _flat(tree: Any) -> dict[str, mx.array]:
    pairs = cast(list[tuple[str, Any]], tree_flatten(tree))
    return {key: value for key, value in pairs if isinstance(value, mx.array)}


def _running_state(trainer: Trainer) -> dict[str, Any]:
    return {
        "loss": trainer.loss_state,
        "metrics": {f"metric{i}": m.state for i, m in enumerate(trainer.metrics)},
        "gradient_buffer": trainer.gradient_buffer,
        "loss_scale": trainer.loss_scale_state,
        "random": {"key": cast(list, mx.random.state)[0]},
        # What a subclass added to compiled_state(): a GAN's discriminator and its optimizer.
        "extra": {f"item{i}": tree for i, tree in enumerate(trainer.extra_state())},
    }


def _loop_fields(loop: LoopState) -> dict[str, Any]:
    """The loop position as trainer.json holds it (the stop flag is not saved: a resume runs)."""
    return {
        "epoch": loop.epoch,
        "global_step": loop.global_step,
        "batch_in_epoch": loop.batch_in_epoch,
        "seed": loop.seed,
        "pass_epoch": loop.pass_epoch,
        "batch_in_pass": loop.batch_in_pass,
    }


def _restore_loop(loop: LoopState, meta: dict[str, Any]) -> None:
    loop.epoch, loop.global_step = meta["epoch"], meta["global_step"]
    loop.batch_in_epoch, loop.seed = meta["batch_in_epoch"], meta["seed"]
    # Checkpoints from before passes could span epochs (0.1.0 included) began a pass each epoch.
    loop.pass_epoch = meta.get("pass_epoch", meta["epoch"])
    loop.batch_in_pass = meta.get("batch_in_pass", meta["batch_in_epoch"])


def _callback_key(index: int, callback: Any) -> str:
    return f"{index}:{type(callback).__name__}"


def _callback_states(trainer: Trainer) -> dict[str, Any]:
    states = {}
    for index, callback in enumerate(trainer.callbacks.callbacks):
        state = callback.state_dict()
        if state:
            states[_callback_key(index, callback)] = state
    return states


def _callback_arrays(trainer: Trainer) -> dict[str, mx.array]:
    arrays = {}
    for index, callback in enumerate(trainer.callbacks.callbacks):
        for name, value in callback.state_arrays().items():
            arrays[f"{_callback_key(index, callback)}/{name}"] = value
    return arrays


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is an mlxkit checkpoint folder: it holds a `trainer.json` of the format.

    Example:
        >>> is_checkpoint(trainer.save_checkpoint("runs/ckpt"))
        True
    """
    try:
        with open(os.path.join(os.fspath(path), "trainer.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("format_version"), int)


def check_checkpoint_target(
    path: str | os.PathLike, *, overwrite: bool = False, argument: str = "path"
) -> str:
    """Returns `path` made absolute if a checkpoint may be written there; raises otherwise.

    Never replaced: the empty path, `.`, the working directory, the home directory, their
    parents, filesystem roots (`ValueError`). Replaced only with `overwrite=True`: anything else
    that exists and is neither an mlxkit checkpoint nor an empty folder (`FileExistsError`).

    Example:
        >>> check_checkpoint_target("runs/ckpt").endswith("ckpt")
        True
        >>> os.makedirs("paper", exist_ok=True)
        >>> with open("paper/draft.txt", "w") as f:
        ...     f.write("six months of work")
        18
        >>> check_checkpoint_target("paper")  # a folder of the user's files
        Traceback (most recent call last):
          ...
        FileExistsError: `path` names '.../paper', which exists and is not an mlxkit checkpoint...
    """
    target = check_folder_target(path, argument)
    if overwrite or not os.path.lexists(target) or is_checkpoint(target):
        return target
    if os.path.isdir(target) and not os.path.islink(target) and not os.listdir(target):
        return target
    what = (
        "a folder holding " + repr(sorted(os.listdir(target))[:5])
        if os.path.isdir(target)
        else "a file"
    )
    raise FileExistsError(
        f"`{argument}` names {target!r}, which exists and is not an mlxkit checkpoint (no "
        f"trainer.json): it is {what}. Writing a checkpoint there would delete it. Choose "
        f"another path, remove it yourself, or pass overwrite=True. "
        f"Received: {argument}={os.fspath(path)!r}"
    )


def save_checkpoint(trainer: Trainer, path: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Writes everything needed to resume `trainer` exactly into the folder `path`.

    The folder appears whole or not at all, and concurrent writers of one path take turns (see
    `mlxkit._io.atomic_write_folder`). `path` must be new, empty, or an mlxkit checkpoint, which
    is replaced; anything else is refused unless `overwrite=True` (see
    `check_checkpoint_target`). Under distributed training only rank 0 writes; the other ranks
    return at once.

    Example:
        >>> path = trainer.save_checkpoint("runs/ckpt")
        >>> sorted(os.listdir(path))  # doctest: +NORMALIZE_WHITESPACE
        ['callbacks.safetensors', 'model.safetensors', 'optimizer.safetensors',
         'state.safetensors', 'trainer.json']
    """
    import mlxkit

    if not trainer.is_main_process:
        return os.path.abspath(os.fspath(path))
    check_checkpoint_target(path, overwrite=overwrite)
    mx.eval(trainer.compiled_state())
    meta = {
        "format_version": FORMAT_VERSION,
        **_loop_fields(trainer.loop),
        # Lets a load refuse a `batch_in_epoch` past the end of the epoch.
        "steps_per_epoch": trainer.steps_per_epoch,
        "callbacks": _callback_states(trainer),
        "model_class": type(trainer.model).__name__,
        "mlxkit_version": getattr(mlxkit, "__version__", "unknown"),
        "mlx_version": getattr(mx, "__version__", "unknown"),
    }

    def write(folder: str) -> None:
        mx.save_safetensors(
            os.path.join(folder, "model.safetensors"), _flat(trainer.model.parameters())
        )
        mx.save_safetensors(
            os.path.join(folder, "optimizer.safetensors"), _flat(trainer.optimizer.state)
        )
        mx.save_safetensors(
            os.path.join(folder, "state.safetensors"), _flat(_running_state(trainer))
        )
        mx.save_safetensors(
            os.path.join(folder, "callbacks.safetensors"), _callback_arrays(trainer)
        )
        with open(os.path.join(folder, "trainer.json"), "w") as f:
            json.dump(_strict_json(meta), f, indent=2, allow_nan=False)

    def still_replaceable(target: str) -> None:
        check_checkpoint_target(target, overwrite=overwrite)

    return atomic_write_folder(path, write, check=still_replaceable)


def _strict_json(value: Any) -> Any:
    """`value` with infinities and NaNs as `{"__float__": "inf"}`, so the file is strict JSON.

    Python's `json` would write the non-standard `Infinity` (an untouched "best so far" of
    EarlyStopping is one), which JavaScript, jq and most other parsers refuse.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}  # 'inf', '-inf' or 'nan'
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def _from_strict_json(value: Any) -> Any:
    """Undoes `_strict_json`; files from mlxkit 0.1.0 (bare `Infinity`) read as they are."""
    if isinstance(value, dict):
        if value.keys() == {"__float__"} and value["__float__"] in ("inf", "-inf", "nan"):
            return float(value["__float__"])
        return {key: _from_strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_strict_json(item) for item in value]
    return value


def _read_safetensors(path: str) -> dict[str, mx.array]:
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint file missing: {path}")
    try:
        loaded: Any = mx.load(path, format="safetensors")
        arrays: dict[str, mx.array] = dict(loaded)
        # Read everything now: errors surface before anything is applied, and the arrays no longer
        # depend on a file that a later save to the same path replaces.
        mx.eval(arrays)
    except Exception as error:  # MLX raises several types for truncated or corrupt files.
        raise CheckpointError(
            f"Cannot read {path}: the file is truncated or corrupt ({error})"
        ) from None
    return arrays


def _compare(name: str, expected: dict[str, mx.array], found: dict[str, mx.array]) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{key}: expected {tuple(expected[key].shape)}, found {tuple(found[key].shape)}"
        for key in set(expected) & set(found)
        if expected[key].shape != found[key].shape
    )
    dtypes = sorted(
        f"{key}: expected {expected[key].dtype}, found {found[key].dtype}"
        for key in set(expected) & set(found)
        if expected[key].dtype != found[key].dtype
    )
    if missing:
        problems.append(f"{name}: missing keys {missing}")
    if unexpected:
        problems.append(f"{name}: unexpected keys {unexpected}")
    if shapes:
        problems.append(f"{name}: wrongly shaped keys {shapes}")
    if dtypes:
        problems.append(f"{name}: keys of another dtype {dtypes}")
    return problems


def read_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, dict[str, mx.array]]]:
    """Reads and validates a checkpoint folder's files without applying them.

    Returns:
        `(meta, arrays)`: the parsed `trainer.json`, and each safetensors file's arrays by name.

    Example:
        >>> path = trainer.save_checkpoint("runs/ckpt")
        >>> meta, arrays = read_checkpoint(path)
        >>> meta["epoch"], sorted(arrays)
        (2, ['callbacks', 'model', 'optimizer', 'state'])
    """
    folder = os.fspath(path)
    recover_folder(folder)
    # Shared with other readers, exclusive of writers: never a folder between two renames.
    with folder_lock(folder, shared=True):
        return _read_folder(folder)


def _read_folder(folder: str) -> tuple[dict[str, Any], dict[str, dict[str, mx.array]]]:
    if not os.path.isdir(folder):
        raise CheckpointError(f"No checkpoint folder at {folder!r}.")
    meta_path = os.path.join(folder, "trainer.json")
    try:
        with open(meta_path) as f:
            meta = _from_strict_json(json.load(f))
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint file missing: {meta_path}") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"Cannot read {meta_path}: {error}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{meta_path} must hold a JSON object. Received: {type(meta).__name__}"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path} has format_version={version!r}; this mlxkit reads versions up to "
            f"{FORMAT_VERSION}. Upgrade mlxkit to load it."
        )
    wrong = [key for key, kinds in _META_TYPES.items() if not isinstance(meta.get(key), kinds)]
    if wrong:
        raise CheckpointError(
            f"{meta_path} lacks or mistypes the fields {wrong}; expected "
            + ", ".join(
                f"{key}: {' or '.join(k.__name__ for k in kinds)}"
                for key, kinds in _META_TYPES.items()
            )
        )
    _check_meta_values(meta, meta_path)
    arrays = {
        name: _read_safetensors(os.path.join(folder, f"{name}.safetensors")) for name in ARRAY_FILES
    }
    return meta, arrays


def _check_meta_values(meta: dict[str, Any], meta_path: str) -> None:
    """Refuses `trainer.json` values no save writes: negative counters, a position past the end
    of the epoch, a callback state that is not an object."""
    problems = [
        f"{key}={meta[key]!r} (expected an int >= 0)"
        for key in ("epoch", "global_step", "batch_in_epoch")
        if isinstance(meta[key], bool) or meta[key] < 0
    ]
    # Optional: absent from checkpoints written before passes could span epochs.
    problems += [
        f"{key}={meta[key]!r} (expected an int >= 0)"
        for key in ("pass_epoch", "batch_in_pass")
        if key in meta
        and (not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0)
    ]
    seed = meta["seed"]
    if seed is not None and (isinstance(seed, bool) or seed < 0):
        problems.append(f"seed={seed!r} (expected None or an int >= 0)")
    steps = meta.get("steps_per_epoch")
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            problems.append(f"steps_per_epoch={steps!r} (expected None or an int >= 1)")
        elif isinstance(meta["batch_in_epoch"], int) and meta["batch_in_epoch"] > steps:
            # Equal is valid: saved after the epoch's last batch, before the epoch's end.
            problems.append(
                f"batch_in_epoch={meta['batch_in_epoch']} (past the end of an epoch of "
                f"steps_per_epoch={steps} batches)"
            )
    problems += [
        f"callbacks[{key!r}]={value!r} (expected a JSON object)"
        for key, value in meta["callbacks"].items()
        if not isinstance(value, dict)
    ]
    if problems:
        raise CheckpointError(
            f"{meta_path} holds values out of range; nothing was loaded: " + "; ".join(problems)
        )


def _upgrade_running_state(state: dict[str, mx.array]) -> None:
    """Translates the running sums of an mlxkit 0.1.0 checkpoint to the current keys, in place.

    0.1.0 kept scalars: the loss `total`, `count`, `steps` and `first_bad_step`, and each counting
    metric's `correct` and `count`. Later versions keep `[total, count]` with the steps after
    which each stayed finite (the first bad step, when there is one), and `[correct, count]`.
    """
    old_loss = ["loss.total", "loss.count", "loss.steps", "loss.first_bad_step"]
    if all(key in state for key in old_loss):
        total, count, steps, first_bad = (state.pop(key) for key in old_loss)
        state["loss.sums"] = mx.stack([total, count]).astype(mx.float32)
        finite = mx.where(first_bad >= 0, first_bad, steps)
        state["loss.finite_steps"] = mx.stack([finite, steps]).astype(mx.int32)
    for key in [key for key in state if key.endswith(".correct")]:
        prefix = key[: -len("correct")]
        if f"{prefix}count" in state and f"{prefix}counts" not in state:
            correct, count = state.pop(key), state.pop(f"{prefix}count")
            state[f"{prefix}counts"] = mx.stack([correct, count])


def load_checkpoint(
    trainer: Trainer, path: str | os.PathLike, *, steps_per_epoch: int | None = None
) -> None:
    """Restores model, optimizer, running state, position and callback states from `path`.

    Strict: if any file is missing or corrupt, any key is missing, unexpected or wrongly shaped, or
    the model is of another class, a `CheckpointError` lists every problem and nothing is applied.

    Args:
        trainer: The trainer to restore.
        path: The checkpoint folder.
        steps_per_epoch: The batches per epoch of the run that resumes (`fit` passes it): a
            saved position past the end of such an epoch is refused, also for checkpoints
            that do not record their own epoch length.

    Example:
        >>> path = trainer.save_checkpoint("runs/ckpt")  # after 2 epochs
        >>> trainer.load_checkpoint("runs/ckpt")
        >>> trainer.epoch
        2
        >>> history = trainer.fit(x, y, epochs=4, resume_from="runs/ckpt", verbose=0)
        >>> history.epoch  # epochs 0 and 1 came from the checkpoint
        [0, 1, 2, 3]
    """
    meta, arrays = read_checkpoint(path)
    _upgrade_running_state(arrays["state"])
    problems = []
    if meta.get("model_class") != type(trainer.model).__name__:
        problems.append(
            f"model class: the checkpoint holds a {meta.get('model_class')}, "
            f"the trainer's model is a {type(trainer.model).__name__}"
        )
    expected = {
        "model": _flat(trainer.model.parameters()),
        "optimizer": _flat(trainer.optimizer.state),
        "state": _flat(_running_state(trainer)),
    }
    for name in expected:
        problems += _compare(f"{name}.safetensors", expected[name], arrays[name])
    # Earlier checkpoints kept counts as int32 (0.1.0 and the first 0.2 format): take the dtype
    # of this trainer's state, so that a resumed count keeps counting past 2**31.
    for key, value in arrays["state"].items():
        if key in expected["state"] and value.dtype != expected["state"][key].dtype:
            arrays["state"][key] = value.astype(expected["state"][key].dtype)
    callbacks = trainer.callbacks.callbacks
    saved = meta.get("callbacks", {})
    # A callback's state is in trainer.json, callbacks.safetensors ("key/array") or both.
    saved_keys = set(saved) | {key.split("/", 1)[0] for key in arrays["callbacks"]}
    matches = _match_callbacks(callbacks, saved_keys)
    problems += _callback_state_problems(callbacks, matches, saved, arrays["callbacks"])
    if steps_per_epoch is not None and meta["batch_in_epoch"] > steps_per_epoch:
        # Equal is valid: saved after the epoch's last batch, before the epoch's end.
        problems.append(
            f"position: it stopped after batch {meta['batch_in_epoch']} of epoch "
            f"{meta['epoch'] + 1}, but an epoch of this run's data has {steps_per_epoch} batches "
            f"(steps_per_epoch={steps_per_epoch}). Resume with the data and batch_size it was "
            "trained with"
        )
    if problems:
        raise CheckpointError(
            f"Checkpoint {os.fspath(path)!r} does not match this trainer; nothing was loaded:\n- "
            + "\n- ".join(problems)
        )

    trainer.model.update(tree_unflatten(list(arrays["model"].items())))
    _merge(trainer.optimizer.state, arrays["optimizer"])
    running = tree_unflatten(list(arrays["state"].items()))
    trainer.loss_state.update(running["loss"])
    for index, metric in enumerate(trainer.metrics):
        metric.state.update(running["metrics"][f"metric{index}"])
    if "grads" in running.get("gradient_buffer", {}):
        trainer.gradient_buffer["grads"] = running["gradient_buffer"]["grads"]
    trainer.loss_scale_state.update(running.get("loss_scale", {}))
    for index, target in enumerate(trainer.extra_state()):
        if f"item{index}" in running.get("extra", {}):
            _merge_tree(target, running["extra"][f"item{index}"])
    # MLX has no setter for its global key, but `seed(n)` sets it to (n >> 32, n & 0xffffffff).
    high, low = running["random"]["key"].tolist()
    mx.random.seed((high << 32) | low)
    _restore_loop(trainer.loop, meta)
    for index, key in matches.items():
        _restore_callback(callbacks[index], key, saved, arrays["callbacks"])
    unused = sorted(saved_keys - set(matches.values()))
    if unused:
        print(
            f"mlxkit: {os.fspath(path)} holds the state of callbacks {unused}, which match none "
            "of this run's callbacks (matched by position and class, or by class when it is "
            "unique); that state was not restored.",
            flush=True,
        )
    mx.eval(trainer.compiled_state())


def _restore_callback(
    callback: Any, key: str, saved: dict[str, Any], arrays: dict[str, mx.array]
) -> None:
    """Loads the state saved under `key` (trainer.json and "key/array" arrays) into `callback`."""
    if key in saved:
        callback.load_state_dict(saved[key])
    prefix = f"{key}/"
    of_key = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    if of_key:
        callback.load_state_arrays(of_key)


def _callback_state_problems(
    callbacks: list[Any],
    matches: dict[int, str],
    saved: dict[str, Any],
    arrays: dict[str, mx.array],
) -> list[str]:
    """Loads each matched callback state into a copy of its callback, so that a malformed one is
    reported before anything is applied; returns the problems found."""
    problems = []
    for index, key in matches.items():
        try:
            _restore_callback(copy.copy(callbacks[index]), key, saved, arrays)
        except Exception as error:  # a callback's own parsing: any error means malformed
            problems.append(
                f"trainer.json: the state of callback {key!r} cannot be loaded "
                f"({type(error).__name__}: {error}). Received: {saved.get(key)!r}"
            )
    return problems


def _match_callbacks(callbacks: list[Any], keys: set[str]) -> dict[int, str]:
    """Maps each callback's position to its saved state's key: the same position and class, or
    else the only saved state of its class when it is the only callback of that class."""
    matches = {}
    for index, callback in enumerate(callbacks):
        if _callback_key(index, callback) in keys:
            matches[index] = _callback_key(index, callback)
    for index, callback in enumerate(callbacks):
        name = type(callback).__name__
        if index in matches or sum(type(c).__name__ == name for c in callbacks) != 1:
            continue
        same_class = [k for k in keys - set(matches.values()) if k.split(":", 1)[1] == name]
        if len(same_class) == 1:
            matches[index] = same_class[0]
    return matches


def _merge(state: Any, flat: dict[str, mx.array]) -> Any:
    """Writes flat arrays into the optimizer's state tree in place, keeping its containers."""
    return _merge_tree(state, tree_unflatten(list(flat.items())))


def _merge_tree(target: Any, source: Any) -> Any:
    """Writes `source`'s arrays into `target` in place (dicts, lists, and so `nn.Module`s)."""
    if isinstance(target, dict):
        for key in source:
            target[key] = _merge_tree(target.get(key), source[key])
        return target
    if isinstance(target, list):
        for i, value in enumerate(source):
            target[i] = _merge_tree(target[i], value)
        return target
    return source


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a `.safetensors` file, from its header: no tensor is read.

    Example:
        >>> path = trainer.save_checkpoint("runs/ckpt")
        >>> tensor_shapes(os.path.join(path, "model.safetensors"))["layers.0.weight"]
        (16, 4)
    """
    return {key: shape for key, (shape, _) in _header(path).items()}


# safetensors' dtype names, as its header spells them.
_SAFETENSORS_DTYPES = {
    "BOOL": mx.bool_,
    "U8": mx.uint8,
    "U16": mx.uint16,
    "U32": mx.uint32,
    "U64": mx.uint64,
    "I8": mx.int8,
    "I16": mx.int16,
    "I32": mx.int32,
    "I64": mx.int64,
    "F16": mx.float16,
    "BF16": mx.bfloat16,
    "F32": mx.float32,
    "F64": mx.float64,
}


def _header(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Each tensor's shape and dtype from a safetensors file's header, no tensor read."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            entries = {}
            for key in f.keys():  # noqa: SIM118
                tensor = f.get_slice(key)
                dtype = tensor.get_dtype()
                entries[key] = (tuple(tensor.get_shape()), _SAFETENSORS_DTYPES.get(dtype, dtype))
            return entries
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise CheckpointError(
            f"Cannot read {os.fspath(path)}: the file is truncated or corrupt ({error})"
        ) from None


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Loads weights into `model` strictly from a `.safetensors` or MLX `.npz` file or a checkpoint.

    Missing, unexpected and wrongly shaped keys are all listed, and nothing is applied.

    Example:
        >>> path = trainer.save_checkpoint("runs/ckpt")
        >>> load_weights(model, "runs/ckpt")
        >>> load_weights(nn.Linear(4, 2), "runs/ckpt")
        Traceback (most recent call last):
          ...
        mlxkit.checkpoint.CheckpointError: Weights '...' do not match Linear; nothing was loaded:
        - model.safetensors: missing keys ['bias', 'weight']
        - model.safetensors: unexpected keys ['layers.0.bias', ...]
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        with folder_lock(path, shared=True):  # a checkpoint folder: read it whole
            return load_weights(model, os.path.join(path, "model.safetensors"))
    if not os.path.exists(path):
        raise CheckpointError(f"No weights file at {path!r}.")
    found: dict[str, Any]
    if path.endswith(".npz"):
        try:
            loaded: Any = mx.load(path)
            found = dict(loaded)
        except Exception as error:
            raise CheckpointError(f"Cannot read {path}: {error}") from None
    else:
        # The header alone is compared first: a mismatched file is refused before any tensor of
        # it is read.
        found = {
            key: SimpleNamespace(shape=shape, dtype=dtype)
            for key, (shape, dtype) in _header(path).items()
        }
    problems = _compare(os.path.basename(path), _flat(model.parameters()), found)
    if problems:
        raise CheckpointError(
            f"Weights {path!r} do not match {type(model).__name__}; nothing was loaded:\n- "
            + "\n- ".join(problems)
        )
    if not path.endswith(".npz"):
        found = _read_safetensors(path)
    model.update(tree_unflatten(list(found.items())))
    mx.eval(model.parameters())
