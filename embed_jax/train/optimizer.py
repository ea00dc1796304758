"""The optimizer of every stage: global-norm clipping, then AdamW with linear
warm-up and cosine decay (docs/method.md §4).

What the public code does (Hugging Face Trainer defaults, docs/method.md §4): AdamW, weight decay 0.01 on weights only —
not on biases and norm parameters —, learning rate rising linearly from 0 over the first 5% of the steps and then
following a cosine down to 0, gradients clipped to global norm 1.0. `tests/train/test_optimizer.py` checks the
updates step by step against `torch.optim.AdamW` + `transformers.get_cosine_schedule_with_warmup` +
`clip_grad_norm_`.

Frozen parameters get no optimizer state because the optimizer never sees them: the stage splits the model's state
into trainable and frozen parts first (embed_jax/train/trainable.py) and `make_optimizer`'s transformation is
initialised on the trainable part only (no masked zeros, no per-parameter placeholders).

Config keys (section `optimizer`, all optional):
    weight_decay      0.01   decoupled (AdamW) decay, times the learning rate, on weight matrices only
    warmup_fraction   0.05   share of the stage's steps spent warming up linearly from 0
    end_lr_fraction   0.0    the cosine ends at this fraction of the peak learning rate
    clip_norm         1.0    global gradient-norm clip; 0 turns clipping off
    b1, b2, eps       0.9, 0.999, 1e-8  (torch's AdamW defaults)
    no_decay_pattern  "bias|norm|scale"  path components matching it are never decayed (nor is any rank < 2 array)
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import optax

from embed_jax.models.param_paths import path_name, path_parts

DEFAULTS: dict[str, Any] = {
    "weight_decay": 0.01,
    "warmup_fraction": 0.05,
    "end_lr_fraction": 0.0,
    "clip_norm": 1.0,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    # Names NNX / our models give to biases and LayerNorm/RMSNorm parameters (`bias`, `scale`, `*_layernorm`, `norm`).
    "no_decay_pattern": r"bias|norm|scale",
}


def decay_mask(params: Any, no_decay_pattern: str = DEFAULTS["no_decay_pattern"]) -> Any:
    """True where AdamW's weight decay applies: arrays of rank ≥ 2 whose path has no component matching
    `no_decay_pattern`. Works on NNX States (Variables) and on plain pytrees of arrays alike."""
    no_decay = re.compile(no_decay_pattern)

    def decays(key_path: tuple, leaf: Any) -> bool:
        names = path_parts(key_path)
        return len(getattr(leaf, "shape", ())) >= 2 and not any(no_decay.search(name) for name in names)

    return jax.tree_util.tree_map_with_path(decays, params)


def read_config(config: Mapping | None) -> dict[str, Any]:
    """The optimizer settings with defaults filled in; an unknown key or a value out of range names the key."""
    values = dict(DEFAULTS)
    given = dict(config or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown optimizer config key(s) {unknown}; known keys: {sorted(DEFAULTS)}")
    values.update(given)
    checks = {
        "weight_decay": lambda v: v >= 0,
        "warmup_fraction": lambda v: 0 <= v <= 1,
        "end_lr_fraction": lambda v: 0 <= v <= 1,
        "clip_norm": lambda v: v >= 0,
        "b1": lambda v: 0 <= v < 1,
        "b2": lambda v: 0 <= v < 1,
        "eps": lambda v: v > 0,
    }
    for key, is_valid in checks.items():
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not is_valid(
            value
        ):
            raise ValueError(f"optimizer config key {key!r} = {value!r} is out of range (defaults: {DEFAULTS[key]!r})")
    try:
        re.compile(values["no_decay_pattern"])
    except (re.error, TypeError) as error:
        raise ValueError(f"optimizer config key 'no_decay_pattern' is not a valid regex: {error}") from None
    return values


def learning_rate_schedule(
    learning_rate: float, total_steps: int, *, warmup_fraction: float, end_lr_fraction: float = 0.0
) -> optax.Schedule:
    """Linear warm-up from 0 to `learning_rate` over ceil(warmup_fraction · total_steps) steps, then a cosine to
    end_lr_fraction · learning_rate at `total_steps` (Hugging Face's `get_cosine_schedule_with_warmup`)."""
    # Hugging Face's Trainer rounds the warm-up up (`math.ceil(num_training_steps * warmup_ratio)`): so do we.
    # At least one step of decay remains (optax needs decay_steps > warmup_steps): a one-step stage runs at the peak.
    warmup_steps = min(total_steps - 1, math.ceil(warmup_fraction * total_steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(learning_rate),
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=float(learning_rate) * end_lr_fraction,
    )


def is_head_path(key_path: tuple) -> bool:
    """Parameters of the FC heads (paths under 'heads/')."""
    return path_name(key_path).startswith("heads/")


def make_optimizer(
    config: Mapping | None, *, learning_rate: float, total_steps: int, head_learning_rate: float | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation, learning-rate schedule) for one stage.

    The stage's values (learning rates, steps) are checked once, with the stage (train/config.py StageConfig.check);
    an empty selection of trainable parameters is refused where it is made (trainable.split_trainable).
    head_learning_rate: the heads' peak learning rate when it differs from the encoder's (a stage key): new, random
    heads need a far larger step than pretrained layers (measured on the embedded default, docs/training.md). The
    heads' AdamW updates are scaled by head_learning_rate / learning_rate, which is AdamW at that rate (the update,
    decay included, is linear in the rate); the schedule's shape is shared.
    """
    values = read_config(config)
    schedule = learning_rate_schedule(
        learning_rate, total_steps, warmup_fraction=values["warmup_fraction"], end_lr_fraction=values["end_lr_fraction"]
    )
    no_decay_pattern = values["no_decay_pattern"]
    adamw = optax.adamw(
        learning_rate=schedule,
        b1=values["b1"],
        b2=values["b2"],
        eps=values["eps"],
        weight_decay=values["weight_decay"],
        mask=lambda tree: decay_mask(tree, no_decay_pattern),
    )
    parts = [optax.clip_by_global_norm(values["clip_norm"])] if values["clip_norm"] else []
    parts.append(adamw)
    if head_learning_rate is not None and head_learning_rate != learning_rate:
        heads_only = lambda tree: jax.tree_util.tree_map_with_path(lambda path, _: is_head_path(path), tree)  # noqa: E731
        parts.append(optax.masked(optax.scale(head_learning_rate / learning_rate), heads_only))
    return (parts[0] if len(parts) == 1 else optax.chain(*parts)), schedule


def count_parameters(tree: Any) -> int:
    """Number of scalars in a pytree of arrays (parameters or optimizer state)."""
    return sum(int(getattr(leaf, "size", 1)) for leaf in jax.tree.leaves(tree))
