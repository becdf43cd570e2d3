"""Core ML state: model inputs that persist between predictions (a KV cache), iOS 18+.

MLX has no mutable state in a traced function, so a stateful model is written as a function
that takes the state in and returns its new value, e.g. `step(tokens, position, keys, values)
-> (logits, keys, values)`. `to_coreml(..., states={"key_cache": "new_key_cache", ...})` names
which input is a state and which output is its new value: the input becomes a Core ML state
(`read_state` at the start of the program), the output becomes a `coreml_update_state` at the
end instead of a model output. Core ML states are float16 tensors; the model should hold its
state in float16 too (then the two agree bit for bit), and Core ML starts them at zero.

On the Swift side: `let state = model.makeState()` once per sequence, then
`try await model.prediction(from: inputs, using: state)` for the prefill and each decode step.
The NumPy interpreter does the same with `new_state(path)` and `run_mlpackage_numpy(path,
inputs, state=state)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlxkit.export._trace import Graph


@dataclass(frozen=True)
class StateBinding:
    """One state: the graph input it is read from and the graph output that becomes its new
    value, with the Core ML name (the input's)."""

    name: str
    input_index: int
    output_index: int


def bind_states(
    states: Mapping[str, str] | None,
    graph: Graph,
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> list[StateBinding]:
    """Checks `states` (input name -> output name) against the traced graph."""
    if not states:
        return []
    if not isinstance(states, Mapping):
        raise TypeError(
            "`states` must map each state input's name to the name of the output holding its "
            f'new value, e.g. {{"key_cache": "new_key_cache"}}. Received: states={states!r}.'
        )
    bindings = []
    for name, output in states.items():
        if name not in input_names or output not in output_names:
            raise ValueError(
                "`states` must map an input name to an output name. Inputs: "
                f"{list(input_names)}; outputs: {list(output_names)}. Received: states={states!r}."
            )
        i, o = list(input_names).index(name), list(output_names).index(output)
        in_shape, out_shape = graph.shapes[graph.inputs[i]], graph.shapes[graph.outputs[o]]
        if in_shape != out_shape:
            raise ValueError(
                f"State {name!r} has shape {in_shape} but its new value {output!r} has shape "
                f"{out_shape}; a state keeps its shape. Received: states={states!r}."
            )
        if graph.dtypes[graph.inputs[i]] != "float16":
            raise TypeError(
                f"Core ML states are float16 tensors. Received: {name!r} of dtype "
                f"{graph.dtypes[graph.inputs[i]]}; pass a float16 example (and keep the state "
                "in float16 in the model, so MLX and Core ML round alike)."
            )
        bindings.append(StateBinding(name, i, o))
    if len(output_names) == len(bindings):
        raise ValueError(
            "Every output is a state's new value; the model needs at least one other output. "
            f"Received: states={states!r}."
        )
    return bindings


def placeholder(mb: Any, shape: Sequence[int]) -> Any:
    """The program input for a state: a float16 state tensor."""
    from coremltools.converters.mil.mil import types

    return mb.state_tensor_placeholder(shape=list(shape), dtype=types.fp16)


def read(mb: Any, state: Any) -> Any:
    """The state's current value, as float32 for the program."""
    return mb.cast(x=mb.read_state(input=state), dtype="fp32")


def write(mb: Any, state: Any, value: Any) -> None:
    """Stores `value` (float32) as the state's new value."""
    mb.coreml_update_state(state=state, value=mb.cast(x=value, dtype="fp16"))


def pass_pipeline(ct: Any) -> Any:
    """coremltools' default passes, less `canonicalize_inplace_pattern`.

    That pass only moves each state write next to the op computing its value (an ordering
    preference); in coremltools 9 it fails with a KeyError when an op it anchors on was removed
    by an earlier pass (float16 casts, or a value whose producer was folded).
    """
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::canonicalize_inplace_pattern"])
    return pipeline
