"""One way to name a parameter's place in a model, and one flat walk over a model's parameters.

A place comes in two spellings. NNX's own (`nnx.to_flat_state`) is a tuple of names and layer numbers,
('text_encoder', 'encoder', 'layer', 4, 'output', 'dense', 'bias'). A JAX key path (`jax.tree_util`'s
`tree_flatten_with_path` over a State, an optimizer state or a checkpoint's state dict) spells the same place with
key objects (DictKey, SequenceKey, GetAttrKey) and ends, for an NNX Variable, in the Variable's `.value`.
`path_name` writes both as 'text_encoder/encoder/layer/4/output/dense/bias': the form of stage filters, the
optimizer's decay mask, sharding notes and checkpoint metadata. The Hugging Face name tables
(embed_jax/models/tables/) write the same path with dots: `path_name(path, separator=".")`.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

# The attribute under which an NNX Variable keeps its array: the last key of a Variable leaf's JAX key path.
_VARIABLE_VALUE = jax.tree_util.GetAttrKey("value")


def path_part(key: Any) -> str:
    """One component of a path as text: a name or layer number, or a JAX key's dict key, index or attribute."""
    if isinstance(key, (jax.tree_util.DictKey, jax.tree_util.FlattenedIndexKey)):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    return str(key)


def path_parts(path: tuple) -> list[str]:
    """Every component of an NNX path or a JAX key path as text, without a Variable's trailing `.value`."""
    if path and path[-1] == _VARIABLE_VALUE:
        path = path[:-1]
    return [path_part(key) for key in path]


def path_name(path: tuple, separator: str = "/") -> str:
    """('text_encoder', 'encoder', 'layer', 4, 'output') → 'text_encoder/encoder/layer/4/output' (module docstring)."""
    return separator.join(path_parts(path))


def flat_variables(params: nnx.Module | nnx.State, *, separator: str = "/") -> dict[str, nnx.Variable]:
    """{path name: Variable} of every parameter of a module (its nnx.Param state) or of a State as given."""
    state = params if isinstance(params, nnx.State) else nnx.state(params, nnx.Param)
    return {path_name(path, separator): variable for path, variable in nnx.to_flat_state(state)}


def flat_params(params: nnx.Module | nnx.State, *, separator: str = "/", dtype: Any = None) -> dict[str, np.ndarray]:
    """{path name: host array} of every parameter (`flat_variables`), in `dtype` if given, else as stored."""
    return {name: np.asarray(variable.get_value(), dtype)
            for name, variable in flat_variables(params, separator=separator).items()}
