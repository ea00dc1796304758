"""Which parameters train in each stage of the recipe (docs/method.md §4), as NNX filters over parameter paths.

    stage 1   FC1 only                                  trainable = "heads"     (reduction heads too, if the student has them)
    stage 2   FC1 + the last K encoder layers (K = 3)   trainable = "heads+last_layers"
    stage 3   every student parameter                   trainable = "all"
    stage 4   the vision tower (+ the pool's projection) trainable = "vision"

A parameter path is the tuple NNX gives it, e.g. ('text_encoder', 'encoder', 'layer', 4, 'attention', ...); the
heads live under ('heads', ...), the vision tower under ('vision', ...) and the pool under ('projection_pool', ...).
Frozen parameters are split off before the optimizer is built, so they get no optimizer state at all.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx


PathFilter = Callable[[tuple, Any], bool]


def encoder_layer_index(path: tuple) -> int | None:
    """The layer number of a parameter inside the text encoder's unscanned layer list, None elsewhere.

    Every family names its layer list differently (BERT `encoder/layer/i`, GPT-2 `h/i`, Qwen2 `layers/i`); what they
    share is the first integer component of the path under 'text_encoder'.
    """
    if not path or path[0] != "text_encoder":
        return None
    for part in path[1:]:
        if isinstance(part, int):
            return part
    return None


def count_encoder_layers(param_paths: list[tuple]) -> int:
    indices = [index for index in map(encoder_layer_index, param_paths) if index is not None]
    return max(indices) + 1 if indices else 0


def has_scanned_layers(param_paths: list[tuple]) -> bool:
    """Scanned layer stacks keep all layers in one array (leading 'layers' axis): no integer in their paths."""
    return count_encoder_layers(param_paths) == 0 and any(
        path[0] == "text_encoder" and any(str(part) in ("layers", "layer", "h") for part in path[1:])
        for path in param_paths
    )


def is_param(variable: Any) -> bool:
    return isinstance(variable, nnx.Param)


def under(*roots: str) -> Callable[[list[tuple], int, str], PathFilter]:
    """A filter builder for the parameters under these top-level modules."""
    return lambda param_paths, last_layers, config_key: (
        lambda path, variable: is_param(variable) and path[0] in roots)


def every_param(param_paths: list[tuple], last_layers: int, config_key: str) -> PathFilter:
    return lambda path, variable: is_param(variable)


def vision_tower(param_paths: list[tuple], last_layers: int, config_key: str) -> PathFilter:
    if not any(path[0] == "vision" for path in param_paths):
        raise ValueError(f"config key {config_key}='vision', but this student has no vision tower; add a "
                         "'vision' section to the model config")
    return under("vision", "projection_pool")(param_paths, last_layers, config_key)


def heads_and_last_layers(param_paths: list[tuple], last_layers: int, config_key: str) -> PathFilter:
    """Stage 2: the heads and the encoder's last `last_layers` layers. What needs the student's own depth is checked
    here; the value itself is checked once, with the stage (train/config.py StageConfig.check)."""
    if has_scanned_layers(param_paths):
        raise ValueError(
            f"config key {config_key}='heads+last_layers' unfreezes single layers, but this student scans its layers "
            "(one stacked array for all of them). Set model.text_options.scan=False for this stage."
        )
    num_layers = count_encoder_layers(param_paths)
    if last_layers > num_layers:
        key = config_key.rsplit(".", 1)[0] + ".last_layers" if "." in config_key else "last_layers"
        raise ValueError(f"config key {key}={last_layers}: the text encoder has {num_layers} layers; choose "
                         f"1 to {num_layers}")
    first_trainable = num_layers - last_layers

    def select(path: tuple, variable: Any) -> bool:
        if not is_param(variable):
            return False
        if path[0] == "heads":
            return True
        index = encoder_layer_index(path)
        return index is not None and index >= first_trainable

    return select


# Each `trainable` value and the filter builder it names; train/config.py checks a stage's value against these keys.
FILTERS: dict[str, Callable[[list[tuple], int, str], PathFilter]] = {
    "heads": under("heads"),
    "heads+last_layers": heads_and_last_layers,
    "all": every_param,
    "vision": vision_tower,
    "encoder+heads": under("heads", "text_encoder", "added_embeddings"),
}
TRAINABLE_CHOICES = tuple(FILTERS)


def trainable_filter(trainable: str, param_paths: list[tuple], *, last_layers: int = 3,
                     config_key: str = "trainable") -> PathFilter:
    """An NNX filter `(path, variable) -> bool` selecting the parameters a stage trains (`trainable`: a key of
    FILTERS, as StageConfig.check has verified).

    `param_paths`: every parameter path of the student, used to count its layers and to refuse impossible choices.
    """
    return FILTERS[trainable](param_paths, last_layers, config_key)


def split_trainable(model: nnx.Module, select: PathFilter) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, trainable params, everything else) — `nnx.merge(graphdef, trainable, rest)` rebuilds the model."""
    graphdef, trainable, rest = nnx.split(model, select, ...)
    if not jax.tree.leaves(trainable):
        raise ValueError("this stage selects no trainable parameter: check the stage's 'trainable' setting")
    return graphdef, trainable, rest

